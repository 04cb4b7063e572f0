//! `v2fhir send`: the MLLP client command against a running `v2fhir serve`.

mod gateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_prints_acks_and_fails_on_rejects() {
    let dir = gateway::scratch("send");
    let url = format!("sqlite://{}/v2fhir.db", dir.display());
    let server = gateway::spawn(&url, &dir.join("gateway.log"), &[]).await;
    let to = server.mllp.to_string();
    let run = |args: Vec<String>| {
        let to = to.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_v2fhir"))
                .arg("send")
                .arg("--to")
                .arg(&to)
                .args(&args)
                .current_dir(gateway::root())
                .output()
                .await
                .unwrap_or_else(|e| panic!("spawn: {e}"))
        }
    };
    // Three golden files (ADT^A01 asks for enhanced mode: CA), all accepted.
    let ok = run(vec![
        "tests/golden/oru_r01_lab.hl7".into(),
        "tests/golden/adt_a01.hl7".into(),
        "tests/golden/vxu_v04.hl7".into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(stdout.matches("MSA|").count(), 3, "{stdout}");
    assert!(stdout.contains("MSA|AA|LAB0001"), "{stdout}");
    // A file that is not HL7 is sent as it is, answered AR, and the command exits 1.
    let bad = dir.join("bad.hl7");
    std::fs::write(&bad, "this is not HL7").unwrap_or_else(|e| panic!("{e}"));
    let rejected = run(vec![bad.display().to_string()]).await;
    assert_eq!(rejected.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&rejected.stdout).contains("MSA|AR"));
    assert!(String::from_utf8_lossy(&rejected.stderr).contains("1 not accepted"));
    drop(server);
}
