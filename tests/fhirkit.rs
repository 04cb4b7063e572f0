//! A second, independent R4 validator over what the gateway emits: `fhirkit` (PyPI `fhirkit-rs`,
//! installed by `.ci/run`) checks every Bundle converted from the golden files and the
//! FHIR-Converter corpus, beside the gateway's own check (the official JSON Schema plus required
//! elements, `src/fhir/validate.rs`). In CI the tool must be there: the test fails rather than
//! skips.

mod common;

use common::{hl7_files, plan, root};
use std::path::{Path, PathBuf};
use std::process::Command;
use v2fhir::mapping::eval::{self, ConvertOptions};

/// Is `fhirkit` there? In CI it must be.
fn available() -> bool {
    let ok = Command::new("fhirkit")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "`fhirkit --help` failed but CI is set: .ci/run installs fhirkit-rs"
        );
        eprintln!(
            "note: fhirkit not installed (pip install fhirkit-rs==0.1.0); test not run here, CI runs it"
        );
    }
    ok
}

/// `fhirkit validate --json` over `files`: (exit status, one line of JSON per file).
fn fhirkit(files: &[PathBuf]) -> (bool, Vec<serde_json::Value>) {
    let out = Command::new("fhirkit")
        .arg("validate")
        .arg("--json")
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("run fhirkit: {e}"));
    let reports = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("fhirkit said {l:?}: {e}")))
        .collect();
    (out.status.success(), reports)
}

fn scratch(name: &str) -> PathBuf {
    let dir = root().join("target").join("test-scratch").join(format!(
        "{name}-{}-{}",
        std::process::id(),
        v2fhir::store::now_micros()
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// Convert every message of every file in `dirs` and write each Bundle to `out`.
fn convert_all(dirs: &[&Path], out: &Path) -> Vec<PathBuf> {
    let plan = plan();
    let mut written = Vec::new();
    for dir in dirs {
        for path in hl7_files(dir) {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let parsed =
                v2fhir::v2::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for (i, msg) in parsed.messages.iter().enumerate() {
                let c = eval::convert(&plan, msg, &ConvertOptions::default());
                let Some(bundle) = c.bundle else { continue };
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("x");
                let file = out.join(format!("{stem}-{i}.json"));
                std::fs::write(&file, serde_json::to_vec(&bundle).unwrap_or_default())
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                written.push(file);
            }
        }
    }
    written
}

#[test]
fn every_converted_bundle_passes_an_independent_r4_validator() {
    if !available() {
        return;
    }
    let out = scratch("fhirkit");
    // The validator does find what is wrong (so a clean result below means something).
    let bad = out.join("bad-control.json");
    std::fs::write(
        &bad,
        br#"{"resourceType":"Bundle","type":"transaction","entry":[{"resource":
            {"resourceType":"Patient","id":"p","birthDate":"1980-13-45"},
            "request":{"method":"PUT","url":"Patient/p"}}]}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (ok, reports) = fhirkit(std::slice::from_ref(&bad));
    assert!(!ok, "fhirkit accepted an invalid birthDate: {reports:?}");

    let files = convert_all(
        &[
            &root().join("tests/golden"),
            &root().join("tests/corpus/fhir-converter"),
        ],
        &out,
    );
    assert!(files.len() >= 128, "only {} bundles", files.len());
    let (ok, reports) = fhirkit(&files);
    let flagged: Vec<&serde_json::Value> = reports
        .iter()
        .filter(|r| r["issues"].as_array().is_some_and(|i| !i.is_empty()))
        .collect();
    assert!(
        ok && flagged.is_empty(),
        "fhirkit found issues in {} of {} bundles: {flagged:#?}",
        flagged.len(),
        files.len()
    );
    assert_eq!(reports.len(), files.len(), "one report per bundle");
    let _ = std::fs::remove_dir_all(&out);
}
