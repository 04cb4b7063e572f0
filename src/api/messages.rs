//! Operations endpoints: the message log, reprocessing, health and metrics.

use super::{ApiError, AppState};
use crate::ingest;
use crate::store::{MessageFilter, Status, StoredMessage};
use crate::v2::ack::Outcome;
use axum::Json;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

fn rfc3339(micros: i64) -> String {
    jiff::Timestamp::from_microsecond(micros)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn parse_time(name: &str, s: &str) -> Result<i64, ApiError> {
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_microsecond())
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "value",
                format!("query parameter '{name}': '{s}' is not an RFC 3339 instant ({e})"),
            )
        })
}

fn summary(m: &StoredMessage) -> Value {
    json!({
        "id": m.id,
        "received_at": rfc3339(m.received_at),
        "updated_at": rfc3339(m.updated_at),
        "source": m.source,
        "sending_application": m.sending_application,
        "sending_facility": m.sending_facility,
        "control_id": m.control_id,
        "message_type": m.message_type,
        "charset": m.charset,
        "content_hash": m.content_hash,
        "status": m.status,
        "ack_code": m.ack_code,
        "collision": m.collision,
        "duplicate_of": m.duplicate_of,
        "bytes": m.raw.len(),
        "links": {"self": format!("/messages/{}", m.id)},
    })
}

/// Query of `GET /messages`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    sender: Option<String>,
    #[serde(rename = "type")]
    message_type: Option<String>,
    source: Option<String>,
    forward: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
    before: Option<i64>,
}

/// `GET /messages`: filter, total, page, next link.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let status = match &q.status {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "value",
                format!(
                    "status '{s}' is not one of received, converted, delivered, dead, error, rejected, duplicate"
                ),
            )
        })?),
    };
    let filter = MessageFilter {
        status,
        sender: q.sender.clone(),
        message_type: q.message_type.clone(),
        source: match q.source.as_deref() {
            None => None,
            Some(s @ ("mllp" | "http" | "fhir" | "file")) => Some(s.to_string()),
            Some(s) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "value",
                    format!("source '{s}' is not one of mllp, http, fhir, file"),
                ));
            }
        },
        forward: match q.forward.as_deref() {
            None => None,
            Some(s @ ("pending" | "sent" | "dead")) => Some(s.to_string()),
            Some(s) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "value",
                    format!("forward '{s}' is not one of pending, sent, dead"),
                ));
            }
        },
        since: q
            .since
            .as_deref()
            .map(|s| parse_time("since", s))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|s| parse_time("until", s))
            .transpose()?,
        before_id: q.before,
        limit: q.limit.unwrap_or(50),
    };
    let page = state.pipeline.store().list(&filter).await?;
    let next = page.next_before.map(|b| {
        // Same query, cursor replaced.
        let kept: Vec<&str> = raw
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("before="))
            .collect();
        let mut qs = kept.join("&");
        if !qs.is_empty() {
            qs.push('&');
        }
        format!("{}/messages?{qs}before={b}", state.base_url)
    });
    Ok(Json(json!({
        "total": page.total,
        "items": page.items.iter().map(summary).collect::<Vec<_>>(),
        "next": next,
    })))
}

/// The raw bytes as text, decoded with the character set the message declares (MSH-18), so an
/// ISO 8859-1 message reads right; lossy UTF-8 when it does not parse.
fn raw_text(raw: &[u8]) -> String {
    match crate::v2::parse(raw) {
        Ok(p) if !p.messages.is_empty() => p.messages[0].charset().decode(raw).into_owned(),
        _ => String::from_utf8_lossy(raw).into_owned(),
    }
}

fn parse_json(s: &Option<String>) -> Value {
    s.as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

/// `GET /messages/{id}`: the message with its raw text, diagnostics, output and ACK.
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let m = state.pipeline.store().get(id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no message {id}"),
        )
    })?;
    let mut v = summary(&m);
    if let Some(o) = v.as_object_mut() {
        o.insert("raw".into(), Value::String(raw_text(&m.raw)));
        o.insert("diagnostics".into(), parse_json(&m.diagnostics));
        o.insert("output".into(), parse_json(&m.output));
        o.insert(
            "ack".into(),
            m.ack.map(Value::String).unwrap_or(Value::Null),
        );
        if let Some(d) = state.pipeline.store().outbox_state(id).await? {
            o.insert(
                "delivery".into(),
                json!({
                    "state": d.state,
                    "attempts": d.attempts,
                    "next_attempt_at": if d.state == "pending" { Value::String(rfc3339(d.next_attempt_at)) } else { Value::Null },
                    "last_error": d.last_error,
                    "outcome": parse_json(&d.outcome),
                }),
            );
        } else if m.status == Status::Delivered {
            o.insert("delivery".into(), json!({"state": "delivered"}));
        }
        let forward = state.pipeline.store().forward_state(id).await?;
        if !forward.is_empty() {
            let rows: Vec<Value> = forward
                .into_iter()
                .map(|f| {
                    json!({
                        "destination": f.destination,
                        "state": f.state,
                        "attempts": f.attempts,
                        "next_attempt_at": f.next_attempt_at.map(rfc3339),
                        "last_error": f.last_error,
                        "ack": f.ack,
                        "sent_at": f.sent_at.map(rfc3339),
                        "payload": f.payload,
                    })
                })
                .collect();
            o.insert("forward".into(), Value::Array(rows));
        }
    }
    Ok(Json(v))
}

/// `POST /messages/{id}/reprocess`: convert the stored raw message again with the mappings now
/// loaded; the row's status, output and diagnostics are replaced. No ACK is sent again.
pub async fn reprocess(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    reprocess_one(&state, id).await.map(Json)
}

/// Query of `POST /messages/reprocess`.
#[derive(Debug, Deserialize)]
pub struct BulkQuery {
    status: Option<String>,
    limit: Option<u32>,
    after: Option<i64>,
}

/// `POST /messages/reprocess?status=dead|error|converted|delivered`: reprocess the messages with
/// that status (oldest first, ids above `after`, at most `limit`, default 1000; `next` continues):
/// converted again with the mappings now loaded and, with an upstream, queued for delivery again
/// — `converted` backfills an upstream configured after the messages arrived, `delivered` sends
/// everything again (e.g. to an upstream that lost its data).
pub async fn reprocess_bulk(
    State(state): State<AppState>,
    Query(q): Query<BulkQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = match q.status.as_deref() {
        Some("dead") => Status::Dead,
        Some("error") => Status::Error,
        Some("converted") => Status::Converted,
        Some("delivered") => Status::Delivered,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "value",
                format!(
                    "status '{}' cannot be reprocessed in bulk; use dead, error, converted or delivered",
                    other.unwrap_or("")
                ),
            ));
        }
    };
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000) as i64;
    let after = q.after.unwrap_or(0);
    let ids = state
        .pipeline
        .store()
        .ids_with_status(status, after, limit)
        .await?;
    let next = match ids.last() {
        Some(last) if ids.len() as i64 == limit => Value::String(format!(
            "{}/messages/reprocess?status={}&after={last}&limit={limit}",
            state.base_url,
            status.as_str()
        )),
        _ => Value::Null,
    };
    let mut results = Vec::with_capacity(ids.len());
    let mut by_status: std::collections::BTreeMap<String, i64> = Default::default();
    for id in ids {
        let r = reprocess_one(&state, id).await?;
        let st = r
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        *by_status.entry(st).or_default() += 1;
        results.push(json!({"id": id, "status": r.get("status")}));
    }
    Ok(Json(json!({
        "reprocessed": results.len(),
        "by_status": by_status,
        "items": results,
        "next": next,
    })))
}

async fn reprocess_one(state: &AppState, id: i64) -> Result<Value, ApiError> {
    let store = state.pipeline.store();
    let m = store.get(id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no message {id}"),
        )
    })?;
    if m.status == Status::Duplicate {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "message {id} is a duplicate of {}; reprocess that one",
                m.duplicate_of.unwrap_or(0)
            ),
        ));
    }
    let plan = state.pipeline.plan();
    let cfg = state.pipeline.config().clone();
    // FHIR submissions are validated again; v2 messages converted again.
    let source = if m.source == ingest::Source::Fhir.as_str() {
        ingest::Source::Fhir
    } else {
        ingest::Source::Http
    };
    let prepared = ingest::prepare_blocking(m.raw.clone().into(), source, plan, cfg, m.received_at)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                format!("reprocessing message {id}: the conversion task failed: {e}"),
            )
        })?;
    // A stored row is one message (batches are split before storing).
    let Some(p) = prepared.into_iter().next() else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "processing",
            format!("message {id} holds no message to convert"),
        ));
    };
    let previous = m.status;
    let requeued = store
        .update_outcome(
            id,
            p.row.status,
            p.row.output.as_deref(),
            p.row.diagnostics.as_deref(),
            &p.row.resources,
        )
        .await?
        .unwrap_or_default();
    tracing::info!(
        id,
        from = previous.as_str(),
        to = p.row.status.as_str(),
        "message reprocessed"
    );
    Ok(json!({
        "id": id,
        "previous_status": previous,
        "status": p.row.status,
        "outcome": match p.outcome { Outcome::Accept => "accept", Outcome::Error => "error", Outcome::Reject => "reject" },
        "diagnostics": parse_json(&p.row.diagnostics),
        "links": {"self": format!("/messages/{id}")},
        "queued_for_delivery": p.row.status == Status::Converted && store.sinks().upstream,
        // Later messages of the same patient, delivered before: sent again after this one so the
        // upstream ends with the latest data.
        "requeued_later": requeued,
    }))
}

/// `POST /admin/mappings/reload`: load the mapping directory again and use it from the next
/// message on. A mapping set with errors is refused (422, every error as `file:line:col`) and the
/// running one stays.
pub async fn reload_mappings(State(state): State<AppState>) -> Response {
    let dir = state.mappings_dir.clone();
    let pipeline = state.pipeline.clone();
    let result = tokio::task::spawn_blocking(move || pipeline.reload(&dir)).await;
    match result {
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(json!({"status": "reloaded", "dir": state.mappings_dir.display().to_string()})),
        )
            .into_response(),
        Ok(Err(errors)) => {
            let issues: Vec<Value> = errors
                .iter()
                .map(|e| json!({"severity": "error", "code": "invalid", "diagnostics": e.to_string()}))
                .collect();
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(super::FHIR_JSON),
                )],
                json!({"resourceType": "OperationOutcome", "issue": issues}).to_string(),
            )
                .into_response()
        }
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            e.to_string(),
        )
        .into_response(),
    }
}

/// `GET /health`: readiness, including a store round trip.
pub async fn health(State(state): State<AppState>) -> Response {
    let store = state.pipeline.store();
    let ping = tokio::time::timeout(std::time::Duration::from_secs(5), store.ping()).await;
    let (code, store_status, error) = match ping {
        Ok(Ok(())) => (StatusCode::OK, "ok", None),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "error",
            Some(e.to_string()),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "error",
            Some("store did not answer within 5 s".to_string()),
        ),
    };
    let mut body = json!({
        "status": if code == StatusCode::OK { "ok" } else { "unavailable" },
        "store": {"status": store_status, "backend": store.backend(), "error": error},
        "in_flight": state.pipeline.in_flight(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    // An unreachable upstream does not make the gateway unready: messages are still accepted
    // and wait in the outbox. It is reported here and in /metrics.
    if let Some(up) = &state.upstream {
        let h = up.health();
        let stats = store.outbox_stats().await.unwrap_or_default();
        body["upstream"] = json!({
            "url": up.base_redacted(),
            "status": h.status,
            "checked_at": h.checked_at,
            "latency_ms": h.latency_ms,
            "error": h.error,
            "outbox": queue_json(stats.pending, stats.dead, stats.oldest_pending),
        });
    }
    // Nor does a downstream MLLP receiver that is down: messages wait in the forwarding queue.
    if store.forwarding() {
        let stats = store.forward_stats().await.unwrap_or_default();
        body["forward"] = stats
            .into_iter()
            .map(|(d, s)| (d, queue_json(s.pending, s.dead, s.oldest_pending)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    // Like the upstream, the file source does not make the gateway unready.
    if let Some((dir, status)) = &state.file {
        body["file"] = status.to_json(dir);
    }
    (code, Json(body)).into_response()
}

/// `v2fhir_{queue}_pending`, `_dead` and `_oldest_pending_seconds`, with `labels`.
fn queue_gauges(
    queue: &str,
    labels: Vec<metrics::Label>,
    pending: i64,
    dead: i64,
    oldest_pending: Option<i64>,
) {
    metrics::gauge!(format!("v2fhir_{queue}_pending"), labels.clone()).set(pending as f64);
    metrics::gauge!(format!("v2fhir_{queue}_dead"), labels.clone()).set(dead as f64);
    metrics::gauge!(format!("v2fhir_{queue}_oldest_pending_seconds"), labels)
        .set(pending_age_secs(oldest_pending).unwrap_or(0.0));
}

/// Seconds since `oldest_pending` (µs since the epoch), if there is one.
fn pending_age_secs(oldest_pending: Option<i64>) -> Option<f64> {
    let now = crate::store::now_micros();
    oldest_pending.map(|t| (now - t).max(0) as f64 / 1e6)
}

/// A queue's counts in `/health`.
fn queue_json(pending: i64, dead: i64, oldest_pending: Option<i64>) -> Value {
    json!({
        "pending": pending,
        "dead": dead,
        "oldest_pending_age_secs": pending_age_secs(oldest_pending).map(f64::round),
    })
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(counts) = state.pipeline.store().counts().await {
        for (status, n) in counts {
            metrics::gauge!("v2fhir_store_messages", "status" => status).set(n as f64);
        }
    }
    if let Ok(counts) = state.pipeline.store().resource_counts().await {
        for (ty, n) in counts {
            metrics::gauge!("v2fhir_store_resources", "type" => ty).set(n as f64);
        }
    }
    if state.upstream.is_some()
        && let Ok(o) = state.pipeline.store().outbox_stats().await
    {
        queue_gauges("outbox", Vec::new(), o.pending, o.dead, o.oldest_pending);
    }
    if state.pipeline.store().forwarding()
        && let Ok(stats) = state.pipeline.store().forward_stats().await
    {
        for (destination, f) in stats {
            queue_gauges(
                "forward",
                vec![metrics::Label::new("destination", destination)],
                f.pending,
                f.dead,
                f.oldest_pending,
            );
        }
    }
    // SQLite's WAL shim (crates/walbuf), process-wide; absent when nothing has used it.
    let wal = v2fhir_walbuf::stats();
    if wal.writes > 0 {
        metrics::counter!("v2fhir_sqlite_wal_writes_total").absolute(wal.writes);
        metrics::counter!("v2fhir_sqlite_wal_kernel_writes_total").absolute(wal.flushes);
        metrics::counter!("v2fhir_sqlite_wal_barrier_writes_total").absolute(wal.barrier_flushes);
    }
    // Sampled at scrape time rather than updated per message.
    let in_flight = state.pipeline.in_flight() as f64;
    metrics::gauge!("v2fhir_queue_depth").set(in_flight);
    metrics::gauge!("v2fhir_in_flight_messages").set(in_flight);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Query of `POST /admin/prune`.
#[derive(Debug, Deserialize)]
pub struct PruneQuery {
    older_than_days: Option<u32>,
}

/// Query of `POST /admin/forward/retry`.
#[derive(Debug, Deserialize)]
pub struct RetryQuery {
    destination: Option<String>,
}

/// `POST /admin/forward/retry[?destination=NAME]`: queue again every message a downstream
/// receiver refused (forward state `dead`), at that destination or all, as they are (not
/// converted again); they go in their place in the log's order.
pub async fn forward_retry(
    State(state): State<AppState>,
    Query(q): Query<RetryQuery>,
) -> Result<Json<Value>, ApiError> {
    let store = state.pipeline.store();
    if !store.forwarding() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not-supported",
            "forwarding is off (forward.mllp and forward.routes are empty)",
        ));
    }
    let n = store.forward_rearm(q.destination.as_deref()).await?;
    tracing::info!(requeued = n, "dead forwards queued again on request");
    Ok(Json(json!({"requeued": n, "destination": q.destination})))
}

/// `POST /admin/prune?older_than_days=N`: delete the finished messages (converted, delivered,
/// duplicate, rejected) received more than N days ago, now — what `store.retention_days` does
/// every hour. Messages in `error` or `dead`, or still queued for the upstream, are kept; FHIR
/// resources are never touched.
pub async fn prune(
    State(state): State<AppState>,
    Query(q): Query<PruneQuery>,
) -> Result<Json<Value>, ApiError> {
    let Some(days) = q.older_than_days else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "required",
            "older_than_days is required (0 prunes every finished message received until now)",
        ));
    };
    let n = crate::store::prune_older_than(state.pipeline.store(), days).await?;
    tracing::info!(pruned = n, days, "message log pruned on request");
    Ok(Json(json!({"pruned": n, "older_than_days": days})))
}
