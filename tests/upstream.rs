//! Forwarding to a real upstream FHIR server (`sekmet-fhir`, started per test): the developer
//! corpus arrives and is found by identifier/subject search; conditional updates and replays;
//! a 4xx parks a message as dead with the upstream's OperationOutcome, the synchronous ACK policy
//! answers AE with the reason, and reprocessing after the fix delivers it; the read proxy; every
//! auth mode; an outage of 30 s while 1,000 messages stream in. Outbox tests on both stores.

mod common;
mod gateway;

use gateway::sekmet::{self, Sekmet};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use v2fhir::serve::Config;
use v2fhir::store::Store;

const OID: &str = "2.16.840.1.113883.19.5";

fn upstream_config(store_url: &str, base: &str) -> Config {
    let mut c = gateway::config(store_url);
    c.sink.mode = "upstream".into();
    c.upstream.url = base.to_string();
    c.upstream.backoff_initial_ms = 100;
    c.upstream.backoff_max_secs = 2;
    c.upstream.health_interval_secs = 1;
    c.upstream.timeout_secs = 10;
    c
}

/// An ADT message for a patient with an OID-qualified MR number (so conditional updates apply).
fn adt(control: &str, trigger: &str, patient: &str, family: &str, visit: &str) -> String {
    format!(
        "MSH|^~\\&|ADT1|HOSP|V2FHIR|HOSP|20261129120000+0000||ADT^{trigger}^ADT_A01|{control}|P|2.5.1\r\
         EVN|{trigger}|20261129120000+0000\r\
         PID|1||{patient}^^^&{OID}&ISO^MR||{family}^JANE^Q||19800101|F\r\
         PV1|1|I|WARD^101^A||||||||||||||||{visit}\r"
    )
}

/// Wait until the outbox holds nothing pending.
async fn drained(store: &Store, within: Duration) {
    let start = Instant::now();
    loop {
        let s = store.outbox_stats().await.unwrap_or_else(|e| panic!("{e}"));
        if s.pending == 0 {
            return;
        }
        assert!(
            start.elapsed() < within,
            "outbox still holds {} pending message(s) after {within:?}",
            s.pending
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status_counts(store: &Store) -> BTreeMap<String, i64> {
    store
        .counts()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .collect()
}

/// GET a URL and decode the JSON answer.
async fn get_json(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> Value {
    let r = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    r.json().await.unwrap_or_else(|e| panic!("{e}"))
}

/// POST (no body) to a URL and decode the JSON answer.
async fn post_json(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> Value {
    let r = client
        .post(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    r.json().await.unwrap_or_else(|e| panic!("{e}"))
}

fn q(name: &str, value: &str) -> String {
    serde_urlencoded::to_string([(name, value)]).unwrap_or_else(|e| panic!("{e}"))
}

/// Every resource id found by a search (all pages).
async fn search_ids(up: &Sekmet, query: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut v = up.get(&format!("{query}&_count=500")).await;
    loop {
        for e in v["entry"].as_array().into_iter().flatten() {
            if let Some(id) = e["resource"]["id"].as_str() {
                out.insert(id.to_string());
            }
        }
        let next = v["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str())
            .map(String::from);
        match next {
            Some(url) => {
                let rest = url
                    .strip_prefix(&format!("{}/", up.base()))
                    .unwrap_or_else(|| panic!("next link {url} is not under {}", up.base()));
                v = up.get(rest).await;
            }
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corpus_reaches_the_upstream_and_is_found_there() {
    if !sekmet::available() {
        return;
    }
    let plan = common::plan();
    let files = common::hl7_files(&gateway::root().join("tests/corpus/fhir-converter"));
    for (backend, url) in gateway::store_urls("upstream-corpus").await {
        let up = Sekmet::start(&gateway::scratch("sekmet-corpus"), "").await;
        let running = gateway::start(&upstream_config(&url, &up.base())).await;
        let mllp = running.mllp_addr.unwrap_or_else(|| panic!("no MLLP"));
        let http = gateway::http_of(&running);
        let store = running.pipeline.store().clone();
        // What the gateway converts, computed independently with the library.
        let mut patients: BTreeMap<String, Value> = BTreeMap::new();
        let mut by_subject: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        let mut converted = 0;
        let mut ack_counts = Vec::new();
        let mut client = gateway::Mllp::connect(mllp).await;
        for f in &files {
            let raw = std::fs::read(f).unwrap_or_else(|e| panic!("{e}"));
            let prepared = v2fhir::ingest::prepare(
                &raw,
                v2fhir::ingest::Source::Mllp,
                &plan,
                &v2fhir::ingest::IngestConfig::default(),
                0,
            );
            for p in &prepared {
                if p.row.status != v2fhir::store::Status::Converted {
                    continue;
                }
                converted += 1;
                for r in &p.row.resources {
                    let v: Value =
                        serde_json::from_str(&r.content).unwrap_or_else(|e| panic!("{e}"));
                    let subject = match r.resource_type.as_str() {
                        "Patient" => {
                            patients.insert(r.id.clone(), v);
                            continue;
                        }
                        "Encounter" | "Observation" => v["subject"]["reference"].as_str(),
                        "Immunization" => v["patient"]["reference"].as_str(),
                        _ => None,
                    };
                    if let Some(s) = subject {
                        by_subject
                            .entry((r.resource_type.clone(), s.to_string()))
                            .or_default()
                            .insert(r.id.clone());
                    }
                }
            }
            let n: usize = prepared.iter().map(|p| p.acks.len()).sum();
            ack_counts.push(n);
            let acks = client.send(&raw, n).await;
            assert_eq!(acks.len(), n, "{}", f.display());
        }
        assert!(
            converted > 100 && patients.len() > 20 && by_subject.len() > 20,
            "{converted} converted, {} patients, {} subjects",
            patients.len(),
            by_subject.len()
        );
        drained(&store, Duration::from_secs(120)).await;
        let counts = status_counts(&store).await;
        assert_eq!(
            counts.get("delivered").copied(),
            Some(converted),
            "{backend}: {counts:?}"
        );
        assert_eq!(counts.get("converted"), None, "{backend}: {counts:?}");
        assert_eq!(counts.get("dead"), None, "{backend}: {counts:?}");

        // Every Patient is found by each of its identifiers.
        let mut searched = 0;
        for (id, p) in &patients {
            for ident in p["identifier"].as_array().into_iter().flatten() {
                let Some(value) = ident["value"].as_str() else {
                    continue;
                };
                let token = match ident["system"].as_str() {
                    Some(s) => format!("{s}|{value}"),
                    None => value.to_string(),
                };
                let found = search_ids(&up, &format!("Patient?{}", q("identifier", &token))).await;
                assert!(
                    found.contains(id),
                    "{backend}: Patient/{id} not found by identifier {token}: {found:?}"
                );
                searched += 1;
            }
        }
        assert!(searched >= patients.len());
        // Every Encounter, Observation and Immunization is found by its subject.
        for ((ty, subject), ids) in &by_subject {
            let param = if ty == "Immunization" {
                "patient"
            } else {
                "subject"
            };
            let found = search_ids(&up, &format!("{ty}?{}", q(param, subject))).await;
            let missing: Vec<_> = ids.difference(&found).collect();
            assert!(
                missing.is_empty(),
                "{backend}: {ty} with {param}={subject} missing upstream: {missing:?}"
            );
        }

        // Replaying the whole corpus changes nothing upstream (same ids; duplicates are not resent).
        let before = up.total("Patient?_summary=count").await;
        for (f, n) in files.iter().zip(&ack_counts).take(10) {
            let raw = std::fs::read(f).unwrap_or_else(|e| panic!("{e}"));
            client.send(&raw, *n).await;
        }
        drained(&store, Duration::from_secs(60)).await;
        assert_eq!(
            up.total("Patient?_summary=count").await,
            before,
            "{backend}"
        );

        // The read proxy: the gateway's /fhir answers from the upstream, links rewritten.
        let web = gateway::http_client();
        let (pid, p) = patients
            .iter()
            .next()
            .unwrap_or_else(|| panic!("no patient"));
        let r = web
            .get(format!("http://{http}/fhir/Patient/{pid}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200, "{backend}");
        assert!(
            r.headers().get("etag").is_some(),
            "{backend}: ETag not passed back"
        );
        let got: Value = r.json().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got["id"], p["id"]);
        let page: Value = get_json(&web, format!("http://{http}/fhir/Patient?_count=5")).await;
        assert_eq!(
            page["total"].as_i64(),
            Some(patients.len() as i64),
            "{backend}: {page}"
        );
        let next = page["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str())
            .unwrap_or_else(|| panic!("{backend}: no next link in {page}"));
        assert!(
            next.starts_with(&format!("http://{http}/fhir/Patient?")),
            "{backend}: {next}"
        );
        let second: Value = get_json(&web, next).await;
        assert_eq!(
            second["entry"].as_array().map(Vec::len),
            Some(5),
            "{backend}"
        );
        // A write is not proxied as it comes: it is logged and queued like a converted message
        // (202: no local copy in this mode), then delivered through the outbox.
        let write = web
            .post(format!("http://{http}/fhir/Patient"))
            .header("content-type", "application/fhir+json")
            .body(r#"{"resourceType":"Patient","identifier":[{"system":"urn:dev","value":"w-1"}]}"#)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            write.status(),
            202,
            "{backend}: a write is queued for the upstream"
        );
        let written = write
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(written.contains("/fhir/Patient/"), "{backend}: {written}");
        let mut delivered = false;
        for _ in 0..100 {
            let r = web
                .get(&written)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            if r.status() == 200 {
                delivered = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(delivered, "{backend}: {written} never reached the upstream");
        // A path that would leave the upstream's FHIR base (with the gateway's credentials) is refused.
        let escape = web
            .get(format!("http://{http}/fhir/Patient/..%2F..%2Fauth"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(escape.status(), 400, "{backend}");

        // Health reports the upstream and the outbox. The write above can be readable upstream
        // a moment before its delivery is recorded here (deliveries are recorded in groups).
        let mut h: Value = get_json(&web, format!("http://{http}/health")).await;
        for _ in 0..100 {
            if h["upstream"]["outbox"]["pending"] == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            h = get_json(&web, format!("http://{http}/health")).await;
        }
        assert_eq!(h["upstream"]["status"], "ok", "{backend}: {h}");
        assert_eq!(h["upstream"]["outbox"]["pending"], 0, "{backend}: {h}");
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_updates_let_the_upstream_assign_ids() {
    if !sekmet::available() {
        return;
    }
    let up = Sekmet::start(&gateway::scratch("sekmet-cond"), "").await;
    for (backend, url) in gateway::store_urls("upstream-cond").await {
        let mut cfg = upstream_config(&url, &up.base());
        cfg.upstream.conditional = "Patient".into();
        let running = gateway::start(&cfg).await;
        let store = running.pipeline.store().clone();
        let mut client = gateway::mllp_of(&running).await;
        let pat = format!("C-{backend}");
        let a01 = adt(
            &format!("{backend}-1"),
            "A01",
            &pat,
            "EARLY",
            &format!("V-{backend}"),
        );
        let a08 = adt(
            &format!("{backend}-2"),
            "A08",
            &pat,
            "LATER",
            &format!("V-{backend}"),
        );
        for m in [&a01, &a08, &a08] {
            let acks = client.send(m.as_bytes(), 1).await;
            assert_eq!(gateway::msa(&acks[0]).0, "AA", "{backend}");
        }
        drained(&store, Duration::from_secs(60)).await;
        let token = q("identifier", &format!("urn:oid:{OID}|{pat}"));
        let found = up.get(&format!("Patient?{token}")).await;
        assert_eq!(
            found["total"], 1,
            "{backend}: one Patient per identifier: {found}"
        );
        let patient = &found["entry"][0]["resource"];
        assert_eq!(
            patient["name"][0]["family"], "LATER",
            "{backend}: the later message wins"
        );
        let server_id = patient["id"].as_str().unwrap_or("");
        let ours = store
            .get(1)
            .await
            .ok()
            .flatten()
            .and_then(|m| m.output)
            .unwrap_or_default();
        assert!(
            !ours.contains(server_id),
            "{backend}: the upstream assigned its own id"
        );
        let enc = up
            .get(&format!(
                "Encounter?{}",
                q("subject", &format!("Patient/{server_id}"))
            ))
            .await;
        assert_eq!(
            enc["total"], 1,
            "{backend}: the Encounter points at the upstream's Patient id: {enc}"
        );
        running.shutdown().await;
    }
}

/// A data-quality problem made upstream on purpose: two Patients with the MR number `mrn`, so
/// a conditional update on it is refused (412, multiple matches). Their ids.
async fn two_patients_upstream(web: &reqwest::Client, up: &Sekmet, mrn: &str) -> Vec<String> {
    let mut created = Vec::new();
    for _ in 0..2 {
        let body = serde_json::json!({"resourceType": "Patient",
            "identifier": [{"system": format!("urn:oid:{OID}"), "value": mrn}]});
        let r = web
            .post(format!("{}/Patient", up.base()))
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.status().is_success(), "{}", r.status());
        let v: Value = r.json().await.unwrap_or_else(|e| panic!("{e}"));
        created.push(v["id"].as_str().unwrap_or_default().to_string());
    }
    created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_message_is_dead_then_delivered_after_the_fix() {
    if !sekmet::available() {
        return;
    }
    let up = Sekmet::start(&gateway::scratch("sekmet-dead"), "").await;
    let web = gateway::http_client();
    for (backend, url) in gateway::store_urls("upstream-dead").await {
        // A data-quality problem upstream: two Patient records share one MR number, so a
        // conditional update on it is refused (412, multiple matches).
        let dup = format!("DUP-{backend}");
        let created = two_patients_upstream(&web, &up, &dup).await;
        let mut cfg = upstream_config(&url, &up.base());
        cfg.upstream.conditional = "Patient".into();
        cfg.sink.ack = "after-upstream".into();
        let running = gateway::start(&cfg).await;
        let store = running.pipeline.store().clone();
        let http = gateway::http_of(&running);
        let mut client = gateway::mllp_of(&running).await;

        // A good message: AA only once the upstream has it.
        let good = format!("OK-{backend}");
        let acks = client
            .send(
                adt(&format!("{backend}-ok"), "A01", &good, "GOOD", "V1").as_bytes(),
                1,
            )
            .await;
        assert_eq!(gateway::msa(&acks[0]).0, "AA", "{backend}: {acks:?}");
        let token = q("identifier", &format!("urn:oid:{OID}|{good}"));
        assert_eq!(
            up.total(&format!("Patient?{token}")).await,
            1,
            "{backend}: delivered before the ACK"
        );

        // The refused one: AE with the upstream's reason, parked as dead with its OperationOutcome.
        let acks = client
            .send(
                adt(&format!("{backend}-dup"), "A01", &dup, "MERGED", "V2").as_bytes(),
                1,
            )
            .await;
        assert_eq!(gateway::msa(&acks[0]).0, "AE", "{backend}: {acks:?}");
        assert!(
            acks[0].contains("ERR|") && acks[0].contains("412"),
            "{backend}: {acks:?}"
        );
        let dead: Value = get_json(&web, format!("http://{http}/messages?status=dead")).await;
        assert_eq!(dead["total"], 1, "{backend}: {dead}");
        let id = dead["items"][0]["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("{dead}"));
        let detail: Value = get_json(&web, format!("http://{http}/messages/{id}")).await;
        assert_eq!(detail["delivery"]["state"], "dead", "{backend}: {detail}");
        assert_eq!(
            detail["delivery"]["outcome"]["resourceType"], "OperationOutcome",
            "{backend}: {detail}"
        );
        assert_eq!(
            detail["delivery"]["outcome"]["issue"][0]["code"], "multiple-matches",
            "{backend}: {detail}"
        );
        assert_eq!(
            detail["ack_code"], "AE",
            "{backend}: the stored ACK is the one sent"
        );
        let metrics = web
            .get(format!("http://{http}/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default();
        assert!(
            metrics.contains("v2fhir_outbox_dead 1"),
            "{backend}: {metrics}"
        );

        // The fix upstream (the duplicate record removed), then a bulk reprocess.
        let r = web
            .delete(format!("{}/Patient/{}", up.base(), created[1]))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.status().is_success(), "{}", r.status());
        let re: Value = post_json(
            &web,
            format!("http://{http}/messages/reprocess?status=dead"),
        )
        .await;
        assert_eq!(re["reprocessed"], 1, "{backend}: {re}");
        drained(&store, Duration::from_secs(60)).await;
        let m = store
            .get(id)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no message {id}"));
        assert_eq!(m.status, v2fhir::store::Status::Delivered, "{backend}");
        let token = q("identifier", &format!("urn:oid:{OID}|{dup}"));
        let found = up.get(&format!("Patient?{token}")).await;
        assert_eq!(found["total"], 1, "{backend}: {found}");
        assert_eq!(found["entry"][0]["resource"]["id"], created[0].as_str());
        assert_eq!(
            found["entry"][0]["resource"]["name"][0]["family"], "MERGED",
            "{backend}"
        );

        // A FHIR write refused upstream under `after-upstream`: 502 with the upstream's reason,
        // not 201 (two upstream Patients share the identifier, so the conditional PUT is 412).
        let dup2 = format!("DUP2-{backend}");
        two_patients_upstream(&web, &up, &dup2).await;
        let w = web
            .post(format!("http://{http}/fhir/Patient"))
            .header("content-type", "application/fhir+json")
            .body(
                serde_json::json!({"resourceType": "Patient",
                    "identifier": [{"system": format!("urn:oid:{OID}"), "value": dup2}],
                    "gender": "other"})
                .to_string(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.status(), 502, "{backend}");
        let oo = w.text().await.unwrap_or_default();
        assert!(
            oo.contains("refused") && oo.contains("412"),
            "{backend}: {oo}"
        );
        running.shutdown().await;
    }
}

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_mode_is_accepted_and_tokens_are_refreshed() {
    if !sekmet::available() {
        return;
    }
    let dir = gateway::scratch("sekmet-auth");
    let rsa = dir.join("rsa.pem");
    let ec = dir.join("ec.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &rsa.display().to_string(),
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-out",
        &ec.display().to_string(),
    ]);
    let extra = format!(
        "server_auth:\n  types: [bearer, smart]\n  tokens: [static-t0ken]\n  token_lifetime: 2\n  smart_clients:\n\
         \x20   - {{client_id: gw-rsa, public_key_path: {rsa}, scopes: 'system/*.*'}}\n\
         \x20   - {{client_id: gw-ec, public_key_path: {ec}, scopes: 'system/*.*'}}\n\
         \x20   - {{client_id: gw-secret, client_secret: s3cret, scopes: 'system/*.*'}}\n",
        rsa = rsa.display(),
        ec = ec.display()
    );
    let up = Sekmet::start(&dir, &extra).await;
    // Without credentials the upstream refuses: the message waits (401 is not the message's fault).
    let unauth = gateway::http_client()
        .get(format!("{}/Patient", up.base()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(unauth.status(), 401);
    let url = format!(
        "sqlite://{}/v2fhir.db",
        gateway::scratch("auth-store").display()
    );
    type Setup = Box<dyn Fn(&mut Config)>;
    let modes: Vec<(&str, Setup)> = vec![
        ("none", Box::new(|_c: &mut Config| {})),
        (
            "bearer",
            Box::new(|c: &mut Config| {
                c.upstream.auth = "bearer".into();
                c.upstream.token = "static-t0ken".into();
            }),
        ),
        (
            "client-credentials",
            Box::new(|c: &mut Config| {
                c.upstream.auth = "client-credentials".into();
                c.upstream.client_id = "gw-secret".into();
                c.upstream.client_secret = "s3cret".into();
            }),
        ),
        ("smart-rs384", {
            let rsa = rsa.display().to_string();
            Box::new(move |c: &mut Config| {
                c.upstream.auth = "smart-backend".into();
                c.upstream.client_id = "gw-rsa".into();
                c.upstream.private_key = rsa.clone();
                c.upstream.alg = "RS384".into();
            })
        }),
        ("smart-es384", {
            let ec = ec.display().to_string();
            Box::new(move |c: &mut Config| {
                c.upstream.auth = "smart-backend".into();
                c.upstream.client_id = "gw-ec".into();
                c.upstream.private_key = ec.clone();
                c.upstream.alg = "ES384".into();
            })
        }),
    ];
    for (n, (mode, set)) in modes.iter().enumerate() {
        let mut cfg = upstream_config(&url, &up.base());
        set(&mut cfg);
        let running = gateway::start(&cfg).await;
        let store = running.pipeline.store().clone();
        let http = gateway::http_of(&running);
        let mut client = gateway::mllp_of(&running).await;
        let pat = format!("AUTH-{n}");
        let acks = client
            .send(
                adt(&format!("auth-{n}-1"), "A01", &pat, "ONE", "V").as_bytes(),
                1,
            )
            .await;
        assert_eq!(gateway::msa(&acks[0]).0, "AA", "{mode}");
        if *mode == "none" {
            // Retried, never dead: the fix is configuration, not the message.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let stats = store.outbox_stats().await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((stats.pending, stats.dead), (1, 0), "{mode}");
            let d = store
                .outbox_state(stats_first_pending(&store).await)
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("no outbox row"));
            assert!(
                d.attempts >= 2 && d.last_error.as_deref().unwrap_or("").contains("401"),
                "{mode}: {d:?}"
            );
            running.shutdown().await;
            continue;
        }
        drained(&store, Duration::from_secs(30)).await;
        // The token lives 2 s: a message 2.5 s later needs a fresh one.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let acks = client
            .send(
                adt(&format!("auth-{n}-2"), "A08", &pat, "TWO", "V").as_bytes(),
                1,
            )
            .await;
        assert_eq!(gateway::msa(&acks[0]).0, "AA", "{mode}");
        drained(&store, Duration::from_secs(30)).await;
        let token = q("identifier", &format!("urn:oid:{OID}|{pat}"));
        let r = gateway::http_client()
            .get(format!("{}/Patient?{token}", up.base()))
            .bearer_auth("static-t0ken")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let v: Value = r.json().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v["entry"][0]["resource"]["name"][0]["family"], "TWO",
            "{mode}: {v}"
        );
        // The read proxy signs its requests too.
        let proxied = gateway::http_client()
            .get(format!("http://{http}/fhir/Patient?{token}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(proxied.status(), 200, "{mode}");
        running.shutdown().await;
    }
    // Every token fetch is counted; with a 2 s lifetime each OAuth mode fetched more than once.
    let text = v2fhir::api::metrics_handle().render();
    let fetches: f64 = text
        .lines()
        .find(|l| l.starts_with("v2fhir_upstream_token_fetches_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!(fetches >= 6.0, "token fetches: {fetches}");
}

async fn stats_first_pending(store: &Store) -> i64 {
    // The only message of the run (ids restart per store; the auth test shares one store).
    let ids = store
        .ids_with_status(v2fhir::store::Status::Converted, 0, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    *ids.last().unwrap_or_else(|| panic!("no converted message"))
}

/// 1,000 messages (250 patients × A01 + 3 × A08) over 4 connections; the upstream stops after
/// the first quarter and comes back 30 s later.
async fn outage(backend: &str, url: &str) {
    let mut up = Sekmet::start(&gateway::scratch(&format!("sekmet-outage-{backend}")), "").await;
    let mut cfg = upstream_config(url, &up.base());
    cfg.upstream.timeout_secs = 5;
    let running = gateway::start(&cfg).await;
    let store = running.pipeline.store().clone();
    let mllp = running.mllp_addr.unwrap_or_else(|| panic!("no MLLP"));
    const PATIENTS: usize = 250;
    const FAMILIES: [&str; 4] = ["FIRST", "SECOND", "THIRD", "FINAL"];
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for conn in 0..4 {
        let acked = acked.clone();
        senders.push(tokio::spawn(async move {
            let mut client = gateway::Mllp::connect(mllp).await;
            let mut aa = 0;
            for p in (conn..PATIENTS).step_by(4) {
                for (k, family) in FAMILIES.iter().enumerate() {
                    let trigger = if k == 0 { "A01" } else { "A08" };
                    let m = adt(
                        &format!("O{p}-{k}"),
                        trigger,
                        &format!("OUT{p}"),
                        family,
                        &format!("VO{p}"),
                    );
                    let acks = client.send(m.as_bytes(), 1).await;
                    if gateway::msa(&acks[0]).0 == "AA" {
                        aa += 1;
                    }
                    acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // Pace the stream so the outage happens while it flows.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            aa
        }));
    }
    while acked.load(std::sync::atomic::Ordering::Relaxed) < PATIENTS {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    up.stop().await;
    let stopped = Instant::now();
    let mut aa = 0;
    for s in senders {
        aa += s.await.unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        aa,
        PATIENTS * 4,
        "{backend}: every message is acknowledged AA while the upstream is down"
    );
    let during = store.outbox_stats().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(during.pending > 0, "{backend}: messages wait in the outbox");
    let waited = stopped.elapsed();
    if waited < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(30) - waited).await;
    }
    up.resume().await;
    drained(&store, Duration::from_secs(180)).await;
    let counts = status_counts(&store).await;
    assert_eq!(
        counts.get("delivered").copied(),
        Some((PATIENTS * 4) as i64),
        "{backend}: {counts:?}"
    );
    // Counts upstream: every patient once, every message's MessageHeader written exactly once
    // (history counts every write), every patient's last message wins.
    assert_eq!(
        up.total("Patient?_summary=count").await,
        PATIENTS as i64,
        "{backend}"
    );
    assert_eq!(
        up.total("MessageHeader?_summary=count").await,
        (PATIENTS * 4) as i64,
        "{backend}"
    );
    assert_eq!(
        up.total("MessageHeader/_history?_count=1").await,
        (PATIENTS * 4) as i64,
        "{backend}: a message was delivered twice"
    );
    assert_eq!(
        up.total("Patient/_history?_count=1").await,
        (PATIENTS * 4) as i64,
        "{backend}: a Patient write was repeated"
    );
    assert_eq!(
        up.total("Patient?family=FINAL&_summary=count").await,
        PATIENTS as i64,
        "{backend}: per-patient order"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_loses_nothing_and_repeats_or_reorders_nothing_sqlite() {
    if !sekmet::available() {
        return;
    }
    let url = format!(
        "sqlite://{}/v2fhir.db",
        gateway::scratch("outage").display()
    );
    outage("sqlite", &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_loses_nothing_and_repeats_or_reorders_nothing_postgres() {
    if !sekmet::available() {
        return;
    }
    let Some(admin) = gateway::pg_admin_url() else {
        return;
    };
    let url = gateway::fresh_pg(&admin, "outage").await;
    outage("postgres", &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_deliver_each_message_once() {
    if !sekmet::available() {
        return;
    }
    let Some(admin) = gateway::pg_admin_url() else {
        return;
    };
    let url = gateway::fresh_pg(&admin, "replicas").await;
    let up = Sekmet::start(&gateway::scratch("sekmet-replicas"), "").await;
    let a = gateway::start(&upstream_config(&url, &up.base())).await;
    let b = gateway::start(&upstream_config(&url, &up.base())).await;
    const N: usize = 300;
    // Both replicas take messages; both delivery workers compete for the one outbox.
    let mut ca = gateway::mllp_of(&a).await;
    let mut cb = gateway::mllp_of(&b).await;
    for i in 0..N {
        let m = adt(
            &format!("R{i}"),
            "A01",
            &format!("REP{}", i % 60),
            "REPLICA",
            &format!("VR{i}"),
        );
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        let acks = c.send(m.as_bytes(), 1).await;
        assert_eq!(gateway::msa(&acks[0]).0, "AA");
    }
    let store = a.pipeline.store().clone();
    drained(&store, Duration::from_secs(120)).await;
    let counts = status_counts(&store).await;
    assert_eq!(
        counts.get("delivered").copied(),
        Some(N as i64),
        "{counts:?}"
    );
    assert_eq!(
        up.total("MessageHeader/_history?_count=1").await,
        N as i64,
        "a message was delivered twice"
    );
    assert_eq!(up.total("Patient?_summary=count").await, 60);
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_and_single_request_modes_deliver_and_attempts_run_out() {
    if !sekmet::available() {
        return;
    }
    let up = Sekmet::start(&gateway::scratch("sekmet-modes"), "").await;
    for (backend, url) in gateway::store_urls("upstream-modes").await {
        for mode in ["batch", "single"] {
            let mut cfg = upstream_config(&url, &up.base());
            cfg.upstream.bundle = mode.into();
            if mode == "single" {
                // One request per resource; the Patient conditionally, the Encounter pointing
                // at the id the upstream assigned.
                cfg.upstream.conditional = "Patient".into();
            }
            let running = gateway::start(&cfg).await;
            let store = running.pipeline.store().clone();
            let mut client = gateway::mllp_of(&running).await;
            let pat = format!("M-{backend}-{mode}");
            for (k, family) in ["ONE", "TWO"].iter().enumerate() {
                let m = adt(
                    &format!("{pat}-{k}"),
                    "A01",
                    &pat,
                    family,
                    &format!("V{pat}"),
                );
                let acks = client.send(m.as_bytes(), 1).await;
                assert_eq!(gateway::msa(&acks[0]).0, "AA", "{backend} {mode}");
            }
            drained(&store, Duration::from_secs(60)).await;
            let token = q("identifier", &format!("urn:oid:{OID}|{pat}"));
            let found = up.get(&format!("Patient?{token}")).await;
            assert_eq!(found["total"], 1, "{backend} {mode}: {found}");
            let p = &found["entry"][0]["resource"];
            assert_eq!(p["name"][0]["family"], "TWO", "{backend} {mode}");
            let pid = p["id"].as_str().unwrap_or_default();
            let enc = up
                .get(&format!(
                    "Encounter?{}",
                    q("subject", &format!("Patient/{pid}"))
                ))
                .await;
            assert_eq!(enc["total"], 1, "{backend} {mode}: {enc}");
            running.shutdown().await;
        }
        // An upstream that never accepts (nothing listens there): after max_attempts the message
        // is parked as dead with the last error, not retried forever.
        let mut cfg = upstream_config(
            &url,
            &format!("http://127.0.0.1:{}/fhir", sekmet::free_port()),
        );
        cfg.upstream.max_attempts = 3;
        let running = gateway::start(&cfg).await;
        let store = running.pipeline.store().clone();
        let mut client = gateway::mllp_of(&running).await;
        let acks = client
            .send(
                adt(&format!("{backend}-gone"), "A01", "GONE", "X", "VG").as_bytes(),
                1,
            )
            .await;
        assert_eq!(gateway::msa(&acks[0]).0, "AA", "{backend}");
        let start = Instant::now();
        let id = loop {
            let dead = store
                .ids_with_status(v2fhir::store::Status::Dead, 0, 10)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            if let Some(id) = dead.first() {
                break *id;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{backend}: never parked"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let d = store
            .outbox_state(id)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no outbox row"));
        assert_eq!(
            (d.state.as_str(), d.attempts),
            ("dead", 3),
            "{backend}: {d:?}"
        );
        assert!(
            d.last_error
                .as_deref()
                .unwrap_or("")
                .contains("gave up after 3 attempts"),
            "{backend}: {d:?}"
        );
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_received_before_forwarding_was_on_are_backfilled() {
    if !sekmet::available() {
        return;
    }
    let up = Sekmet::start(&gateway::scratch("sekmet-backfill"), "").await;
    let web = gateway::http_client();
    for (backend, url) in gateway::store_urls("upstream-backfill").await {
        // First the gateway runs without an upstream.
        let local = gateway::start(&gateway::config(&url)).await;
        let mut client = gateway::mllp_of(&local).await;
        for i in 0..3 {
            let m = adt(
                &format!("{backend}-bf{i}"),
                "A01",
                &format!("BF{backend}{i}"),
                "EARLY",
                "V",
            );
            assert_eq!(gateway::msa(&client.send(m.as_bytes(), 1).await[0]).0, "AA");
        }
        drop(client);
        local.shutdown().await;
        // Then with one: nothing is queued for what arrived before, until a backfill.
        let running = gateway::start(&{
            let mut c = upstream_config(&url, &up.base());
            c.sink.mode = "both".into();
            c
        })
        .await;
        let http = gateway::http_of(&running);
        let store = running.pipeline.store().clone();
        let stats = store.outbox_stats().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stats.pending, 0, "{backend}");
        // `next` is relative (no http.base_url configured).
        let mut next = Some("/messages/reprocess?status=converted&limit=2".to_string());
        let mut pages = 0;
        let mut total = 0;
        while let Some(path) = next {
            let page: Value = post_json(&web, format!("http://{http}{path}")).await;
            total += page["reprocessed"].as_i64().unwrap_or(0);
            pages += 1;
            assert!(pages < 5, "{backend}: paging does not end: {page}");
            next = page["next"].as_str().map(String::from);
        }
        assert_eq!(pages, 2, "{backend}: 2 + 1 messages, 2 per page");
        assert_eq!(total, 3, "{backend}");
        drained(&store, Duration::from_secs(60)).await;
        for i in 0..3 {
            let token = q("identifier", &format!("urn:oid:{OID}|BF{backend}{i}"));
            assert_eq!(
                up.total(&format!("Patient?{token}")).await,
                1,
                "{backend}: patient {i}"
            );
        }
        let counts = status_counts(&store).await;
        assert_eq!(
            counts.get("delivered").copied(),
            Some(3),
            "{backend}: {counts:?}"
        );
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_an_old_message_keeps_the_patients_latest_data_upstream() {
    if !sekmet::available() {
        return;
    }
    let web = gateway::http_client();
    for (backend, url) in gateway::store_urls("upstream-replay").await {
        let mut up = Sekmet::start(&gateway::scratch("sekmet-replay"), "").await;
        let mut cfg = upstream_config(&url, &up.base());
        cfg.upstream.max_attempts = 1;
        let running = gateway::start(&cfg).await;
        let store = running.pipeline.store().clone();
        let http = gateway::http_of(&running);
        let mut client = gateway::mllp_of(&running).await;
        let pat = format!("RP-{backend}");
        // The A01 meets a stopped upstream and, with one attempt allowed, is parked as dead.
        up.stop().await;
        let a01 = adt(&format!("{backend}-r1"), "A01", &pat, "OLDER", "VR");
        assert_eq!(
            gateway::msa(&client.send(a01.as_bytes(), 1).await[0]).0,
            "AA"
        );
        let start = Instant::now();
        let dead = loop {
            let ids = store
                .ids_with_status(v2fhir::store::Status::Dead, 0, 10)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            if let Some(id) = ids.first() {
                break *id;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{backend}: never parked"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // The upstream is back; the A08 (a dead message does not hold its patient) is delivered.
        up.resume().await;
        let a08 = adt(&format!("{backend}-r2"), "A08", &pat, "NEWER", "VR");
        assert_eq!(
            gateway::msa(&client.send(a08.as_bytes(), 1).await[0]).0,
            "AA"
        );
        drained(&store, Duration::from_secs(60)).await;
        let token = q("identifier", &format!("urn:oid:{OID}|{pat}"));
        let found = up.get(&format!("Patient?{token}")).await;
        assert_eq!(
            found["entry"][0]["resource"]["name"][0]["family"], "NEWER",
            "{backend}"
        );
        // Replaying the A01 sends it, then the A08 again: the upstream ends with the A08's data.
        let re = post_json(&web, format!("http://{http}/messages/{dead}/reprocess")).await;
        let later = re["requeued_later"].as_array().map(Vec::len);
        assert_eq!(later, Some(1), "{backend}: {re}");
        drained(&store, Duration::from_secs(60)).await;
        let found = up.get(&format!("Patient?{token}")).await;
        assert_eq!(
            found["entry"][0]["resource"]["name"][0]["family"], "NEWER",
            "{backend}: {found}"
        );
        let pid = found["entry"][0]["resource"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        // Written three times upstream: A08, then A01, then A08 again.
        assert_eq!(
            up.total(&format!("Patient/{pid}/_history?_count=1")).await,
            3,
            "{backend}"
        );
        let counts = status_counts(&store).await;
        assert_eq!(
            counts.get("delivered").copied(),
            Some(2),
            "{backend}: {counts:?}"
        );
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_after_upstream_sees_a_delivery_by_another_replica() {
    if !sekmet::available() {
        return;
    }
    let Some(admin) = gateway::pg_admin_url() else {
        return;
    };
    let url = gateway::fresh_pg(&admin, "syncreplica").await;
    let up = Sekmet::start(&gateway::scratch("sekmet-syncreplica"), "").await;
    // Replica A takes the message and waits for the upstream, but its own worker cannot reach
    // it (a closed port); replica B's worker can, and delivers the message from the shared outbox.
    let mut a_cfg = upstream_config(
        &url,
        &format!("http://127.0.0.1:{}/fhir", sekmet::free_port()),
    );
    a_cfg.sink.ack = "after-upstream".into();
    a_cfg.sink.ack_timeout_secs = 30;
    a_cfg.upstream.backoff_max_secs = 1;
    let a = gateway::start(&a_cfg).await;
    let b = gateway::start(&upstream_config(&url, &up.base())).await;
    let mut client = gateway::mllp_of(&a).await;
    let m = adt("sync-replica-1", "A01", "SYNCREP", "SHARED", "VS");
    let started = Instant::now();
    let acks = client.send(m.as_bytes(), 1).await;
    assert_eq!(gateway::msa(&acks[0]).0, "AA", "{acks:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "answered by the timeout, not by the delivery"
    );
    let token = q("identifier", &format!("urn:oid:{OID}|SYNCREP"));
    assert_eq!(up.total(&format!("Patient?{token}")).await, 1);
    b.shutdown().await;
    a.shutdown().await;
}
