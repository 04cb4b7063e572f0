//! Parse throughput: v2fhir's parser vs `hl7-parser` 0.3.0 on the same messages in the same run.
//!
//! `cargo bench --bench parse` (release profile). Prints MB/s and messages/s per case:
//! - `v2fhir parse+header`: split into segments, index every field separator, decode charset
//!   check, header facts (what every ingest does);
//! - `v2fhir parse+all leaves`: the above plus decoding the text of every subcomponent;
//! - `hl7-parser parse`: `Message::parse_with_lenient_newlines` (builds its full tree).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

fn load(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus/fhir-converter")
        .join(name);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    // Canonical CR-terminated form without BOM, so both parsers see standard input.
    s.trim_start_matches('\u{FEFF}')
        .replace("\r\n", "\r")
        .replace('\n', "\r")
}

fn oru_with_20_obx() -> String {
    let src = load("ORU-R01-01.hl7");
    let segs: Vec<&str> = src.split('\r').filter(|s| !s.is_empty()).collect();
    let obx: Vec<&str> = segs
        .iter()
        .copied()
        .filter(|s| s.starts_with("OBX"))
        .collect();
    let mut out = String::new();
    let mut placed = false;
    for s in &segs {
        if s.starts_with("OBX") {
            if !placed {
                for i in 0..20 {
                    out.push_str(obx[i % obx.len()]);
                    out.push('\r');
                }
                placed = true;
            }
            continue;
        }
        out.push_str(s);
        out.push('\r');
    }
    out
}

/// Run `f` repeatedly for about `budget`, return the best per-iteration time of 5 rounds.
fn measure(budget: Duration, mut f: impl FnMut()) -> Duration {
    // Calibrate.
    let mut iters = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        if t.elapsed() > budget / 20 {
            break;
        }
        iters *= 2;
    }
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(t.elapsed() / iters as u32);
    }
    best
}

fn wanted(what: &str) -> bool {
    std::env::var("BENCH_ONLY")
        .map(|o| what.contains(o.as_str()))
        .unwrap_or(true)
}

fn report(case: &str, what: &str, bytes: usize, per: Duration) {
    let secs = per.as_secs_f64();
    println!(
        "{case:<22} {what:<26} {:>9.1} MB/s {:>11.0} msg/s {:>9.2} µs/msg",
        bytes as f64 / secs / 1e6,
        1.0 / secs,
        secs * 1e6
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects cases by substring.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let budget = Duration::from_millis(
        std::env::var("BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000),
    );
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
