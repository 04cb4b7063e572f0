//! The ingest pipeline shared by every v2 source: parse → convert → decide the ACK → group commit
//! → answer. Sources (MLLP, HTTP) hand raw bytes to [`Pipeline::submit`] and send back whatever
//! [`Reply::acks`] holds; they never build ACKs or touch the store themselves.
//!
//! ```text
//!  connection ─┐               ┌─ lane 0 (thread: parse, convert, ACK) ─┐
//!  connection ─┼─ patient key ─┼─ lane 1                                ─┼─ writer (one transaction
//!  connection ─┘   hash        └─ lane n                                ─┘   per group) ─→ reply → ACK
//! ```
//!
//! The writer is a thread on SQLite: it opens the group's transaction with the first message and
//! writes each further one as its lane hands it over, so the writer's statements overlap the
//! lanes' conversions; it commits when no lane holds a message any more, after [`LINGER`] when the
//! queue is empty, at `max_batch` messages, or after [`GROUP_TIME`] however full the queue. On
//! PostgreSQL it is a task that commits what is queued as one batch (one INSERT per run, no
//! statement round trip per message).
//!
//! Invariants:
//! - An ACK leaves only after the transaction holding the message, its output and its status has
//!   committed. When the store fails, the answer is a negative ACK (AE/CE, code 207) and nothing
//!   is claimed.
//! - Messages with the same routing key (sender + PID-3 first identifier) go through one lane and
//!   one writer queue, so they are committed in arrival order; different patients use different
//!   lanes and run in parallel.
//! - Nothing here logs message content (logs carry ids, types, senders and counts) unless
//!   `log.phi` is enabled, which adds the text of messages answered AE/AR.

use crate::mapping::eval::{BundleType, ConvertOptions, convert};
use crate::mapping::plan::Plan;
use crate::store::{Committed, NewMessage, NewResource, Status, Store, StoreError, now_micros};
use crate::v2::ack::{self, AckCode, AckError, AckOptions, AckPlan, Outcome};
use crate::v2::{self, Diagnostic, Hl7Error, Location, Message, ParseOptions, Severity};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Where a message came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The MLLP listener.
    Mllp,
    /// `POST /v2/messages`.
    Http,
    /// FHIR resources written to `/fhir` by device and app backends ([`crate::fhir::intake`]).
    Fhir,
    /// Files dropped into a directory ([`crate::sources::file`]).
    File,
}

impl Source {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Mllp => "mllp",
            Source::Http => "http",
            Source::Fhir => "fhir",
            Source::File => "file",
        }
    }
}

/// Pipeline settings.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Worker threads doing parse + convert; 0 (the default): [`default_lanes`].
    pub lanes: usize,
    /// Most messages per group commit.
    pub max_batch: usize,
    /// Parser settings.
    pub parse: ParseOptions,
    /// Conversion settings (bundle type, default zone, validation).
    pub convert: ConvertOptions,
    /// Log the raw text of messages answered AE/AR (contains PHI: off unless explicitly enabled).
    pub log_phi: bool,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            lanes: 0,
            max_batch: 512,
            parse: ParseOptions::default(),
            convert: ConvertOptions::default(),
            log_phi: false,
        }
    }
}

/// Lanes when none are configured, for `cpus` CPUs: one per CPU, but on SQLite one CPU is left
/// to the writer, a thread of its own that is busy most of the time under load. With as many lanes
/// as CPUs the lanes took turns with the writer on its CPU (2 CPUs, ADT^A01, back to back, two runs
/// each: 1 lane against 2 gave 8 connections 3,061–3,086 against 2,776–2,844 msg/s, p50 2.0
/// against 2.5 ms; 32 connections 3,763 against 3,431; one connection the same). On PostgreSQL the
/// writer is a task that mostly waits for the server, and 2 lanes were as fast or faster.
pub fn default_lanes(backend: crate::store::Backend, cpus: usize) -> usize {
    match backend {
        crate::store::Backend::Sqlite => cpus.saturating_sub(1).max(1),
        crate::store::Backend::Postgres => cpus.max(1),
    }
}

/// The outcome of one submitted message.
#[derive(Debug, Clone)]
pub struct MessageReply {
    /// What was logged (`None` when nothing was: the store failed).
    pub committed: Option<Committed>,
    /// The acknowledgments to send, in order (may be empty: enhanced mode `NE`).
    pub acks: Vec<String>,
    /// Accept, error or reject (of the application acknowledgment).
    pub outcome: Outcome,
    /// The FHIR Bundle, JSON (when converted).
    pub bundle: Option<String>,
    /// The OperationOutcome, JSON (when there is anything to report).
    pub diagnostics: Option<String>,
}

/// The outcome of one submitted frame or body (a batch holds several messages).
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// One per message, in input order.
    pub messages: Vec<MessageReply>,
}

impl Reply {
    /// All acknowledgments to send, in order.
    pub fn acks(&self) -> impl Iterator<Item = &String> {
        self.messages.iter().flat_map(|m| m.acks.iter())
    }

    /// The worst outcome.
    pub fn outcome(&self) -> Outcome {
        self.messages
            .iter()
            .map(|m| m.outcome)
            .max()
            .unwrap_or(Outcome::Reject)
    }
}

/// Why a submission got no reply.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The pipeline is shutting down.
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// One message ready to commit, with what to answer in each case.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The row to write.
    pub row: NewMessage,
    /// The acknowledgments to send once committed.
    pub acks: Vec<String>,
    /// Application outcome.
    pub outcome: Outcome,
}

/// Decide the acknowledgment plan of a parsed message with its conversion findings (grouping,
/// escapes and mapping errors).
pub fn ack_plan(msg: &Message<'_>, conv: &crate::mapping::eval::Conversion) -> AckPlan {
    let mut extra = v2::json::escape_diagnostics(msg);
    extra.extend(conv.structure.iter().cloned());
    extra.extend(conv.ack_diagnostics());
    ack::plan(msg, &extra)
}

/// Does an MSH-15/MSH-16 condition (`AL`, `NE`, `ER`, `SU`; empty = `AL`) ask for this outcome?
pub fn wanted(condition: Option<&str>, outcome: Outcome) -> bool {
    match condition.map(str::trim) {
        Some("NE") => false,
        Some("ER") => outcome != Outcome::Accept,
        Some("SU") => outcome == Outcome::Accept,
        _ => true,
    }
}

fn ack_opts() -> AckOptions {
    AckOptions {
        control_id: crate::clock::next_control_id(),
        timestamp: crate::clock::hl7_now(),
        max_errors: 20,
    }
}

/// Lower-case hex (a digest per resource and message: no formatter per byte).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// SHA-256 of the raw bytes, hex.
pub fn content_hash(raw: &[u8]) -> String {
    hex(&Sha256::digest(raw))
}

/// The message `index` of `frame` (parsed again: these are rare paths, the happy path builds
/// nothing in advance) and an ACK plan saying `code` with one ERR (code 207, `text`).
fn error_207<'a>(
    parsed: &'a v2::Parsed<'a>,
    index: usize,
    text: &str,
    enhanced_code: bool,
) -> Option<(&'a Message<'a>, AckPlan)> {
    let msg = parsed.messages.get(index)?;
    let enhanced = enhanced_code && msg.header().enhanced_mode();
    let plan = AckPlan {
        code: AckCode::for_outcome(Outcome::Error, enhanced),
        send: true,
        errors: vec![AckError {
            code: Hl7Error::ApplicationInternalError,
            severity: Severity::Error,
            location: Location::default(),
            text: text.into(),
        }],
    };
    Some((msg, plan))
}

/// A sink refused message `index` of `frame` (the upstream FHIR server, or the receiver of
/// `forward.ack = after-receiver`), or did not answer in time: its application acknowledgment
/// becomes AE with `text`. Original mode: the one ACK is replaced.
/// Enhanced mode: the commit ACK (CA) stays; the application ACK is replaced, or added when
/// MSH-16 asks for one on errors (`ER`) but not on success. `false` when nothing changed.
fn sink_error_acks(
    frame: &[u8],
    index: usize,
    text: &str,
    parse: &ParseOptions,
    acks: &mut Vec<String>,
) -> bool {
    let Ok(parsed) = v2::parse_with(frame, parse) else {
        return false;
    };
    let Some((msg, plan)) = error_207(&parsed, index, text, false) else {
        return false;
    };
    let h = msg.header();
    let ack = ack::build(msg, &plan, &ack_opts());
    if !h.enhanced_mode() {
        acks.clear();
        acks.push(ack);
        return true;
    }
    let app_sent = wanted(h.application_ack_type.as_deref(), Outcome::Accept);
    if app_sent && acks.len() >= 2 {
        if let Some(last) = acks.last_mut() {
            *last = ack;
        }
        true
    } else if !app_sent && wanted(h.application_ack_type.as_deref(), Outcome::Error) {
        acks.push(ack);
        true
    } else {
        false
    }
}

/// The answer when the store failed: AE (CE in enhanced mode) with code 207.
fn store_failed_ack(raw: &[u8], parse: &ParseOptions) -> String {
    let text = "the message could not be stored; it was not accepted, please resend";
    let parsed = v2::parse_with(raw, parse).ok();
    match parsed.as_ref().and_then(|p| error_207(p, 0, text, true)) {
        Some((msg, plan)) => ack::build(msg, &plan, &ack_opts()),
        None => ack::reject_unparsable(text, &ack_opts()),
    }
}

/// Parse, convert and decide the answers for one frame or body, without storing anything.
/// Pure CPU work: this is what the lanes run, and what `POST /v2/$convert` runs alone.
pub fn prepare(
    raw: &[u8],
    source: Source,
    plan: &Plan,
    cfg: &IngestConfig,
    received_at: i64,
) -> Vec<Prepared> {
    if source == Source::Fhir {
        return vec![crate::fhir::intake::prepare(
            raw,
            received_at,
            cfg.convert.validate,
        )];
    }
    let parsed = match v2::parse_with(raw, &cfg.parse) {
        Ok(p) => p,
        Err(e) => {
            let ack = ack::reject_unparsable(&e.to_string(), &ack_opts());
            let outcome = serde_json::json!({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "structure", "diagnostics": e.to_string()}]});
            return vec![Prepared {
                row: NewMessage {
                    received_at,
                    source: source.as_str().into(),
                    sending_application: String::new(),
                    sending_facility: String::new(),
                    control_id: String::new(),
                    message_type: String::new(),
                    charset: String::new(),
                    content_hash: content_hash(raw),
                    status: Status::Rejected,
                    ack_code: "AR".into(),
                    raw: raw.to_vec(),
                    diagnostics: Some(outcome.to_string()),
                    output: None,
                    output_packed: None,
                    ack: ack.clone(),
                    resources: Vec::new(),
                },
                acks: vec![ack],
                outcome: Outcome::Reject,
            }];
        }
    };
    let single = parsed.messages.len() == 1;
    parsed
        .messages
        .iter()
        .map(|msg| {
            let msg_raw = if single { raw } else { msg.raw() };
            prepare_message(msg, msg_raw, source, plan, cfg, received_at)
        })
        .collect()
}

fn prepare_message(
    msg: &Message<'_>,
    raw: &[u8],
    source: Source,
    plan: &Plan,
    cfg: &IngestConfig,
    received_at: i64,
) -> Prepared {
    let h = msg.header();
    let conv = convert(plan, msg, &cfg.convert);
    let mut ack_plan = ack_plan(msg, &conv);
    let outcome = ack_plan.code.outcome();
    let enhanced = h.enhanced_mode();
    let mut acks = Vec::with_capacity(2);
    let app_code = AckCode::for_outcome(outcome, false);
    if enhanced {
        // Commit acknowledgment: the message is safely stored unless it was rejected.
        let commit = if outcome == Outcome::Reject {
            Outcome::Reject
        } else {
            Outcome::Accept
        };
        if wanted(h.accept_ack_type.as_deref(), commit) {
            let plan = AckPlan {
                code: AckCode::for_outcome(commit, true),
                send: true,
                errors: if commit == Outcome::Reject {
                    ack_plan.errors.clone()
                } else {
                    vec![]
                },
            };
            acks.push(ack::build(msg, &plan, &ack_opts()));
        }
        // Application acknowledgment, sent on the same connection right after (see ARCHITECTURE.md).
        if outcome != Outcome::Reject && wanted(h.application_ack_type.as_deref(), outcome) {
            ack_plan.code = app_code;
            acks.push(ack::build(msg, &ack_plan, &ack_opts()));
        }
    } else {
        acks.push(ack::build(msg, &ack_plan, &ack_opts()));
    }
    let status = match outcome {
        Outcome::Accept => Status::Converted,
        Outcome::Error => Status::Error,
        Outcome::Reject => Status::Rejected,
    };
    let (output, resources) = match (&conv.bundle, outcome) {
        (Some(b), Outcome::Accept) => {
            let (text, resources) = NewResource::from_bundle(b);
            (Some(text), resources)
        }
        _ => (None, Vec::new()),
    };
    let diagnostics = if conv.issues.is_empty() && msg.diagnostics().is_empty() {
        None
    } else {
        Some(json_text(&diagnostics_outcome(msg.diagnostics(), &conv)))
    };
    Prepared {
        row: NewMessage {
            received_at,
            source: source.as_str().into(),
            sending_application: h.sending_application.to_key(),
            sending_facility: h.sending_facility.to_key(),
            control_id: h.control_id.as_deref().unwrap_or("").to_string(),
            message_type: if h.message_code.is_some() {
                h.message_type()
            } else {
                String::new()
            },
            charset: msg.charset().name().to_string(),
            content_hash: content_hash(raw),
            status,
            ack_code: app_code.as_str().to_string(),
            raw: raw.to_vec(),
            diagnostics,
            // Packed here, on the lane, rather than by the one writer.
            output_packed: output.as_deref().and_then(crate::store::packed::pack),
            output,
            ack: acks.join("\n"),
            resources,
        },
        acks,
        outcome,
    }
}

/// Compact JSON text (`fhir::json`: serde_json's bytes, written faster).
fn json_text(v: &serde_json::Value) -> String {
    crate::fhir::json::to_string(v)
}

/// Parse findings and conversion issues as one OperationOutcome.
pub fn diagnostics_outcome(
    parse: &[Diagnostic],
    conv: &crate::mapping::eval::Conversion,
) -> serde_json::Value {
    let mut oo = conv.outcome();
    if let Some(issues) = oo.get_mut("issue").and_then(|i| i.as_array_mut()) {
        for d in parse {
            let sev = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Info => "information",
            };
            issues.push(serde_json::json!({
                "severity": sev, "code": "structure", "diagnostics": d.to_string()
            }));
        }
    }
    oo
}

/// The answer for a frame over the size limit: AR (CR in enhanced mode) with the sender's control
/// id when the head of the frame holds a readable MSH, else a bare AR.
pub fn reject_oversized(head: &[u8], len: usize, limit: usize) -> String {
    let text =
        format!("frame of {len} bytes or more exceeds the limit of {limit} bytes; discarded");
    // Only the MSH line: the rest of the head is a truncated message.
    let end = memchr::memchr2(b'\r', b'\n', head).unwrap_or(head.len());
    match v2::parse_with(&head[..end], &ParseOptions::default()) {
        Ok(p) if !p.messages.is_empty() => {
            let msg = &p.messages[0];
            let plan = AckPlan {
                code: AckCode::for_outcome(Outcome::Reject, msg.header().enhanced_mode()),
                send: true,
                errors: vec![AckError {
                    code: Hl7Error::ValueTooLong,
                    severity: Severity::Error,
                    location: Location::default(),
                    text,
                }],
            };
            ack::build(msg, &plan, &ack_opts())
        }
        _ => ack::reject_unparsable(&text, &ack_opts()),
    }
}

/// The routing key of a raw message: PID-3's first identifier (or, without a PID, MSH-10), found
/// with a byte scan, no parse. Same key → same lane → arrival order kept.
pub fn routing_key(raw: &[u8]) -> &[u8] {
    let head = &raw[..raw.len().min(256)];
    let Some(start) = memchr::memmem::find(head, b"MSH") else {
        return &[];
    };
    let Some(&fs) = raw.get(start + 3) else {
        return &[];
    };
    let cs = raw.get(start + 4).copied().unwrap_or(b'^');
    let rs = raw.get(start + 5).copied().unwrap_or(b'~');
    let field = |seg: usize, n: usize| -> &[u8] {
        let mut i = seg;
        let mut k = 0;
        while i < raw.len() && k < n {
            match raw[i] {
                b'\r' | b'\n' => return &[],
                c if c == fs => k += 1,
                _ => {}
            }
            i += 1;
        }
        let s = i;
        while i < raw.len() && ![fs, cs, rs, b'\r', b'\n'].contains(&raw[i]) {
            i += 1;
        }
        &raw[s..i]
    };
    let pid = [b'\r', b'P', b'I', b'D', fs];
    let pid_lf = [b'\n', b'P', b'I', b'D', fs];
    match memchr::memmem::find(raw, &pid).or_else(|| memchr::memmem::find(raw, &pid_lf)) {
        Some(p) => field(p + 1, 3),
        // MSH-10 is the 9th separator after "MSH" (MSH-1 is the separator itself).
        None => field(start, 9),
    }
}

/// The receipt time of a submission: the clock in µs, but strictly after the previous receipt
/// of this process, so no two submissions share one (a FHIR request's log key is made of it).
fn receipt_time() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_micros();
    let prev = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(now);
    now.max(prev + 1)
}

struct LaneJob {
    raw: bytes::Bytes,
    source: Source,
    received_at: i64,
    /// When the source handed it over (start of the latency histogram).
    received: Instant,
    reply: oneshot::Sender<Reply>,
}

struct WriteJob {
    prepared: Vec<Prepared>,
    started: Instant,
    reply: oneshot::Sender<Reply>,
}

/// The group-commit writer: a thread on SQLite, a task on PostgreSQL (see the module docs).
enum Writer {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

/// The lanes' side of the writer queue.
#[derive(Clone)]
enum WriterTx {
    Thread(std::sync::mpsc::SyncSender<WriteJob>),
    Task(mpsc::Sender<WriteJob>),
}

impl WriterTx {
    /// Hand a job over, waiting while the queue is full; `Err` once the writer is gone.
    fn send(&self, job: WriteJob) -> Result<(), ()> {
        match self {
            WriterTx::Thread(tx) => tx.send(job).map_err(|_| ()),
            WriterTx::Task(tx) => tx.blocking_send(job).map_err(|_| ()),
        }
    }
}

/// SQLite: how long a group keeps taking messages that are already queued (a bound on the first
/// message's wait for its ACK when many connections keep the queue full; at ~0.5 ms of statements
/// per message, the COMMIT is still a small share of a group this long).
const GROUP_TIME: std::time::Duration = std::time::Duration::from_millis(10);

/// The SQLite writer's error when the store has no SQLite writer connection (not reached: the
/// thread is started only for SQLite).
const NO_LITE: &str = "the SQLite writer has no connection";

/// Capacity of the writer queue (jobs).
const WRITER_QUEUE: usize = 4096;

/// The running pipeline: lanes (threads) and the group-commit writer.
pub struct Pipeline {
    lanes: std::sync::RwLock<Vec<std::sync::mpsc::SyncSender<LaneJob>>>,
    /// The mapping plan in use; replaced whole by [`Pipeline::reload`] (lanes take the current
    /// one per message, so a message is converted by exactly one plan).
    plan: Arc<std::sync::RwLock<Arc<Plan>>>,
    cfg: IngestConfig,
    store: Store,
    in_flight: Arc<AtomicI64>,
    /// Jobs handed to a lane and not yet to the writer (the writer waits briefly for them).
    preparing: Arc<AtomicI64>,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    writer: std::sync::Mutex<Option<Writer>>,
    /// ACK policy `after-upstream`: the forwarder to wait for, and how long.
    sync_delivery:
        std::sync::OnceLock<(Arc<crate::sinks::upstream::Upstream>, std::time::Duration)>,
    /// ACK policy `forward.ack = after-receiver`: the destination whose receiver's answer the
    /// sender gets, and how long to wait for it.
    sync_forward: std::sync::OnceLock<(String, std::time::Duration)>,
}

impl Pipeline {
    /// Start the lanes and the writer. Call from within a tokio runtime.
    pub fn start(plan: Arc<Plan>, store: Store, cfg: IngestConfig) -> Arc<Pipeline> {
        let plan = Arc::new(std::sync::RwLock::new(plan));
        let preparing = Arc::new(AtomicI64::new(0));
        let settings = WriterSettings {
            max_batch: cfg.max_batch.max(1),
            parse: cfg.parse,
            log_phi: cfg.log_phi,
            preparing: preparing.clone(),
        };
        let (wtx, writer) = if store.backend() == crate::store::Backend::Sqlite {
            let (tx, rx) = std::sync::mpsc::sync_channel::<WriteJob>(WRITER_QUEUE);
            let s = store.clone();
            match std::thread::Builder::new()
                .name("v2fhir-writer".into())
                .spawn(move || lite_writer_loop(s, rx, settings))
            {
                Ok(t) => (WriterTx::Thread(tx), Some(Writer::Thread(t))),
                Err(e) => {
                    // Nothing is acknowledged then: the lanes find the writer gone and stop, and
                    // sources log it and close (MLLP) or answer 503 (HTTP), so senders retry.
                    tracing::error!(error = %e, "could not start the writer thread");
                    (WriterTx::Thread(tx), None)
                }
            }
        } else {
            let (tx, rx) = mpsc::channel::<WriteJob>(WRITER_QUEUE);
            let t = tokio::spawn(writer_loop(store.clone(), rx, settings));
            (WriterTx::Task(tx), Some(Writer::Task(t)))
        };
        let mut lanes = Vec::new();
        let mut threads = Vec::new();
        let lane_count = match cfg.lanes {
            0 => default_lanes(
                store.backend(),
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            n => n,
        };
        for n in 0..lane_count {
            let (tx, rx) = std::sync::mpsc::sync_channel::<LaneJob>(1024);
            let plan = plan.clone();
            let cfg = cfg.clone();
            let wtx = wtx.clone();
            let preparing = preparing.clone();
            let t = std::thread::Builder::new()
                .name(format!("v2fhir-lane-{n}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        let started = job.received;
                        let current = plan
                            .read()
                            .map(|p| p.clone())
                            .unwrap_or_else(|e| e.into_inner().clone());
                        let prepared =
                            prepare(&job.raw, job.source, &current, &cfg, job.received_at);
                        let w = WriteJob {
                            prepared,
                            started,
                            reply: job.reply,
                        };
                        // Before the hand-off: the writer must not wait for the job it receives.
                        preparing.fetch_sub(1, Ordering::Relaxed);
                        if wtx.send(w).is_err() {
                            break;
                        }
                    }
                });
            match t {
                Ok(t) => {
                    lanes.push(tx);
                    threads.push(t);
                }
                Err(e) => tracing::error!(error = %e, "could not start a pipeline lane"),
            }
        }
        Arc::new(Pipeline {
            lanes: std::sync::RwLock::new(lanes),
            plan,
            cfg,
            store,
            in_flight: Arc::new(AtomicI64::new(0)),
            preparing,
            threads: std::sync::Mutex::new(threads),
            writer: std::sync::Mutex::new(writer),
            sync_delivery: std::sync::OnceLock::new(),
            sync_forward: std::sync::OnceLock::new(),
        })
    }

    /// The mapping plan in use.
    pub fn plan(&self) -> Arc<Plan> {
        self.plan
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Load the mapping set in `dir` and, if it has no error, use it for every message from now
    /// on. With errors the running plan stays and every error is returned (`file:line:col`).
    pub fn reload(
        &self,
        dir: &std::path::Path,
    ) -> Result<(), Vec<crate::mapping::load::LoadError>> {
        let new = crate::mapping::load::load_dir(dir)?;
        match self.plan.write() {
            Ok(mut p) => *p = Arc::new(new),
            Err(e) => *e.into_inner() = Arc::new(new),
        }
        tracing::info!(dir = %dir.display(), "mappings reloaded");
        Ok(())
    }

    /// The settings in use.
    pub fn config(&self) -> &IngestConfig {
        &self.cfg
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// ACK policy `after-upstream`: answer converted messages only once the upstream FHIR server
    /// has accepted them (AA) or refused them (AE with its reason), waiting at most `timeout`.
    pub fn acknowledge_after_upstream(
        &self,
        upstream: Arc<crate::sinks::upstream::Upstream>,
        timeout: std::time::Duration,
    ) {
        let _ = self.sync_delivery.set((upstream, timeout));
    }

    /// ACK policy `forward.ack = after-receiver`: answer the HL7 v2 messages queued for
    /// `destination` only once its receiver has answered: AA when it took the message, AE with its
    /// reason when it refused it, AE when it has not answered within `timeout` (the message stays
    /// stored and queued).
    pub fn acknowledge_after_forward(&self, destination: String, timeout: std::time::Duration) {
        let _ = self.sync_forward.set((destination, timeout));
    }

    /// Messages submitted and not yet answered.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Process one frame or body: returns once it is committed (or the commit failed, in which
    /// case the reply holds negative acknowledgments and no `committed`).
    pub async fn submit(&self, raw: bytes::Bytes, source: Source) -> Result<Reply, IngestError> {
        let key = routing_key(&raw);
        let sender = {
            let lanes = self.lanes.read().unwrap_or_else(|e| e.into_inner());
            if lanes.is_empty() {
                return Err(IngestError::ShuttingDown);
            }
            lanes[(fnv1a(key) as usize) % lanes.len()].clone()
        };
        let (tx, rx) = oneshot::channel();
        let frame = (self.sync_delivery.get().is_some() || self.sync_forward.get().is_some())
            .then(|| raw.clone());
        let job = LaneJob {
            raw,
            source,
            received_at: receipt_time(),
            received: Instant::now(),
            reply: tx,
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.preparing.fetch_add(1, Ordering::Relaxed);
        // The lane queue is bounded: wait (off the async threads) when it is full.
        let sent = match sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || sender.send(job).map_err(|_| ()))
                    .await
                    .unwrap_or(Err(()))
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(()),
        };
        if sent.is_err() {
            self.preparing.fetch_sub(1, Ordering::Relaxed);
        }
        let mut result = match sent {
            Ok(()) => rx.await.map_err(|_| IngestError::ShuttingDown),
            Err(()) => Err(IngestError::ShuttingDown),
        };
        if let (Ok(reply), Some((upstream, timeout)), Some(frame)) =
            (&mut result, self.sync_delivery.get(), frame.as_ref())
        {
            self.await_upstream(reply, frame, upstream, *timeout, source)
                .await;
        }
        if let (Ok(reply), Some((destination, timeout)), Some(frame)) =
            (&mut result, self.sync_forward.get(), frame.as_ref())
            && source != Source::Fhir
        {
            self.await_receiver(reply, frame, destination, *timeout)
                .await;
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// The synchronous ACK policy: wait for each converted message's delivery and replace its
    /// application acknowledgment when the upstream refused it (or did not answer in time).
    async fn await_upstream(
        &self,
        reply: &mut Reply,
        frame: &[u8],
        upstream: &crate::sinks::upstream::Upstream,
        timeout: std::time::Duration,
        source: Source,
    ) {
        use crate::sinks::upstream::Fate;
        // Every converted message of the frame waits for its delivery at the same time.
        let waits = reply.messages.iter().enumerate().filter_map(|(index, m)| {
            let c = m.committed.as_ref()?;
            (c.status == Status::Converted).then_some((index, c.id))
        });
        let fates = futures_util::future::join_all(
            waits.map(|(index, id)| async move { (index, id, upstream.wait(id, timeout).await) }),
        )
        .await;
        for (index, id, fate) in fates {
            let (text, timed_out) = match fate {
                Some(Fate::Delivered) => continue,
                Some(Fate::Refused(reason)) => (
                    format!("the upstream FHIR server refused the message: {reason}"),
                    false,
                ),
                None => (
                    format!(
                        "the upstream FHIR server has not accepted the message within {} s; it is stored (id {id}) and delivery continues",
                        timeout.as_secs(),
                    ),
                    true,
                ),
            };
            let Some(m) = reply.messages.get_mut(index) else {
                continue;
            };
            if source == Source::Fhir {
                // A FHIR write is answered from its decision: it becomes a refusal with the
                // upstream's reason (502), or 504 when the upstream did not answer in time.
                let status = if timed_out { 504 } else { 502 };
                if let Some(mut plan) = m
                    .acks
                    .first()
                    .and_then(|a| crate::fhir::intake::Plan::from_ack(a))
                {
                    plan.status = Some(status);
                    plan.outcome = Some(serde_json::json!({"resourceType": "OperationOutcome",
                        "issue": [{"severity": "error", "code": "transient", "diagnostics": text}]}));
                    m.acks = vec![serde_json::to_string(&plan).unwrap_or_default()];
                    m.outcome = Outcome::Error;
                }
                continue;
            }
            self.answer_refused(m, frame, index, id, &text).await;
        }
    }

    /// A sink refused message `index` (row `id`) of `frame`, or did not answer in time: its
    /// application acknowledgment becomes AE with `text`, and is stored as the one sent.
    async fn answer_refused(
        &self,
        m: &mut MessageReply,
        frame: &[u8],
        index: usize,
        id: i64,
        text: &str,
    ) {
        if !sink_error_acks(frame, index, text, &self.cfg.parse, &mut m.acks) {
            return;
        }
        m.outcome = Outcome::Error;
        if let Err(e) = self.store.set_ack(id, "AE", &m.acks.join("\n")).await {
            tracing::warn!(id, error = %e, "could not store the acknowledgment");
        }
    }

    /// `forward.ack = after-receiver`: wait for the receiver's answer to each message of the
    /// frame queued for `destination`, and replace its application acknowledgment with AE when
    /// the receiver refused it or did not answer in time. Answers recorded by this gateway wake
    /// the wait at once; another replica's are seen by looking at the store every second.
    async fn await_receiver(
        &self,
        reply: &mut Reply,
        frame: &[u8],
        destination: &str,
        timeout: std::time::Duration,
    ) {
        let answered = self.store.forward_answered_signal(destination);
        let waits = reply.messages.iter().enumerate().filter_map(|(index, m)| {
            let c = m.committed.as_ref()?;
            // A message answered AE already (its conversion failed) keeps that answer.
            (c.status == Status::Converted).then_some((index, c.id))
        });
        let store = &self.store;
        let answered = &answered;
        let verdicts = futures_util::future::join_all(waits.map(|(index, id)| async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                // Registered before looking, so an answer recorded meanwhile is not missed.
                let woken = answered.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let state = match store.forward_state_at(id, destination).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(id, error = %e, "reading the forwarding state failed");
                        None
                    }
                };
                match state {
                    // Not queued for this receiver (its filter): nothing to wait for.
                    None => return (index, id, None),
                    Some(s) if s.state == "sent" => return (index, id, None),
                    Some(s) if s.state == "dead" => {
                        let why = s.last_error.unwrap_or_default();
                        return (
                            index,
                            id,
                            Some(format!("the receiving system refused the message: {why}")),
                        );
                    }
                    Some(_) => {}
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return (
                        index,
                        id,
                        Some(format!(
                            "the receiving system has not acknowledged the message within {} s; it is stored (id {id}) and forwarding continues",
                            timeout.as_secs()
                        )),
                    );
                }
                let next_look = (now + std::time::Duration::from_secs(1)).min(deadline);
                tokio::select! {
                    _ = &mut woken => {}
                    _ = tokio::time::sleep_until(next_look) => {}
                }
            }
        }))
        .await;
        for (index, id, refusal) in verdicts {
            let Some(text) = refusal else {
                continue;
            };
            let Some(m) = reply.messages.get_mut(index) else {
                continue;
            };
            self.answer_refused(m, frame, index, id, &text).await;
        }
    }

    /// Stop: drop the lane queues, let the lanes finish what they hold, then the writer commit
    /// the rest. Callers stop submitting first.
    pub async fn shutdown(&self) {
        // Dropping the lane senders ends each lane once it has drained its queue; the lanes' writer
        // senders go with them, which ends the writer once it has committed everything.
        self.lanes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        match writer {
            Some(Writer::Task(w)) => {
                let _ = w.await;
            }
            Some(Writer::Thread(w)) => {
                let _ = tokio::task::spawn_blocking(move || w.join()).await;
            }
            None => {}
        }
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

struct WriterSettings {
    max_batch: usize,
    parse: ParseOptions,
    log_phi: bool,
    preparing: Arc<AtomicI64>,
}

/// Longest a group stays open waiting for messages the lanes are still converting (SQLite: from
/// the group's first message; PostgreSQL: before committing the batch). Messages already queued
/// join a group up to `max_batch` (and, on SQLite, for up to [`GROUP_TIME`]).
const LINGER: std::time::Duration = std::time::Duration::from_micros(1500);

async fn writer_loop(store: Store, mut rx: mpsc::Receiver<WriteJob>, settings: WriterSettings) {
    let WriterSettings {
        max_batch,
        parse,
        log_phi,
        preparing,
    } = settings;
    let parse = &parse;
    let mut jobs: Vec<WriteJob> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut n = first.prepared.len();
        jobs.push(first);
        // Take what is queued; then, while lanes are still preparing messages, wait a little for
        // them (at most LINGER): a commit costs about the same for one message as for several,
        // so under load larger batches mean fewer commits. With nothing in the lanes (a single
        // sender) there is no wait at all.
        let deadline = tokio::time::Instant::now() + LINGER;
        while n < max_batch {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.prepared.len();
                    jobs.push(j);
                }
                Err(_) => {
                    if preparing.load(Ordering::Relaxed) <= 0 {
                        break;
                    }
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(j)) => {
                            n += j.prepared.len();
                            jobs.push(j);
                        }
                        _ => break,
                    }
                }
            }
        }
        let rows: Vec<&NewMessage> = jobs
            .iter()
            .flat_map(|j| j.prepared.iter().map(|p| &p.row))
            .collect();
        metrics::histogram!("v2fhir_commit_batch_size").record(rows.len() as f64);
        let commit_started = Instant::now();
        let result = store.commit(&rows).await;
        metrics::histogram!("v2fhir_commit_seconds").record(commit_started.elapsed().as_secs_f64());
        drop(rows);
        match result {
            Ok(done) => {
                let mut it = done.into_iter();
                for job in jobs.drain(..) {
                    let c: Vec<Committed> = it.by_ref().take(job.prepared.len()).collect();
                    answer(job, Ok(c), parse, log_phi);
                }
            }
            Err(e) => {
                // Retry each job alone, once: one bad row must not fail its neighbours, and a
                // unique-index conflict (another replica committed the same message meanwhile)
                // resolves on the retry, whose lookup now finds the original.
                tracing::warn!(error = %e, jobs = jobs.len(), "commit failed; retrying each message once");
                for job in jobs.drain(..) {
                    let rows: Vec<&NewMessage> = job.prepared.iter().map(|p| &p.row).collect();
                    let r = store.commit(&rows).await;
                    drop(rows);
                    answer(job, r, parse, log_phi);
                }
            }
        }
    }
}

/// The SQLite writer (a thread; see the module docs): one transaction per group, each message
/// written as soon as its lane hands it over, the group committed when the lanes hold nothing
/// more (or at the [`LINGER`] deadline, at `max_batch` messages, or after [`GROUP_TIME`]), then
/// every message of it answered.
fn lite_writer_loop(
    store: Store,
    rx: std::sync::mpsc::Receiver<WriteJob>,
    settings: WriterSettings,
) {
    let (parse, log_phi) = (&settings.parse, settings.log_phi);
    let mut jobs: Vec<WriteJob> = Vec::new();
    while let Ok(first) = rx.recv() {
        jobs.push(first);
        let started = Instant::now();
        let deadline = started + LINGER;
        let mut messages = 0usize;
        let result = store.lite_group(|g| {
            let mut done: Vec<Vec<Committed>> = Vec::new();
            loop {
                while done.len() < jobs.len() {
                    let job = &jobs[done.len()];
                    let rows: Vec<&NewMessage> = job.prepared.iter().map(|p| &p.row).collect();
                    messages += rows.len();
                    done.push(g.add(&rows)?);
                }
                if messages >= settings.max_batch || started.elapsed() >= GROUP_TIME {
                    break;
                }
                let next = match rx.try_recv() {
                    Ok(j) => j,
                    // Nothing queued: wait for a message a lane is still converting, but not
                    // past the deadline.
                    Err(_) if settings.preparing.load(Ordering::Relaxed) > 0 => {
                        let now = Instant::now();
                        match deadline
                            .checked_duration_since(now)
                            .map(|left| rx.recv_timeout(left))
                        {
                            Some(Ok(j)) => j,
                            _ => break,
                        }
                    }
                    Err(_) => break,
                };
                jobs.push(next);
            }
            Ok(done)
        });
        metrics::histogram!("v2fhir_commit_batch_size").record(messages as f64);
        metrics::histogram!("v2fhir_commit_seconds").record(started.elapsed().as_secs_f64());
        match result.unwrap_or(Err(StoreError::Internal(NO_LITE))) {
            Ok(done) => {
                for (job, c) in jobs.drain(..).zip(done) {
                    answer(job, Ok(c), parse, log_phi);
                }
            }
            Err(e) => {
                // Rolled back whole. Retry each message alone, once: one bad row must not fail
                // its neighbours.
                tracing::warn!(error = %e, jobs = jobs.len(), "commit failed; retrying each message once");
                for job in jobs.drain(..) {
                    let rows: Vec<&NewMessage> = job.prepared.iter().map(|p| &p.row).collect();
                    let r = store
                        .lite_group(|g| g.add(&rows))
                        .unwrap_or(Err(StoreError::Internal(NO_LITE)));
                    drop(rows);
                    answer(job, r, parse, log_phi);
                }
            }
        }
        // After the answers: the WAL copy this may do (when the checkpointer asks) holds up the
        // next group, never an ACK already due.
        store.catch_up_wal();
    }
}

fn answer(
    job: WriteJob,
    result: Result<Vec<Committed>, StoreError>,
    parse: &ParseOptions,
    log_phi: bool,
) {
    let elapsed = job.started.elapsed().as_secs_f64();
    let mut reply = Reply::default();
    match result {
        Ok(done) => {
            for (p, c) in job.prepared.into_iter().zip(done) {
                // A duplicate is answered as the original was; a versioned FHIR write whose
                // version was not current at the commit, from the decision the store rewrote.
                let rewritten = c.status == Status::Error && p.row.status == Status::Converted;
                let acks = if c.status == Status::Duplicate || rewritten {
                    c.ack
                        .split('\n')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                } else {
                    p.acks
                };
                record_metrics(&p.row, &c, elapsed);
                if log_phi && p.outcome != Outcome::Accept && c.status != Status::Duplicate {
                    // Explicitly enabled (`log.phi = true`): the message text, for debugging a feed.
                    tracing::warn!(
                        id = c.id,
                        status = c.status.as_str(),
                        raw = %String::from_utf8_lossy(&p.row.raw).replace('\r', "\n"),
                        "message not accepted (log.phi: message text included)"
                    );
                }
                reply.messages.push(MessageReply {
                    committed: Some(c),
                    acks,
                    outcome: if rewritten { Outcome::Error } else { p.outcome },
                    bundle: p.row.output,
                    diagnostics: p.row.diagnostics,
                });
            }
        }
        Err(e) => {
            tracing::error!(error = %e, messages = job.prepared.len(), "store failed; answering with negative acknowledgments");
            metrics::counter!("v2fhir_store_failures_total").increment(1);
            for p in job.prepared {
                reply.messages.push(MessageReply {
                    committed: None,
                    acks: vec![store_failed_ack(&p.row.raw, parse)],
                    outcome: Outcome::Error,
                    bundle: None,
                    diagnostics: None,
                });
            }
        }
    }
    // The receiver may be gone (client disconnected): the message is stored either way.
    let _ = job.reply.send(reply);
}

fn record_metrics(row: &NewMessage, c: &Committed, elapsed: f64) {
    let sender = if row.sending_application.is_empty() {
        "unknown".to_string()
    } else {
        row.sending_application.clone()
    };
    let ty = if row.message_type.is_empty() {
        "unknown".to_string()
    } else {
        row.message_type.clone()
    };
    let labels = [("sender", sender), ("type", ty)];
    metrics::counter!("v2fhir_messages_received_total", &labels).increment(1);
    let status = c.status.as_str();
    metrics::counter!(
        "v2fhir_messages_stored_total",
        &[("status", status.to_string())]
    )
    .increment(1);
    match row.ack_code.as_str() {
        "AA" => metrics::counter!("v2fhir_messages_acked_total", &labels).increment(1),
        "AE" => metrics::counter!("v2fhir_messages_errored_total", &labels).increment(1),
        _ => metrics::counter!("v2fhir_messages_rejected_total", &labels).increment(1),
    }
    metrics::histogram!("v2fhir_process_seconds").record(elapsed);
    tracing::debug!(id = c.id, status, msg_type = %row.message_type, "message committed");
}

/// [`prepare`] on the blocking pool (for request handlers: conversion is CPU work).
pub async fn prepare_blocking(
    raw: bytes::Bytes,
    source: Source,
    plan: Arc<Plan>,
    cfg: IngestConfig,
    received_at: i64,
) -> Result<Vec<Prepared>, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || prepare(&raw, source, &plan, &cfg, received_at)).await
}

/// The bundle type by name for `?_bundle=` style options.
pub fn bundle_type(name: &str) -> Option<BundleType> {
    BundleType::from_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_refusal_replaces_or_adds_the_application_ack() {
        let msg = |msh15: &str, msh16: &str| {
            format!("MSH|^~\\&|A|B|C|D|2026||ADT^A01|C1|P|2.5|||{msh15}|{msh16}\rPID|1||M1\r")
        };
        let code = |a: &str| {
            a.split(['\r', '\n'])
                .find(|s| s.starts_with("MSA"))
                .and_then(|s| s.split('|').nth(1))
                .unwrap_or("")
                .to_string()
        };
        let parse = ParseOptions::default();
        // (MSH-15, MSH-16, acks sent at commit) → acks after the refusal
        let cases: &[(&str, &str, &[&str], &[&str])] = &[
            ("", "", &["AA"], &["AE"]),
            ("AL", "AL", &["CA", "AA"], &["CA", "AE"]),
            ("AL", "ER", &["CA"], &["CA", "AE"]),
            ("AL", "NE", &["CA"], &["CA"]),
        ];
        for (m15, m16, before, after) in cases {
            let m = msg(m15, m16);
            let mut acks: Vec<String> = before
                .iter()
                .map(|c| format!("MSH|^~\\&|x\rMSA|{c}|C1\r"))
                .collect();
            let changed =
                sink_error_acks(m.as_bytes(), 0, "upstream answered 412", &parse, &mut acks);
            let got: Vec<String> = acks.iter().map(|a| code(a)).collect();
            assert_eq!(got, *after, "MSH-15 {m15:?} MSH-16 {m16:?}");
            assert_eq!(changed, before != after, "MSH-15 {m15:?} MSH-16 {m16:?}");
            if changed {
                assert!(
                    acks.last()
                        .is_some_and(|a| a.contains("ERR|") && a.contains("412"))
                );
            }
        }
    }

    #[test]
    fn sqlite_leaves_a_cpu_to_its_writer() {
        use crate::store::Backend;
        for (backend, cpus, lanes) in [
            (Backend::Sqlite, 1, 1),
            (Backend::Sqlite, 2, 1),
            (Backend::Sqlite, 8, 7),
            (Backend::Postgres, 1, 1),
            (Backend::Postgres, 2, 2),
            (Backend::Postgres, 0, 1),
        ] {
            assert_eq!(
                default_lanes(backend, cpus),
                lanes,
                "{backend:?} on {cpus} CPUs"
            );
        }
    }

    #[test]
    fn content_hashes_are_lower_case_hex_sha256() {
        assert_eq!(
            content_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }

    #[test]
    fn routing_keys() {
        let cases: &[(&[u8], &[u8])] = &[
            (
                b"MSH|^~\\&|A|B|||2026||ADT^A01|C1|P|2.5\rPID|1||MRN1^^^H^MR~X||DOE\r",
                b"MRN1",
            ),
            (
                b"MSH|^~\\&|A|B|||2026||ADT^A01|C1|P|2.5\nPID|1||MRN2\n",
                b"MRN2",
            ),
            (
                b"MSH!@*%$|A!B!!!2026!!ADT@A01!C1!P!2.5\rPID!1!!M3@@@H\r",
                b"M3",
            ),
            (
                b"MSH|^~\\&|A|B|||2026||ADT^A01|CTRL9|P|2.5\rEVN|A01\r",
                b"CTRL9",
            ),
            (
                b"\xef\xbb\xbfMSH|^~\\&|A|B|||2026||ADT^A01|C1|P|2.5\rPID|1||\r",
                b"",
            ),
            (b"not hl7 at all", b""),
            (b"MSH", b""),
            (b"", b""),
        ];
        for (raw, want) in cases {
            assert_eq!(routing_key(raw), *want, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn ack_conditions() {
        use Outcome::*;
        for (cond, outcome, want) in [
            (None, Accept, true),
            (Some("AL"), Error, true),
            (Some("NE"), Accept, false),
            (Some("NE"), Reject, false),
            (Some("ER"), Accept, false),
            (Some("ER"), Error, true),
            (Some("SU"), Accept, true),
            (Some("SU"), Reject, false),
            (Some(" SU "), Accept, true),
        ] {
            assert_eq!(wanted(cond, outcome), want, "{cond:?} {outcome:?}");
        }
    }
}
