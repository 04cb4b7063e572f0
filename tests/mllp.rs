//! The MLLP source end to end: real sockets on 127.0.0.1, the in-process gateway, SQLite and
//! PostgreSQL stores, our client and python-hl7's `mllp_send`.

mod gateway;

use gateway::{Mllp, adt, control_id, msa};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use v2fhir::store::{MessageFilter, Status};

/// Single-message corpus files in original acknowledgment mode (MSH-15/16 empty), stripped of
/// trailing line ends — what a sender puts in a frame.
fn corpus_messages() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(gateway::root().join("tests/corpus"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    for dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            if f.extension().is_none_or(|e| e != "hl7") {
                continue;
            }
            let Ok(bytes) = std::fs::read(&f) else {
                continue;
            };
            let mut end = bytes.len();
            while end > 0 && matches!(bytes[end - 1], b'\r' | b'\n' | b' ') {
                end -= 1;
            }
            let msg = bytes[..end].to_vec();
            if msg.contains(&0x0b) || msg.contains(&0x1c) || msg.contains(&0x0c) {
                continue;
            }
            let Ok(parsed) = v2fhir::v2::parse(&msg) else {
                continue;
            };
            if parsed.messages.len() != 1 || parsed.messages[0].header().enhanced_mode() {
                continue;
            }
            out.push((f, msg));
        }
    }
    assert!(out.len() > 150, "corpus too small: {}", out.len());
    out
}

/// The acknowledgment code the pipeline decides for `msg` (offline, nothing stored).
fn expected_code(msg: &[u8]) -> String {
    let plan = gateway_plan();
    let p = v2fhir::ingest::prepare(
        msg,
        v2fhir::ingest::Source::Mllp,
        plan,
        &v2fhir::ingest::IngestConfig::default(),
        0,
    );
    msa(&p[0].acks[0]).0
}

fn gateway_plan() -> &'static v2fhir::mapping::plan::Plan {
    static PLAN: std::sync::OnceLock<v2fhir::mapping::plan::Plan> = std::sync::OnceLock::new();
    PLAN.get_or_init(|| {
        v2fhir::mapping::load::load_dir(&gateway::root().join("mappings"))
            .unwrap_or_else(|e| panic!("mappings: {} errors", e.len()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_hl7_mllp_send_replays_the_corpus() {
    let messages = corpus_messages();
    for (backend, url) in gateway::store_urls("pyhl7").await {
        let running = gateway::start(&gateway::config(&url)).await;
        let addr = running.mllp_addr.unwrap_or_else(|| panic!("no MLLP"));
        let dir = gateway::scratch("pyhl7-input");
        let file = dir.join("corpus.mllp");
        let mut data = Vec::new();
        for (_, m) in &messages {
            data.extend_from_slice(&gateway::frame(m));
        }
        std::fs::write(&file, &data).unwrap_or_else(|e| panic!("{e}"));
        let out = tokio::process::Command::new("mllp_send")
            .arg("-p")
            .arg(addr.port().to_string())
            .arg("-f")
            .arg(&file)
            .arg("127.0.0.1")
            .output()
            .await
            .unwrap_or_else(|e| {
                panic!("mllp_send (python-hl7, `pip install hl7`) could not run: {e}")
            });
        assert!(
            out.status.success(),
            "{backend}: mllp_send failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // mllp_send prints each answer frame (VT … FS CR) followed by a newline.
        let acks: Vec<String> = out
            .stdout
            .split(|&b| b == 0x0b)
            .skip(1)
            .map(|f| {
                let end = f.iter().position(|&b| b == 0x1c).unwrap_or(f.len());
                String::from_utf8_lossy(&f[..end]).into_owned()
            })
            .collect();
        assert_eq!(acks.len(), messages.len(), "{backend}: one ACK per message");
        for ((path, m), ack) in messages.iter().zip(&acks) {
            let (code, ctl) = msa(ack);
            assert_eq!(ctl, control_id(m), "{backend}: {}: MSA-2", path.display());
            assert_eq!(code, expected_code(m), "{backend}: {}", path.display());
        }
        // The store holds exactly what was sent, in order.
        let page = running
            .pipeline
            .store()
            .list(&MessageFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(page.total as usize, messages.len(), "{backend}");
        let mut stored = page.items;
        stored.reverse();
        for ((path, m), row) in messages.iter().zip(&stored) {
            let full = running.pipeline.store().get(row.id).await.ok().flatten();
            let full = full.unwrap_or_else(|| panic!("row {} missing", row.id));
            assert_eq!(
                &full.raw,
                m,
                "{backend}: {} stored byte-identical",
                path.display()
            );
            let want = match expected_code(m).as_str() {
                "AA" => [Status::Converted, Status::Duplicate],
                "AE" => [Status::Error, Status::Duplicate],
                _ => [Status::Rejected, Status::Duplicate],
            };
            assert!(
                want.contains(&full.status),
                "{backend}: {}: {:?}",
                path.display(),
                full.status
            );
        }
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_types_original_and_enhanced_mode() {
    for (backend, url) in gateway::store_urls("modes").await {
        let running = gateway::start(&gateway::config(&url)).await;
        let addr = running.mllp_addr.unwrap_or_else(|| panic!("no MLLP"));
        let mut c = Mllp::connect(addr).await;
        // Original mode: AA.
        let a = c.send(adt("M1", "P1", "").as_bytes(), 1).await;
        assert_eq!(msa(&a[0]), ("AA".into(), "M1".into()), "{backend}");
        // Unsupported processing id: AR with code 202.
        let bad = adt("M2", "P1", "").replace("|M2|P|", "|M2|X|");
        let a = c.send(bad.as_bytes(), 1).await;
        assert_eq!(msa(&a[0]).0, "AR", "{backend}");
        assert!(a[0].contains("202"), "{backend}: {}", a[0]);
        // Unsupported message type: AE with code 200; kept as `error`.
        let unsupported = adt("M3", "P1", "").replace("ADT^A08^ADT_A01", "ZZZ^Z01");
        let a = c.send(unsupported.as_bytes(), 1).await;
        assert_eq!(msa(&a[0]).0, "AE", "{backend}");
        assert!(a[0].contains("200"), "{backend}: {}", a[0]);
        // Not HL7 at all: AR.
        let a = c.send(b"hello, this is not HL7", 1).await;
        assert_eq!(msa(&a[0]).0, "AR", "{backend}");
        // Enhanced mode: MSH-15 AL, MSH-16 NE → only the commit ACK (CA).
        let a = c.send(adt("E1", "P2", "|||AL|NE").as_bytes(), 1).await;
        assert_eq!(msa(&a[0]), ("CA".into(), "E1".into()), "{backend}");
        // MSH-15 NE, MSH-16 AL → only the application ACK (AA).
        let a = c.send(adt("E2", "P2", "|||NE|AL").as_bytes(), 1).await;
        assert_eq!(msa(&a[0]), ("AA".into(), "E2".into()), "{backend}");
        // AL/AL → CA then AA, in that order, on the same connection.
        let a = c.send(adt("E3", "P2", "|||AL|AL").as_bytes(), 2).await;
        assert_eq!((msa(&a[0]).0, msa(&a[1]).0), ("CA".into(), "AA".into()));
        // AL/ER with a mapping error → CA then AE.
        let e = adt("E4", "P2", "|||AL|ER").replace("ADT^A08^ADT_A01", "ZZZ^Z01");
        let a = c.send(e.as_bytes(), 2).await;
        assert_eq!((msa(&a[0]).0, msa(&a[1]).0), ("CA".into(), "AE".into()));
        // ER/ER on success → nothing at all; the next message still gets its answer.
        c.write_raw(&gateway::frame(adt("E5", "P2", "|||ER|ER").as_bytes()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let a = c.send(adt("E6", "P2", "").as_bytes(), 1).await;
        assert_eq!(
            msa(&a[0]),
            ("AA".into(), "E6".into()),
            "{backend}: E5 must be silent"
        );
        // Everything was logged with its status.
        let store = running.pipeline.store();
        let all = store
            .list(&MessageFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = |ctl: &str| {
            all.items
                .iter()
                .find(|m| m.control_id == ctl)
                .map(|m| m.status)
                .unwrap_or_else(|| panic!("{backend}: {ctl} not stored"))
        };
        assert_eq!(status("M1"), Status::Converted);
        assert_eq!(status("M2"), Status::Rejected);
        assert_eq!(status("M3"), Status::Error);
        assert_eq!(status("E4"), Status::Error);
        assert_eq!(status("E5"), Status::Converted);
        assert_eq!(all.total, 10, "{backend}");
        // ER/SU on success → only the application ACK.
        let a = c.send(adt("E7", "P2", "|||ER|SU").as_bytes(), 1).await;
        assert_eq!(msa(&a[0]), ("AA".into(), "E7".into()), "{backend}");
        // The resend of a message gets the ACK already sent, and nothing is processed again.
        let again = c.send(adt("M1", "P1", "").as_bytes(), 1).await;
        let first = store
            .get(
                all.items
                    .iter()
                    .rev()
                    .find(|m| m.control_id == "M1")
                    .map(|m| m.id)
                    .unwrap_or(0),
            )
            .await;
        let first = first.ok().flatten().and_then(|m| m.ack).unwrap_or_default();
        assert_eq!(
            again[0], first,
            "{backend}: duplicate answered with the stored ACK"
        );
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_input_never_hurts_other_connections() {
    let url = format!(
        "sqlite://{}/v2fhir.db",
        gateway::scratch("broken").display()
    );
    let mut cfg = gateway::config(&url);
    cfg.mllp.max_frame = 1024 * 1024;
    cfg.mllp.idle_timeout_secs = 2;
    let running = gateway::start(&cfg).await;
    let addr = running.mllp_addr.unwrap_or_else(|| panic!("no MLLP"));
    // A healthy connection that keeps working throughout: one message every 300 ms.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let healthy = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut c = Mllp::connect(addr).await;
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ctl = format!("H{n}");
                let a = c.send(adt(&ctl, "PH", "").as_bytes(), 1).await;
                assert_eq!(a.len(), 1, "healthy connection lost at {ctl}");
                assert_eq!(msa(&a[0]), ("AA".into(), ctl));
                n += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            n
        })
    };

    // Every broken corpus file (`tests/corpus/**/*.bad`): never a hang or a crash. After each one a
    // probe message on the same connection must come back AA; the fuzzed files must have been
    // answered AR/AE (CR/CE) before it. (The broken python-hl7 batches ask for no ACK, MSH-15/16
    // NE, so for them the probe alone shows the connection is alive.)
    fn bad_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir)
            .map(|d| d.flatten().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let p = e.path();
            if p.is_dir() {
                bad_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "bad") {
                out.push(p);
            }
        }
    }
    let mut bad = Vec::new();
    bad_files(&gateway::root().join("tests/corpus"), &mut bad);
    bad.sort();
    assert!(bad.len() >= 43, "{}", bad.len());
    let mut c = Mllp::connect(addr).await;
    for (n, f) in bad.iter().enumerate() {
        let bytes = std::fs::read(f).unwrap_or_default();
        // Frame delimiters inside the payload would change the framing itself; drop them.
        let clean: Vec<u8> = bytes
            .into_iter()
            .filter(|&b| b != 0x0b && b != 0x1c)
            .collect();
        c.write_raw(&gateway::frame(&clean))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let probe = format!("PROBE{n}");
        c.write_raw(&gateway::frame(adt(&probe, "PP", "").as_bytes()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut before = Vec::new();
        loop {
            let a = c.read(1).await;
            let a = a
                .first()
                .unwrap_or_else(|| panic!("{}: connection closed", f.display()));
            let (code, ctl) = msa(a);
            if ctl == probe {
                assert_eq!(code, "AA", "{}: probe", f.display());
                break;
            }
            before.push(code);
        }
        if f.to_string_lossy().contains("nhapi-fuzz") {
            assert!(!before.is_empty(), "{}: no answer", f.display());
        }
        for code in &before {
            assert!(
                ["AR", "AE", "CR", "CE"].contains(&code.as_str()),
                "{}: {code}",
                f.display()
            );
        }
    }

    // Random bytes, including frame characters, on their own connection: answered or closed.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut noise = Vec::new();
    for _ in 0..20_000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        noise.push((rng & 0xff) as u8);
    }
    let mut r = Mllp::connect(addr).await;
    let _ = r.write_raw(&noise).await;
    let _ = r.stream.shutdown().await;

    // A 100 MB frame: AR with the sender's control id, the frame discarded, connection kept.
    let mut big = Mllp::connect(addr).await;
    let head = adt("BIG1", "PB", "");
    let mut frame = vec![0x0b];
    frame.extend_from_slice(head.as_bytes());
    frame.extend_from_slice(b"OBX|1|TX|||");
    let chunk = vec![b'x'; 1024 * 1024];
    big.write_raw(&frame)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..100 {
        big.write_raw(&chunk)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    big.write_raw(&[0x1c, 0x0d])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let a = big.read(1).await;
    assert_eq!(msa(&a[0]), ("AR".into(), "BIG1".into()), "{}", a[0]);
    assert!(a[0].contains("exceeds the limit"), "{}", a[0]);
    let a = big.send(adt("BIG2", "PB", "").as_bytes(), 1).await;
    assert_eq!(
        msa(&a[0]),
        ("AA".into(), "BIG2".into()),
        "connection kept after AR"
    );

    // A frame with no FS, then silence: closed by the idle timeout, nothing answered.
    let mut nofs = Mllp::connect(addr).await;
    nofs.write_raw(b"\x0bMSH|^~\\&|X|Y|||2026||ADT^A08|NOFS|P|2.5\rPID|1||1\r")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let closed = tokio::time::timeout(Duration::from_secs(20), nofs.read(1)).await;
    assert!(
        closed.is_ok_and(|v| v.is_empty()),
        "the idle connection must be closed without an answer"
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = healthy
        .await
        .unwrap_or_else(|e| panic!("healthy connection failed: {e}"));
    assert!(
        sent >= 3,
        "healthy connection kept working ({sent} messages)"
    );
    // Nothing of the unterminated frame was stored.
    let store = running.pipeline.store();
    let nofs_rows = store
        .list(&MessageFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(nofs_rows.items.iter().all(|m| m.control_id != "NOFS"));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_patient_stays_in_arrival_order_across_connections() {
    for (backend, url) in gateway::store_urls("order").await {
        let running = gateway::start(&gateway::config(&url)).await;
        let addr = running.mllp_addr.unwrap_or_else(|| panic!("no MLLP"));
        let mut conns = Vec::new();
        for _ in 0..4 {
            conns.push(Mllp::connect(addr).await);
        }
        // Round-robin over the connections: each message is answered before the next is sent,
        // so the arrival order is known; it must be the commit order.
        let mut sent = Vec::new();
        for i in 0..40 {
            let ctl = format!("ORD{i:03}");
            let c = &mut conns[i % 4];
            let a = c.send(adt(&ctl, "SAMEPATIENT", "").as_bytes(), 1).await;
            assert_eq!(msa(&a[0]).0, "AA");
            sent.push(ctl);
        }
        // Meanwhile different patients from other tasks in parallel do not disturb it.
        let page = running
            .pipeline
            .store()
            .list(&MessageFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut got: Vec<(i64, String)> = page
            .items
            .iter()
            .map(|m| (m.id, m.control_id.clone()))
            .collect();
        got.sort();
        let got: Vec<String> = got.into_iter().map(|(_, c)| c).collect();
        assert_eq!(got, sent, "{backend}");
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_interleave_patients_but_keep_each_in_order() {
    let url = format!(
        "sqlite://{}/v2fhir.db",
        gateway::scratch("parallel").display()
    );
    let running = gateway::start(&gateway::config(&url)).await;
    let addr = running.mllp_addr.unwrap_or_else(|| panic!("no MLLP"));
    let mut tasks = Vec::new();
    for conn in 0..8 {
        tasks.push(tokio::spawn(async move {
            let mut c = Mllp::connect(addr).await;
            for i in 0..25 {
                let ctl = format!("C{conn}-{i:02}");
                let a = c
                    .send(adt(&ctl, &format!("PAT{conn}"), "").as_bytes(), 1)
                    .await;
                assert_eq!(msa(&a[0]), ("AA".into(), ctl));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let page = running
        .pipeline
        .store()
        .list(&MessageFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.total, 200);
    let mut rows: Vec<(i64, String)> = page
        .items
        .iter()
        .map(|m| (m.id, m.control_id.clone()))
        .collect();
    rows.sort();
    for conn in 0..8 {
        let mine: Vec<&String> = rows
            .iter()
            .map(|(_, c)| c)
            .filter(|c| c.starts_with(&format!("C{conn}-")))
            .collect();
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(mine, sorted, "patient {conn} committed in order");
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    use rustls_pki_types::ServerName;
    use std::sync::Arc;
    let dir = gateway::scratch("tls");
    let pki = gateway::Pki::new(&dir, "sender.example");

    let url = format!("sqlite://{}/v2fhir.db", dir.display());
    let mut cfg = gateway::config(&url);
    cfg.mllp.tls_cert = Some(dir.join("server.pem"));
    cfg.mllp.tls_key = Some(dir.join("server.key"));
    cfg.mllp.tls_client_ca = Some(dir.join("ca.pem"));
    let running = gateway::start(&cfg).await;
    let addr = running.mllp_addr.unwrap_or_else(|| panic!("no MLLP"));

    let with_cert = pki.client(true);
    let name = ServerName::try_from("localhost").unwrap_or_else(|e| panic!("{e}"));

    // With a client certificate: a normal exchange.
    let connector = tokio_rustls::TlsConnector::from(Arc::new(with_cert));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tls = connector
        .connect(name.clone(), tcp)
        .await
        .unwrap_or_else(|e| panic!("handshake: {e}"));
    tls.write_all(&gateway::frame(adt("TLS1", "PT", "").as_bytes()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.contains(&0x1c) {
        use tokio::io::AsyncReadExt;
        let n = tls.read(&mut buf).await.unwrap_or(0);
        assert!(n > 0, "TLS connection closed before the ACK");
        got.extend_from_slice(&buf[..n]);
    }
    let ack = String::from_utf8_lossy(&got).into_owned();
    assert_eq!(msa(&ack), ("AA".into(), "TLS1".into()));

    // Without one: refused.
    let no_cert = pki.client(false);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(no_cert));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let refused = match connector.connect(name, tcp).await {
        Err(_) => true,
        Ok(mut s) => {
            // TLS 1.3 reports the rejected certificate on the first read.
            use tokio::io::AsyncReadExt;
            let _ = s
                .write_all(&gateway::frame(adt("TLS2", "PT", "").as_bytes()))
                .await;
            let mut b = [0u8; 64];
            !matches!(s.read(&mut b).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "a client without a certificate must be refused");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_what_it_committed() {
    let url = format!(
        "sqlite://{}/v2fhir.db",
        gateway::scratch("shutdown").display()
    );
    let running = gateway::start(&gateway::config(&url)).await;
    let addr = running.mllp_addr.unwrap_or_else(|| panic!("no MLLP"));
    let mut c = Mllp::connect(addr).await;
    // Send a burst without waiting, then shut down while it is being processed.
    for i in 0..50 {
        c.write_raw(&gateway::frame(adt(&format!("G{i}"), "PG", "").as_bytes()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let first = c.read(1).await;
    assert_eq!(msa(&first[0]).0, "AA");
    let pipeline = running.pipeline.clone();
    running.shutdown().await;
    let mut acked = vec![msa(&first[0]).1];
    loop {
        let a = c.read(1).await;
        match a.first() {
            Some(a) => acked.push(msa(a).1),
            None => break,
        }
    }
    // Every acknowledged message is in the store (the pool is closed: reopen it).
    drop(pipeline);
    let store = v2fhir::store::Store::open(&url, v2fhir::store::Durability::PowerLoss)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let page = store
        .list(&MessageFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for ctl in &acked {
        assert!(
            page.items.iter().any(|m| &m.control_id == ctl),
            "{ctl} ACKed but not stored"
        );
    }
    assert!(!acked.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_store_each_message_once() {
    // PostgreSQL only: SQLite is one gateway's embedded file. In CI the URL is always set.
    let Some(admin) = gateway::pg_admin_url() else {
        return;
    };
    let url = gateway::fresh_pg(&admin, "replicas").await;
    let a = gateway::start(&gateway::config(&url)).await;
    let b = gateway::start(&gateway::config(&url)).await;
    let (addr_a, addr_b) = (
        a.mllp_addr.unwrap_or_else(|| panic!("no MLLP")),
        b.mllp_addr.unwrap_or_else(|| panic!("no MLLP")),
    );
    // The same 60 messages sent to both replicas at the same time (a sender failing over).
    let send_all = |addr| async move {
        let mut c = Mllp::connect(addr).await;
        let mut acks = Vec::new();
        for i in 0..60 {
            let a = c
                .send(adt(&format!("R{i:02}"), &format!("P{i}"), "").as_bytes(), 1)
                .await;
            acks.push(msa(&a[0]));
        }
        acks
    };
    let (ra, rb) = tokio::join!(
        tokio::spawn(send_all(addr_a)),
        tokio::spawn(send_all(addr_b))
    );
    let (ra, rb) = (
        ra.unwrap_or_else(|e| panic!("{e}")),
        rb.unwrap_or_else(|e| panic!("{e}")),
    );
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!(x.0, "AA", "{x:?}");
        assert_eq!(
            x, y,
            "both replicas acknowledge the same message the same way"
        );
    }
    let page = a
        .pipeline
        .store()
        .list(&MessageFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.total, 120, "every receipt is logged");
    let mut originals: Vec<&str> = page
        .items
        .iter()
        .filter(|m| m.status != Status::Duplicate)
        .map(|m| m.control_id.as_str())
        .collect();
    originals.sort();
    let before = originals.len();
    originals.dedup();
    assert_eq!(
        before, 60,
        "each message stored once (the other receipt is a duplicate)"
    );
    assert_eq!(originals.len(), 60);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections() {
    let url = format!("sqlite://{}/v2fhir.db", gateway::scratch("many").display());
    let running = gateway::start(&gateway::config(&url)).await;
    let addr = running.mllp_addr.unwrap_or_else(|| panic!("no MLLP"));
    // Open them all first, then send: every connection is live at the same time.
    let mut conns = Vec::new();
    for _ in 0..200 {
        conns.push(Mllp::connect(addr).await);
    }
    let mut tasks = Vec::new();
    for (n, mut c) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..2 {
                let ctl = format!("M{n}-{i}");
                let a = c.send(adt(&ctl, &format!("P{n}"), "").as_bytes(), 1).await;
                assert_eq!(msa(&a[0]), ("AA".into(), ctl));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let page = running
        .pipeline
        .store()
        .list(&MessageFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.total, 400);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_wait_for_a_free_slot() {
    let url = format!(
        "sqlite://{}/v2fhir.db",
        gateway::scratch("limit-conns").display()
    );
    let mut cfg = gateway::config(&url);
    cfg.mllp.max_connections = 2;
    let running = gateway::start(&cfg).await;
    let addr = running.mllp_addr.unwrap_or_else(|| panic!("no MLLP"));
    let mut a = Mllp::connect(addr).await;
    let mut b = Mllp::connect(addr).await;
    assert_eq!(
        msa(&a.send(adt("A1", "P", "").as_bytes(), 1).await[0]).0,
        "AA"
    );
    assert_eq!(
        msa(&b.send(adt("B1", "P", "").as_bytes(), 1).await[0]).0,
        "AA"
    );
    // The third connects (kernel backlog) but is not served while two are open.
    let mut c = Mllp::connect(addr).await;
    c.write_raw(&gateway::frame(adt("C1", "P", "").as_bytes()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let waited = tokio::time::timeout(Duration::from_millis(700), c.read(1)).await;
    assert!(
        waited.is_err(),
        "the third connection was served beyond the limit"
    );
    // A slot frees: the third is served, its message answered.
    drop(a);
    let got = c.read(1).await;
    assert_eq!(msa(&got[0]), ("AA".into(), "C1".into()));
    drop(b);
    running.shutdown().await;
}
