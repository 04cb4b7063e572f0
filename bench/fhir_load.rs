//! FHIR write load client: N concurrent clients, each POSTing `batch` Bundles of K heart-rate
//! Observations (one of 1,000 device users each, distinct times, so every reading is a new
//! resource) to `/fhir`, one request at a time, as a device backend's uploader does. Reports
//! requests/s, resources/s and request latency percentiles.
//!
//! ```text
//! cargo run --release --example fhir_load -- --addr 127.0.0.1:8080 --clients 8 --requests 2000 --per-request 50
//! ```
//! Loopback addresses only. `bench/fhir.sh` starts a gateway and runs it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Args {
    addr: SocketAddr,
    clients: usize,
    requests: usize,
    per_request: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:8080".parse().map_err(|e| format!("{e}"))?,
        clients: 8,
        requests: 2000,
        per_request: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--addr" => a.addr = v.parse().map_err(|e| format!("--addr {v}: {e}"))?,
            "--clients" => a.clients = v.parse().map_err(|e| format!("--clients: {e}"))?,
            "--requests" => a.requests = v.parse().map_err(|e| format!("--requests: {e}"))?,
            "--per-request" => {
                a.per_request = v.parse().map_err(|e| format!("--per-request: {e}"))?
            }
            o => return Err(format!("unknown option {o}")),
        }
    }
    if !a.addr.ip().is_loopback() {
        return Err("only loopback addresses are allowed".into());
    }
    if a.clients == 0 || a.per_request == 0 {
        return Err("--clients and --per-request must be at least 1".into());
    }
    Ok(a)
}

/// Request `n`: a batch of `k` readings, each with a distinct time.
fn body(n: usize, k: usize) -> String {
    let user = n % 1000;
    let entries: Vec<String> = (0..k)
        .map(|i| {
            let t = n * k + i;
            let (d, rest) = (t / 86_400 % 28 + 1, t % 86_400);
            let (h, m, s) = (rest / 3600, rest / 60 % 60, rest % 60);
            format!(
                r#"{{"resource":{{"resourceType":"Observation","status":"final","category":[{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}}]}}],"code":{{"coding":[{{"system":"http://loinc.org","code":"8867-4"}}]}},"subject":{{"reference":"Patient/device-user-{user}"}},"effectiveDateTime":"2026-11-{d:02}T{h:02}:{m:02}:{s:02}Z","valueQuantity":{{"value":{},"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}}},"request":{{"method":"POST","url":"Observation"}}}}"#,
                55 + t % 40
            )
        })
        .collect();
    format!(
        r#"{{"resourceType":"Bundle","type":"batch","entry":[{}]}}"#,
        entries.join(",")
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fhir_load: {e}");
            std::process::exit(2);
        }
    };
    // reqwest is built without a default TLS provider (see Cargo.toml); plain HTTP needs none,
    // but the builder asks for one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fhir_load: HTTP client: {e}");
            std::process::exit(2);
        }
    };
    let url = format!("http://{}/fhir", a.addr);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.clients {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        let (total, k) = (a.requests, a.per_request);
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<Duration> = Vec::new();
            let mut failed = 0usize;
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let t = Instant::now();
                let ok = client
                    .post(&url)
                    .header("content-type", "application/fhir+json")
                    .body(body(n, k))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                lat.push(t.elapsed());
                if !ok {
                    failed += 1;
                }
            }
            (lat, failed)
        }));
    }
    let mut lat = Vec::new();
    let mut failed = 0;
    for t in tasks {
        if let Ok((l, f)) = t.await {
            lat.extend(l);
            failed += f;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    println!(
        "clients={} requests={} per_request={} elapsed={elapsed:.2}s rate={:.0} req/s resources={:.0}/s p50={:.1}ms p99={:.1}ms failed={failed}",
        a.clients,
        lat.len(),
        a.per_request,
        lat.len() as f64 / elapsed,
        (lat.len() * a.per_request) as f64 / elapsed,
        pct(0.5),
        pct(0.99),
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
