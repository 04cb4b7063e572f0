//! The HTTP API (axum): v2 ingest (`/v2/…`, in `sources::http`), the operations endpoints
//! (`/messages`, `/health`, `/metrics`). Errors are FHIR OperationOutcomes with a fitting status.

pub mod auth;
pub mod export;
pub mod fhir;
pub mod jwt;
mod messages;
mod proxy;

use crate::ingest::Pipeline;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;

/// `application/fhir+json`.
pub const FHIR_JSON: &str = "application/fhir+json";
/// The HL7 v2 ER7 media type.
pub const HL7_ER7: &str = "x-application/hl7-v2+er7";

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The ingest pipeline (and through it the store and the mapping plan).
    pub pipeline: Arc<Pipeline>,
    /// Prometheus rendering.
    pub metrics: PrometheusHandle,
    /// Base URL for links (`next`), e.g. `http://127.0.0.1:8080`; empty = relative links.
    pub base_url: String,
    /// The listener serves HTTPS (links built from the `Host` header say `https`).
    pub https: bool,
    /// Bearer tokens and their scopes (`http.tokens_file`, `http.jwt_*`); `None`: no token
    /// needed.
    pub auth: Option<Arc<auth::Auth>>,
    /// Bulk export jobs (`/fhir/$export`).
    pub exports: Arc<export::Exports>,
    /// Where bulk export files are written.
    pub export_dir: std::path::PathBuf,
    /// The directory source's directory and what it has done (for `GET /health`).
    pub file: Option<(std::path::PathBuf, Arc<crate::sources::file::FileStatus>)>,
    /// The mapping directory, for `POST /admin/mappings/reload`.
    pub mappings_dir: std::path::PathBuf,
    /// The upstream forwarder (sink mode upstream or both).
    pub upstream: Option<Arc<crate::sinks::upstream::Upstream>>,
    /// Sink mode `upstream`: `/fhir` reads and searches are proxied to the upstream.
    pub proxy_reads: bool,
}

/// An error answered as an OperationOutcome.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    text: String,
}

impl ApiError {
    /// An error with an HTTP status, an OperationOutcome issue code and a text.
    pub fn new(status: StatusCode, code: &'static str, text: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            text: text.into(),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "store error in a request");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "transient", e.to_string())
    }
}

/// An OperationOutcome with one issue.
pub fn outcome(severity: &str, code: &str, text: &str) -> serde_json::Value {
    serde_json::json!({"resourceType": "OperationOutcome", "issue": [
        {"severity": severity, "code": code, "diagnostics": text}]})
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = outcome("error", self.code, &self.text).to_string();
        (
            self.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
            body,
        )
            .into_response()
    }
}

/// Limits of the HTTP server.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body.
    pub max_body: usize,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body: 16 * 1024 * 1024,
            timeout: Duration::from_secs(60),
        }
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no endpoint at {}", uri.path()),
    )
}

/// The `/fhir` paths (served locally, or proxied to the upstream in sink mode `upstream`).
const FHIR_PATHS: &[&str] = &[
    "/fhir/metadata",
    "/fhir/_history",
    "/fhir/Patient/{id}/$everything",
    "/fhir/{type}",
    "/fhir/{type}/_search",
    "/fhir/{type}/_history",
    "/fhir/{type}/{id}",
    "/fhir/{type}/{id}/_history",
    "/fhir/{type}/{id}/_history/{vid}",
];

/// The whole router.
pub fn router(state: AppState, cfg: &HttpConfig) -> Router {
    use tower_http::limit::RequestBodyLimitLayer;
    use tower_http::timeout::TimeoutLayer;
    let fhir_routes: Router<AppState> = if state.proxy_reads {
        // Sink mode `upstream`: no local resources; the same paths are answered by the upstream.
        // Writes are not forwarded as they come: they are logged and queued like converted
        // messages (below), and reach the upstream through the outbox.
        let mut r = Router::new();
        for path in FHIR_PATHS {
            r = r.route(path, get(proxy::forward));
        }
        r.route("/fhir/{type}/_search", post(proxy::forward))
    } else {
        Router::new()
            .route("/fhir/metadata", get(fhir::metadata))
            .route("/fhir/$export", get(export::kick_off))
            .route("/fhir/Patient/$export", get(export::kick_off_patient))
            .route(
                "/fhir/$export-status/{job}",
                get(export::status).delete(export::delete),
            )
            .route("/fhir/$export-file/{job}/{file}", get(export::file))
            .route("/fhir/_history", get(fhir::history_system))
            .route("/fhir/Patient/{id}/$everything", get(fhir::everything))
            .route("/fhir/{type}", get(fhir::search_get))
            .route("/fhir/{type}/_search", post(fhir::search_post))
            .route("/fhir/{type}/_history", get(fhir::history_type))
            .route("/fhir/{type}/{id}", get(fhir::read))
            .route("/fhir/{type}/{id}/_history", get(fhir::history_instance))
            .route("/fhir/{type}/{id}/_history/{vid}", get(fhir::vread))
    };
    // The FHIR source: resources written by device and app backends (stored, or queued for the
    // upstream, like converted v2 messages).
    let fhir_writes: Router<AppState> = Router::new()
        .route("/fhir", post(crate::sources::fhir::post_bundle))
        .route(
            "/fhir/{type}/$validate",
            post(crate::sources::fhir::validate),
        )
        .route(
            "/fhir/{type}",
            post(crate::sources::fhir::create)
                .put(crate::sources::fhir::update_conditional)
                .delete(crate::sources::fhir::delete_conditional),
        )
        .route(
            "/fhir/{type}/{id}",
            axum::routing::put(crate::sources::fhir::update)
                .delete(crate::sources::fhir::delete)
                .patch(crate::sources::fhir::patch),
        );
    Router::new()
        .route("/v2/messages", post(crate::sources::http::post_messages))
        .route("/v2/$convert", post(crate::sources::http::post_convert))
        .route("/messages", get(messages::list))
        .route("/messages/{id}", get(messages::get_one))
        .route("/messages/{id}/reprocess", post(messages::reprocess))
        .route("/messages/reprocess", post(messages::reprocess_bulk))
        .route("/admin/mappings/reload", post(messages::reload_mappings))
        .route("/admin/prune", post(messages::prune))
        .route("/admin/forward/retry", post(messages::forward_retry))
        .route("/health", get(messages::health))
        .route("/health/live", get(|| async { "ok" }))
        .route("/metrics", get(messages::metrics))
        .merge(fhir_routes)
        .merge(fhir_writes)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            auth::check,
        ))
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            cfg.timeout,
        ))
        .layer(RequestBodyLimitLayer::new(cfg.max_body))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
        .layer(axum::middleware::map_response(limits_as_outcome))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<_>| {
                    // Method and path only: query strings may carry identifiers.
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
                },
            ),
        )
}

/// The body-size, timeout and panic layers answer in plain text; every error of this API is an
/// OperationOutcome, so rewrite those.
async fn limits_as_outcome<B>(res: axum::http::Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let status = res.status();
    let fhir = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(FHIR_JSON.as_bytes()));
    let (code, text) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("too-long", "the request body exceeds http.max_body"),
        StatusCode::REQUEST_TIMEOUT => {
            ("timeout", "the request took longer than http.timeout_secs")
        }
        StatusCode::INTERNAL_SERVER_ERROR => ("exception", "internal error; see the gateway log"),
        _ => return res.map(axum::body::Body::new),
    };
    if fhir {
        return res.map(axum::body::Body::new);
    }
    ApiError::new(status, code, text).into_response()
}

/// The Prometheus recorder, installed once per process.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = metrics_exporter_prometheus::PrometheusBuilder::new();
            let builder = builder
                .set_buckets(&[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .unwrap_or_else(|_| metrics_exporter_prometheus::PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours renders nothing new.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
