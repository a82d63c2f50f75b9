//! `sumi serve --broker URL`: an API front with no model. The generation routes
//! (`/sdapi/v1/txt2img`, `img2img`, `extra-single-image`) and the async job API queue their
//! request on the checkpoint's stream ([`sumi_broker::front::Front`]) and answer with what the
//! worker's server answered; progress (`/sdapi/v1/progress`, A1111's `/internal/progress` with
//! `id_task`), `/interrupt` and `/skip` reach the job's worker through its record. The models
//! listed are those workers announced; a job for another is refused 404 before it is queued,
//! a full stream 429 with `Retry-After`.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sumi_broker::front::{Control, Enqueued, Front};
use sumi_broker::{Endpoint, JobResult, JobState, ModelEntry, Settings};

use crate::body::{json_object, read_body};
use crate::error::ApiError;
use crate::jobs::{accepted, parse_job_request, status_json, task_id};
use crate::{ServerError, Timeouts};

/// How to run a front.
#[derive(Clone)]
pub struct FrontConfig {
    /// `redis://…`.
    pub url: String,
    /// Timings and bounds (`--queue`, `--result-ttl`, `--max-attempts`, `--job-timeout`).
    pub settings: Settings,
    /// HTTP basic credentials `(user, password)` required on every route but `/health`.
    pub auth: Option<(String, String)>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// The address listened on (for the cross-site guard, [`crate::guard`]).
    pub host: String,
    /// Origins whose pages may call the API (`--cors-allow-origins`).
    pub cors_allow_origins: Vec<String>,
    /// How long clients may take to send requests.
    pub timeouts: Timeouts,
    /// Called with the listening address once requests are served.
    pub on_ready: Option<Arc<dyn Fn(std::net::SocketAddr) + Send + Sync>>,
}

/// The most open jobs a front remembers for progress, interrupt and skip.
const OPEN_LIMIT: usize = 4096;

struct FrontState {
    front: Arc<Front>,
    config: FrontConfig,
    /// Jobs this front queued that have not ended, oldest first (what progress, interrupt
    /// and skip without a job id refer to).
    open: Mutex<BTreeSet<(u64, String)>>,
    seq: std::sync::atomic::AtomicU64,
    /// The checkpoint jobs run on unless they name one (`/sdapi/v1/options`).
    default_model: Mutex<Option<String>>,
}

impl FrontState {
    fn open(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, String)>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn broker(e: sumi_broker::BrokerError) -> ApiError {
    match e {
        sumi_broker::BrokerError::BadId(_) => ApiError::invalid(e.to_string()),
        e => ApiError::unavailable(format!("the job broker: {e}")),
    }
}

/// Connects to the broker and serves the front on `listener` until `shutdown` completes.
pub async fn serve(
    config: FrontConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let front = Front::connect(&config.url, config.settings.clone())
        .await
        .map_err(|e| ServerError::Worker(e.to_string()))?;
    let state = Arc::new(FrontState {
        front,
        config: config.clone(),
        open: Mutex::default(),
        seq: Default::default(),
        default_model: Mutex::default(),
    });
    if let (Some(f), Ok(addr)) = (&config.on_ready, listener.local_addr()) {
        f(addr);
    }
    crate::conn::serve_connections(listener, router(state), config.timeouts.header, shutdown).await;
    Ok(())
}

fn router(state: Arc<FrontState>) -> Router {
    let api = Router::new()
        .route("/txt2img", post(txt2img))
        .route("/img2img", post(img2img))
        .route("/extra-single-image", post(extra_single_image))
        .route("/progress", get(progress))
        .route("/interrupt", post(interrupt))
        .route("/skip", post(skip))
        .route("/sd-models", get(sd_models))
        .route("/options", get(get_options).post(set_options))
        // the listings that need no model, as the single-process server gives them
        .route("/samplers", get(crate::listing::samplers))
        .route("/schedulers", get(crate::listing::schedulers))
        .route("/scripts", get(crate::listing::scripts))
        .route(
            "/latent-upscale-modes",
            get(crate::listing::latent_upscale_modes),
        )
        .route("/script-info", get(crate::listing::empty_list))
        .route("/extensions", get(crate::listing::empty_list))
        .route("/prompt-styles", get(crate::listing::empty_list))
        .route("/face-restorers", get(crate::listing::empty_list));
    Router::new()
        .nest("/sdapi/v1", api)
        .route("/internal/progress", post(internal_progress))
        .route("/sumi/v1/jobs", post(create_job))
        .route("/sumi/v1/jobs/{id}", get(get_job).delete(delete_job))
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("Not Found") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_auth,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(crate::access_log::log))
        .with_state(state)
}

/// The single-process server's cross-site guard ([`crate::guard`]).
async fn guard(State(s): State<Arc<FrontState>>, req: Request, next: Next) -> Response {
    crate::guard::check_with(&s.config.host, &s.config.cors_allow_origins, req, next).await
}

async fn require_auth(State(s): State<Arc<FrontState>>, req: Request, next: Next) -> Response {
    match crate::auth::refusal(s.config.auth.as_ref(), &req) {
        Some(r) => r,
        None => next.run(req).await,
    }
}

/// The checkpoint a request runs on: `override_settings.sd_model_checkpoint`, else the front's
/// default, else the first announced; 404 when it is not announced.
async fn pick_model(s: &FrontState, payload: &Map<String, Value>) -> Result<ModelEntry, ApiError> {
    let models = s.front.models(false).await.map_err(broker)?;
    let wanted = payload
        .get("override_settings")
        .and_then(|o| o.get("sd_model_checkpoint"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            s.default_model
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        });
    let pick = |models: Vec<ModelEntry>| match &wanted {
        Some(w) => models.into_iter().find(|m| m.matches(w)),
        None => models.into_iter().next(),
    };
    if let Some(m) = pick(models) {
        return Ok(m);
    }
    // announced within the last second?
    let models = s.front.models(true).await.map_err(broker)?;
    pick(models).ok_or_else(|| match &wanted {
        Some(w) => ApiError::not_found(format!(
            "sd_model_checkpoint: model '{w}' not found: no worker has announced it"
        )),
        None => ApiError::not_found("no worker has announced a checkpoint"),
    })
}

/// Queues a job; its id comes back, tracked as open.
async fn enqueue(
    s: &FrontState,
    endpoint: Endpoint,
    id: &str,
    payload: Map<String, Value>,
) -> Result<u64, ApiError> {
    let model = pick_model(s, &payload).await?;
    let text = serde_json::to_string(&Value::Object(payload))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    match s
        .front
        .enqueue(id, endpoint, &model.hash, &text)
        .await
        .map_err(broker)?
    {
        Enqueued::Queued => {}
        Enqueued::Full => return Err(ApiError::queue_full(s.config.settings.queue)),
        Enqueued::Exists => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!("force_task_id: a job {id} exists"),
            ))
        }
    }
    let n = s.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut open = s.open();
    open.insert((n, id.to_string()));
    // ids whose clients left unanswered are forgotten, the oldest first
    while open.len() > OPEN_LIMIT {
        open.pop_first();
    }
    Ok(n)
}

async fn read_payload(
    s: &FrontState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Map<String, Value>, ApiError> {
    let bytes = read_body(headers, body, s.config.body_limit, s.config.timeouts.body).await?;
    json_object(&bytes)
}

async fn sync_job(
    s: Arc<FrontState>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let payload = read_payload(&s, &headers, body).await?;
        let id = task_id(&payload)?;
        let n = enqueue(&s, endpoint, &id, payload).await?;
        let r = s.front.wait(&id).await;
        s.open().remove(&(n, id.clone()));
        r.map_err(broker)
    }
    .await;
    match r {
        Ok(JobResult { status, body }) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, Json(body)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn txt2img(State(s): State<Arc<FrontState>>, headers: HeaderMap, body: Body) -> Response {
    sync_job(s, Endpoint::Txt2img, headers, body).await
}

async fn img2img(State(s): State<Arc<FrontState>>, headers: HeaderMap, body: Body) -> Response {
    sync_job(s, Endpoint::Img2img, headers, body).await
}

async fn extra_single_image(
    State(s): State<Arc<FrontState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    sync_job(s, Endpoint::ExtraSingleImage, headers, body).await
}

/// The open jobs' ids, oldest first; those that ended are forgotten.
async fn running_ids(s: &FrontState) -> Vec<String> {
    let open: Vec<(u64, String)> = s.open().iter().cloned().collect();
    let mut out = Vec::new();
    for (n, id) in open {
        match s.front.status(&id).await {
            Ok(Some(st)) if !st.state.finished() => out.push(id),
            Ok(_) => {
                s.open().remove(&(n, id));
            }
            Err(_) => {}
        }
    }
    out
}

#[derive(serde::Deserialize)]
struct ProgressQuery {
    #[serde(default)]
    skip_current_image: Option<String>,
}

/// `GET /sdapi/v1/progress`: the oldest running job this front queued (A1111 has one).
async fn progress(
    State(s): State<Arc<FrontState>>,
    Query(q): Query<ProgressQuery>,
) -> Result<Json<Value>, ApiError> {
    let skip_image = q
        .skip_current_image
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
    for id in running_ids(&s).await {
        let Some(st) = s.front.status(&id).await.map_err(broker)? else {
            continue;
        };
        if st.state != JobState::Running {
            continue;
        }
        let p = st.progress.unwrap_or_default();
        let image = if skip_image {
            None
        } else {
            s.front.preview(&id).await.map_err(broker)?
        };
        return Ok(Json(json!({
            "progress": p.progress,
            "eta_relative": p.eta_relative,
            "state": p.state,
            "current_image": image,
            "textinfo": p.textinfo,
        })));
    }
    let idle = crate::progress::ProgressState::default();
    Ok(Json(json!({
        "progress": 0.0,
        "eta_relative": 0.0,
        "state": idle.state_json(),
        "current_image": null,
        "textinfo": null,
    })))
}

/// `POST /internal/progress` `{id_task, id_live_preview, live_preview}`: A1111's
/// `ProgressResponse` for that job.
async fn internal_progress(
    State(s): State<Arc<FrontState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let sent = read_payload(&s, &headers, body).await?;
    let id = match sent.get("id_task") {
        Some(Value::String(id)) => id.clone(),
        _ => return Err(ApiError::invalid("id_task: field required (a string)")),
    };
    let since = sent
        .get("id_live_preview")
        .and_then(Value::as_i64)
        .unwrap_or(-1);
    let want_preview = sent
        .get("live_preview")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let st = s.front.status(&id).await.map_err(broker)?;
    let Some(st) = st else {
        return Ok(Json(json!({
            "active": false, "queued": false, "completed": false, "progress": null, "eta": null,
            "live_preview": null, "id_live_preview": -1, "textinfo": "Waiting...",
        })));
    };
    let p = st.progress.clone().unwrap_or_default();
    let active = st.state == JobState::Running;
    let version = i64::try_from(p.preview_version).unwrap_or(i64::MAX);
    let live = if active && want_preview && version > since && version > 0 {
        s.front
            .preview(&id)
            .await
            .map_err(broker)?
            .map(|b| format!("data:image/png;base64,{b}"))
    } else {
        None
    };
    Ok(Json(json!({
        "active": active,
        "queued": st.state == JobState::Queued,
        "completed": st.state.finished(),
        "progress": active.then_some(p.progress),
        "eta": active.then_some(p.eta_relative),
        "live_preview": live,
        "id_live_preview": if live.is_some() { version } else { since },
        "textinfo": match st.state {
            JobState::Queued => Some("In queue...".to_string()),
            JobState::Running => p.textinfo.or(Some("Waiting...".into())),
            _ => None,
        },
    })))
}

async fn control_all(s: &FrontState, what: Control) -> Result<Json<Value>, ApiError> {
    for id in running_ids(s).await {
        s.front.control(&id, what).await.map_err(broker)?;
    }
    Ok(Json(Value::Null))
}

/// `POST /sdapi/v1/interrupt`: every job this front queued that runs now.
async fn interrupt(State(s): State<Arc<FrontState>>) -> Result<Json<Value>, ApiError> {
    control_all(&s, Control::Interrupt).await
}

/// `POST /sdapi/v1/skip`.
async fn skip(State(s): State<Arc<FrontState>>) -> Result<Json<Value>, ApiError> {
    control_all(&s, Control::Skip).await
}

/// `GET /sdapi/v1/sd-models`: the announced checkpoints, as the single server lists them.
async fn sd_models(State(s): State<Arc<FrontState>>) -> Result<Json<Value>, ApiError> {
    let models = s.front.models(true).await.map_err(broker)?;
    Ok(Json(Value::Array(models.iter().map(model_json).collect())))
}

/// An announced checkpoint in the listing: A1111's fields and Sumi's `latent_space` (the
/// worker's reading; a value that is not a latent space Sumi names is listed as null).
fn model_json(m: &ModelEntry) -> Value {
    use sumi_pipeline::preview::LatentSpace;
    let known = [LatentSpace::Sd.name(), LatentSpace::Sdxl.name()];
    let space = m.latent_space.as_deref().filter(|l| known.contains(l));
    json!({
        "title": m.title, "model_name": m.model_name, "hash": m.hash,
        "sha256": m.sha256, "filename": m.filename, "config": null,
        "latent_space": space,
    })
}

async fn get_options(State(s): State<Arc<FrontState>>) -> Result<Json<Value>, ApiError> {
    let current = pick_model(&s, &Map::new()).await.ok();
    Ok(Json(json!({
        "sd_model_checkpoint": current.as_ref().map(|m| m.title.clone()),
        "sd_checkpoint_hash": current.map(|m| m.sha256),
    })))
}

/// `POST /sdapi/v1/options`: only `sd_model_checkpoint` (an announced one) is kept.
async fn set_options(
    State(s): State<Arc<FrontState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let sent = read_payload(&s, &headers, body).await?;
    if let Some(v) = sent.get("sd_model_checkpoint") {
        let wanted = v
            .as_str()
            .ok_or_else(|| ApiError::invalid("sd_model_checkpoint: expected a string"))?;
        let mut probe = Map::new();
        probe.insert(
            "override_settings".into(),
            json!({ "sd_model_checkpoint": wanted }),
        );
        let m = pick_model(&s, &probe).await?;
        *s.default_model.lock().unwrap_or_else(|e| e.into_inner()) = Some(m.title);
    }
    Ok(Json(Value::Null))
}

/// `POST /sumi/v1/jobs`.
async fn create_job(
    State(s): State<Arc<FrontState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&headers, body, s.config.body_limit, s.config.timeouts.body).await?;
    let job = parse_job_request(&bytes)?;
    drop(bytes);
    enqueue(&s, job.endpoint, &job.id, job.payload).await?;
    Ok(accepted(&job.id))
}

/// `GET /sumi/v1/jobs/{id}`.
async fn get_job(
    State(s): State<Arc<FrontState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.front.check_timeout(&id).await.map_err(broker)?;
    let st = s
        .front
        .status(&id)
        .await
        .map_err(broker)?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    let result = if st.state.finished() {
        s.front.result(&id).await.map_err(broker)?
    } else {
        None
    };
    let progress = st
        .progress
        .as_ref()
        .filter(|_| st.state == JobState::Running)
        .map(|p| {
            json!({ "progress": p.progress, "eta_relative": p.eta_relative, "state": p.state,
                    "textinfo": p.textinfo })
        });
    Ok(Json(status_json(&st, result.as_ref(), progress)))
}

/// `DELETE /sumi/v1/jobs/{id}`.
async fn delete_job(
    State(s): State<Arc<FrontState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if s.front.status(&id).await.map_err(broker)?.is_none() {
        return Err(ApiError::not_found(format!("no job {id}")));
    }
    let cancelled = s.front.cancel(&id).await.map_err(broker)?;
    Ok(Json(json!({
        "id": id,
        "state": if cancelled { "cancelled" } else { "finished" },
    })))
}

/// `GET /metrics` (Prometheus text): per announced checkpoint the jobs queued or running, those
/// delivered to a worker, and its live workers; finished jobs by state and claims of dead
/// workers' jobs, counted by every front and worker together.
async fn metrics(State(s): State<Arc<FrontState>>) -> Result<Response, ApiError> {
    use std::fmt::Write;
    let models = s.front.models(true).await.map_err(broker)?;
    let live = s.front.live_workers().await.map_err(broker)?;
    let mut out = String::new();
    let mut section = |name: &str, help: &str, kind: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    section(
        "sumi_broker_jobs_open",
        "Jobs queued or running, per checkpoint.",
        "gauge",
    );
    let mut lines = String::new();
    for m in &models {
        let depth = s.front.depth(&m.hash).await.map_err(broker)?;
        let pending = s.front.pending(&m.hash).await.map_err(broker)?;
        let workers = live.iter().filter(|w| w.model == m.hash).count();
        let _ = writeln!(
            lines,
            "sumi_broker_jobs_open{{model=\"{}\"}} {depth}",
            m.hash
        );
        let _ = writeln!(
            lines,
            "sumi_broker_jobs_pending{{model=\"{}\"}} {pending}",
            m.hash
        );
        let _ = writeln!(
            lines,
            "sumi_broker_live_workers{{model=\"{}\"}} {workers}",
            m.hash
        );
    }
    out.push_str(&lines);
    let stats = s.front.stats().await.map_err(broker)?;
    for (k, n) in stats {
        match k.strip_prefix("jobs_") {
            Some(state) => {
                let _ = writeln!(out, "sumi_broker_jobs_total{{state=\"{state}\"}} {n}");
            }
            None if k == "claims" => {
                let _ = writeln!(out, "sumi_broker_claims_total {n}");
            }
            None => {}
        }
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response())
}

/// `GET /ready`: Redis answers and a worker has announced a checkpoint.
async fn ready(State(s): State<Arc<FrontState>>) -> Response {
    match s.front.models(false).await {
        Ok(m) if !m.is_empty() => Json(json!({ "ready": true })).into_response(),
        Ok(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "detail": "no worker has announced a checkpoint" })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "detail": format!("the job broker: {e}") })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::{model_json, ModelEntry};

    #[test]
    fn the_listing_carries_the_workers_latent_space() {
        let entry = |space: Option<&str>| ModelEntry {
            title: "xl.safetensors [0123456789]".into(),
            model_name: "xl".into(),
            hash: "0123456789".into(),
            sha256: "ab".into(),
            filename: "/m/xl.safetensors".into(),
            latent_space: space.map(str::to_string),
        };
        let v = model_json(&entry(Some("sdxl")));
        assert_eq!(v["latent_space"], "sdxl");
        assert_eq!(v["model_name"], "xl");
        assert_eq!(model_json(&entry(Some("sd")))["latent_space"], "sd");
        // not said, or not a name Sumi gives: null, as the single server lists an unknown one
        for space in [None, Some("flux"), Some("")] {
            let v = model_json(&entry(space));
            assert!(v["latent_space"].is_null(), "{space:?}: {v}");
            assert!(v.as_object().unwrap().contains_key("latent_space"));
        }
    }
}
