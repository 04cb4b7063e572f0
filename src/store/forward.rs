//! The forwarding queue: accepted HL7 v2 messages (and FHIR writes holding Observations, sent as
//! ORU^R01) waiting to be passed on to downstream MLLP systems (`[forward]` and its routes, each
//! a destination; delivered by `sinks::forward`).
//!
//! A row per message and destination is written in the transaction that logs the message, so a
//! message that was acknowledged is queued. Each destination's rows go strictly in message id
//! order, one message at a time across all replicas: a forwarder claims only from the lowest
//! pending id on (a run of up to 64, leased), and a message whose retry is not yet due holds back
//! the ones after it, as an interface engine's queue does. A receiver's AE/AR parks the row as
//! `dead` (with its ACK); later messages go on.

use super::exec::{Cols, Exec};
use super::{Backend, Status, Store, StoreError, db, now_micros, sql};
use serde::Serialize;
use sqlx::Row;

/// Which logged messages are forwarded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardFilter {
    /// MSH-9 patterns (`ADT^A01`, `ADT^*`, `*`); empty: every type.
    pub types: Vec<String>,
    /// Also forward messages answered AE because their conversion to FHIR failed (the
    /// downstream system may well take them).
    pub include_errors: bool,
    /// FHIR writes holding Observations are sent too, as an ORU^R01 the forwarder builds.
    pub fhir_observations: bool,
    /// FHIR writes holding Immunizations are sent too, as a VXU^V04 the forwarder builds.
    pub fhir_immunizations: bool,
}

impl ForwardFilter {
    /// Is a logged message with this status, source (`mllp`, `http`, `file`, `fhir`), type
    /// (`ADT^A01`, as logged) and resources forwarded? HL7 v2 messages as received; FHIR writes
    /// only with `fhir_observations`, when they stored an Observation (sent as an ORU^R01), or
    /// with `fhir_immunizations`, when they stored an Immunization (sent as a VXU^V04);
    /// never rejected messages or duplicates.
    pub fn wants(
        &self,
        status: Status,
        source: &str,
        message_type: &str,
        resources: &[super::NewResource],
    ) -> bool {
        if source == crate::ingest::Source::Fhir.as_str() {
            let stored = |ty: &str| {
                resources
                    .iter()
                    .any(|r| r.resource_type == ty && !r.deleted)
            };
            return status == Status::Converted
                && ((self.fhir_observations && stored("Observation"))
                    || (self.fhir_immunizations && stored("Immunization")));
        }
        let accepted = match status {
            Status::Converted => true,
            Status::Error => self.include_errors,
            _ => false,
        };
        accepted
            && (self.types.is_empty() || self.types.iter().any(|p| type_matches(p, message_type)))
    }
}

/// `ADT^*` matches every ADT trigger, `*` everything, else type and trigger must be equal (a
/// structure given as MSH-9.3 on either side is ignored).
fn type_matches(pattern: &str, message_type: &str) -> bool {
    // Type and trigger: up to a second `^` (checked for every message a commit queues, so no
    // allocation).
    fn two(s: &str) -> &str {
        match s.match_indices('^').nth(1) {
            Some((i, _)) => &s[..i],
            None => s,
        }
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => message_type.starts_with(prefix),
        None => two(pattern).eq_ignore_ascii_case(two(message_type)),
    }
}

/// A message claimed for forwarding.
#[derive(Debug, Clone)]
pub struct ForwardClaim {
    /// The message's row id.
    pub message_id: i64,
    /// Attempts made before this one.
    pub attempts: i64,
    /// When it was queued (µs): the commit.
    pub queued_at: i64,
    /// MSH-10 as logged (the receiver's MSA-2 must repeat it).
    pub control_id: String,
    /// The message as received.
    pub raw: Vec<u8>,
    /// Where it came from (`mllp`, `http`, `file`, `fhir`).
    pub source: String,
    /// The stored Bundle of a FHIR write (what an ORU^R01 is built from); `None` for v2.
    pub output: Option<String>,
}

/// The receiver's answer to one forwarded message (or why none could be sent).
#[derive(Debug, Clone)]
pub struct Answered {
    /// The message's row id.
    pub message_id: i64,
    /// AA/CA (`sent`), else `dead`.
    pub sent: bool,
    /// The receiver's acknowledgment, if it answered.
    pub ack: Option<String>,
    /// Why the message is dead.
    pub error: Option<String>,
    /// The message sent, when the gateway built it.
    pub payload: Option<String>,
}

/// The forwarding state of one message at one destination, as shown by `GET /messages/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardState {
    /// `default`, or the route's name.
    pub destination: String,
    /// `pending`, `sent` or `dead`.
    pub state: String,
    /// Attempts that failed (connection, timeout, or an answer that was not an ACK of it).
    pub attempts: i64,
    /// When the next attempt is due (µs since the epoch; pending only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<i64>,
    /// Why the last attempt failed, or why the message is dead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The receiver's acknowledgment (sent and dead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<String>,
    /// When the receiver accepted it (µs since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<i64>,
    /// The message sent, when the gateway built it (an ORU^R01 from a FHIR write).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// Counts for `/health` and `/metrics` (pending, dead, the oldest pending row), as the outbox's.
pub type ForwardStats = super::OutboxStats;

/// The destination of `[forward]` itself; its routes go by their names.
pub const DEFAULT_DESTINATION: &str = "default";

/// A destination: its name, what it takes, and the signal its forwarder waits on.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) name: String,
    pub(crate) filter: ForwardFilter,
    pub(crate) signal: std::sync::Arc<tokio::sync::Notify>,
    /// Woken (every waiter) when this gateway records answers of this destination.
    pub(crate) answered: std::sync::Arc<tokio::sync::Notify>,
}

/// Queue messages for destinations (`(message id, destination)`, inside the caller's
/// transaction). A message already queued for a destination stays as it is, unless it is dead
/// there: then it is queued again (a reprocessed message).
pub(crate) async fn enqueue<E: Exec>(
    conn: &mut E,
    rows: &[(i64, &str)],
    now: i64,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(512) {
        let mut text = String::from(
            "INSERT INTO forward_queue (message_id, destination, created_at, next_attempt_at) VALUES ",
        );
        text.push_str(&sql::values_list(chunk.len(), 4));
        text.push_str(
            " ON CONFLICT (destination, message_id) DO UPDATE SET state = 'pending', attempts = 0, \
             next_attempt_at = excluded.next_attempt_at, lease_owner = NULL, lease_until = 0, \
             last_error = NULL, ack = NULL, sent_at = NULL, payload = NULL \
             WHERE forward_queue.state = 'dead'",
        );
        let mut args = Vec::with_capacity(chunk.len() * 4);
        for (id, destination) in chunk {
            args.extend([
                sql::Arg::Int(*id),
                sql::Arg::Text((*destination).into()),
                sql::Arg::Int(now),
                sql::Arg::Int(now),
            ]);
        }
        conn.execute("queue messages for forwarding", &text, &args)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Is forwarding on (any destination)?
    pub fn forwarding(&self) -> bool {
        !self.forward.is_empty()
    }

    /// Turn forwarding on: commits queue, for each destination (name, filter), the messages its
    /// filter wants.
    pub fn with_forward(mut self, routes: Vec<(String, ForwardFilter)>) -> Store {
        self.forward = std::sync::Arc::new(
            routes
                .into_iter()
                .map(|(name, filter)| Route {
                    name,
                    filter,
                    signal: Default::default(),
                    answered: Default::default(),
                })
                .collect(),
        );
        self
    }

    /// The destinations a message with this status, source, type and resources is queued for.
    pub(crate) fn forward_targets(
        &self,
        status: Status,
        source: &str,
        message_type: &str,
        resources: &[super::NewResource],
    ) -> Vec<&str> {
        self.forward
            .iter()
            .filter(|r| r.filter.wants(status, source, message_type, resources))
            .map(|r| r.name.as_str())
            .collect()
    }

    /// Wake every forwarder (after a commit).
    pub(crate) fn wake_forwarders(&self) {
        for r in self.forward.iter() {
            r.signal.notify_one();
        }
    }

    /// Notified after commits (the forwarder of `destination` waits on it); a signal of its own
    /// when there is no such destination.
    pub fn forward_signal(&self, destination: &str) -> std::sync::Arc<tokio::sync::Notify> {
        self.forward
            .iter()
            .find(|r| r.name == destination)
            .map(|r| r.signal.clone())
            .unwrap_or_default()
    }

    /// Woken (every waiter at once) when this gateway records answers of `destination`'s
    /// receiver; a signal of its own when there is no such destination.
    pub fn forward_answered_signal(
        &self,
        destination: &str,
    ) -> std::sync::Arc<tokio::sync::Notify> {
        self.forward
            .iter()
            .find(|r| r.name == destination)
            .map(|r| r.answered.clone())
            .unwrap_or_default()
    }

    /// Where one message stands at `destination`: `None` when it is not queued there.
    pub async fn forward_state_at(
        &self,
        id: i64,
        destination: &str,
    ) -> Result<Option<ForwardState>, StoreError> {
        Ok(self
            .forward_state(id)
            .await?
            .into_iter()
            .find(|s| s.destination == destination))
    }

    /// Claim the head of `destination`'s queue for `owner` until `lease_until` (µs): the lowest
    /// pending message ids, at most `limit`, in order — if the lowest one is due and nobody
    /// holds it. Empty otherwise (nothing pending, a retry not yet due, or another replica
    /// sending).
    pub async fn forward_claim(
        &self,
        destination: &str,
        owner: &str,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<ForwardClaim>, StoreError> {
        let now = now_micros();
        let args = [
            sql::Arg::Text(owner.into()),
            sql::Arg::Int(lease_until),
            sql::Arg::Int(now),
            sql::Arg::Int(limit),
            sql::Arg::Text(destination.into()),
        ];
        // As the outbox claim: on its own connection, not the writer's transaction. Rows after
        // the head are only ever taken with it: a head waiting for its retry, or held by
        // another replica, holds back the whole queue of its destination. On PostgreSQL the
        // head row is locked first, so concurrent claims of one destination run one after the
        // other (a claim that checked the head in its snapshot could otherwise take the rows
        // after a head another replica was claiming at that moment). SQLite's write lock
        // serializes the single statement already.
        const CLAIM: &str = "UPDATE forward_queue SET lease_owner = $1, lease_until = $2 \
             WHERE destination = $5 \
             AND message_id IN (SELECT message_id FROM forward_queue \
                                WHERE destination = $5 AND state = 'pending' \
                                ORDER BY message_id LIMIT $4) \
             AND state = 'pending' AND lease_until <= $3 \
             AND EXISTS (SELECT 1 FROM forward_queue h WHERE h.destination = $5 \
                         AND h.message_id = (SELECT MIN(message_id) FROM forward_queue \
                                             WHERE destination = $5 AND state = 'pending') \
                         AND h.next_attempt_at <= $3 AND h.lease_until <= $3) \
             RETURNING message_id, attempts, created_at";
        let rows = match self.backend {
            Backend::Sqlite => {
                let mut conn = self.writer.acquire().await.map_err(db("acquire"))?;
                Exec::fetch(
                    &mut *conn,
                    "claim the forwarding queue's head",
                    CLAIM,
                    &args,
                )
                .await?
            }
            Backend::Postgres => {
                let mut tx = self.writer.begin().await.map_err(db("begin"))?;
                let head = sqlx::query(
                    "SELECT message_id FROM forward_queue WHERE destination = $1 \
                     AND state = 'pending' ORDER BY message_id LIMIT 1 FOR UPDATE",
                )
                .bind(destination)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("lock the forwarding queue's head"))?;
                let rows = match head {
                    None => Vec::new(),
                    Some(_) => {
                        Exec::fetch(&mut *tx, "claim the forwarding queue's head", CLAIM, &args)
                            .await?
                    }
                };
                tx.commit().await.map_err(db("commit a claim"))?;
                rows
            }
        };
        let mut claimed: Vec<(i64, i64, i64)> = rows
            .iter()
            .map(|r| Ok((r.int(0)?, r.int(1)?, r.int(2)?)))
            .collect::<Result<_, StoreError>>()?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        claimed.sort_unstable();
        let text = format!(
            "SELECT id, raw, control_id, source, output, output_z FROM messages WHERE id IN ({})",
            sql::placeholders(claimed.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
        for (id, _, _) in &claimed {
            q = q.bind(*id);
        }
        let found = q
            .fetch_all(&self.pool)
            .await
            .map_err(db("read messages to forward"))?;
        let mut by_id: std::collections::HashMap<i64, sqlx::any::AnyRow> =
            std::collections::HashMap::new();
        for r in found {
            by_id.insert(r.try_get(0).map_err(db("decode id"))?, r);
        }
        let mut out = Vec::with_capacity(claimed.len());
        for (message_id, attempts, queued_at) in claimed {
            let Some(row) = by_id.get(&message_id) else {
                return Err(StoreError::Internal(
                    "a queued message is not in the message log",
                ));
            };
            let source: String = row.try_get(3).map_err(db("decode source"))?;
            let output = if source == crate::ingest::Source::Fhir.as_str() {
                super::packed::output_text(
                    message_id,
                    row.try_get(4).map_err(db("decode output"))?,
                    row.try_get(5).map_err(db("decode output_z"))?,
                )
                .map_err(|e| db("decode output_z")(sqlx::Error::Decode(e.into())))?
            } else {
                None
            };
            out.push(ForwardClaim {
                message_id,
                attempts,
                queued_at,
                raw: row.try_get(1).map_err(db("decode raw"))?,
                control_id: row.try_get(2).map_err(db("decode control_id"))?,
                source,
                output,
            });
        }
        Ok(out)
    }

    /// Record the receiver's answers to messages `owner` holds, in one transaction, and extend
    /// its lease on `still_held` to `lease_until` (µs). Returns how many answers were recorded
    /// (fewer when a lease ran out meanwhile).
    pub async fn forward_answered(
        &self,
        owner: &str,
        answers: &[Answered],
        still_held: &[i64],
        lease_until: i64,
    ) -> Result<u64, StoreError> {
        let now = now_micros();
        write_tx!(self, |c| async {
            let mut n = 0;
            for a in answers {
                n += c
                    .execute(
                        "record the receiver's answer",
                        "UPDATE forward_queue SET state = $1, ack = $2, last_error = $3, \
                         sent_at = $4, payload = $5, lease_owner = NULL, lease_until = 0 \
                         WHERE message_id = $6 AND lease_owner = $7",
                        &[
                            sql::Arg::Text(if a.sent { "sent" } else { "dead" }.into()),
                            sql::Arg::opt_text(a.ack.as_deref()),
                            sql::Arg::opt_text(a.error.as_deref()),
                            sql::Arg::opt_int(a.sent.then_some(now)),
                            sql::Arg::opt_text(a.payload.as_deref()),
                            sql::Arg::Int(a.message_id),
                            sql::Arg::Text(owner.into()),
                        ],
                    )
                    .await?;
            }
            if !still_held.is_empty() {
                let text = format!(
                    "UPDATE forward_queue SET lease_until = $1 WHERE lease_owner = $2 \
                     AND message_id IN ({})",
                    sql::placeholders_from(3, still_held.len())
                );
                let mut args = vec![sql::Arg::Int(lease_until), sql::Arg::Text(owner.into())];
                args.extend(still_held.iter().map(|id| sql::Arg::Int(*id)));
                c.execute("extend forwarding leases", &text, &args).await?;
            }
            Ok::<_, StoreError>(n)
        })
    }

    /// Give back the leases `owner` holds on `ids` (claimed, not sent).
    pub async fn forward_release(&self, owner: &str, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let text = format!(
            "UPDATE forward_queue SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = $1 \
             AND message_id IN ({})",
            sql::placeholders_from(2, ids.len())
        );
        let mut args = vec![sql::Arg::Text(owner.into())];
        args.extend(ids.iter().map(|id| sql::Arg::Int(*id)));
        write_tx!(self, |c| c.execute(
            "release forwarding leases",
            &text,
            &args
        ))?;
        Ok(())
    }

    /// A failed attempt (connection, timeout, no ACK of this message): try again at
    /// `next_attempt_at` (µs).
    pub async fn forward_retry(
        &self,
        id: i64,
        owner: &str,
        attempts: i64,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        self.reschedule(
            super::outbox::Queue::Forward,
            id,
            owner,
            attempts,
            next_attempt_at,
            error,
        )
        .await
    }

    /// Queue again the rows receivers refused (`dead`), at `destination` or at all of them, with
    /// their attempts reset; how many.
    pub async fn forward_rearm(&self, destination: Option<&str>) -> Result<u64, StoreError> {
        let now = now_micros();
        let (text, args) = match destination {
            Some(d) => (
                "UPDATE forward_queue SET state = 'pending', attempts = 0, next_attempt_at = $1, \
                 last_error = NULL, ack = NULL, payload = NULL WHERE state = 'dead' \
                 AND destination = $2",
                vec![sql::Arg::Int(now), sql::Arg::Text(d.into())],
            ),
            None => (
                "UPDATE forward_queue SET state = 'pending', attempts = 0, next_attempt_at = $1, \
                 last_error = NULL, ack = NULL, payload = NULL WHERE state = 'dead'",
                vec![sql::Arg::Int(now)],
            ),
        };
        let n = write_tx!(self, |c| c.execute(
            "queue dead forwards again",
            text,
            &args
        ))?;
        self.wake_forwarders();
        Ok(n)
    }

    /// SQLite (one process owns the file): drop the leases of `destination` a crashed
    /// predecessor left. Only that destination's: the forwarders of the others may hold leases
    /// of this run already.
    pub async fn forward_release_all(&self, destination: &str) -> Result<u64, StoreError> {
        if self.backend != Backend::Sqlite {
            return Ok(0);
        }
        let args = [sql::Arg::Text(destination.into())];
        write_tx!(self, |c| c.execute(
            "release forwarding leases",
            "UPDATE forward_queue SET lease_owner = NULL, lease_until = 0 \
             WHERE destination = $1 AND lease_owner IS NOT NULL",
            &args,
        ))
    }

    /// The forwarding rows of one message, one per destination (in name order).
    pub async fn forward_state(&self, id: i64) -> Result<Vec<ForwardState>, StoreError> {
        let rows = sqlx::query(
            "SELECT destination, state, attempts, next_attempt_at, last_error, ack, sent_at, \
             payload FROM forward_queue WHERE message_id = $1 ORDER BY destination",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read forwarding rows"))?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get(1)?;
                let next: i64 = r.try_get(3)?;
                Ok(ForwardState {
                    destination: r.try_get(0)?,
                    next_attempt_at: (state == "pending").then_some(next),
                    state,
                    attempts: r.try_get(2)?,
                    last_error: r.try_get(4)?,
                    ack: r.try_get(5)?,
                    sent_at: r.try_get(6)?,
                    payload: r.try_get(7)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("decode a forwarding row"))
    }

    /// Pending and dead counts and the oldest pending row, per destination (every configured
    /// destination, in order, zeros included).
    pub async fn forward_stats(&self) -> Result<Vec<(String, ForwardStats)>, StoreError> {
        let rows = sqlx::query(
            "SELECT destination, state, COUNT(*), MIN(created_at) FROM forward_queue \
             WHERE state <> 'sent' GROUP BY destination, state",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("count the forwarding queue"))?;
        let mut out: Vec<(String, ForwardStats)> = self
            .forward
            .iter()
            .map(|r| (r.name.clone(), ForwardStats::default()))
            .collect();
        for r in &rows {
            let decode = || db("decode forwarding stats");
            let destination: String = r.try_get(0).map_err(decode())?;
            let state: String = r.try_get(1).map_err(decode())?;
            let n: i64 = r.try_get(2).map_err(decode())?;
            let oldest: Option<i64> = r.try_get(3).map_err(decode())?;
            // Rows of a destination no longer configured are counted too.
            let i = match out.iter().position(|(d, _)| *d == destination) {
                Some(i) => i,
                None => {
                    out.push((destination, ForwardStats::default()));
                    out.len() - 1
                }
            };
            match state.as_str() {
                "pending" => {
                    out[i].1.pending = n;
                    out[i].1.oldest_pending = oldest;
                }
                "dead" => out[i].1.dead = n,
                _ => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_takes_accepted_messages_of_the_listed_types() {
        let all = ForwardFilter::default();
        assert!(all.wants(Status::Converted, "mllp", "ADT^A01", &[]));
        assert!(!all.wants(Status::Error, "mllp", "ADT^A01", &[]));
        assert!(!all.wants(Status::Rejected, "mllp", "ADT^A01", &[]));
        assert!(!all.wants(Status::Duplicate, "mllp", "ADT^A01", &[]));
        let some = ForwardFilter {
            types: vec!["ADT^*".into(), "ORU^R01".into()],
            include_errors: true,
            fhir_observations: false,
            fhir_immunizations: false,
        };
        assert!(some.wants(Status::Error, "mllp", "ADT^A08", &[]));
        assert!(some.wants(Status::Converted, "mllp", "ORU^R01^ORU_R01", &[]));
        assert!(some.wants(Status::Converted, "mllp", "oru^r01", &[]));
        assert!(!some.wants(Status::Converted, "mllp", "ORU^R30", &[]));
        assert!(!some.wants(Status::Converted, "mllp", "VXU^V04", &[]));
        assert!(!some.wants(Status::Rejected, "mllp", "ADT^A01", &[]));
        // A FHIR write is logged with a type of its own, and is never sent as if it were HL7 v2.
        assert!(!all.wants(Status::Converted, "fhir", "FHIR^transaction", &[]));
        assert!(!all.wants(Status::Converted, "fhir", "ADT^A01", &[]));
        // With fhir_observations, a FHIR write that stored an Observation goes (as an ORU^R01).
        let reading = crate::store::NewResource::from_json(&serde_json::json!(
            {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}}))
        .unwrap_or_else(|| panic!("no resource"));
        let patient = crate::store::NewResource::from_json(&serde_json::json!(
            {"resourceType": "Patient", "id": "p1"}))
        .unwrap_or_else(|| panic!("no resource"));
        let devices = ForwardFilter {
            fhir_observations: true,
            fhir_immunizations: false,
            ..ForwardFilter::default()
        };
        let both = [patient.clone(), reading.clone()];
        assert!(devices.wants(Status::Converted, "fhir", "FHIR^transaction", &both));
        assert!(!devices.wants(Status::Converted, "fhir", "FHIR^transaction", &[patient]));
        assert!(!devices.wants(
            Status::Error,
            "fhir",
            "FHIR^batch",
            std::slice::from_ref(&reading)
        ));
        assert!(!all.wants(
            Status::Converted,
            "fhir",
            "FHIR^transaction",
            std::slice::from_ref(&reading)
        ));
        // With fhir_immunizations, one that stored an Immunization goes (as a VXU^V04); a
        // reading does not, unless fhir_observations is on too.
        let vaccination = crate::store::NewResource::from_json(&serde_json::json!(
            {"resourceType": "Immunization", "id": "i1", "status": "completed"}))
        .unwrap_or_else(|| panic!("no resource"));
        let pharmacy = ForwardFilter {
            fhir_immunizations: true,
            ..ForwardFilter::default()
        };
        assert!(pharmacy.wants(
            Status::Converted,
            "fhir",
            "FHIR^transaction",
            std::slice::from_ref(&vaccination)
        ));
        assert!(!pharmacy.wants(Status::Converted, "fhir", "FHIR^transaction", &[reading]));
        assert!(!devices.wants(
            Status::Converted,
            "fhir",
            "FHIR^transaction",
            &[vaccination]
        ));
    }
}
