//! `sumi worker`: runs a broker's jobs for one checkpoint. The worker is the single-process
//! server without a listener ([`crate::start`]): each job's request goes through the same
//! router, queue, worker thread and pipeline as a synchronous request (so the same pixels and
//! answers), while a publisher copies the server's progress (throttled, previews included)
//! into the job's record and hands the job's interrupt/skip requests to the server's own
//! `/interrupt` and `/skip` within one step.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use sumi_broker::front::Control;
use sumi_broker::worker::{Delivery, Worker};
use sumi_broker::{JobState, ModelEntry, Progress, Settings};
use tower::ServiceExt;

use crate::images::encode_base64;
use crate::jobs::{run_route, warnings_of};
use crate::{AppState, Config, ServerError, Started, Timeouts};

/// How the worker talks to the broker.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// `redis://…`.
    pub url: String,
    /// This worker's name (unique among the workers; its consumer name).
    pub name: String,
    /// Timings and bounds.
    pub settings: Settings,
    /// How often progress is published while a job runs.
    pub progress_every: Duration,
    /// How often a new preview is rendered and published.
    pub preview_every: Duration,
}

impl WorkerOptions {
    /// Options for `url` with the default timings (progress every 100 ms, previews every
    /// second) and a name made of the host name and process id.
    pub fn new(url: String) -> Self {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty() && sumi_broker::check_id(h).is_ok())
            .unwrap_or_else(|| "worker".into());
        Self {
            url,
            name: format!("{host}-{}", std::process::id()),
            settings: Settings::default(),
            progress_every: Duration::from_millis(100),
            preview_every: Duration::from_secs(1),
        }
    }
}

fn broker_error(e: sumi_broker::BrokerError) -> ServerError {
    ServerError::Worker(e.to_string())
}

/// Loads `config.model`, announces it, and runs jobs until `shutdown` completes (the running
/// job is finished first).
pub async fn run(
    config: Config,
    opts: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let backend = crate::pipeline(&config).await?;
    let Started { state, app, .. } = crate::start(config, Timeouts::default(), backend).await?;
    let s2 = state.clone();
    // the latent space as the single server's listing reads it (`listing::sd_models`)
    let (entry, space) = tokio::task::spawn_blocking(move || {
        let entry = s2.checkpoints.entry(&s2.config.model);
        let space = sumi_pipeline::checkpoint_report::latent_space_of(&entry.path);
        (entry, space)
    })
    .await
    .map_err(|e| ServerError::Worker(e.to_string()))?;
    let (Some(hash), Some(sha256)) = (entry.short_hash().map(str::to_string), entry.sha256.clone())
    else {
        return Err(ServerError::Worker(format!(
            "{}: cannot hash the checkpoint",
            entry.path.display()
        )));
    };
    let model = ModelEntry {
        title: entry.title(),
        model_name: entry.model_name.clone(),
        hash,
        sha256,
        filename: entry.path.to_string_lossy().into_owned(),
        latent_space: space.map(|l| l.name().to_string()),
    };
    let worker = Arc::new(
        Worker::connect(&opts.url, &opts.name, model.clone(), opts.settings.clone())
            .await
            .map_err(broker_error)?,
    );
    eprintln!(
        "sumi worker {}: serving {} from {}",
        opts.name,
        model.title,
        sumi_broker::redact(&opts.url)
    );
    let current: Arc<Mutex<Option<Delivery>>> = Arc::default();
    let beat = tokio::spawn(heartbeat(
        worker.clone(),
        current.clone(),
        opts.settings.heartbeat,
    ));
    tokio::pin!(shutdown);
    loop {
        let next = tokio::select! {
            _ = &mut shutdown => break,
            n = worker.next(Duration::from_secs(1)) => n,
        };
        match next {
            Ok(Some(d)) => {
                *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(d.clone());
                let r = run_job(&state, &app, &worker, &d, &opts).await;
                *current.lock().unwrap_or_else(|e| e.into_inner()) = None;
                if let Err(e) = r {
                    eprintln!("sumi worker: job {}: {e}", d.id);
                }
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("sumi worker: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    beat.abort();
    let _ = worker.leave().await;
    Ok(())
}

async fn heartbeat(worker: Arc<Worker>, current: Arc<Mutex<Option<Delivery>>>, every: Duration) {
    loop {
        let running = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Err(e) = worker.heartbeat(running.as_ref()).await {
            eprintln!("sumi worker: heartbeat: {e}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs one delivered job through the server's router and stores its result.
async fn run_job(
    state: &Arc<AppState>,
    app: &Router,
    worker: &Arc<Worker>,
    d: &Delivery,
    opts: &WorkerOptions,
) -> sumi_broker::Result<()> {
    let t0 = Instant::now();
    let publisher = tokio::spawn(publish(
        state.clone(),
        app.clone(),
        worker.clone(),
        d.id.clone(),
        opts.progress_every,
        opts.preview_every,
    ));
    let result = run_route(app, d.endpoint, d.request.clone(), None).await;
    publisher.abort();
    let _ = publisher.await;
    let warnings = warnings_of(&result.body);
    let (job_state, error) = if result.status < 500 {
        (JobState::Done, String::new())
    } else {
        let detail = result
            .body
            .get("detail")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        (
            JobState::Failed,
            format!("HTTP {}: {detail}", result.status),
        )
    };
    let stored = worker
        .complete(d, &result, job_state, &warnings, &error)
        .await?;
    eprintln!(
        "sumi worker: job {} {} ({}) in {:.3} s{}",
        d.id,
        job_state.name(),
        result.status,
        t0.elapsed().as_secs_f64(),
        if stored {
            ""
        } else {
            ", discarded (it had a result)"
        }
    );
    Ok(())
}

/// Copies the server's progress into job `id`'s record (when it changed), a preview at most
/// every `preview_every`, and passes the job's control requests on.
async fn publish(
    state: Arc<AppState>,
    app: Router,
    worker: Arc<Worker>,
    id: String,
    every: Duration,
    preview_every: Duration,
) {
    let mut last_version = u64::MAX;
    // the first preview after `preview_every`: a short job renders none
    let mut last_preview = Instant::now();
    let mut preview_version = 0u64;
    loop {
        match worker.control(&id).await {
            Ok(Some(c)) => {
                let path = match c {
                    Control::Interrupt => "/sdapi/v1/interrupt",
                    Control::Skip => "/sdapi/v1/skip",
                };
                if let Ok(req) = Request::post(path).body(Body::empty()) {
                    let _ = app.clone().oneshot(req).await;
                }
            }
            Ok(None) => {}
            Err(e) => eprintln!("sumi worker: job {id}: control: {e}"),
        }
        let (p, version, latent) = {
            let p = state.progress_lock();
            let (progress, eta) = p.progress();
            (
                Progress {
                    progress,
                    eta_relative: eta,
                    state: p.state_json(),
                    textinfo: p.textinfo(),
                    preview_version,
                },
                p.version,
                p.latent.clone(),
            )
        };
        if version != last_version {
            last_version = version;
            let due = last_preview.elapsed() >= preview_every;
            let preview = match latent.filter(|_| due) {
                Some(l) => tokio::task::spawn_blocking(move || {
                    let im = l.render().ok()?;
                    let png = sumi_pipeline::png::encode_png(&im, None).ok()?;
                    Some(encode_base64(&png))
                })
                .await
                .ok()
                .flatten(),
                None => None,
            };
            let mut p = p;
            if preview.is_some() {
                last_preview = Instant::now();
                preview_version += 1;
                p.preview_version = preview_version;
            }
            if let Err(e) = worker.progress(&id, &p, preview.as_deref()).await {
                eprintln!("sumi worker: job {id}: progress: {e}");
            }
        }
        tokio::time::sleep(every).await;
    }
}
