//! Delivery throughput to a real upstream FHIR server (`sekmet-fhir` on 127.0.0.1), and the
//! upstream's own share of the time.
//!
//! For each concurrency: `MESSAGES` converted ADT^A01 messages (default 2,000; one patient
//! each, so nothing waits for per-patient order) are committed to a fresh SQLite store with the
//! outbox (sink `upstream`); then the delivery worker starts and the time until the outbox is
//! empty is measured. The same Bundles are then POSTed straight to a fresh upstream by a plain
//! client at the same concurrency: that is the upstream alone, and `upstream share` = its time /
//! the gateway's time (the rest is the gateway: claiming, shaping, recording).
//!
//! `cargo bench --bench upstream` (`MESSAGES=500 CONCURRENCY=1,8 cargo bench --bench upstream`;
//! `NULL_ONLY=1 MESSAGES=20000` measures only the gateway against the null upstream).

use std::collections::HashSet;
use std::time::{Duration, Instant};
use v2fhir::sinks::upstream::{DeliveryMode, Upstream, UpstreamConfig, shape_bundle};
use v2fhir::store::{Durability, Sinks, Store};

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-scratch")
        .join(format!(
            "{name}-{}-{}",
            std::process::id(),
            v2fhir::store::now_micros()
        ));
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

struct Sekmet {
    child: std::process::Child,
    base: String,
}

impl Sekmet {
    fn start() -> Sekmet {
        let dir = scratch("sekmet");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.join("settings.yaml"),
            format!(
                "host: 127.0.0.1\nport: {port}\nbase_url: http://127.0.0.1:{port}/fhir\ndata_dir: {}\n\
                 simulator: {{enabled: false}}\nvalidation: {{inbound: strict}}\nlog_inbound: false\n",
                dir.join("data").display()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let log = std::fs::File::create(dir.join("sekmet.log")).unwrap_or_else(|e| panic!("{e}"));
        let mut child = std::process::Command::new("sekmet")
            .args(["serve", "-c"])
            .arg(dir.join("settings.yaml"))
            .current_dir(&dir)
            .stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("sekmet: {e}"));
        let base = format!("http://127.0.0.1:{port}/fhir");
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                std::thread::sleep(Duration::from_millis(300));
                return Sekmet { child, base };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("sekmet did not start");
    }
}

impl Drop for Sekmet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An in-process endpoint that accepts every Bundle at once: the gateway's own ceiling.
async fn null_upstream() -> String {
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/fhir",
            post(|| async {
                r#"{"resourceType":"Bundle","type":"transaction-response","entry":[]}"#
            }),
        )
        .route(
            "/fhir/metadata",
            get(|| async { r#"{"resourceType":"CapabilityStatement"}"# }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    format!("http://{addr}/fhir")
}

/// Commit `rows` to a fresh store with the outbox, start the worker against `base`, and time
/// until the outbox is empty.
async fn drain(rows: &[v2fhir::store::NewMessage], base: &str, c: usize) -> Duration {
    let url = format!("sqlite://{}/v2fhir.db", scratch("store").display());
    let store = Store::open(&url, Durability::ProcessCrash)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .with_sinks(Sinks {
            local: false,
            upstream: true,
        });
    for chunk in rows.chunks(256) {
        store.commit(chunk).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let ucfg = UpstreamConfig {
        base: base.to_string(),
        concurrency: c,
        ..UpstreamConfig::default()
    };
    let forwarder = Upstream::new(ucfg, store.clone()).unwrap_or_else(|e| panic!("{e}"));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let worker = tokio::spawn(forwarder.run(stop_rx));
    loop {
        let s = store.outbox_stats().await.unwrap_or_else(|e| panic!("{e}"));
        if s.pending == 0 {
            assert_eq!(s.dead, 0, "messages refused during the benchmark");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    let _ = stop.send(true);
    let _ = worker.await;
    store.close().await;
    took
}

fn adt(i: usize) -> String {
    format!(
        "MSH|^~\\&|ADT1|HOSP|V2FHIR|HOSP|20261129120000+0000||ADT^A01^ADT_A01|B{i}|P|2.5.1\r\
         EVN|A01|20261129120000+0000\r\
         PID|1||BP{i}^^^&2.16.840.1.113883.19.5&ISO^MR||FAMILY{i}^JANE^Q||19800101|F|||1 MAIN ST^^SPRINGFIELD^IL^62701\r\
         PV1|1|I|WARD^101^A|||||||||||||||||V{i}\r\
         OBX|1|NM|8867-4^Heart rate^LN||72|/min|||||F\r"
    )
}

fn main() {
    let ok = std::process::Command::new("sekmet")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("sekmet-fhir is not installed (pip install sekmet-fhir==0.1.1): nothing measured");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n: usize = std::env::var("MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let levels: Vec<usize> = std::env::var("CONCURRENCY")
        .unwrap_or_else(|_| "1,4,8,16".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let plan = v2fhir::mapping::load::load_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings"),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let cfg = v2fhir::ingest::IngestConfig::default();
    let rows: Vec<v2fhir::store::NewMessage> = (0..n)
        .flat_map(|i| {
            v2fhir::ingest::prepare(
                adt(i).as_bytes(),
                v2fhir::ingest::Source::Mllp,
                &plan,
                &cfg,
                v2fhir::store::now_micros(),
            )
        })
        .map(|p| p.row)
        .collect();
    assert!(
        rows.iter()
            .all(|r| r.status == v2fhir::store::Status::Converted)
    );
    let bundles: Vec<String> = rows
        .iter()
        .filter_map(|r| r.output.as_deref())
        .filter_map(|o| serde_json::from_str(o).ok())
        .map(|b| shape_bundle(b, DeliveryMode::Transaction, &HashSet::new()).to_string())
        .collect();
    println!(
        "delivery to sekmet-fhir 0.1.1 (Python, SQLite) on 127.0.0.1: {n} ADT^A01 messages, one transaction Bundle each ({} resources per Bundle)",
        rows[0].resources.len()
    );
    println!(
        "{:>11} | {:>13} | {:>20} | {:>14} | {:>26}",
        "concurrency",
        "gateway msg/s",
        "upstream alone msg/s",
        "upstream share",
        "gateway, null upstream msg/s"
    );
    if std::env::var_os("NULL_ONLY").is_some() {
        // The gateway's own ceiling only (no sekmet), e.g. with a large outbox.
        for &c in &levels {
            rt.block_on(async {
                let null = null_upstream().await;
                let t = drain(&rows, &null, c).await;
                println!(
                    "{c:>11} | null upstream only: {:>8.0} msg/s",
                    n as f64 / t.as_secs_f64()
                );
            });
        }
        return;
    }
    for &c in &levels {
        rt.block_on(async {
            // The gateway: outbox filled first, then the worker drains it.
            let up = Sekmet::start();
            let gateway = drain(&rows, &up.base, c).await;
            drop(up);
            let null = null_upstream().await;
            let ceiling = drain(&rows, &null, c).await;

            // The upstream alone: the same Bundles, POSTed by a plain client.
            let up = Sekmet::start();
            let client = reqwest::Client::new();
            let started = Instant::now();
            let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let bundles = std::sync::Arc::new(bundles.clone());
            let mut tasks = Vec::new();
            for _ in 0..c {
                let (client, next, bundles, base) = (
                    client.clone(),
                    next.clone(),
                    bundles.clone(),
                    up.base.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(b) = bundles.get(i) else { break };
                        let r = client
                            .post(&base)
                            .header("content-type", "application/fhir+json")
                            .header("prefer", "return=minimal")
                            .body(b.clone())
                            .send()
                            .await
                            .unwrap_or_else(|e| panic!("{e}"));
                        assert!(r.status().is_success(), "{}", r.status());
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap_or_else(|e| panic!("{e}"));
            }
            let alone = started.elapsed();
            println!(
                "{c:>11} | {:>13.0} | {:>20.0} | {:>13.0}% | {:>26.0}",
                n as f64 / gateway.as_secs_f64(),
                n as f64 / alone.as_secs_f64(),
                100.0 * alone.as_secs_f64() / gateway.as_secs_f64(),
                n as f64 / ceiling.as_secs_f64()
            );
        });
    }
}
