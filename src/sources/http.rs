//! The HTTP v2 source: `POST /v2/messages` (store, then answer with the ACK or the Bundle) and
//! `POST /v2/$convert` (convert only, nothing stored).

use crate::api::{ApiError, AppState, FHIR_JSON, HL7_ER7};
use crate::ingest::{self, Source};
use crate::v2::ack::Outcome;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// Media types accepted for v2 bodies.
const V2_TYPES: &[&str] = &[
    "x-application/hl7-v2+er7",
    "application/hl7-v2",
    "application/hl7-v2+er7",
    "text/plain",
];

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let (ct, essence) = super::media_type(headers);
    if V2_TYPES.contains(&essence.as_str()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            format!(
                "Content-Type '{ct}' is not an HL7 v2 type; send x-application/hl7-v2+er7 or text/plain"
            ),
        ))
    }
}

fn wants_fhir(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/fhir+json") || a.contains("application/json"))
}

fn fhir_body(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        body,
    )
        .into_response()
}

/// The answer as FHIR: one message's Bundle (or its OperationOutcome when not converted), or a
/// `collection` Bundle of them for a batch.
fn fhir_reply(reply: &ingest::Reply, stored: bool) -> Response {
    let status = match reply.outcome() {
        Outcome::Accept => StatusCode::OK,
        Outcome::Error => StatusCode::UNPROCESSABLE_ENTITY,
        Outcome::Reject => StatusCode::BAD_REQUEST,
    };
    let status = if stored && reply.messages.iter().any(|m| m.committed.is_none()) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status
    };
    let one = |m: &ingest::MessageReply| -> String {
        match (&m.bundle, &m.diagnostics) {
            (Some(b), _) if m.outcome == Outcome::Accept => b.clone(),
            (_, Some(d)) => d.clone(),
            _ => serde_json::json!({"resourceType": "OperationOutcome", "issue": [{
                "severity": "error", "code": "exception",
                "diagnostics": "the message was not converted; see its acknowledgment"}]})
            .to_string(),
        }
    };
    if reply.messages.len() == 1 {
        return fhir_body(status, one(&reply.messages[0]));
    }
    let entries: Vec<serde_json::Value> = reply
        .messages
        .iter()
        .map(|m| {
            let r: serde_json::Value =
                serde_json::from_str(&one(m)).unwrap_or(serde_json::Value::Null);
            serde_json::json!({ "resource": r })
        })
        .collect();
    fhir_body(
        status,
        serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": entries})
            .to_string(),
    )
}

/// `POST /v2/messages`: one message or a batch; stored, then answered.
pub async fn post_messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_content_type(&headers)?;
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "required",
            "the request body is empty; send an HL7 v2 message",
        ));
    }
    let reply = state
        .pipeline
        .submit(body, Source::Http)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "transient", e.to_string()))?;
    let mut resp = if wants_fhir(&headers) {
        fhir_reply(&reply, true)
    } else {
        let acks: Vec<&str> = reply.acks().map(String::as_str).collect();
        let status = if reply.messages.iter().any(|m| m.committed.is_none()) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(HL7_ER7))],
            acks.join(""),
        )
            .into_response()
    };
    if let [m] = reply.messages.as_slice()
        && let Some(c) = &m.committed
    {
        if let Ok(v) = HeaderValue::from_str(&format!("/messages/{}", c.id)) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        if let Ok(v) = HeaderValue::from_str(c.status.as_str()) {
            resp.headers_mut().insert("x-v2fhir-status", v);
        }
    }
    Ok(resp)
}

/// Query of `$convert`.
#[derive(Debug, Deserialize)]
pub struct ConvertQuery {
    /// Bundle type: transaction (default), batch, collection, message.
    bundle: Option<String>,
}

/// `POST /v2/$convert`: convert without storing; the Bundle, or an OperationOutcome (400 when
/// the body is not HL7, 422 when conversion failed).
pub async fn post_convert(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ConvertQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_content_type(&headers)?;
    let mut cfg = state.pipeline.config().clone();
    if let Some(b) = &q.bundle {
        cfg.convert.bundle_type = ingest::bundle_type(b).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "value",
                format!("bundle type '{b}' is not one of transaction, batch, collection, message"),
            )
        })?;
    }
    let plan = state.pipeline.plan();
    let prepared =
        ingest::prepare_blocking(body, Source::Http, plan, cfg, crate::store::now_micros())
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "exception",
                    format!("$convert: the conversion task failed: {e}"),
                )
            })?;
    let reply = ingest::Reply {
        messages: prepared
            .into_iter()
            .map(|p| ingest::MessageReply {
                committed: None,
                acks: p.acks,
                outcome: p.outcome,
                bundle: p.row.output,
                diagnostics: p.row.diagnostics,
            })
            .collect(),
    };
    let mut resp = fhir_reply(&reply, false);
    resp.headers_mut()
        .insert("x-v2fhir-stored", HeaderValue::from_static("false"));
    Ok(resp)
}
