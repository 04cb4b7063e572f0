//! The directory source: HL7 v2 files dropped into a directory (an SFTP drop, a batch export),
//! each read whole — one message, several, or an FHS/BHS batch — and submitted to the pipeline
//! like an HTTP body. A file is moved out only after its messages are committed: to `done/` when
//! every message was accepted, to `error/` when one was not (the messages are in the log either
//! way, with their diagnostics, for reprocessing). If the store fails, the file stays and is
//! tried again at the next poll; a message committed before a crash is then a duplicate, answered
//! from the log and not processed twice.
//!
//! Files whose name starts with `.` and files modified in the last `settle` are left alone, so a
//! writer can write in place (or write a dot-file and rename it, the safer habit).

use crate::ingest::{Pipeline, Source};
use crate::v2::ack::Outcome;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Settings of the directory source.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// The directory polled.
    pub dir: PathBuf,
    /// Where files whose messages were all accepted go.
    pub done_dir: PathBuf,
    /// Where files with a message not accepted (or not readable, or too large) go.
    pub error_dir: PathBuf,
    /// Time between polls.
    pub poll: Duration,
    /// A file modified more recently than this is left for the next poll.
    pub settle: Duration,
    /// Larger files are not read (moved to `error_dir`).
    pub max_bytes: u64,
}

/// What the source has done, for `GET /health`.
#[derive(Debug, Default)]
pub struct FileStatus {
    /// µs since the epoch of the last poll (0: none yet).
    pub last_poll: std::sync::atomic::AtomicI64,
    /// Files ready to read at the last poll.
    pub waiting: std::sync::atomic::AtomicU64,
    /// Files moved to the done directory.
    pub done: std::sync::atomic::AtomicU64,
    /// Files moved to the error directory.
    pub errors: std::sync::atomic::AtomicU64,
    /// The last poll could not read the directory.
    pub unreadable: std::sync::atomic::AtomicBool,
}

impl FileStatus {
    /// As JSON.
    pub fn to_json(&self, dir: &Path) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        let last = self.last_poll.load(Relaxed);
        serde_json::json!({
            "dir": dir.display().to_string(),
            "status": if self.unreadable.load(Relaxed) { "error" } else { "ok" },
            "last_poll": (last > 0).then(|| crate::fhir::datetime::instant_from_micros(last)),
            "waiting": self.waiting.load(Relaxed),
            "done": self.done.load(Relaxed),
            "errors": self.errors.load(Relaxed),
        })
    }
}

/// Why the source could not start (names the directory).
#[derive(Debug, thiserror::Error)]
#[error("file source: {dir}: {what}")]
pub struct FileSourceError {
    dir: String,
    what: String,
}

/// Create the directories and poll until `stop` turns true (a file being processed is finished).
pub async fn serve(
    cfg: FileConfig,
    pipeline: Arc<Pipeline>,
    status: Arc<FileStatus>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut tick = tokio::time::interval(cfg.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = async { drop(stop.wait_for(|s| *s).await) } => return,
        }
        let (files, readable) = ready_files(&cfg).await;
        status.unreadable.store(!readable, Relaxed);
        status.waiting.store(files.len() as u64, Relaxed);
        status.last_poll.store(crate::store::now_micros(), Relaxed);
        for path in files {
            if *stop.borrow() {
                return;
            }
            match process(&cfg, &pipeline, &path).await {
                Some(true) => {
                    status.done.fetch_add(1, Relaxed);
                    metrics::counter!("v2fhir_files_total", "result" => "done").increment(1);
                }
                Some(false) => {
                    status.errors.fetch_add(1, Relaxed);
                    metrics::counter!("v2fhir_files_total", "result" => "error").increment(1);
                }
                None => {}
            }
            status.waiting.fetch_sub(1, Relaxed);
        }
    }
}

/// Make sure the three directories exist.
pub fn prepare_dirs(cfg: &FileConfig) -> Result<(), FileSourceError> {
    for d in [&cfg.dir, &cfg.done_dir, &cfg.error_dir] {
        std::fs::create_dir_all(d).map_err(|e| FileSourceError {
            dir: d.display().to_string(),
            what: e.to_string(),
        })?;
    }
    Ok(())
}

/// The files to read now, oldest first (by modification time, then name), and whether the
/// directory could be read.
async fn ready_files(cfg: &FileConfig) -> (Vec<PathBuf>, bool) {
    let dir = cfg.dir.clone();
    let settle = cfg.settle;
    tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            tracing::warn!(dir = %dir.display(), "file source: cannot read the directory");
            return (Vec::new(), false);
        };
        let now = std::time::SystemTime::now();
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                if !meta.is_file() {
                    return None;
                }
                let modified = meta.modified().ok()?;
                let age = now.duration_since(modified).unwrap_or_default();
                (age >= settle).then(|| (modified, e.path()))
            })
            .collect();
        files.sort();
        (files.into_iter().map(|(_, p)| p).collect(), true)
    })
    .await
    .unwrap_or((Vec::new(), false))
}

/// Read, submit, and move one file: `Some(true)` moved to done, `Some(false)` to error, `None`
/// left for the next poll.
async fn process(cfg: &FileConfig, pipeline: &Pipeline, path: &Path) -> Option<bool> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let size = tokio::fs::metadata(path)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    if size > cfg.max_bytes {
        tracing::warn!(file = %name, size, max = cfg.max_bytes, "file source: file too large; moved to the error directory");
        move_to(path, &cfg.error_dir, &name).await;
        return Some(false);
    }
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(file = %name, error = %e, "file source: cannot read the file; tried again at the next poll");
            return None;
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        tracing::warn!(file = %name, "file source: the file is empty; moved to the error directory");
        move_to(path, &cfg.error_dir, &name).await;
        return Some(false);
    }
    let reply = match pipeline.submit(bytes.into(), Source::File).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(file = %name, error = %e, "file source: not submitted; tried again at the next poll");
            return None;
        }
    };
    if reply.messages.iter().any(|m| m.committed.is_none()) {
        tracing::warn!(file = %name, "file source: the store did not commit every message; the file stays and is tried again");
        return None;
    }
    let accepted = reply.messages.iter().all(|m| m.outcome == Outcome::Accept);
    let ids: Vec<i64> = reply
        .messages
        .iter()
        .filter_map(|m| m.committed.as_ref().map(|c| c.id))
        .collect();
    if accepted {
        tracing::info!(file = %name, messages = ids.len(), "file source: file committed");
        move_to(path, &cfg.done_dir, &name).await;
    } else {
        tracing::warn!(file = %name, messages = ?ids, "file source: a message of the file was not accepted (see GET /messages/{{id}}); moved to the error directory");
        move_to(path, &cfg.error_dir, &name).await;
    }
    Some(accepted)
}

/// Move `path` into `dir`, under a free name (`name`, `name.1`, …).
async fn move_to(path: &Path, dir: &Path, name: &str) {
    let mut target = dir.join(name);
    let mut n = 1;
    while tokio::fs::try_exists(&target).await.unwrap_or(false) {
        target = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    if let Err(e) = tokio::fs::rename(path, &target).await {
        tracing::error!(file = %name, to = %dir.display(), error = %e, "file source: cannot move the file; it is read again at the next poll (its messages are then duplicates, not processed twice): fix the directory permissions");
    }
}
