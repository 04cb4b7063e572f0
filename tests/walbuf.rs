//! The WAL-buffering VFS (`crates/walbuf`) under transactions of every shape: what a reader on
//! SQLite's own VFS sees after each commit, what a killed writer leaves, and that frames are
//! really written together.

use rusqlite::{Connection, OpenFlags, params};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory under `target/test-scratch`, removed when the test passes (a failing test
/// leaves it for inspection).
struct Scratch(PathBuf);
impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn scratch(name: &str) -> Scratch {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-scratch")
        .join(format!(
            "walbuf-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    Scratch(dir)
}

/// A writer through the shim with a tiny page cache, so that large transactions spill pages into
/// the WAL before they commit and SQLite rewrites frames of the current transaction.
fn writer(path: &std::path::Path, sync: &str) -> Connection {
    let vfs = v2fhir_walbuf::register().expect("register the VFS");
    let c = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs).expect("open");
    c.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA cache_size=8; \
         PRAGMA wal_autocheckpoint=0; \
         CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB NOT NULL);"
    ))
    .expect("set up");
    c
}

/// Deterministic pseudo-random numbers (xorshift), so a failure replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The value stored under `k` in round `round`: its length varies from a few bytes to 300 KB
/// (more than one write of the underlying VFS, which takes at most 128 KiB).
fn value(k: u64, round: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (k.wrapping_mul(31) ^ round ^ i as u64) as u8)
        .collect()
}

fn contents(c: &Connection) -> BTreeMap<u64, Vec<u8>> {
    let mut s = c.prepare("SELECT k, v FROM t ORDER BY k").expect("prepare");
    s.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

fn run_rounds(sync: &str) {
    let dir = scratch(sync);
    let path = dir.join("w.db");
    let w = writer(&path, sync);
    // A reader on SQLite's own VFS, as the gateway's read pool and checkpointer are.
    let r = Connection::open(&path).expect("open reader");
    let before = v2fhir_walbuf::stats();
    let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut rng = Rng(0x5eed_1234_abcd);
    let mut rollbacks = 0;
    for round in 0..120u64 {
        let rows = 1 + rng.below(if round % 10 == 0 { 400 } else { 20 });
        let committed = model.clone();
        w.execute_batch("BEGIN IMMEDIATE").expect("begin");
        for _ in 0..rows {
            let k = rng.below(500);
            let len = match rng.below(20) {
                0 => 300_000,
                1..=4 => 5_000 + rng.below(20_000) as usize,
                _ => 1 + rng.below(900) as usize,
            };
            if rng.below(8) == 0 {
                w.execute("DELETE FROM t WHERE k = ?1", params![k as i64])
                    .expect("delete");
                model.remove(&k);
            } else {
                let v = value(k, round, len);
                w.execute(
                    "INSERT INTO t (k, v) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                    params![k as i64, v],
                )
                .expect("upsert");
                model.insert(k, v);
            }
        }
        if round % 7 == 3 {
            // A transaction given up: nothing of it may show.
            w.execute_batch("ROLLBACK").expect("rollback");
            rollbacks += 1;
            model = committed;
            assert_eq!(
                contents(&r),
                model,
                "round {round}: a rollback shows nothing"
            );
            continue;
        }
        w.execute_batch("COMMIT").expect("commit");
        assert_eq!(
            contents(&r),
            model,
            "round {round}: the reader sees every commit"
        );
        if round % 11 == 5 {
            // The checkpointer copies what the reader was shown into the database file.
            r.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .expect("checkpoint");
        }
        if round % 37 == 36 {
            // The WAL starts over: later frames are written from its beginning again.
            w.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
                .expect("restart");
        }
    }
    let ok: String = r
        .query_row("PRAGMA integrity_check", [], |x| x.get(0))
        .expect("integrity check");
    assert_eq!(ok, "ok");
    drop(w);
    drop(r);
    // Reopened on SQLite's own VFS after the writer closed: everything committed is there.
    let again = Connection::open(&path).expect("reopen");
    assert_eq!(contents(&again), model);
    let after = v2fhir_walbuf::stats();
    let writes = after.writes - before.writes;
    let flushes = after.flushes - before.flushes;
    // (cargo nextest runs each test in a process of its own, so the counters are this test's.)
    assert!(writes > 10_000, "the shim saw the WAL writes ({writes})");
    // With an 8-page cache SQLite keeps reading back and rewriting frames of the transaction,
    // each of which writes out what is held; still, fewer writes reach the kernel.
    assert!(
        flushes < writes,
        "frames were written together: {flushes} writes for {writes} frame parts"
    );
    // The commit frame writes out its transaction's frames. What a transaction spilled before it
    // was rolled back stays held until the next barrier (the writer's next BEGIN reads the
    // wal-index behind one): written then, never part of a commit, overwritten later.
    assert!(
        after.barrier_flushes - before.barrier_flushes <= rollbacks,
        "only frames of rolled-back transactions are written at a barrier ({} for {rollbacks} rollbacks)",
        after.barrier_flushes - before.barrier_flushes
    );
}

#[test]
fn every_commit_is_visible_to_readers_and_nothing_else() {
    run_rounds("NORMAL");
}

#[test]
fn every_commit_is_visible_with_an_fsync_per_commit() {
    run_rounds("FULL");
}

/// Transactions the size of a converted message's (a few dozen pages, a normal page cache):
/// the kernel gets one write per commit, not two per page.
#[test]
fn a_transactions_frames_reach_the_kernel_in_one_write() {
    let dir = scratch("together");
    let path = dir.join("t.db");
    let w = writer(&path, "NORMAL");
    w.execute_batch("PRAGMA cache_size=-16384; CREATE INDEX t_v ON t (v);")
        .expect("set up");
    let mut rng = Rng(42);
    let before = v2fhir_walbuf::stats();
    for round in 0..200u64 {
        w.execute_batch("BEGIN IMMEDIATE").expect("begin");
        for _ in 0..30 {
            let k = rng.below(1_000_000);
            w.execute(
                "INSERT OR REPLACE INTO t (k, v) VALUES (?1, ?2)",
                params![k as i64, value(k, round, 600)],
            )
            .expect("insert");
        }
        w.execute_batch("COMMIT").expect("commit");
    }
    let after = v2fhir_walbuf::stats();
    let (writes, flushes) = (after.writes - before.writes, after.flushes - before.flushes);
    assert!(
        writes >= 200 * 2 * 10,
        "each commit wrote frames ({writes})"
    );
    // A commit here is ~150 frames (600 KB); one write to the kernel carries up to 124 KiB
    // (the unix VFS's largest), ~30 frames or 60 frame parts. SQLite alone: one per part.
    assert!(
        flushes * 40 < writes,
        "{flushes} writes to the kernel for 200 commits ({writes} frame parts)"
    );
    assert_eq!(after.barrier_flushes, before.barrier_flushes);
}

/// Child mode of [`a_killed_writer_keeps_every_committed_transaction`]: commit numbered
/// transactions forever, printing each number once its COMMIT has returned.
fn child_writer(path: &str) -> ! {
    let w = writer(std::path::Path::new(path), "NORMAL");
    let mut n: u64 = 0;
    loop {
        n += 1;
        w.execute_batch("BEGIN IMMEDIATE").expect("begin");
        for i in 0..(1 + n % 50) {
            w.execute(
                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                params![
                    (n * 1000 + i) as i64,
                    value(n, i, 200 + (n as usize % 9) * 1500)
                ],
            )
            .expect("insert");
        }
        w.execute_batch("COMMIT").expect("commit");
        println!("{n}");
    }
}

#[test]
fn a_killed_writer_keeps_every_committed_transaction() {
    if let Ok(path) = std::env::var("WALBUF_CHILD_DB") {
        child_writer(&path);
    }
    const COMMITS: u64 = 200;
    let dir = scratch("killed");
    let path = dir.join("k.db");
    // The writer's stderr goes to a file, so that a writer that dies on its own says why.
    let err_path = dir.join("writer.stderr");
    let err = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "a_killed_writer_keeps_every_committed_transaction",
            "--exact",
            "--nocapture",
        ])
        .env("WALBUF_CHILD_DB", &path)
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("start the writer");
    let out = child.stdout.take().expect("stdout");
    let mut last = 0u64;
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        if let Ok(n) = line.trim().parse::<u64>() {
            last = n;
            if n >= COMMITS {
                break;
            }
        }
    }
    // SIGKILL in the middle of whatever the writer is doing (usually a transaction).
    let _ = child.kill();
    let status = child.wait().expect("wait for the writer");
    assert!(
        last >= COMMITS,
        "the writer stopped on its own after {last} commits ({status}); its stderr:\n{}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    let c = Connection::open(&path).expect("open after the crash");
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |x| x.get(0))
        .expect("integrity check");
    assert_eq!(ok, "ok");
    for n in 1..=last {
        let (count, bytes): (i64, i64) = c
            .query_row(
                "SELECT count(*), coalesce(sum(length(v)), 0) FROM t WHERE k / 1000 = ?1",
                params![n as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("count");
        assert_eq!(
            count as u64,
            1 + n % 50,
            "transaction {n}, reported committed, is there whole"
        );
        assert_eq!(bytes as u64, (1 + n % 50) * (200 + (n % 9) * 1500));
    }
    drop(c);
}
