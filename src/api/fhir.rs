//! The FHIR R4 REST facade under `/fhir`: capabilities, read, vread, history, search (GET and
//! POST `_search`) and `Patient/{id}/$everything`, over the resource store. JSON only
//! (`application/fhir+json`; `_format=json` accepted). Errors are OperationOutcomes.

use super::{ApiError, AppState, FHIR_JSON};
use crate::fhir::search::{self, query};
use crate::store::ResourceRow;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Any R4 resource type can be read and searched (a mapping set reloaded without a type keeps
/// serving what was stored); the CapabilityStatement lists the types the loaded mappings produce.
pub(crate) fn check_type(ty: &str) -> Result<(), ApiError> {
    if crate::fhir::validate::is_resource_type(ty) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-supported",
            format!("'{ty}' is not an R4 resource type (see GET /fhir/metadata)"),
        ))
    }
}

/// Query pairs of a raw query string.
fn pairs_of(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(raw.unwrap_or("")).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("the query string is not valid URL encoding: {e}"),
        )
    })
}

/// `_format`: JSON only.
fn check_format(pairs: &[(String, String)], headers: &HeaderMap) -> Result<(), ApiError> {
    let json_ok = |f: &str| {
        let f = f.trim();
        f == "json" || f.contains("json") || f == "*/*"
    };
    if let Some((_, f)) = pairs.iter().find(|(n, _)| n == "_format")
        && !json_ok(f)
    {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not-supported",
            format!("_format '{f}' is not supported; this server speaks application/fhir+json"),
        ));
    }
    if let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        let types: Vec<&str> = accept
            .split(',')
            .map(|t| t.split(';').next().unwrap_or("").trim())
            .collect();
        let ok = types.iter().any(|t| {
            t.is_empty()
                || json_ok(t)
                || *t == "application/*"
                || *t == "text/*"
                || *t == "text/plain"
                || *t == "text/html"
        });
        if !ok {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "not-supported",
                format!("cannot answer in '{accept}'; this server speaks application/fhir+json"),
            ));
        }
    }
    Ok(())
}

/// `Prefer: handling=strict`.
fn strict(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|p| p.trim().eq_ignore_ascii_case("handling=strict"))
}

/// The base URL of the facade for links: configured, else from the Host header.
pub(crate) fn base(state: &AppState, headers: &HeaderMap) -> String {
    if !state.base_url.is_empty() {
        return format!("{}/fhir", state.base_url.trim_end_matches('/'));
    }
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(h) if state.https => format!("https://{h}/fhir"),
        Some(h) => format!("http://{h}/fhir"),
        None => "/fhir".into(),
    }
}

fn fhir_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn http_date(us: i64) -> String {
    match jiff::Timestamp::from_microsecond(us) {
        Ok(t) => t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        Err(_) => "Thu, 01 Jan 1970 00:00:00 GMT".into(),
    }
}

pub(crate) fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// Is `version` among the entity tags of `If-None-Match`?
fn not_modified(headers: &HeaderMap, version: i64) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/").trim_matches('"') == version.to_string()
        })
}

/// One resource version as a response, with ETag, Last-Modified and Content-Location.
fn resource_response(row: &ResourceRow, headers: &HeaderMap, base: &str) -> Response {
    let mut res = if not_modified(headers, row.version) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        fhir_response(StatusCode::OK, &row.to_json())
    };
    let h = res.headers_mut();
    let loc = format!(
        "{base}/{}/{}/_history/{}",
        row.resource_type, row.id, row.version
    );
    for (name, value) in [
        (header::ETAG, etag(row.version)),
        (header::LAST_MODIFIED, http_date(row.last_updated)),
        (header::CONTENT_LOCATION, loc),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    res
}

fn gone(row: &ResourceRow) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "deleted",
        format!(
            "{}/{} was deleted (version {})",
            row.resource_type, row.id, row.version
        ),
    )
}

/// `GET /fhir/{type}/{id}`.
pub async fn read(
    State(state): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_type(&ty)?;
    check_format(&pairs_of(raw.as_deref())?, &headers)?;
    let store = state.pipeline.store();
    match store.read_resource(&ty, &id).await? {
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{ty}/{id} is not known"),
        )),
        Some(row) if row.deleted => Err(gone(&row)),
        Some(row) => Ok(resource_response(&row, &headers, &base(&state, &headers))),
    }
}

/// `GET /fhir/{type}/{id}/_history/{vid}`.
pub async fn vread(
    State(state): State<AppState>,
    Path((ty, id, vid)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_type(&ty)?;
    check_format(&pairs_of(raw.as_deref())?, &headers)?;
    let version: i64 = vid.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("'{vid}' is not a version id of {ty}/{id} (versions are 1, 2, …)"),
        )
    })?;
    let store = state.pipeline.store();
    match store.vread_resource(&ty, &id, version).await? {
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{ty}/{id} has no version {version}"),
        )),
        Some(row) if row.deleted => Err(gone(&row)),
        Some(row) => Ok(resource_response(&row, &headers, &base(&state, &headers))),
    }
}

fn link_url(base: &str, path: &str, pairs: &[(String, String)]) -> String {
    let qs = serde_urlencoded::to_string(pairs).unwrap_or_default();
    if qs.is_empty() {
        format!("{base}/{path}")
    } else {
        format!("{base}/{path}?{qs}")
    }
}

fn bad_param(name: &str, value: &str, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid",
        format!("{name} '{value}' is not {what}"),
    )
}

/// `_since`, `_count` and `_page` of history and `$everything`; anything else is refused under
/// `Prefer: handling=strict` and ignored otherwise.
struct Paging {
    since: Option<i64>,
    count: u32,
    page: Option<String>,
}

fn paging(
    pairs: &[(String, String)],
    headers: &HeaderMap,
    default_count: u32,
    what: &str,
) -> Result<Paging, ApiError> {
    let mut p = Paging {
        since: None,
        count: default_count,
        page: None,
    };
    for (n, v) in pairs {
        match n.as_str() {
            "_since" => {
                let (lo, _) =
                    search::parse_date_range(v).map_err(|_| bad_param(n, v, "an instant"))?;
                p.since = Some(lo);
            }
            "_count" => {
                p.count = v
                    .parse()
                    .map_err(|_| bad_param(n, v, "a non-negative integer"))?
            }
            "_page" => p.page = Some(v.clone()),
            "_format" | "_pretty" => {}
            other if strict(headers) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "not-supported",
                    format!("{what} does not support parameter '{other}' (_since, _count)"),
                ));
            }
            _ => {}
        }
    }
    Ok(p)
}

/// History: `GET /fhir/_history`, `/fhir/{type}/_history`, `/fhir/{type}/{id}/_history`.
async fn history(
    state: &AppState,
    headers: &HeaderMap,
    ty: Option<&str>,
    id: Option<&str>,
    raw: Option<&str>,
) -> Result<Response, ApiError> {
    if let Some(t) = ty {
        check_type(t)?;
    }
    let pairs = pairs_of(raw)?;
    check_format(&pairs, headers)?;
    let p = paging(&pairs, headers, query::DEFAULT_COUNT, "history")?;
    let (since, count) = (p.since, p.count);
    let before = match p.page.as_deref() {
        None => None,
        Some(v) => match v
            .split(',')
            .map(|x| x.parse::<i64>())
            .collect::<Result<Vec<_>, _>>()
            .as_deref()
        {
            Ok([a, b, c]) => Some((*a, *b, *c)),
            _ => return Err(bad_param("_page", v, "a page position")),
        },
    };
    let store = state.pipeline.store();
    if let (Some(t), Some(i)) = (ty, id)
        && store.read_resource(t, i).await?.is_none()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{t}/{i} is not known"),
        ));
    }
    let page = store.history(ty, id, since, count, before).await?;
    let base = base(state, headers);
    let path = match (ty, id) {
        (Some(t), Some(i)) => format!("{t}/{i}/_history"),
        (Some(t), None) => format!("{t}/_history"),
        _ => "_history".into(),
    };
    let keep = query::link_params(&pairs);
    let mut links = vec![json!({"relation": "self", "url": link_url(&base, &path, &pairs)})];
    if let Some((a, b, c)) = page.next {
        let mut next = keep.clone();
        next.push(("_page".into(), format!("{a},{b},{c}")));
        links.push(json!({"relation": "next", "url": link_url(&base, &path, &next)}));
    }
    let entries: Vec<Value> = page
        .versions
        .iter()
        .map(|v| {
            let url = format!("{}/{}", v.resource_type, v.id);
            let mut e = json!({"fullUrl": format!("{base}/{url}")});
            if v.deleted {
                e["request"] = json!({"method": "DELETE", "url": url});
                e["response"] = json!({"status": "204", "etag": etag(v.version),
                    "lastModified": crate::fhir::datetime::instant_from_micros(v.last_updated)});
            } else {
                e["resource"] = v.to_json();
                e["request"] = json!({"method": "PUT", "url": url});
                e["response"] = json!({"status": if v.version == 1 { "201" } else { "200" },
                    "etag": etag(v.version),
                    "lastModified": crate::fhir::datetime::instant_from_micros(v.last_updated)});
            }
            e
        })
        .collect();
    Ok(fhir_response(
        StatusCode::OK,
        &json!({"resourceType": "Bundle", "type": "history", "total": page.total,
                "link": links, "entry": entries}),
    ))
}

/// `GET /fhir/_history`.
pub async fn history_system(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    history(&state, &headers, None, None, raw.as_deref()).await
}

/// `GET /fhir/{type}/_history`.
pub async fn history_type(
    State(state): State<AppState>,
    Path(ty): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    history(&state, &headers, Some(&ty), None, raw.as_deref()).await
}

/// `GET /fhir/{type}/{id}/_history`.
pub async fn history_instance(
    State(state): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    history(&state, &headers, Some(&ty), Some(&id), raw.as_deref()).await
}

/// `_elements`: keep the named top-level elements (plus the mandatory ones) and their primitive
/// extensions (`_birthDate` with `birthDate`), tag SUBSETTED.
fn subset(v: Value, elements: &[String]) -> Value {
    keep_elements(v, |name| elements.iter().any(|e| e == name), true)
}

/// `_summary=text` (the narrative, id, meta and the mandatory elements) or `_summary=data`
/// (everything but the narrative), tagged SUBSETTED.
fn summarize(v: Value, summary: query::Summary) -> Value {
    match summary {
        query::Summary::Text => keep_elements(v, |name| name == "text", true),
        query::Summary::Data => keep_elements(v, |name| name != "text", false),
    }
}

/// Keep `resourceType`, `id`, `meta`, the elements `wanted` accepts (a primitive's `_name`
/// with its `name`) and, with `mandatory`, those R4 requires of the type (the search spec:
/// servers SHOULD return them whether they are requested or not); tag the result SUBSETTED.
fn keep_elements(mut v: Value, wanted: impl Fn(&str) -> bool, mandatory: bool) -> Value {
    if let Some(obj) = v.as_object_mut() {
        let rt = obj
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("");
        let required: Vec<&str> = if mandatory {
            crate::fhir::validate::mandatory_elements(rt).collect()
        } else {
            Vec::new()
        };
        obj.retain(|k, _| {
            let name = k.strip_prefix('_').unwrap_or(k);
            matches!(k.as_str(), "resourceType" | "id" | "meta")
                || wanted(name)
                || required.contains(&name)
        });
        let meta = obj.entry("meta").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            let tags = m.entry("tag").or_insert_with(|| json!([]));
            if let Some(t) = tags.as_array_mut() {
                t.push(
                    json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                              "code": "SUBSETTED"}),
                );
            }
        }
    }
    v
}

async fn search(
    state: &AppState,
    headers: &HeaderMap,
    ty: &str,
    pairs: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    check_type(ty)?;
    check_format(&pairs, headers)?;
    let q = query::parse(ty, &pairs, strict(headers))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", e))?;
    let count_total = !pairs.iter().any(|(n, v)| n == "_total" && v == "none");
    let page = state.pipeline.store().search(&q, count_total).await?;
    let base = base(state, headers);
    // The links carry the parameters the search used: one ignored under lenient handling is
    // left out (the search spec: the server SHALL return the parameters it actually used), and
    // reported in an OperationOutcome entry below.
    let used: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(n, v)| {
            !q.ignored
                .iter()
                .any(|i| i == n || i.strip_prefix(n.as_str()) == Some(&format!("={v}")))
        })
        .collect();
    let keep = query::link_params(&used);
    let mut links = vec![json!({"relation": "self", "url": link_url(&base, ty, &used)})];
    if let Some((sk, rid)) = page.next {
        let mut next = keep;
        next.push(("_page".into(), format!("{sk},{rid}")));
        links.push(json!({"relation": "next", "url": link_url(&base, ty, &next)}));
    }
    let render = |r: &ResourceRow| {
        let v = match &q.elements {
            Some(e) => subset(r.to_json(), e),
            None => r.to_json(),
        };
        match q.summary {
            Some(s) => summarize(v, s),
            None => v,
        }
    };
    let mut entries: Vec<Value> = Vec::new();
    for r in &page.matches {
        entries.push(
            json!({"fullUrl": format!("{base}/{}/{}", r.resource_type, r.id),
            "resource": render(r), "search": {"mode": "match"}}),
        );
    }
    for r in &page.included {
        entries.push(
            json!({"fullUrl": format!("{base}/{}/{}", r.resource_type, r.id),
            "resource": r.to_json(), "search": {"mode": "include"}}),
        );
    }
    if !q.ignored.is_empty() {
        entries.push(json!({"resource": {"resourceType": "OperationOutcome", "issue": [{
            "severity": "warning", "code": "not-supported",
            "diagnostics": format!("ignored unknown search parameters: {}", q.ignored.join(", "))}]},
            "search": {"mode": "outcome"}}));
    }
    let mut bundle = json!({"resourceType": "Bundle", "type": "searchset", "link": links});
    if let Some(t) = page.total {
        bundle["total"] = t.into();
    }
    if !entries.is_empty() {
        bundle["entry"] = entries.into();
    }
    Ok(fhir_response(StatusCode::OK, &bundle))
}

/// `GET /fhir/{type}?…`.
pub async fn search_get(
    State(state): State<AppState>,
    Path(ty): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pairs = pairs_of(raw.as_deref())?;
    search(&state, &headers, &ty, pairs).await
}

/// `POST /fhir/{type}/_search` with a form body (and possibly a query string).
pub async fn search_post(
    State(state): State<AppState>,
    Path(ty): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !body.is_empty() && !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            format!("_search takes application/x-www-form-urlencoded parameters, not '{ct}'"),
        ));
    }
    let mut pairs = pairs_of(raw.as_deref())?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "the _search body is not UTF-8",
        )
    })?;
    pairs.extend(pairs_of(Some(text))?);
    search(&state, &headers, &ty, pairs).await
}

/// `GET /fhir/Patient/{id}/$everything` (`_since`, `_count`).
pub async fn everything(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pairs = pairs_of(raw.as_deref())?;
    check_format(&pairs, &headers)?;
    let p = paging(&pairs, &headers, query::MAX_COUNT, "$everything")?;
    let (since, count) = (p.since, p.count);
    let after = match p.page.as_deref() {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| bad_param("_page", v, "a page position"))?,
        ),
    };
    let Some((rows, total, next)) = state
        .pipeline
        .store()
        .everything(&id, since, count, after)
        .await?
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("Patient/{id} is not known"),
        ));
    };
    let base = base(&state, &headers);
    let path = format!("Patient/{id}/$everything");
    let mut links = vec![json!({"relation": "self", "url": link_url(&base, &path, &pairs)})];
    if let Some(n) = next {
        let mut p = query::link_params(&pairs);
        p.push(("_page".into(), n.to_string()));
        links.push(json!({"relation": "next", "url": link_url(&base, &path, &p)}));
    }
    let entries: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"fullUrl": format!("{base}/{}/{}", r.resource_type, r.id),
                   "resource": r.to_json(), "search": {"mode": "match"}})
        })
        .collect();
    let mut bundle =
        json!({"resourceType": "Bundle", "type": "searchset", "total": total, "link": links});
    if !entries.is_empty() {
        bundle["entry"] = entries.into();
    }
    Ok(fhir_response(StatusCode::OK, &bundle))
}

/// `GET /fhir/metadata`: exactly what this facade supports.
pub async fn metadata(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_format(&pairs_of(raw.as_deref())?, &headers)?;
    let types = state.pipeline.plan().resource_types();
    Ok(fhir_response(
        StatusCode::OK,
        &capability_statement(&base(&state, &headers), &types),
    ))
}

/// The CapabilityStatement of the facade, listing `types` (those the mappings produce).
pub fn capability_statement(base: &str, types: &[String]) -> Value {
    let common = [
        json!({"name": "_id", "type": "token",
               "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"}),
        json!({"name": "_lastUpdated", "type": "date",
               "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"}),
    ];
    let resources: Vec<Value> = types
        .iter()
        .map(|ty| {
            let ty = ty.as_str();
            let mut params: Vec<Value> = common.to_vec();
            for p in search::params_of(ty) {
                params.push(json!({"name": p.name, "type": p.kind.name(),
                    "definition": format!("http://hl7.org/fhir/SearchParameter/{}-{}",
                        definition_base(ty, p.name), p.name)}));
            }
            let mut r = json!({
                "type": ty,
                "interaction": [{"code": "read"}, {"code": "vread"},
                                {"code": "update"}, {"code": "patch"}, {"code": "delete"},
                                {"code": "create"},
                                {"code": "history-instance"}, {"code": "history-type"},
                                {"code": "search-type"}],
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "conditionalRead": "not-supported",
                "searchParam": params,
            });
            let includes: Vec<String> = search::params_of(ty)
                .filter(|p| p.kind == search::Kind::Reference)
                .map(|p| format!("{ty}:{}", p.name))
                .chain(std::iter::once(format!("{ty}:*")))
                .collect();
            r["searchInclude"] = json!(includes);
            r["searchRevInclude"] = json!(
                search::PARAMS
                    .iter()
                    .filter(
                        |p| p.kind == search::Kind::Reference && p.target.is_none_or(|t| t == ty)
                    )
                    .map(|p| format!("{}:{}", p.resource, p.name))
                    .collect::<Vec<_>>()
            );
            if ty == "Patient" {
                r["operation"] = json!([{"name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
                    {"name": "export",
                    "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"}]);
            }
            r
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-29",
        "kind": "instance",
        "software": {"name": "v2fhir", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "v2fhir HL7 v2 to FHIR gateway", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "rest": [{
            "mode": "server",
            "documentation": "Resources are written by converting HL7 v2 messages, and by clients \
                (create, update, delete, their conditional forms, transaction and batch Bundles, any R4 \
                resource type), each \
                write logged and committed before it is answered. A created resource's id is \
                derived from its identifiers (else its content), so a repeated create updates one \
                resource. Search parameters not listed are ignored (Prefer: handling=lenient, the default) \
                or refused with 400 (Prefer: handling=strict). Supported modifiers: string :exact and \
                :contains, reference :[type]; chains of one level (e.g. subject:Patient.identifier); \
                _count, _sort (_lastUpdated and date parameters), _include, _revinclude, \
                _summary=count, text and data (not true: R4's JSON Schema does not say which \
                elements are summary elements), _elements, _total=none.",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"},
                            {"code": "history-system"}],
            "operation": [{"name": "validate",
                "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"},
                {"name": "export",
                "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}],
        }],
    })
}

/// The resource type whose SearchParameter defines `name` for `ty` in R4 (shared definitions
/// such as `clinical-patient` are published under their own ids).
fn definition_base(ty: &str, name: &str) -> String {
    let clinical = [
        "AllergyIntolerance",
        "Condition",
        "DiagnosticReport",
        "Encounter",
        "Immunization",
        "MedicationDispense",
        "MedicationRequest",
        "Observation",
        "Procedure",
    ];
    match name {
        // R4 publishes these for DocumentReference under the shared clinical-* ids; its `date`
        // (DocumentReference.date) is its own.
        "patient" | "identifier" | "type" if ty == "DocumentReference" => "clinical".into(),
        "patient" | "encounter" if clinical.contains(&ty) => "clinical".into(),
        "date" | "code" | "identifier" if clinical.contains(&ty) && ty != "Immunization" => {
            "clinical".into()
        }
        "family" | "given" | "telecom" | "address-postalcode" | "gender" | "birthdate"
            if ty == "Patient" =>
        {
            "individual".into()
        }
        _ => ty.into(),
    }
}
