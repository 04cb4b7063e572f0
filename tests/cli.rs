//! The `v2fhir parse` and `v2fhir ack` commands, run as a user would.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_v2fhir"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn v2fhir");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait")
}

#[test]
fn parse_prints_every_message_as_json() {
    let out = run(&["parse", "tests/corpus/hapi/example_oml_o21.hl7"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let msgs = j["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 13);
    assert_eq!(msgs[0]["header"]["message_code"], "OML");
    assert_eq!(msgs[0]["structure"], "OML_O21");
    assert_eq!(msgs[0]["segments"][0]["fields"]["MSH-9.1"], "OML");
    assert!(msgs[0]["groups"]["items"].is_array());
}

#[test]
fn parse_reads_stdin_and_reports_diagnostics() {
    let input = b"junk\nMSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\nPID|1||\"\"\n";
    let out = run(&["parse", "-"], Some(input));
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(j["diagnostics"][0]["code"], "leading_junk");
    assert_eq!(
        j["messages"][0]["segments"][1]["fields"]["PID-3"],
        serde_json::Value::Null
    );
    let codes: Vec<&str> = j["messages"][0]["diagnostics"]
        .as_array()
        .expect("diags")
        .iter()
        .filter_map(|d| d["code"].as_str())
        .collect();
    assert!(codes.contains(&"non_standard_terminator"), "{codes:?}");
}

#[test]
fn parse_fails_only_without_a_usable_msh() {
    let out = run(&["parse", "-"], Some(b"this is not HL7"));
    assert_eq!(out.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        j["error"]
            .as_str()
            .expect("error")
            .contains("no usable MSH")
    );
    // A bad-but-parsable file still exits 0.
    let out = run(
        &["parse", "tests/corpus/cdc-dex/Lyme_bad_delimiters.hl7"],
        None,
    );
    assert!(out.status.success());
}

#[test]
fn ack_prints_the_acknowledgment() {
    let out = run(&["ack", "tests/corpus/python-hl7/sample_hl7.hl7"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("MSH|^~\\&|GHH OE|BLDG4|GHH LAB|ELAB-3|"),
        "{text}"
    );
    assert_eq!(lines[1], "MSA|AA|CNTRL-3456");
}

#[test]
fn ack_rejects_what_is_not_hl7() {
    let out = run(&["ack", "-"], Some(b"GET / HTTP/1.1\r\n\r\n"));
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.contains("\nMSA|AR\n"), "{text}");
    assert!(
        text.contains("ERR|||100^Segment sequence error^HL70357|E"),
        "{text}"
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = run(&["parse", "no/such/file.hl7"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reading no/such/file.hl7"), "{err}");
}

#[test]
fn convert_prints_a_transaction_bundle() {
    let out = run(&["convert", "tests/golden/vxu_v04.hl7"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bundle JSON");
    assert_eq!(b["resourceType"], "Bundle");
    assert_eq!(b["type"], "transaction");
    assert_eq!(b["entry"][0]["resource"]["resourceType"], "MessageHeader");
    assert!(
        b["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["resource"]["resourceType"] == "Immunization")
    );
    assert_eq!(b["entry"][1]["request"]["method"], "PUT");
}

/// How many messages `tests/golden` holds (one per file).
fn golden_messages() -> usize {
    std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "hl7"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn convert_ndjson_over_a_directory_with_outcomes() {
    let out = run(
        &[
            "convert",
            "--ndjson",
            "--bundle-type",
            "collection",
            "tests/golden",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson line"))
        .collect();
    assert_eq!(lines.len(), golden_messages());
    for l in &lines {
        assert_eq!(l["bundle"]["type"], "collection");
        assert!(
            l["bundle"]["entry"][0].get("request").is_none(),
            "collections have no requests"
        );
        assert_eq!(l["outcome"]["resourceType"], "OperationOutcome");
    }
}

#[test]
fn convert_fails_for_unmapped_messages_and_says_why() {
    let input = b"MSH|^~\\&|A|B|C|D|2024||ZZZ^Z99|1|P|2.5\rPID|1\r";
    let out = run(&["convert", "-"], Some(input));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no mapping for message type ZZZ^Z99"), "{err}");
}

#[test]
fn convert_rejects_unknown_zone_and_bundle_type() {
    let out = run(
        &[
            "convert",
            "--zone",
            "Mars/Olympus",
            "tests/golden/vxu_v04.hl7",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an IANA time zone"));
    let out = run(
        &[
            "convert",
            "--bundle-type",
            "pile",
            "tests/golden/vxu_v04.hl7",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn mappings_check_and_test() {
    let out = run(&["mappings", "check"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("— OK"));
    let out = run(&["mappings", "test"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(" passed, 0 failed"));
}

#[test]
fn a_broken_mapping_set_does_not_load() {
    let dir = std::env::temp_dir().join(format!("v2fhir-bad-mappings-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("segments")).expect("mkdir");
    std::fs::write(
        dir.join("segments/PID.yaml"),
        "kind: segment\nmap: \"PID[Patient]\"\nrules:\n  - { name: a, from: PID-8, to: sex }\n",
    )
    .expect("write");
    let out = run(
        &[
            "mappings",
            "check",
            "--mappings",
            dir.to_str().expect("path"),
        ],
        None,
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("segments/PID.yaml:4:") && err.contains("Patient has no element 'sex'"),
        "{err}"
    );
}

#[test]
fn ack_answers_ae_when_conversion_fails() {
    let input = b"MSH|^~\\&|A|B|C|D|2024||ORU^R01^ORU_R01|7|P|2.5.1\rPID|1||X\rOBR|1|||P^Panel^LN\rOBX|1|NM||||\r";
    let out = run(&["ack", "-"], Some(input));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.contains("\nMSA|AE|7\n"), "{text}");
    assert!(text.contains("207^Application internal error^HL70357|E||||Observation not emitted: required code (OBX-3) is missing"), "{text}");
}

/// `--loss-summary` counts what went unmapped over all the messages: whole segments, fields and
/// codes no vocabulary translated, most frequent first, on stderr (stdout keeps the bundles).
#[test]
fn convert_loss_summary_counts_unmapped_segments_and_fields() {
    let out = run(
        &["convert", "--ndjson", "--loss-summary", "tests/golden"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let summary = err
        .split(&format!(
            "not mapped, over {} message(s) (occurrences):",
            golden_messages()
        ))
        .nth(1)
        .unwrap_or_else(|| panic!("no summary: {err}"));
    let fields = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("fields:"))
        .unwrap_or_else(|| panic!("no fields line: {summary}"));
    // EVN (no EVN-5 in the golden ADTs) and IN1-9 appear; Set IDs never do.
    assert!(fields.contains("IN1-9 "), "{fields}");
    assert!(!fields.contains("PID-1 "), "{fields}");
    let segments = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("segments:"))
        .unwrap_or_else(|| panic!("no segments line: {summary}"));
    assert!(segments.contains("EVN "), "{segments}");
    // Counts are in descending order.
    let counts: Vec<usize> = fields
        .split(", ")
        .filter_map(|x| x.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{fields}");
    // The codes a vocabulary had no entry for: a golden OBX sends result status N (not asked),
    // which table 0085's map to FHIR leaves without a target.
    let codes = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("codes no vocabulary translated:"))
        .unwrap_or_else(|| panic!("no codes line: {summary}"));
    assert!(codes.contains("ObservationStatus 'N' 1"), "{codes}");
    // Without the flag, no summary.
    let plain = run(&["convert", "--ndjson", "tests/golden"], None);
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("not mapped, over"));
}

/// `--trace` lists the rule behind each element: in each NDJSON line as a `trace` array, and as
/// lines on stderr beside pretty bundles; without it there is none.
#[test]
fn convert_trace_names_the_rule_behind_each_element() {
    let out = run(
        &["convert", "--ndjson", "--trace", "tests/golden/adt_a01.hl7"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap_or_default())
            .expect("ndjson line");
    let rows = line["trace"].as_array().expect("trace array");
    assert!(
        rows.iter().any(|r| r["path"] == "birthDate"
            && r["source"] == "PID-7 (segment #3)"
            && r["rule"]
                .as_str()
                .is_some_and(|x| x.starts_with("birth-date (mappings/segments/PID-Patient.yaml:"))),
        "{rows:?}"
    );
    let pretty = run(&["convert", "--trace", "tests/golden/adt_a01.hl7"], None);
    let err = String::from_utf8_lossy(&pretty.stderr);
    assert!(
        err.lines().any(|l| l.contains(
            " birthDate  ← PID-7 (segment #3)  [birth-date (mappings/segments/PID-Patient.yaml:"
        )),
        "{err}"
    );
    let plain = run(&["convert", "--ndjson", "tests/golden/adt_a01.hl7"], None);
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("\"trace\""));
}

/// `serve --check` lists every problem of the settings and the files they name, all at once, and
/// starts nothing; with the shipped defaults it passes.
#[test]
fn serve_check_lists_every_problem_and_starts_nothing() {
    let ok = run(&["serve", "--check", "--mllp", "", "--http", ""], None);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dir = std::env::temp_dir().join(format!("v2fhir-check-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("segments")).expect("mkdir");
    std::fs::write(
        dir.join("segments/PID.yaml"),
        "kind: segment\nmap: \"PID[Patient]\"\nrules:\n  - { name: a, from: PID-8, to: sex }\n",
    )
    .expect("write");
    std::fs::write(dir.join("tokens"), "someone banana 12\n").expect("write");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_v2fhir"));
    let out = cmd
        .args([
            "serve",
            "--check",
            "--mappings",
            dir.to_str().expect("path"),
        ])
        .env("V2FHIR_HTTP_TLS_CERT", dir.join("missing.pem"))
        .env("V2FHIR_HTTP_TLS_KEY", dir.join("missing.key"))
        .env("V2FHIR_HTTP_TOKENS_FILE", dir.join("tokens"))
        .env("V2FHIR_STORE_DURABILITY", "sometimes")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for says in [
        "store.durability 'sometimes'",
        "Patient has no element 'sex'",
        "missing.pem",
        "unknown scope 'banana'",
    ] {
        assert!(err.contains(says), "missing '{says}' in: {err}");
    }
    assert!(!err.contains("listening"), "{err}");
}
