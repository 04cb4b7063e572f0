//! FHIR Bulk Data export (the async pattern of the Bulk Data Access IG), system level and patient
//! level: `GET /fhir/$export` (every type) or `GET /fhir/Patient/$export` (the resources in
//! patients' compartments: Patients, and what refers to them as R4's compartment definition
//! says; `fhir::compartment`), with `_type` and `_since`, starts a job and answers 202 with
//! `Content-Location`;
//! `GET /fhir/$export-status/{job}` answers 202 while it runs and then the manifest; the files
//! are NDJSON, one per type, at `/fhir/$export-file/{job}/{Type}.ndjson`; `DELETE` on the status
//! URL removes the job and its files. Files are written under `http.export_dir` (PHI: keep it on
//! protected storage), with the finished job's manifest beside them, so its status and files
//! outlive a restart; a job a restart interrupted answers 500 (start it again). Current versions
//! only, deleted resources left out.

use super::{ApiError, AppState};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;

/// One export job.
#[derive(Debug, Clone)]
enum Job {
    Running { types_done: usize, types: usize },
    Done { manifest: Value },
    Failed { why: String },
}

/// The jobs of this process.
#[derive(Debug, Default)]
pub struct Exports {
    jobs: Mutex<HashMap<String, Job>>,
}

impl Exports {
    fn set(&self, id: &str, job: Job) {
        if let Ok(mut j) = self.jobs.lock() {
            j.insert(id.to_string(), job);
        }
    }
    fn get(&self, id: &str) -> Option<Job> {
        self.jobs.lock().ok().and_then(|j| j.get(id).cloned())
    }
    fn remove(&self, id: &str) -> Option<Job> {
        self.jobs.lock().ok().and_then(|mut j| j.remove(id))
    }
}

fn valid_job(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The manifest of a finished job, kept beside its files (so a restart does not lose it).
const MANIFEST: &str = "manifest.json";

/// A job: this process's, else one a previous run left in `dir` — finished (its manifest is
/// there) or interrupted by the restart (its directory without a manifest).
fn job_of(state: &AppState, id: &str) -> Option<Job> {
    if let Some(j) = state.exports.get(id) {
        return Some(j);
    }
    if !valid_job(id) {
        return None;
    }
    let dir = state.export_dir.join(id);
    match std::fs::read(dir.join(MANIFEST)) {
        Ok(text) => match serde_json::from_slice(&text) {
            Ok(manifest) => Some(Job::Done { manifest }),
            Err(e) => Some(Job::Failed {
                why: format!("its manifest is not JSON: {e}"),
            }),
        },
        Err(_) if dir.is_dir() => Some(Job::Failed {
            why: "it was interrupted by a restart of the gateway; start the export again".into(),
        }),
        Err(_) => None,
    }
}

/// `GET /fhir/$export`: start a job.
/// `GET /fhir/$export`: every type.
pub async fn kick_off(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    start(state, raw, headers, false).await
}

/// `GET /fhir/Patient/$export`: the Patient compartment.
pub async fn kick_off_patient(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    start(state, raw, headers, true).await
}

/// Start a job; `patients`: only resources in a patient's compartment.
async fn start(
    state: AppState,
    raw: Option<String>,
    headers: HeaderMap,
    patients: bool,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("query: {e}")))?;
    let mut types: Option<Vec<String>> = None;
    let mut since: Option<String> = None;
    for (k, v) in &pairs {
        match k.as_str() {
            "_type" => {
                let list: Vec<String> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect();
                if let Some(bad) = list
                    .iter()
                    .find(|t| !crate::fhir::validate::is_resource_type(t))
                {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        format!("_type: '{bad}' is not an R4 resource type"),
                    ));
                }
                if patients
                    && let Some(bad) = list
                        .iter()
                        .find(|t| !crate::fhir::compartment::patient_type(t))
                {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        format!(
                            "_type: '{bad}' is not in the Patient compartment (Patient/$export); use /fhir/$export"
                        ),
                    ));
                }
                types = Some(list);
            }
            "_since" => since = Some(v.clone()),
            "_outputFormat" => {
                if !matches!(
                    v.as_str(),
                    "application/fhir+ndjson" | "application/ndjson" | "ndjson"
                ) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "not-supported",
                        format!("_outputFormat '{v}': only application/fhir+ndjson"),
                    ));
                }
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "not-supported",
                    format!(
                        "$export parameter '{other}' is not supported (_type, _since, _outputFormat)"
                    ),
                ));
            }
        }
    }
    // `_since` is checked the way a search checks `_lastUpdated`, before the job starts.
    if let Some(s) = &since {
        crate::fhir::search::query::parse(
            "Patient",
            &[("_lastUpdated".into(), format!("ge{s}"))],
            true,
        )
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("_since: {e}")))?;
    }
    let types = match types {
        Some(t) => t,
        None => state
            .pipeline
            .store()
            .resource_counts()
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .filter(|t| !patients || crate::fhir::compartment::patient_type(t))
            .collect(),
    };
    let id = crate::fhir::ids::resource_id(
        "export",
        "",
        "",
        &[
            &crate::store::now_micros().to_string(),
            &std::process::id().to_string(),
        ],
    );
    let dir = state.export_dir.join(&id);
    std::fs::create_dir_all(&dir).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            format!("cannot create the export directory {}: {e}", dir.display()),
        )
    })?;
    let base = super::fhir::base(&state, &headers);
    let request = format!(
        "{base}/{}$export{}",
        if patients { "Patient/" } else { "" },
        raw.as_deref()
            .filter(|r| !r.is_empty())
            .map(|r| format!("?{r}"))
            .unwrap_or_default()
    );
    state.exports.set(
        &id,
        Job::Running {
            types_done: 0,
            types: types.len(),
        },
    );
    let (exports, store, job) = (
        state.exports.clone(),
        state.pipeline.store().clone(),
        id.clone(),
    );
    let file_base = format!("{base}/$export-file/{id}");
    tokio::spawn(async move {
        let started = crate::fhir::datetime::instant_from_micros(crate::store::now_micros());
        match run(
            &store,
            &exports,
            &job,
            &dir,
            &types,
            since.as_deref(),
            patients,
        )
        .await
        {
            Ok(outputs) => {
                let output: Vec<Value> = outputs
                    .into_iter()
                    .map(|(ty, count)| {
                        json!({"type": ty, "url": format!("{file_base}/{ty}.ndjson"), "count": count})
                    })
                    .collect();
                let manifest = json!({
                    "transactionTime": started,
                    "request": request,
                    "requiresAccessToken": true,
                    "output": output,
                    "error": [],
                });
                // Kept beside the files: a restart forgets the job, not its result.
                let path = dir.join(MANIFEST);
                match tokio::fs::write(&path, manifest.to_string()).await {
                    Ok(()) => exports.set(&job, Job::Done { manifest }),
                    Err(e) => exports.set(
                        &job,
                        Job::Failed {
                            why: format!("{}: {e}", path.display()),
                        },
                    ),
                }
            }
            Err(why) => exports.set(&job, Job::Failed { why }),
        }
    });
    let mut res = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{base}/$export-status/{id}")) {
        res.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    Ok(res)
}

/// Write one NDJSON file per type; `(type, count)` for the types with resources. With
/// `patients`, only resources in a patient's compartment.
async fn run(
    store: &crate::store::Store,
    exports: &Exports,
    job: &str,
    dir: &std::path::Path,
    types: &[String],
    since: Option<&str>,
    patients: bool,
) -> Result<Vec<(String, u64)>, String> {
    use tokio::io::AsyncWriteExt;
    let mut outputs = Vec::new();
    for (n, ty) in types.iter().enumerate() {
        let mut pairs = vec![("_count".to_string(), "1000".to_string())];
        if let Some(s) = since {
            pairs.push(("_lastUpdated".into(), format!("ge{s}")));
        }
        let mut q = crate::fhir::search::query::parse(ty, &pairs, true)
            .map_err(|e| format!("{ty}: {e}"))?;
        let path = dir.join(format!("{ty}.ndjson"));
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
        let mut count = 0u64;
        // A page (up to 1,000 resources) at a time: one write each, off the blocking path.
        let mut page_text = Vec::new();
        loop {
            let page = store
                .search(&q, false)
                .await
                .map_err(|e| format!("reading {ty}: {e}"))?;
            page_text.clear();
            for r in &page.matches {
                let resource = r.to_json();
                if patients && !crate::fhir::compartment::in_patient_compartment(&resource) {
                    continue;
                }
                serde_json::to_writer(&mut page_text, &resource)
                    .map_err(|e| format!("{ty}/{}: {e}", r.id))?;
                page_text.push(b'\n');
                count += 1;
            }
            file.write_all(&page_text).await.map_err(io)?;
            match page.next {
                Some(after) => q.after = Some(after),
                None => break,
            }
        }
        file.flush().await.map_err(io)?;
        if count > 0 {
            outputs.push((ty.clone(), count));
        } else {
            let _ = tokio::fs::remove_file(&path).await;
        }
        exports.set(
            job,
            Job::Running {
                types_done: n + 1,
                types: types.len(),
            },
        );
    }
    Ok(outputs)
}

/// `GET /fhir/$export-status/{job}`.
pub async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match job_of(&state, &id) {
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no export job '{id}'"),
        )),
        Some(Job::Running { types_done, types }) => {
            let mut res = StatusCode::ACCEPTED.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("{types_done} of {types} types")) {
                res.headers_mut().insert("x-progress", v);
            }
            if let Ok(v) = HeaderValue::from_str("1") {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Ok(res)
        }
        Some(Job::Done { manifest }) => Ok((
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            manifest.to_string(),
        )
            .into_response()),
        Some(Job::Failed { why }) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            format!("export job '{id}' failed: {why}"),
        )),
    }
}

/// `DELETE /fhir/$export-status/{job}`: forget the job and delete its files.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !valid_job(&id) || job_of(&state, &id).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no export job '{id}'"),
        ));
    }
    state.exports.remove(&id);
    let _ = std::fs::remove_dir_all(state.export_dir.join(&id));
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET /fhir/$export-file/{job}/{file}`.
pub async fn file(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let ty = name.strip_suffix(".ndjson").unwrap_or("");
    // Only `Type.ndjson` of a known job: nothing else of the directory is reachable.
    if !valid_job(&id)
        || !crate::fhir::validate::is_resource_type(ty)
        || !matches!(job_of(&state, &id), Some(Job::Done { .. }))
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no export file {id}/{name}"),
        ));
    }
    // Streamed: an export file can be far larger than what should sit in memory.
    let file = tokio::fs::File::open(state.export_dir.join(&id).join(&name))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no export file {id}/{name}"),
            )
        })?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/fhir+ndjson"),
        )],
        axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response())
}
