//! The outbox: converted messages waiting for delivery to the upstream FHIR server.
//!
//! A row is written in the same transaction as its message (so a message is never acknowledged
//! without its delivery being guaranteed), claimed by a delivery worker with a lease, and then
//! deleted (delivered: the message becomes `delivered`), rescheduled (retry) or parked (`dead`,
//! with the upstream's OperationOutcome). Per-patient order: a row is claimable only when no
//! earlier row with the same `order_key` is still pending. Several replicas on one PostgreSQL
//! claim with `FOR UPDATE SKIP LOCKED` and a lease, so no message is delivered by two at once.

use super::exec::{Cols, Exec};
use super::{Backend, Status, Store, StoreError, db, now_micros, sql};
use serde::Serialize;
use sqlx::Row;

/// A message claimed for delivery.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The message's row id.
    pub message_id: i64,
    /// Attempts made before this one.
    pub attempts: i64,
    /// When the row was written (µs).
    pub created_at: i64,
    /// The message's FHIR Bundle (JSON text); `None` if the message has none any more.
    pub output: Option<String>,
}

/// The delivery state of one message, as shown by `GET /messages/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryState {
    /// `pending` or `dead`.
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// Next attempt (µs; pending only).
    pub next_attempt_at: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The upstream's OperationOutcome (dead messages), JSON text.
    pub outcome: Option<String>,
}

/// Outbox figures for `/health` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutboxStats {
    /// Messages waiting for delivery.
    pub pending: i64,
    /// Messages the upstream refused.
    pub dead: i64,
    /// When the oldest pending message was written (µs), if any.
    pub oldest_pending: Option<i64>,
}

/// The ordering key of a message: its Patient (`Patient/<id>` from the deterministic ids), or,
/// without a Patient, `fallback` (the message itself: no order to keep).
pub(crate) fn order_key(
    resources: &[super::NewResource],
    fallback: impl FnOnce() -> String,
) -> String {
    match resources.iter().find(|r| r.resource_type == "Patient") {
        Some(p) => format!("Patient/{}", p.id),
        None => fallback(),
    }
}

/// Later messages of the patient `key` than `id` that were delivered: marked `converted` again
/// (inside the caller's transaction) and returned, to be queued after `id`.
pub(crate) async fn later_delivered<E: Exec>(
    conn: &mut E,
    id: i64,
    key: &str,
) -> Result<Vec<i64>, StoreError> {
    let rows = conn
        .fetch(
            "find later deliveries of the patient",
            "UPDATE messages SET status = $1 WHERE id > $2 AND order_key = $3 AND status = $4 RETURNING id",
            &[
                sql::Arg::Text(Status::Converted.as_str().into()),
                sql::Arg::Int(id),
                sql::Arg::Text(key.into()),
                sql::Arg::Text(Status::Delivered.as_str().into()),
            ],
        )
        .await?;
    let mut ids: Vec<i64> = rows.iter().map(|r| r.int(0)).collect::<Result<_, _>>()?;
    ids.sort_unstable();
    Ok(ids)
}

/// The two delivery queues: the upstream outbox, and the MLLP forwarding queue.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Queue {
    Outbox,
    Forward,
}

/// Insert (or re-arm) outbox rows inside the caller's transaction.
pub(crate) async fn enqueue<E: Exec>(
    conn: &mut E,
    rows: &[(i64, String)],
    now: i64,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(512) {
        // state 'pending', attempts 0 and lease_until 0 are the columns' defaults.
        let mut text = String::from(
            "INSERT INTO outbox (message_id, order_key, created_at, next_attempt_at) VALUES ",
        );
        text.push_str(&sql::values_list(chunk.len(), 4));
        text.push_str(
            " ON CONFLICT (message_id) DO UPDATE SET state = 'pending', attempts = 0, \
             next_attempt_at = excluded.next_attempt_at, lease_owner = NULL, lease_until = 0, \
             last_error = NULL, outcome = NULL, order_key = excluded.order_key",
        );
        let mut args = Vec::with_capacity(chunk.len() * 4);
        for (id, key) in chunk {
            args.push(sql::Arg::Int(*id));
            args.push(sql::Arg::Text(key.clone()));
            args.push(sql::Arg::Int(now));
            args.push(sql::Arg::Int(now));
        }
        conn.execute("write the outbox", &text, &args).await?;
    }
    Ok(())
}

impl Store {
    /// Claim up to `limit` due messages for `owner` until `lease_until` (µs): the oldest pending
    /// message of each patient whose turn it is, skipping rows another worker holds.
    pub async fn outbox_claim(
        &self,
        owner: &str,
        limit: i64,
        lease_until: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let now = now_micros();
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let text = format!(
            "UPDATE outbox SET lease_owner = $1, lease_until = $2 \
             WHERE lease_until <= $3 AND state = 'pending' AND message_id IN ( \
               SELECT o.message_id FROM outbox o \
               WHERE o.state = 'pending' AND o.next_attempt_at <= $3 AND o.lease_until <= $3 \
                 AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.order_key = o.order_key \
                                 AND p.state = 'pending' AND p.message_id < o.message_id) \
               ORDER BY o.message_id LIMIT $4{lock}) \
             RETURNING message_id, attempts, created_at"
        );
        let args = [
            sql::Arg::Text(owner.into()),
            sql::Arg::Int(lease_until),
            sql::Arg::Int(now),
            sql::Arg::Int(limit),
        ];
        // Not through write_tx!: mostly a read (the walk over pending rows), which on its own
        // connection runs beside the commits (WAL); only its few row updates take the write lock.
        // On the writer connection it held back the commits: ingest during an upstream outage
        // fell from ~1,050 to ~900 msg/s on 8 connections, from ~1,500 to ~750 with power-loss.
        let mut conn = self.writer.acquire().await.map_err(db("acquire"))?;
        let rows = Exec::fetch(&mut *conn, "claim outbox rows", &text, &args).await?;
        drop(conn);
        let mut claimed = Vec::with_capacity(rows.len());
        for r in &rows {
            claimed.push(Claimed {
                message_id: r.int(0)?,
                attempts: r.int(1)?,
                created_at: r.int(2)?,
                output: None,
            });
        }
        if claimed.is_empty() {
            return Ok(claimed);
        }
        claimed.sort_by_key(|c| c.message_id);
        let text = format!(
            "SELECT id, output, output_z FROM messages WHERE id IN ({})",
            sql::placeholders(claimed.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
        for c in &claimed {
            q = q.bind(c.message_id);
        }
        let outputs = q
            .fetch_all(&self.pool)
            .await
            .map_err(db("read claimed messages"))?;
        for r in &outputs {
            let id: i64 = r.try_get(0).map_err(db("decode id"))?;
            let output = super::packed::output_text(
                id,
                r.try_get(1).map_err(db("decode output"))?,
                r.try_get(2).map_err(db("decode output_z"))?,
            )
            .map_err(|e| db("decode output_z")(sqlx::Error::Decode(e.into())))?;
            if let Ok(i) = claimed.binary_search_by_key(&id, |c| c.message_id) {
                claimed[i].output = output;
            }
        }
        Ok(claimed)
    }

    /// The upstream accepted the message: drop its outbox row (only if `owner` still holds it)
    /// and mark it `delivered`. Returns false when the lease was lost meanwhile.
    pub async fn outbox_delivered(&self, id: i64, owner: &str) -> Result<bool, StoreError> {
        Ok(self.outbox_delivered_many(&[id], owner).await?.len() == 1)
    }

    /// Release every lease (start-up on SQLite, where one process owns the file: rows a crashed
    /// predecessor held are delivered at once instead of after their lease runs out). Returns
    /// how many rows were held.
    pub async fn outbox_release_all(&self) -> Result<u64, StoreError> {
        write_tx!(self, |c| c.execute(
            "release outbox leases",
            "UPDATE outbox SET lease_owner = NULL, lease_until = 0 WHERE lease_owner IS NOT NULL",
            &[],
        ))
    }

    /// Several messages accepted upstream, recorded in one transaction (rows `owner` no longer
    /// holds are left alone). Returns the ids recorded.
    pub async fn outbox_delivered_many(
        &self,
        ids: &[i64],
        owner: &str,
    ) -> Result<Vec<i64>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_micros();
        write_tx!(self, |c| async {
            let mut done = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(512) {
                let text = format!(
                    "DELETE FROM outbox WHERE lease_owner = $1 AND message_id IN ({}) RETURNING message_id",
                    sql::placeholders_from(2, chunk.len())
                );
                let mut args = vec![sql::Arg::Text(owner.into())];
                args.extend(chunk.iter().map(|id| sql::Arg::Int(*id)));
                let mut gone = Vec::new();
                for r in c
                    .fetch("remove delivered outbox rows", &text, &args)
                    .await?
                {
                    gone.push(r.int(0)?);
                }
                if !gone.is_empty() {
                    let text = format!(
                        "UPDATE messages SET status = $1, updated_at = $2 WHERE id IN ({})",
                        sql::placeholders_from(3, gone.len())
                    );
                    let mut args = vec![
                        sql::Arg::Text(Status::Delivered.as_str().into()),
                        sql::Arg::Int(now),
                    ];
                    args.extend(gone.iter().map(|id| sql::Arg::Int(*id)));
                    c.execute("mark messages delivered", &text, &args).await?;
                }
                done.extend(gone);
            }
            Ok::<_, StoreError>(done)
        })
    }

    /// A retryable failure: count the attempt, try again at `next_attempt_at` (µs).
    pub async fn outbox_retry(
        &self,
        id: i64,
        owner: &str,
        attempts: i64,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        self.reschedule(Queue::Outbox, id, owner, attempts, next_attempt_at, error)
            .await
    }

    /// Count a failed attempt at a row of `queue` held by `owner` and release it until
    /// `next_attempt_at` (µs).
    pub(crate) async fn reschedule(
        &self,
        queue: Queue,
        id: i64,
        owner: &str,
        attempts: i64,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let args = [
            sql::Arg::Int(attempts),
            sql::Arg::Int(next_attempt_at),
            sql::Arg::Text(error.into()),
            sql::Arg::Int(id),
            sql::Arg::Text(owner.into()),
        ];
        let (what, text) = match queue {
            Queue::Outbox => (
                "reschedule an outbox row",
                "UPDATE outbox SET attempts = $1, next_attempt_at = $2, last_error = $3, \
                 lease_owner = NULL, lease_until = 0 WHERE message_id = $4 AND lease_owner = $5",
            ),
            Queue::Forward => (
                "reschedule a forwarding",
                "UPDATE forward_queue SET attempts = $1, next_attempt_at = $2, last_error = $3, \
                 lease_owner = NULL, lease_until = 0 WHERE message_id = $4 AND lease_owner = $5",
            ),
        };
        write_tx!(self, |c| c.execute(what, text, &args))?;
        Ok(())
    }

    /// The upstream refused the message (or it ran out of attempts): park it as `dead` with the
    /// reason and the upstream's OperationOutcome. Later messages of the same patient go on.
    pub async fn outbox_dead(
        &self,
        id: i64,
        owner: &str,
        attempts: i64,
        error: &str,
        outcome: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = now_micros();
        let args = [
            sql::Arg::Int(attempts),
            sql::Arg::Text(error.into()),
            sql::Arg::opt_text(outcome),
            sql::Arg::Int(id),
            sql::Arg::Text(owner.into()),
        ];
        write_tx!(self, |c| async {
            let parked = c
                .execute(
                    "park an outbox row",
                    "UPDATE outbox SET state = 'dead', attempts = $1, last_error = $2, outcome = $3, \
                     lease_owner = NULL, lease_until = 0 WHERE message_id = $4 AND lease_owner = $5",
                    &args,
                )
                .await?;
            if parked == 1 {
                c.execute(
                    "mark a message dead",
                    "UPDATE messages SET status = $1, updated_at = $2 WHERE id = $3",
                    &[
                        sql::Arg::Text(Status::Dead.as_str().into()),
                        sql::Arg::Int(now),
                        sql::Arg::Int(id),
                    ],
                )
                .await?;
            }
            Ok::<_, StoreError>(())
        })
    }

    /// The outbox row of one message, if it has one.
    pub async fn outbox_state(&self, id: i64) -> Result<Option<DeliveryState>, StoreError> {
        let row = sqlx::query(
            "SELECT state, attempts, next_attempt_at, last_error, outcome FROM outbox WHERE message_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read an outbox row"))?;
        row.map(|r| {
            Ok(DeliveryState {
                state: r.try_get(0)?,
                attempts: r.try_get(1)?,
                next_attempt_at: r.try_get(2)?,
                last_error: r.try_get(3)?,
                outcome: r.try_get(4)?,
            })
        })
        .transpose()
        .map_err(db("decode an outbox row"))
    }

    /// Pending and dead counts and the oldest pending row.
    pub async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let rows =
            sqlx::query("SELECT state, COUNT(*), MIN(created_at) FROM outbox GROUP BY state")
                .fetch_all(&self.pool)
                .await
                .map_err(db("count the outbox"))?;
        let mut s = OutboxStats::default();
        for r in &rows {
            let state: String = r.try_get(0).map_err(db("decode outbox stats"))?;
            let n: i64 = r.try_get(1).map_err(db("decode outbox stats"))?;
            let oldest: Option<i64> = r.try_get(2).map_err(db("decode outbox stats"))?;
            match state.as_str() {
                "pending" => {
                    s.pending = n;
                    s.oldest_pending = oldest;
                }
                "dead" => s.dead = n,
                _ => {}
            }
        }
        Ok(s)
    }

    /// Ids of messages whose status is `status` and whose id is above `after`, oldest first (for
    /// bulk reprocessing, page by page).
    pub async fn ids_with_status(
        &self,
        status: Status,
        after: i64,
        limit: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM messages WHERE status = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(status.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db("list messages by status"))?;
        rows.iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("decode ids"))
    }

    /// Replace the acknowledgment stored for a message (the synchronous ACK policy answers after
    /// the upstream, so a resend gets the same answer).
    pub async fn set_ack(&self, id: i64, ack_code: &str, ack: &str) -> Result<(), StoreError> {
        let args = [
            sql::Arg::Text(ack_code.into()),
            sql::Arg::Text(ack.into()),
            sql::Arg::Int(id),
        ];
        write_tx!(self, |c| c.execute(
            "store the acknowledgment",
            "UPDATE messages SET ack_code = $1, ack = $2 WHERE id = $3",
            &args,
        ))?;
        Ok(())
    }
}

impl Store {
    /// Retention: delete up to `limit` logged messages received before `before` (µs) whose
    /// story is over — `converted`, `delivered`, `duplicate`, `rejected` — and that no outbox row
    /// still needs; oldest first. Messages that need attention (`error`, `dead`, `received`) are
    /// kept. Their FHIR resources stay. Returns how many were deleted.
    pub async fn prune(&self, before: i64, limit: i64) -> Result<u64, StoreError> {
        let args = [sql::Arg::Int(before), sql::Arg::Int(limit)];
        // The same rows twice in one transaction (a deterministic order): their forwarding
        // rows (only `sent` ones can be among them), then the messages.
        const DOOMED: &str = "SELECT m.id FROM messages m \
             WHERE m.received_at < $1 \
             AND m.status IN ('converted', 'delivered', 'duplicate', 'rejected') \
             AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = m.id) \
             AND NOT EXISTS (SELECT 1 FROM forward_queue f WHERE f.message_id = m.id \
                             AND f.state <> 'sent') \
             ORDER BY m.received_at, m.id LIMIT $2";
        write_tx!(self, |c| async {
            c.execute(
                "prune the forwarding queue",
                &format!("DELETE FROM forward_queue WHERE message_id IN ({DOOMED})"),
                &args,
            )
            .await?;
            c.execute(
                "prune the message log",
                &format!("DELETE FROM messages WHERE id IN ({DOOMED})"),
                &args,
            )
            .await
        })
    }
}

/// Delete the finished messages received more than `days` days ago, in batches of 1,000 (each
/// its own short transaction, so ingest is not held up); how many were deleted.
pub async fn prune_older_than(store: &Store, days: u32) -> Result<u64, StoreError> {
    const BATCH: i64 = 1000;
    let before = now_micros() - i64::from(days) * 86_400_000_000;
    let mut total = 0;
    loop {
        let n = store.prune(before, BATCH).await?;
        total += n;
        metrics::counter!("v2fhir_messages_pruned_total").increment(n);
        if n < BATCH as u64 {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}
