//! The message store, on SQLite and on PostgreSQL (same tests, same code path).

mod gateway;

use v2fhir::store::{Durability, MessageFilter, NewMessage, Status, Store};

fn row(control: &str, raw: &[u8], status: Status, ty: &str, at: i64) -> NewMessage {
    NewMessage {
        received_at: at,
        source: "mllp".into(),
        sending_application: "LAB".into(),
        sending_facility: "HOSP".into(),
        control_id: control.into(),
        message_type: ty.into(),
        charset: "UTF-8".into(),
        content_hash: v2fhir::ingest::content_hash(raw),
        status,
        ack_code: "AA".into(),
        raw: raw.to_vec(),
        diagnostics: None,
        output: Some("{\"resourceType\":\"Bundle\"}".into()),
        output_packed: None,
        ack: format!("MSH|...\rMSA|AA|{control}\r"),
        resources: Vec::new(),
    }
}

async fn each_store(name: &str, f: impl AsyncFn(&str, Store)) {
    for (backend, url) in gateway::store_urls(name).await {
        let store = Store::open(&url, Durability::PowerLoss)
            .await
            .unwrap_or_else(|e| panic!("{backend}: open: {e}"));
        f(backend, store.clone()).await;
        store.close().await;
    }
}

/// The Bundle is kept LZ4-packed (`output_z`) whether the pipeline packed it or the store did;
/// reads give the text back. Rows from before the packed column (text in `output`) read as
/// before, and a reprocessed message's new output is packed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_kept_packed_and_older_text_rows_still_read() {
    use sqlx::Row;
    for (backend, url) in gateway::store_urls("packed").await {
        let store = Store::open(&url, Durability::PowerLoss)
            .await
            .unwrap_or_else(|e| panic!("{backend}: open: {e}"));
        let entries: Vec<String> = (0..60)
            .map(|i| format!(r#"{{"fullUrl":"urn:uuid:{i}","request":{{"method":"PUT","url":"Patient/{i}"}}}}"#))
            .collect();
        let bundle = format!(
            r#"{{"resourceType":"Bundle","type":"transaction","entry":[{}]}}"#,
            entries.join(",")
        );
        let mut by_store = row("P1", b"MSH|1", Status::Converted, "ADT^A01", 1);
        by_store.output = Some(bundle.clone());
        let mut by_lane = row("P2", b"MSH|2", Status::Converted, "ADT^A01", 2);
        by_lane.output = Some(bundle.clone());
        by_lane.output_packed = v2fhir::store::packed::pack(&bundle);
        let c = store
            .commit(&[by_store, by_lane])
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let pool = sqlx::AnyPool::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{backend}: connect: {e}"));
        for done in &c {
            let m = store.get(done.id).await.ok().flatten();
            assert_eq!(
                m.and_then(|m| m.output).as_deref(),
                Some(bundle.as_str()),
                "{backend}"
            );
            let r = sqlx::query(
                "SELECT CASE WHEN output IS NULL THEN 1 ELSE 0 END, length(output_z) FROM messages WHERE id = $1",
            )
            .bind(done.id)
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
            let (text_null, packed_len): (i32, i64) = (
                r.try_get::<i32, _>(0).unwrap_or_else(|e| panic!("{e}")),
                r.try_get::<i64, _>(1).unwrap_or_else(|e| panic!("{e}")),
            );
            assert_eq!(text_null, 1, "{backend}: no text copy");
            assert!(
                (packed_len as usize) * 5 < bundle.len(),
                "{backend}: {packed_len} bytes packed for {}",
                bundle.len()
            );
        }
        // A row as written before output_z existed.
        sqlx::query("UPDATE messages SET output = $1, output_z = NULL WHERE id = $2")
            .bind("{\"resourceType\":\"Bundle\",\"id\":\"old\"}")
            .bind(c[0].id)
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let old = store.get(c[0].id).await.ok().flatten();
        assert_eq!(
            old.and_then(|m| m.output).as_deref(),
            Some("{\"resourceType\":\"Bundle\",\"id\":\"old\"}"),
            "{backend}"
        );
        // Reprocessed: the new output replaces the old text, packed.
        store
            .update_outcome(c[0].id, Status::Converted, Some(&bundle), None, &[])
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let r = sqlx::query(
            "SELECT CASE WHEN output IS NULL THEN 1 ELSE 0 END FROM messages WHERE id = $1",
        )
        .bind(c[0].id)
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(
            r.try_get::<i32, _>(0).unwrap_or_else(|e| panic!("{e}")),
            1,
            "{backend}"
        );
        let again = store.get(c[0].id).await.ok().flatten();
        assert_eq!(
            again.and_then(|m| m.output).as_deref(),
            Some(bundle.as_str()),
            "{backend}"
        );
        pool.close().await;
        store.close().await;
    }
}

/// `store.wal_buffer = false` opens the SQLite writer on SQLite's own VFS: commits work and the
/// WAL shim sees none of their writes; with the default the shim takes them. (cargo nextest runs
/// each test in a process of its own, so the shim's counters are this test's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_shim_can_be_turned_off() {
    let commit = async |on: bool| {
        v2fhir::store::set_wal_buffer(on);
        let db = gateway::scratch("walbuf-switch").join("v2fhir.db");
        let store = Store::open(&format!("sqlite://{}", db.display()), Durability::PowerLoss)
            .await
            .unwrap_or_else(|e| panic!("open: {e}"));
        let before = v2fhir_walbuf::stats().writes;
        let c = store
            .commit(&[row("S1", b"MSH|1", Status::Converted, "ADT^A01", 1)])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c[0].status, Status::Converted);
        let got = store.get(c[0].id).await.ok().flatten();
        assert!(got.is_some_and(|m| m.raw == b"MSH|1"));
        store.close().await;
        v2fhir_walbuf::stats().writes - before
    };
    assert_eq!(commit(false).await, 0, "off: nothing went through the shim");
    assert!(
        commit(true).await > 0,
        "on: the commit's WAL frames went through the shim"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bytes_round_trip_exactly() {
    each_store("roundtrip", async |backend, store| {
        // Not UTF-8 on purpose: the log keeps bytes as received.
        let raw: Vec<u8> =
            b"MSH|^~\\&|LAB|HOSP|||20260101||ORU^R01|C1|P|2.5\rPID|1||\xe9\xff\x00x\r".to_vec();
        let c = store
            .commit(&[row("C1", &raw, Status::Converted, "ORU^R01", 1_000)])
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, Status::Converted);
        let m = store
            .get(c[0].id)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("{backend}: row missing"));
        assert_eq!(m.raw, raw, "{backend}");
        assert_eq!(m.control_id, "C1");
        assert_eq!(m.status, Status::Converted);
        assert_eq!(m.ack.as_deref(), Some("MSH|...\rMSA|AA|C1\r"));
        assert!(store.get(c[0].id + 1000).await.ok().flatten().is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_collisions() {
    each_store("dupes", async |backend, store| {
        let a = b"MSH|^~\\&|LAB|HOSP|||2026||ADT^A08|X1|P|2.5\rPID|1||A\r";
        let b = b"MSH|^~\\&|LAB|HOSP|||2026||ADT^A08|X1|P|2.5\rPID|1||B\r";
        let first = store
            .commit(&[row("X1", a, Status::Converted, "ADT^A08", 1)])
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        // Same content again, in a batch with a collision (same id, other content) and its repeat.
        let mut again = row("X1", a, Status::Converted, "ADT^A08", 2);
        again.ack = "a different ack that must not be sent".into();
        let got = store
            .commit(&[
                again,
                row("X1", b, Status::Converted, "ADT^A08", 3),
                row("X1", b, Status::Converted, "ADT^A08", 4),
            ])
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(got[0].status, Status::Duplicate, "{backend}");
        assert_eq!(got[0].duplicate_of, Some(first[0].id));
        assert_eq!(
            got[0].ack, first[0].ack,
            "a duplicate gets the ACK already sent"
        );
        assert_eq!(got[1].status, Status::Converted);
        assert!(
            got[1].collision,
            "{backend}: same control id, other content"
        );
        assert_eq!(got[2].status, Status::Duplicate);
        assert_eq!(got[2].duplicate_of, Some(got[1].id));
        let page = store
            .list(&MessageFilter {
                status: Some(Status::Duplicate),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(page.total, 2);
        // A duplicate row stores no output of its own.
        let d = store.get(got[0].id).await.ok().flatten();
        assert!(d.is_some_and(|d| d.output.is_none()));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_total_and_pages() {
    each_store("list", async |backend, store| {
        let mut rows = Vec::new();
        for i in 0..25 {
            let (status, ty) = match i % 3 {
                0 => (Status::Converted, "ADT^A01"),
                1 => (Status::Error, "ORU^R01"),
                _ => (Status::Rejected, "ADT^A08"),
            };
            let raw = format!("MSH|^~\\&|LAB|HOSP|||2026||{ty}|N{i}|P|2.5\r");
            rows.push(row(&format!("N{i}"), raw.as_bytes(), status, ty, 1_000 + i));
        }
        store
            .commit(&rows)
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let all = store
            .list(&MessageFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(all.total, 25);
        assert_eq!(all.items.len(), 10);
        assert!(
            all.items.windows(2).all(|w| w[0].id > w[1].id),
            "newest first"
        );
        // Follow the cursor to the end: every row exactly once.
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let p = store
                .list(&MessageFilter {
                    limit: 10,
                    before_id: before,
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("{backend}: {e}"));
            assert_eq!(p.total, 25, "total counts all matches, not the page");
            seen.extend(p.items.iter().map(|m| m.control_id.clone()));
            match p.next_before {
                Some(b) => before = Some(b),
                None => break,
            }
        }
        assert_eq!(seen.len(), 25);
        let adt = store
            .list(&MessageFilter {
                message_type: Some("ADT".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(adt.total, 17, "ADT^A01 (9) + ADT^A08 (8)");
        let err = store
            .list(&MessageFilter {
                status: Some(Status::Error),
                message_type: Some("ORU^R01".into()),
                since: Some(1_010),
                until: Some(1_020),
                sender: Some("HOSP".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        // i in 10..20 with i % 3 == 1: 10, 13, 16, 19.
        assert_eq!(err.total, 4, "{backend}");
        assert!(err.items.iter().all(|m| m.status == Status::Error));
        let nobody = store
            .list(&MessageFilter {
                sender: Some("OTHER".into()),
                limit: 5,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!((nobody.total, nobody.items.len()), (0, 0));
        // LIKE metacharacters are data, not patterns.
        let pct = store
            .list(&MessageFilter {
                message_type: Some("%".into()),
                limit: 5,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(pct.total, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_and_migrations_are_idempotent() {
    for (backend, url) in gateway::store_urls("reopen").await {
        let s = Store::open(&url, Durability::PowerLoss)
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let c = s
            .commit(&[row("R1", b"MSH|x", Status::Error, "ADT^A01", 5)])
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        s.close().await;
        let s = Store::open(&url, Durability::ProcessCrash)
            .await
            .unwrap_or_else(|e| panic!("{backend}: reopen: {e}"));
        assert!(
            s.update_outcome(c[0].id, Status::Converted, Some("{}"), None, &[])
                .await
                .ok()
                .flatten()
                .is_some()
        );
        let m = s.get(c[0].id).await.ok().flatten();
        assert!(
            m.is_some_and(|m| m.status == Status::Converted && m.output.as_deref() == Some("{}"))
        );
        assert_eq!(
            s.counts().await.unwrap_or_default(),
            vec![("converted".to_string(), 1)]
        );
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_are_refused_with_a_reason() {
    let e = Store::open("mysql://x", Durability::PowerLoss).await;
    assert!(e.is_err_and(|e| e.to_string().contains("unsupported database URL")));
}

fn patient(id: &str, family: &str) -> v2fhir::store::NewResource {
    let v = serde_json::json!({"resourceType": "Patient", "id": id,
        "identifier": [{"system": "urn:mrn", "value": id}], "name": [{"family": family}]});
    v2fhir::store::NewResource::from_json(&v).unwrap_or_else(|| panic!("resource"))
}

fn with(control: &str, resources: Vec<v2fhir::store::NewResource>) -> NewMessage {
    let mut m = row(control, control.as_bytes(), Status::Converted, "ADT^A08", 1);
    m.resources = resources;
    m
}

/// Versions are made in message order, also within one group commit; unchanged content makes no
/// version; a delete of an unknown resource does nothing; the index follows the current version;
/// messages that are not converted, and duplicates, write no resources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_versions_follow_message_order() {
    use v2fhir::fhir::search::query;
    each_store("resources", async |backend, store| {
        let pairs = |s: &[(&str, &str)]| -> Vec<(String, String)> {
            s.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let ids_for = async |param: &str, value: &str| -> Vec<String> {
            let q = query::parse("Patient", &pairs(&[(param, value)]), true)
                .unwrap_or_else(|e| panic!("{e}"));
            let page = store
                .search(&q, true)
                .await
                .unwrap_or_else(|e| panic!("{backend}: {e}"));
            page.matches.iter().map(|r| r.id.clone()).collect()
        };
        let family = async |name: &str| ids_for("family:exact", name).await;
        let by_identifier =
            async |value: &str| ids_for("identifier", &format!("urn:mrn|{value}")).await;
        // One group commit: p1 created, changed, unchanged; p2 created; unknown deleted.
        store
            .commit(&[
                with("M1", vec![patient("p1", "Alpha")]),
                with("M2", vec![patient("p1", "Beta"), patient("p2", "Gamma")]),
                with("M3", vec![patient("p1", "Beta")]),
                with(
                    "M4",
                    vec![v2fhir::store::NewResource::delete("Patient", "nobody")],
                ),
            ])
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let p1 = store.read_resource("Patient", "p1").await.ok().flatten();
        let p1 = p1.unwrap_or_else(|| panic!("{backend}: p1 missing"));
        assert_eq!(
            p1.version, 2,
            "{backend}: created, changed once, then unchanged"
        );
        assert!(p1.content.contains("Beta"));
        let v1 = store
            .vread_resource("Patient", "p1", 1)
            .await
            .ok()
            .flatten();
        assert!(v1.is_some_and(|v| v.content.contains("Alpha")), "{backend}");
        assert!(
            store
                .read_resource("Patient", "nobody")
                .await
                .ok()
                .flatten()
                .is_none()
        );
        assert_eq!(
            family("Beta").await,
            vec!["p1".to_string()],
            "{backend}: index follows"
        );
        assert!(
            family("Alpha").await.is_empty(),
            "{backend}: old index rows removed"
        );
        assert_eq!(
            by_identifier("p1").await,
            vec!["p1".to_string()],
            "{backend}: index rows the new version shares with the old one are kept"
        );
        let h = store
            .history(Some("Patient"), Some("p1"), None, 10, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            h.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![2, 1]
        );
        // A rejected message and a duplicate write nothing.
        let mut rejected = with("M5", vec![patient("p3", "Delta")]);
        rejected.status = Status::Error;
        store
            .commit(&[rejected, with("M1", vec![patient("p1", "Epsilon")])])
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert!(
            store
                .read_resource("Patient", "p3")
                .await
                .ok()
                .flatten()
                .is_none()
        );
        let p1 = store.read_resource("Patient", "p1").await.ok().flatten();
        assert_eq!(
            p1.map(|p| p.version),
            Some(2),
            "{backend}: the duplicate M1 changed p1"
        );
        // Delete, then recreate: versions go on.
        store
            .commit(&[
                with(
                    "M6",
                    vec![v2fhir::store::NewResource::delete("Patient", "p2")],
                ),
                with("M7", vec![patient("p2", "Zeta")]),
            ])
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let p2 = store.read_resource("Patient", "p2").await.ok().flatten();
        assert!(
            p2.is_some_and(|p| p.version == 3 && !p.deleted),
            "{backend}"
        );
        let v2 = store
            .vread_resource("Patient", "p2", 2)
            .await
            .ok()
            .flatten();
        assert!(v2.is_some_and(|v| v.deleted), "{backend}");
        assert_eq!(family("Zeta").await, vec!["p2".to_string()]);
        assert!(family("Gamma").await.is_empty());
        assert_eq!(
            by_identifier("p2").await,
            vec!["p2".to_string()],
            "{backend}"
        );
    })
    .await;
}

/// A new version replaces exactly the index rows that changed, in every index table (token,
/// string, date, reference, quantity): searches by the old values find nothing, by the new
/// values and by the unchanged ones the resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_replaces_the_changed_rows_of_every_index_table() {
    use v2fhir::fhir::search::query;
    let obs = |code: &str, subject: &str, date: &str, value: f64, unit: &str| {
        let v = serde_json::json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": subject}, "effectiveDateTime": date,
            "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": unit}});
        v2fhir::store::NewResource::from_json(&v).unwrap_or_else(|| panic!("resource"))
    };
    each_store("reindex", async |backend, store| {
        let found = async |params: &[(&str, &str)]| -> usize {
            let params: Vec<(String, String)> = params
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            let q = query::parse("Observation", &params, true).unwrap_or_else(|e| panic!("{e}"));
            let page = store
                .search(&q, true)
                .await
                .unwrap_or_else(|e| panic!("{backend}: {e}"));
            page.matches.len()
        };
        let commit = async |control: &str, o: v2fhir::store::NewResource| {
            store
                .commit(&[with(control, vec![o])])
                .await
                .unwrap_or_else(|e| panic!("{backend}: {e}"));
        };
        commit("R1", obs("8867-4", "Patient/a", "2024-01-02", 60.0, "/min")).await;
        assert_eq!(found(&[("code", "8867-4")]).await, 1, "{backend}");
        // Code, subject, date and value change; the status stays.
        commit("R2", obs("8310-5", "Patient/b", "2025-03-04", 37.5, "Cel")).await;
        let old: [(&str, &str); 4] = [
            ("code", "8867-4"),
            ("subject", "Patient/a"),
            ("date", "2024-01-02"),
            ("value-quantity", "60"),
        ];
        for p in old {
            assert_eq!(found(&[p]).await, 0, "{backend}: {p:?} still indexed");
        }
        let new: [(&str, &str); 5] = [
            ("code", "8310-5"),
            ("subject", "Patient/b"),
            ("date", "2025-03-04"),
            ("value-quantity", "37.5"),
            ("status", "final"),
        ];
        for p in new {
            assert_eq!(found(&[p]).await, 1, "{backend}: {p:?} not indexed");
        }
    })
    .await;
}

/// A converted message with a Patient (so it gets an outbox row keyed by that patient).
fn for_patient(control: &str, patient: &str) -> NewMessage {
    let mut m = row(control, control.as_bytes(), Status::Converted, "ADT^A08", 1);
    m.resources = v2fhir::store::NewResource::from_json(&serde_json::json!({
        "resourceType": "Patient", "id": patient, "name": [{"family": control}]}))
    .into_iter()
    .collect();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_hands_out_one_message_per_patient_in_order_under_a_lease() {
    use v2fhir::store::Sinks;
    each_store("outbox", async |backend, store| {
        let store = store.with_sinks(Sinks {
            local: true,
            upstream: true,
        });
        let done = store
            .commit(&[
                for_patient("A1", "pa"),
                for_patient("B1", "pb"),
                for_patient("A2", "pa"),
                for_patient("A3", "pa"),
            ])
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let id = |c: &str| {
            done.iter()
                .zip(["A1", "B1", "A2", "A3"])
                .find(|(_, k)| *k == c)
                .map(|(d, _)| d.id)
                .unwrap_or_else(|| panic!("{c}"))
        };
        let far = v2fhir::store::now_micros() + 60_000_000;
        let claim = async |owner: &str| -> Vec<i64> {
            store
                .outbox_claim(owner, 10, far)
                .await
                .unwrap_or_else(|e| panic!("{backend}: {e}"))
                .iter()
                .map(|c| c.message_id)
                .collect()
        };
        // Only the oldest message of each patient; the output travels with the claim.
        let first = store
            .outbox_claim("w1", 10, far)
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let ids: Vec<i64> = first.iter().map(|c| c.message_id).collect();
        assert_eq!(ids, vec![id("A1"), id("B1")], "{backend}");
        assert!(
            first
                .iter()
                .all(|c| c.output.as_deref() == Some("{\"resourceType\":\"Bundle\"}")),
            "{backend}"
        );
        // Held by w1: another worker gets nothing (A2 waits behind A1).
        assert_eq!(claim("w2").await, Vec::<i64>::new(), "{backend}");
        // A1 retried later: A2 still waits behind it.
        store
            .outbox_retry(id("A1"), "w1", 1, far, "upstream answered 503")
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(claim("w2").await, Vec::<i64>::new(), "{backend}");
        // Only the lease holder records a result.
        assert!(
            !store.outbox_delivered(id("B1"), "w2").await.unwrap_or(true),
            "{backend}: w2 does not hold B1"
        );
        assert!(
            store
                .outbox_delivered(id("B1"), "w1")
                .await
                .unwrap_or(false),
            "{backend}"
        );
        // A1 is scheduled a minute ahead: nothing is due.
        let re = store
            .outbox_claim("w1", 10, far)
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert!(re.is_empty(), "{backend}: A1 is not due yet");
        // Reprocessing re-arms A1 (due now); then parked as dead, A2 is next for patient pa.
        store
            .outbox_release_all()
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        due_now(&store, id("A1")).await;
        let a1 = claim("w3").await;
        assert_eq!(a1, vec![id("A1")], "{backend}: due again, released");
        store
            .outbox_dead(id("A1"), "w3", 2, "upstream answered 422", Some("{}"))
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(
            claim("w3").await,
            vec![id("A2")],
            "{backend}: a dead message does not hold its patient"
        );
        let stats = store.outbox_stats().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((stats.pending, stats.dead), (2, 1), "{backend}");
        let status = async |control: &str| store.status_of(id(control)).await.ok().flatten();
        assert_eq!(status("B1").await, Some(Status::Delivered), "{backend}");
        assert_eq!(status("A1").await, Some(Status::Dead), "{backend}");
    })
    .await;
}

/// Make a rescheduled outbox row due now (the retry above scheduled it a minute ahead).
async fn due_now(store: &Store, id: i64) {
    // Through the public API: a reprocess re-arms the row (state pending, due now).
    store
        .update_outcome(
            id,
            Status::Converted,
            Some("{\"resourceType\":\"Bundle\"}"),
            None,
            &v2fhir::store::NewResource::from_json(&serde_json::json!({
                "resourceType": "Patient", "id": "pa", "name": [{"family": "A1"}]}))
            .into_iter()
            .collect::<Vec<_>>(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The WAL starts over under constant writes (SQLite): once the checkpointer asks (here the test
/// asks), the writer copies what is left of the WAL between two groups, and its next transaction
/// starts the WAL from the beginning (a new header salt). Without the writer's part, the WAL only
/// started over when a commit happened to find it completely copied by the background checkpoint
/// (checked: this test then fails, and with constant load the file grew to 15.8 MB in 600 commits
/// where it now stays under 3 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_over_under_constant_writes() {
    let dir = gateway::scratch("wal-restart");
    let db = dir.join("wal.db");
    let store = Store::open(
        &format!("sqlite://{}", db.display()),
        Durability::ProcessCrash,
    )
    .await
    .unwrap_or_else(|e| panic!("open: {e}"));
    // Salt-1 of the WAL header changes each time the WAL starts over.
    let salt = || {
        std::fs::read(dir.join("wal.db-wal"))
            .ok()
            .and_then(|b| b.get(16..20).map(<[u8]>::to_vec))
    };
    let output = format!("{{\"pad\":\"{}\"}}", "x".repeat(20_000));
    let mut n = 0;
    let mut commit = || {
        let raw = format!("MSH|{n}");
        let mut r = row(
            &format!("W{n}"),
            raw.as_bytes(),
            Status::Converted,
            "ADT^A01",
            n,
        );
        r.output = Some(output.clone());
        let c = store
            .lite_group(|g| g.add(&[&r]))
            .unwrap_or_else(|| panic!("not SQLite"))
            .unwrap_or_else(|e| panic!("commit {n}: {e}"));
        assert_eq!(c[0].status, Status::Converted);
        n += 1;
    };
    for round in 0..10 {
        for _ in 0..30 {
            commit();
        }
        store.request_wal_restart();
        // The writer catches up (busy while the background checkpoint runs: it tries again), and
        // the next commit starts the WAL over, unless the background checkpoint holds a WAL lock
        // at that instant (seen in loaded test runs, twice): then the writer catches up again,
        // as it does in the gateway, up to three times.
        let before = salt();
        let mut restarted = false;
        for _ in 0..3 {
            let asked = std::time::Instant::now();
            while !store.catch_up_wal() {
                assert!(
                    asked.elapsed().as_secs() < 10,
                    "round {round}: never caught up"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            commit();
            if salt() != before {
                restarted = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            restarted,
            "round {round}: the WAL did not start over in 3 catch-ups and commits"
        );
    }
    let all = store
        .list(&MessageFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    assert_eq!(all.total, n);
    store.close().await;
}

/// The forwarding queue, per destination: a message goes to each destination whose filter takes
/// it; claims take from the head of one destination's queue only; a forwarder starting up
/// releases the stale leases of its own destination, never those another destination's
/// forwarder holds (its answers would be lost and the messages sent twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarding_queue_keeps_destinations_apart() {
    use v2fhir::store::{Answered, ForwardFilter};
    each_store("forward-queue", async |backend, store| {
        let adt_only = ForwardFilter {
            types: vec!["ADT^*".into()],
            ..ForwardFilter::default()
        };
        let store = store.with_forward(vec![
            ("default".into(), adt_only),
            ("lab".into(), ForwardFilter::default()),
        ]);
        let done = store
            .commit(&[
                row("Q1", b"MSH|1", Status::Converted, "ADT^A01", 1),
                row("Q2", b"MSH|2", Status::Converted, "ORU^R01", 2),
                row("Q3", b"MSH|3", Status::Converted, "ADT^A08", 3),
            ])
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let ids: Vec<i64> = done.iter().map(|c| c.id).collect();
        let far = v2fhir::store::now_micros() + 60_000_000;
        let claim = async |destination: &str, owner: &str| -> Vec<i64> {
            store
                .forward_claim(destination, owner, far, 64)
                .await
                .unwrap_or_else(|e| panic!("{backend}: {e}"))
                .iter()
                .map(|c| c.message_id)
                .collect()
        };
        assert_eq!(
            claim("default", "fw-default").await,
            vec![ids[0], ids[2]],
            "{backend}"
        );
        // Held: nothing more for anyone at that destination.
        assert!(claim("default", "other").await.is_empty(), "{backend}");
        // The lab forwarder starts: it must not release the default forwarder's leases.
        store
            .forward_release_all("lab")
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(claim("lab", "fw-lab").await, ids, "{backend}: every type");
        let answered = |id: i64| Answered {
            message_id: id,
            sent: true,
            ack: Some("MSA|AA".into()),
            error: None,
            payload: None,
        };
        let n = store
            .forward_answered("fw-default", &[answered(ids[0]), answered(ids[2])], &[], 0)
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(
            n, 2,
            "{backend}: the default forwarder's answers are recorded"
        );
        let states = store
            .forward_state(ids[0])
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let by_destination: Vec<(String, String)> = states
            .into_iter()
            .map(|s| (s.destination, s.state))
            .collect();
        assert_eq!(
            by_destination,
            vec![
                ("default".to_string(), "sent".to_string()),
                ("lab".to_string(), "pending".to_string())
            ],
            "{backend}"
        );
    })
    .await;
}
