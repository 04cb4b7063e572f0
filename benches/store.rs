//! Store commit throughput: rows shaped like a converted ADT^A01 (raw ~1.4 KB, Bundle JSON
//! ~15 KB), in group commits of 1, 8 and 64, on SQLite with both durability settings.
//! `cargo bench --bench store`

use std::time::Instant;
use v2fhir::store::{Durability, NewMessage, Status, Store};

fn row(n: usize, raw: &[u8], output: &str) -> NewMessage {
    NewMessage {
        received_at: n as i64,
        source: "mllp".into(),
        sending_application: "ADT1".into(),
        sending_facility: "HOSP".into(),
        control_id: format!("B{n}"),
        message_type: "ADT^A01".into(),
        charset: "UTF-8".into(),
        content_hash: v2fhir::ingest::content_hash(format!("{n}").as_bytes()),
        status: Status::Converted,
        ack_code: "AA".into(),
        raw: raw.to_vec(),
        diagnostics: Some("{\"resourceType\":\"OperationOutcome\"}".into()),
        output: if std::env::var_os("NO_OUTPUT").is_some() {
            None
        } else {
            Some(output.to_string())
        },
        // As the pipeline's lanes hand it over: packed before the commit.
        output_packed: if std::env::var_os("NO_OUTPUT").is_some() {
            None
        } else {
            v2fhir::store::packed::pack(output)
        },
        ack: "MSH|^~\\&|V2FHIR|HOSP|ADT1|HOSP|20261129||ACK^A01^ACK|X|P|2.5.1\rMSA|AA|B\r".into(),
        // The message log alone; resources and their index are measured by benches/fhir.rs and
        // end to end by bench/mllp.sh.
        resources: Vec::new(),
    }
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read(root.join("tests/golden/adt_a01.hl7")).unwrap_or_default();
    let output = std::fs::read_to_string(root.join("tests/golden/adt_a01.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|v| v.to_string())
        .unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        for durability in [Durability::ProcessCrash, Durability::PowerLoss] {
            for batch in [1usize, 8, 64] {
                let dir = std::env::temp_dir().join(format!(
                    "v2fhir-store-bench-{}-{batch}-{:?}",
                    std::process::id(),
                    durability
                ));
                let _ = std::fs::remove_dir_all(&dir);
                let url = format!("sqlite://{}/b.db", dir.display());
                let store = Store::open(&url, durability)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                if batch == 1 {
                    let t = Instant::now();
                    for _ in 0..2000 {
                        store.ping().await.unwrap_or_else(|e| panic!("{e}"));
                    }
                    println!(
                        "{durability:?} one statement round trip (SELECT 1): {:.1} µs",
                        t.elapsed().as_secs_f64() * 1e6 / 2000.0
                    );
                }
                let total = 4096usize;
                let rows: Vec<NewMessage> = (0..total).map(|n| row(n, &raw, &output)).collect();
                let t = Instant::now();
                for chunk in rows.chunks(batch) {
                    store.commit(chunk).await.unwrap_or_else(|e| panic!("{e}"));
                }
                let s = t.elapsed().as_secs_f64();
                println!(
                    "{durability:?} batch {batch:>3}: {:>8.0} rows/s  {:>7.1} µs/row",
                    total as f64 / s,
                    s * 1e6 / total as f64
                );
                store.close().await;
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    });
}
