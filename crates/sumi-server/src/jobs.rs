//! The async job API, `/sumi/v1/jobs`, for long jobs and clients that cannot hold a connection:
//! `POST {"endpoint": "txt2img"|"img2img"|"extra-single-image", "payload": {…}}` → 202 `{id}`,
//! `GET /sumi/v1/jobs/{id}` → state, progress, warnings and the result when done,
//! `DELETE /sumi/v1/jobs/{id}` → cancelled. A job runs its route exactly as a synchronous
//! request does ([`run_route`] sends it through the server's own router).
//!
//! In the single-process server the jobs live here ([`LocalJobs`]: finished ones are kept
//! [`KEEP`] and at most [`KEEP_FINISHED`] of them); behind a broker they live in Redis
//! ([`crate::broker_front`]). The JSON shapes are the same ([`status_json`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sumi_broker::{Endpoint, JobResult, JobState, JobStatus};
use tower::ServiceExt;

use crate::body::{json_object, read_body};
use crate::error::ApiError;
use crate::AppState;

/// How long a finished job's result is kept in the single-process server.
pub const KEEP: Duration = Duration::from_secs(3600);
/// How many finished jobs the single-process server keeps at most (the oldest go first).
pub const KEEP_FINISHED: usize = 64;
/// The largest response a job's route may give (its images), in bytes.
pub const RESULT_LIMIT: usize = 1 << 30;

/// A job request: the endpoint and its payload (the route's body).
pub struct JobRequest {
    /// The route.
    pub endpoint: Endpoint,
    /// Its body.
    pub payload: Map<String, Value>,
    /// The job id (`force_task_id`, else a new one).
    pub id: String,
}

/// Reads `{"endpoint", "payload"}`.
pub fn parse_job_request(bytes: &[u8]) -> Result<JobRequest, ApiError> {
    let mut sent = json_object(bytes)?;
    let endpoint = match sent.get("endpoint") {
        Some(Value::String(e)) => Endpoint::parse(e).ok_or_else(|| {
            ApiError::invalid(format!(
                "endpoint: {e:?} is not one of txt2img, img2img, extra-single-image"
            ))
        })?,
        _ => return Err(ApiError::invalid("endpoint: field required (a string)")),
    };
    let payload = match sent.remove("payload") {
        Some(Value::Object(p)) => p,
        _ => return Err(ApiError::invalid("payload: field required (an object)")),
    };
    for k in sent.keys() {
        if k != "endpoint" {
            return Err(ApiError::invalid(format!(
                "{k}: unknown field (endpoint and payload only)"
            )));
        }
    }
    let id = task_id(&payload)?;
    Ok(JobRequest {
        endpoint,
        payload,
        id,
    })
}

/// A request's job id: A1111's `force_task_id` when given (checked), else a new one.
pub fn task_id(payload: &Map<String, Value>) -> Result<String, ApiError> {
    match payload.get("force_task_id") {
        None | Some(Value::Null) => Ok(sumi_broker::new_id()),
        Some(Value::String(id)) => {
            sumi_broker::check_id(id)
                .map_err(|e| ApiError::invalid(format!("force_task_id: {e}")))?;
            Ok(id.clone())
        }
        Some(_) => Err(ApiError::invalid("force_task_id: expected a string")),
    }
}

/// Sends `body` to `endpoint`'s route of `app` (with the caller's credentials), as a client
/// would, and returns its status and JSON body.
pub async fn run_route(
    app: &Router,
    endpoint: Endpoint,
    body: String,
    auth: Option<HeaderValue>,
) -> JobResult {
    let mut req = Request::post(endpoint.path()).header(header::CONTENT_TYPE, "application/json");
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let req = match req.body(Body::from(body)) {
        Ok(r) => r,
        Err(e) => return failure(500, &e.to_string()),
    };
    let res = match app.clone().oneshot(req).await {
        Ok(r) => r,
        Err(e) => return failure(500, &e.to_string()),
    };
    let status = res.status().as_u16();
    match axum::body::to_bytes(res.into_body(), RESULT_LIMIT).await {
        Ok(b) => JobResult {
            status,
            body: serde_json::from_slice(&b)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into_owned())),
        },
        Err(e) => failure(500, &format!("the response could not be read: {e}")),
    }
}

fn failure(status: u16, why: &str) -> JobResult {
    JobResult {
        status,
        body: json!({ "error": "JobFailed", "detail": why }),
    }
}

/// The `warnings` of a generation's answer (in its `info` text), else none.
pub fn warnings_of(body: &Value) -> Vec<String> {
    body.get("info")
        .and_then(Value::as_str)
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .and_then(|i| i.get("warnings").cloned())
        .and_then(|w| serde_json::from_value(w).ok())
        .unwrap_or_default()
}

/// The answer of `GET /sumi/v1/jobs/{id}`.
pub fn status_json(s: &JobStatus, result: Option<&JobResult>, progress: Option<Value>) -> Value {
    json!({
        "id": s.id,
        "state": s.state.name(),
        "endpoint": s.endpoint.name(),
        "progress": progress,
        "warnings": s.warnings,
        "worker": s.worker,
        "attempts": s.attempts,
        "created": s.created,
        "started": s.started,
        "finished": s.finished,
        "error": s.error,
        "result": result.map(|r| json!({ "status": r.status, "body": r.body })),
    })
}

/// 202 `{id}`.
pub fn accepted(id: &str) -> Response {
    (StatusCode::ACCEPTED, Json(json!({ "id": id }))).into_response()
}

/// One job of the single-process server.
struct LocalJob {
    status: JobStatus,
    result: Option<JobResult>,
    task: Option<tokio::task::AbortHandle>,
}

/// The single-process server's async jobs.
#[derive(Default)]
pub struct LocalJobs {
    router: OnceLock<Router>,
    jobs: Arc<Mutex<HashMap<String, LocalJob>>>,
}

impl LocalJobs {
    /// Gives the jobs the router they run through (once, at start).
    pub fn set_router(&self, app: Router) {
        let _ = self.router.set(app);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LocalJob>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops finished jobs past [`KEEP`], then the oldest past [`KEEP_FINISHED`].
    fn expire(map: &mut HashMap<String, LocalJob>) {
        let now = sumi_broker::now();
        map.retain(|_, j| {
            j.status
                .finished
                .is_none_or(|f| now - f < KEEP.as_secs_f64())
        });
        let mut done: Vec<(f64, String)> = map
            .iter()
            .filter_map(|(id, j)| j.status.finished.map(|f| (f, id.clone())))
            .collect();
        if done.len() > KEEP_FINISHED {
            done.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (_, id) in &done[..done.len() - KEEP_FINISHED] {
                map.remove(id);
            }
        }
    }
}

/// `POST /sumi/v1/jobs`.
pub async fn create(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    match create_local(&s, headers, body).await {
        Ok(id) => accepted(&id),
        Err(e) => e.into_response(),
    }
}

async fn create_local(
    s: &Arc<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<String, ApiError> {
    if s.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let bytes = read_body(&headers, body, s.config.body_limit, s.timeouts.body).await?;
    let job = parse_job_request(&bytes)?;
    drop(bytes);
    let Some(app) = s.jobs.router.get().cloned() else {
        return Err(ApiError::unavailable("the server is starting"));
    };
    // the job's request would find the queue full too
    if s.queue.depth() >= s.queue.capacity() {
        s.metrics.rejected("queue_full");
        return Err(ApiError::queue_full(s.queue.capacity()));
    }
    let body = serde_json::to_string(&Value::Object(job.payload))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let auth = headers.get(header::AUTHORIZATION).cloned();
    let id = job.id.clone();
    let mut map = s.jobs.lock();
    LocalJobs::expire(&mut map);
    if map.contains_key(&id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("force_task_id: a job {id} exists"),
        ));
    }
    let status = JobStatus {
        id: id.clone(),
        state: JobState::Running,
        endpoint: job.endpoint,
        model: String::new(),
        progress: None,
        warnings: Vec::new(),
        worker: None,
        attempts: 1,
        created: Some(sumi_broker::now()),
        started: Some(sumi_broker::now()),
        finished: None,
        error: None,
    };
    let jobs = s.jobs.jobs.clone();
    let job_id = id.clone();
    let endpoint = job.endpoint;
    let task = tokio::spawn(async move {
        let r = run_route(&app, endpoint, body, auth).await;
        let mut map = jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(j) = map.get_mut(&job_id) {
            j.status.state = if r.status < 300 {
                JobState::Done
            } else {
                JobState::Failed
            };
            j.status.warnings = warnings_of(&r.body);
            j.status.finished = Some(sumi_broker::now());
            j.result = Some(r);
            j.task = None;
        }
    });
    map.insert(
        id.clone(),
        LocalJob {
            status,
            result: None,
            task: Some(task.abort_handle()),
        },
    );
    Ok(id)
}

/// `GET /sumi/v1/jobs/{id}`.
pub async fn get_job(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let (status, result) = {
        let map = s.jobs.lock();
        match map.get(&id) {
            None => return ApiError::not_found(format!("no job {id}")).into_response(),
            Some(j) => (j.status.clone(), j.result.clone()),
        }
    };
    let progress = (!status.state.finished()).then(|| {
        let p = s.progress_lock();
        let (progress, eta) = p.progress();
        json!({ "progress": progress, "eta_relative": eta, "state": p.state_json(),
                "textinfo": p.textinfo() })
    });
    Json(status_json(&status, result.as_ref(), progress)).into_response()
}

/// `DELETE /sumi/v1/jobs/{id}`: a running or queued job stops (its client is gone, as for a
/// dropped connection) and ends cancelled; a finished one is forgotten.
pub async fn delete_job(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let mut map = s.jobs.lock();
    let Some(j) = map.get_mut(&id) else {
        return ApiError::not_found(format!("no job {id}")).into_response();
    };
    if j.status.state.finished() {
        map.remove(&id);
        return Json(json!({ "id": id, "state": "deleted" })).into_response();
    }
    if let Some(t) = j.task.take() {
        t.abort();
    }
    j.status.state = JobState::Cancelled;
    j.status.finished = Some(sumi_broker::now());
    j.result = Some(JobResult {
        status: 499,
        body: json!({ "error": "Cancelled", "detail": "cancelled by a client" }),
    });
    Json(json!({ "id": id, "state": "cancelled" })).into_response()
}
