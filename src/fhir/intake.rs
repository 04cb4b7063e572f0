//! FHIR resources sent by device and app backends (`POST /fhir`, `POST /fhir/{type}`,
//! `PUT /fhir/{type}/{id}`, `DELETE /fhir/{type}/{id}`), turned into the same [`Prepared`] row a
//! converted v2 message becomes: the request as received, the Bundle to store (PUT by id), the
//! resources with their search index rows, and what to answer. No I/O: the pipeline's lanes call
//! [`prepare`], its writer commits the row, the source answers from the [`Plan`].
//!
//! Every submission is a `transaction` or `batch` Bundle. A single-resource interaction is logged
//! as the one-entry transaction it is equivalent to, with the body as received spliced in byte
//! for byte ([`envelope`]).
//!
//! Ids: an entry PUT to `Type/id` keeps that id. An entry POSTed to `Type` gets a deterministic
//! one — UUIDv5 over the type and the resource's identifiers (`system|value`) when it has any,
//! else over its content — so a backend that retries a request, or sends the same reading again,
//! updates one resource instead of creating a copy.

use crate::fhir::{ids, validate};
use crate::ingest::{Prepared, content_hash};
use crate::store::{NewMessage, NewResource, Status};
use crate::v2::ack::Outcome;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// `message_type` of the logged submissions (`GET /messages?type=FHIR`).
pub const MESSAGE_TYPE_TRANSACTION: &str = "FHIR^transaction";
/// `message_type` of a `batch` submission.
pub const MESSAGE_TYPE_BATCH: &str = "FHIR^batch";

/// What was decided for one submission: stored with it (the `ack` column) and read by the source
/// to answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// `transaction` or `batch` (empty when the body was not such a Bundle).
    #[serde(rename = "type")]
    pub kind: String,
    /// Set when the whole submission was refused: the HTTP status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why, when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Value>,
    /// One per entry, in order.
    pub entries: Vec<EntryPlan>,
}

/// What was decided for one entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntryPlan {
    /// `POST`, `PUT` or `DELETE`.
    pub method: String,
    /// Resource type.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The id stored (assigned for POST).
    pub id: String,
    /// Set when this entry was refused (a `batch` goes on with the others): the HTTP status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why, when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Value>,
}

impl Plan {
    /// The plan stored with a row (`None` when the text is not one).
    pub fn from_ack(ack: &str) -> Option<Plan> {
        serde_json::from_str(ack).ok()
    }
}

/// The one-entry transaction Bundle equivalent to a single-resource interaction, with `body`
/// spliced in as received (it must be JSON: check before). `DELETE` has no body.
pub fn envelope(method: &str, url: &str, body: Option<&[u8]>) -> Vec<u8> {
    envelope_if(method, url, body, None)
}

/// [`envelope`] with the entry's `request.ifNoneExist` (a conditional create).
pub fn envelope_if(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    if_none_exist: Option<&str>,
) -> Vec<u8> {
    envelope_with(method, url, body, if_none_exist, None)
}

/// [`envelope`] with the entry's `request.ifNoneExist` and `request.ifMatch` (a versioned
/// update or delete: `W/"version"`).
pub fn envelope_with(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    if_none_exist: Option<&str>,
    if_match: Option<i64>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.map_or(0, <[u8]>::len) + 160);
    out.extend_from_slice(br#"{"resourceType":"Bundle","type":"transaction","entry":[{"#);
    if let Some(b) = body {
        out.extend_from_slice(br#""resource":"#);
        out.extend_from_slice(b);
        out.push(b',');
    }
    let mut request = json!({"method": method, "url": url});
    if let Some(q) = if_none_exist {
        request["ifNoneExist"] = json!(q);
    }
    if let Some(v) = if_match {
        request["ifMatch"] = json!(format!("W/\"{v}\""));
    }
    out.extend_from_slice(br#""request":"#);
    out.extend_from_slice(request.to_string().as_bytes());
    out.extend_from_slice(b"}]}");
    out
}

/// One issue of an OperationOutcome.
fn issue(code: &str, text: String, at: Option<String>) -> Value {
    let mut i = json!({"severity": "error", "code": code, "diagnostics": text});
    if let Some(at) = at {
        i["expression"] = json!([at]);
    }
    i
}

fn outcome_of(issues: Vec<Value>) -> Value {
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

/// Is `id` a valid R4 logical id?
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// An entry refused: the HTTP status and the OperationOutcome.
struct Refusal {
    status: u16,
    outcome: Value,
}

fn refuse(status: u16, code: &'static str, text: String, at: Option<String>) -> Refusal {
    Refusal {
        status,
        outcome: outcome_of(vec![issue(code, text, at)]),
    }
}

/// The method, type, id and resource of entry `n`, before references are resolved.
struct Entry {
    method: String,
    resource_type: String,
    id: String,
    full_url: Option<String>,
    resource: Option<Map<String, Value>>,
    /// `request.ifMatch` of a PUT or DELETE: the version the resource must be at when the write
    /// is committed (a versioned update).
    if_match: Option<i64>,
}

/// `W/"3"`, `"3"` or `3` → 3.
pub fn parse_if_match(v: &str) -> Option<i64> {
    let v = v.trim();
    let v = v.strip_prefix("W/").unwrap_or(v).trim_matches('"');
    v.parse::<i64>().ok().filter(|n| *n > 0)
}

fn read_entry(n: usize, e: &Value) -> Result<Entry, Refusal> {
    let at = |p: &str| Some(format!("Bundle.entry[{n}]{p}"));
    let req = e.get("request").ok_or_else(|| {
        refuse(
            400,
            "required",
            format!("Bundle.entry[{n}] has no request (method and url)"),
            at(""),
        )
    })?;
    let method = req.get("method").and_then(Value::as_str).unwrap_or("");
    let url = req.get("url").and_then(Value::as_str).unwrap_or("");
    let if_match = match req.get("ifMatch") {
        None => None,
        Some(v) => match v.as_str().and_then(parse_if_match) {
            Some(n) if method == "PUT" || method == "DELETE" => Some(n),
            Some(_) => {
                return Err(refuse(
                    400,
                    "not-supported",
                    format!(
                        "Bundle.entry[{n}].request.ifMatch: only a PUT or DELETE can be versioned"
                    ),
                    at(".request.ifMatch"),
                ));
            }
            None => {
                return Err(refuse(
                    400,
                    "invalid",
                    format!("Bundle.entry[{n}].request.ifMatch '{v}' is not a version (W/\"3\")"),
                    at(".request.ifMatch"),
                ));
            }
        },
    };
    // `Type`, `Type/id`, with an optional query (conditional interactions are not supported).
    if url.contains('?') {
        return Err(refuse(
            400,
            "not-supported",
            format!(
                "Bundle.entry[{n}].request.url '{url}': a condition belongs in PUT or DELETE (conditional update or delete) or in request.ifNoneExist (conditional create)"
            ),
            at(".request.url"),
        ));
    }
    let url = url.trim_start_matches('/');
    let (ty, url_id) = match url.split_once('/') {
        Some((t, i)) => (t, Some(i)),
        None => (url, None),
    };
    if !validate::is_resource_type(ty) {
        return Err(refuse(
            400,
            "not-supported",
            format!("Bundle.entry[{n}].request.url '{url}' does not name an R4 resource type"),
            at(".request.url"),
        ));
    }
    let resource = match e.get("resource") {
        Some(Value::Object(r)) => Some(r.clone()),
        Some(_) => {
            return Err(refuse(
                400,
                "structure",
                format!("Bundle.entry[{n}].resource is not a JSON object"),
                at(".resource"),
            ));
        }
        None => None,
    };
    let full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_string);
    let need_id = |what: &str| -> Result<String, Refusal> {
        match url_id {
            Some(i) if valid_id(i) => Ok(i.to_string()),
            _ => Err(refuse(
                400,
                "invalid",
                format!(
                    "Bundle.entry[{n}].request.url '{url}': {what} needs Type/id with an id of 1-64 letters, digits, '-' or '.'"
                ),
                at(".request.url"),
            )),
        }
    };
    let body_type = |r: &Map<String, Value>| -> Result<(), Refusal> {
        match r.get("resourceType").and_then(Value::as_str) {
            Some(t) if t == ty => Ok(()),
            Some(t) => Err(refuse(
                400,
                "invalid",
                format!("Bundle.entry[{n}]: the resource is a {t}, the url names {ty}"),
                at(".resource.resourceType"),
            )),
            None => Err(refuse(
                400,
                "required",
                format!("Bundle.entry[{n}].resource has no resourceType"),
                at(".resource"),
            )),
        }
    };
    match method {
        "PUT" => {
            let id = need_id("PUT")?;
            let Some(r) = &resource else {
                return Err(refuse(
                    400,
                    "required",
                    format!("Bundle.entry[{n}]: PUT without a resource"),
                    at(".resource"),
                ));
            };
            body_type(r)?;
            match r.get("id").and_then(Value::as_str) {
                Some(body_id) if body_id != id => {
                    return Err(refuse(
                        400,
                        "invalid",
                        format!(
                            "Bundle.entry[{n}]: the resource's id '{body_id}' is not the id in the url '{id}'"
                        ),
                        at(".resource.id"),
                    ));
                }
                _ => {}
            }
            Ok(Entry {
                method: "PUT".into(),
                resource_type: ty.into(),
                id,
                full_url,
                resource,
                if_match,
            })
        }
        "POST" => {
            if url_id.is_some() {
                return Err(refuse(
                    400,
                    "invalid",
                    format!(
                        "Bundle.entry[{n}].request.url '{url}': POST creates in a type (Type); to write a given id use PUT"
                    ),
                    at(".request.url"),
                ));
            }
            let Some(r) = &resource else {
                return Err(refuse(
                    400,
                    "required",
                    format!("Bundle.entry[{n}]: POST without a resource"),
                    at(".resource"),
                ));
            };
            body_type(r)?;
            Ok(Entry {
                method: "POST".into(),
                resource_type: ty.into(),
                id: String::new(),
                full_url,
                resource,
                if_match,
            })
        }
        // A conditional delete that matched nothing (`request.condition` set, no id): nothing to
        // write, answered like a delete.
        "DELETE" if url_id.is_none() && req.get("condition").is_some() => Ok(Entry {
            method: "DELETE".into(),
            resource_type: ty.into(),
            id: String::new(),
            full_url,
            resource: None,
            if_match,
        }),
        "DELETE" => Ok(Entry {
            method: "DELETE".into(),
            resource_type: ty.into(),
            id: need_id("DELETE")?,
            full_url,
            resource: None,
            if_match,
        }),
        // A read: what a conditional create that found its resource becomes (see
        // `sources::fhir`), or a read a client puts in a batch. Nothing is written.
        "GET" => Ok(Entry {
            method: "GET".into(),
            resource_type: ty.into(),
            id: need_id("GET")?,
            full_url,
            resource: None,
            if_match,
        }),
        other => Err(refuse(
            400,
            "not-supported",
            format!(
                "Bundle.entry[{n}].request.method '{other}' is not supported here (POST, PUT, DELETE or GET Type/id)"
            ),
            at(".request.method"),
        )),
    }
}

/// The id of a POSTed resource with identifiers: over them (`system|value`, sorted).
fn identifier_id(ty: &str, r: &Map<String, Value>) -> Option<String> {
    let mut keys: Vec<String> = r
        .get("identifier")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(|i| {
                    let v = i.get("value")?.as_str()?;
                    let s = i.get("system").and_then(Value::as_str).unwrap_or("");
                    Some(format!("{s}|{v}"))
                })
                .collect()
        })
        .unwrap_or_default();
    if keys.is_empty() {
        return None;
    }
    keys.sort();
    keys.dedup();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    Some(ids::resource_id(ty, "fhir", "identifier", &refs))
}

/// The id of a POSTed resource without identifiers: over its content without `id` and `meta`.
fn content_id(ty: &str, r: &Map<String, Value>) -> String {
    let mut content = r.clone();
    content.remove("id");
    content.remove("meta");
    ids::resource_id(
        ty,
        "fhir",
        "content",
        &[&Value::Object(content).to_string()],
    )
}

/// Replace every `reference` found in `map` with what it maps to (a `fullUrl` of the submission,
/// or a conditional reference, with `Type/id`).
pub(crate) fn resolve_references(v: &mut Value, map: &HashMap<String, String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                if k == "reference"
                    && let Value::String(s) = child
                    && let Some(to) = map.get(s.as_str())
                {
                    *s = to.clone();
                } else {
                    resolve_references(child, map);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| resolve_references(x, map)),
        _ => {}
    }
}

/// The row and the plan for a submission (`raw`: a `transaction` or `batch` Bundle, as received).
pub fn prepare(raw: &[u8], received_at: i64, validate_resources: bool) -> Prepared {
    let hash = content_hash(raw);
    let (plan, bundle) = plan(raw, &hash, validate_resources);
    let stored_any = plan.status.is_none() && plan.entries.iter().any(|e| e.status.is_none());
    let refused_any = plan.status.is_some() || plan.entries.iter().any(|e| e.status.is_some());
    // Malformed (400) is rejected, as a v2 message that is not HL7 is; a well-formed submission
    // whose resources are not valid R4 (422) is an error, as a v2 message that does not map is.
    let (status, outcome) = if plan.status == Some(400) {
        (Status::Rejected, Outcome::Reject)
    } else if stored_any {
        (Status::Converted, Outcome::Accept)
    } else if plan.entries.is_empty() && plan.status.is_none() {
        // An empty transaction: nothing to store, nothing wrong.
        (Status::Converted, Outcome::Accept)
    } else {
        (Status::Error, Outcome::Error)
    };
    let mut issues: Vec<Value> = Vec::new();
    if let Some(o) = &plan.outcome {
        issues.extend(o["issue"].as_array().cloned().unwrap_or_default());
    }
    for e in &plan.entries {
        if let Some(o) = &e.outcome {
            issues.extend(o["issue"].as_array().cloned().unwrap_or_default());
        }
    }
    let diagnostics = refused_any.then(|| outcome_of(issues).to_string());
    // A Bundle to store exists only when an entry is stored (so the request is accepted).
    let (output, resources) = match &bundle {
        Some(b) => {
            let (text, resources) = NewResource::from_bundle(b);
            (Some(text), resources)
        }
        None => (None, Vec::new()),
    };
    let ack = serde_json::to_string(&plan).unwrap_or_default();
    Prepared {
        row: NewMessage {
            received_at,
            source: crate::ingest::Source::Fhir.as_str().into(),
            sending_application: String::new(),
            sending_facility: String::new(),
            // Each request is its own row: never a `duplicate` of an identical earlier one (a PUT
            // of what an earlier PUT wrote, after another changed it, must write it again).
            // Retries stay harmless: same ids, same content, no new version.
            control_id: format!("fhir-{received_at}"),
            message_type: match plan.kind.as_str() {
                "batch" => MESSAGE_TYPE_BATCH.into(),
                _ => MESSAGE_TYPE_TRANSACTION.into(),
            },
            charset: "UTF-8".into(),
            content_hash: hash,
            status,
            ack_code: match outcome {
                Outcome::Accept => "AA",
                Outcome::Error => "AE",
                Outcome::Reject => "AR",
            }
            .into(),
            raw: raw.to_vec(),
            diagnostics,
            output_packed: output.as_deref().and_then(crate::store::packed::pack),
            output,
            ack: ack.clone(),
            resources,
        },
        acks: vec![ack],
        outcome,
    }
}

/// Decide every entry; the Bundle to store (PUT/DELETE by id) when anything is stored.
fn plan(raw: &[u8], hash: &str, validate_resources: bool) -> (Plan, Option<Value>) {
    let whole = |status: u16, code: &str, text: String| Plan {
        kind: String::new(),
        status: Some(status),
        outcome: Some(outcome_of(vec![issue(code, text, None)])),
        entries: Vec::new(),
    };
    let body: Value = match serde_json::from_slice(raw) {
        Ok(v) => v,
        Err(e) => {
            return (
                whole(
                    400,
                    "structure",
                    format!(
                        "the body is not JSON: {e} (line {}, column {})",
                        e.line(),
                        e.column()
                    ),
                ),
                None,
            );
        }
    };
    if body.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return (
            whole(
                400,
                "invalid",
                "POST /fhir takes a Bundle of type transaction or batch; send a single resource to /fhir/{type}".into(),
            ),
            None,
        );
    }
    let kind = body.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "transaction" && kind != "batch" {
        return (
            whole(
                400,
                "invalid",
                format!("Bundle.type '{kind}' is not accepted here; send a transaction or a batch"),
            ),
            None,
        );
    }
    let transaction = kind == "transaction";
    let empty = Vec::new();
    let entries = body
        .get("entry")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    // 1. Read every entry and give POSTed resources their ids.
    let mut read: Vec<Result<Entry, Refusal>> = entries
        .iter()
        .enumerate()
        .map(|(n, e)| match read_entry(n, e) {
            // A versioned write fails as a whole when its version is not current; a batch's
            // entries stand alone, so there it would take the others down with it.
            Ok(entry) if entry.if_match.is_some() && !transaction => Err(refuse(
                400,
                "not-supported",
                format!(
                    "Bundle.entry[{n}].request.ifMatch: versioned writes are taken in a transaction or as a single request, not in a batch"
                ),
                Some(format!("Bundle.entry[{n}].request.ifMatch")),
            )),
            other => other,
        })
        .collect();
    // Ids from identifiers first; then ids from content, in entry order, over the content with
    // the references known so far resolved (so the same reading gets the same id whether it came
    // in a transaction beside its Patient or later on its own).
    for e in read.iter_mut().flatten() {
        if e.method == "POST"
            && let Some(r) = &e.resource
        {
            e.id = identifier_id(&e.resource_type, r).unwrap_or_default();
        }
    }
    // 2. References to the submission's own fullUrls (`urn:uuid:…`) become Type/id.
    let mut map: HashMap<String, String> = HashMap::new();
    let known = |e: &Entry, map: &mut HashMap<String, String>| {
        if let Some(url) = &e.full_url
            && !e.id.is_empty()
        {
            map.insert(url.clone(), format!("{}/{}", e.resource_type, e.id));
        }
    };
    for e in read.iter().flatten() {
        known(e, &mut map);
    }
    for e in read.iter_mut().flatten() {
        if e.method == "POST"
            && e.id.is_empty()
            && let Some(r) = &e.resource
        {
            let mut v = Value::Object(r.clone());
            resolve_references(&mut v, &map);
            if let Value::Object(resolved) = v {
                e.id = content_id(&e.resource_type, &resolved);
            }
            known(e, &mut map);
        }
    }
    // 3. The resources as they will be stored, validated.
    let mut out: Vec<Result<(Entry, Option<Value>), Refusal>> = Vec::with_capacity(read.len());
    for (n, e) in read.into_iter().enumerate() {
        let e = match e {
            Ok(e) => e,
            Err(r) => {
                out.push(Err(r));
                continue;
            }
        };
        let Some(mut r) = e.resource.clone() else {
            out.push(Ok((e, None)));
            continue;
        };
        r.insert("id".into(), Value::String(e.id.clone()));
        // The server keeps versions and times (`meta.versionId`, `meta.lastUpdated`).
        if let Some(Value::Object(meta)) = r.get_mut("meta") {
            meta.remove("versionId");
            meta.remove("lastUpdated");
            if meta.is_empty() {
                r.remove("meta");
            }
        }
        let mut v = Value::Object(r);
        resolve_references(&mut v, &map);
        let problems = if validate_resources {
            validate::validate(&v)
        } else {
            Vec::new()
        };
        if problems.is_empty() {
            out.push(Ok((e, Some(v))));
        } else {
            let issues = problems
                .into_iter()
                .map(|p| {
                    issue(
                        "invalid",
                        format!(
                            "Bundle.entry[{n}].resource ({}) is not valid R4 at {}: {}",
                            p.resource_type,
                            if p.path.is_empty() { "/" } else { &p.path },
                            p.message
                        ),
                        Some(format!("Bundle.entry[{n}].resource{}", p.path)),
                    )
                })
                .collect();
            out.push(Err(Refusal {
                status: 422,
                outcome: outcome_of(issues),
            }));
        }
    }
    let failed: Vec<&Refusal> = out.iter().filter_map(|r| r.as_ref().err()).collect();
    if transaction && !failed.is_empty() {
        // All or nothing: the first failure's status, every failure's issues.
        let status = failed[0].status;
        let issues: Vec<Value> = failed
            .iter()
            .flat_map(|r| r.outcome["issue"].as_array().cloned().unwrap_or_default())
            .collect();
        let entries = out
            .iter()
            .map(|r| match r {
                Ok((e, _)) => EntryPlan {
                    method: e.method.clone(),
                    resource_type: e.resource_type.clone(),
                    id: e.id.clone(),
                    status: None,
                    outcome: None,
                },
                Err(r) => EntryPlan {
                    status: Some(r.status),
                    outcome: Some(r.outcome.clone()),
                    ..EntryPlan::default()
                },
            })
            .collect();
        return (
            Plan {
                kind: kind.into(),
                status: Some(status),
                outcome: Some(outcome_of(issues)),
                entries,
            },
            None,
        );
    }
    let mut stored: Vec<Value> = Vec::new();
    let mut plans = Vec::with_capacity(out.len());
    for r in out {
        match r {
            Ok((e, resource)) => {
                let url = format!("{}/{}", e.resource_type, e.id);
                match resource {
                    Some(res) => {
                        let mut request = json!({"method": "PUT", "url": url});
                        if let Some(v) = e.if_match {
                            request["ifMatch"] = json!(format!("W/\"{v}\""));
                        }
                        stored.push(json!({
                            "fullUrl": format!("urn:uuid:{}", e.id),
                            "resource": res,
                            "request": request,
                        }))
                    }
                    None if e.method == "DELETE" && !e.id.is_empty() => {
                        let mut request = json!({"method": "DELETE", "url": url});
                        if let Some(v) = e.if_match {
                            request["ifMatch"] = json!(format!("W/\"{v}\""));
                        }
                        stored.push(json!({"request": request}))
                    }
                    // A read writes nothing.
                    None => {}
                }
                plans.push(EntryPlan {
                    method: e.method,
                    resource_type: e.resource_type,
                    id: e.id,
                    status: None,
                    outcome: None,
                });
            }
            Err(r) => plans.push(EntryPlan {
                status: Some(r.status),
                outcome: Some(r.outcome),
                ..EntryPlan::default()
            }),
        }
    }
    let bundle = (!stored.is_empty()).then(|| {
        json!({
            "resourceType": "Bundle",
            "id": ids::resource_id("Bundle", "fhir", "", &[hash]),
            "type": "transaction",
            "entry": stored,
        })
    });
    (
        Plan {
            kind: kind.into(),
            status: None,
            outcome: None,
            entries: plans,
        },
        bundle,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(id: Option<&str>) -> Value {
        let mut o = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": "urn:uuid:p1"},
            "effectiveDateTime": "2026-11-30T10:00:00Z",
            "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}});
        if let Some(i) = id {
            o["id"] = json!(i);
        }
        o
    }

    fn bundle(kind: &str, entries: Vec<Value>) -> Vec<u8> {
        json!({"resourceType": "Bundle", "type": kind, "entry": entries})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_transaction_resolves_its_own_references_and_assigns_stable_ids() {
        let raw = bundle(
            "transaction",
            vec![
                json!({"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient",
                    "identifier": [{"system": "urn:dev", "value": "42"}]},
                    "request": {"method": "POST", "url": "Patient"}}),
                json!({"resource": obs(None), "request": {"method": "POST", "url": "Observation"}}),
            ],
        );
        let p = prepare(&raw, 0, true);
        assert_eq!(p.outcome, Outcome::Accept, "{:?}", p.row.diagnostics);
        assert_eq!(p.row.status, Status::Converted);
        let plan = Plan::from_ack(&p.row.ack).expect("plan");
        let patient = &plan.entries[0].id;
        let out: Value = serde_json::from_str(p.row.output.as_deref().expect("output")).unwrap();
        assert_eq!(
            out["entry"][1]["resource"]["subject"]["reference"],
            json!(format!("Patient/{patient}"))
        );
        assert_eq!(p.row.resources.len(), 2);
        // Sent again: the same ids (no copies).
        let again = Plan::from_ack(&prepare(&raw, 1, true).row.ack).unwrap();
        assert_eq!(plan.entries, again.entries);
        // The same patient identifier in another body: the same Patient id.
        let other = bundle(
            "transaction",
            vec![
                json!({"resource": {"resourceType": "Patient", "gender": "female",
                "identifier": [{"system": "urn:dev", "value": "42"}]},
                "request": {"method": "POST", "url": "Patient"}}),
            ],
        );
        let third = Plan::from_ack(&prepare(&other, 2, true).row.ack).unwrap();
        assert_eq!(&third.entries[0].id, patient);
    }

    #[test]
    fn an_invalid_resource_fails_a_transaction_whole_and_only_its_entry_in_a_batch() {
        let mut bad = obs(Some("b1"));
        bad["status"] = json!("banana");
        let entries = vec![
            json!({"resource": obs(Some("a1")), "request": {"method": "PUT", "url": "Observation/a1"}}),
            json!({"resource": bad, "request": {"method": "PUT", "url": "Observation/b1"}}),
        ];
        let t = prepare(&bundle("transaction", entries.clone()), 0, true);
        assert_eq!(t.outcome, Outcome::Error);
        assert_eq!(t.row.status, Status::Error);
        assert!(t.row.resources.is_empty());
        let plan = Plan::from_ack(&t.row.ack).unwrap();
        assert_eq!(plan.status, Some(422));
        let d = t.row.diagnostics.unwrap();
        assert!(d.contains("Bundle.entry[1].resource"), "{d}");
        let b = prepare(&bundle("batch", entries), 0, true);
        assert_eq!(b.outcome, Outcome::Accept);
        assert_eq!(b.row.resources.len(), 1);
        let plan = Plan::from_ack(&b.row.ack).unwrap();
        assert_eq!(plan.entries[0].status, None);
        assert_eq!(plan.entries[1].status, Some(422));
    }

    #[test]
    fn requests_that_cannot_be_done_say_why() {
        let cases: Vec<(Vec<u8>, u16, &str)> = vec![
            (b"{not json".to_vec(), 400, "not JSON"),
            (
                json!({"resourceType": "Patient"}).to_string().into_bytes(),
                400,
                "takes a Bundle",
            ),
            (bundle("collection", vec![]), 400, "'collection'"),
            (
                bundle(
                    "transaction",
                    vec![
                        json!({"resource": obs(Some("x")), "request": {"method": "PUT", "url": "Observation/y"}}),
                    ],
                ),
                400,
                "is not the id in the url",
            ),
            (
                bundle(
                    "transaction",
                    vec![
                        json!({"resource": obs(None), "request": {"method": "PUT", "url": "Patient/y"}}),
                    ],
                ),
                400,
                "the url names Patient",
            ),
            (
                bundle(
                    "transaction",
                    vec![
                        json!({"resource": obs(None), "request": {"method": "POST", "url": "Observation?identifier=1"}}),
                    ],
                ),
                400,
                "conditional",
            ),
            (
                bundle(
                    "transaction",
                    vec![json!({"request": {"method": "PATCH", "url": "Patient/1"}})],
                ),
                400,
                "'PATCH' is not supported",
            ),
            (
                bundle(
                    "transaction",
                    vec![json!({"request": {"method": "GET", "url": "Patient"}})],
                ),
                400,
                "GET needs Type/id",
            ),
            (
                bundle(
                    "transaction",
                    vec![
                        json!({"resource": obs(None), "request": {"method": "POST", "url": "Banana"}}),
                    ],
                ),
                400,
                "R4 resource type",
            ),
        ];
        for (raw, status, says) in cases {
            let p = prepare(&raw, 0, true);
            assert_ne!(
                p.outcome,
                Outcome::Accept,
                "{}",
                String::from_utf8_lossy(&raw)
            );
            let plan = Plan::from_ack(&p.row.ack).unwrap();
            assert_eq!(
                plan.status,
                Some(status),
                "{}",
                String::from_utf8_lossy(&raw)
            );
            let d = p.row.diagnostics.unwrap_or_default();
            assert!(d.contains(says), "{} → {d}", String::from_utf8_lossy(&raw));
            assert!(p.row.resources.is_empty());
        }
    }

    #[test]
    fn the_envelope_keeps_the_body_byte_for_byte_and_is_a_transaction() {
        let body = br#"{ "resourceType" : "Observation", "id": "o1", "status":"final", "code":{"text":"x"} }"#;
        let raw = envelope("PUT", "Observation/o1", Some(body));
        assert!(raw.windows(body.len()).any(|w| w == body));
        let p = prepare(&raw, 0, true);
        assert_eq!(p.outcome, Outcome::Accept, "{:?}", p.row.diagnostics);
        let plan = Plan::from_ack(&p.row.ack).unwrap();
        assert_eq!(plan.entries[0].id, "o1");
        let del = prepare(&envelope("DELETE", "Observation/o1", None), 0, true);
        assert_eq!(del.outcome, Outcome::Accept);
        assert!(del.row.resources[0].deleted);
    }
}
