//! Forwarding over MLLP (`[forward]`) on both store backends, against a receiver on a real
//! loopback socket: accepted messages of the listed types are passed on byte for byte, in
//! order, once; while the receiver is down they wait in the store (across a gateway restart);
//! an AE parks the message as dead until it is reprocessed.

mod gateway;

use gateway::adt;
use serde_json::Value;
use std::time::Duration;
use tokio::net::TcpListener;

/// A device's reading, as a FHIR backend writes it.
const READING: &str = r#"{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"valueQuantity":{"value":72,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}"#;

use gateway::Received;

/// A downstream MLLP receiver on `listener` (over TLS with `tls`): answers AA, except AE the
/// first time it sees a control id starting with `REFUSE`.
fn receiver(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (Received, tokio::task::JoinHandle<()>) {
    gateway::mllp_receiver(listener, tls, |control, seen_before| {
        if control.starts_with("REFUSE") && !seen_before {
            format!("MSA|AE|{control}|patient unknown here")
        } else {
            format!("MSA|AA|{control}")
        }
    })
}

/// A receiver on a new loopback port: the port, what it gets, its task.
async fn listening_receiver(
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (u16, Received, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let (got, task) = receiver(listener, tls);
    (port, got, task)
}

/// A loopback port nothing listens on (a receiver that is down), free for one to start on.
async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    l.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn messages(http: &reqwest::Client, base: &str) -> Vec<Value> {
    let v = get_json(http, &format!("{base}/messages?limit=100")).await;
    v["items"].as_array().cloned().unwrap_or_default()
}

async fn message(http: &reqwest::Client, base: &str, id: i64) -> Value {
    get_json(http, &format!("{base}/messages/{id}")).await
}

/// POST a FHIR body to `path` (under the gateway's base): the status.
async fn fhir_post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> u16 {
    http.post(format!("{base}{path}"))
        .header("content-type", "application/fhir+json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .status()
        .as_u16()
}

/// POST with no body; the JSON answer.
async fn post_json(http: &reqwest::Client, url: &str) -> Value {
    http.post(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `POST /admin/prune?older_than_days=0`: how many messages went.
async fn prune(http: &reqwest::Client, base: &str) -> i64 {
    let r = post_json(http, &format!("{base}/admin/prune?older_than_days=0")).await;
    r["pruned"].as_i64().unwrap_or(-1)
}

fn id_of(list: &[Value], control: &str) -> i64 {
    list.iter()
        .find(|m| m["control_id"] == control && m["status"] != "duplicate")
        .and_then(|m| m["id"].as_i64())
        .unwrap_or_else(|| panic!("no message {control} in {list:?}"))
}

async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_messages_reach_the_receiver_in_order_once_even_across_outages() {
    let http = gateway::http_client();
    let oru = std::fs::read_to_string(gateway::root().join("tests/golden/oru_r01_lab.hl7"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    for (backend, url) in gateway::store_urls("forward").await {
        // The receiver's port, free for now: the receiver is down.
        let port = free_port().await;
        let mut cfg = gateway::config(&url);
        cfg.forward.mllp = format!("127.0.0.1:{port}");
        cfg.forward.types = "ADT^*".into();
        cfg.forward.timeout_secs = 2;
        cfg.forward.connect_timeout_secs = 1;
        cfg.forward.retry_max_secs = 1;

        // 1. Receiver down: every message is still answered after its commit, and the wanted
        // ones wait in the queue.
        let running = gateway::start(&cfg).await;
        let base = format!("http://{}", gateway::http_of(&running));
        let mut mllp = gateway::mllp_of(&running).await;
        let sent: Vec<String> = ["FW1", "FW2", "REFUSE1", "FW3"]
            .iter()
            .map(|c| adt(c, &format!("P-{c}"), ""))
            .collect();
        for (i, m) in sent.iter().enumerate() {
            let acks = mllp.send(m.as_bytes(), 1).await;
            assert_eq!(gateway::msa(&acks[0]).0, "AA", "{backend}: {acks:?}");
            if i == 1 {
                // Not forwarded: another type (the filter), a resend (a duplicate), and
                // something that is not HL7 (rejected).
                let acks = mllp.send(oru.as_bytes(), 1).await;
                assert_eq!(gateway::msa(&acks[0]).0, "AA", "{backend}: {acks:?}");
                let acks = mllp.send(sent[0].as_bytes(), 1).await;
                assert_eq!(gateway::msa(&acks[0]).0, "AA", "{backend}: {acks:?}");
                let acks = mllp.send(b"this is not HL7", 1).await;
                assert_eq!(gateway::msa(&acks[0]).0, "AR", "{backend}: {acks:?}");
            }
        }
        let list = messages(&http, &base).await;
        let fw1 = id_of(&list, "FW1");
        wait_for("a failed attempt", || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let m = message(&http, &base, fw1).await;
                m["forward"][0]["attempts"].as_i64().unwrap_or(0) >= 1
            }
        })
        .await;
        let m = message(&http, &base, fw1).await;
        assert_eq!(m["forward"][0]["state"], "pending", "{backend}: {m}");
        assert!(
            m["forward"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("127.0.0.1:{port}"))),
            "{backend}: {m}"
        );
        // A FHIR write (a device's reading) is logged too, and is not HL7 v2: not forwarded.
        assert_eq!(
            fhir_post(&http, &base, "/fhir/Observation", READING).await,
            201,
            "{backend}"
        );
        let health = get_json(&http, &format!("{base}/health")).await;
        assert_eq!(health["status"], "ok", "{backend}: {health}");
        assert_eq!(
            health["forward"]["default"]["pending"], 4,
            "{backend}: {health}"
        );
        let oru_id = id_of(&list, &gateway::control_id(oru.as_bytes()));
        assert!(
            message(&http, &base, oru_id).await.get("forward").is_none(),
            "{backend}: a filtered type has no forwarding row"
        );
        // Retention keeps what is still to be forwarded: only the ORU, the duplicate, the
        // rejected input and the FHIR write go.
        assert_eq!(prune(&http, &base).await, 4, "{backend}");
        running.shutdown().await;

        // 2. Receiver up, gateway restarted on the same store: the queue is delivered, in
        // order, each message once and byte for byte as received.
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (got, ehr) = receiver(listener, None);
        let running = gateway::start(&cfg).await;
        let base = format!("http://{}", gateway::http_of(&running));
        let count = || got.lock().unwrap_or_else(|e| e.into_inner()).len();
        wait_for("the queue to be forwarded", || {
            let n = count();
            async move { n >= 4 }
        })
        .await;
        let list = messages(&http, &base).await;
        let refused = id_of(&list, "REFUSE1");
        wait_for("the refusal to be recorded", || {
            let (http, base) = (http.clone(), base.clone());
            async move { message(&http, &base, refused).await["forward"][0]["state"] == "dead" }
        })
        .await;
        let received: Vec<Vec<u8>> = got.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let expected: Vec<Vec<u8>> = sent.iter().map(|m| m.as_bytes().to_vec()).collect();
        assert_eq!(received, expected, "{backend}: order, bytes, once");
        let m = message(&http, &base, fw1).await;
        assert_eq!(m["forward"][0]["state"], "sent", "{backend}: {m}");
        assert!(
            m["forward"][0]["ack"]
                .as_str()
                .is_some_and(|a| a.contains("MSA|AA|FW1")),
            "{backend}: {m}"
        );
        let m = message(&http, &base, refused).await;
        assert_eq!(
            m["forward"][0]["last_error"], "the receiver answered AE: patient unknown here",
            "{backend}: {m}"
        );

        // 3. Reprocessing the refused message queues it again; this time it is taken.
        let r = http
            .post(format!("{base}/messages/{refused}/reprocess"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.status().is_success(), "{backend}: {}", r.status());
        wait_for("the reprocessed message to be sent", || {
            let (http, base) = (http.clone(), base.clone());
            async move { message(&http, &base, refused).await["forward"][0]["state"] == "sent" }
        })
        .await;
        assert_eq!(
            count(),
            5,
            "{backend}: only the reprocessed message went again"
        );

        // 4. Refused messages found by their forwarding state and sent again as they are.
        let mut mllp = gateway::mllp_of(&running).await;
        let acks = mllp.send(adt("REFUSE2", "P-R2", "").as_bytes(), 1).await;
        assert_eq!(gateway::msa(&acks[0]).0, "AA", "{backend}: {acks:?}");
        let dead_list = || {
            let (http, base) = (http.clone(), base.clone());
            async move { get_json(&http, &format!("{base}/messages?forward=dead")).await }
        };
        wait_for("the second refusal", || async {
            dead_list().await["total"] == 1
        })
        .await;
        assert_eq!(
            dead_list().await["items"][0]["control_id"],
            "REFUSE2",
            "{backend}"
        );
        let r = post_json(
            &http,
            &format!("{base}/admin/forward/retry?destination=default"),
        )
        .await;
        assert_eq!(r["requeued"], 1, "{backend}: {r}");
        wait_for("the retried message to be sent", || async {
            get_json(&http, &format!("{base}/messages?forward=sent")).await["total"] == 5
        })
        .await;
        assert_eq!(dead_list().await["total"], 0, "{backend}");
        assert_eq!(count(), 7, "{backend}: REFUSE2 twice");
        let bad = http
            .get(format!("{base}/messages?forward=lost"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bad.status().as_u16(), 400, "{backend}");
        let health = get_json(&http, &format!("{base}/health")).await;
        assert_eq!(
            health["forward"]["default"]["pending"], 0,
            "{backend}: {health}"
        );
        assert_eq!(
            health["forward"]["default"]["dead"], 0,
            "{backend}: {health}"
        );
        // Sent, they can go, with their forwarding rows.
        assert_eq!(prune(&http, &base).await, 5, "{backend}");
        assert_eq!(messages(&http, &base).await.len(), 0, "{backend}");
        running.shutdown().await;
        ehr.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_over_tls_checks_the_receiver_and_presents_the_client_certificate() {
    for (backend, url) in gateway::store_urls("forward-tls").await {
        let dir = gateway::scratch(&format!("forward-tls-pki-{backend}"));
        let pki = gateway::Pki::new(&dir, "gateway");
        let acceptor = v2fhir::sources::tls_acceptor(&v2fhir::sources::TlsFiles {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            client_ca: Some(dir.join("ca.pem")),
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let (port, got, ehr) = listening_receiver(Some(acceptor)).await;

        let mut cfg = gateway::config(&url);
        cfg.forward.mllp = format!("127.0.0.1:{port}");
        cfg.forward.tls_ca = Some(pki.dir.join("ca.pem"));
        cfg.forward.tls_server_name = "localhost".into();
        cfg.forward.timeout_secs = 2;
        cfg.forward.retry_max_secs = 1;
        // Without the client certificate the receiver refuses the handshake: nothing arrives.
        let running = gateway::start(&cfg).await;
        let mut mllp = gateway::mllp_of(&running).await;
        let first = adt("TLS1", "P-TLS1", "");
        let acks = mllp.send(first.as_bytes(), 1).await;
        assert_eq!(gateway::msa(&acks[0]).0, "AA", "{backend}: {acks:?}");
        let base = format!("http://{}", gateway::http_of(&running));
        let http = gateway::http_client();
        let id = id_of(&messages(&http, &base).await, "TLS1");
        wait_for("a failed handshake", || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                message(&http, &base, id).await["forward"][0]["attempts"]
                    .as_i64()
                    .unwrap_or(0)
                    >= 1
            }
        })
        .await;
        assert!(got.lock().unwrap_or_else(|e| e.into_inner()).is_empty());
        running.shutdown().await;

        // With it, the queued message and a new one go through, in order.
        cfg.forward.tls_cert = Some(pki.dir.join("client.pem"));
        cfg.forward.tls_key = Some(pki.dir.join("client.key"));
        let running = gateway::start(&cfg).await;
        let mut mllp = gateway::mllp_of(&running).await;
        // No type filter here: a FHIR write (a device's reading) is still not HL7 v2, and is not
        // forwarded (its JSON would reach the receiver, or hold the queue, before TLS2).
        let base = format!("http://{}", gateway::http_of(&running));
        assert_eq!(
            fhir_post(&http, &base, "/fhir/Observation", READING).await,
            201,
            "{backend}"
        );
        let second = adt("TLS2", "P-TLS2", "");
        let acks = mllp.send(second.as_bytes(), 1).await;
        assert_eq!(gateway::msa(&acks[0]).0, "AA", "{backend}: {acks:?}");
        wait_for("both messages over TLS", || {
            let n = got.lock().unwrap_or_else(|e| e.into_inner()).len();
            async move { n >= 2 }
        })
        .await;
        let received = got.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(
            received,
            vec![first.into_bytes(), second.into_bytes()],
            "{backend}"
        );
        running.shutdown().await;

        // A receiver whose certificate does not carry the expected name is not sent anything.
        cfg.forward.tls_server_name = "not-the-receiver".into();
        let running = gateway::start(&cfg).await;
        let mut mllp = gateway::mllp_of(&running).await;
        let acks = mllp.send(adt("TLS3", "P-TLS3", "").as_bytes(), 1).await;
        assert_eq!(gateway::msa(&acks[0]).0, "AA", "{backend}: {acks:?}");
        let base = format!("http://{}", gateway::http_of(&running));
        let id = id_of(&messages(&http, &base).await, "TLS3");
        wait_for("a refused certificate", || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                message(&http, &base, id).await["forward"][0]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("TLS handshake") && e.contains("certificate"))
            }
        })
        .await;
        assert_eq!(
            got.lock().unwrap_or_else(|e| e.into_inner()).len(),
            2,
            "{backend}"
        );
        running.shutdown().await;
        ehr.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_receiver_gets_every_message_once_though_it_closes_after_each_ack() {
    use tokio::io::AsyncBufReadExt;
    for (backend, url) in gateway::store_urls("forward-hl7apy").await {
        let port = free_port().await;
        let out = gateway::scratch(&format!("forward-hl7apy-{backend}")).join("received.txt");
        let mut ehr = tokio::process::Command::new("python3")
            .arg(gateway::root().join("tests/clients/hl7apy_receiver.py"))
            .arg(port.to_string())
            .arg(&out)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("python3: {e}"));
        let stdout = ehr.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let first = tokio::io::BufReader::new(stdout).lines().next_line().await;
        assert_eq!(
            first.ok().flatten().as_deref(),
            Some("listening"),
            "the hl7apy receiver did not start (pip install hl7apy)"
        );

        let mut cfg = gateway::config(&url);
        cfg.forward.mllp = format!("127.0.0.1:{port}");
        cfg.forward.timeout_secs = 5;
        cfg.forward.fhir_observations = true;
        cfg.forward.fhir_immunizations = true;
        let running = gateway::start(&cfg).await;
        let base = format!("http://{}", gateway::http_of(&running));
        let http = gateway::http_client();
        let mut mllp = gateway::mllp_of(&running).await;
        let sent: Vec<String> = (1..=5)
            .map(|i| adt(&format!("PY{i}"), &format!("P-PY{i}"), ""))
            .collect();
        for m in &sent {
            let acks = mllp.send(m.as_bytes(), 1).await;
            assert_eq!(gateway::msa(&acks[0]).0, "AA", "{backend}: {acks:?}");
        }
        // A device's reading about the first patient: an ORU^R01 the receiver parses into its
        // groups and validates (strictly, HL7 v2.5.1) before it answers AA.
        assert_eq!(
            fhir_post(&http, &base, "/fhir/Observation", READING.replace(
                r#""status":"final","#,
                r#""status":"final","subject":{"reference":"Patient?identifier=P-PY1"},"effectiveDateTime":"2026-11-30T08:15:00Z","#,
            )).await,
            201,
            "{backend}"
        );
        let list = messages(&http, &base).await;
        let reading = list
            .iter()
            .find(|m| m["source"] == "fhir")
            .and_then(|m| m["id"].as_i64())
            .unwrap_or_else(|| panic!("{backend}: no FHIR row"));
        wait_for("the receiver's answer to the reading", || {
            let (http, base) = (http.clone(), base.clone());
            async move { message(&http, &base, reading).await["forward"][0]["state"] != "pending" }
        })
        .await;
        let m = message(&http, &base, reading).await;
        assert_eq!(m["forward"][0]["state"], "sent", "{backend}: {m}");
        // A vaccination recorded by a pharmacy app for the second patient: a VXU^V04, validated
        // the same way.
        let flu = r#"{"resourceType":"Immunization","status":"completed",
            "identifier":[{"system":"urn:pharmacy","value":"RX-991"}],
            "vaccineCode":{"coding":[{"system":"http://hl7.org/fhir/sid/cvx","code":"158","display":"influenza, injectable, quadrivalent"}]},
            "patient":{"reference":"Patient?identifier=P-PY2"},
            "occurrenceDateTime":"2026-11-29T10:30:00+01:00","primarySource":true,"lotNumber":"LOT-42",
            "route":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0162","code":"IM"}]},
            "doseQuantity":{"value":0.5,"unit":"mL","system":"http://unitsofmeasure.org","code":"mL"}}"#;
        assert_eq!(
            fhir_post(&http, &base, "/fhir/Immunization", flu.to_string()).await,
            201,
            "{backend}"
        );
        let list = messages(&http, &base).await;
        let vaccination = list
            .iter()
            .filter(|m| m["source"] == "fhir")
            .filter_map(|m| m["id"].as_i64())
            .max()
            .unwrap_or_else(|| panic!("{backend}: no FHIR row"));
        wait_for("the receiver's answer to the vaccination", || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                message(&http, &base, vaccination).await["forward"][0]["state"] != "pending"
            }
        })
        .await;
        let v = message(&http, &base, vaccination).await;
        assert_eq!(v["forward"][0]["state"], "sent", "{backend}: {v}");
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let received: Vec<&str> = text.split("\n---\n").filter(|m| !m.is_empty()).collect();
        assert_eq!(received.len(), 7, "{backend}: {received:?}");
        assert_eq!(v["forward"][0]["payload"], received[6], "{backend}");
        let vxu = received[6];
        assert!(vxu.contains("|VXU^V04^VXU_V04|"), "{backend}: {vxu}");
        assert!(vxu.contains("\rPID|1||P-PY2^"), "{backend}: {vxu}");
        assert!(
            vxu.contains("\rRXA|0|1|20261129103000+0100|20261129103000+0100|158^influenza, injectable, quadrivalent^CVX|0.5|mL^mL^UCUM|"),
            "{backend}: {vxu}"
        );
        assert!(vxu.contains("\rRXR|IM^^HL70162"), "{backend}: {vxu}");
        assert_eq!(
            received[..5],
            sent[..],
            "{backend}: in order, once, as received"
        );
        assert_eq!(
            m["forward"][0]["payload"], received[5],
            "{backend}: the ORU^R01 sent is the one kept"
        );
        for c in ["PY1", "PY2", "PY3", "PY4", "PY5"] {
            let m = message(&http, &base, id_of(&list, c)).await;
            assert_eq!(m["forward"][0]["state"], "sent", "{backend}: {m}");
            // A closed connection is replaced at once: no attempt failed.
            assert_eq!(m["forward"][0]["attempts"], 0, "{backend}: {m}");
            assert!(
                m["forward"][0]["ack"]
                    .as_str()
                    .is_some_and(|a| a.contains(&format!("MSA|AA|{c}"))),
                "{backend}: {m}"
            );
        }
        running.shutdown().await;
        let _ = ehr.kill().await;
    }
}

/// `forward.fhir_observations`: a device backend's readings, written as FHIR against the patient
/// the ADT feed created (a conditional reference by MRN), reach the receiver as an ORU^R01 after
/// that ADT; a reading about a patient the gateway does not hold is parked with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_readings_written_as_fhir_reach_the_receiver_as_oru() {
    let http = gateway::http_client();
    for (backend, url) in gateway::store_urls("forward-oru").await {
        let (port, got, ehr) = listening_receiver(None).await;
        let mut cfg = gateway::config(&url);
        cfg.forward.mllp = format!("127.0.0.1:{port}");
        cfg.forward.fhir_observations = true;
        cfg.forward.oru_receiving_application = "EHR".into();
        cfg.forward.timeout_secs = 2;
        let running = gateway::start(&cfg).await;
        let base = format!("http://{}", gateway::http_of(&running));
        let mut mllp = gateway::mllp_of(&running).await;
        let admit = adt("DEV1", "MRN-DEV", "");
        let acks = mllp.send(admit.as_bytes(), 1).await;
        assert_eq!(gateway::msa(&acks[0]).0, "AA", "{backend}: {acks:?}");

        let readings = r#"{"resourceType": "Bundle", "type": "transaction", "entry": [
          {"request": {"method": "POST", "url": "Observation"}, "resource": {
            "resourceType": "Observation", "status": "final",
            "identifier": [{"system": "urn:device:watch-1", "value": "hr-0001"}],
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "subject": {"reference": "Patient?identifier=MRN-DEV"},
            "effectiveDateTime": "2026-11-30T08:15:00+01:00",
            "valueQuantity": {"value": 72, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"}}},
          {"request": {"method": "POST", "url": "Observation"}, "resource": {
            "resourceType": "Observation", "status": "final",
            "identifier": [{"system": "urn:device:cuff-1", "value": "bp-0001"}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": {"reference": "Patient?identifier=MRN-DEV"},
            "effectiveDateTime": "2026-11-30T08:16:00+01:00",
            "component": [
              {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
               "valueQuantity": {"value": 128, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
              {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
               "valueQuantity": {"value": 82, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]}}]}"#;
        assert_eq!(
            fhir_post(&http, &base, "/fhir", readings).await,
            200,
            "{backend}"
        );
        // A reading about a patient the gateway does not hold.
        let stray = READING.replace(
            r#""status":"final","#,
            r#""status":"final","subject":{"reference":"Patient/not-here"},"#,
        );
        assert_eq!(
            fhir_post(&http, &base, "/fhir/Observation", stray).await,
            201,
            "{backend}"
        );

        let list = messages(&http, &base).await;
        let fhir_rows: Vec<i64> = list
            .iter()
            .filter(|m| m["source"] == "fhir")
            .filter_map(|m| m["id"].as_i64())
            .collect();
        assert_eq!(fhir_rows.len(), 2, "{backend}: {list:?}");
        let (stray_id, readings_id) = (fhir_rows[0], fhir_rows[1]); // newest first
        wait_for("the stray reading to be parked", || {
            let (http, base) = (http.clone(), base.clone());
            async move { message(&http, &base, stray_id).await["forward"][0]["state"] == "dead" }
        })
        .await;
        let m = message(&http, &base, stray_id).await;
        assert!(
            m["forward"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("Patient/not-here")),
            "{backend}: {m}"
        );
        wait_for("the readings to be sent", || {
            let (http, base) = (http.clone(), base.clone());
            async move { message(&http, &base, readings_id).await["forward"][0]["state"] == "sent" }
        })
        .await;
        let received = got.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(received.len(), 2, "{backend}: the ADT, then one ORU^R01");
        assert_eq!(received[0], admit.as_bytes(), "{backend}");
        let oru = String::from_utf8_lossy(&received[1]).into_owned();
        let m = message(&http, &base, readings_id).await;
        assert_eq!(
            m["forward"][0]["payload"], oru,
            "{backend}: what was sent is kept"
        );
        // Read it back with the gateway's own parser: the patient of the ADT, both readings.
        let parsed = v2fhir::v2::parse(oru.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let msg = &parsed.messages[0];
        let h = msg.header();
        assert_eq!(h.message_type(), "ORU^R01", "{backend}: {oru}");
        assert_eq!(
            h.control_id.as_deref(),
            Some(format!("V2F{readings_id}").as_str())
        );
        // `occurrence` counts from 1, as HL7 does.
        let field = |seg: &str, occurrence: usize, n: usize| {
            msg.find(seg, occurrence)
                .map(|s| s.field(n).raw_text().into_owned())
                .unwrap_or_default()
        };
        assert_eq!(field("MSH", 1, 5), "EHR", "{backend}: {oru}");
        assert!(
            field("PID", 1, 3).starts_with("MRN-DEV^^^HOSP"),
            "{backend}: {oru}"
        );
        assert_eq!(field("PID", 1, 5), "DOE^JANE^Q", "{backend}: {oru}");
        assert_eq!(field("PID", 1, 7), "19800101", "{backend}: {oru}");
        assert_eq!(field("PID", 1, 8), "F", "{backend}: {oru}");
        let obx: Vec<(String, String, String, String)> = (0..3)
            .map(|i| {
                (
                    field("OBX", i + 1, 3),
                    field("OBX", i + 1, 5),
                    field("OBX", i + 1, 6),
                    field("OBX", i + 1, 11),
                )
            })
            .collect();
        assert_eq!(
            obx,
            vec![
                (
                    "8867-4^Heart rate^LN".into(),
                    "72".into(),
                    "/min^beats/minute^UCUM".into(),
                    "F".into()
                ),
                (
                    "8480-6^^LN".into(),
                    "128".into(),
                    "mm[Hg]^mmHg^UCUM".into(),
                    "F".into()
                ),
                (
                    "8462-4^^LN".into(),
                    "82".into(),
                    "mm[Hg]^mmHg^UCUM".into(),
                    "F".into()
                ),
            ],
            "{backend}: {oru}"
        );
        assert_eq!(
            field("OBX", 1, 14),
            "20261130081500+0100",
            "{backend}: {oru}"
        );
        assert_eq!(field("OBX", 4, 3), "", "{backend}: three OBX: {oru}");
        running.shutdown().await;
        ehr.abort();
    }
}

/// Two replicas on one PostgreSQL share the queue: every message reaches the receiver once, in
/// the order of the log, though both take messages and both forwarders compete for the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_forward_each_message_once_in_log_order() {
    let Some(admin) = gateway::pg_admin_url() else {
        return; // PostgreSQL only (CI always has it: pg_admin_url panics there without it)
    };
    let url = gateway::fresh_pg(&admin, "forward-replicas").await;
    let (port, got, ehr) = listening_receiver(None).await;
    let mut cfg = gateway::config(&url);
    cfg.forward.mllp = format!("127.0.0.1:{port}");
    let a = gateway::start(&cfg).await;
    let b = gateway::start(&cfg).await;
    let (mut ca, mut cb) = (gateway::mllp_of(&a).await, gateway::mllp_of(&b).await);
    const N: usize = 200;
    for i in 0..N {
        let m = adt(&format!("REP{i}"), &format!("P-REP{}", i % 20), "");
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        let acks = c.send(m.as_bytes(), 1).await;
        assert_eq!(gateway::msa(&acks[0]).0, "AA", "{acks:?}");
    }
    wait_for("every message at the receiver", || {
        let n = got.lock().unwrap_or_else(|e| e.into_inner()).len();
        async move { n >= N }
    })
    .await;
    // A moment for a duplicate to show up, if one were coming.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received: Vec<String> = got
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|f| gateway::control_id(f))
        .collect();
    // The log's order: by id, as the store numbered them.
    let http = gateway::http_client();
    let base = format!("http://{}", gateway::http_of(&a));
    let mut logged: Vec<(i64, String)> = get_json(&http, &format!("{base}/messages?limit=1000"))
        .await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| {
            (
                m["id"].as_i64().unwrap_or(0),
                m["control_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    logged.sort();
    let in_log_order: Vec<String> = logged.into_iter().map(|(_, c)| c).collect();
    assert_eq!(received.len(), N, "each once");
    assert_eq!(received, in_log_order, "in the order of the log");
    a.shutdown().await;
    b.shutdown().await;
    ehr.abort();
}

/// Routes: `[forward]` takes the ADTs and `[forward.routes.lab]` the results, each with its own
/// queue and order; a route whose receiver is down holds back only its own messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_send_each_type_to_its_receiver_and_queue_apart() {
    let http = gateway::http_client();
    let oru = std::fs::read_to_string(gateway::root().join("tests/golden/oru_r01_lab.hl7"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    for (backend, url) in gateway::store_urls("forward-routes").await {
        let (ehr_port, ehr_got, ehr) = listening_receiver(None).await;
        // The lab's receiver is down at first.
        let lab_port = free_port().await;
        let mut cfg = gateway::config(&url);
        cfg.forward.mllp = format!("127.0.0.1:{ehr_port}");
        cfg.forward.types = "ADT^*".into();
        let lab = v2fhir::serve::ForwardSection {
            mllp: format!("127.0.0.1:{lab_port}"),
            types: "ORU^*".into(),
            retry_max_secs: 1,
            connect_timeout_secs: 1,
            ..Default::default()
        };
        cfg.forward.routes.insert("lab".into(), lab);
        assert!(cfg.check().is_ok());
        let running = gateway::start(&cfg).await;
        let base = format!("http://{}", gateway::http_of(&running));
        let mut mllp = gateway::mllp_of(&running).await;
        let first = adt("RT1", "P-RT1", "");
        let second = adt("RT2", "P-RT2", "");
        for m in [first.as_str(), oru.as_str(), second.as_str()] {
            let acks = mllp.send(m.as_bytes(), 1).await;
            assert_eq!(gateway::msa(&acks[0]).0, "AA", "{backend}: {acks:?}");
        }
        // The EHR gets both ADTs though the lab is down.
        wait_for("the ADTs at the EHR", || {
            let n = ehr_got.lock().unwrap_or_else(|e| e.into_inner()).len();
            async move { n >= 2 }
        })
        .await;
        let list = messages(&http, &base).await;
        let oru_id = id_of(&list, &gateway::control_id(oru.as_bytes()));
        let m = message(&http, &base, oru_id).await;
        assert_eq!(
            m["forward"].as_array().map(Vec::len),
            Some(1),
            "{backend}: {m}"
        );
        assert_eq!(m["forward"][0]["destination"], "lab", "{backend}: {m}");
        assert_eq!(m["forward"][0]["state"], "pending", "{backend}: {m}");
        let health = get_json(&http, &format!("{base}/health")).await;
        assert_eq!(
            health["forward"]["default"]["pending"], 0,
            "{backend}: {health}"
        );
        assert_eq!(
            health["forward"]["lab"]["pending"], 1,
            "{backend}: {health}"
        );
        // The lab comes up: it gets the result, and nothing else.
        let lab_listener = TcpListener::bind(("127.0.0.1", lab_port))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (lab_got, lab_task) = receiver(lab_listener, None);
        wait_for("the result at the lab", || {
            let (http, base) = (http.clone(), base.clone());
            async move { message(&http, &base, oru_id).await["forward"][0]["state"] == "sent" }
        })
        .await;
        assert_eq!(
            *lab_got.lock().unwrap_or_else(|e| e.into_inner()),
            vec![oru.clone().into_bytes()],
            "{backend}"
        );
        assert_eq!(
            *ehr_got.lock().unwrap_or_else(|e| e.into_inner()),
            vec![first.into_bytes(), second.into_bytes()],
            "{backend}"
        );
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("{e}"));
        let metrics = metrics.text().await.unwrap_or_default();
        assert!(
            metrics.contains("v2fhir_forward_pending{destination=\"lab\"} 0"),
            "{backend}: {metrics}"
        );
        assert!(
            metrics.contains("v2fhir_forward_latency_seconds_count{destination=\"lab\"}"),
            "{backend}: commit-to-acceptance latency per destination: {metrics}"
        );
        running.shutdown().await;
        ehr.abort();
        lab_task.abort();
    }
}

/// `forward.ack = after-receiver`: the sender's ACK waits for the receiver's answer — AA once the
/// receiver took the message, AE with its reason when it refused it, AE when it has not answered
/// in time (the message stays stored and queued, and is delivered once the receiver is up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_senders_ack_can_wait_for_the_receivers_answer() {
    let http = gateway::http_client();
    for (backend, url) in gateway::store_urls("forward-ack").await {
        let (port, got, ehr) = listening_receiver(None).await;
        let mut cfg = gateway::config(&url);
        cfg.forward.mllp = format!("127.0.0.1:{port}");
        cfg.forward.ack = "after-receiver".into();
        cfg.forward.ack_timeout_secs = 2;
        cfg.forward.retry_max_secs = 1;
        cfg.forward.connect_timeout_secs = 1;
        let running = gateway::start(&cfg).await;
        let base = format!("http://{}", gateway::http_of(&running));
        let mut mllp = gateway::mllp_of(&running).await;
        let taken = adt("ACK1", "P-ACK1", "");
        let acks = mllp.send(taken.as_bytes(), 1).await;
        assert_eq!(
            gateway::msa(&acks[0]),
            ("AA".into(), "ACK1".into()),
            "{backend}"
        );
        assert_eq!(
            got.lock().unwrap_or_else(|e| e.into_inner()).last(),
            Some(&taken.clone().into_bytes()),
            "{backend}: the receiver had it before the sender's ACK"
        );
        let acks = mllp
            .send(adt("REFUSE-ACK", "P-ACK2", "").as_bytes(), 1)
            .await;
        assert_eq!(gateway::msa(&acks[0]).0, "AE", "{backend}: {acks:?}");
        assert!(
            acks[0].contains("patient unknown here"),
            "{backend}: the receiver's reason: {acks:?}"
        );
        // The receiver goes away (its connections too): AE after the timeout, the message kept
        // and queued.
        ehr.abort();
        let _ = ehr.await;
        let late = adt("ACK3", "P-ACK3", "");
        let acks = mllp.send(late.as_bytes(), 1).await;
        assert_eq!(gateway::msa(&acks[0]).0, "AE", "{backend}: {acks:?}");
        assert!(
            acks[0].contains("has not acknowledged the message within 2 s"),
            "{backend}: {acks:?}"
        );
        let list = messages(&http, &base).await;
        let id = id_of(&list, "ACK3");
        let m = message(&http, &base, id).await;
        assert_eq!(m["forward"][0]["state"], "pending", "{backend}: {m}");
        assert_eq!(
            m["ack_code"], "AE",
            "{backend}: the ACK sent is the one stored"
        );
        // The receiver is back: the message is delivered.
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (back, ehr) = receiver(listener, None);
        wait_for("the late message at the receiver", || {
            let n = back.lock().unwrap_or_else(|e| e.into_inner()).len();
            async move { n >= 1 }
        })
        .await;
        assert_eq!(
            back.lock().unwrap_or_else(|e| e.into_inner())[0],
            late.into_bytes(),
            "{backend}"
        );
        running.shutdown().await;
        ehr.abort();
    }
}
