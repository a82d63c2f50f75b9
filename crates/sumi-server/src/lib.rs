//! `sumi-server`: the A1111-compatible HTTP API (`/sdapi/v1/*`), thin over `sumi-pipeline`.
//!
//! One worker thread owns the loaded model behind a bounded [`queue::Queue`]; handlers parse
//! A1111's request models ([`models`]), check them ([`convert`]), queue a job and await its
//! answer. Progress, interrupt and skip go through shared state read at every sampler step.
//! [`serve`] runs it all on a listener until a shutdown future fires, then drains the running
//! job, answers the queued ones 503 and returns. The worker reaches the model through the
//! [`backend::Backend`] trait: [`serve`] uses `sumi_pipeline` ([`pipeline_backend`]);
//! [`serve_with`] takes any backend (the tests' fake one). Connections are closed when a
//! request's header does not arrive within [`Timeouts::header`] (idle connections too), and a
//! request whose body does not arrive within [`Timeouts::body`] is answered 408.

pub mod access_log;
pub mod auth;
pub mod backend;
pub mod body;
pub mod broker_front;
pub mod broker_worker;
pub mod checkpoints;
pub mod conn;
pub mod convert;
pub mod error;
pub mod extras;
pub mod guard;
pub mod hypernetworks;
pub mod images;
pub mod info;
pub mod infotext_fill;
pub mod jobs;
pub mod lax;
pub mod listing;
pub mod loras;
pub mod metrics;
pub mod models;
pub mod options;
pub mod page;
pub mod pipeline_backend;
pub mod progress;
pub mod queue;
pub mod routes;
pub mod scripts;
pub mod stages;
pub mod unapplied;
pub mod worker;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value};
use sumi_pipeline::LoadOptions;

use backend::{Backend, Embeddings};

pub use error::{ApiError, ServerError};

/// The default request body limit: 50 MB.
pub const DEFAULT_BODY_LIMIT: usize = 50 * 1024 * 1024;

/// The default header read timeout: 30 s (A1111's `--timeout-keep-alive` default, uvicorn's idle
/// keep-alive limit).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The default body read timeout: 120 s (a 50 MB body at 420 kB/s).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a client may take to send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A request's whole header, from the connection's start or the previous response (an idle
    /// kept-alive connection is closed after it); the connection is closed when it passes.
    pub header: Duration,
    /// A request's whole body, from the handler's first read; 408 when it passes.
    pub body: Duration,
}

impl Default for Timeouts {
    /// [`DEFAULT_HEADER_TIMEOUT`] and [`DEFAULT_BODY_TIMEOUT`].
    fn default() -> Self {
        Self {
            header: DEFAULT_HEADER_TIMEOUT,
            body: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// How to run the server.
#[derive(Clone)]
pub struct Config {
    /// The checkpoint loaded at start.
    pub model: PathBuf,
    /// A folder of checkpoints to list and switch between.
    pub models_dir: Option<PathBuf>,
    /// How to load checkpoints (embeddings, VAE, precision).
    pub load: LoadOptions,
    /// Jobs that may wait behind the running one.
    pub queue: usize,
    /// HTTP basic credentials `(user, password)` required on every route but `/health`, `/ready`.
    pub auth: Option<(String, String)>,
    /// A TAESD decoder for live previews (else A1111's cheap approximation).
    pub preview_decoder: Option<PathBuf>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// The host and port, as shown by `cmd-flags`.
    pub host: String,
    /// The port, as shown by `cmd-flags`.
    pub port: u16,
    /// Origins (`scheme://host[:port]`, lower case, or `*`) whose pages may call the API
    /// (`--cors-allow-origins`; see [`guard`]).
    pub cors_allow_origins: Vec<String>,
    /// Where a request's `save_images` keeps its pictures (numbered as the CLI numbers them;
    /// `--outdir`, default `outputs`).
    pub outdir: PathBuf,
    /// Called with the listening address once the model is loaded and requests are served.
    pub on_ready: Option<Arc<dyn Fn(std::net::SocketAddr) + Send + Sync>>,
}

impl Config {
    /// A configuration with the defaults (queue 16, 50 MB bodies, no auth) for `model`.
    pub fn new(model: PathBuf) -> Self {
        Self {
            model,
            models_dir: None,
            load: LoadOptions::default(),
            queue: 16,
            auth: None,
            preview_decoder: None,
            body_limit: DEFAULT_BODY_LIMIT,
            host: "127.0.0.1".into(),
            port: 7860,
            cors_allow_origins: Vec::new(),
            outdir: PathBuf::from("outputs"),
            on_ready: None,
        }
    }
}

/// What the handlers and the worker share.
pub struct AppState {
    /// The configuration.
    pub config: Config,
    /// How long clients may take to send requests.
    pub timeouts: Timeouts,
    /// The job queue.
    pub queue: queue::Queue,
    /// The running job's progress.
    pub progress: Mutex<progress::ProgressState>,
    /// Interrupt/skip requests ([`worker::RUN`], [`worker::SKIP`], [`worker::INTERRUPT`]).
    pub control: AtomicU8,
    /// The settings (`/sdapi/v1/options`).
    pub options: Mutex<Map<String, Value>>,
    /// The checkpoint listing.
    pub checkpoints: checkpoints::Checkpoints,
    /// The checkpoint loaded now.
    pub current: Mutex<PathBuf>,
    /// Counters.
    pub metrics: metrics::Metrics,
    /// Shutting down: new jobs are refused.
    pub draining: AtomicBool,
    /// The worker is busy.
    pub running: AtomicBool,
    /// The worker thread is serving (false once it has ended).
    pub worker_alive: AtomicBool,
    /// Job sequence numbers.
    pub next_id: AtomicU64,
    /// The embeddings of the loaded model.
    pub embeddings: Mutex<Embeddings>,
    /// The async job API's jobs (`/sumi/v1/jobs`).
    pub jobs: jobs::LocalJobs,
}

impl AppState {
    /// The progress state, locked.
    pub fn progress_lock(&self) -> MutexGuard<'_, progress::ProgressState> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The settings, locked.
    pub fn options_lock(&self) -> MutexGuard<'_, Map<String, Value>> {
        self.options.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The loaded model's embeddings, locked.
    pub fn embeddings_lock(&self) -> MutexGuard<'_, Embeddings> {
        self.embeddings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current checkpoint's path.
    pub fn current_model(&self) -> PathBuf {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Loads the model with `sumi_pipeline`, then serves on `listener` until `shutdown` completes;
/// then refuses new jobs (503), answers queued ones 503, lets the running job finish and send
/// its answer, and returns.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let backend = pipeline(&config).await?;
    serve_with(config, backend, listener, shutdown).await
}

/// The `sumi_pipeline` backend with `config`'s load options and preview decoder.
pub async fn pipeline(config: &Config) -> Result<Arc<dyn Backend>, ServerError> {
    let (load, decoder) = (config.load.clone(), config.preview_decoder.clone());
    let backend = tokio::task::spawn_blocking(move || {
        pipeline_backend::PipelineBackend::new(load, decoder.as_deref())
    })
    .await
    .map_err(|e| ServerError::Worker(e.to_string()))?
    .map_err(|reason| ServerError::Load {
        path: config.preview_decoder.clone().unwrap_or_default(),
        reason,
    })?;
    Ok(Arc::new(backend))
}

/// A server with its model loaded and its worker running, not yet listening: what
/// [`serve_with_timeouts`] serves, and what `sumi worker` runs jobs through.
pub struct Started {
    /// The shared state.
    pub state: Arc<AppState>,
    /// Every route.
    pub app: axum::Router,
    /// The worker thread (ends once the queue is closed).
    pub worker: std::thread::JoinHandle<()>,
}

/// Loads `config.model` with `backend` and starts the worker thread.
pub async fn start(
    config: Config,
    timeouts: Timeouts,
    backend: Arc<dyn Backend>,
) -> Result<Started, ServerError> {
    let model = {
        let (path, b) = (config.model.clone(), backend.clone());
        tokio::task::spawn_blocking(move || b.load(&path))
            .await
            .map_err(|e| ServerError::Worker(e.to_string()))?
            .map_err(|reason| ServerError::Load {
                path: config.model.clone(),
                reason,
            })?
    };
    let state = Arc::new(AppState {
        queue: queue::Queue::new(config.queue),
        progress: Mutex::new(progress::ProgressState::default()),
        control: AtomicU8::new(worker::RUN),
        options: Mutex::new(options::defaults(backend.taesd_previews())),
        checkpoints: checkpoints::Checkpoints::new(config.models_dir.clone()),
        current: Mutex::new(config.model.clone()),
        metrics: metrics::Metrics::default(),
        draining: AtomicBool::new(false),
        running: AtomicBool::new(false),
        worker_alive: AtomicBool::new(true),
        next_id: AtomicU64::new(1),
        embeddings: Mutex::new(model.embeddings()),
        jobs: jobs::LocalJobs::default(),
        config,
        timeouts,
    });
    let worker = worker::spawn(state.clone(), backend, model)?;
    let app = routes::router(state.clone());
    state.jobs.set_router(app.clone());
    Ok(Started { state, app, worker })
}

/// [`serve`] with another backend: loads `config.model` with it, then serves on `listener`
/// until `shutdown` completes and drains as [`serve`] does.
pub async fn serve_with(
    config: Config,
    backend: Arc<dyn Backend>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_with_timeouts(config, Timeouts::default(), backend, listener, shutdown).await
}

/// [`serve_with`] with other [`Timeouts`] than the defaults.
pub async fn serve_with_timeouts(
    config: Config,
    timeouts: Timeouts,
    backend: Arc<dyn Backend>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let Started { state, app, worker } = start(config, timeouts, backend).await?;
    if let (Some(f), Ok(addr)) = (&state.config.on_ready, listener.local_addr()) {
        f(addr);
    }
    let drain_state = state.clone();
    let signal = async move {
        shutdown.await;
        drain_state
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for job in drain_state.queue.close() {
            drain_state.metrics.job(metrics::JobOutcome::Cancelled, 0.0);
            let _ = job
                .reply
                .send(queue::Outcome::Cancelled("the server is shutting down"));
        }
        // the worker ends after its running job; its answer is then on its way
        while drain_state
            .running
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    conn::serve_connections(listener, app, state.timeouts.header, signal).await;
    tokio::task::spawn_blocking(move || worker.join())
        .await
        .map_err(|e| ServerError::Worker(e.to_string()))?
        .map_err(|_| ServerError::Worker("the worker thread panicked".into()))?;
    Ok(())
}
