//! Parse throughput: v2fhir's parser vs `hl7-parser` 0.3.0 on the same messages in the same run.
//!
//! `cargo bench --bench parse` (release profile). Prints MB/s and messages/s per case:
//! - `v2fhir parse+header`: split into segments, index every field separator, decode charset
//!   check, header facts (what every ingest does);
//! - `v2fhir parse+all leaves`: the above plus decoding the text of every subcomponent;
//! - `hl7-parser parse`: `Message::parse_with_lenient_newlines` (builds its full tree).

mod common;

use common::{load, measure, oru_with_20_obx, report, wanted};
use std::hint::black_box;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects cases by substring.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let budget = common::budget();
    let cases = [
        ("ADT^A01", load("ADT-A01-01.hl7")),
        ("ORU^R01 (20 OBX)", oru_with_20_obx()),
        ("VXU^V04", load("VXU-V04-01.hl7")),
    ];
    println!(
        "{:<22} {:<26} {:>14} {:>17} {:>15}",
        "message", "parser", "throughput", "rate", "latency"
    );
    for (name, text) in &cases {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let bytes = text.as_bytes();
        // Sanity: both parsers accept it, and agree on the segment count.
        let ours = v2fhir::v2::parse(bytes).expect("v2fhir parses");
        let theirs = hl7_parser::Message::parse_with_lenient_newlines(text, true)
            .expect("hl7-parser parses");
        assert_eq!(
            ours.messages[0].len(),
            theirs.segments().count(),
            "{name}: segment counts differ"
        );

        if wanted("v2fhir parse+header") {
            let t = measure(budget, || {
                let p = v2fhir::v2::parse(black_box(bytes)).expect("parse");
                black_box(p.messages[0].header().control_id.as_deref());
            });
            report(name, "v2fhir parse+header", bytes.len(), t);
        }

        if wanted("v2fhir parse+all leaves") {
            let t = measure(budget, || {
                let p = v2fhir::v2::parse(black_box(bytes)).expect("parse");
                let mut n = 0usize;
                for seg in p.messages[0].segments() {
                    for (_, f) in seg.fields() {
                        for rep in f.children() {
                            for comp in rep.children() {
                                for sub in comp.children() {
                                    n += sub.text().map(|t| t.len()).unwrap_or(0);
                                }
                            }
                        }
                    }
                }
                black_box(n);
            });
            report(name, "v2fhir parse+all leaves", bytes.len(), t);
        }

        if wanted("hl7-parser 0.3.0 parse") {
            let t = measure(budget, || {
                let m = hl7_parser::Message::parse_with_lenient_newlines(black_box(text), true)
                    .expect("parse");
                black_box(m.segments().count());
            });
            report(name, "hl7-parser 0.3.0 parse", bytes.len(), t);
        }
    }
}
