//! One write path, two executors. The statements of a commit (message log, resources, index rows,
//! outbox) are written once, as async functions generic over [`Exec`], and run either
//!
//! - on a sqlx connection (PostgreSQL, and SQLite when no direct writer is open), or
//! - on [`Lite`], a rusqlite connection the calling thread drives itself (SQLite's writer).
//!
//! Why the second: sqlx runs SQLite on a worker thread and every statement is a round trip to it
//! (a `BEGIN IMMEDIATE` alone measured 230 µs; a converted ADT^A01 commit 3.3 ms for ~12
//! statements, about 2 ms of it hand-offs). [`Lite`] answers each call at once — its futures are
//! [`std::future::Ready`] — so a commit is an ordinary blocking function call, made inside
//! `block_in_place` (see [`super::Store::commit`]).

use super::StoreError;
use super::sql::Arg;
use sqlx::Row;
use std::future::Future;

/// Typed access to a result row's columns (by position).
pub(crate) trait Cols {
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError>;
    fn text(&self, i: usize) -> Result<String, StoreError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn real(&self, i: usize) -> Result<f64, StoreError>;
}

/// Runs SQL with `$n` placeholders (numbered in order of appearance) and bound arguments.
pub(crate) trait Exec: Send {
    type Row: Cols + Send;
    /// The rows a statement returns (`SELECT`, `… RETURNING`).
    fn fetch(
        &mut self,
        op: &'static str,
        sql: &str,
        args: &[Arg],
    ) -> impl Future<Output = Result<Vec<Self::Row>, StoreError>> + Send;
    /// Whether each statement costs a network round trip, so that the write path should send as
    /// few as it can: reads of several tables in one `UNION ALL`, data-modifying statements
    /// combined in one `WITH` (PostgreSQL). False where a statement is a function call (SQLite).
    fn few_statements(&self) -> bool {
        false
    }
    /// Rows affected.
    fn execute(
        &mut self,
        op: &'static str,
        sql: &str,
        args: &[Arg],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

fn decode(source: sqlx::Error) -> StoreError {
    StoreError::Db {
        op: "decode a row",
        source,
    }
}

impl Cols for sqlx::any::AnyRow {
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.try_get(i).map_err(decode)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.try_get(i).map_err(decode)
    }
    fn text(&self, i: usize) -> Result<String, StoreError> {
        self.try_get(i).map_err(decode)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.try_get(i).map_err(decode)
    }
    fn real(&self, i: usize) -> Result<f64, StoreError> {
        self.try_get(i).map_err(decode)
    }
}

impl Exec for sqlx::AnyConnection {
    type Row = sqlx::any::AnyRow;
    fn few_statements(&self) -> bool {
        self.backend_name() == "PostgreSQL"
    }
    async fn fetch(
        &mut self,
        op: &'static str,
        sql: &str,
        args: &[Arg],
    ) -> Result<Vec<Self::Row>, StoreError> {
        super::sql::bind_all(sql, args)
            .fetch_all(&mut *self)
            .await
            .map_err(super::db(op))
    }
    async fn execute(
        &mut self,
        op: &'static str,
        sql: &str,
        args: &[Arg],
    ) -> Result<u64, StoreError> {
        super::sql::bind_all(sql, args)
            .execute(&mut *self)
            .await
            .map(|r| r.rows_affected())
            .map_err(super::db(op))
    }
}

/// SQLite's writer connection (rusqlite), driven synchronously by its caller.
pub(crate) struct Lite {
    conn: rusqlite::Connection,
    /// Which page cache the writer has (see [`WriterCache`]); `None` on readers.
    cache: Option<WriterCache>,
    /// Writer: set by the background checkpointer when the WAL should start over (see
    /// [`Lite::catch_up_wal`]).
    wal_restart: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// The writer's page cache: small while the database is below SQLite's lock-byte page (1 GiB),
/// large from there on.
///
/// Why: when a B-tree page splits, SQLite sorts the new pages by giving one of them, for a moment,
/// the number of the lock-byte page (`PENDING_BYTE / page_size + 1`, page 262,145 at 4 KiB), and
/// the page cache remembers it as the largest page it has seen. At every COMMIT the pager then
/// drops cached pages beyond the end of the database; while the database is smaller than that
/// page number, that gap is wider than the cache's hash table and SQLite walks the *whole* cache
/// to do it. With a 64 MiB cache (16,000 pages) that walk was 12 % of the gateway's CPU at one
/// connection (perf: `pcache1TruncateUnsafe` under `pager_end_transaction`, ~280 µs a commit;
/// gdb showed `iMaxKey = 262145` set by `sqlite3PagerRekey` in `balance_nonroot`). A 4 MiB cache
/// makes the walk short and raised ingest on a new database by ~20 % (1 and 8 connections, back
/// to back); past 1 GiB the walk never happens and the large cache is ~10 % faster, so the
/// writer switches once the database has grown past it.
#[derive(Debug, Clone, Copy)]
struct WriterCache {
    large: bool,
    commits: u32,
}

impl WriterCache {
    /// `PRAGMA cache_size` values (negative: KiB).
    const SMALL: i64 = -4096;
    const LARGE: i64 = -65536;
    /// Commits between two looks at the database size while the cache is small.
    const CHECK_EVERY: u32 = 1024;

    /// Whether a database of `pages` pages of `page_size` bytes reaches past the lock-byte page
    /// (SQLite's `PENDING_BYTE` is 0x40000000; the page holding it is never used for data).
    fn wants_large(pages: i64, page_size: i64) -> bool {
        let lock_page = 0x4000_0000 / page_size.max(512) + 1;
        pages >= lock_page
    }
}

impl std::fmt::Debug for Lite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lite")
    }
}

/// A row read through [`Lite`].
pub(crate) struct LiteRow(Vec<rusqlite::types::Value>);

fn lite(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { op, source }
}

fn wrong_type(row: &LiteRow, index: usize, want: &'static str) -> StoreError {
    StoreError::Decode {
        index,
        want,
        found: row
            .0
            .get(index)
            .map_or_else(|| "missing".to_string(), |v| v.data_type().to_string()),
    }
}

impl Cols for LiteRow {
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.opt_int(i)?
            .ok_or_else(|| wrong_type(self, i, "integer"))
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        use rusqlite::types::Value;
        match self.0.get(i) {
            Some(Value::Integer(v)) => Ok(Some(*v)),
            Some(Value::Null) => Ok(None),
            _ => Err(wrong_type(self, i, "integer")),
        }
    }
    fn text(&self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)?.ok_or_else(|| wrong_type(self, i, "text"))
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        use rusqlite::types::Value;
        match self.0.get(i) {
            Some(Value::Text(v)) => Ok(Some(v.clone())),
            Some(Value::Null) => Ok(None),
            _ => Err(wrong_type(self, i, "text")),
        }
    }
    fn real(&self, i: usize) -> Result<f64, StoreError> {
        use rusqlite::types::Value;
        match self.0.get(i) {
            Some(Value::Real(v)) => Ok(*v),
            Some(Value::Integer(v)) => Ok(*v as f64),
            _ => Err(wrong_type(self, i, "real")),
        }
    }
}

/// Whether the SQLite writer writes through `v2fhir-walbuf` (`store.wal_buffer`, default on).
static WAL_BUFFER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Set whether SQLite writer connections opened from now on use the WAL-buffering VFS.
pub fn set_wal_buffer(on: bool) {
    WAL_BUFFER.store(on, std::sync::atomic::Ordering::Relaxed);
}

impl Lite {
    /// Open `path` with the same settings as the pool's connections (`pragmas`).
    pub(crate) fn open(path: &str, pragmas: &str) -> Result<Lite, StoreError> {
        let conn = Self::connect(path, pragmas, true, "open the writer connection")?;
        // When another connection holds the write lock (an outbox claim, a migration),
        // retry every 100 µs for up to 10 s. SQLite's own busy_timeout backs off to 100 ms
        // sleeps, which put whole-second stalls into ingest during an upstream outage.
        conn.busy_handler(Some(|attempt| {
            std::thread::sleep(std::time::Duration::from_micros(100));
            attempt < 100_000
        }))
        .map_err(lite("configure the writer connection"))?;
        // Statement texts depend on the batch size (one VALUES row per message or resource);
        // keep the common sizes prepared.
        conn.set_prepared_statement_cache_capacity(512);
        let mut lite = Lite {
            conn,
            cache: None,
            wal_restart: None,
        };
        lite.fit_cache()?;
        Ok(lite)
    }

    /// Give the writer the page cache that suits the database's size (see [`WriterCache`]).
    fn fit_cache(&mut self) -> Result<(), StoreError> {
        let op = "size the writer's page cache";
        let pages: i64 = self
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .map_err(lite(op))?;
        let page_size: i64 = self
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(lite(op))?;
        let large = WriterCache::wants_large(pages, page_size);
        let size = if large {
            WriterCache::LARGE
        } else {
            WriterCache::SMALL
        };
        self.conn
            .execute_batch(&format!("PRAGMA cache_size={size}"))
            .map_err(lite(op))?;
        self.cache = Some(WriterCache { large, commits: 0 });
        Ok(())
    }

    /// Let the background checkpointer ask this (writer) connection to start the WAL over.
    pub(crate) fn set_wal_restart(&mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.wal_restart = Some(flag);
    }

    /// Between two write transactions, when the checkpointer asked for it: copy what is left of
    /// the WAL into the database (`PASSIVE`; nothing writes meanwhile, since this is the writer),
    /// so that the next transaction starts the WAL over from its beginning.
    ///
    /// Why here: the background checkpointer copies the WAL while the writer keeps appending to
    /// it, so the WAL is never completely copied when a transaction begins, and SQLite only starts
    /// it over then. A `RESTART` checkpoint from the background did it by blocking writers, and
    /// waited for them (up to 2 s under load: the writer takes the lock again right after each
    /// commit). The frames left here are the few the background had not copied yet.
    ///
    /// Returns whether the WAL is completely copied (or nothing was asked).
    pub(crate) fn catch_up_wal(&mut self) -> bool {
        let Some(flag) = &self.wal_restart else {
            return true;
        };
        if !flag.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        let r = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
        match r {
            // All copied: the next transaction starts the WAL over, unless a reader still reads
            // an old snapshot from it (then the checkpointer asks again).
            Ok((0, log, done)) if done >= log => {
                flag.store(false, std::sync::atomic::Ordering::Relaxed);
                true
            }
            // Busy (the background checkpoint runs) or a reader holds frames back: next time.
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint on the writer failed");
                false
            }
        }
    }

    /// Whether the writer has switched to its large page cache (tests).
    #[cfg(test)]
    pub(crate) fn has_large_cache(&self) -> bool {
        self.cache.is_some_and(|c| c.large)
    }

    /// Open a read-only connection on `path` (`pragmas` as for the writer; a smaller page cache,
    /// since there are several).
    pub(crate) fn open_reader(path: &str, pragmas: &str) -> Result<Lite, StoreError> {
        let conn = Self::connect(path, pragmas, false, "open a reader connection")?;
        conn.execute_batch("PRAGMA cache_size=-16384; PRAGMA query_only=ON;")
            .map_err(lite("configure a reader connection"))?;
        conn.set_prepared_statement_cache_capacity(128);
        Ok(Lite {
            conn,
            cache: None,
            wal_restart: None,
        })
    }

    /// A connection on `path` with `pragmas` applied (`op` names the step in errors). The writer
    /// (`writer`) writes through the WAL-buffering VFS (`v2fhir-walbuf`, see ARCHITECTURE.md):
    /// a transaction's WAL frames reach the kernel in one write instead of two per page.
    fn connect(
        path: &str,
        pragmas: &str,
        writer: bool,
        op: &'static str,
    ) -> Result<rusqlite::Connection, StoreError> {
        let conn = if writer && WAL_BUFFER.load(std::sync::atomic::Ordering::Relaxed) {
            let vfs = v2fhir_walbuf::register().map_err(|rc| StoreError::Sqlite {
                op,
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rc),
                    Some("registering the WAL-buffering VFS failed".into()),
                ),
            })?;
            rusqlite::Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), vfs)
                .map_err(lite(op))?
        } else {
            rusqlite::Connection::open(path).map_err(lite(op))?
        };
        conn.execute_batch(pragmas).map_err(lite(op))?;
        Ok(conn)
    }

    /// Run `f` in a `BEGIN IMMEDIATE` transaction: committed when it returns `Ok`, rolled back
    /// otherwise.
    pub(crate) fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Lite) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if !self.conn.is_autocommit() {
            // Left open by a panic in an earlier caller: nothing of it was acknowledged.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(lite("begin"))?;
        match f(self) {
            Ok(v) => match self.conn.execute_batch("COMMIT") {
                Ok(()) => {
                    if let Some(c) = &mut self.cache
                        && !c.large
                    {
                        c.commits += 1;
                        if c.commits >= WriterCache::CHECK_EVERY {
                            c.commits = 0;
                            // The commit stands whatever happens here; a failed look is
                            // retried after the next CHECK_EVERY commits.
                            if let Err(e) = self.fit_cache() {
                                tracing::warn!(error = %e, "could not size the writer's page cache");
                            }
                        }
                    }
                    Ok(v)
                }
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    Err(lite("commit")(e))
                }
            },
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn prepared<'c>(
        &'c self,
        op: &'static str,
        sql: &str,
        args: &[Arg],
    ) -> Result<rusqlite::CachedStatement<'c>, StoreError> {
        // Inside a transaction, a multi-row INSERT runs as `INSERT OR FAIL`: with SQLite's
        // default (ABORT) every such statement first copies each page it changes into a
        // statement journal, to undo just that statement if a constraint fails half-way
        // (~10% of the writer's time in a perf profile of MLLP ingest). Every transaction on
        // this connection is rolled back whole on any error (`transaction`), so undoing one
        // statement is never needed. Never in autocommit mode, where FAIL would keep the rows
        // before the failing one.
        let fail_fast;
        let sql = match sql.strip_prefix("INSERT INTO ") {
            Some(rest) if !self.conn.is_autocommit() => {
                fail_fast = format!("INSERT OR FAIL INTO {rest}");
                fail_fast.as_str()
            }
            _ => sql,
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(lite(op))?;
        let n = stmt.parameter_count();
        // SQLite numbers parameters by the first appearance of each name. The write statements
        // use `$1…$n` in order; queries built by `Sql` may use them in another order or more
        // than once. So every parameter is bound by its name — read from the SQL text in one
        // pass, because SQLite's own name lookup is a linear scan per parameter (quadratic over
        // a bulk insert's thousands). Checking only the first and last names, as release builds
        // once did, bound a chained search's `$6` and `$5` to each other's values.
        let order = match placeholder_order(sql) {
            order if order.len() == n => {
                debug_assert!(
                    order
                        .iter()
                        .enumerate()
                        .all(|(i, k)| stmt.parameter_name(i + 1) == Some(format!("${k}").as_str())),
                    "placeholder order read from the SQL differs from SQLite's: {sql}"
                );
                order
            }
            // Not the shape `Sql` writes: ask SQLite for each name (0: not `$k`, refused below).
            _ => (1..=n)
                .map(|i| {
                    stmt.parameter_name(i)
                        .and_then(|name| name.strip_prefix('$'))
                        .and_then(|d| d.parse::<usize>().ok())
                        .unwrap_or(0)
                })
                .collect(),
        };
        for (i, &k) in (1..=n).zip(order.iter()) {
            if !(1..=args.len()).contains(&k) {
                return Err(StoreError::Sqlite {
                    op,
                    source: rusqlite::Error::InvalidParameterCount(args.len(), n),
                });
            }
            let r = match &args[k - 1] {
                Arg::Text(s) => stmt.raw_bind_parameter(i, s.as_str()),
                Arg::Int(v) => stmt.raw_bind_parameter(i, *v),
                Arg::Real(v) => stmt.raw_bind_parameter(i, *v),
                Arg::Blob(b) => stmt.raw_bind_parameter(i, b.as_slice()),
                Arg::NullInt | Arg::NullText | Arg::NullBlob => {
                    stmt.raw_bind_parameter(i, rusqlite::types::Null)
                }
            };
            r.map_err(lite(op))?;
        }
        Ok(stmt)
    }

    pub(crate) fn fetch_now(
        &mut self,
        op: &'static str,
        sql: &str,
        args: &[Arg],
    ) -> Result<Vec<LiteRow>, StoreError> {
        let mut stmt = self.prepared(op, sql, args)?;
        let cols = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(lite(op))? {
            let mut vals = Vec::with_capacity(cols);
            for i in 0..cols {
                vals.push(r.get::<_, rusqlite::types::Value>(i).map_err(lite(op))?);
            }
            out.push(LiteRow(vals));
        }
        Ok(out)
    }

    fn execute_now(
        &mut self,
        op: &'static str,
        sql: &str,
        args: &[Arg],
    ) -> Result<u64, StoreError> {
        let mut stmt = self.prepared(op, sql, args)?;
        stmt.raw_execute().map(|n| n as u64).map_err(lite(op))
    }
}

/// The `$k` of each SQLite parameter index (1-based), i.e. the distinct `$k` placeholders of
/// `sql` in order of first appearance. (`Sql` puts values only in placeholders, never in literals.)
fn placeholder_order(sql: &str) -> Vec<usize> {
    let b = sql.as_bytes();
    let mut seen: Vec<bool> = Vec::new();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(d) = memchr::memchr(b'$', &b[at..]) {
        let start = at + d + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if let Ok(k) = sql[start..end].parse::<usize>() {
            if k == 0 || k > 1 << 20 {
                // Not a placeholder `Sql` writes: the caller asks SQLite instead.
                return Vec::new();
            }
            if k >= seen.len() {
                seen.resize(k + 1, false);
            }
            if !seen[k] {
                seen[k] = true;
                out.push(k);
            }
        }
        at = end;
    }
    out
}

impl Exec for Lite {
    type Row = LiteRow;
    fn fetch(
        &mut self,
        op: &'static str,
        sql: &str,
        args: &[Arg],
    ) -> impl Future<Output = Result<Vec<LiteRow>, StoreError>> + Send {
        std::future::ready(self.fetch_now(op, sql, args))
    }
    fn execute(
        &mut self,
        op: &'static str,
        sql: &str,
        args: &[Arg],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        std::future::ready(self.execute_now(op, sql, args))
    }
}

/// Drive a future that only awaits [`Lite`] calls: it is ready on the first poll. (Anything
/// else awaited in it would leave it pending; that is reported, not waited for.)
pub(crate) fn ready<T>(f: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => Err(StoreError::Internal(
            "a write on the SQLite writer waited for something other than SQLite",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::types::Value;

    #[test]
    fn a_column_of_another_type_is_named_with_both_types() {
        let row = LiteRow(vec![Value::Text("x".into()), Value::Null]);
        let e = row.int(0).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(e, "store: decode a row: column 0 is Text, expected integer");
        assert!(matches!(row.opt_text(1), Ok(None)));
        let e = row.text(1).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(e, "store: decode a row: column 1 is Null, expected text");
        let e = row.real(5).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(e, "store: decode a row: column 5 is missing, expected real");
    }

    #[test]
    fn placeholder_order_is_the_order_of_first_appearance() {
        assert_eq!(placeholder_order("SELECT 1"), Vec::<usize>::new());
        assert_eq!(placeholder_order("SELECT $1, $2, $3"), vec![1, 2, 3]);
        assert_eq!(
            placeholder_order("a = $1 AND b = $3 OR c = $2 || $3 AND $12"),
            vec![1, 3, 2, 12]
        );
        assert_eq!(placeholder_order("x $ y $$ $0"), Vec::<usize>::new());
    }

    #[test]
    fn placeholders_out_of_order_or_repeated_are_bound_by_name() {
        let mut c = Lite::open(":memory:", "").expect("in-memory database");
        let args = [Arg::Text("a".into()), Arg::Text("b".into()), Arg::Int(7)];
        let rows = c
            .fetch_now("test", "SELECT $2 || $1, $2, $3 + $3", &args)
            .expect("bound by name");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].text(0).ok().as_deref(), Some("ba"));
        assert_eq!(rows[0].text(1).ok().as_deref(), Some("b"));
        assert_eq!(rows[0].int(2).ok(), Some(14));
        // In order, one each.
        let rows = c
            .fetch_now("test", "SELECT $1, $2, $3", &args)
            .expect("bound in order");
        assert_eq!(rows[0].text(0).ok().as_deref(), Some("a"));
        // Out of order only in the middle (the first and last names in place), as a chained
        // search's SQL is: still by name, in every build profile.
        let four = [
            Arg::Text("a".into()),
            Arg::Text("b".into()),
            Arg::Text("c".into()),
            Arg::Text("d".into()),
        ];
        let rows = c
            .fetch_now("test", "SELECT $1 || $3 || $2 || $4 || $3", &four)
            .expect("bound by name");
        assert_eq!(rows[0].text(0).ok().as_deref(), Some("acbdc"));
        // A placeholder without an argument is an error, not a panic.
        assert!(c.fetch_now("test", "SELECT $4", &args).is_err());
    }

    #[test]
    fn a_failing_insert_in_a_transaction_leaves_nothing_and_autocommit_keeps_abort() {
        let dir = std::env::temp_dir().join(format!("v2fhir-fail-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("f.db");
        let _ = std::fs::remove_file(&path);
        let path = path.to_string_lossy();
        let mut c = Lite::open(&path, "PRAGMA journal_mode=WAL;").expect("writer on a new file");
        c.conn
            .execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")
            .expect("create a table");
        let count = |c: &Lite| -> i64 {
            c.conn
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap_or(-1)
        };
        // In a transaction (run as INSERT OR FAIL): the second row fails; the transaction,
        // including the earlier statement and the first row, is rolled back whole.
        let mut seen_inside = -1;
        let r = c.transaction(|c| {
            c.execute_now("one", "INSERT INTO t VALUES ($1)", &[Arg::Int(9)])?;
            let r = c.execute_now(
                "two",
                "INSERT INTO t VALUES ($1), ($2)",
                &[Arg::Int(1), Arg::Int(1)],
            );
            // FAIL, not ABORT: the row before the failing one is still there (no statement
            // journal was kept to undo it).
            seen_inside = count(c);
            r
        });
        assert!(r.is_err(), "the duplicate key must fail the statement");
        assert_eq!(seen_inside, 2, "the insert ran as INSERT OR FAIL");
        assert_eq!(count(&c), 0, "nothing of a failed transaction stays");
        // Autocommit (no transaction): SQLite's ABORT, so the statement's first row is undone.
        let r = c.execute_now(
            "two",
            "INSERT INTO t VALUES ($1), ($2)",
            &[Arg::Int(2), Arg::Int(2)],
        );
        assert!(r.is_err());
        assert_eq!(
            count(&c),
            0,
            "an autocommit statement that fails keeps none of its rows"
        );
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_writer_takes_the_large_page_cache_past_the_lock_byte_page() {
        // 1 GiB is 262,144 pages of 4 KiB; the lock-byte page is the next one.
        assert!(!WriterCache::wants_large(0, 4096));
        assert!(!WriterCache::wants_large(262_144, 4096));
        assert!(WriterCache::wants_large(262_145, 4096));
        assert!(!WriterCache::wants_large(16_384, 65_536));
        assert!(WriterCache::wants_large(16_385, 65_536));
        // A new database: the small cache, as SQLite reports it.
        let dir = std::env::temp_dir().join(format!("v2fhir-cache-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("w.db");
        let path = path.to_string_lossy();
        let mut c = Lite::open(&path, "PRAGMA journal_mode=WAL; PRAGMA cache_size=-65536;")
            .expect("writer on a new file");
        assert!(!c.has_large_cache());
        let size = |c: &Lite| -> i64 {
            c.conn
                .query_row("PRAGMA cache_size", [], |r| r.get(0))
                .unwrap_or(0)
        };
        assert_eq!(size(&c), WriterCache::SMALL);
        // Commits keep it small while the database stays small, including the periodic look.
        c.conn
            .execute_batch("CREATE TABLE t (x)")
            .expect("create a table");
        for i in 0..(WriterCache::CHECK_EVERY + 2) {
            c.transaction(|c| {
                c.execute_now(
                    "insert",
                    "INSERT INTO t VALUES ($1)",
                    &[Arg::Int(i64::from(i))],
                )
            })
            .expect("commit");
        }
        assert!(!c.has_large_cache());
        assert_eq!(size(&c), WriterCache::SMALL);
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
