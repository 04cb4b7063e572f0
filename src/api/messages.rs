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
                    "status '{s}' is not one of received, converted, delivered, error, rejected, duplicate"
                ),
            )
        })?),
    };
    let filter = MessageFilter {
        status,
        sender: q.sender.clone(),
        message_type: q.message_type.clone(),
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
    }
    Ok(Json(v))
}

/// `POST /messages/{id}/reprocess`: convert the stored raw message again with the mappings now
/// loaded; the row's status, output and diagnostics are replaced. No ACK is sent again.
pub async fn reprocess(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
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
    let prepared = ingest::prepare_blocking(m.raw.clone().into(), plan, cfg, m.received_at)
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
    store
        .update_outcome(
            id,
            p.row.status,
            p.row.output.as_deref(),
            p.row.diagnostics.as_deref(),
            &p.row.resources,
        )
        .await?;
    tracing::info!(
        id,
        from = previous.as_str(),
        to = p.row.status.as_str(),
        "message reprocessed"
    );
    Ok(Json(json!({
        "id": id,
        "previous_status": previous,
        "status": p.row.status,
        "outcome": match p.outcome { Outcome::Accept => "accept", Outcome::Error => "error", Outcome::Reject => "reject" },
        "diagnostics": parse_json(&p.row.diagnostics),
        "links": {"self": format!("/messages/{id}")},
    })))
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
    let body = json!({
        "status": if code == StatusCode::OK { "ok" } else { "unavailable" },
        "store": {"status": store_status, "backend": store.backend(), "error": error},
        "in_flight": state.pipeline.in_flight(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    (code, Json(body)).into_response()
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
