//! Sink mode `upstream`: `/fhir` reads and searches are forwarded to the upstream FHIR server, so
//! app developers keep one endpoint. Only reads (GET, and POST `_search`) pass; the request keeps
//! its path and query, gets the gateway's credentials for the upstream (the client's own
//! `Authorization` is not forwarded), and only content-negotiation and caching headers go either
//! way. Links in the answer (Bundle `link`, `fullUrl`, `Location`) are rewritten from the
//! upstream's base to the gateway's.

use super::{ApiError, AppState};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// Request headers passed to the upstream.
const FORWARD: &[&str] = &[
    "accept",
    "content-type",
    "if-none-match",
    "if-modified-since",
    "prefer",
];
/// Response headers passed back.
const BACK: &[&str] = &[
    "content-type",
    "etag",
    "last-modified",
    "location",
    "content-location",
    "retry-after",
];

/// Replace the upstream base at the start of link-like strings with ours.
fn rewrite_links(v: &mut Value, from: &str, to: &str) {
    let fix = |s: &mut String| {
        if let Some(rest) = s.strip_prefix(from)
            && (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
        {
            *s = format!("{to}{rest}");
        }
    };
    if let Some(links) = v.get_mut("link").and_then(Value::as_array_mut) {
        for l in links {
            if let Some(Value::String(u)) = l.get_mut("url") {
                fix(u);
            }
        }
    }
    if let Some(entries) = v.get_mut("entry").and_then(Value::as_array_mut) {
        for e in entries {
            if let Some(Value::String(u)) = e.get_mut("fullUrl") {
                fix(u);
            }
            if let Some(Value::String(u)) = e.pointer_mut("/response/location") {
                fix(u);
            }
        }
    }
}

/// Is every segment of the path under `/fhir` something a FHIR read can contain (a type, an id,
/// `_history`, `_search`, `$operation`)? Anything else (`..`, percent-escapes, empty segments)
/// could make the upstream's URL leave its FHIR base with the gateway's credentials.
fn safe_path(rest: &str) -> bool {
    rest.split('/').skip(1).all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg.len() <= 64
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'$'))
    })
}

/// Forward one `/fhir/…` read to the upstream.
pub async fn forward(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(up) = state.upstream.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-supported",
            "no upstream FHIR server is configured",
        ));
    };
    let rest = uri.path().strip_prefix("/fhir").unwrap_or("");
    let is_search_post = method == Method::POST && rest.ends_with("/_search");
    if method != Method::GET && method != Method::HEAD && !is_search_post {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            format!(
                "{method} {}: the gateway forwards reads and searches only; data reaches the upstream through HL7 v2 ingest",
                uri.path()
            ),
        ));
    }
    if !safe_path(rest) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!(
                "{}: not a FHIR path (types, ids, _history, _search, $operations only)",
                uri.path()
            ),
        ));
    }
    let mut url = format!("{}{rest}", up.base());
    if let Some(q) = query.as_deref().filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(q);
    }
    let m = if is_search_post {
        reqwest::Method::POST
    } else if method == Method::HEAD {
        reqwest::Method::HEAD
    } else {
        reqwest::Method::GET
    };
    let mut req = up.client().request(m, &url);
    for name in FORWARD {
        if let Some(v) = headers.get(*name).and_then(|v| v.to_str().ok()) {
            req = req.header(*name, v);
        }
    }
    if headers.get(header::ACCEPT).is_none() {
        req = req.header("accept", "application/fhir+json");
    }
    match up.auth_header().await {
        Ok(Some(a)) => req = req.header("authorization", a),
        Ok(None) => {}
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "transient",
                e.to_string(),
            ));
        }
    }
    if is_search_post {
        req = req.body(body.to_vec());
    }
    let resp = req.send().await.map_err(|e| {
        let (status, what) = if e.is_timeout() {
            (StatusCode::GATEWAY_TIMEOUT, "did not answer in time")
        } else {
            (StatusCode::BAD_GATEWAY, "could not be reached")
        };
        ApiError::new(
            status,
            "transient",
            format!("the upstream FHIR server {} {what}", up.base_redacted()),
        )
    })?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    if status == StatusCode::UNAUTHORIZED {
        up.auth_rejected().await;
    }
    let mut out = HeaderMap::new();
    let from = up.base().to_string();
    let to = super::fhir::base(&state, &headers);
    for name in BACK {
        if let Some(v) = resp.headers().get(*name).and_then(|v| v.to_str().ok()) {
            let v = match v.strip_prefix(from.as_str()) {
                Some(rest) if *name == "location" || *name == "content-location" => {
                    format!("{to}{rest}")
                }
                _ => v.to_string(),
            };
            if let Ok(hv) = HeaderValue::from_str(&v) {
                out.insert(*name, hv);
            }
        }
    }
    let bytes = resp.bytes().await.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "transient",
            format!(
                "the upstream FHIR server {} broke off its answer",
                up.base_redacted()
            ),
        )
    })?;
    let body = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut v) if v.get("resourceType").and_then(Value::as_str) == Some("Bundle") => {
            rewrite_links(&mut v, &from, &to);
            Bytes::from(v.to_string())
        }
        _ => bytes,
    };
    Ok((status, out, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fhir_paths_are_forwarded() {
        for ok in [
            "/Patient",
            "/Patient/abc-1.2",
            "/Patient/1/_history/2",
            "/Patient/1/$everything",
            "/metadata",
            "/Observation/_search",
        ] {
            assert!(safe_path(ok), "{ok}");
        }
        for bad in [
            "/Patient/..",
            "/../admin",
            "/Patient/%2e%2e",
            "/Patient//x",
            "/Patient/a%2Fb",
            "/Patient/a b",
        ] {
            assert!(!safe_path(bad), "{bad}");
        }
    }

    #[test]
    fn links_are_rewritten_to_the_gateway() {
        let mut b = serde_json::json!({"resourceType": "Bundle", "link": [
            {"relation": "next", "url": "http://up:8090/fhir/Patient?_page=2"},
            {"relation": "other", "url": "http://up:8090/fhirx/Patient"}],
            "entry": [{"fullUrl": "http://up:8090/fhir/Patient/1"}]});
        rewrite_links(&mut b, "http://up:8090/fhir", "http://gw/fhir");
        assert_eq!(b["link"][0]["url"], "http://gw/fhir/Patient?_page=2");
        assert_eq!(b["link"][1]["url"], "http://up:8090/fhirx/Patient");
        assert_eq!(b["entry"][0]["fullUrl"], "http://gw/fhir/Patient/1");
    }
}
