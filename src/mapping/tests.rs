//! Runs the `tests:` blocks of message maps (`v2fhir mappings test`).

use super::eval::{self, ConvertOptions};
use super::plan::Plan;
use serde_json::Value;
use std::path::Path;

/// Outcome of running the tests.
#[derive(Debug, Default)]
pub struct Report {
    /// Passed expectations.
    pub passed: usize,
    /// Failed expectations (and unreadable inputs).
    pub failed: usize,
    /// One line per failure, plus a line per test case.
    pub lines: Vec<String>,
}

/// Look up `a.b[0].c` in a JSON value.
pub fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    let mut cur = v;
    for part in path.split('.') {
        let (key, idx) = match part.split_once('[') {
            Some((k, rest)) => (
                k,
                rest.strip_suffix(']').and_then(|n| n.parse::<usize>().ok()),
            ),
            None => (part, None),
        };
        if !key.is_empty() {
            cur = cur.get(key)?;
        }
        if let Some(i) = idx {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

/// ` (written by RULE from SOURCE)` for the element at `path` of `resource`, from the trace of
/// conversion `c`; empty when no rule wrote it.
fn written_by(c: &eval::Conversion, resource: &Value, path: &str) -> String {
    let name = format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap_or(""),
        resource["id"].as_str().unwrap_or("")
    );
    c.trace
        .iter()
        .find(|row| row.resource == name && row.path == path)
        .map(|row| format!(" (written by {} from {})", row.rule, row.source))
        .unwrap_or_default()
}

/// Run every message map's tests; input paths are relative to `base` (the mapping set's parent).
pub fn run_all(plan: &Plan, base: &Path) -> Report {
    let mut r = Report::default();
    // Traced, so that a wrong value names the rule that wrote it.
    let opts = ConvertOptions {
        trace: true,
        ..ConvertOptions::default()
    };
    for mp in &plan.messages {
        for t in &mp.tests {
            let path = base.join(&t.input);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    r.failed += 1;
                    r.lines.push(format!(
                        "FAIL {} {}: cannot read input: {e}",
                        mp.file, t.input
                    ));
                    continue;
                }
            };
            let parsed = match crate::v2::parse(&bytes) {
                Ok(p) => p,
                Err(e) => {
                    r.failed += 1;
                    r.lines.push(format!("FAIL {} {}: {e}", mp.file, t.input));
                    continue;
                }
            };
            let Some(msg) = parsed.messages.first() else {
                continue;
            };
            let c = eval::convert(plan, msg, &opts);
            let mut case_failed = 0;
            for e in &t.expect {
                let of_alias: Vec<&Value> = c.resources_of(&e.resource);
                let problem = if let Some(n) = e.count {
                    (of_alias.len() != n).then(|| {
                        format!(
                            "expected {n} '{}' resource(s), got {}",
                            e.resource,
                            of_alias.len()
                        )
                    })
                } else {
                    match of_alias.first() {
                        None => Some(format!("no '{}' resource", e.resource)),
                        Some(res) => {
                            let got = lookup(res, &e.path);
                            if e.absent == Some(true) {
                                got.map(|g| {
                                    format!("{}.{} should be absent, is {g}", e.resource, e.path)
                                })
                            } else if let Some(want) = &e.equals {
                                match got {
                                    Some(g)
                                        if g == want
                                            || g.as_str()
                                                .is_some_and(|s| Some(s) == want.as_str())
                                            || *g == *want =>
                                    {
                                        None
                                    }
                                    other => Some(format!(
                                        "{}.{}: expected {want}, got {}{}",
                                        e.resource,
                                        e.path,
                                        other.map(|g| g.to_string()).unwrap_or("nothing".into()),
                                        written_by(&c, res, &e.path)
                                    )),
                                }
                            } else {
                                got.is_none()
                                    .then(|| format!("{}.{} is missing", e.resource, e.path))
                            }
                        }
                    }
                };
                match problem {
                    None => r.passed += 1,
                    Some(p) => {
                        r.failed += 1;
                        case_failed += 1;
                        r.lines.push(format!("FAIL {} {}: {p}", mp.file, t.input));
                    }
                }
            }
            if case_failed == 0 {
                r.lines.push(format!(
                    "ok   {} {} ({} expectation(s))",
                    mp.file,
                    t.input,
                    t.expect.len()
                ));
            }
        }
    }
    r
}

#[cfg(test)]
mod written_by_tests {
    use super::*;

    /// A failed expectation names the rule that wrote the element, from the conversion's trace.
    #[test]
    fn names_the_rule_behind_an_element() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let plan = crate::mapping::load::load_dir(&root.join("mappings")).expect("mappings load");
        let bytes = std::fs::read(root.join("tests/golden/adt_a01.hl7")).expect("golden input");
        let parsed = crate::v2::parse(&bytes).expect("parse");
        let opts = ConvertOptions {
            trace: true,
            ..ConvertOptions::default()
        };
        let c = eval::convert(&plan, &parsed.messages[0], &opts);
        let patient = c.resources_of("patient")[0];
        let said = written_by(&c, patient, "birthDate");
        assert!(
            said.starts_with(" (written by birth-date (mappings/segments/PID-Patient.yaml:")
                && said.ends_with(" from PID-7 (segment #3))"),
            "{said}"
        );
        assert_eq!(written_by(&c, patient, "photo"), "");
    }
}
