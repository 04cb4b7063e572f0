//! Fuzz parse + convert with the repository's mapping set: nothing may panic, and every emitted
//! resource must be valid R4. Run from the repository root: `cargo +nightly fuzz run convert`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use v2fhir::mapping::{eval, plan::Plan};

fn plan() -> &'static Plan {
    static P: OnceLock<Plan> = OnceLock::new();
    P.get_or_init(|| match v2fhir::mapping::load::load_dir(std::path::Path::new("mappings")) {
        Ok(p) => p,
        Err(e) => panic!("run from the repository root; mapping set: {e:?}"),
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = v2fhir::v2::parse(data) else { return };
    for m in &parsed.messages {
        let c = eval::convert(plan(), m, &eval::ConvertOptions::default());
        if let Some(entries) = c.bundle.as_ref().and_then(|b| b["entry"].as_array()) {
            for e in entries {
                assert!(v2fhir::fhir::validate::validate(&e["resource"]).is_empty());
            }
        }
    }
});
