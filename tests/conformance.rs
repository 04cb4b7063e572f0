//! Conformance against Microsoft FHIR-Converter's expected output for the 121 message pairs in
//! `tests/corpus/fhir-converter/`: compares *facts* (identifiers, names, dates as instants, codes,
//! values, statuses…), not ids or formatting. Prints agreement per message type and resource type
//! and fails under the floors below (raise them as the maps improve). Differences that remain, and
//! why, are listed in `docs/conformance.md`.

mod common;

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use v2fhir::mapping::eval::{self, ConvertOptions};

/// Minimum agreement per resource type (fraction of expected facts we reproduce).
/// Measured 2026-11-30: Patient 93.5%, Encounter 95.8%, Observation 85.8% (ACC and PDA since
/// 2026-11-30; 73.8% before), Immunization 88.2%,
/// DiagnosticReport 38.5% (see docs/conformance.md for what remains; target: 95%), and of the
/// companions RelatedPerson 90.9% (the mother from PID-21 since 2026-11-30; 82.2% before),
/// Condition 90.8% and ServiceRequest 53.6% (every order of an OMG/OML message since the
/// grouping lookahead of 2026-11-30; 86.2% and 51.0% before), Procedure 54.5% (PDA's death
/// certification and autopsy; 44.3% before).
const FLOORS: &[(&str, f64)] = &[
    ("Patient", 0.93),
    ("Encounter", 0.95),
    ("Observation", 0.85),
    ("Immunization", 0.85),
    ("DiagnosticReport", 0.37),
    ("RelatedPerson", 0.90),
    ("Condition", 0.90),
    ("ServiceRequest", 0.53),
    ("Procedure", 0.54),
];

/// Which elements are facts, per resource type (dotted paths, arrays flattened).
const FACT_PATHS: &[(&str, &[&str])] = &[
    (
        "Account",
        &["identifier.value", "identifier.type.coding", "status"],
    ),
    (
        "Patient",
        &[
            "identifier.value",
            "name.family",
            "name.given",
            "birthDate",
            "gender",
            "address.line",
            "address.city",
            "address.state",
            "address.postalCode",
            "address.country",
            "telecom.value",
            "maritalStatus.coding",
            "communication.language.coding",
            "deceasedDateTime",
            "deceasedBoolean",
            "multipleBirthBoolean",
            "multipleBirthInteger",
        ],
    ),
    (
        "Encounter",
        &[
            "status",
            "class",
            "type.coding",
            "period.start",
            "period.end",
            "identifier.value",
            "hospitalization.admitSource.coding",
            "hospitalization.dischargeDisposition.coding",
            "hospitalization.reAdmission.coding",
            "participant.type.coding",
            "reasonCode.coding",
        ],
    ),
    (
        "Observation",
        &[
            "status",
            "code.coding",
            "valueQuantity.value",
            "valueQuantity.unit",
            "valueString",
            "valueCodeableConcept.coding",
            "valueDateTime",
            "effectiveDateTime",
            "interpretation.coding",
            "method.coding",
            "issued",
        ],
    ),
    (
        "Immunization",
        &[
            "status",
            "vaccineCode.coding",
            "occurrenceDateTime",
            "doseQuantity.value",
            "doseQuantity.unit",
            "lotNumber",
            "expirationDate",
            "route.coding",
            "site.coding",
            "statusReason.coding",
            "reportOrigin.coding",
            "primarySource",
        ],
    ),
    (
        "DiagnosticReport",
        &[
            "status",
            "code.coding",
            "effectiveDateTime",
            "issued",
            "identifier.value",
            "category.coding",
            "conclusion",
        ],
    ),
    (
        "AllergyIntolerance",
        &[
            "code.coding",
            "category",
            "criticality",
            "onsetDateTime",
            "reaction.manifestation.text",
        ],
    ),
    (
        "Condition",
        &["code.coding", "onsetDateTime", "recordedDate"],
    ),
    ("Procedure", &["status", "code.coding", "performedDateTime"]),
    (
        "Coverage",
        &["status", "subscriberId", "period.start", "period.end"],
    ),
    (
        "RelatedPerson",
        &[
            "name.family",
            "name.given",
            "relationship.coding",
            "telecom.value",
            "gender",
            "birthDate",
        ],
    ),
    (
        "ServiceRequest",
        &[
            "status",
            "intent",
            "code.coding",
            "identifier.value",
            "authoredOn",
        ],
    ),
    (
        "Specimen",
        &[
            "type.coding",
            "collection.collectedDateTime",
            "receivedTime",
        ],
    ),
];

#[derive(Debug, Clone, PartialEq)]
struct Fact {
    key: String,
    value: String,
    /// Coding system, when the fact is a coding.
    system: Option<String>,
}

/// Date-times with a time part become UTC instants (the expected files shift offsets to +05:30).
fn file_name(p: &std::path::Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn normalize(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let s = s.trim();
            if s.len() >= 16 && s.as_bytes().get(10) == Some(&b'T') {
                if let Ok(ts) = s.parse::<jiff::Timestamp>() {
                    return ts.to_string();
                }
                // No offset (FHIR-Converter sometimes omits it): compare the wall time.
                if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
                    return dt.to_string();
                }
            }
            s.to_string()
        }
        Value::Number(n) => n
            .as_f64()
            .map(|f| format!("{f}"))
            .unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

fn collect(v: &Value, path: &[&str], key: &str, out: &mut Vec<Fact>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| collect(x, path, key, out)),
        _ if path.is_empty() => {
            if let Some(code) = v.get("code").filter(|_| v.is_object()) {
                // A Coding.
                let system = v.get("system").and_then(Value::as_str).map(str::to_string);
                out.push(Fact {
                    key: key.to_string(),
                    value: normalize(code),
                    system,
                });
            } else if !v.is_object() {
                out.push(Fact {
                    key: key.to_string(),
                    value: normalize(v),
                    system: None,
                });
            }
        }
        Value::Object(m) => {
            if let Some(next) = m.get(path[0]) {
                collect(next, &path[1..], key, out);
            }
        }
        _ => {}
    }
}

fn facts(resource: &Value) -> Vec<Fact> {
    let rt = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut out = Vec::new();
    if let Some((_, paths)) = FACT_PATHS.iter().find(|(t, _)| *t == rt) {
        for p in *paths {
            let parts: Vec<&str> = p.split('.').collect();
            collect(resource, &parts, p, &mut out);
        }
    }
    out
}

fn placeholder_system(s: &Option<String>) -> bool {
    s.as_deref()
        .is_none_or(|s| s.starts_with("http://example.com/"))
}

/// How many expected facts are found among ours (each of ours used at most once).
fn matched(expected: &[Fact], ours: &[Fact]) -> usize {
    let mut used = vec![false; ours.len()];
    let mut n = 0;
    for e in expected {
        let hit = ours.iter().enumerate().position(|(i, o)| {
            !used[i]
                && o.key == e.key
                && o.value == e.value
                && (placeholder_system(&e.system) || o.system == e.system)
        });
        if let Some(i) = hit {
            used[i] = true;
            n += 1;
        }
    }
    n
}

fn resources(bundle: &Value) -> Vec<&Value> {
    bundle["entry"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e.get("resource")).collect())
        .unwrap_or_default()
}

#[derive(Default, Clone, Copy)]
struct Tally {
    expected: usize,
    matched: usize,
}

#[test]
fn agreement_with_fhir_converter() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let plan = common::plan();
    let dir = root.join("tests/corpus/fhir-converter");
    let pairs = common::hl7_files(&dir);
    assert_eq!(pairs.len(), 121, "expected the 121 FHIR-Converter pairs");
    let opts = ConvertOptions::default();
    let mut by_type: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_message: BTreeMap<String, HashMap<String, Tally>> = BTreeMap::new();
    let mut unresolved = Vec::new();
    let mut missing: HashMap<String, usize> = HashMap::new();
    for hl7 in &pairs {
        let json_path = hl7.with_extension("json");
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(&json_path).expect("expected json"))
                .expect("json");
        let bytes = std::fs::read(hl7).expect("hl7");
        let parsed = v2fhir::v2::parse(&bytes).expect("parses");
        let msg = &parsed.messages[0];
        let mtype = msg.header().message_type();
        let conv = eval::convert(&plan, msg, &opts);
        let ours: Vec<&Value> = conv.bundle.as_ref().map(resources).unwrap_or_default();
        // Every reference in our output resolves within the bundle.
        if let Some(b) = &conv.bundle {
            let ids: std::collections::HashSet<String> = ours
                .iter()
                .filter_map(|r| {
                    Some(format!(
                        "{}/{}",
                        r.get("resourceType")?.as_str()?,
                        r.get("id")?.as_str()?
                    ))
                })
                .collect();
            let text = b.to_string();
            for (i, _) in text.match_indices("\"reference\":\"") {
                let rest = &text[i + 13..];
                let end = rest.find('"').unwrap_or(0);
                let r = &rest[..end];
                if !ids.contains(r) {
                    unresolved.push(format!("{}: {r}", hl7.display()));
                }
            }
        }
        let exp_res = resources(&expected);
        for (rt, _) in FACT_PATHS {
            let e: Vec<Fact> = exp_res
                .iter()
                .filter(|r| r["resourceType"] == *rt)
                .flat_map(|r| facts(r))
                .collect();
            if e.is_empty() {
                continue;
            }
            let o: Vec<Fact> = ours
                .iter()
                .filter(|r| r["resourceType"] == *rt)
                .flat_map(|r| facts(r))
                .collect();
            let m = matched(&e, &o);
            if std::env::var("CONFORMANCE_SUMMARY").is_ok() {
                for f in &e {
                    if matched(std::slice::from_ref(f), &o) == 0 {
                        *missing.entry(format!("{rt} {}", f.key)).or_insert(0usize) += 1;
                    }
                }
            }
            if std::env::var("CONFORMANCE_DEBUG")
                .is_ok_and(|f| hl7.display().to_string().contains(&f))
            {
                for f in &e {
                    if matched(std::slice::from_ref(f), &o) == 0 {
                        println!(
                            "MISSING {} {rt} {} = {} [{}]",
                            file_name(hl7),
                            f.key,
                            f.value,
                            f.system.as_deref().unwrap_or("")
                        );
                    }
                }
                for f in &o {
                    if matched(std::slice::from_ref(f), &e) == 0 {
                        println!(
                            "EXTRA   {} {rt} {} = {} [{}]",
                            file_name(hl7),
                            f.key,
                            f.value,
                            f.system.as_deref().unwrap_or("")
                        );
                    }
                }
            }
            let t = by_type.entry(rt.to_string()).or_default();
            t.expected += e.len();
            t.matched += m;
            let mt = by_message
                .entry(mtype.clone())
                .or_default()
                .entry(rt.to_string())
                .or_default();
            mt.expected += e.len();
            mt.matched += m;
        }
    }
    println!(
        "\nAgreement with FHIR-Converter's expected output (facts reproduced / facts expected):"
    );
    println!(
        "{:<20} {:>8} {:>8} {:>7}",
        "resource type", "matched", "expected", "%"
    );
    for (rt, t) in &by_type {
        println!(
            "{rt:<20} {:>8} {:>8} {:>6.1}%",
            t.matched,
            t.expected,
            100.0 * t.matched as f64 / t.expected.max(1) as f64
        );
    }
    println!("\nBy message type:");
    for (mt, types) in &by_message {
        let (m, e) = types
            .values()
            .fold((0, 0), |(m, e), t| (m + t.matched, e + t.expected));
        println!(
            "{mt:<12} {m:>6} / {e:<6} {:>6.1}%",
            100.0 * m as f64 / e.max(1) as f64
        );
    }
    if !missing.is_empty() {
        let mut v: Vec<_> = missing.into_iter().collect();
        v.sort_by_key(|x| std::cmp::Reverse(x.1));
        println!("\nMost frequent missing facts:");
        for (k, n) in v.iter().take(40) {
            println!("{n:>6}  {k}");
        }
    }
    assert!(
        unresolved.is_empty(),
        "references that do not resolve:\n{}",
        unresolved.join("\n")
    );
    let mut below = Vec::new();
    for (rt, floor) in FLOORS {
        let t = by_type.get(*rt).copied().unwrap_or_default();
        let pct = t.matched as f64 / t.expected.max(1) as f64;
        if pct < *floor {
            below.push(format!(
                "{rt}: {:.1}% < floor {:.1}%",
                pct * 100.0,
                floor * 100.0
            ));
        }
    }
    assert!(
        below.is_empty(),
        "agreement fell below the floor:\n{}",
        below.join("\n")
    );
}

#[test]
fn every_corpus_message_converts_without_panic_and_every_resource_is_valid_r4() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let plan = common::plan();
    let opts = ConvertOptions::default();
    let mut converted = 0;
    let mut files = Vec::new();
    for dir in std::fs::read_dir(root.join("tests/corpus"))
        .expect("corpus")
        .flatten()
    {
        if dir.path().is_dir() {
            for f in std::fs::read_dir(dir.path()).expect("dir").flatten() {
                let p = f.path();
                if p.extension().is_some_and(|x| x == "hl7" || x == "bad") {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    let mut invalid = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).expect("read");
        let Ok(parsed) = v2fhir::v2::parse(&bytes) else {
            continue;
        };
        for m in &parsed.messages {
            let c = eval::convert(&plan, m, &opts);
            if let Some(b) = &c.bundle {
                converted += 1;
                for r in resources(b) {
                    let problems = v2fhir::fhir::validate::validate(r);
                    if !problems.is_empty() {
                        invalid.push(format!("{}: {problems:?}", f.display()));
                    }
                }
                let mut shell = b.clone();
                shell["entry"] = Value::Array(vec![]);
                let problems = v2fhir::fhir::validate::validate(&shell);
                assert!(
                    problems.is_empty(),
                    "{}: Bundle itself invalid: {problems:?}",
                    f.display()
                );
            }
        }
    }
    assert!(converted > 200, "only {converted} messages converted");
    assert!(invalid.is_empty(), "{}", invalid.join("\n"));
}

/// Every message of the FHIR-Converter corpus is accepted (AA): a contentless document OBX or a
/// segment outside the structure is reported (warnings), never a reason to refuse a whole result.
#[test]
fn every_fhir_converter_corpus_message_is_accepted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let plan = common::plan();
    let cfg = v2fhir::ingest::IngestConfig::default();
    let mut refused = Vec::new();
    let mut n = 0;
    for f in common::hl7_files(&root.join("tests/corpus/fhir-converter")) {
        let bytes = std::fs::read(&f).expect("read");
        for p in v2fhir::ingest::prepare(&bytes, v2fhir::ingest::Source::Mllp, &plan, &cfg, 0) {
            n += 1;
            if p.row.status != v2fhir::store::Status::Converted {
                refused.push(format!(
                    "{}: {} {}",
                    f.display(),
                    p.row.status.as_str(),
                    p.row.diagnostics.as_deref().unwrap_or("")
                ));
            }
        }
    }
    assert_eq!(n, 121, "the corpus has 121 messages");
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}
