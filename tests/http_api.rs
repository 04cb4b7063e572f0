//! The HTTP source and operations endpoints over real sockets with a real HTTP client, on both
//! store backends.

mod gateway;

use gateway::{adt, msa};
use serde_json::Value;

const ER7: &str = "x-application/hl7-v2+er7";

async fn json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_convert_and_operations() {
    let http = gateway::http_client();
    for (backend, url) in gateway::store_urls("http").await {
        let running = gateway::start(&gateway::config(&url)).await;
        let base = format!(
            "http://{}",
            running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
        );
        let lab = std::fs::read(gateway::root().join("tests/golden/oru_r01_lab.hl7"))
            .unwrap_or_else(|e| panic!("{e}"));

        // 1. POST /v2/messages → the ACK, ER7.
        let r = http
            .post(format!("{base}/v2/messages"))
            .header("content-type", ER7)
            .body(lab.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 200, "{backend}");
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some(ER7)
        );
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(location.starts_with("/messages/"), "{backend}: {location}");
        let ack = r.text().await.unwrap_or_default();
        assert_eq!(msa(&ack), ("AA".into(), "LAB0001".into()), "{backend}");

        // 2. Asking for FHIR: the Bundle (text/plain accepted too).
        let a08 = adt("H1", "P100", "");
        let r = http
            .post(format!("{base}/v2/messages"))
            .header("content-type", "text/plain; charset=utf-8")
            .header("accept", "application/fhir+json")
            .body(a08.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (status, bundle) = json(r).await;
        assert_eq!(status, 200, "{backend}: {bundle}");
        assert_eq!(bundle["resourceType"], "Bundle");
        assert_eq!(bundle["type"], "transaction");
        let types: Vec<&str> = bundle["entry"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|x| x["resource"]["resourceType"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            types.contains(&"Patient") && types.contains(&"Encounter"),
            "{types:?}"
        );

        // 3. Unsupported message: AE as FHIR → 422 OperationOutcome; stored as `error`.
        let r = http
            .post(format!("{base}/v2/messages"))
            .header("content-type", ER7)
            .header("accept", "application/fhir+json")
            .body(adt("H2", "P100", "").replace("ADT^A08^ADT_A01", "ZZZ^Z01"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (status, oo) = json(r).await;
        assert_eq!(status, 422, "{backend}: {oo}");
        assert_eq!(oo["resourceType"], "OperationOutcome");
        assert!(oo.to_string().contains("ZZZ"), "{oo}");

        // 4. Wrong media type → 415; empty body → 400; unknown path → 404; all OperationOutcomes.
        for (ct, body, path, want) in [
            ("application/json", "{}", "/v2/messages", 415),
            (ER7, "", "/v2/messages", 400),
            (ER7, "MSH", "/v2/nowhere", 404),
        ] {
            let r = http
                .post(format!("{base}{path}"))
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let (status, oo) = json(r).await;
            assert_eq!(status, want, "{backend}: {path} {ct}: {oo}");
            assert_eq!(oo["resourceType"], "OperationOutcome");
        }

        // 5. $convert: the Bundle, nothing stored.
        let before = json(
            http.get(format!("{base}/messages"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .1["total"]
            .as_i64();
        let r = http
            .post(format!("{base}/v2/$convert?bundle=collection"))
            .header("content-type", ER7)
            .body(lab.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (status, b) = json(r).await;
        assert_eq!(status, 200);
        assert_eq!(b["type"], "collection");
        let r = http
            .post(format!("{base}/v2/$convert"))
            .header("content-type", ER7)
            .body("not hl7")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 400);
        let after = json(
            http.get(format!("{base}/messages"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .1["total"]
            .as_i64();
        assert_eq!(before, after, "{backend}: $convert stores nothing");
        assert_eq!(after, Some(3));

        // 6. GET /messages: filters, total, pagination via `next`.
        for i in 0..7 {
            http.post(format!("{base}/v2/messages"))
                .header("content-type", ER7)
                .body(adt(&format!("PG{i}"), "P200", ""))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let (status, page) = json(
            http.get(format!("{base}/messages?type=ADT&status=converted&limit=3"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(page["total"], 8, "{backend}: H1 + PG0..6: {page}");
        let mut seen = 0;
        let mut page = page;
        loop {
            let items = page["items"].as_array().cloned().unwrap_or_default();
            assert!(items.iter().all(|m| m["status"] == "converted"));
            seen += items.len();
            match page["next"].as_str() {
                Some(next) => {
                    assert!(next.starts_with("/messages?"), "{next}");
                    page = json(
                        http.get(format!("{base}{next}"))
                            .send()
                            .await
                            .unwrap_or_else(|e| panic!("{e}")),
                    )
                    .await
                    .1;
                    assert_eq!(page["total"], 8);
                }
                None => break,
            }
        }
        assert_eq!(seen, 8, "{backend}: pages cover every match once");
        let (status, oo) = json(
            http.get(format!("{base}/messages?status=bogus"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        assert_eq!(status, 400, "{oo}");
        let (status, _) = json(
            http.get(format!("{base}/messages?since=yesterday"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        assert_eq!(status, 400);
        let (_, none) = json(
            http.get(format!("{base}/messages?since=2999-01-01T00:00:00Z"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        assert_eq!(none["total"], 0);

        // 7. GET /messages/{id}: raw, ACK, output.
        let (status, m) = json(
            http.get(format!("{base}{location}"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(m["raw"].as_str().map(str::as_bytes), Some(&lab[..]));
        assert_eq!(m["ack"].as_str(), Some(ack.as_str()));
        assert_eq!(m["output"]["resourceType"], "Bundle");
        assert_eq!(m["message_type"], "ORU^R01");
        let (status, _) = json(
            http.get(format!("{base}/messages/999999"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        assert_eq!(status, 404);

        // 8. Reprocess the errored message: still an error with these mappings, status kept.
        let (_, errs) = json(
            http.get(format!("{base}/messages?status=error"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        let id = errs["items"][0]["id"].as_i64().unwrap_or(0);
        let (status, r) = json(
            http.post(format!("{base}/messages/{id}/reprocess"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["status"], "error");
        assert_eq!(r["previous_status"], "error");

        // 9. Health and metrics.
        let (status, h) = json(
            http.get(format!("{base}/health"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(h["store"]["status"], "ok");
        assert_eq!(h["store"]["backend"], backend);
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default();
        assert!(
            metrics.contains("v2fhir_messages_received_total{"),
            "{metrics}"
        );
        assert!(
            metrics.contains("v2fhir_process_seconds_bucket"),
            "{metrics}"
        );
        assert!(metrics.contains("v2fhir_queue_depth"), "{metrics}");
        assert!(
            metrics.contains("v2fhir_store_resources{type=\"Patient\"}"),
            "{metrics}"
        );
        if backend == "sqlite" {
            // The writer's WAL frames went through the shim, fewer writes reaching the kernel.
            let value = |name: &str| -> u64 {
                metrics
                    .lines()
                    .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                    .unwrap_or_else(|| panic!("{name} missing: {metrics}"))
            };
            let writes = value("v2fhir_sqlite_wal_writes_total");
            let kernel = value("v2fhir_sqlite_wal_kernel_writes_total");
            assert!(writes > 0 && kernel < writes, "{writes} / {kernel}");
            value("v2fhir_sqlite_wal_barrier_writes_total");
        }
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprocess_applies_a_mapping_fix() {
    // A gateway whose mapping set lacks the ADT_A01 map errors on A08; after the fix is reloaded
    // (no restart) a reprocess converts the stored message.
    let http = gateway::http_client();
    let dir = gateway::scratch("reprocess");
    let partial = dir.join("mappings");
    copy_dir(&gateway::root().join("mappings"), &partial);
    let a01 = partial.join("messages").join("ADT_A01.yaml");
    assert!(a01.exists(), "expected {}", a01.display());
    std::fs::remove_file(&a01).unwrap_or_else(|e| panic!("{e}"));
    let url = format!("sqlite://{}/v2fhir.db", dir.display());
    let mut cfg = gateway::config(&url);
    cfg.mappings.dir = partial.clone();
    let running = gateway::start(&cfg).await;
    let base = format!(
        "http://{}",
        running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
    );
    let r = http
        .post(format!("{base}/v2/messages"))
        .header("content-type", ER7)
        .body(adt("FIX1", "P1", ""))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ack = r.text().await.unwrap_or_default();
    assert_eq!(msa(&ack).0, "AE", "{ack}");
    running.shutdown().await;

    // Restart on the partial set: the fix comes in while it runs.
    let running = gateway::start(&cfg).await;
    let base = format!(
        "http://{}",
        running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
    );
    let reload = || async {
        let r = http
            .post(format!("{base}/admin/mappings/reload"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        json(r).await
    };
    // A broken mapping file is refused with its position; the running plan stays.
    std::fs::write(
        partial.join("messages").join("BROKEN.yaml"),
        "kind: message\nmap: [unclosed\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (status, oo) = reload().await;
    assert_eq!(status, 422, "{oo}");
    assert!(
        oo.to_string().contains("BROKEN.yaml:"),
        "errors name file:line: {oo}"
    );
    std::fs::remove_file(partial.join("messages").join("BROKEN.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    // The fix: the ADT_A01 map is back; reload, then reprocess the stored message.
    std::fs::copy(gateway::root().join("mappings/messages/ADT_A01.yaml"), &a01)
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, r) = reload().await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["status"], "reloaded");
    let (_, errs) = json(
        http.get(format!("{base}/messages?status=error"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(errs["total"], 1);
    let id = errs["items"][0]["id"].as_i64().unwrap_or(0);
    let (status, r) = json(
        http.post(format!("{base}/messages/{id}/reprocess"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["previous_status"], "error");
    assert_eq!(r["status"], "converted");
    let (_, m) = json(
        http.get(format!("{base}/messages/{id}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(m["status"], "converted");
    assert_eq!(m["output"]["resourceType"], "Bundle");
    // New messages use the reloaded plan too.
    let r = http
        .post(format!("{base}/v2/messages"))
        .header("content-type", ER7)
        .body(adt("FIX2", "P2", ""))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(msa(&r.text().await.unwrap_or_default()).0, "AA");
    running.shutdown().await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{e}"));
    for e in std::fs::read_dir(from)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn every_route_is_documented_in_openapi() {
    let router =
        std::fs::read_to_string(gateway::root().join("src/api/mod.rs")).unwrap_or_default();
    let spec =
        std::fs::read_to_string(gateway::root().join("openapi/openapi.yaml")).unwrap_or_default();
    // `.route("/path", …)`, also when rustfmt puts the path on a line of its own.
    let routes: Vec<&str> = router
        .split(".route(")
        .skip(1)
        .filter_map(|r| r.trim_start().strip_prefix('"'))
        .filter_map(|r| r.split('"').next())
        .collect();
    assert!(routes.len() >= 8, "{routes:?}");
    for r in routes {
        assert!(
            spec.contains(&format!("\n  {r}:\n")),
            "{r} is served but not documented in openapi/openapi.yaml"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_body_is_split_into_messages_stored_byte_exact() {
    let http = gateway::http_client();
    let url = format!("sqlite://{}/v2fhir.db", gateway::scratch("batch").display());
    let running = gateway::start(&gateway::config(&url)).await;
    let base = format!(
        "http://{}",
        running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
    );
    let (m1, m2) = (adt("B1", "P1", ""), adt("B2", "P2", ""));
    let body = format!("BHS|^~\\&|ADT1|HOSP|||20261129\r{m1}{m2}BTS|2\r");
    let r = http
        .post(format!("{base}/v2/messages"))
        .header("content-type", ER7)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 200);
    let acks = r.text().await.unwrap_or_default();
    let msas: Vec<&str> = acks.split('\r').filter(|s| s.starts_with("MSA")).collect();
    assert_eq!(msas, ["MSA|AA|B1", "MSA|AA|B2"], "{acks}");
    let (_, page) = json(
        http.get(format!("{base}/messages"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(page["total"], 2);
    for item in page["items"].as_array().cloned().unwrap_or_default() {
        let id = item["id"].as_i64().unwrap_or(0);
        let (_, m) = json(
            http.get(format!("{base}/messages/{id}"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        let want = if m["control_id"] == "B1" { &m1 } else { &m2 };
        // Each row holds exactly its message's bytes: MSH up to the end of its last segment.
        assert_eq!(m["raw"].as_str(), Some(want.trim_end_matches('\r')), "{m}");
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_store_fails_nothing_is_acknowledged_as_accepted() {
    // PostgreSQL only (a database can be taken away from under a running gateway); CI runs it.
    let Some(admin) = gateway::pg_admin_url() else {
        return;
    };
    let http = gateway::http_client();
    let url = gateway::fresh_pg(&admin, "storefail").await;
    let running = gateway::start(&gateway::config(&url)).await;
    let base = format!(
        "http://{}",
        running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
    );
    let mllp = running.mllp_addr.unwrap_or_else(|| panic!("no MLLP"));
    let mut c = gateway::Mllp::connect(mllp).await;
    let a = c.send(adt("SF1", "P1", "").as_bytes(), 1).await;
    assert_eq!(msa(&a[0]).0, "AA");

    // Take the database away (terminating the gateway's connections).
    {
        use sqlx::{Connection, Executor};
        let db = url.rsplit('/').next().unwrap_or("");
        let mut conn = sqlx::AnyConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {db} WITH (FORCE)"
        )))
        .await
        .unwrap_or_else(|e| panic!("drop {db}: {e}"));
    }
    // MLLP: AE with code 207 and "resend", never AA.
    let a = c.send(adt("SF2", "P2", "").as_bytes(), 1).await;
    assert_eq!(msa(&a[0]), ("AE".into(), "SF2".into()), "{}", a[0]);
    assert!(
        a[0].contains("207") && a[0].contains("could not be stored"),
        "{}",
        a[0]
    );
    // Enhanced mode: CE, not CA.
    let a = c.send(adt("SF3", "P3", "|||AL|AL").as_bytes(), 1).await;
    assert_eq!(msa(&a[0]).0, "CE", "{}", a[0]);
    // HTTP: 503 with the negative ACK; health says unavailable.
    let r = http
        .post(format!("{base}/v2/messages"))
        .header("content-type", ER7)
        .body(adt("SF4", "P4", ""))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(msa(&r.text().await.unwrap_or_default()).0, "AE");
    let h = http
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(h.status().as_u16(), 503);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin1_messages_are_stored_as_bytes_and_shown_decoded() {
    let http = gateway::http_client();
    let url = format!(
        "sqlite://{}/v2fhir.db",
        gateway::scratch("latin1").display()
    );
    let running = gateway::start(&gateway::config(&url)).await;
    let base = format!(
        "http://{}",
        running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
    );
    // MSH-18 8859/1 and a name with é (0xE9), not valid UTF-8.
    let text = adt("LAT1", "P1", "||||||8859/1").replace("DOE^JANE^Q", "REN\u{e9}^ZO\u{eb}");
    let bytes: Vec<u8> = text.chars().map(|c| c as u32 as u8).collect();
    let r = http
        .post(format!("{base}/v2/messages"))
        .header("content-type", ER7)
        .header("accept", "application/fhir+json")
        .body(bytes.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (status, bundle) = json(r).await;
    assert_eq!(status, 200, "{bundle}");
    assert!(
        bundle.to_string().contains("REN\u{e9}"),
        "the Bundle has the decoded name"
    );
    let (_, m) = json(
        http.get(format!("{base}{location}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert!(
        m["raw"]
            .as_str()
            .is_some_and(|r| r.contains("REN\u{e9}^ZO\u{eb}")),
        "{m}"
    );
    let stored = running
        .pipeline
        .store()
        .get(m["id"].as_i64().unwrap_or(0))
        .await
        .ok()
        .flatten();
    assert_eq!(
        stored.map(|s| s.raw),
        Some(bytes),
        "stored byte for byte, not re-encoded"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_an_operation_outcome_413() {
    let http = gateway::http_client();
    let url = format!("sqlite://{}/v2fhir.db", gateway::scratch("limit").display());
    let mut cfg = gateway::config(&url);
    cfg.http.max_body = 1024;
    let running = gateway::start(&cfg).await;
    let base = format!(
        "http://{}",
        running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
    );
    let big = adt("BIG", "P1", "") + &"NTE|1||".repeat(200);
    let r = http
        .post(format!("{base}/v2/messages"))
        .header("content-type", ER7)
        .body(big)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, oo) = json(r).await;
    assert_eq!(status, 413, "{oo}");
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert_eq!(oo["issue"][0]["code"], "too-long");
    // Nothing was stored.
    let (_, page) = json(
        http.get(format!("{base}/messages"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(page["total"], 0);
    running.shutdown().await;
}

/// HTTPS with client certificates: a device backend with a certificate the configured CA signed
/// writes and reads; one without a certificate, or speaking plain HTTP, gets no answer; the
/// listener keeps serving after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_client_certificates() {
    let dir = gateway::scratch("https");
    let pki = gateway::Pki::new(&dir, "wearables.example");

    let url = format!("sqlite://{}/v2fhir.db", dir.display());
    let mut cfg = gateway::config(&url);
    cfg.http.tls_cert = Some(dir.join("server.pem"));
    cfg.http.tls_key = Some(dir.join("server.key"));
    cfg.http.tls_client_ca = Some(dir.join("ca.pem"));
    let running = gateway::start(&cfg).await;
    let addr = running.http_addr.unwrap_or_else(|| panic!("no HTTP"));
    let base = format!("https://localhost:{}", addr.port());

    let client = |config: rustls::ClientConfig| {
        reqwest::Client::builder()
            // `localhost` is the name in the server's certificate; the socket stays on loopback.
            .resolve("localhost", addr)
            .tls_backend_preconfigured(config)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let with_cert = client(pki.client(true));
    let without = client(pki.client(false));

    // Without a client certificate: no answer (the handshake fails).
    let refused = without.get(format!("{base}/health")).send().await;
    assert!(
        refused.is_err(),
        "answered without a client certificate: {refused:?}"
    );
    // Plain HTTP on the HTTPS port: no answer either.
    let plain = gateway::http_client()
        .get(format!("http://{addr}/health"))
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()));

    // With one: a write and a read, after the failures above.
    let obs = serde_json::json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {"value": 58, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}});
    let r = with_cert
        .post(format!("{base}/fhir/Observation"))
        .header("content-type", "application/fhir+json")
        .body(obs.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("HTTPS with a client certificate: {e}"));
    assert_eq!(r.status().as_u16(), 201);
    let location = r
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        location.starts_with(&format!("{base}/fhir/Observation/")),
        "{location}"
    );
    let read = with_cert
        .get(&location)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.status().as_u16(), 200, "{location}");
    running.shutdown().await;
}

/// Bearer tokens with scopes (`http.tokens_file`): a wearable backend may write FHIR and nothing
/// else, an operator may read and see the log; no token → 401, the wrong scope → 403; health
/// checks and the CapabilityStatement stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_grant_scopes() {
    use sha2::{Digest, Sha256};
    let dir = gateway::scratch("tokens");
    let hash = |t: &str| {
        Sha256::digest(t.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    std::fs::write(
        dir.join("tokens"),
        format!(
            "# name scopes sha256\nwearables fhir-write {}\noncall ops,fhir-read {}\n",
            hash("w-secret"),
            hash("o-secret")
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("sqlite://{}/v2fhir.db", dir.display());
    let mut cfg = gateway::config(&url);
    cfg.http.tokens_file = Some(dir.join("tokens"));
    let running = gateway::start(&cfg).await;
    let base = format!(
        "http://{}",
        running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
    );
    let http = gateway::http_client();
    let call = |method: reqwest::Method, path: &str, token: Option<&str>, body: Option<String>| {
        let mut rb = http.request(method, format!("{base}{path}"));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.header("content-type", "application/fhir+json").body(b);
        }
        async move {
            let r = rb.send().await.unwrap_or_else(|e| panic!("{e}"));
            let status = r.status().as_u16();
            let auth = r
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let loc = r
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (status, auth, loc, r.text().await.unwrap_or_default())
        }
    };
    use reqwest::Method;
    assert_eq!(call(Method::GET, "/health/live", None, None).await.0, 200);
    assert_eq!(call(Method::GET, "/health", None, None).await.0, 200);
    assert_eq!(call(Method::GET, "/fhir/metadata", None, None).await.0, 200);
    let obs = serde_json::json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {"value": 58, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}})
    .to_string();
    let (s, www, _, body) = call(Method::POST, "/fhir/Observation", None, Some(obs.clone())).await;
    assert_eq!(s, 401, "{body}");
    assert!(www.starts_with("Bearer"), "{www}");
    assert!(body.contains("OperationOutcome"), "{body}");
    let (s, _, _, _) = call(
        Method::POST,
        "/fhir/Observation",
        Some("guess"),
        Some(obs.clone()),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _, loc, body) = call(
        Method::POST,
        "/fhir/Observation",
        Some("w-secret"),
        Some(obs),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let path = format!("/fhir/{}", loc.split("/fhir/").nth(1).unwrap_or(""));
    // The wearable backend writes but cannot read, see the log or send v2.
    let (s, _, _, body) = call(Method::GET, &path, Some("w-secret"), None).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("fhir-read"), "{body}");
    assert_eq!(
        call(Method::GET, "/messages", Some("w-secret"), None)
            .await
            .0,
        403
    );
    assert_eq!(
        call(Method::POST, "/v2/messages", Some("w-secret"), None)
            .await
            .0,
        403
    );
    // The operator reads and sees the log, and cannot write.
    assert_eq!(
        call(Method::GET, &path, Some("o-secret"), None).await.0,
        200
    );
    assert_eq!(
        call(Method::GET, "/messages", Some("o-secret"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(Method::GET, "/metrics", Some("o-secret"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(Method::DELETE, &path, Some("o-secret"), None).await.0,
        403
    );
    running.shutdown().await;
}

/// Retention (`POST /admin/prune`, what `store.retention_days` runs every hour), on both stores:
/// finished messages go, an errored one stays for attention, the FHIR resources stay, and the
/// log's counts agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_deletes_finished_messages_and_keeps_errors_and_resources() {
    let http = gateway::http_client();
    for (backend, url) in gateway::store_urls("prune").await {
        let running = gateway::start(&gateway::config(&url)).await;
        let base = format!(
            "http://{}",
            running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
        );
        let post = |body: String| {
            http.post(format!("{base}/v2/messages"))
                .header("content-type", "x-application/hl7-v2+er7")
                .header("accept", "application/fhir+json")
                .body(body)
                .send()
        };
        let ok = post(adt("R1", "P-R1", ""))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.status().as_u16(), 200, "{backend}");
        let bundle: Value = ok.json().await.unwrap_or(Value::Null);
        let patient = bundle["entry"]
            .as_array()
            .and_then(|es| {
                es.iter()
                    .find(|e| e["resource"]["resourceType"] == "Patient")
                    .and_then(|e| e["resource"]["id"].as_str())
            })
            .unwrap_or_else(|| panic!("{backend}: no Patient"))
            .to_string();
        let _ = post(adt("R1", "P-R1", "")).await; // a duplicate
        let _ = post("not hl7 at all".into()).await; // rejected
        let err = post(adt("R2", "P-R2", "").replace("ADT^A08^ADT_A01", "ZZZ^Z01"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(err.status().as_u16(), 422, "{backend}");
        let count = |q: &str| {
            let url = format!("{base}/messages?{q}");
            let http = http.clone();
            async move {
                let v: Value = http
                    .get(url)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .json()
                    .await
                    .unwrap_or(Value::Null);
                v["total"].as_i64().unwrap_or(-1)
            }
        };
        assert_eq!(count("").await, 4, "{backend}");
        // Older than 30 days: nothing yet.
        let r: Value = http
            .post(format!("{base}/admin/prune?older_than_days=30"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or(Value::Null);
        assert_eq!(r["pruned"], 0, "{backend}: {r}");
        let r: Value = http
            .post(format!("{base}/admin/prune?older_than_days=0"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or(Value::Null);
        assert_eq!(r["pruned"], 3, "{backend}: {r}");
        assert_eq!(count("").await, 1, "{backend}");
        assert_eq!(count("status=error").await, 1, "{backend}");
        let read = http
            .get(format!("{base}/fhir/Patient/{patient}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.status().as_u16(), 200, "{backend}: resources stay");
        let missing = http
            .post(format!("{base}/admin/prune"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(missing.status().as_u16(), 400, "{backend}");
        running.shutdown().await;
    }
}

/// JWT access tokens of an identity provider (`http.jwt_jwks_file`): a token it signed (ES256)
/// for this audience, unexpired, with SMART system scopes, is accepted with exactly those
/// scopes; one that is expired, for another audience or issuer, signed by another key, tampered
/// with, or `alg: none` is refused (401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_access_tokens_of_an_identity_provider() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let dir = gateway::scratch("jwt");
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}")); // ECDSA P-256
    let other = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let point = key.public_key_raw().to_vec();
    assert_eq!(point.len(), 65);
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
        "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])}]});
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let sign = |kp: &rcgen::KeyPair, header: serde_json::Value, claims: serde_json::Value| {
        es256_jwt(kp, &header, &claims)
    };
    let now = jiff::Timestamp::now().as_second();
    let claims = |aud: &str, iss: &str, exp: i64, scope: &str| {
        serde_json::json!({"iss": iss, "aud": aud, "exp": exp, "iat": now,
            "client_id": "wearables-cloud", "scope": scope})
    };
    let es = serde_json::json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
    let iss = "https://idp.example/realms/hospital";
    let aud = "https://v2fhir.example/fhir";
    let good = sign(
        &key,
        es.clone(),
        claims(aud, iss, now + 300, "system/*.write openid"),
    );

    let url = format!("sqlite://{}/v2fhir.db", dir.display());
    let mut cfg = gateway::config(&url);
    cfg.http.jwt_jwks_file = Some(dir.join("jwks.json"));
    cfg.http.jwt_issuer = iss.into();
    cfg.http.jwt_audience = aud.into();
    let running = gateway::start(&cfg).await;
    let base = format!(
        "http://{}",
        running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
    );
    let http = gateway::http_client();
    let obs = serde_json::json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {"value": 61, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}})
    .to_string();
    let post = |token: String| {
        http.post(format!("{base}/fhir/Observation"))
            .header("content-type", "application/fhir+json")
            .bearer_auth(token)
            .body(obs.clone())
            .send()
    };
    let r = post(good.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 201);
    // The scope granted writing, not reading.
    let r = http
        .get(format!("{base}/fhir/Observation"))
        .bearer_auth(&good)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 403);
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(String::from).collect();
        parts[1] = B64.encode(claims(aud, iss, now + 300, "system/*.*").to_string());
        parts.join(".")
    };
    let none = format!(
        "{}.{}.",
        B64.encode(serde_json::json!({"alg": "none"}).to_string()),
        B64.encode(claims(aud, iss, now + 300, "system/*.*").to_string())
    );
    for (what, token, says) in [
        (
            "expired",
            sign(
                &key,
                es.clone(),
                claims(aud, iss, now - 600, "system/*.write"),
            ),
            "expired",
        ),
        (
            "another audience",
            sign(
                &key,
                es.clone(),
                claims("https://other", iss, now + 300, "system/*.write"),
            ),
            "audience",
        ),
        (
            "another issuer",
            sign(
                &key,
                es.clone(),
                claims(aud, "https://evil", now + 300, "system/*.write"),
            ),
            "issuer",
        ),
        (
            "another key",
            sign(
                &other,
                es.clone(),
                claims(aud, iss, now + 300, "system/*.write"),
            ),
            "does not verify",
        ),
        ("tampered", tampered, "does not verify"),
        ("alg none", none, "not accepted"),
    ] {
        let r = post(token).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 401, "{what}");
        let body = r.text().await.unwrap_or_default();
        assert!(body.contains(says), "{what}: {body}");
    }
    running.shutdown().await;
}

/// Keys fetched from the identity provider's JWKS URL (`http.jwt_jwks_url`): a token is accepted
/// once they are fetched; after the provider rotates its key, a token naming the new key id makes
/// the gateway fetch the keys again, and it is accepted too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_fetched_from_a_url_follow_a_key_rotation() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use std::sync::{Arc, Mutex};
    let jwks_of = |kp: &rcgen::KeyPair, kid: &str| {
        let p = kp.public_key_raw();
        serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid,
            "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65])}]})
        .to_string()
    };
    let k1 = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let k2 = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    // The provider: a loopback server whose JWKS can be swapped, counting fetches.
    let served = Arc::new(Mutex::new(jwks_of(&k1, "k1")));
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (s2, f2) = (served.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let (s, f) = (s2.clone(), f2.clone());
            async move {
                f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                s.lock().map(|t| t.clone()).unwrap_or_default()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let idp = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let iss = "https://idp.example/realms/hospital";
    let aud = "v2fhir";
    let sign = |kp: &rcgen::KeyPair, kid: &str| {
        let now = jiff::Timestamp::now().as_second();
        es256_jwt(
            kp,
            &serde_json::json!({"alg": "ES256", "kid": kid}),
            &serde_json::json!({"iss": iss, "aud": aud, "exp": now + 300, "sub": "lab-portal",
                "scope": "system/*.read"}),
        )
    };
    let dir = gateway::scratch("jwks-url");
    let url = format!("sqlite://{}/v2fhir.db", dir.display());
    let mut cfg = gateway::config(&url);
    cfg.http.jwt_jwks_url = format!("http://{idp}/jwks");
    cfg.http.jwt_issuer = iss.into();
    cfg.http.jwt_audience = aud.into();
    let running = gateway::start(&cfg).await;
    let base = format!(
        "http://{}",
        running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
    );
    let http = gateway::http_client();
    let read = |token: String| {
        http.get(format!("{base}/fhir/Patient"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "fetched at start"
    );
    let r = read(sign(&k1, "k1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 200);
    // The provider rotates to k2. A k2 token makes the gateway fetch again (once the short
    // guard against made-up key ids has passed) and is accepted; k1 is gone.
    *served.lock().unwrap_or_else(|e| e.into_inner()) = jwks_of(&k2, "k2");
    tokio::time::sleep(std::time::Duration::from_millis(5200)).await;
    let r = read(sign(&k2, "k2"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "fetched again for k2"
    );
    let r = read(sign(&k1, "k1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 401, "the rotated-out key is refused");
    running.shutdown().await;
}

/// A JWT signed ES256 with `kp` (a P-256 key from rcgen), as an identity provider issues it.
fn es256_jwt(kp: &rcgen::KeyPair, header: &Value, claims: &Value) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let rng = ring::rand::SystemRandom::new();
    let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &kp.serialize_der(),
        &rng,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let msg = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let sig = signer
        .sign(&rng, msg.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    format!("{msg}.{}", B64.encode(sig.as_ref()))
}

/// A message laid out as another structure than it declares (OUL^R22 sent in OUL_R24's order)
/// is read as the fallback structure: accepted (AA), its results stored, and the ACK says how it
/// was read in a warning ERR, so the sender's interface team sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_structure_fallback_is_accepted_and_reported_in_the_ack() {
    let http = gateway::http_client();
    let url = format!(
        "sqlite://{}/v2fhir.db",
        gateway::scratch("fallback").display()
    );
    let running = gateway::start(&gateway::config(&url)).await;
    let base = format!("http://{}", gateway::http_of(&running));
    let body = std::fs::read(gateway::root().join("tests/golden/oul_r22_orders_first.hl7"))
        .unwrap_or_else(|e| panic!("{e}"));
    let ack = http
        .post(format!("{base}/v2/messages"))
        .header("content-type", ER7)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    let segs: Vec<&str> = ack.split('\r').filter(|s| !s.is_empty()).collect();
    assert!(
        segs.iter().any(|s| s.starts_with("MSA|AA|OUL0001")),
        "{ack}"
    );
    let err = segs
        .iter()
        .find(|s| s.starts_with("ERR|"))
        .unwrap_or_else(|| panic!("no ERR: {ack}"));
    let fields: Vec<&str> = err.split('|').collect();
    assert_eq!(fields.get(4), Some(&"W"), "a warning: {err}");
    assert!(
        err.contains("do not follow OUL_R22") && err.contains("read as OUL_R24"),
        "{err}"
    );
    let (_, found) = json(
        http.get(format!("{base}/fhir/Observation?_summary=count"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(found["total"], 2, "{found}");
    running.shutdown().await;
}
