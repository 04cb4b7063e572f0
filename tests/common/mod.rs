//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped mapping set, compiled; panics with every load error listed.
pub fn plan() -> v2fhir::mapping::plan::Plan {
    v2fhir::mapping::load::load_dir(&root().join("mappings")).unwrap_or_else(|e| {
        panic!(
            "mapping set does not load:\n{}",
            e.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// The `*.hl7` files directly in `dir`, sorted.
pub fn hl7_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "hl7"))
        .collect();
    v.sort();
    v
}
