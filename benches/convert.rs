//! Conversion throughput: parse + group + map + R4-validate + serialize to JSON, per message,
//! on one core. `cargo bench --bench convert`.

mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use common::{load, measure, oru_with_20_obx, report};
use std::hint::black_box;
use std::path::Path;
use v2fhir::mapping::eval::{self, ConvertOptions};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let plan = v2fhir::mapping::load::load_dir(&root.join("mappings")).expect("mapping set loads");
    let budget = common::budget();
    let golden =
        |n: &str| std::fs::read_to_string(root.join("tests/golden").join(n)).expect("golden input");
    let cases = [
        ("ADT^A01 (golden)", golden("adt_a01.hl7")),
        ("ADT^A01 (FHIR-Conv.)", load("ADT-A01-01.hl7")),
        ("ORU^R01 (20 OBX)", oru_with_20_obx()),
        ("VXU^V04 (golden)", golden("vxu_v04.hl7")),
    ];
    for validate in [true, false] {
        let opts = ConvertOptions {
            validate,
            ..ConvertOptions::default()
        };
        println!("\nvalidation {}", if validate { "on" } else { "off" });
        for (name, text) in &cases {
            let bytes = text.as_bytes();
            let t = measure(budget, || {
                let p = v2fhir::v2::parse(black_box(bytes)).expect("parse");
                let c = eval::convert(&plan, &p.messages[0], &opts);
                let json = c
                    .bundle
                    .as_ref()
                    .map(v2fhir::fhir::json::to_vec)
                    .unwrap_or_default();
                black_box(json.len());
            });
            report(name, "parse+map+validate+json", bytes.len(), t);
        }
    }
    // What a gateway lane does per message before the commit: the above plus the ACK(s),
    // the content hash, the diagnostics and the row.
    println!("\ningest::prepare (validation on)");
    let cfg = v2fhir::ingest::IngestConfig::default();
    for (name, text) in &cases {
        let bytes = text.as_bytes();
        let t = measure(budget, || {
            let p = v2fhir::ingest::prepare(
                black_box(bytes),
                v2fhir::ingest::Source::Mllp,
                &plan,
                &cfg,
                0,
            );
            black_box(p.len());
        });
        report(name, "prepare", bytes.len(), t);
    }
}
