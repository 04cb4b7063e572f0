//! The durable store: the message log (raw bytes as received, status, conversion output, the ACK
//! that was sent) on SQLite (embedded default, WAL) or PostgreSQL (shared by several replicas).
//!
//! Both backends run the *same* code: one SQL text with `$n` placeholders, portable types only
//! (i64 times in microseconds, TEXT, BLOB/BYTEA). Reads go through sqlx's `Any` pool; writes are
//! written once over [`exec::Exec`] and run, through [`write_tx!`], on SQLite's one writer
//! connection or in a sqlx transaction. Only the DDL (`sqlite.sql`, `postgres.sql`) and the
//! connection settings differ. Nothing here knows HL7 or FHIR: callers hand
//! in a [`NewMessage`] with everything already decided, and [`Store::commit`] writes a batch of
//! them in one transaction (group commit) with duplicate detection.

use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use std::time::Duration;

/// Run `$body` — an async expression over `$c`, a `&mut impl exec::Exec` — in one write
/// transaction, committed when it returns `Ok`: on SQLite's writer connection ([`exec::Lite`],
/// where every SQLite write but the outbox claim goes), else in a sqlx transaction. Evaluates to
/// `Result<T, StoreError>`. (A macro because the body is generic over the executor.)
macro_rules! write_tx {
    ($store:expr, |$c:ident| $body:expr) => {
        match &$store.lite {
            Some(lite) => $store.with_lite(lite, |$c| {
                $c.transaction(|$c| $crate::store::exec::ready($body))
            }),
            None => {
                async {
                    let mut tx = $store.begin_write().await?;
                    let r = {
                        let $c: &mut sqlx::AnyConnection = &mut *tx;
                        $body.await?
                    };
                    tx.commit().await.map_err($crate::store::db("commit"))?;
                    Ok::<_, $crate::store::StoreError>(r)
                }
                .await
            }
        }
    };
}

mod exec;
pub mod forward;
mod nodelay;
pub mod outbox;
pub mod packed;
mod query;
pub mod resources;
mod sql;
pub use exec::set_wal_buffer;
pub use forward::{Answered, ForwardClaim, ForwardFilter, ForwardState, ForwardStats};
pub use outbox::{Claimed, DeliveryState, OutboxStats, prune_older_than};
pub use query::{MessageFilter, MessagePage};
pub use resources::{NewResource, ResourceRow};

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Embedded SQLite file (WAL).
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// How hard a commit is pushed to disk (SQLite only; PostgreSQL follows its own settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: an fsync per group commit; safe against power loss. The default.
    #[default]
    PowerLoss,
    /// `synchronous=NORMAL` in WAL mode: safe against a crash of the gateway process, not of the machine.
    ProcessCrash,
}

/// Status of a logged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Stored, not converted yet.
    Received,
    /// Converted; the FHIR output is stored with it.
    Converted,
    /// Delivered to the upstream FHIR server.
    Delivered,
    /// Refused by the upstream FHIR server (or out of delivery attempts); parked in the outbox
    /// with the upstream's OperationOutcome until reprocessed.
    Dead,
    /// Parsed but conversion failed; diagnostics are stored with it.
    Error,
    /// Not accepted (not HL7, unsupported processing id or version, …).
    Rejected,
    /// A repeat of an earlier message (same sender, control id and content).
    Duplicate,
}

impl Status {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::Converted => "converted",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
            Status::Error => "error",
            Status::Rejected => "rejected",
            Status::Duplicate => "duplicate",
        }
    }

    /// Parse the stored spelling.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "received" => Status::Received,
            "converted" => Status::Converted,
            "delivered" => Status::Delivered,
            "dead" => Status::Dead,
            "error" => Status::Error,
            "rejected" => Status::Rejected,
            "duplicate" => Status::Duplicate,
            _ => return None,
        })
    }
}

/// Errors of the store. The text names the operation; database messages never contain PHI
/// because values are always bound, never interpolated.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("store: {op}: {source}")]
    Db {
        /// What we were doing.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// SQLite's writer connection refused or failed.
    #[error("store: {op}: {source}")]
    Sqlite {
        /// What we were doing.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A column of a row read on SQLite's writer connection is not of the expected type.
    #[error("store: decode a row: column {index} is {found}, expected {want}")]
    Decode {
        /// Column position (from 0).
        index: usize,
        /// Expected SQL type.
        want: &'static str,
        /// The value's type.
        found: String,
    },
    /// A broken internal rule (a bug), named.
    #[error("store: {0}")]
    Internal(&'static str),
    /// The URL names no supported database.
    #[error("store: unsupported database URL (use sqlite://FILE or postgres://…)")]
    UnsupportedUrl,
}

fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Db { op, source }
}

/// A message to log, with everything already decided by the pipeline.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Microseconds since the Unix epoch.
    pub received_at: i64,
    /// `mllp`, `http`, … (no peer addresses: they identify less than they cost).
    pub source: String,
    /// MSH-3 as a key (`namespace&universal&type`, empty when absent).
    pub sending_application: String,
    /// MSH-4 as a key.
    pub sending_facility: String,
    /// MSH-10.
    pub control_id: String,
    /// `ADT^A01`, empty when unknown.
    pub message_type: String,
    /// The detected character set.
    pub charset: String,
    /// SHA-256 of the raw bytes, hex.
    pub content_hash: String,
    /// Converted, error or rejected.
    pub status: Status,
    /// MSA-1 of the acknowledgment decided for it.
    pub ack_code: String,
    /// The bytes as received.
    pub raw: Vec<u8>,
    /// JSON (an OperationOutcome) when there is anything to say.
    pub diagnostics: Option<String>,
    /// JSON (the FHIR Bundle) when converted.
    pub output: Option<String>,
    /// `output` packed for the log ([`packed::pack`]), when the caller has done it (the
    /// pipeline's lanes do, so that the one writer does not); else the store packs it.
    pub output_packed: Option<Vec<u8>>,
    /// The acknowledgment(s) to send, ER7; several are separated by `\n`.
    pub ack: String,
    /// The FHIR resources to store with it (converted messages only).
    pub resources: Vec<NewResource>,
}

/// What the store did with one [`NewMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Row id of the logged message.
    pub id: i64,
    /// Final status (`duplicate` when it repeats an earlier message).
    pub status: Status,
    /// The acknowledgment(s) to send: the stored one for duplicates.
    pub ack: String,
    /// The earlier message this one repeats.
    pub duplicate_of: Option<i64>,
    /// Same sender and control id as an earlier message, but different content.
    pub collision: bool,
}

/// One logged message as read back.
#[derive(Debug, Clone, Serialize)]
pub struct StoredMessage {
    /// Row id.
    pub id: i64,
    /// Microseconds since the Unix epoch.
    pub received_at: i64,
    /// Microseconds since the Unix epoch.
    pub updated_at: i64,
    /// `mllp`, `http`.
    pub source: String,
    /// MSH-3 key.
    pub sending_application: String,
    /// MSH-4 key.
    pub sending_facility: String,
    /// MSH-10.
    pub control_id: String,
    /// `ADT^A01`.
    pub message_type: String,
    /// Detected charset.
    pub charset: String,
    /// SHA-256 hex of the raw bytes.
    pub content_hash: String,
    /// Status.
    pub status: Status,
    /// MSA-1 sent.
    pub ack_code: Option<String>,
    /// Control id collided with a different earlier message.
    pub collision: bool,
    /// The message this one repeats.
    pub duplicate_of: Option<i64>,
    /// Raw bytes (not serialized; the API renders them as text).
    #[serde(skip)]
    pub raw: Vec<u8>,
    /// OperationOutcome JSON.
    #[serde(skip)]
    pub diagnostics: Option<String>,
    /// Bundle JSON.
    #[serde(skip)]
    pub output: Option<String>,
    /// ACK(s) sent.
    #[serde(skip)]
    pub ack: Option<String>,
}

/// Where converted messages go (set once at start-up, see `[sink]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sinks {
    /// Write the resources to the local resource store (served by `/fhir`).
    pub local: bool,
    /// Write an outbox row for delivery to the upstream FHIR server.
    pub upstream: bool,
}

impl Default for Sinks {
    fn default() -> Self {
        Sinks {
            local: true,
            upstream: false,
        }
    }
}

/// A message of a run being committed: what the commit decided for it (`commit_run`, step 2).
struct Decided<'a> {
    m: &'a NewMessage,
    status: Status,
    /// The acknowledgment (a FHIR request's stored decision) it is answered with.
    ack: String,
    duplicate_of: Option<i64>,
    collision: bool,
}

/// The message log on SQLite or PostgreSQL.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// Where sqlx writes go: the same pool on PostgreSQL; on SQLite a single connection for the
    /// migrations and the outbox claim (every other write runs on `lite`).
    writer: AnyPool,
    backend: Backend,
    sinks: Sinks,
    /// Woken after a commit that wrote outbox rows (the delivery worker waits on it).
    outbox_signal: std::sync::Arc<tokio::sync::Notify>,
    /// `[forward]`: the downstream MLLP destinations, which messages a commit queues for each,
    /// and the signals their forwarders wait on.
    forward: std::sync::Arc<Vec<forward::Route>>,
    /// SQLite: the connection writes run on (see [`exec`] and [`write_tx!`]).
    lite: Option<std::sync::Arc<std::sync::Mutex<exec::Lite>>>,
    /// SQLite: the connections resource reads run on (see [`Readers`]).
    readers: Option<std::sync::Arc<Readers>>,
    /// SQLite: the checkpointer's request to the writer to start the WAL over (see
    /// [`Store::spawn_checkpointer`]).
    wal_restart: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// SQLite's read connections for the FHIR facade, driven directly like the writer: a read is one
/// blocking library call (`block_in_place`) instead of a round trip per statement to the worker
/// thread of a sqlx connection (and a pool acquire). Idle connections are kept (with their page
/// caches and prepared statements) up to [`Readers::MAX_IDLE`]; a burst beyond that opens more,
/// which are closed after use.
#[derive(Debug)]
pub(crate) struct Readers {
    path: String,
    pragmas: String,
    idle: std::sync::Mutex<Vec<exec::Lite>>,
}

impl Readers {
    const MAX_IDLE: usize = 4;

    fn run<T>(
        &self,
        f: impl FnOnce(&mut exec::Lite) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let call = || {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut conn = match idle {
                Some(c) => c,
                None => exec::Lite::open_reader(&self.path, &self.pragmas)?,
            };
            let out = f(&mut conn);
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < Self::MAX_IDLE {
                idle.push(conn);
            }
            out
        };
        blocking(call)
    }
}

/// Run `f`, a blocking SQLite call: on a multi-threaded runtime the calling worker first hands its
/// other tasks to another thread (`block_in_place`); elsewhere (a current-thread runtime, no
/// runtime) it is simply called.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The messages of a [`Store::lite_group`] transaction, added as they come.
pub struct Group<'a> {
    store: &'a Store,
    conn: &'a mut exec::Lite,
    converted: &'a mut bool,
}

impl Group<'_> {
    /// Write `rows` (duplicate detection as in [`Store::commit`], which also sees the rows added
    /// before in this group). On error the caller must end the group with `Err`: the transaction
    /// is then rolled back whole.
    pub fn add(&mut self, rows: &[&NewMessage]) -> Result<Vec<Committed>, StoreError> {
        let runs = split_runs(rows);
        let out = exec::ready(self.store.commit_runs(&mut *self.conn, &runs))?;
        *self.converted |= out.iter().any(|c| c.status == Status::Converted);
        Ok(out)
    }
}

/// Split rows into runs without a repeated (sender, control id), each at most
/// [`MAX_ROWS_PER_INSERT`] long: within a run every duplicate lookup can be answered from the
/// table as it was before the run.
fn split_runs<'r, 'm>(rows: &'r [&'m NewMessage]) -> Vec<&'r [&'m NewMessage]> {
    let mut runs: Vec<&[&NewMessage]> = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let mut keys = std::collections::HashSet::new();
        let mut end = start;
        while end < rows.len() && end - start < MAX_ROWS_PER_INSERT {
            let m = rows[end];
            if !keys.insert((
                m.sending_application.as_str(),
                m.sending_facility.as_str(),
                m.control_id.as_str(),
            )) {
                break;
            }
            end += 1;
        }
        runs.push(&rows[start..end]);
        start = end;
    }
    runs
}

/// SQLite: a read-only descriptor on the database file at `path`, for the checkpointer's early
/// sync ([`Store::spawn_checkpointer`]); `None` where it cannot be had (the checkpointer then
/// leaves all syncing to SQLite).
///
/// One per file, and never closed: closing *any* descriptor of a file drops every POSIX lock the
/// process holds on it, SQLite's included (SQLite's "How To Corrupt" §2.2). So the descriptors
/// live in a process-wide table, keyed by device and inode, until the process exits.
#[cfg(unix)]
fn sync_handle(path: &str) -> Option<std::sync::Arc<std::fs::File>> {
    use std::os::unix::fs::MetadataExt;
    type Handles = std::collections::HashMap<(u64, u64), std::sync::Arc<std::fs::File>>;
    static HANDLES: std::sync::OnceLock<std::sync::Mutex<Handles>> = std::sync::OnceLock::new();
    let meta = std::fs::metadata(path).ok()?;
    let key = (meta.dev(), meta.ino());
    let mut handles = HANDLES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(f) = handles.get(&key) {
        return Some(f.clone());
    }
    // Opened only when the table has none for this file, so no descriptor of it is ever dropped.
    let f = std::sync::Arc::new(std::fs::File::open(path).ok()?);
    handles.insert(key, f.clone());
    Some(f)
}

#[cfg(not(unix))]
fn sync_handle(_path: &str) -> Option<std::sync::Arc<std::fs::File>> {
    None
}

/// SQLite, before the checkpointer asks the writer to start the WAL over: sync the database file
/// (`db_file`, see [`sync_handle`]) so the writer's own checkpoint sync finds few pages. The
/// writer keeps committing while a sync runs, so copy (PASSIVE checkpoint) and sync again, each
/// round covering the shorter time of the last sync, until one takes less than `quick` (at most
/// three rounds). A failure ends it early: the writer's checkpoint syncs anyway and reports it.
async fn sync_early(db_file: &std::sync::Arc<std::fs::File>, pool: &AnyPool, quick: Duration) {
    for _ in 0..3 {
        let f = db_file.clone();
        let began = std::time::Instant::now();
        let synced = tokio::task::spawn_blocking(move || f.sync_data())
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        if let Err(e) = synced {
            tracing::warn!(error = %e, "early sync of the database file failed");
            return;
        }
        if began.elapsed() < quick {
            return;
        }
        if sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_optional(pool)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// SQLite: WAL size (frames, 4 KiB each: 64 MiB) from which the WAL is made to start over.
const WAL_RESTART_FRAMES: i64 = 16384;

/// SQLite: the background checkpointer's pause between two PASSIVE checkpoints (ms). A
/// checkpoint copies each page changed since the last one once, however often it was written in
/// between; the index B-tree pages are rewritten by nearly every group commit, so copying every
/// 500 ms instead of every 50 ms writes far fewer pages (MLLP ingest, 8 connections: ~15% more
/// messages per second, the checkpointer's CPU from ~33% to ~15%).
const CHECKPOINT_EVERY_MS: u64 = 500;

/// Rows per multi-row INSERT (17 parameters each; SQLite allows 32,766, PostgreSQL 65,535).
const MAX_ROWS_PER_INSERT: usize = 512;

const MIGRATIONS_SQLITE: &[(i64, &str)] = &[
    (1, include_str!("sqlite.sql")),
    (2, include_str!("sqlite_2.sql")),
    (3, include_str!("sqlite_3.sql")),
    (4, include_str!("sqlite_4.sql")),
    (5, include_str!("sqlite_5.sql")),
];
const MIGRATIONS_POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("postgres.sql")),
    (2, include_str!("postgres_2.sql")),
    (3, include_str!("postgres_3.sql")),
    (4, include_str!("postgres_4.sql")),
    (5, include_str!("postgres_5.sql")),
    (6, include_str!("postgres_6.sql")),
];

/// Columns read by [`StoredMessage::from_row`], in order.
pub(crate) const COLUMNS: &str = "id, received_at, updated_at, source, sending_application, \
    sending_facility, control_id, message_type, charset, content_hash, status, ack_code, collision, \
    duplicate_of, raw, diagnostics, output, ack, output_z";

impl StoredMessage {
    pub(crate) fn from_row(r: &AnyRow) -> Result<StoredMessage, sqlx::Error> {
        let status: String = r.try_get(10)?;
        Ok(StoredMessage {
            id: r.try_get(0)?,
            received_at: r.try_get(1)?,
            updated_at: r.try_get(2)?,
            source: r.try_get(3)?,
            sending_application: r.try_get(4)?,
            sending_facility: r.try_get(5)?,
            control_id: r.try_get(6)?,
            message_type: r.try_get(7)?,
            charset: r.try_get(8)?,
            content_hash: r.try_get(9)?,
            status: Status::parse(&status).unwrap_or(Status::Received),
            ack_code: r.try_get(11)?,
            collision: r.try_get::<i32, _>(12)? != 0,
            duplicate_of: r.try_get(13)?,
            raw: r.try_get(14)?,
            diagnostics: r.try_get(15)?,
            output: packed::output_text(r.try_get(0)?, r.try_get(16)?, r.try_get(18)?)
                .map_err(|e| sqlx::Error::Decode(e.into()))?,
            ack: r.try_get(17)?,
        })
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Connect, configure and migrate. `sqlite://PATH` (the file and its directory are created)
    /// or `postgres://…`.
    pub async fn open(url: &str, durability: Durability) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if let Some(dir) = std::path::Path::new(path).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Db {
                    op: "create the database directory",
                    source: sqlx::Error::Io(e),
                })?;
            }
            (Backend::Sqlite, format!("sqlite://{path}?mode=rwc"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let sync = match durability {
            Durability::PowerLoss => "FULL",
            Durability::ProcessCrash => "NORMAL",
        };
        let pragmas = format!(
            "PRAGMA page_size=4096; PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; \
             PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON; PRAGMA wal_autocheckpoint=0; \
             PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY;"
        );
        let sqlite_path = url
            .strip_prefix("sqlite://")
            .map(|p| p.split('?').next().unwrap_or(p).to_string());
        let mut opts = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(10))
            // A ping per acquire would be one more round trip per commit; broken connections
            // surface as errors and the pool replaces them.
            .test_before_acquire(false);
        // PostgreSQL sessions: `TCP_NODELAY` (sqlx 0.9.0 leaves Nagle's algorithm on: see
        // `nodelay`) and, on the writers, no sequential scans. Every statement of the write path
        // looks rows up by key or inserts them, but before a table's first ANALYZE (a new
        // database, filling fast) the planner took `id IN (60 ids)` for 12,000 of 33,000 rows
        // and scanned the table, and sqlx's prepared statements kept such plans: the commit's
        // lookups averaged 1–4.6 ms instead of 0.1–0.7 (27 ms at worst). Readers (the facade's
        // searches, the message API) keep the planner's choice.
        // Parsed on PostgreSQL only: sqlx's parser warns about the SQLite URL's `mode=rwc`.
        let pg_port = match backend {
            Backend::Postgres => url
                .parse::<sqlx::postgres::PgConnectOptions>()
                .map(|o| o.get_port())
                .unwrap_or(5432),
            Backend::Sqlite => 0,
        };
        let pg_session = |opts: AnyPoolOptions, writer: bool| {
            opts.after_connect(move |conn, _| {
                Box::pin(async move {
                    if writer {
                        conn.execute("SET enable_seqscan = off").await?;
                    }
                    if let Err(e) = nodelay::set_on_connections_to(pg_port) {
                        static WARNED: std::sync::Once = std::sync::Once::new();
                        WARNED.call_once(|| {
                            tracing::warn!(
                                error = %e,
                                "could not set TCP_NODELAY on the PostgreSQL connections: over TLS, \
                                 a statement larger than 16 KiB may wait 40 ms for a delayed ACK \
                                 (allow pidfd_getfd, e.g. Docker's CAP_SYS_PTRACE, or use \
                                 sslmode=disable on a trusted network)"
                            );
                        });
                    }
                    Ok(())
                })
            })
        };
        let writer_opts = opts.clone();
        if backend == Backend::Postgres {
            opts = pg_session(opts, false);
        }
        if backend == Backend::Sqlite {
            let pragmas = pragmas.clone();
            opts = opts.after_connect(move |conn, _| {
                let pragmas = pragmas.clone();
                Box::pin(async move {
                    conn.execute(sqlx::AssertSqlSafe(pragmas)).await?;
                    Ok(())
                })
            });
        }
        let pool = opts.clone().connect(&url).await.map_err(db("connect"))?;
        // SQLite: one connection for all writes. A connection's page cache is dropped whenever
        // another connection has written, so writes spread over a pool start cold and re-read
        // every B-tree page they touch; a single writer keeps its cache (measured: ~5× the
        // commit rate with the resource index tables). There is one writer task anyway.
        let writer = match backend {
            Backend::Sqlite => opts
                .max_connections(1)
                .connect(&url)
                .await
                .map_err(db("connect"))?,
            // Writes on their own connections (the group-commit writer, outcome and ACK updates,
            // outbox claims and results, migrations), without sequential scans.
            Backend::Postgres => pg_session(writer_opts, true)
                .max_connections(4)
                .connect(&url)
                .await
                .map_err(db("connect"))?,
        };
        let mut store = Store {
            pool,
            writer,
            backend,
            sinks: Sinks::default(),
            outbox_signal: Default::default(),
            forward: Default::default(),
            lite: None,
            readers: None,
            wal_restart: Default::default(),
        };
        store.migrate().await?;
        let mut db_file = None;
        if let (Backend::Sqlite, Some(path)) = (backend, sqlite_path) {
            db_file = sync_handle(&path);
            // After the migrations (which run through sqlx): the schema is in place.
            let mut lite = exec::Lite::open(&path, &pragmas)?;
            lite.set_wal_restart(store.wal_restart.clone());
            store.lite = Some(std::sync::Arc::new(std::sync::Mutex::new(lite)));
            store.readers = Some(std::sync::Arc::new(Readers {
                path: path.clone(),
                pragmas: pragmas.clone(),
                idle: std::sync::Mutex::new(Vec::new()),
            }));
        }
        if backend == Backend::Sqlite {
            store.spawn_checkpointer(db_file);
        }
        Ok(store)
    }

    /// SQLite only: checkpoint the WAL from a background task instead of inside a commit
    /// (`wal_autocheckpoint=0` on every connection), so a commit does not pay for copying the WAL
    /// into the database. PASSIVE never blocks writers, but under constant load the WAL is never
    /// completely copied when a transaction begins, and SQLite only starts the WAL over from its
    /// beginning then. So past `WAL_RESTART_FRAMES` the checkpointer copies in quick succession
    /// (so little is left to copy) and then asks the writer to copy the rest between two of its
    /// transactions ([`exec::Lite`]'s `catch_up_wal`), after which its next transaction starts
    /// the WAL over: a bounded WAL file and recovery time, without blocking writers. Ends with the
    /// pool.
    ///
    /// Before asking, it flushes the database file to disk itself (`db_file`, see
    /// [`sync_handle`]). SQLite syncs the database only at the end of a checkpoint that reached the
    /// end of the WAL, which under load is only ever the writer's: that one `fsync` then wrote out
    /// every page the background had copied since the last WAL restart, 20–50 ms during which the
    /// writer committed nothing (perf trace, 8 connections: 24 such syncs, 631 ms of the writer's
    /// 8 s). Flushed here, off the writer ([`sync_early`]), its own sync finds a few pages left.
    /// Durability is unchanged: these are extra syncs, SQLite's own still happens before the WAL
    /// starts over.
    fn spawn_checkpointer(&self, db_file: Option<std::sync::Arc<std::fs::File>>) {
        /// A checkpoint this quick left little for the writer to copy.
        const QUICK: Duration = Duration::from_millis(3);
        /// Checkpoints in quick succession before asking the writer anyway.
        const TRIES: u32 = 8;
        let pool = self.pool.clone();
        let restart = self.wal_restart.clone();
        tokio::spawn(async move {
            let mut tries = 0u32;
            loop {
                let pause = if tries > 0 { 5 } else { CHECKPOINT_EVERY_MS };
                tokio::time::sleep(Duration::from_millis(pause)).await;
                if pool.is_closed() {
                    break;
                }
                let started = std::time::Instant::now();
                match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_optional(&pool)
                    .await
                {
                    Ok(Some(row)) => {
                        let log: i64 = row.try_get(1).unwrap_or(0);
                        if log <= WAL_RESTART_FRAMES {
                            tries = 0;
                            continue;
                        }
                        tries += 1;
                        if started.elapsed() < QUICK || tries >= TRIES {
                            if let Some(f) = &db_file {
                                sync_early(f, &pool, QUICK).await;
                            }
                            restart.store(true, std::sync::atomic::Ordering::Relaxed);
                            tries = 0;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if pool.is_closed() {
                            break;
                        }
                        tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                    }
                }
            }
        });
    }

    /// A write transaction. On SQLite `BEGIN IMMEDIATE`: a deferred transaction that reads first
    /// cannot wait for the write lock (SQLite answers "database is locked" at once when, e.g., an
    /// outbox claim holds it), so take it up front and let busy_timeout wait.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.writer.begin().await,
        }
        .map_err(db("begin"))
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The same store writing to `sinks` (call before handing clones out).
    pub fn with_sinks(mut self, sinks: Sinks) -> Store {
        self.sinks = sinks;
        self
    }

    /// Where converted messages go.
    pub fn sinks(&self) -> Sinks {
        self.sinks
    }

    /// Notified after every commit that wrote outbox rows.
    pub fn outbox_signal(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.outbox_signal.clone()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await.map_err(db("begin migration"))?;
        if self.backend == Backend::Postgres {
            // Replicas starting together: one migrates, the others wait.
            sqlx::query("SELECT pg_advisory_xact_lock(7250001)")
                .execute(&mut *tx)
                .await
                .map_err(db("lock for migration"))?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS v2fhir_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(db("create the migrations table"))?;
        let done: Vec<i64> = sqlx::query("SELECT version FROM v2fhir_migrations")
            .fetch_all(&mut *tx)
            .await
            .map_err(db("read applied migrations"))?
            .iter()
            .filter_map(|r| r.try_get::<i64, _>(0).ok())
            .collect();
        let list = match self.backend {
            Backend::Sqlite => MIGRATIONS_SQLITE,
            Backend::Postgres => MIGRATIONS_POSTGRES,
        };
        for (version, sql) in list {
            if done.contains(version) {
                continue;
            }
            tx.execute(*sql).await.map_err(db("apply a migration"))?;
            sqlx::query("INSERT INTO v2fhir_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(now_micros())
                .execute(&mut *tx)
                .await
                .map_err(db("record a migration"))?;
        }
        tx.commit().await.map_err(db("commit migration"))?;
        Ok(())
    }

    /// Cheap liveness query for `/health`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .fetch_one(&self.pool)
            .await
            .map_err(db("ping"))?;
        Ok(())
    }

    /// Write a batch of messages in one transaction (group commit), detecting duplicates: the same
    /// sender, control id and content hash as a logged message → status `duplicate`, its earlier
    /// ACK returned; same sender and control id with other content → logged with `collision`.
    /// All or nothing: on error nothing of the batch is stored.
    ///
    /// Statements per batch, not per message: one duplicate lookup and one multi-row INSERT per
    /// run of rows without a repeated key (usually the whole batch). Per-statement round trips
    /// dominate the cost otherwise (sqlx runs SQLite on a worker thread).
    pub async fn commit<M: std::borrow::Borrow<NewMessage>>(
        &self,
        batch: &[M],
    ) -> Result<Vec<Committed>, StoreError> {
        let rows: Vec<&NewMessage> = batch.iter().map(|m| m.borrow()).collect();
        let runs = split_runs(&rows);
        let has_resources = rows.iter().any(|m| !m.resources.is_empty());
        let writes_more =
            (has_resources && (self.sinks.local || self.sinks.upstream)) || self.forwarding();
        if let ([run], false, None) = (runs.as_slice(), writes_more, &self.lite) {
            // PostgreSQL: one run is one INSERT statement, atomic on its own, so no BEGIN/COMMIT
            // round trips.
            // (A concurrent insert of the same message by another replica fails the unique
            // index and so the statement; the caller retries and then sees the original.)
            let mut conn = self.writer.acquire().await.map_err(db("acquire"))?;
            return self.commit_run(&mut *conn, run).await;
        }
        let out = write_tx!(self, |c| self.commit_runs(c, &runs))?;
        if self.sinks.upstream && out.iter().any(|c| c.status == Status::Converted) {
            self.outbox_signal.notify_one();
        }
        self.wake_forwarders();
        Ok(out)
    }

    /// Run `f` on SQLite's writer connection (a blocking call, see [`blocking`]).
    fn with_lite<T>(
        &self,
        lite: &std::sync::Mutex<exec::Lite>,
        f: impl FnOnce(&mut exec::Lite) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        blocking(|| f(&mut lite.lock().unwrap_or_else(|e| e.into_inner())))
    }

    /// SQLite: one write transaction on the writer connection, to which `f` adds messages as
    /// they come ([`Group::add`]), committed when `f` returns `Ok` (rolled back on `Err`: nothing
    /// `f` added is then stored). A group commit that does not wait for its last message before
    /// writing the first: the writer executes one message's statements while the lanes still
    /// convert the next ones. A blocking call, for the writer thread. `None` on PostgreSQL (its
    /// writer commits whole batches, see [`Store::commit`]).
    pub fn lite_group<T>(
        &self,
        f: impl FnOnce(&mut Group<'_>) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        let lite = self.lite.as_ref()?;
        let mut converted = false;
        let out = self.with_lite(lite, |c| {
            c.transaction(|c| {
                f(&mut Group {
                    store: self,
                    conn: c,
                    converted: &mut converted,
                })
            })
        });
        if out.is_ok() && converted && self.sinks.upstream {
            self.outbox_signal.notify_one();
        }
        if out.is_ok() {
            self.wake_forwarders();
        }
        Some(out)
    }

    /// SQLite: when the checkpointer asked for it, copy the rest of the WAL into the database
    /// so that the next write transaction starts the WAL over (see [`Store::spawn_checkpointer`]).
    /// The writer thread calls this after answering a group, so the copy delays no ACK of it.
    /// A blocking call; nothing to do on PostgreSQL.
    ///
    /// Returns whether the WAL is completely copied (or nothing was asked).
    pub fn catch_up_wal(&self) -> bool {
        match &self.lite {
            Some(lite) if self.wal_restart.load(std::sync::atomic::Ordering::Relaxed) => self
                .with_lite(lite, |c| Ok(c.catch_up_wal()))
                .unwrap_or(false),
            _ => true,
        }
    }

    /// SQLite: ask the writer to copy the rest of the WAL, as the checkpointer does when the WAL
    /// has grown (tests).
    #[doc(hidden)]
    pub fn request_wal_restart(&self) {
        self.wal_restart
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    async fn commit_runs<E: exec::Exec>(
        &self,
        conn: &mut E,
        runs: &[&[&NewMessage]],
    ) -> Result<Vec<Committed>, StoreError> {
        let mut out: Vec<Committed> = Vec::with_capacity(runs.iter().map(|r| r.len()).sum());
        for run in runs {
            out.extend(self.commit_run(conn, run).await?);
        }
        Ok(out)
    }

    async fn commit_run<E: exec::Exec>(
        &self,
        conn: &mut E,
        run: &[&NewMessage],
    ) -> Result<Vec<Committed>, StoreError> {
        use exec::Cols;
        use sql::Arg;
        // 1. Earlier messages with the same control ids (sender filtered below).
        let sql = format!(
            "SELECT id, sending_application, sending_facility, control_id, content_hash, ack \
             FROM messages WHERE status <> 'duplicate' AND control_id IN ({}) ORDER BY id",
            sql::placeholders(run.len())
        );
        let args: Vec<Arg> = run
            .iter()
            .map(|m| Arg::Text(m.control_id.clone()))
            .collect();
        let found = conn.fetch("look up control ids", &sql, &args).await?;
        type Key = (String, String, String);
        let mut earlier: std::collections::HashMap<Key, Vec<(i64, String, Option<String>)>> =
            std::collections::HashMap::new();
        for r in &found {
            let key: Key = (r.text(1)?, r.text(2)?, r.text(3)?);
            earlier
                .entry(key)
                .or_default()
                .push((r.int(0)?, r.text(4)?, r.opt_text(5)?));
        }
        // 2. Decide each row.
        let mut decided: Vec<Decided> = run
            .iter()
            .map(|m| {
                let key = (
                    m.sending_application.clone(),
                    m.sending_facility.clone(),
                    m.control_id.clone(),
                );
                let prior = earlier.get(&key).map(Vec::as_slice).unwrap_or(&[]);
                match prior.iter().find(|(_, h, _)| *h == m.content_hash) {
                    Some((id, _, ack)) => Decided {
                        m,
                        status: Status::Duplicate,
                        ack: ack.clone().unwrap_or_default(),
                        duplicate_of: Some(*id),
                        collision: false,
                    },
                    None => Decided {
                        m,
                        status: m.status,
                        ack: m.ack.clone(),
                        duplicate_of: None,
                        // Input without a control id (not HL7) shares the empty key: no collision.
                        collision: !prior.is_empty() && !m.control_id.is_empty(),
                    },
                }
            })
            .collect();
        // 2b. Versioned writes (`ifMatch`, FHIR requests): each names the version a resource
        // must be at. Checked here, in the writer's transaction and in commit order (a request
        // earlier in the run that changes the resource moves its version on), so two clients
        // updating from the same version cannot both succeed. A request that fails the check is
        // logged as refused (412) and writes none of its resources.
        if decided.iter().any(|d| {
            d.status == Status::Converted && d.m.resources.iter().any(|r| r.if_match.is_some())
        }) {
            self.check_versions(conn, &mut decided).await?;
        }
        // 3. One INSERT for the run.
        const COLS: usize = 19;
        let mut sql = String::from(
            "INSERT INTO messages (received_at, updated_at, source, sending_application, \
             sending_facility, control_id, message_type, charset, content_hash, status, ack_code, \
             collision, duplicate_of, raw, diagnostics, output, output_z, ack, order_key) VALUES ",
        );
        sql.push_str(&sql::values_list(decided.len(), COLS));
        sql.push_str(" RETURNING id, sending_application, sending_facility, control_id");
        let now = now_micros();
        let mut args: Vec<Arg> = Vec::with_capacity(decided.len() * COLS);
        for d in &decided {
            let m = d.m;
            let dup = d.status == Status::Duplicate;
            let (output, packed) = if dup {
                (None, None)
            } else {
                packed::columns(m.output.as_deref(), m.output_packed.as_deref())
            };
            args.extend([
                Arg::Int(m.received_at),
                Arg::Int(now),
                Arg::Text(m.source.clone()),
                Arg::Text(m.sending_application.clone()),
                Arg::Text(m.sending_facility.clone()),
                Arg::Text(m.control_id.clone()),
                Arg::Text(m.message_type.clone()),
                Arg::Text(m.charset.clone()),
                Arg::Text(m.content_hash.clone()),
                Arg::Text(d.status.as_str().to_string()),
                Arg::Text(m.ack_code.clone()),
                Arg::Int(d.collision as i64),
                Arg::opt_int(d.duplicate_of),
                Arg::Blob(m.raw.clone()),
                Arg::opt_text(if dup { None } else { m.diagnostics.as_deref() }),
                Arg::opt_text(output),
                Arg::opt_blob(packed),
                Arg::Text(d.ack.clone()),
                // With an upstream: the patient key, so a replay can re-deliver later messages.
                Arg::opt_text(
                    if self.sinks.upstream && !dup && !m.resources.is_empty() {
                        Some(outbox::order_key(&m.resources, String::new)).filter(|k| !k.is_empty())
                    } else {
                        None
                    }
                    .as_deref(),
                ),
            ]);
        }
        let returned = conn.fetch("insert messages", &sql, &args).await?;
        drop(args);
        // RETURNING order is not promised: match rows by their key (unique within a run).
        let mut ids: std::collections::HashMap<Key, i64> = std::collections::HashMap::new();
        for r in &returned {
            ids.insert((r.text(1)?, r.text(2)?, r.text(3)?), r.int(0)?);
        }
        let mut committed = Vec::with_capacity(decided.len());
        let mut resources: Vec<(i64, &NewResource)> = Vec::new();
        let mut outbox_rows: Vec<(i64, String)> = Vec::new();
        let mut forward_rows: Vec<(i64, &str)> = Vec::new();
        for d in decided {
            let key = (
                d.m.sending_application.clone(),
                d.m.sending_facility.clone(),
                d.m.control_id.clone(),
            );
            let id = ids.get(&key).copied().ok_or(StoreError::Internal(
                "an inserted message row was not returned",
            ))?;
            if d.status == Status::Converted {
                if self.sinks.local {
                    resources.extend(d.m.resources.iter().map(|r| (id, r)));
                }
                if self.sinks.upstream && !d.m.resources.is_empty() {
                    outbox_rows.push((
                        id,
                        outbox::order_key(&d.m.resources, || format!("message/{id}")),
                    ));
                }
            }
            for destination in
                self.forward_targets(d.status, &d.m.source, &d.m.message_type, &d.m.resources)
            {
                forward_rows.push((id, destination));
            }
            committed.push(Committed {
                id,
                status: d.status,
                ack: d.ack,
                duplicate_of: d.duplicate_of,
                collision: d.collision,
            });
        }
        resources::apply(conn, &resources, now).await?;
        if !outbox_rows.is_empty() {
            outbox::enqueue(conn, &outbox_rows, now).await?;
        }
        if !forward_rows.is_empty() {
            forward::enqueue(conn, &forward_rows, now).await?;
        }
        Ok(committed)
    }

    /// Versioned writes of a run (see `commit_run`, step 2b): the resources they name are read
    /// once; then, in order, a request whose `ifMatch` versions are all current goes on (and its
    /// writes move the versions on for the requests after it), one that is not becomes a refusal
    /// (status `error`, its stored decision answering 412).
    async fn check_versions<E: exec::Exec>(
        &self,
        conn: &mut E,
        decided: &mut [Decided<'_>],
    ) -> Result<(), StoreError> {
        use exec::Cols;
        use std::collections::HashMap;
        // The resources named by a versioned write, and their current (version, deleted, hash).
        let mut named: HashMap<(String, String), (i64, bool, String)> = HashMap::new();
        for d in decided.iter() {
            if d.status != Status::Converted {
                continue;
            }
            for r in d.m.resources.iter().filter(|r| r.if_match.is_some()) {
                named.insert(
                    (r.resource_type.clone(), r.id.clone()),
                    (0, true, String::new()),
                );
            }
        }
        let ids: Vec<String> = named.keys().map(|(_, id)| id.clone()).collect();
        for chunk in ids.chunks(500) {
            let text = format!(
                "SELECT type, id, version, deleted, hash FROM resources WHERE id IN ({})",
                sql::placeholders(chunk.len())
            );
            let args: Vec<sql::Arg> = chunk.iter().map(|i| sql::Arg::Text(i.clone())).collect();
            for r in conn.fetch("read versions", &text, &args).await? {
                let key = (r.text(0)?, r.text(1)?);
                if let Some(slot) = named.get_mut(&key) {
                    *slot = (r.int(2)?, r.int(3)? != 0, r.text(4)?);
                }
            }
        }
        for d in decided.iter_mut() {
            if d.status != Status::Converted {
                continue;
            }
            let resources = &d.m.resources;
            let stale: Vec<String> = resources
                .iter()
                .filter_map(|r| {
                    let want = r.if_match?;
                    let (version, deleted, _) = named
                        .get(&(r.resource_type.clone(), r.id.clone()))
                        .cloned()
                        .unwrap_or((0, true, String::new()));
                    let current = if deleted && version == 0 {
                        None
                    } else {
                        Some(version)
                    };
                    (current != Some(want) || (deleted && !r.deleted)).then(|| match current {
                        Some(v) => format!(
                            "{}/{} is at version {v}{}, not {want} (If-Match)",
                            r.resource_type,
                            r.id,
                            if deleted { " (deleted)" } else { "" }
                        ),
                        None => format!(
                            "{}/{} does not exist (If-Match {want})",
                            r.resource_type, r.id
                        ),
                    })
                })
                .collect();
            if !stale.is_empty() {
                d.status = Status::Error;
                if let Some(mut plan) = crate::fhir::intake::Plan::from_ack(&d.ack) {
                    plan.status = Some(412);
                    plan.outcome = Some(serde_json::json!({"resourceType": "OperationOutcome",
                        "issue": stale.iter().map(|t| serde_json::json!(
                            {"severity": "error", "code": "conflict", "diagnostics": t})).collect::<Vec<_>>()}));
                    d.ack = serde_json::to_string(&plan).unwrap_or_default();
                }
                continue;
            }
            // Written: the versions move on as `resources::apply` will move them.
            for r in resources.iter() {
                if let Some(slot) = named.get_mut(&(r.resource_type.clone(), r.id.clone())) {
                    let changed = slot.1 != r.deleted || (!r.deleted && slot.2 != r.hash);
                    if changed {
                        *slot = (slot.0 + 1, r.deleted, r.hash.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// The status of one message (without reading its content).
    pub async fn status_of(&self, id: i64) -> Result<Option<Status>, StoreError> {
        let row = sqlx::query("SELECT status FROM messages WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read a message status"))?;
        row.map(|r| r.try_get::<String, _>(0))
            .transpose()
            .map(|s| s.and_then(|s| Status::parse(&s)))
            .map_err(db("decode a message status"))
    }

    /// One message by id.
    pub async fn get(&self, id: i64) -> Result<Option<StoredMessage>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM messages WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read a message"))?;
        row.map(|r| StoredMessage::from_row(&r))
            .transpose()
            .map_err(db("decode a message"))
    }

    /// Replace the outcome of a message after reprocessing (same row: its history is the log),
    /// storing its resources (new versions where they changed) in the same transaction. With an
    /// upstream a converted message is queued for delivery again, followed by the later messages
    /// of its patient that were already delivered. `None` when there is no such message; else
    /// the ids of those later messages.
    pub async fn update_outcome(
        &self,
        id: i64,
        status: Status,
        output: Option<&str>,
        diagnostics: Option<&str>,
        resources: &[NewResource],
    ) -> Result<Option<Vec<i64>>, StoreError> {
        let (found, queued, requeued) = write_tx!(self, |c| self.outcome_tx(
            c,
            id,
            status,
            output,
            diagnostics,
            resources
        ))?;
        if queued {
            self.outbox_signal.notify_one();
        }
        if found {
            self.wake_forwarders();
        }
        Ok(found.then_some(requeued))
    }

    /// [`Store::update_outcome`] inside a transaction: (found, queued for delivery, requeued).
    async fn outcome_tx<E: exec::Exec>(
        &self,
        conn: &mut E,
        id: i64,
        status: Status,
        output: Option<&str>,
        diagnostics: Option<&str>,
        resources: &[NewResource],
    ) -> Result<(bool, bool, Vec<i64>), StoreError> {
        use sql::Arg;
        let (output, packed) = packed::columns(output, None);
        let found = conn
            .execute(
                "update a message",
                "UPDATE messages SET status = $1, output = $2, output_z = $6, diagnostics = $3, \
                 updated_at = $4 WHERE id = $5",
                &[
                    Arg::Text(status.as_str().into()),
                    Arg::opt_text(output),
                    Arg::opt_text(diagnostics),
                    Arg::Int(now_micros()),
                    Arg::Int(id),
                    Arg::opt_blob(packed),
                ],
            )
            .await?
            == 1;
        // Forwarding: a message now accepted is queued (one refused downstream, queued again).
        if found && self.forwarding() {
            let rows = conn
                .fetch(
                    "read a message type",
                    "SELECT source, message_type FROM messages WHERE id = $1",
                    &[Arg::Int(id)],
                )
                .await?;
            if let Some(r) = rows.first() {
                let (source, message_type) = (exec::Cols::text(r, 0)?, exec::Cols::text(r, 1)?);
                let rows: Vec<(i64, &str)> = self
                    .forward_targets(status, &source, &message_type, resources)
                    .into_iter()
                    .map(|d| (id, d))
                    .collect();
                forward::enqueue(conn, &rows, now_micros()).await?;
            }
        }
        let mut queued = false;
        let mut requeued = Vec::new();
        if found && status == Status::Converted {
            if self.sinks.local {
                let items: Vec<(i64, &NewResource)> = resources.iter().map(|r| (id, r)).collect();
                resources::apply(conn, &items, now_micros()).await?;
            }
            if self.sinks.upstream && !resources.is_empty() {
                // Deliver again (a mapping fix, or an upstream fix for a dead message) — and
                // every later message of the same patient already delivered, after it, so the
                // upstream ends with the latest data rather than this older message's.
                let key = outbox::order_key(resources, || format!("message/{id}"));
                requeued = outbox::later_delivered(conn, id, &key).await?;
                let mut rows = vec![(id, key.clone())];
                rows.extend(requeued.iter().map(|l| (*l, key.clone())));
                outbox::enqueue(conn, &rows, now_micros()).await?;
                conn.execute(
                    "record the patient key",
                    "UPDATE messages SET order_key = $1 WHERE id = $2",
                    &[Arg::Text(key), Arg::Int(id)],
                )
                .await?;
                queued = true;
            }
        } else if found {
            // Nothing to deliver any more.
            conn.execute(
                "drop an outbox row",
                "DELETE FROM outbox WHERE message_id = $1",
                &[Arg::Int(id)],
            )
            .await?;
        }
        Ok((found, queued, requeued))
    }

    /// Number of logged messages per status (for metrics and health).
    pub async fn counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows =
            sqlx::query("SELECT status, COUNT(*) FROM messages GROUP BY status ORDER BY status")
                .fetch_all(&self.pool)
                .await
                .map_err(db("count messages"))?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("decode counts"))
    }

    /// Close the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// SQLite's direct read connections (absent on PostgreSQL).
    pub(crate) fn readers(&self) -> Option<&Readers> {
        self.readers.as_deref()
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_database_file_gets_one_sync_descriptor_for_the_process() {
        let dir = std::env::temp_dir().join(format!("v2fhir-sync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.db"), dir.join("b.db"));
        std::fs::write(&a, b"").unwrap();
        std::fs::write(&b, b"").unwrap();
        let first = sync_handle(a.to_str().unwrap()).unwrap();
        // Another spelling of the same file: the same descriptor (a second one would have to be
        // closed some day, dropping SQLite's locks on the file).
        let again = sync_handle(dir.join(".").join("a.db").to_str().unwrap()).unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &again));
        let other = sync_handle(b.to_str().unwrap()).unwrap();
        assert!(!std::sync::Arc::ptr_eq(&first, &other));
        assert!(
            first.sync_data().is_ok(),
            "a read-only descriptor can be synced"
        );
        assert!(sync_handle(dir.join("missing.db").to_str().unwrap()).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn status_round_trips() {
        for s in [
            Status::Received,
            Status::Converted,
            Status::Delivered,
            Status::Dead,
            Status::Error,
            Status::Rejected,
            Status::Duplicate,
        ] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("bogus"), None);
    }
}
