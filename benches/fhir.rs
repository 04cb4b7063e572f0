//! FHIR facade latency over a loaded resource store, through the real HTTP server.
//!
//! Loads `PATIENTS` patients (default 100,000) with `OBS` observations each (default 10: 1M
//! observations) into a fresh SQLite file and, when `V2FHIR_TEST_PG_URL` names a PostgreSQL
//! server, a fresh PostgreSQL database — through `Store::commit`, as converted messages would
//! arrive, index rows included — then measures p50/p99 over loopback HTTP of:
//! read `Patient/{id}`, `Patient?identifier=sys|val`, `Patient?name=…` (a family-name prefix),
//! `Observation?subject:Patient.identifier=sys|val` (a chain), and
//! `Observation?patient=…&code=…&date=ge…&_count=50`.
//!
//! `cargo bench --bench fhir` (`PATIENTS=10000 cargo bench --bench fhir` for a quick run;
//! `SKIP_SQLITE=1`, `KEEP_DB=1` and `PG_DB=name` to measure a kept PostgreSQL database again).

use serde_json::json;
use std::time::{Duration, Instant};
use v2fhir::store::{Durability, NewMessage, NewResource, Status, Store};

const CODES: &[(&str, &str)] = &[
    ("718-7", "Hemoglobin"),
    ("2345-7", "Glucose"),
    ("2160-0", "Creatinine"),
    ("2823-3", "Potassium"),
    ("2951-2", "Sodium"),
];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn patient_id(p: usize) -> String {
    format!("pat-{p}")
}

/// One "message": a patient and its observations.
fn message(p: usize, obs: usize) -> NewMessage {
    let pid = patient_id(p);
    let mut resources = Vec::with_capacity(obs + 1);
    let patient = json!({"resourceType": "Patient", "id": pid,
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.999", "value": format!("MRN{p}"),
                        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}],
        "name": [{"family": format!("Family{}", p % 5000), "given": [format!("Given{}", p % 300)]}],
        "gender": if p.is_multiple_of(2) { "female" } else { "male" },
        "birthDate": format!("{}-{:02}-{:02}", 1930 + p % 80, 1 + p % 12, 1 + p % 28),
        "address": [{"postalCode": format!("{:05}", p % 99999), "city": "Springfield"}],
        "telecom": [{"system": "phone", "value": format!("555-{:07}", p)}]});
    resources.extend(NewResource::from_json(&patient));
    for o in 0..obs {
        let (code, display) = CODES[o % CODES.len()];
        let day = 1 + (p + o) % 28;
        let month = 1 + o % 12;
        let r = json!({"resourceType": "Observation", "id": format!("obs-{p}-{o}"),
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
            "subject": {"reference": format!("Patient/{pid}")},
            "effectiveDateTime": format!("2025-{month:02}-{day:02}T08:30:00+01:00"),
            "valueQuantity": {"value": 4.0 + (o as f64) * 0.5, "unit": "mmol/L",
                              "system": "http://unitsofmeasure.org", "code": "mmol/L"}});
        resources.extend(NewResource::from_json(&r));
    }
    let raw = format!("MSH|^~\\&|BENCH|HOSP|||20250101||ORU^R01|B{p}|P|2.5.1\r").into_bytes();
    NewMessage {
        received_at: p as i64,
        source: "bench".into(),
        sending_application: "BENCH".into(),
        sending_facility: "HOSP".into(),
        control_id: format!("B{p}"),
        message_type: "ORU^R01".into(),
        charset: "UTF-8".into(),
        content_hash: v2fhir::ingest::content_hash(&raw),
        status: Status::Converted,
        ack_code: "AA".into(),
        raw,
        diagnostics: None,
        output: None,
        output_packed: None,
        ack: String::new(),
        resources,
    }
}

fn pct(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

async fn measure(
    http: &reqwest::Client,
    name: &str,
    n: usize,
    url: impl Fn(usize) -> String,
    check: impl Fn(&serde_json::Value) -> bool,
) {
    // Warm-up (not measured): every pooled connection prepares its statements once.
    for i in 0..n / 10 {
        let _ = http.get(url(n + i)).send().await.map(|r| r.bytes());
    }
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let u = url(i);
        let t = Instant::now();
        let r = http.get(&u).send().await;
        let body = match r {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            Ok(r) => panic!("{u}: HTTP {}", r.status()),
            Err(e) => panic!("{u}: {e}"),
        };
        lat.push(t.elapsed());
        if i % 97 == 0 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            assert!(check(&v), "{u}: unexpected answer {body:.300}");
        }
    }
    println!(
        "  {name:<58} p50 {:>7.2} ms   p99 {:>7.2} ms   ({n} requests)",
        pct(lat.clone(), 0.50),
        pct(lat, 0.99)
    );
}

async fn run(backend: &str, url: &str, patients: usize, obs: usize, load: bool) {
    let store = Store::open(url, Durability::ProcessCrash)
        .await
        .unwrap_or_else(|e| panic!("{backend}: {e}"));
    if load {
        load_store(backend, &store, patients, obs).await;
    }
    // Planner statistics, as autovacuum would have gathered them in a running system.
    store
        .analyze()
        .await
        .unwrap_or_else(|e| panic!("{backend}: analyze: {e}"));
    store.close().await;
    serve_and_measure(backend, url, patients).await;
}

async fn load_store(backend: &str, store: &Store, patients: usize, obs: usize) {
    let t = Instant::now();
    let batch = 200;
    let mut p = 0;
    while p < patients {
        let rows: Vec<NewMessage> = (p..(p + batch).min(patients))
            .map(|i| message(i, obs))
            .collect();
        store
            .commit(&rows)
            .await
            .unwrap_or_else(|e| panic!("{backend}: commit: {e}"));
        p += batch;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{backend}: loaded {patients} patients + {} observations in {secs:.0} s ({:.0} resources/s, index rows included)",
        patients * obs,
        (patients * (obs + 1)) as f64 / secs
    );
}

async fn serve_and_measure(backend: &str, url: &str, patients: usize) {
    let mut cfg = v2fhir::serve::Config::default();
    cfg.store.url = url.to_string();
    cfg.mllp.listen = String::new();
    cfg.http.listen = "127.0.0.1:0".into();
    cfg.mappings.dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    let running = v2fhir::serve::start(&cfg)
        .await
        .unwrap_or_else(|e| panic!("{backend}: start: {e:#}"));
    let base = format!(
        "http://{}/fhir",
        running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
    );
    let http = reqwest::Client::new();
    // Pseudo-random patients, the same sequence on both stores.
    let pick = |i: usize| (i.wrapping_mul(2_654_435_761) >> 3) % patients;
    let n = env_usize("REQUESTS", 2000);
    measure(
        &http,
        "read Patient/{id}",
        n,
        |i| format!("{base}/Patient/{}", patient_id(pick(i))),
        |v| v["resourceType"] == "Patient",
    )
    .await;
    measure(
        &http,
        "Patient?identifier=sys|val",
        n,
        |i| {
            format!(
                "{base}/Patient?identifier=urn:oid:2.16.840.1.113883.3.999%7CMRN{}",
                pick(i)
            )
        },
        |v| v["total"] == 1,
    )
    .await;
    measure(
        &http,
        "Patient?name=…&_count=50 (prefix)",
        n,
        |i| format!("{base}/Patient?name=family{}&_count=50", pick(i) % 5000),
        |v| v["type"] == "searchset",
    )
    .await;
    measure(
        &http,
        "Observation?subject:Patient.identifier=…&_count=50",
        n,
        |i| {
            format!(
                "{base}/Observation?subject:Patient.identifier=urn:oid:2.16.840.1.113883.3.999%7CMRN{}&_count=50",
                pick(i)
            )
        },
        |v| v["type"] == "searchset" && v["entry"].as_array().is_some_and(|e| !e.is_empty()),
    )
    .await;
    measure(
        &http,
        "Observation?patient=&code=&date=ge…&_count=50",
        n,
        |i| {
            format!(
                "{base}/Observation?patient={}&code=http://loinc.org%7C{}&date=ge2025-03-01&_count=50",
                patient_id(pick(i)),
                CODES[i % CODES.len()].0
            )
        },
        |v| v["type"] == "searchset",
    )
    .await;
    running.shutdown().await;
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let patients = env_usize("PATIENTS", 100_000);
    let obs = env_usize("OBS", 10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        if std::env::var_os("SKIP_SQLITE").is_none() {
            let dir =
                std::env::temp_dir().join(format!("v2fhir-bench-fhir-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            run(
                "sqlite",
                &format!("sqlite://{}/bench.db", dir.display()),
                patients,
                obs,
                true,
            )
            .await;
            let _ = std::fs::remove_dir_all(&dir);
        }
        if let Ok(admin) = std::env::var("V2FHIR_TEST_PG_URL") {
            use sqlx::{Connection, Executor};
            sqlx::any::install_default_drivers();
            // PG_DB=name measures a database kept by an earlier run (KEEP_DB=1) without loading.
            let reuse = std::env::var("PG_DB").ok();
            let db = reuse
                .clone()
                .unwrap_or_else(|| format!("v2fhir_bench_{}", std::process::id()));
            let mut conn = sqlx::AnyConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("{admin}: {e}"));
            if reuse.is_none() {
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                    .await
                    .unwrap_or_else(|e| panic!("create {db}: {e}"));
            }
            let url = format!(
                "{}/{db}",
                admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin)
            );
            run("postgres", &url, patients, obs, reuse.is_none()).await;
            if std::env::var_os("KEEP_DB").is_some() || reuse.is_some() {
                println!("postgres: kept database {db}");
                return;
            }
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE {db} WITH (FORCE)"
                )))
                .await;
        } else {
            println!("postgres: V2FHIR_TEST_PG_URL not set; skipped");
        }
    });
}
