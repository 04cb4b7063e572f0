//! Forwarding over MLLP: accepted HL7 v2 messages are passed on, byte for byte as received, to
//! a downstream system (the EHR, another interface engine), from the durable queue that the
//! commit fills (`store::forward`).
//!
//! One connection, kept open between messages; one message in flight, in message id order. An
//! AA/CA answer marks the message `sent`; AE/AR/CE/CR marks it `dead` with the receiver's ACK (an
//! operator reprocesses it); no answer, a closed connection or an ACK of another message is a
//! failed attempt: the connection is dropped and the same message is tried again after a
//! backoff (1 s, doubling, at most `retry_max`), for as long as it takes. Nothing is dropped.
//!
//! With `forward.fhir_observations`, FHIR writes that stored Observations (device readings) are
//! in the same queue: the forwarder builds an ORU^R01 from the stored Bundle and the Patients the
//! gateway holds (`fhir::oru`), sends it and keeps it with the receiver's answer. One that cannot
//! be built (no Patient the gateway knows) is parked as `dead` with the reason.

use crate::fhir::{oru, vxu};
use crate::mapping::plan::Plan;
use crate::sources::mllp::{Frame, MllpCodec};
use crate::store::{ForwardClaim, Store, now_micros};
use futures_util::{FutureExt, SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::codec::Framed;

/// The largest acknowledgment read from the receiver.
const MAX_ACK: usize = 1024 * 1024;

/// `[forward]` as the worker needs it.
#[derive(Clone)]
pub struct ForwardConfig {
    /// The destination's name (`default`, or the route's).
    pub destination: String,
    /// The receiver's `host:port`.
    pub addr: String,
    /// Longest wait for the receiver's ACK (and for writing the message).
    pub timeout: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// The longest pause between attempts at one message.
    pub retry_max: Duration,
    /// MLLP over TLS, if configured.
    pub tls: Option<ForwardTls>,
    /// MSH-3 to MSH-6 of the ORU^R01 and VXU^V04 built from FHIR writes.
    pub oru: oru::Header,
    /// FHIR writes' Observations go as an ORU^R01.
    pub fhir_observations: bool,
    /// FHIR writes' Immunizations go as a VXU^V04.
    pub fhir_immunizations: bool,
    /// The mapping set now loaded (its vocabularies, read backwards, code the ORU^R01).
    pub plan: Arc<dyn Fn() -> Arc<Plan> + Send + Sync>,
}

impl std::fmt::Debug for ForwardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardConfig")
            .field("destination", &self.destination)
            .field("addr", &self.addr)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// The mapping set's vocabularies read backwards: `{name}ToV2` (FHIR code → v2 code) where the
/// set has one, else the v2 codes of `{name}` that map to the FHIR code (the shortest, then
/// the first in order).
struct PlanCodes(Arc<Plan>);

impl oru::Reverse for PlanCodes {
    fn v2_code(&self, vocab: &str, fhir_code: &str) -> Option<String> {
        let find = |name: &str| self.0.vocabs.iter().find(|v| v.name == name);
        if let Some(v) = find(&format!("{vocab}ToV2"))
            && let Some(e) = v.entries.get(fhir_code)
        {
            return Some(e.code.clone()).filter(|c| !c.is_empty());
        }
        find(vocab)?
            .entries
            .iter()
            .filter(|(_, e)| e.code == fhir_code)
            .map(|(k, _)| k)
            .min_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)))
            .cloned()
    }
}

/// TLS toward the receiver.
#[derive(Clone)]
pub struct ForwardTls {
    /// Trusts the configured CA; presents the client certificate when one is configured.
    pub connector: tokio_rustls::TlsConnector,
    /// The name the receiver's certificate must carry.
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for ForwardTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ForwardTls {
    /// A connector trusting the CA certificates in `ca` (PEM), presenting `cert` and `key`
    /// (PEM) when given, expecting `server_name` in the receiver's certificate. Errors name the
    /// file.
    pub fn new(
        ca: &Path,
        client: Option<(&Path, &Path)>,
        server_name: &str,
    ) -> Result<ForwardTls, String> {
        let named = |p: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).map_err(|e| named(ca, &e))? {
            roots
                .add(c.map_err(|e| named(ca, &e))?)
                .map_err(|e| named(ca, &e))?;
        }
        if roots.is_empty() {
            return Err(named(ca, &"no CA certificate in the file"));
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| named(ca, &e))?
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| named(cert, &e))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| named(cert, &e))?;
                if chain.is_empty() {
                    return Err(named(cert, &"no certificate in the file"));
                }
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| named(key, &e))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| named(key, &e))?
            }
        };
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| format!("forward.tls_server_name '{server_name}': {e}"))?;
        Ok(ForwardTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// What the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// AA or CA.
    Accepted,
    /// AE, AR, CE or CR, with MSA-1 and what MSA-3 or ERR say.
    Refused(String),
}

/// Read the receiver's acknowledgment of the message with control id `control_id`. `Err` when
/// it is not an acknowledgment of that message (the attempt failed; try again).
pub fn read_ack(ack: &[u8], control_id: &str) -> Result<Answer, String> {
    let parsed =
        crate::v2::parse(ack).map_err(|e| format!("the receiver's answer is not HL7: {e}"))?;
    let msg = parsed
        .messages
        .first()
        .ok_or("the receiver's answer holds no message")?;
    let msa = msg
        .segments()
        .find(|s| s.id() == "MSA")
        .ok_or("the receiver's answer has no MSA segment")?;
    let code = msa.field(1).text_or_empty().to_ascii_uppercase();
    let acked = msa.field(2).text_or_empty();
    if acked != control_id {
        return Err(format!(
            "the receiver acknowledged control id '{acked}' (MSA-2), not the message sent"
        ));
    }
    match code.as_str() {
        "AA" | "CA" => Ok(Answer::Accepted),
        "AE" | "AR" | "CE" | "CR" => {
            let text = msa.field(3).text_or_empty().into_owned();
            let err = msg
                .segments()
                .find(|s| s.id() == "ERR")
                .map(|e| {
                    let t = e.field(8).text_or_empty();
                    if t.is_empty() {
                        e.field(3).text_or_empty().into_owned()
                    } else {
                        t.into_owned()
                    }
                })
                .unwrap_or_default();
            let why = [text, err]
                .into_iter()
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            Ok(Answer::Refused(if why.is_empty() {
                format!("the receiver answered {code}")
            } else {
                format!("the receiver answered {code}: {why}")
            }))
        }
        other => Err(format!(
            "the receiver's MSA-1 is '{other}', not an acknowledgment code"
        )),
    }
}

/// A byte stream to the receiver: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Conn = Framed<Box<dyn Io>, MllpCodec>;

/// The control id of the ORU^R01 or VXU^V04 built for a FHIR write: one per logged request, so a resend
/// carries the same one.
fn built_control_id(c: &ForwardClaim) -> String {
    format!("V2F{}", c.message_id)
}

/// The v2 message for a claimed FHIR write (`Err`: why none can be built): a VXU^V04 of its
/// Immunizations (`fhir_immunizations`), else an ORU^R01 of its Observations. A write holding
/// both, with both options on, cannot be one message: it is refused with that reason.
async fn build_message(
    cfg: &ForwardConfig,
    store: &Store,
    c: &ForwardClaim,
) -> Result<String, String> {
    let bundle: serde_json::Value = c
        .output
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .ok_or("the FHIR write has no stored Bundle to build a v2 message from")?;
    let observations = oru::observations(&bundle);
    let immunizations = vxu::immunizations(&bundle);
    let header = oru::Header {
        timestamp: crate::clock::hl7_now(),
        control_id: built_control_id(c),
        ..cfg.oru.clone()
    };
    if cfg.fhir_immunizations && !immunizations.is_empty() {
        if cfg.fhir_observations && !observations.is_empty() {
            return Err("the FHIR write holds both Observations and Immunizations: one v2 message cannot carry both (an ORU^R01 and a VXU^V04); write them in separate requests".into());
        }
        let ids: Vec<String> = immunizations
            .iter()
            .filter_map(|i| vxu::patient_id(i))
            .map(str::to_string)
            .collect();
        let patients = patients_of(store, &bundle, ids).await?;
        return vxu::build(&immunizations, &patients, &header, &PlanCodes((cfg.plan)()));
    }
    let patients = patients_of(store, &bundle, oru::subjects(&observations)).await?;
    oru::build(&observations, &patients, &header, &PlanCodes((cfg.plan)()))
}

/// The Patients `ids` name: those written in the same Bundle, else the gateway's current ones.
async fn patients_of(
    store: &Store,
    bundle: &serde_json::Value,
    ids: Vec<String>,
) -> Result<std::collections::HashMap<String, serde_json::Value>, String> {
    let mut patients = oru::bundled_patients(bundle);
    for id in ids {
        if patients.contains_key(&id) {
            continue;
        }
        match store.read_resource("Patient", &id).await {
            Ok(Some(row)) if !row.deleted => {
                if let Ok(p) = serde_json::from_str(&row.content) {
                    patients.insert(id, p);
                }
            }
            Ok(_) => {}
            Err(e) => return Err(format!("reading Patient/{id}: {e}")),
        }
    }
    Ok(patients)
}

/// Send one message and wait for its ACK: the ACK's text and what it says. Many receivers
/// close the connection after each ACK: a kept connection found closed (or failing before an
/// answer) is replaced by a new one at once, without counting a failed attempt.
async fn exchange(
    cfg: &ForwardConfig,
    conn: &mut Option<Conn>,
    c: &Message<'_>,
) -> Result<(String, Answer), String> {
    if let Some(f) = conn {
        // Anything readable now, before we sent, is the end of the connection (or an answer
        // nobody asked for): start over on a new one.
        if let Some(early) = f.next().now_or_never() {
            if let Some(Ok(_)) = early {
                tracing::warn!("forward: the receiver sent an unsolicited frame; reconnecting");
            }
            *conn = None;
        }
    }
    if conn.is_some() {
        match attempt(cfg, conn, c).await {
            Err(Failed::Closed(e)) => {
                tracing::debug!(error = %e, "forward: the kept connection was closed; trying a new one");
                *conn = None;
            }
            other => return other.map_err(Failed::into_text),
        }
    }
    attempt(cfg, conn, c).await.map_err(Failed::into_text)
}

/// Why an attempt failed.
enum Failed {
    /// The connection broke (write error, end of stream, read error) before any answer.
    Closed(String),
    /// Anything else: no connection, a timeout, an answer that is not an ACK of the message.
    Other(String),
}

impl Failed {
    fn into_text(self) -> String {
        match self {
            Failed::Closed(t) | Failed::Other(t) => t,
        }
    }
}

impl From<String> for Failed {
    fn from(t: String) -> Failed {
        Failed::Other(t)
    }
}

/// What is sent: the bytes and the control id the ACK must name.
struct Message<'a> {
    bytes: &'a [u8],
    control_id: &'a str,
}

/// One send-and-wait on the kept connection, or on a new one.
async fn attempt(
    cfg: &ForwardConfig,
    conn: &mut Option<Conn>,
    c: &Message<'_>,
) -> Result<(String, Answer), Failed> {
    let framed = match conn {
        Some(f) => f,
        None => {
            let s = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(&cfg.addr))
                .await
                .map_err(|_| format!("connecting to {}: timed out", cfg.addr))?
                .map_err(|e| format!("connecting to {}: {e}", cfg.addr))?;
            let _ = s.set_nodelay(true);
            let io: Box<dyn Io> = match &cfg.tls {
                None => Box::new(s),
                Some(tls) => Box::new(
                    tokio::time::timeout(
                        cfg.connect_timeout,
                        tls.connector.connect(tls.server_name.clone(), s),
                    )
                    .await
                    .map_err(|_| format!("TLS handshake with {}: timed out", cfg.addr))?
                    .map_err(|e| format!("TLS handshake with {}: {e}", cfg.addr))?,
                ),
            };
            conn.insert(Framed::new(io, MllpCodec::new(MAX_ACK)))
        }
    };
    tokio::time::timeout(cfg.timeout, framed.send(c.bytes))
        .await
        .map_err(|_| format!("writing to {}: timed out", cfg.addr))?
        .map_err(|e| Failed::Closed(format!("writing to {}: {e}", cfg.addr)))?;
    let secs = cfg.timeout.as_secs_f64();
    let answer = tokio::time::timeout(cfg.timeout, framed.next())
        .await
        .map_err(|_| format!("no acknowledgment from {} within {secs} s", cfg.addr))?;
    match answer {
        None => Err(Failed::Closed(format!(
            "{} closed the connection without acknowledging",
            cfg.addr
        ))),
        Some(Err(e)) => Err(Failed::Closed(format!("reading from {}: {e}", cfg.addr))),
        Some(Ok(Frame::Message(b))) => {
            let answer = read_ack(&b, c.control_id)?;
            Ok((String::from_utf8_lossy(&b).into_owned(), answer))
        }
        Some(Ok(Frame::Oversized { len, .. })) => Err(Failed::Other(format!(
            "the receiver's answer is {len} bytes, over the {MAX_ACK}-byte limit"
        ))),
        Some(Ok(Frame::Unterminated { .. })) => Err(Failed::Other(
            "the receiver's answer was not terminated (no FS)".into(),
        )),
    }
}

/// The pause before attempt `attempts + 1`: 1 s, doubling, at most `max`.
fn backoff(attempts: i64, max: Duration) -> Duration {
    let exp = attempts.clamp(1, 16) as u32 - 1;
    Duration::from_secs(1u64 << exp).min(max.max(Duration::from_secs(1)))
}

/// Messages claimed at once (sent one after the other, each after the previous one's ACK).
const CLAIM: i64 = 64;
/// Answers recorded in one transaction (at most this many are sent again after a crash).
const RECORD_EVERY: usize = 16;

/// The forwarder: claims the head of the queue, sends its messages one by one, records the
/// answers in groups, until `stop`.
pub async fn run(cfg: ForwardConfig, store: Store, mut stop: watch::Receiver<bool>) {
    match store.forward_release_all(&cfg.destination).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(rows = n, "forward: released leases of a previous run"),
        Err(e) => tracing::warn!(error = %e, "forward: could not release old leases"),
    }
    // One owner per destination: a lease names its destination's forwarder.
    let owner = format!(
        "forward-{}-{}-{}",
        cfg.destination,
        std::process::id(),
        now_micros()
    );
    // Until the next record: RECORD_EVERY exchanges, each within its timeouts.
    let lease = (cfg.timeout * 2 + cfg.connect_timeout) * (RECORD_EVERY as u32 + 1)
        + Duration::from_secs(30);
    let until = || now_micros() + lease.as_micros() as i64;
    let signal = store.forward_signal(&cfg.destination);
    let answered = store.forward_answered_signal(&cfg.destination);
    let mut conn: Option<Conn> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        let batch = match store
            .forward_claim(&cfg.destination, &owner, until(), CLAIM)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "forward: reading the queue failed; trying again in 1 s");
                Vec::new()
            }
        };
        if batch.is_empty() {
            // Nothing due: wait for a commit, for a retry to fall due, or for the end.
            tokio::select! {
                _ = signal.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            continue;
        }
        let mut answers: Vec<crate::store::Answered> = Vec::new();
        let mut held: Vec<i64> = batch.iter().map(|c| c.message_id).collect();
        for c in &batch {
            if *stop.borrow() {
                break;
            }
            let id = c.message_id;
            match send_one(&cfg, &store, &mut conn, c).await {
                Ok(a) => {
                    answers.push(a);
                    held.retain(|h| *h != id);
                }
                Err(why) => {
                    // The same message again after a pause; the ones after it wait.
                    conn = None;
                    metrics::counter!("v2fhir_forwarded_total", "destination" => cfg.destination.clone(), "result" => "retry").increment(1);
                    let attempts = c.attempts + 1;
                    let pause = backoff(attempts, cfg.retry_max);
                    tracing::warn!(destination = %cfg.destination, message_id = id, attempts, error = %why, retry_in_ms = pause.as_millis() as u64, "forward: attempt failed");
                    record(&store, &answered, &owner, &mut answers, &held, until()).await;
                    let next = now_micros() + pause.as_micros() as i64;
                    if let Err(e) = store.forward_retry(id, &owner, attempts, next, &why).await {
                        tracing::warn!(message_id = id, error = %e, "forward: recording the failed attempt failed");
                    }
                    held.retain(|h| *h != id);
                    break;
                }
            }
            if answers.len() >= RECORD_EVERY {
                record(&store, &answered, &owner, &mut answers, &held, until()).await;
            }
        }
        record(&store, &answered, &owner, &mut answers, &[], 0).await;
        if let Err(e) = store.forward_release(&owner, &held).await {
            tracing::warn!(error = %e, "forward: releasing unsent messages failed; their leases run out");
        }
    }
}

/// Record `answers` (and extend the lease on `held`); a failure is logged, and the messages are
/// sent again once their leases run out.
async fn record(
    store: &Store,
    answered: &tokio::sync::Notify,
    owner: &str,
    answers: &mut Vec<crate::store::Answered>,
    held: &[i64],
    lease_until: i64,
) {
    if answers.is_empty() {
        return;
    }
    match store
        .forward_answered(owner, answers, held, lease_until)
        .await
    {
        Ok(n) if n as usize == answers.len() => answered.notify_waiters(),
        Ok(n) => {
            answered.notify_waiters();
            tracing::warn!(
                recorded = n,
                answers = answers.len(),
                "forward: a lease ran out before the answer was recorded"
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "forward: recording answers failed; those messages will be sent again")
        }
    }
    answers.clear();
}

/// Build (FHIR writes) and send one message; its answer, or why the attempt failed (`Err`:
/// retry). A message that cannot be built is answered `dead` without being sent.
async fn send_one(
    cfg: &ForwardConfig,
    store: &Store,
    conn: &mut Option<Conn>,
    c: &ForwardClaim,
) -> Result<crate::store::Answered, String> {
    let id = c.message_id;
    let dead = |why: String, ack: Option<String>, payload: Option<String>| {
        metrics::counter!("v2fhir_forwarded_total", "destination" => cfg.destination.clone(), "result" => "dead").increment(1);
        crate::store::Answered {
            message_id: id,
            sent: false,
            ack,
            error: Some(why),
            payload,
        }
    };
    // A v2 message goes as received; a FHIR write as the ORU^R01 or VXU^V04 built for it (kept with the
    // answer).
    let (built, built_id) = if c.source == crate::ingest::Source::Fhir.as_str() {
        match build_message(cfg, store, c).await {
            Ok(text) => (Some(text), built_control_id(c)),
            Err(why) => {
                tracing::warn!(
                    message_id = id,
                    "forward: no v2 message can be built for this FHIR write; parked as dead"
                );
                return Ok(dead(why, None, None));
            }
        }
    } else {
        (None, String::new())
    };
    let message = match &built {
        Some(text) => Message {
            bytes: text.as_bytes(),
            control_id: &built_id,
        },
        None => Message {
            bytes: &c.raw,
            control_id: &c.control_id,
        },
    };
    match exchange(cfg, conn, &message).await? {
        (ack, Answer::Accepted) => {
            metrics::counter!("v2fhir_forwarded_total", "destination" => cfg.destination.clone(), "result" => "sent").increment(1);
            // Commit to the receiver's acceptance: how far behind the receiver's feed runs.
            metrics::histogram!("v2fhir_forward_latency_seconds", "destination" => cfg.destination.clone())
                .record((now_micros() - c.queued_at).max(0) as f64 / 1e6);
            Ok(crate::store::Answered {
                message_id: id,
                sent: true,
                ack: Some(ack),
                error: None,
                payload: built,
            })
        }
        (ack, Answer::Refused(why)) => {
            // The reason is the receiver's text, which may quote the message: not logged.
            tracing::warn!(
                message_id = id,
                "forward: the receiver refused the message; parked as dead"
            );
            Ok(dead(why, Some(ack), built))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgments_are_read_for_the_message_sent() {
        let ack = |msa: &str| format!("MSH|^~\\&|EHR|H|GW|H|20261130||ACK|A1|P|2.5.1\r{msa}\r");
        assert_eq!(
            read_ack(ack("MSA|AA|C1").as_bytes(), "C1"),
            Ok(Answer::Accepted)
        );
        assert_eq!(
            read_ack(ack("MSA|CA|C1").as_bytes(), "C1"),
            Ok(Answer::Accepted)
        );
        assert_eq!(
            read_ack(ack("MSA|AE|C1|bad PID").as_bytes(), "C1"),
            Ok(Answer::Refused("the receiver answered AE: bad PID".into()))
        );
        assert_eq!(
            read_ack(
                (ack("MSA|AR|C1")
                    + "ERR||PID^1^3|101^Required field missing^HL70357|E||||no MRN\r")
                    .as_bytes(),
                "C1"
            ),
            Ok(Answer::Refused("the receiver answered AR: no MRN".into()))
        );
        assert!(
            read_ack(ack("MSA|AA|C0").as_bytes(), "C1")
                .unwrap_err()
                .contains("'C0'")
        );
        assert!(read_ack(ack("MSA|ZZ|C1").as_bytes(), "C1").is_err());
        assert!(read_ack(b"not hl7", "C1").is_err());
        assert!(
            read_ack(b"MSH|^~\\&|EHR|H|GW|H|20261130||ACK|A1|P|2.5.1\r", "C1")
                .unwrap_err()
                .contains("no MSA")
        );
    }

    proptest::proptest! {
        /// Whatever a receiver answers, reading it gives a verdict or a reason, never a panic;
        /// an answer is only taken for the message sent when its MSA-2 names it.
        #[test]
        fn any_answer_is_read_without_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            code in "(AA|AE|AR|CA|CE|CR|ZZ|)",
            acked in "[A-Z0-9]{0,4}",
        ) {
            let _ = read_ack(&bytes, "C1");
            let ack = format!("MSH|^~\\&|EHR|H|GW|H|20261130||ACK|A1|P|2.5.1\rMSA|{code}|{acked}\r");
            if read_ack(ack.as_bytes(), "C1").is_ok() {
                proptest::prop_assert_eq!(acked.as_str(), "C1");
            }
        }
    }

    #[test]
    fn retries_back_off_to_the_limit() {
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, max), Duration::from_secs(1));
        assert_eq!(backoff(2, max), Duration::from_secs(2));
        assert_eq!(backoff(4, max), Duration::from_secs(8));
        assert_eq!(backoff(10, max), max);
        assert_eq!(backoff(1000, max), max);
    }
}
