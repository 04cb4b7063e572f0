//! The directory source on both store backends: files dropped into the directory are committed
//! and moved to `done/` (every message accepted) or `error/` (one was not); dot-files are left
//! alone; a file dropped again (after a crash between commit and move) creates no duplicate work.

mod gateway;

use gateway::adt;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Drop a file the way a careful writer does: a dot-file, then a rename.
fn drop_file(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.part"));
    std::fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_files_are_committed_then_moved() {
    let http = gateway::http_client();
    for (backend, url) in gateway::store_urls("file-source").await {
        let drop_dir = gateway::scratch(&format!("file-drop-{backend}"));
        let mut cfg = gateway::config(&url);
        cfg.file.dir = drop_dir.display().to_string();
        cfg.file.poll_ms = 50;
        cfg.file.settle_ms = 0;
        let running = gateway::start(&cfg).await;
        let base = format!(
            "http://{}",
            running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
        );
        let (done, error) = (drop_dir.join("done"), drop_dir.join("error"));

        // A file of two messages, a file that is not HL7, and one still being written.
        let two = format!("{}{}", adt("F1", "PF1", ""), adt("F2", "PF2", ""));
        drop_file(&drop_dir, "batch-1.hl7", two.as_bytes());
        drop_file(&drop_dir, "garbage.txt", b"this is not an HL7 message");
        std::fs::write(drop_dir.join(".in-progress.hl7"), adt("F3", "PF3", ""))
            .unwrap_or_else(|e| panic!("{e}"));
        wait_for("the two files to be moved", || {
            names(&done) == ["batch-1.hl7"] && names(&error) == ["garbage.txt"]
        })
        .await;
        assert_eq!(
            names(&drop_dir),
            [".in-progress.hl7"],
            "{backend}: the dot-file is left alone"
        );
        let list: Value = http
            .get(format!("{base}/messages?limit=10"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or(Value::Null);
        assert_eq!(list["total"], 3, "{backend}: {list}");
        let items = list["items"].as_array().cloned().unwrap_or_default();
        assert!(
            items.iter().all(|m| m["source"] == "file"),
            "{backend}: {list}"
        );
        let statuses: Vec<&str> = items.iter().filter_map(|m| m["status"].as_str()).collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == "converted").count(),
            2,
            "{backend}: {statuses:?}"
        );
        assert!(statuses.contains(&"rejected"), "{backend}: {statuses:?}");
        // Health reports the source; metrics count the files.
        let h: Value = http
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or(Value::Null);
        assert_eq!(h["file"]["status"], "ok", "{backend}: {h}");
        assert_eq!(h["file"]["done"], 1, "{backend}: {h}");
        assert_eq!(h["file"]["errors"], 1, "{backend}: {h}");
        assert!(h["file"]["last_poll"].is_string(), "{backend}: {h}");
        let m = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default();
        assert!(
            m.contains("v2fhir_files_total{result=\"done\"}"),
            "{backend}"
        );
        // The log filters by source.
        for (source, want) in [("file", 3), ("mllp", 0)] {
            let v: Value = http
                .get(format!("{base}/messages?source={source}"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .json()
                .await
                .unwrap_or(Value::Null);
            assert_eq!(v["total"], want, "{backend}: source={source}: {v}");
        }
        let bad = http
            .get(format!("{base}/messages?source=fax"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bad.status().as_u16(), 400, "{backend}");

        // The same file again (as after a crash between the commit and the move): its messages
        // are duplicates, processed once; the copy lands in done/ under a new name.
        drop_file(&drop_dir, "batch-1.hl7", two.as_bytes());
        wait_for("the resent file to be moved", || {
            names(&done) == ["batch-1.hl7", "batch-1.hl7.1"]
        })
        .await;
        let dups: Value = http
            .get(format!("{base}/messages?status=duplicate"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or(Value::Null);
        assert_eq!(dups["total"], 2, "{backend}: {dups}");
        running.shutdown().await;
    }
}

/// An empty file and one over `max_bytes` go to `error/` unread; nothing is logged for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_oversized_files_go_to_error_unread() {
    let dir = gateway::scratch("file-limits");
    let drop_dir = dir.join("in");
    let url = format!("sqlite://{}/v2fhir.db", dir.display());
    let mut cfg = gateway::config(&url);
    cfg.file.dir = drop_dir.display().to_string();
    cfg.file.poll_ms = 50;
    cfg.file.settle_ms = 0;
    cfg.file.max_bytes = 1024;
    let running = gateway::start(&cfg).await;
    let big = adt("BIG", "PB", "").repeat(20);
    assert!(big.len() > 1024);
    drop_file(&drop_dir, "big.hl7", big.as_bytes());
    drop_file(&drop_dir, "empty.hl7", b"  \r\n");
    let error = drop_dir.join("error");
    wait_for("both files in error/", || {
        names(&error) == ["big.hl7", "empty.hl7"]
    })
    .await;
    let page = running
        .pipeline
        .store()
        .list(&v2fhir::store::MessageFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.total, 0, "nothing was read, so nothing is logged");
    running.shutdown().await;
}
