//! Crash test: 5,000 messages over 4 connections, the gateway process SIGKILLed mid-stream and
//! restarted. Every message answered AA is in the store byte-identical; resending the unanswered
//! ones stores nothing twice. Runs on SQLite and PostgreSQL.

mod gateway;

use gateway::{Mllp, msa};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use v2fhir::store::{Durability, MessageFilter, Status, Store};

const TOTAL: usize = 5_000;
const CONNECTIONS: usize = 4;
const KILL_AFTER: usize = 1_500;

fn message(i: usize) -> (String, Vec<u8>) {
    let ctl = format!("K{i:05}");
    // 40 patients, so lanes and ordering are exercised; varied content per message.
    let msg = gateway::adt(&ctl, &format!("PAT{:03}", i % 40), "");
    let msg = msg.replace("DOE^JANE^Q", &format!("DOE^JANE{i}^Q"));
    (ctl, msg.into_bytes())
}

/// Send `ids` over 4 connections; returns the ids answered AA. Stops a connection at the first
/// error (the server died).
async fn send_all(
    addr: std::net::SocketAddr,
    ids: Vec<usize>,
    acked_count: Arc<AtomicUsize>,
) -> HashSet<usize> {
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let mine: Vec<usize> = ids.iter().copied().skip(c).step_by(CONNECTIONS).collect();
        let acked_count = acked_count.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = HashSet::new();
            let mut conn = Mllp::connect(addr).await;
            for i in mine {
                let (ctl, msg) = message(i);
                if conn.write_raw(&gateway::frame(&msg)).await.is_err() {
                    break;
                }
                let a = conn.read(1).await;
                let Some(a) = a.first() else { break };
                let (code, got) = msa(a);
                assert_eq!(got, ctl, "ACK for another message");
                assert_eq!(code, "AA", "{ctl}: {a}");
                acked.insert(i);
                acked_count.fetch_add(1, Ordering::Relaxed);
            }
            acked
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_acknowledged() {
    for (backend, url) in gateway::store_urls("crash").await {
        let dir = gateway::scratch("crash-logs");
        let mut server = gateway::spawn(&url, &dir.join("first.log"), &[]).await;
        let count = Arc::new(AtomicUsize::new(0));
        let sender = tokio::spawn(send_all(server.mllp, (0..TOTAL).collect(), count.clone()));
        // Kill once enough messages were answered.
        while count.load(Ordering::Relaxed) < KILL_AFTER {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            assert!(!sender.is_finished(), "{backend}: all sent before the kill");
        }
        server
            .child
            .start_kill()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        let _ = server.child.wait().await;
        let acked = sender.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            acked.len() >= KILL_AFTER && acked.len() < TOTAL,
            "{backend}: {}",
            acked.len()
        );

        // Restart on the same store: everything acknowledged is there, byte for byte.
        let server = gateway::spawn(&url, &dir.join("second.log"), &[]).await;
        let store = Store::open(&url, Durability::PowerLoss)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rows = all_rows(&store).await;
        let by_ctl: HashMap<&str, &v2fhir::store::StoredMessage> =
            rows.iter().map(|m| (m.control_id.as_str(), m)).collect();
        for &i in &acked {
            let (ctl, msg) = message(i);
            let row = by_ctl
                .get(ctl.as_str())
                .unwrap_or_else(|| panic!("{backend}: {ctl} was answered AA but is not stored"));
            assert_eq!(row.raw, msg, "{backend}: {ctl} stored byte-identical");
            assert_eq!(row.status, Status::Converted);
        }

        // The client resends what it got no answer for; nothing is stored twice.
        let unacked: Vec<usize> = (0..TOTAL).filter(|i| !acked.contains(i)).collect();
        let again = send_all(server.mllp, unacked.clone(), Arc::new(AtomicUsize::new(0))).await;
        assert_eq!(
            again.len(),
            unacked.len(),
            "{backend}: every resend answered AA"
        );
        let rows = all_rows(&store).await;
        let mut originals: HashMap<String, usize> = HashMap::new();
        for m in rows.iter().filter(|m| m.status != Status::Duplicate) {
            *originals.entry(m.control_id.clone()).or_default() += 1;
        }
        assert_eq!(originals.len(), TOTAL, "{backend}: every message stored");
        assert!(
            originals.values().all(|&n| n == 1),
            "{backend}: a message was stored twice"
        );
        // Resent messages that had been committed before the kill came back as duplicates.
        let dups = rows
            .iter()
            .filter(|m| m.status == Status::Duplicate)
            .count();
        assert!(
            dups <= CONNECTIONS,
            "{backend}: at most one in-flight message per connection was committed unanswered, got {dups}"
        );
        store.close().await;
        drop(server);
    }
}

async fn all_rows(store: &Store) -> Vec<v2fhir::store::StoredMessage> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let p = store
            .list(&MessageFilter {
                limit: 1000,
                before_id: before,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        out.extend(p.items);
        match p.next_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    out
}
