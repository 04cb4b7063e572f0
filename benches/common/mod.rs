//! Shared benchmark harness: corpus loading and a calibrated timing loop.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

pub fn load(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus/fhir-converter")
        .join(name);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    // Canonical CR-terminated form without BOM, so both parsers see standard input.
    s.trim_start_matches('\u{FEFF}')
        .replace("\r\n", "\r")
        .replace('\n', "\r")
}

pub fn oru_with_20_obx() -> String {
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
pub fn measure(budget: Duration, mut f: impl FnMut()) -> Duration {
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

pub fn wanted(what: &str) -> bool {
    std::env::var("BENCH_ONLY")
        .map(|o| what.contains(o.as_str()))
        .unwrap_or(true)
}

pub fn report(case: &str, what: &str, bytes: usize, per: Duration) {
    let secs = per.as_secs_f64();
    println!(
        "{case:<22} {what:<26} {:>9.1} MB/s {:>11.0} msg/s {:>9.2} µs/msg",
        bytes as f64 / secs / 1e6,
        1.0 / secs,
        secs * 1e6
    );
}

/// Time budget per case from `BENCH_MS` (default 1000 ms).
pub fn budget() -> Duration {
    Duration::from_millis(
        std::env::var("BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000),
    )
}
