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
use axum::extract::{Path, RawQuery, State};
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

impl Done {
    /// An answer with no resource behind it: a status, maybe a location and an outcome.
    fn bare(code: u16, location: Option<String>, outcome: Option<Value>) -> Done {
        Done {
            code,
            location,
            version: None,
            last_updated: None,
            resource: None,
            outcome,
        }
    }
}

async fn settle(state: &AppState, e: &EntryPlan, message: i64) -> Result<Done, ApiError> {
    if let Some(code) = e.status {
        return Ok(Done::bare(code, None, e.outcome.clone()));
    }
    if e.method == "DELETE" {
        return Ok(Done::bare(204, None, None));
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
        // A read of what is not (or no longer) here.
        _ if e.method == "GET" => Ok(Done::bare(
            404,
            None,
            Some(crate::api::outcome(
                "error",
                "not-found",
                &format!("{}/{} is not known", e.resource_type, e.id),
            )),
        )),
        // Not kept here (sink mode `upstream`), or deleted again since: accepted and queued.
        _ => Ok(Done::bare(
            202,
            Some(format!("{}/{}", e.resource_type, e.id)),
            None,
        )),
    }
}

/// Submit a body to the pipeline; the plan decided for it and the message row that produced
/// its resources.
async fn submit(state: &AppState, raw: Vec<u8>) -> Result<(Plan, i64), ApiError> {
    let raw = resolve_conditions(state, raw).await?;
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
    // A FHIR request is a duplicate only when another replica received the same bytes in the
    // same microsecond; it is then answered for the versions the first one wrote.
    Ok((plan, c.duplicate_of.unwrap_or(c.id)))
}

/// What a condition (`Type?params`) found.
enum Found {
    None,
    One(String),
    Many,
}

/// Search for a conditional interaction: at most two matches are looked for.
async fn find(state: &AppState, ty: &str, query: &str, at: &str) -> Result<Found, ApiError> {
    if state.proxy_reads {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not-supported",
            format!(
                "{at}: conditional interactions need the local store (sink mode local or both); send PUT Type/id"
            ),
        ));
    }
    let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("{at}: the condition '{query}' is not URL-encoded parameters: {e}"),
        )
    })?;
    if pairs.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("{at}: an empty condition would match every {ty}"),
        ));
    }
    pairs.retain(|(n, _)| n != "_count");
    pairs.push(("_count".into(), "2".into()));
    // Strict: a condition with a parameter we do not support must not silently match more.
    let q = crate::fhir::search::query::parse(ty, &pairs, true).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("{at}: condition '{query}': {e}"),
        )
    })?;
    let page = state.pipeline.store().search(&q, false).await?;
    Ok(match page.matches.as_slice() {
        [] => Found::None,
        [one] => Found::One(one.id.clone()),
        _ => Found::Many,
    })
}

/// The conditional references (`Type?params`) in a resource.
fn conditional_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                match (k.as_str(), child) {
                    ("reference", Value::String(r))
                        if r.split_once('?')
                            .is_some_and(|(t, _)| crate::fhir::validate::is_resource_type(t)) =>
                    {
                        out.push(r.clone())
                    }
                    _ => conditional_refs(child, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| conditional_refs(x, out)),
        _ => {}
    }
}

fn precondition_failed(at: &str, ty: &str, query: &str) -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "multiple-matches",
        format!("{at}: the condition {ty}?{query} matches more than one resource"),
    )
}

/// Conditional interactions — `ifNoneExist` (conditional create), `PUT Type?params` (conditional
/// update), `DELETE Type?params` — are resolved against the store before the request is logged,
/// into the unconditional request they amount to: a create that found its resource becomes a
/// read of it (`GET Type/id`: nothing written, its `fullUrl` stands for that resource), an update
/// that found one becomes `PUT Type/id`, one that found none a create; a delete that found one
/// becomes `DELETE Type/id`, one that found none does nothing. The condition stays in the logged
/// entry (`request.ifNoneExist`, `request.condition`). A condition that matches several
/// resources refuses the request (412), before anything is logged. Not conditional: the bytes
/// go on untouched.
async fn resolve_conditions(state: &AppState, raw: Vec<u8>) -> Result<Vec<u8>, ApiError> {
    let conditional = |e: &Value| {
        let r = &e["request"];
        r.get("ifNoneExist").is_some() || r["url"].as_str().is_some_and(|u| u.contains('?'))
    };
    // Every condition holds a `?` (a conditional URL or reference) or is an `ifNoneExist`: a
    // write with neither — most of them — goes on without being parsed here.
    if !raw.contains(&b'?') && memchr::memmem::find(&raw, b"ifNoneExist").is_none() {
        return Ok(raw);
    }
    let Ok(mut body) = serde_json::from_slice::<Value>(&raw) else {
        return Ok(raw);
    };
    let Some(entries) = body["entry"].as_array_mut() else {
        return Ok(raw);
    };
    // The conditional references of each entry's resource.
    let refs: Vec<(usize, Vec<String>)> = entries
        .iter()
        .enumerate()
        .map(|(n, e)| {
            let mut found = Vec::new();
            conditional_refs(&e["resource"], &mut found);
            (n, found)
        })
        .filter(|(_, found)| !found.is_empty())
        .collect();
    if refs.is_empty() && !entries.iter().any(conditional) {
        return Ok(raw);
    }
    // Conditional references (`"reference": "Patient?identifier=sys|val"`): the resource the
    // search finds, by its id — how a device backend points at a patient it knows by MRN. No
    // match: 412 (there is nothing to point at); several: 412.
    if !refs.is_empty() {
        let mut resolved: std::collections::HashMap<String, String> = Default::default();
        for (n, found) in refs {
            for r in found {
                if resolved.contains_key(&r) {
                    continue;
                }
                let at = format!("Bundle.entry[{n}].resource");
                let Some((ty, q)) = r.split_once('?') else {
                    continue;
                };
                match find(state, ty, q, &at).await? {
                    Found::One(id) => {
                        resolved.insert(r.clone(), format!("{ty}/{id}"));
                    }
                    Found::None => {
                        return Err(ApiError::new(
                            StatusCode::PRECONDITION_FAILED,
                            "not-found",
                            format!("{at}: the conditional reference {r} matches no resource"),
                        ));
                    }
                    Found::Many => return Err(precondition_failed(&at, ty, q)),
                }
            }
        }
        for e in entries.iter_mut() {
            if let Some(res) = e.get_mut("resource") {
                intake::resolve_references(res, &resolved);
            }
        }
    }
    for (n, e) in entries.iter_mut().enumerate() {
        if !conditional(e) {
            continue;
        }
        let at = format!("Bundle.entry[{n}]");
        let method = e["request"]["method"].as_str().unwrap_or("").to_string();
        let url = e["request"]["url"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string();
        if method == "POST" {
            let Some(q) = e["request"]["ifNoneExist"].as_str().map(str::to_string) else {
                continue; // a POST to `Type?…` is refused by the intake with its reason
            };
            let q = q.trim_start_matches('?').to_string();
            if url.contains('?') || url.contains('/') {
                continue;
            }
            match find(state, &url, &q, &at).await? {
                Found::None => {}
                Found::One(id) => {
                    // The resource exists: a read of it, nothing written.
                    e["request"]["method"] = json!("GET");
                    e["request"]["url"] = json!(format!("{url}/{id}"));
                    if let Some(o) = e.as_object_mut() {
                        o.remove("resource");
                    }
                }
                Found::Many => return Err(precondition_failed(&at, &url, &q)),
            }
            continue;
        }
        let Some((ty, q)) = url.split_once('?') else {
            continue;
        };
        let (ty, q) = (ty.to_string(), q.to_string());
        if !crate::fhir::validate::is_resource_type(&ty) {
            continue; // refused by the intake, which names the type
        }
        e["request"]["condition"] = json!(url);
        match (method.as_str(), find(state, &ty, &q, &at).await?) {
            (_, Found::Many) => return Err(precondition_failed(&at, &ty, &q)),
            ("PUT", Found::One(id)) => {
                if let Some(body_id) = e["resource"]["id"].as_str()
                    && body_id != id
                {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        format!(
                            "{at}: the resource's id '{body_id}' is not the id '{id}' the condition {url} found"
                        ),
                    ));
                }
                e["request"]["method"] = json!("PUT");
                e["request"]["url"] = json!(format!("{ty}/{id}"));
                if e["resource"].is_object() {
                    e["resource"]["id"] = json!(id);
                }
            }
            ("PUT", Found::None) => {
                // Nothing matches: a create (the id is assigned as for POST).
                e["request"]["method"] = json!("POST");
                e["request"]["url"] = json!(ty);
                if let Some(r) = e["resource"].as_object_mut() {
                    r.remove("id");
                }
            }
            ("DELETE", Found::One(id)) => {
                e["request"]["url"] = json!(format!("{ty}/{id}"));
            }
            ("DELETE", Found::None) => {
                // Nothing to delete: `DELETE Type` with its condition, answered 204, nothing
                // written.
                e["request"]["url"] = json!(ty);
            }
            _ => {}
        }
    }
    Ok(body.to_string().into_bytes())
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
            response["etag"] = json!(crate::api::fhir::etag(v));
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
        set_header(&mut res, header::ETAG, &crate::api::fhir::etag(v));
    }
    if let Some(t) = d.last_updated {
        set_header(
            &mut res,
            header::LAST_MODIFIED,
            &crate::api::fhir::http_date(t),
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
    if is_json_object(body) {
        intake::envelope(method, url, Some(body))
    } else {
        body.to_vec()
    }
}

/// `POST /fhir/{type}`: create; with `If-None-Exist: params`, only when no resource matches.
pub async fn create(
    State(state): State<AppState>,
    Path(ty): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    crate::api::fhir::check_type(&ty)?;
    check_content_type(&headers)?;
    let if_none_exist = headers
        .get("if-none-exist")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let raw = match if_none_exist {
        Some(q) if is_json_object(&body) => {
            intake::envelope_if("POST", &ty, Some(&body), Some(q.as_str()))
        }
        _ => as_entry("POST", &ty, &body),
    };
    single(&state, &headers, raw).await
}

/// `PUT /fhir/{type}?params`: conditional update (one match: update it; none: create; more:
/// 412).
pub async fn update_conditional(
    State(state): State<AppState>,
    Path(ty): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    crate::api::fhir::check_type(&ty)?;
    check_content_type(&headers)?;
    let q = conditional_query(&ty, query, "PUT")?;
    single(
        &state,
        &headers,
        as_entry("PUT", &format!("{ty}?{q}"), &body),
    )
    .await
}

/// `DELETE /fhir/{type}?params`: conditional delete (one match: delete it; none: nothing; more:
/// 412).
pub async fn delete_conditional(
    State(state): State<AppState>,
    Path(ty): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    crate::api::fhir::check_type(&ty)?;
    let q = conditional_query(&ty, query, "DELETE")?;
    single(
        &state,
        &headers,
        intake::envelope("DELETE", &format!("{ty}?{q}"), None),
    )
    .await
}

fn conditional_query(ty: &str, query: Option<String>, method: &str) -> Result<String, ApiError> {
    match query.filter(|q| !q.trim().is_empty()) {
        Some(q) => Ok(q),
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!(
                "{method} /fhir/{ty} needs an id (/fhir/{ty}/ID) or a condition (?identifier=…)"
            ),
        )),
    }
}

fn is_json_object(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
        && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
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
    let url = format!("{ty}/{id}");
    let raw = match if_match(&headers)? {
        Some(v) if is_json_object(&body) => {
            intake::envelope_with("PUT", &url, Some(&body), None, Some(v))
        }
        _ => as_entry("PUT", &url, &body),
    };
    single(&state, &headers, raw).await
}

/// `PATCH /fhir/{type}/{id}` with a JSON Patch (RFC 6902, `application/json-patch+json`): applied
/// to the current version, the result validated and written as the update it amounts to (logged
/// as that `PUT`). `If-Match` is compared with the version the patch is applied to. A patch that
/// fails (a `test` that does not hold, a path that is not there) is 422; one that changes the
/// resource type or id is 422 too. FHIRPath Patch (a `Parameters` body) is not supported (415).
pub async fn patch(
    State(state): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    crate::api::fhir::check_type(&ty)?;
    let (ct, essence) = super::media_type(&headers);
    if essence != "application/json-patch+json" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            format!(
                "Content-Type '{ct}': PATCH takes a JSON Patch (application/json-patch+json); FHIRPath Patch is not supported"
            ),
        ));
    }
    let ops: json_patch::Patch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "structure",
            format!("the body is not a JSON Patch (an array of operations): {e}"),
        )
    })?;
    let wanted = if_match(&headers)?;
    // Applied to the version read and committed only if that version is still current (a
    // versioned update): a write by someone else in between is not lost. Without `If-Match`
    // the patch is simply applied again to the newer version, a few times at most.
    let mut tries = 0;
    loop {
        tries += 1;
        let Some(current) = state.pipeline.store().read_resource(&ty, &id).await? else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("{ty}/{id} is not known"),
            ));
        };
        if current.deleted {
            return Err(ApiError::new(
                StatusCode::GONE,
                "deleted",
                format!("{ty}/{id} was deleted"),
            ));
        }
        if let Some(want) = wanted
            && want != current.version
        {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "conflict",
                format!(
                    "If-Match W/\"{want}\": {ty}/{id} is at version {}",
                    current.version
                ),
            ));
        }
        let mut doc = current.to_json();
        json_patch::patch(&mut doc, &ops).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "processing",
                format!("the patch cannot be applied to {ty}/{id}: {e}"),
            )
        })?;
        if doc["resourceType"] != ty.as_str() || doc["id"] != id.as_str() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "processing",
                "a patch may not change resourceType or id",
            ));
        }
        // The store sets meta.versionId and meta.lastUpdated.
        let empty_meta = match doc.get_mut("meta").and_then(Value::as_object_mut) {
            Some(meta) => {
                meta.remove("versionId");
                meta.remove("lastUpdated");
                meta.is_empty()
            }
            None => false,
        };
        if empty_meta && let Some(o) = doc.as_object_mut() {
            o.remove("meta");
        }
        let body = serde_json::to_vec(&doc).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                format!("serializing the patched {ty}/{id}: {e}"),
            )
        })?;
        let res = single(
            &state,
            &headers,
            intake::envelope_with(
                "PUT",
                &format!("{ty}/{id}"),
                Some(&body),
                None,
                Some(current.version),
            ),
        )
        .await?;
        if res.status() == StatusCode::PRECONDITION_FAILED && wanted.is_none() && tries < 5 {
            continue;
        }
        return Ok(res);
    }
}

/// `If-Match: W/"3"` → 3; a header that is not a version is 400.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(intake::parse_if_match)
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("If-Match {v:?} is not a version (W/\"3\")"),
            )
        })
}

/// `DELETE /fhir/{type}/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    crate::api::fhir::check_type(&ty)?;
    let versioned = if_match(&headers)?;
    single(
        &state,
        &headers,
        intake::envelope_with("DELETE", &format!("{ty}/{id}"), None, None, versioned),
    )
    .await
}

/// `POST /fhir/{type}/$validate`: check a resource (or a `Parameters` with a `resource`
/// parameter) against R4 as a write would, without writing or logging anything. Always 200 with
/// an OperationOutcome: its issues, or one `information` issue when the resource is valid
/// (a body that is not JSON: 400).
pub async fn validate(
    Path(ty): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    crate::api::fhir::check_type(&ty)?;
    check_content_type(&headers)?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "structure",
            format!(
                "the body is not JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    // `Parameters { parameter: [{ name: "resource", resource: {…} }] }` or the resource itself.
    let resource = if v["resourceType"] == "Parameters" {
        v["parameter"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "resource"))
            .map(|p| p["resource"].clone())
            .unwrap_or(Value::Null)
    } else {
        v
    };
    let issue = |severity: &str, code: &str, text: String, at: Option<String>| {
        let mut i = json!({"severity": severity, "code": code, "diagnostics": text});
        if let Some(at) = at {
            i["expression"] = json!([at]);
        }
        i
    };
    let issues: Vec<Value> = match resource["resourceType"].as_str() {
        None => vec![issue(
            "error",
            "required",
            "no resource to validate (send the resource, or a Parameters with a 'resource' parameter)".into(),
            None,
        )],
        Some(t) if t != ty => vec![issue(
            "error",
            "invalid",
            format!("the resource is a {t}, the url names {ty}"),
            Some(format!("{t}.resourceType")),
        )],
        Some(_) => crate::fhir::validate::validate(&resource)
            .into_iter()
            .map(|p| {
                issue(
                    "error",
                    "invalid",
                    format!(
                        "not valid R4 at {}: {}",
                        if p.path.is_empty() { "/" } else { &p.path },
                        p.message
                    ),
                    Some(format!("{}{}", p.resource_type, p.path)),
                )
            })
            .collect(),
    };
    let issues = if issues.is_empty() {
        vec![issue(
            "information",
            "informational",
            format!("valid R4 {ty} (JSON Schema and required elements)"),
            None,
        )]
    } else {
        issues
    };
    Ok(fhir_response(
        StatusCode::OK,
        Some(&json!({"resourceType": "OperationOutcome", "issue": issues})),
    ))
}
