//! The FHIR source: resources written by device and app backends.
//!
//! - `POST /fhir` — a `transaction` (all or nothing) or `batch` (entry by entry) Bundle;
//!   answered with a `transaction-response` / `batch-response` Bundle.
//! - `POST /fhir/{type}` — create (the id is assigned, deterministically: see
//!   [`crate::fhir::intake`]); `PUT /fhir/{type}/{id}` — create or update;
//!   `DELETE /fhir/{type}/{id}`.
//!
//! Like a v2 message, a submission is logged with its outcome and its resources are written in
//! the same transaction (the pipeline's writer, group commit), and only then answered. Each request
//! is a row of its own; a retried one writes no new version (same ids, same content). This module
//! frames the request and answers; [`crate::fhir::intake`] decides.

use crate::api::{ApiError, AppState, FHIR_JSON};
use crate::fhir::intake::{self, EntryPlan, Plan};
use crate::ingest::Source;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Media types accepted for FHIR bodies.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let (ct, essence) = super::media_type(headers);
    if essence == "application/fhir+json" || essence == "application/json" {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            format!("Content-Type '{ct}' is not FHIR JSON; send application/fhir+json"),
        ))
    }
}

/// `Prefer: return=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Return {
    Minimal,
    Representation,
    Outcome,
}

fn prefer_return(headers: &HeaderMap, default: Return) -> Return {
    let prefer = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .map(str::trim)
        .find_map(|p| p.strip_prefix("return="))
        .map(|v| v.trim_matches('"').to_string());
    match prefer.as_deref() {
        Some("minimal") => Return::Minimal,
        Some("representation") => Return::Representation,
        Some("OperationOutcome") => Return::Outcome,
        _ => default,
    }
}

fn status_line(code: u16) -> String {
    let reason = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("{code} {reason}")
}

/// What happened to one entry, read back from the store after the commit.
struct Done {
    code: u16,
    /// `Type/id/_history/v` (relative to the FHIR base); `Type/id` when the resource is not kept
    /// locally (sink mode `upstream`: it is queued for the upstream).
    location: Option<String>,
    version: Option<i64>,
    last_updated: Option<i64>,
    resource: Option<Value>,
    outcome: Option<Value>,
}

async fn settle(state: &AppState, e: &EntryPlan, message: i64) -> Result<Done, ApiError> {
    if let Some(code) = e.status {
        return Ok(Done {
            code,
            location: None,
            version: None,
            last_updated: None,
            resource: None,
            outcome: e.outcome.clone(),
        });
    }
    if e.method == "DELETE" {
        return Ok(Done {
            code: 204,
            location: None,
            version: None,
            last_updated: None,
            resource: None,
            outcome: None,
        });
    }
    let store = state.pipeline.store();
    match store.read_resource(&e.resource_type, &e.id).await? {
        Some(row) if !row.deleted => {
            // Created: this submission wrote the first version.
            let code = if row.version == 1 && row.message_id == Some(message) {
                201
            } else {
                200
            };
            Ok(Done {
                code,
                location: Some(format!(
                    "{}/{}/_history/{}",
                    row.resource_type, row.id, row.version
                )),
                version: Some(row.version),
                last_updated: Some(row.last_updated),
                resource: Some(row.to_json()),
                outcome: None,
            })
        }
        // Not kept here (sink mode `upstream`), or deleted again since: accepted and queued.
        _ => Ok(Done {
            code: 202,
            location: Some(format!("{}/{}", e.resource_type, e.id)),
            version: None,
            last_updated: None,
            resource: None,
            outcome: None,
        }),
    }
}

/// Submit a body to the pipeline; the plan decided for it and the message row that produced
/// its resources.
async fn submit(state: &AppState, raw: Vec<u8>) -> Result<(Plan, i64), ApiError> {
    let reply = state
        .pipeline
        .submit(raw.into(), Source::Fhir)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "transient", e.to_string()))?;
    let Some(m) = reply.messages.first() else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            "the pipeline returned no reply",
        ));
    };
    let Some(c) = &m.committed else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            "the store did not accept the request; nothing was written, send it again",
        ));
    };
    let plan = m
        .acks
        .first()
        .and_then(|a| Plan::from_ack(a))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                format!("message {}: no decision was stored with it", c.id),
            )
        })?;
    // A repeat answers as the first did, for the versions the first one wrote.
    Ok((plan, c.duplicate_of.unwrap_or(c.id)))
}

fn fhir_response(status: StatusCode, body: Option<&Value>) -> Response {
    match body {
        Some(b) => (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
            b.to_string(),
        )
            .into_response(),
        None => status.into_response(),
    }
}

fn set_header(res: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        res.headers_mut().insert(name, v);
    }
}

/// A refused submission: its status and OperationOutcome.
fn refused(plan: &Plan) -> Option<Response> {
    let code = plan.status?;
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    Some(fhir_response(status, plan.outcome.as_ref()))
}

/// `POST /fhir`: a transaction or batch Bundle.
pub async fn post_bundle(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_content_type(&headers)?;
    let (plan, message) = submit(&state, body.to_vec()).await?;
    if let Some(r) = refused(&plan) {
        return Ok(r);
    }
    let want = prefer_return(&headers, Return::Minimal);
    let mut entries = Vec::with_capacity(plan.entries.len());
    for e in &plan.entries {
        let d = settle(&state, e, message).await?;
        let mut response = json!({"status": status_line(d.code)});
        if let Some(l) = &d.location {
            response["location"] = json!(l);
        }
        if let Some(v) = d.version {
            response["etag"] = json!(format!("W/\"{v}\""));
        }
        if let Some(t) = d.last_updated {
            response["lastModified"] = json!(crate::fhir::datetime::instant_from_micros(t));
        }
        if let Some(o) = &d.outcome {
            response["outcome"] = o.clone();
        }
        let mut entry = json!({"response": response});
        if want == Return::Representation
            && let Some(r) = d.resource
        {
            entry["resource"] = r;
        }
        entries.push(entry);
    }
    let kind = if plan.kind == "batch" {
        "batch-response"
    } else {
        "transaction-response"
    };
    let bundle = json!({"resourceType": "Bundle", "type": kind, "entry": entries});
    let mut res = fhir_response(StatusCode::OK, Some(&bundle));
    set_header(
        &mut res,
        header::HeaderName::from_static("x-v2fhir-message"),
        &format!("/messages/{message}"),
    );
    Ok(res)
}

/// Answer a single-resource interaction from its one entry.
async fn single(state: &AppState, headers: &HeaderMap, raw: Vec<u8>) -> Result<Response, ApiError> {
    let (plan, message) = submit(state, raw).await?;
    if let Some(r) = refused(&plan) {
        return Ok(r);
    }
    let Some(e) = plan.entries.first() else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            "the request produced no entry",
        ));
    };
    let d = settle(state, e, message).await?;
    let status = StatusCode::from_u16(d.code).unwrap_or(StatusCode::OK);
    if let Some(o) = &d.outcome {
        return Ok(fhir_response(status, Some(o)));
    }
    let info;
    let body = match prefer_return(headers, Return::Representation) {
        _ if d.code == 204 => None,
        Return::Minimal => None,
        Return::Representation => d.resource.as_ref(),
        Return::Outcome => {
            info = crate::api::outcome(
                "information",
                "informational",
                &format!("{} {}", status_line(d.code), e.resource_type),
            );
            Some(&info)
        }
    };
    let mut res = fhir_response(status, body);
    if let Some(l) = &d.location {
        let base = crate::api::fhir::base(state, headers);
        set_header(&mut res, header::LOCATION, &format!("{base}/{l}"));
    }
    if let Some(v) = d.version {
        set_header(&mut res, header::ETAG, &format!("W/\"{v}\""));
    }
    if let Some(t) = d.last_updated
        && let Ok(ts) = jiff::Timestamp::from_microsecond(t)
    {
        set_header(
            &mut res,
            header::LAST_MODIFIED,
            &ts.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        );
    }
    set_header(
        &mut res,
        header::HeaderName::from_static("x-v2fhir-message"),
        &format!("/messages/{message}"),
    );
    Ok(res)
}

/// The body as the entry's resource: spliced in when it is a JSON object, else submitted as it
/// came (logged and refused as not JSON, with where it breaks).
fn as_entry(method: &str, url: &str, body: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Ok(_) if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => {
            intake::envelope(method, url, Some(body))
        }
        _ => body.to_vec(),
    }
}

/// `POST /fhir/{type}`: create.
pub async fn create(
    State(state): State<AppState>,
    Path(ty): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    crate::api::fhir::check_type(&ty)?;
    check_content_type(&headers)?;
    single(&state, &headers, as_entry("POST", &ty, &body)).await
}

/// `PUT /fhir/{type}/{id}`: create or update with that id.
pub async fn update(
    State(state): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    crate::api::fhir::check_type(&ty)?;
    check_content_type(&headers)?;
    single(
        &state,
        &headers,
        as_entry("PUT", &format!("{ty}/{id}"), &body),
    )
    .await
}

/// `DELETE /fhir/{type}/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    crate::api::fhir::check_type(&ty)?;
    single(
        &state,
        &headers,
        intake::envelope("DELETE", &format!("{ty}/{id}"), None),
    )
    .await
}
