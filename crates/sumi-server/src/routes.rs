//! The router: `/sdapi/v1/*` (A1111's API), `/` (the web page), `/health`, `/ready`, `/metrics`;
//! the generation handlers that queue jobs and the small POST endpoints (interrupt, skip,
//! options, png-info, refresh).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use crate::body::{json_object, read_body};
use crate::convert::{prepare, CheckpointSwitch, Prepared};
use crate::error::ApiError;
use crate::images::{decode_base64, encode_base64};
use crate::models::{echo, Endpoint, GenerationFields};
use crate::options::GenOptions;
use crate::queue::{Job, Outcome, PushError, Task};
use crate::{auth, listing, worker, AppState};

/// Every route, behind the cross-site guard ([`crate::guard`]), with authentication when
/// configured.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/txt2img", post(txt2img))
        .route("/img2img", post(img2img))
        .route("/png-info", post(png_info))
        .route("/interrupt", post(interrupt))
        .route("/skip", post(skip))
        .route("/options", get(get_options).post(set_options))
        .route("/refresh-checkpoints", post(refresh))
        .route("/refresh-vae", post(refresh))
        .route("/refresh-embeddings", post(refresh))
        .route("/refresh-loras", post(crate::loras::refresh_loras))
        .route("/progress", get(progress))
        .route("/sd-models", get(listing::sd_models))
        .route("/samplers", get(listing::samplers))
        .route("/schedulers", get(listing::schedulers))
        .route("/sd-vae", get(listing::sd_vae))
        .route("/embeddings", get(listing::embeddings))
        .route("/loras", get(crate::loras::loras))
        .route("/upscalers", get(crate::extras::upscalers))
        .route("/realesrgan-models", get(crate::extras::realesrgan_models))
        .route(
            "/extra-single-image",
            post(crate::extras::extra_single_image),
        )
        .route(
            "/extra-batch-images",
            post(crate::extras::extra_batch_images),
        )
        .route("/latent-upscale-modes", get(listing::latent_upscale_modes))
        .route("/scripts", get(listing::scripts))
        // no selectable script has arguments to describe yet
        .route("/script-info", get(listing::empty_list))
        // A1111 lists only extensions installed from a git remote: none here
        .route("/extensions", get(listing::empty_list))
        .route("/prompt-styles", get(listing::empty_list))
        .route("/hypernetworks", get(crate::hypernetworks::hypernetworks))
        // Sumi has no face restorers (asking for one is a 422): the list is empty
        .route("/face-restorers", get(listing::empty_list))
        .route("/memory", get(listing::memory))
        .route("/cmd-flags", get(listing::cmd_flags));
    Router::new()
        .nest("/sdapi/v1", api)
        .merge(crate::page::router())
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/sumi/v1/jobs", post(crate::jobs::create))
        .route(
            "/sumi/v1/jobs/{id}",
            get(crate::jobs::get_job).delete(crate::jobs::delete_job),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::guard::check,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        // outermost, so that a request the guard or the authentication refuses has its line
        .layer(axum::middleware::from_fn(crate::access_log::log))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("Not Found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "Method Not Allowed",
    )
}

/// The generation worker has ended (it should not: a failing job fails alone).
const WORKER_GONE: &str = "the generation worker stopped";

async fn health(State(s): State<Arc<AppState>>) -> Response {
    if !s.worker_alive.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "error", "detail": WORKER_GONE })),
        )
            .into_response();
    }
    Json(json!({ "status": "ok" })).into_response()
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    if !s.worker_alive.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "detail": WORKER_GONE })),
        )
            .into_response();
    }
    if s.draining.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "detail": "shutting down" })),
        )
            .into_response();
    }
    Json(json!({ "ready": true })).into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let text = s.metrics.render(
        s.queue.depth(),
        s.running.load(Ordering::SeqCst),
        !s.draining.load(Ordering::SeqCst) && s.worker_alive.load(Ordering::SeqCst),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Marks a job cancelled when the handler is dropped before its answer came (client gone).
struct CancelOnDrop(Option<Arc<AtomicBool>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.store(true, Ordering::SeqCst);
        }
    }
}

/// Queues `task` and waits for its outcome; a dropped wait cancels the job.
pub(crate) async fn submit(s: &AppState, task: Task, control: bool) -> Result<Outcome, ApiError> {
    if !s.worker_alive.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable(WORKER_GONE));
    }
    let (tx, rx) = oneshot::channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let job = Job {
        id: s.next_id.fetch_add(1, Ordering::SeqCst),
        cancel: cancel.clone(),
        task,
        reply: tx,
    };
    let pushed = if control {
        s.queue.push_control(job)
    } else {
        s.queue.push(job)
    };
    match pushed {
        Ok(dropped) => {
            for _ in 0..dropped {
                s.metrics.job(crate::metrics::JobOutcome::Cancelled, 0.0);
            }
        }
        Err((_, PushError::Full)) => {
            s.metrics.rejected("queue_full");
            return Err(ApiError::queue_full(s.queue.capacity()));
        }
        Err((_, PushError::Closed)) => {
            s.metrics.rejected("shutting_down");
            return Err(ApiError::unavailable("the server is shutting down"));
        }
    }
    let mut guard = CancelOnDrop(Some(cancel));
    let outcome = rx
        .await
        .map_err(|_| ApiError::internal("the worker stopped"))?;
    guard.0 = None;
    Ok(outcome)
}

async fn txt2img(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    generate(s, Endpoint::Txt2Img, headers, body)
        .await
        .into_response()
}

async fn img2img(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    generate(s, Endpoint::Img2Img, headers, body)
        .await
        .into_response()
}

/// Parses the fields with the failing field named in the error.
fn fields(sent: &Map<String, Value>) -> Result<GenerationFields, ApiError> {
    let v = Value::Object(sent.clone());
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid(format!("{path}: {}", e.inner()))
    })
}

async fn generate(
    s: Arc<AppState>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    if s.draining.load(Ordering::SeqCst) {
        s.metrics.rejected("shutting_down");
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let bytes = read_body(&headers, body, s.config.body_limit, s.timeouts.body).await?;
    let mut sent = json_object(&bytes)?;
    drop(bytes);
    crate::infotext_fill::apply(endpoint, &mut sent);
    let f = fields(&sent)?;
    let opts = GenOptions::read(&s.options_lock(), f.override_settings.as_ref())?;
    let warnings = crate::unapplied::warnings(endpoint, &sent, &s.options_lock());
    let model_hash = infotext_model_hash(&sent);
    let s2 = s.clone();
    let prepared: Prepared = tokio::task::spawn_blocking(move || {
        let mut p = prepare(endpoint, &f, &opts)?;
        p.checkpoint = model_override(&s2, &f);
        p.warnings = warnings;
        crate::stages::resolve(&s2, &f, &mut p.request, &mut p.warnings)?;
        p.request.model_hash = model_hash;
        Ok::<_, ApiError>(p)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let params = echo(endpoint, &sent);
    // a waiting job holds its image files once (in `prepared`), not the request's text too
    drop(sent);
    match submit(&s, Task::Generate(Box::new(prepared)), false).await? {
        Outcome::Generated(Ok(out)) => Ok(Json(json!({
            "images": out.images,
            "parameters": params,
            "info": out.info,
        }))),
        Outcome::Generated(Err(e)) if e.invalid => Err(ApiError::invalid(e.message)),
        Outcome::Generated(Err(e)) => Err(ApiError::internal(format!(
            "generation failed: {}",
            e.message
        ))),
        Outcome::Cancelled(why) => Err(ApiError::unavailable(why)),
        Outcome::Refused(e) => Err(e),
        Outcome::Loaded(_) | Outcome::Ran => Err(ApiError::internal("unexpected worker answer")),
    }
}

/// The `Model hash` of a request's `infotext` (the checkpoint is not switched to; another one's
/// hash is named in a warning).
fn infotext_model_hash(sent: &Map<String, Value>) -> Option<String> {
    let text = sent.get("infotext")?.as_str()?;
    let p = sumi_pipeline::infotext::parse_generation_parameters(text);
    p.get("Model hash").map(str::to_string)
}

/// A request's `override_settings.sd_model_checkpoint`: the checkpoint to run it on when it
/// names another known one (an unknown name is ignored, as A1111 does).
fn model_override(s: &AppState, f: &GenerationFields) -> Option<CheckpointSwitch> {
    let wanted = f
        .override_settings
        .as_ref()
        .and_then(|o| o.get("sd_model_checkpoint"))
        .and_then(Value::as_str)?;
    let current = s.current_model();
    let entry = s
        .checkpoints
        .list(&[&s.config.model, &current])
        .into_iter()
        .find(|e| e.matches(wanted))?;
    (entry.path != current).then(|| CheckpointSwitch {
        path: entry.path,
        restore: f.override_settings_restore_afterwards.unwrap_or(true),
    })
}

async fn interrupt(State(s): State<Arc<AppState>>) -> Json<Value> {
    if s.running.load(Ordering::SeqCst) {
        s.control.store(worker::INTERRUPT, Ordering::SeqCst);
        s.progress_lock().interrupted = true;
    }
    Json(Value::Null)
}

async fn skip(State(s): State<Arc<AppState>>) -> Json<Value> {
    if s.running.load(Ordering::SeqCst) {
        s.control
            .compare_exchange(
                worker::RUN,
                worker::SKIP,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .ok();
        s.progress_lock().skipped = true;
    }
    Json(Value::Null)
}

async fn refresh() -> Json<Value> {
    Json(Value::Null)
}

#[derive(serde::Deserialize)]
struct ProgressQuery {
    #[serde(default)]
    skip_current_image: Option<String>,
}

async fn progress(
    State(s): State<Arc<AppState>>,
    Query(q): Query<ProgressQuery>,
) -> Result<Json<Value>, ApiError> {
    let skip_image = q
        .skip_current_image
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
    let (progress, eta, state, textinfo, latent, version, cached) = {
        let p = s.progress_lock();
        let (progress, eta) = p.progress();
        (
            progress,
            eta,
            p.state_json(),
            p.textinfo(),
            p.latent.clone(),
            p.version,
            p.preview.clone(),
        )
    };
    let current_image = match (skip_image, latent) {
        (false, Some(latent)) => match cached {
            Some((v, img)) if v == version => Some(img),
            _ => {
                let img = tokio::task::spawn_blocking(move || {
                    let im = latent.render().ok()?;
                    let png = sumi_pipeline::png::encode_png(&im, None).ok()?;
                    Some(encode_base64(&png))
                })
                .await
                .ok()
                .flatten();
                if let Some(i) = &img {
                    let mut p = s.progress_lock();
                    if p.version == version {
                        p.preview = Some((version, i.clone()));
                    }
                }
                img
            }
        },
        _ => None,
    };
    Ok(Json(json!({
        "progress": progress,
        "eta_relative": eta,
        "state": state,
        "current_image": current_image,
        "textinfo": textinfo,
    })))
}

async fn get_options(State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let s2 = s.clone();
    let entry = tokio::task::spawn_blocking(move || s2.checkpoints.entry(&s2.current_model()))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut opts = s.options_lock().clone();
    opts.insert("sd_model_checkpoint".into(), json!(entry.title()));
    opts.insert("sd_checkpoint_hash".into(), json!(entry.sha256));
    Ok(Json(Value::Object(opts)))
}

async fn set_options(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = read_body(&headers, body, s.config.body_limit, s.timeouts.body).await?;
    let mut sent = crate::options::check_new(json_object(&bytes)?)?;
    // check the settings Sumi reads before keeping any
    let mut merged = s.options_lock().clone();
    merged.extend(sent.clone());
    GenOptions::read(&merged, None)?;
    crate::options::upscaler_tiles(&merged, None)?;
    if let Some(v) = sent.remove("sd_model_checkpoint") {
        let wanted = v
            .as_str()
            .ok_or_else(|| ApiError::invalid("sd_model_checkpoint: expected a string"))?
            .to_string();
        switch_model(&s, &wanted).await?;
    }
    sent.remove("sd_checkpoint_hash");
    s.options_lock().extend(sent);
    Ok(Json(Value::Null))
}

/// Makes the checkpoint named `wanted` current (a job on the worker, after the queued ones).
async fn switch_model(s: &Arc<AppState>, wanted: &str) -> Result<(), ApiError> {
    let s2 = s.clone();
    let list = tokio::task::spawn_blocking(move || {
        let current = s2.current_model();
        s2.checkpoints.list(&[&s2.config.model, &current])
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let entry = list
        .into_iter()
        .find(|e| e.matches(wanted))
        .ok_or_else(|| {
            ApiError::not_found(format!("sd_model_checkpoint: model '{wanted}' not found"))
        })?;
    if entry.path == s.current_model() {
        return Ok(());
    }
    if s.draining.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    match submit(s, Task::Load(entry.path.clone()), true).await? {
        Outcome::Loaded(Ok(())) => Ok(()),
        Outcome::Loaded(Err(e)) => Err(ApiError::internal(format!(
            "cannot load {}: {e}",
            entry.name
        ))),
        Outcome::Cancelled(why) => Err(ApiError::unavailable(why)),
        Outcome::Generated(_) | Outcome::Refused(_) | Outcome::Ran => {
            Err(ApiError::internal("unexpected worker answer"))
        }
    }
}

async fn png_info(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = read_body(&headers, body, s.config.body_limit, s.timeouts.body).await?;
    let sent = json_object(&bytes)?;
    let image = match sent.get("image") {
        Some(Value::String(t)) => t.clone(),
        _ => return Err(ApiError::invalid("image: a base64 image is required")),
    };
    let raw = decode_base64("image", &image)?;
    let chunks = if raw.starts_with(&[0x89, b'P', b'N', b'G']) {
        sumi_pipeline::png::text_chunks(&raw)
            .map_err(|e| ApiError::bad_request(format!("image: {e}")))?
    } else {
        image::guess_format(&raw)
            .map_err(|_| ApiError::bad_request("image: not a readable image"))?;
        Vec::new()
    };
    let mut items = Map::new();
    for (k, v) in chunks {
        if k != sumi_pipeline::png::PARAMETERS_KEY {
            items.insert(k, json!(v));
        }
    }
    // A1111's read_info_from_image: the PNG text, or the EXIF UserComment of a JPEG/WebP (or
    // PNG eXIf), or a JPEG comment; other formats carry none
    let info = match image::guess_format(&raw) {
        Ok(image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::WebP) => {
            sumi_pipeline::image_file::parameters_from_bytes(&raw)
                .map_err(|e| ApiError::bad_request(format!("image: {e}")))?
                .unwrap_or_default()
        }
        _ => String::new(),
    };
    let parsed = sumi_pipeline::infotext::parse_generation_parameters(&info).with_a1111_defaults();
    let parameters: Value = serde_json::from_str(&parsed.to_json()).unwrap_or(json!({}));
    Ok(Json(
        json!({ "info": info, "items": items, "parameters": parameters }),
    ))
}
