//! The upstream FHIR forwarder.
//!
//! ```text
//!  commit (message + outbox row, one transaction) ─→ outbox ─→ worker: claim (lease, per-patient
//!  head only, SKIP LOCKED) ─→ shape the Bundle ─→ POST [base] ─→ delivered | retry (backoff) | dead
//! ```
//!
//! Delivery is at-least-once and idempotent: resources are PUT by our deterministic ids (or
//! conditionally on an identifier), so replaying a message changes nothing upstream. A message is
//! retried on network errors, timeouts, 401/403/404/405/408/409/425/429 and 5xx (honouring
//! `Retry-After`); any other 4xx parks it as `dead` with the upstream's OperationOutcome.

use super::auth::{Auth, AuthConfig};
use crate::store::{Claimed, Store};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// How a message's resources are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// One `transaction` Bundle per message (all or nothing). The default.
    Transaction,
    /// One `batch` Bundle per message (entries independent).
    Batch,
    /// One request per resource, for servers without transactions.
    Single,
}

impl DeliveryMode {
    /// Parse the configured name.
    pub fn from_name(s: &str) -> Option<DeliveryMode> {
        Some(match s {
            "transaction" => DeliveryMode::Transaction,
            "batch" => DeliveryMode::Batch,
            "single" => DeliveryMode::Single,
            _ => return None,
        })
    }
}

/// Settings of the forwarder (from `[upstream]`).
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Base URL of the FHIR server, e.g. `https://fhir.example.org/fhir`.
    pub base: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// transaction, batch or single.
    pub mode: DeliveryMode,
    /// Resource types written with a conditional update on their first identifier.
    pub conditional: HashSet<String>,
    /// Messages delivered at once (different patients).
    pub concurrency: usize,
    /// Give up (dead) after this many attempts; 0 = never.
    pub max_attempts: u32,
    /// Give up (dead) when a message has waited this long; zero = never.
    pub max_age: Duration,
    /// First retry delay.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How often `GET [base]/metadata` is checked.
    pub health_interval: Duration,
    /// Credentials.
    pub auth: AuthConfig,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            base: String::new(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            mode: DeliveryMode::Transaction,
            conditional: HashSet::new(),
            concurrency: 8,
            max_attempts: 0,
            max_age: Duration::from_secs(7 * 24 * 3600),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
            health_interval: Duration::from_secs(30),
            auth: AuthConfig::None,
        }
    }
}

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// The upstream accepted everything.
    Delivered,
    /// Try again later (`after`: the upstream's `Retry-After`).
    Retry {
        /// What went wrong.
        error: String,
        /// The upstream's requested delay.
        after: Option<Duration>,
    },
    /// The upstream refused the message: park it.
    Refused {
        /// What went wrong.
        error: String,
        /// The upstream's OperationOutcome (or one describing its answer).
        outcome: Value,
    },
}

/// The final fate of a message, for the synchronous ACK policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// Accepted upstream.
    Delivered,
    /// Refused upstream (dead), with the reason.
    Refused(String),
}

/// Last result of the upstream health check.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Health {
    /// `ok`, `unreachable` or `unknown` (not checked yet).
    pub status: String,
    /// When it was checked (RFC 3339).
    pub checked_at: Option<String>,
    /// Round-trip time of the check.
    pub latency_ms: Option<f64>,
    /// What failed.
    pub error: Option<String>,
}

/// The forwarder: HTTP client, credentials, delivery worker state.
pub struct Upstream {
    cfg: UpstreamConfig,
    client: reqwest::Client,
    auth: Auth,
    store: Store,
    owner: String,
    waiters: std::sync::Mutex<HashMap<i64, Vec<oneshot::Sender<Fate>>>>,
    health: std::sync::Mutex<Health>,
}

/// Why the forwarder cannot start.
#[derive(Debug, thiserror::Error)]
#[error("upstream: {0}")]
pub struct UpstreamError(pub String);

impl Upstream {
    /// A forwarder for `cfg`, delivering from `store`'s outbox.
    pub fn new(cfg: UpstreamConfig, store: Store) -> Result<Arc<Upstream>, UpstreamError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if !(cfg.base.starts_with("http://") || cfg.base.starts_with("https://")) {
            return Err(UpstreamError(format!(
                "upstream.url '{}' is not an http(s) URL",
                cfg.base
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .pool_max_idle_per_host(cfg.concurrency.max(1) * 2)
            .user_agent(concat!("v2fhir/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError(format!("HTTP client: {e}")))?;
        let base = cfg.base.trim_end_matches('/').to_string();
        let auth = Auth::new(cfg.auth.clone(), &base);
        let owner = format!(
            "{}-{}",
            std::process::id(),
            crate::store::now_micros() % 1_000_000_000
        );
        Ok(Arc::new(Upstream {
            cfg: UpstreamConfig { base, ..cfg },
            client,
            auth,
            store,
            owner,
            waiters: Default::default(),
            health: std::sync::Mutex::new(Health {
                status: "unknown".into(),
                ..Default::default()
            }),
        }))
    }

    /// The upstream base URL (no trailing slash).
    pub fn base(&self) -> &str {
        &self.cfg.base
    }

    /// The base URL for display (logs, `/health`): without user info or query.
    pub fn base_redacted(&self) -> String {
        redact(&self.cfg.base)
    }

    /// The HTTP client (shared with the read proxy).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The `Authorization` header to send, if any.
    pub async fn auth_header(&self) -> Result<Option<String>, super::auth::AuthError> {
        self.auth.header(&self.client).await
    }

    /// Forget a token the upstream refused.
    pub async fn auth_rejected(&self) {
        self.auth.invalidate().await;
    }

    /// Last health check.
    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Check `GET [base]/metadata` once and remember the result.
    pub async fn check_health(&self) -> Health {
        let started = Instant::now();
        let url = format!("{}/metadata", self.cfg.base);
        let mut req = self
            .client
            .get(&url)
            .header("accept", "application/fhir+json");
        if let Ok(Some(h)) = self.auth_header().await {
            req = req.header("authorization", h);
        }
        let result = req.send().await;
        let latency = started.elapsed().as_secs_f64() * 1000.0;
        let (status, error) = match result {
            Ok(r) if r.status().is_success() => ("ok", None),
            Ok(r) => (
                "unreachable",
                Some(format!("GET {url} answered {}", r.status())),
            ),
            Err(e) => (
                "unreachable",
                Some(format!("GET {url}: {}", error_text(&e))),
            ),
        };
        metrics::gauge!("v2fhir_upstream_up").set(if status == "ok" { 1.0 } else { 0.0 });
        let h = Health {
            status: status.into(),
            checked_at: Some(jiff::Timestamp::now().to_string()),
            latency_ms: Some((latency * 10.0).round() / 10.0),
            error,
        };
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = h.clone();
        h
    }

    /// Wait until message `id` is delivered or refused, at most `timeout`. `None`: still pending.
    pub async fn wait(&self, id: i64, timeout: Duration) -> Option<Fate> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .push(tx);
        // It may have been settled before we registered (or by another replica).
        if let Some(f) = self.settled(id).await {
            return self.forget_waiter(id, Some(f));
        }
        self.store.outbox_signal().notify_one();
        // Answered by this gateway's worker through `rx`; another replica's worker may deliver
        // it instead, so look at the store now and then as well.
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = rx;
        loop {
            let next_look = (tokio::time::Instant::now() + Duration::from_secs(1)).min(deadline);
            tokio::select! {
                r = &mut rx => {
                    if let Ok(f) = r {
                        return Some(f);
                    }
                    break;
                }
                _ = tokio::time::sleep_until(next_look) => {
                    if let Some(f) = self.settled(id).await {
                        return self.forget_waiter(id, Some(f));
                    }
                    if next_look >= deadline {
                        break;
                    }
                }
            }
        }
        self.forget_waiter(id, None);
        self.settled(id).await
    }

    fn forget_waiter(&self, id: i64, fate: Option<Fate>) -> Option<Fate> {
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        fate
    }

    async fn settled(&self, id: i64) -> Option<Fate> {
        match self.store.status_of(id).await.ok()?? {
            crate::store::Status::Delivered => Some(Fate::Delivered),
            crate::store::Status::Dead => {
                let reason = match self.store.outbox_state(id).await.ok().flatten() {
                    Some(s) => s.last_error.unwrap_or_default(),
                    None => String::new(),
                };
                Some(Fate::Refused(reason))
            }
            _ => None,
        }
    }

    fn settle(&self, id: i64, fate: Fate) {
        let list = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        for tx in list.into_iter().flatten() {
            let _ = tx.send(fate.clone());
        }
    }

    /// Run the delivery worker and the health check until `stop` turns true; in-flight deliveries
    /// finish first (their outcome is recorded).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if self.store.backend() == crate::store::Backend::Sqlite {
            // One process owns an SQLite file: leases left by a crashed predecessor are stale.
            match self.store.outbox_release_all().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "outbox: released leases of a previous run"),
                Err(e) => tracing::warn!(error = %e, "outbox: could not release old leases"),
            }
        }
        let health = {
            let me = self.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    me.check_health().await;
                    tokio::select! {
                        _ = tokio::time::sleep(me.cfg.health_interval) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
            })
        };
        let signal = self.store.outbox_signal();
        let concurrency = self.cfg.concurrency.max(1);
        // A lease outlives one attempt (auth + request) comfortably; a replica that dies holding
        // rows releases them when it runs out.
        let lease = self.cfg.timeout * 2 + self.cfg.connect_timeout + Duration::from_secs(30);
        let (delivered, rx) = tokio::sync::mpsc::unbounded_channel();
        let recorder = tokio::spawn(self.clone().record_delivered(rx));
        let mut inflight = tokio::task::JoinSet::new();
        // When the last claim found nothing (throttles claims while nothing is claimable).
        let mut last_empty = tokio::time::Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            let free = concurrency.saturating_sub(inflight.len());
            let mut claimed = 0;
            // Claim in groups (a claim is a write transaction): when half the slots are free, or
            // when nothing is in flight.
            if free > 0 && (inflight.is_empty() || free * 2 >= concurrency) {
                let until = crate::store::now_micros() + lease.as_micros() as i64;
                match self
                    .store
                    .outbox_claim(&self.owner, free as i64, until)
                    .await
                {
                    Ok(list) => {
                        claimed = list.len();
                        if claimed == 0 {
                            last_empty = tokio::time::Instant::now();
                        }
                        for c in list {
                            let me = self.clone();
                            let delivered = delivered.clone();
                            inflight.spawn(async move { me.deliver(c, lease, delivered).await });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox: claim failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            if claimed > 0 && inflight.len() < concurrency {
                continue;
            }
            tokio::select! {
                Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                _ = signal.notified() => {
                    // Every commit signals. While nothing can be claimed (say, every patient's
                    // head waits for a retry during an outage) that would be a claim — a walk over
                    // the backlog — per commit: at most one per 20 ms then.
                    if claimed == 0 && free > 0 {
                        tokio::time::sleep_until(last_empty + Duration::from_millis(20)).await;
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.changed() => {}
            }
        }
        while inflight.join_next().await.is_some() {}
        drop(delivered);
        let _ = recorder.await;
        health.abort();
    }

    /// Record delivered messages in groups (one transaction for all that finished meanwhile), then
    /// answer waiters and wake the claim loop (a patient's next message is claimable now).
    async fn record_delivered(self: Arc<Self>, mut rx: tokio::sync::mpsc::UnboundedReceiver<i64>) {
        let signal = self.store.outbox_signal();
        let mut batch = Vec::new();
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < 512 {
                match rx.try_recv() {
                    Ok(id) => batch.push(id),
                    Err(_) => break,
                }
            }
            let mut tries = 0;
            loop {
                match self.store.outbox_delivered_many(&batch, &self.owner).await {
                    Ok(_) => break,
                    Err(e) if tries < 5 => {
                        tries += 1;
                        tracing::warn!(error = %e, messages = batch.len(), "outbox: recording deliveries failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                    }
                    Err(e) => {
                        // The leases run out and the rows are delivered again: at least once.
                        tracing::error!(error = %e, messages = batch.len(), "outbox: recording deliveries failed");
                        break;
                    }
                }
            }
            for id in batch.drain(..) {
                self.settle(id, Fate::Delivered);
            }
            signal.notify_one();
        }
    }

    /// Park a message as dead with the reason and the OperationOutcome; answer its waiters.
    async fn park(
        &self,
        c: &Claimed,
        attempts: i64,
        error: String,
        outcome: Value,
        log: &'static str,
    ) -> Result<(), crate::store::StoreError> {
        metrics::counter!("v2fhir_deliveries_total", "result" => "dead").increment(1);
        tracing::warn!(
            id = c.message_id,
            attempts,
            error = log_safe(&error),
            "{log}"
        );
        let r = self
            .store
            .outbox_dead(
                c.message_id,
                &self.owner,
                attempts,
                &error,
                Some(&outcome.to_string()),
            )
            .await;
        self.settle(c.message_id, Fate::Refused(error));
        r
    }

    async fn deliver(
        &self,
        c: Claimed,
        lease: Duration,
        delivered: tokio::sync::mpsc::UnboundedSender<i64>,
    ) {
        let started = Instant::now();
        let attempt = match tokio::time::timeout(lease, self.attempt(&c)).await {
            Ok(a) => a,
            Err(_) => Attempt::Retry {
                error: format!(
                    "delivery took longer than its lease ({} s)",
                    lease.as_secs()
                ),
                after: None,
            },
        };
        metrics::histogram!("v2fhir_upstream_request_seconds")
            .record(started.elapsed().as_secs_f64());
        let attempts = c.attempts + 1;
        let now = crate::store::now_micros();
        let result = match attempt {
            Attempt::Delivered => {
                metrics::counter!("v2fhir_deliveries_total", "result" => "delivered").increment(1);
                metrics::histogram!("v2fhir_delivery_latency_seconds")
                    .record((now - c.created_at).max(0) as f64 / 1e6);
                // Recorded (with others) by the recorder task; the lease holds the row meanwhile.
                let _ = delivered.send(c.message_id);
                Ok(())
            }
            Attempt::Refused { error, outcome } => {
                self.park(
                    &c,
                    attempts,
                    error,
                    outcome,
                    "upstream refused a message; parked as dead (details: GET /messages/ID)",
                )
                .await
            }
            Attempt::Retry { error, after } => {
                let age = Duration::from_micros((now - c.created_at).max(0) as u64);
                let out_of_attempts =
                    self.cfg.max_attempts > 0 && attempts >= self.cfg.max_attempts as i64;
                let too_old = !self.cfg.max_age.is_zero() && age >= self.cfg.max_age;
                if out_of_attempts || too_old {
                    let why = if out_of_attempts {
                        format!("gave up after {attempts} attempts; last: {error}")
                    } else {
                        format!("gave up after {} s; last: {error}", age.as_secs())
                    };
                    let outcome = crate::api::outcome("error", "transient", &why);
                    self.park(
                        &c,
                        attempts,
                        why,
                        outcome,
                        "delivery abandoned; parked as dead",
                    )
                    .await
                } else {
                    metrics::counter!("v2fhir_deliveries_total", "result" => "retry").increment(1);
                    let delay = after
                        .map(|d| d.min(Duration::from_secs(3600)))
                        .unwrap_or_else(|| backoff(&self.cfg, attempts, c.message_id));
                    tracing::info!(
                        id = c.message_id,
                        attempts,
                        retry_in_ms = delay.as_millis() as u64,
                        error = log_safe(&error),
                        "delivery failed; will retry"
                    );
                    self.store
                        .outbox_retry(
                            c.message_id,
                            &self.owner,
                            attempts,
                            now + delay.as_micros() as i64,
                            &error,
                        )
                        .await
                }
            }
        };
        if let Err(e) = result {
            // The lease runs out and the row is claimed again: delivered at least once.
            tracing::error!(id = c.message_id, error = %e, "outbox: recording a delivery result failed");
        }
    }

    /// One attempt at delivering a claimed message.
    pub async fn attempt(&self, c: &Claimed) -> Attempt {
        let Some(output) = &c.output else {
            return refused("the message has no FHIR output to deliver (reprocess it)");
        };
        let bundle: Value = match serde_json::from_str(output) {
            Ok(v) => v,
            Err(e) => return refused(&format!("the stored FHIR output is not JSON: {e}")),
        };
        match self.cfg.mode {
            DeliveryMode::Transaction | DeliveryMode::Batch => {
                let body = shape_bundle(bundle, self.cfg.mode, &self.cfg.conditional);
                let resp = self
                    .send(reqwest::Method::POST, &self.cfg.base, Some(&body))
                    .await;
                match resp {
                    Err(a) => a,
                    Ok((status, headers, body)) => classify(status, &headers, &body, self.cfg.mode),
                }
            }
            DeliveryMode::Single => self.attempt_single(bundle).await,
        }
    }

    async fn attempt_single(&self, bundle: Value) -> Attempt {
        // Server-assigned ids of conditionally written resources, for later references.
        let mut assigned: HashMap<String, String> = HashMap::new();
        for SingleRequest {
            method,
            url,
            mut resource,
            ours,
        } in shape_single(bundle, &self.cfg.conditional)
        {
            if !assigned.is_empty() {
                rewrite_references(&mut resource, &|r: &str| assigned.get(r).cloned());
            }
            let full = format!("{}/{}", self.cfg.base, url);
            let body = if method == reqwest::Method::DELETE {
                None
            } else {
                Some(&resource)
            };
            let (status, headers, body) = match self.send(method, &full, body).await {
                Ok(r) => r,
                Err(a) => return a,
            };
            match classify(status, &headers, &body, DeliveryMode::Single) {
                Attempt::Delivered => {}
                other => return other,
            }
            if url.contains('?')
                && let Some((ty, _)) = ours.split_once('/')
                && let Some(server_id) = location_id(&headers, ty)
            {
                assigned.insert(ours.clone(), format!("{ty}/{server_id}"));
            }
        }
        Attempt::Delivered
    }

    /// One HTTP exchange with auth; network failures and auth failures are `Err(Retry)`.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), Attempt> {
        let auth = self.auth_header().await.map_err(|e| Attempt::Retry {
            error: e.to_string(),
            after: None,
        })?;
        let mut req = self
            .client
            .request(method, url)
            .header("accept", "application/fhir+json")
            .header("prefer", "return=minimal");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            // `to_vec` writes into the buffer directly (`to_string` goes through `fmt::Write`).
            let bytes = serde_json::to_vec(b).map_err(|e| Attempt::Retry {
                error: format!("serializing the Bundle: {e}"),
                after: None,
            })?;
            req = req
                .header("content-type", "application/fhir+json")
                .body(bytes);
        }
        let resp = req.send().await.map_err(|e| Attempt::Retry {
            error: format!("{}: {}", redact(url), error_text(&e)),
            after: None,
        })?;
        let status = resp.status().as_u16();
        if status == 401 {
            self.auth_rejected().await;
        }
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| Attempt::Retry {
            error: format!("reading the answer of {}: {}", redact(url), error_text(&e)),
            after: None,
        })?;
        Ok((status, headers, body.to_vec()))
    }
}

/// An error text fit for the log: what the upstream answered, without the diagnostics it sent
/// (servers may quote identifiers or names there). The full text is kept with the message.
fn log_safe(e: &str) -> &str {
    match e.find("answered ") {
        Some(i) => match e[i..].find(": ") {
            Some(j) => &e[..i + j],
            None => e,
        },
        None => e,
    }
}

fn refused(text: &str) -> Attempt {
    Attempt::Refused {
        error: text.to_string(),
        outcome: crate::api::outcome("error", "processing", text),
    }
}

/// A URL without user info or query (query strings can carry identifiers).
fn redact(url: &str) -> String {
    let no_query = url.split('?').next().unwrap_or(url);
    match no_query.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => no_query.to_string(),
        },
        None => no_query.to_string(),
    }
}

/// A reqwest error with its cause chain, without the URL's query.
fn error_text(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// Exponential backoff with jitter: `initial · 2^(attempts-1)`, capped, scaled by a random
/// factor in [0.5, 1) so that retries of many messages spread out.
pub fn backoff(cfg: &UpstreamConfig, attempts: i64, salt: i64) -> Duration {
    let exp = attempts.clamp(1, 30) as u32 - 1;
    let base = cfg
        .backoff_initial
        .saturating_mul(2u32.saturating_pow(exp))
        .min(cfg.backoff_max);
    let mut x =
        (crate::store::now_micros() as u64) ^ (salt as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let factor = 0.5 + (x % 1000) as f64 / 2000.0;
    base.mul_f64(factor)
}

/// `Retry-After` as a delay: seconds or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let t = jiff::fmt::strtime::parse("%a, %d %b %Y %H:%M:%S GMT", v)
        .ok()?
        .to_datetime()
        .ok()?
        .in_tz("UTC")
        .ok()?
        .timestamp();
    let d = t.as_microsecond() - jiff::Timestamp::now().as_microsecond();
    Some(Duration::from_micros(d.max(0) as u64))
}

/// Decide what an answer of the upstream means.
pub fn classify(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
    mode: DeliveryMode,
) -> Attempt {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    match status {
        200..=299 => {
            if mode == DeliveryMode::Batch
                && let Some(entries) = parsed
                    .as_ref()
                    .and_then(|b| b.get("entry"))
                    .and_then(Value::as_array)
            {
                // A batch answers 200 with a status per entry.
                for (i, e) in entries.iter().enumerate() {
                    let r = e.get("response");
                    let st = r
                        .and_then(|r| r.get("status"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let code: u16 = st
                        .split_whitespace()
                        .next()
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    if (200..300).contains(&code) {
                        continue;
                    }
                    let oo = r.and_then(|r| r.get("outcome")).cloned();
                    let text = format!(
                        "batch entry {i} answered '{st}'{}",
                        outcome_text(oo.as_ref())
                    );
                    return if retryable(code) || code == 0 {
                        Attempt::Retry {
                            error: text,
                            after: None,
                        }
                    } else {
                        Attempt::Refused {
                            outcome: oo.unwrap_or_else(|| {
                                crate::api::outcome("error", "processing", &text)
                            }),
                            error: text,
                        }
                    };
                }
            }
            Attempt::Delivered
        }
        s => {
            let oo = parsed.filter(|v| {
                v.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome")
            });
            let text = format!("upstream answered {s}{}", outcome_text(oo.as_ref()));
            if retryable(s) {
                Attempt::Retry {
                    error: text,
                    after: retry_after(headers),
                }
            } else {
                let outcome = oo.unwrap_or_else(|| {
                    let snippet: String = String::from_utf8_lossy(body).chars().take(300).collect();
                    crate::api::outcome("error", "processing", &format!("{text}: {snippet}"))
                });
                Attempt::Refused {
                    error: text,
                    outcome,
                }
            }
        }
    }
}

/// Statuses that say nothing about the message itself (the server, the network, the
/// credentials or the configuration): try again.
fn retryable(status: u16) -> bool {
    matches!(status, 401 | 403 | 404 | 405 | 408 | 409 | 425 | 429) || status >= 500
}

/// `: first diagnostics` of an OperationOutcome, for error texts.
fn outcome_text(oo: Option<&Value>) -> String {
    let Some(issues) = oo.and_then(|o| o.get("issue")).and_then(Value::as_array) else {
        return String::new();
    };
    let texts: Vec<String> = issues
        .iter()
        .take(3)
        .filter_map(|i| {
            i.get("diagnostics")
                .and_then(Value::as_str)
                .map(String::from)
                .or_else(|| {
                    i.pointer("/details/text")
                        .and_then(Value::as_str)
                        .map(String::from)
                })
        })
        .collect();
    if texts.is_empty() {
        String::new()
    } else {
        format!(": {}", texts.join("; "))
    }
}

/// The id of `Type/<id>` in a `Location` or `Content-Location` header.
fn location_id(headers: &reqwest::header::HeaderMap, ty: &str) -> Option<String> {
    let loc = headers
        .get("location")
        .or_else(|| headers.get("content-location"))?
        .to_str()
        .ok()?;
    let marker = format!("{ty}/");
    let start = loc.rfind(&marker)? + marker.len();
    // …/Type/id/_history/n: take the id after the last "Type/" that is followed by an id.
    let rest = &loc[start..];
    let id = rest.split('/').next()?;
    if id.is_empty() || id == "_history" {
        None
    } else {
        Some(id.to_string())
    }
}

/// The entries of a Bundle, taken out of it (no copy).
fn take_entries(mut bundle: Value) -> Vec<Value> {
    match bundle.get_mut("entry").map(Value::take) {
        Some(Value::Array(entries)) => entries,
        _ => Vec::new(),
    }
}

/// `resourceType` and `id` of a resource, owned.
fn type_and_id(resource: &Value) -> Option<(String, String)> {
    Some((
        resource.get("resourceType")?.as_str()?.to_string(),
        resource.get("id")?.as_str()?.to_string(),
    ))
}

/// The conditional-update URL of a resource: `Type?identifier=system|value` on its first
/// identifier with both, else `None` (written by id).
fn conditional_url(resource: &Value) -> Option<String> {
    let ty = resource.get("resourceType")?.as_str()?;
    let ident = resource.get("identifier")?.as_array()?.iter().find(|i| {
        i.get("system").and_then(Value::as_str).is_some()
            && i.get("value").and_then(Value::as_str).is_some()
    })?;
    let token = format!(
        "{}|{}",
        ident.get("system")?.as_str()?,
        ident.get("value")?.as_str()?
    );
    let q = serde_urlencoded::to_string([("identifier", token.as_str())]).ok()?;
    Some(format!("{ty}?{q}"))
}

/// Replace every `reference` for which `map` has an answer.
fn rewrite_references(v: &mut Value, map: &dyn Fn(&str) -> Option<String>) {
    match v {
        Value::Object(o) => {
            for (k, val) in o.iter_mut() {
                if k == "reference" {
                    if let Value::String(s) = val
                        && let Some(n) = map(s)
                    {
                        *s = n;
                    }
                } else {
                    rewrite_references(val, map);
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                rewrite_references(x, map);
            }
        }
        _ => {}
    }
}

/// The Bundle to POST: `transaction` or `batch`, every entry `PUT Type/id` (our deterministic
/// ids) or, for the conditional types, `PUT Type?identifier=…` with the id removed, a
/// `urn:uuid:` fullUrl and every reference to it rewritten to that fullUrl (the server resolves
/// them to the id it finds or assigns). Entries that delete keep their `DELETE`.
pub fn shape_bundle(bundle: Value, mode: DeliveryMode, conditional: &HashSet<String>) -> Value {
    let entries = take_entries(bundle);
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for mut e in entries {
        let method = e
            .pointer("/request/method")
            .and_then(Value::as_str)
            .unwrap_or("PUT");
        if method == "DELETE" {
            if let Some(url) = e.pointer("/request/url").and_then(Value::as_str) {
                out.push(json!({"request": {"method": "DELETE", "url": url}}));
            }
            continue;
        }
        let Some(mut resource) = e.get_mut("resource").map(Value::take) else {
            continue;
        };
        let Some((ty, id)) = type_and_id(&resource) else {
            continue;
        };
        let cond = if mode == DeliveryMode::Transaction && conditional.contains(&ty) {
            conditional_url(&resource)
        } else {
            None
        };
        match cond {
            Some(url) => {
                let full = format!("urn:uuid:{id}");
                renamed.insert(format!("{ty}/{id}"), full.clone());
                if let Some(o) = resource.as_object_mut() {
                    o.remove("id");
                }
                out.push(json!({"fullUrl": full, "resource": resource, "request": {"method": "PUT", "url": url}}));
            }
            None => {
                out.push(json!({
                    "fullUrl": format!("urn:uuid:{id}"),
                    "resource": resource,
                    "request": {"method": "PUT", "url": format!("{ty}/{id}")}
                }));
            }
        }
    }
    let mut b = json!({
        "resourceType": "Bundle",
        "type": if mode == DeliveryMode::Batch { "batch" } else { "transaction" },
        "entry": out,
    });
    if !renamed.is_empty() {
        rewrite_references(&mut b, &|r: &str| renamed.get(r).cloned());
    }
    b
}

/// One request of the `single` delivery mode.
#[derive(Debug, Clone)]
pub struct SingleRequest {
    /// PUT or DELETE.
    pub method: reqwest::Method,
    /// Relative to the base: `Type/id` or `Type?identifier=…`.
    pub url: String,
    /// The resource (without `id` when written conditionally); `Null` for DELETE.
    pub resource: Value,
    /// Our `Type/id` (what references in later resources say).
    pub ours: String,
}

/// One request per resource, resources before the MessageHeader and Provenance that point at
/// them.
pub fn shape_single(bundle: Value, conditional: &HashSet<String>) -> Vec<SingleRequest> {
    let entries = take_entries(bundle);
    let mut first = Vec::new();
    let mut last = Vec::new();
    for mut e in entries {
        if e.pointer("/request/method").and_then(Value::as_str) == Some("DELETE") {
            if let Some(url) = e.pointer("/request/url").and_then(Value::as_str) {
                first.push(SingleRequest {
                    method: reqwest::Method::DELETE,
                    url: url.to_string(),
                    resource: Value::Null,
                    ours: url.to_string(),
                });
            }
            continue;
        }
        let Some(mut resource) = e.get_mut("resource").map(Value::take) else {
            continue;
        };
        let Some((ty, id)) = type_and_id(&resource) else {
            continue;
        };
        let url = if conditional.contains(&ty) {
            conditional_url(&resource).unwrap_or_else(|| format!("{ty}/{id}"))
        } else {
            format!("{ty}/{id}")
        };
        // A conditional PUT must not carry our id (the server decides).
        if url.contains('?')
            && let Some(o) = resource.as_object_mut()
        {
            o.remove("id");
        }
        let item = SingleRequest {
            method: reqwest::Method::PUT,
            url,
            resource,
            ours: format!("{ty}/{id}"),
        };
        if ty == "MessageHeader" || ty == "Provenance" {
            last.push(item);
        } else {
            first.push(item);
        }
    }
    first.extend(last);
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> Value {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:m", "resource": {"resourceType": "MessageHeader", "id": "m",
                "focus": [{"reference": "Patient/p"}]}, "request": {"method": "PUT", "url": "MessageHeader/m"}},
            {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "id": "p",
                "identifier": [{"value": "no-system"}, {"system": "urn:oid:1.2", "value": "42 a&b"}]},
                "request": {"method": "PUT", "url": "Patient/p"}},
            {"fullUrl": "urn:uuid:e", "resource": {"resourceType": "Encounter", "id": "e",
                "subject": {"reference": "Patient/p"}}, "request": {"method": "PUT", "url": "Encounter/e"}},
            {"request": {"method": "DELETE", "url": "Encounter/old"}}
        ]})
    }

    #[test]
    fn transaction_puts_by_id_or_conditionally_with_references_rewritten() {
        let plain = shape_bundle(bundle(), DeliveryMode::Transaction, &HashSet::new());
        assert_eq!(plain["type"], "transaction");
        assert_eq!(plain["entry"][1]["request"]["url"], "Patient/p");
        assert_eq!(plain["entry"][1]["resource"]["id"], "p");
        assert_eq!(
            plain["entry"][2]["resource"]["subject"]["reference"],
            "Patient/p"
        );
        assert_eq!(plain["entry"][3]["request"]["method"], "DELETE");

        let cond: HashSet<String> = ["Patient".to_string()].into();
        let b = shape_bundle(bundle(), DeliveryMode::Transaction, &cond);
        assert_eq!(
            b["entry"][1]["request"]["url"],
            "Patient?identifier=urn%3Aoid%3A1.2%7C42+a%26b"
        );
        assert!(b["entry"][1]["resource"].get("id").is_none());
        assert_eq!(b["entry"][1]["fullUrl"], "urn:uuid:p");
        assert_eq!(
            b["entry"][2]["resource"]["subject"]["reference"],
            "urn:uuid:p"
        );
        assert_eq!(
            b["entry"][0]["resource"]["focus"][0]["reference"],
            "urn:uuid:p"
        );

        let batch = shape_bundle(bundle(), DeliveryMode::Batch, &cond);
        assert_eq!(batch["type"], "batch");
        // No urn:uuid resolution across batch entries: conditional updates need a transaction.
        assert_eq!(batch["entry"][1]["request"]["url"], "Patient/p");
    }

    #[test]
    fn single_requests_put_the_message_header_last() {
        let cond: HashSet<String> = ["Patient".to_string()].into();
        let reqs = shape_single(bundle(), &cond);
        let urls: Vec<&str> = reqs.iter().map(|r| r.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "Patient?identifier=urn%3Aoid%3A1.2%7C42+a%26b",
                "Encounter/e",
                "Encounter/old",
                "MessageHeader/m"
            ]
        );
        assert!(reqs[0].resource.get("id").is_none());
        assert_eq!(reqs[0].ours, "Patient/p");
        assert_eq!(reqs[2].method, reqwest::Method::DELETE);
    }

    #[test]
    fn answers_are_classified() {
        let h = reqwest::header::HeaderMap::new();
        let oo = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"Patient.gender: bad"}]}"#;
        assert_eq!(
            classify(200, &h, b"{}", DeliveryMode::Transaction),
            Attempt::Delivered
        );
        match classify(422, &h, oo, DeliveryMode::Transaction) {
            Attempt::Refused { error, outcome } => {
                assert!(
                    error.contains("422") && error.contains("Patient.gender: bad"),
                    "{error}"
                );
                assert_eq!(outcome["issue"][0]["code"], "invalid");
            }
            other => panic!("{other:?}"),
        }
        for s in [401, 403, 404, 408, 409, 429, 500, 502, 503] {
            assert!(
                matches!(
                    classify(s, &h, b"", DeliveryMode::Transaction),
                    Attempt::Retry { .. }
                ),
                "{s}"
            );
        }
        let mut h2 = reqwest::header::HeaderMap::new();
        h2.insert(
            "retry-after",
            reqwest::header::HeaderValue::from_static("7"),
        );
        assert_eq!(
            classify(429, &h2, b"", DeliveryMode::Transaction),
            Attempt::Retry {
                error: "upstream answered 429".into(),
                after: Some(Duration::from_secs(7))
            }
        );
        let batch = br#"{"resourceType":"Bundle","type":"batch-response","entry":[
            {"response":{"status":"200 OK"}},
            {"response":{"status":"400 Bad Request","outcome":{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"nope"}]}}}]}"#;
        match classify(200, &h, batch, DeliveryMode::Batch) {
            Attempt::Refused { error, .. } => assert!(
                error.contains("entry 1") && error.contains("nope"),
                "{error}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_takes_an_http_date() {
        let mut h = reqwest::header::HeaderMap::new();
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120);
        let text = later.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
        h.insert(
            "retry-after",
            reqwest::header::HeaderValue::from_str(&text).unwrap_or_else(|e| panic!("{e}")),
        );
        let d = retry_after(&h).unwrap_or_default();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let cfg = UpstreamConfig::default();
        let d1 = backoff(&cfg, 1, 1);
        assert!(
            d1 >= Duration::from_millis(250) && d1 < Duration::from_millis(500),
            "{d1:?}"
        );
        let d4 = backoff(&cfg, 4, 1);
        assert!(
            d4 >= Duration::from_millis(2000) && d4 < Duration::from_millis(4000),
            "{d4:?}"
        );
        let d30 = backoff(&cfg, 30, 1);
        assert!(
            d30 <= cfg.backoff_max && d30 >= cfg.backoff_max / 2,
            "{d30:?}"
        );
    }

    #[test]
    fn logged_errors_leave_out_the_upstreams_diagnostics() {
        assert_eq!(
            log_safe("upstream answered 412: Patient?identifier=urn:oid:1|MRN7 matched 2"),
            "upstream answered 412"
        );
        assert_eq!(
            log_safe("gave up after 3 attempts; last: upstream answered 500: SMITH"),
            "gave up after 3 attempts; last: upstream answered 500"
        );
        assert_eq!(
            log_safe("http://h/fhir: connection failed"),
            "http://h/fhir: connection failed"
        );
    }

    #[test]
    fn urls_in_errors_lose_credentials_and_queries() {
        assert_eq!(
            redact("https://u:p@h.example/fhir/Patient?identifier=1"),
            "https://h.example/fhir/Patient"
        );
    }

    #[test]
    fn location_headers_give_server_ids() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "location",
            reqwest::header::HeaderValue::from_static("http://x/fhir/Patient/abc/_history/2"),
        );
        assert_eq!(location_id(&h, "Patient").as_deref(), Some("abc"));
    }
}
