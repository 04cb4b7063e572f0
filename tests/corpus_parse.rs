//! Every corpus file parses without panic; message counts match the manifest; every deliberately
//! broken input yields diagnostics or an error.

use std::path::{Path, PathBuf};
use v2fhir::v2::{self, Severity, Structures};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

struct Row {
    file: String,
    msh_count: usize,
}

fn manifest() -> Vec<Row> {
    let text =
        std::fs::read_to_string(corpus().join("MANIFEST.tsv")).expect("tests/corpus/MANIFEST.tsv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("column {name}"))
    };
    let (f, m) = (col("file"), col("msh_count"));
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            Row {
                file: cells[f].to_string(),
                msh_count: cells[m].parse().unwrap_or(0),
            }
        })
        .collect()
}

#[test]
fn message_counts_match_the_manifest() {
    let rows = manifest();
    let good: Vec<&Row> = rows.iter().filter(|r| r.file.ends_with(".hl7")).collect();
    assert!(
        good.len() >= 200,
        "expected the whole corpus, found {} files",
        good.len()
    );
    let mut failures = Vec::new();
    for row in good {
        let bytes = std::fs::read(corpus().join(&row.file)).expect(&row.file);
        match v2::parse(&bytes) {
            Ok(p) => {
                if p.messages.len() != row.msh_count {
                    failures.push(format!(
                        "{}: found {} messages, manifest says {}",
                        row.file,
                        p.messages.len(),
                        row.msh_count
                    ));
                }
                // Grouping and full decoding of every value must not panic either.
                for m in &p.messages {
                    let _ = Structures::builtin().group(m);
                    let _ = v2::json::escape_diagnostics(m);
                }
            }
            Err(e) => failures.push(format!("{}: {e}", row.file)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} file(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn broken_inputs_yield_diagnostics_or_an_error() {
    let rows = manifest();
    let bad: Vec<&Row> = rows
        .iter()
        .filter(|r| r.file.ends_with(".hl7.bad"))
        .collect();
    assert!(
        bad.len() >= 40,
        "expected the robustness inputs, found {}",
        bad.len()
    );
    let mut silent = Vec::new();
    for row in bad {
        let bytes = std::fs::read(corpus().join(&row.file)).expect(&row.file);
        match v2::parse(&bytes) {
            Err(e) => assert!(
                !e.diagnostics().is_empty(),
                "{}: error without diagnostics",
                row.file
            ),
            Ok(p) => {
                let mut n = p
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity >= Severity::Warning)
                    .count();
                for m in &p.messages {
                    n += m
                        .diagnostics()
                        .iter()
                        .filter(|d| d.severity >= Severity::Warning)
                        .count();
                    n += Structures::builtin()
                        .group(m)
                        .diagnostics
                        .iter()
                        .filter(|d| d.severity >= Severity::Warning)
                        .count();
                    n += v2::json::escape_diagnostics(m).len();
                }
                if n == 0 {
                    silent.push(row.file.clone());
                }
            }
        }
    }
    assert!(silent.is_empty(), "parsed without any warning: {silent:#?}");
}
