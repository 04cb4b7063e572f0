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
