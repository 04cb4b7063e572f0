//! Logs carry no PHI by default, and the message text only when `log.phi` is enabled. Runs the
//! real binary with debug logging and reads what it wrote.

mod gateway;

use gateway::{Mllp, msa};

const NAME: &str = "ZEBRAFINCH";
const MRN: &str = "MRN7788991";

/// A downstream MLLP receiver that refuses every message and quotes the patient in its reason
/// (receivers do): the forwarder must not log it. Returns its port and what it got.
async fn quoting_receiver() -> (u16, gateway::Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let (got, _task) = gateway::mllp_receiver(listener, None, |control, _| {
        format!("MSA|AE|{control}|no such patient {NAME} {MRN}")
    });
    (port, got)
}

async fn run(phi: bool) -> String {
    let dir = gateway::scratch(if phi { "logs-phi" } else { "logs" });
    let (port, forwarded) = quoting_receiver().await;
    let forward_to = format!("127.0.0.1:{port}");
    let url = format!("sqlite://{}/v2fhir.db", dir.display());
    let log = dir.join("gateway.log");
    let phi_value = if phi { "true" } else { "false" };
    let mut server = gateway::spawn(
        &url,
        &log,
        &[
            ("RUST_LOG", "warn,v2fhir=debug,tower_http=debug"),
            ("V2FHIR_LOG_PHI", phi_value),
            ("V2FHIR_FORWARD_MLLP", forward_to.as_str()),
        ],
    )
    .await;
    let mut c = Mllp::connect(server.mllp).await;
    let ok = gateway::adt("L1", MRN, "").replace("DOE^JANE^Q", &format!("{NAME}^JANE"));
    let a = c.send(ok.as_bytes(), 1).await;
    assert_eq!(msa(&a[0]).0, "AA");
    let bad = ok
        .replace("|L1|", "|L2|")
        .replace("ADT^A08^ADT_A01", "ZZZ^Z01");
    let a = c.send(bad.as_bytes(), 1).await;
    assert_eq!(msa(&a[0]).0, "AE");
    let rejected = ok.replace("|L1|P|", "|L3|X|");
    let a = c.send(rejected.as_bytes(), 1).await;
    assert_eq!(msa(&a[0]).0, "AR");
    // The accepted message was forwarded and refused (the receiver's answer quotes the patient).
    for _ in 0..200 {
        if !forwarded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // SIGTERM: graceful shutdown flushes the log.
    if let Some(pid) = server.child.id() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    let _ = server.child.wait().await;
    std::fs::read_to_string(&log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_phi_in_logs_by_default() {
    let text = run(false).await;
    assert!(
        text.contains("message committed"),
        "debug logging was on: {text}"
    );
    assert!(
        text.contains("the receiver refused the message"),
        "the forwarder ran and was refused: {text}"
    );
    assert!(
        !text.contains(NAME),
        "a patient name reached the log:\n{text}"
    );
    assert!(
        !text.contains(MRN),
        "a patient identifier reached the log:\n{text}"
    );
    assert!(
        !text.contains("19800101"),
        "a birth date reached the log:\n{text}"
    );
    // Written to a file, the log has no terminal colour codes.
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escape codes in a log written to a file:\n{text}"
    );
    // A SQLite store's URL is not parsed as PostgreSQL's (sqlx warned about `mode=rwc` at every
    // start).
    assert!(
        !text.contains("sqlx_postgres"),
        "PostgreSQL settings were parsed for a SQLite store:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_text_only_when_enabled() {
    let text = run(true).await;
    assert!(text.contains("log.phi"), "{text}");
    assert!(
        text.contains(NAME),
        "log.phi = true should log the failed messages:\n{text}"
    );
}
