//! Several machines on one Redis (`sumi-broker`): `sumi worker --broker URL --model M` runs jobs
//! for its checkpoint; `sumi serve --broker URL` (the [`BrokerArgs`] of `serve`) is an API
//! front with no model.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sumi_broker::Settings;
use sumi_pipeline::LoadOptions;

/// The broker options of `sumi serve` (a front) and `sumi worker`.
#[derive(clap::Args, Clone)]
pub struct BrokerArgs {
    /// Serve as an API front of the job broker at this Redis URL
    /// (`redis://[user:pass@]host:port[/db]`): no model here, jobs run on `sumi worker`s.
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// How long a finished job's result is kept, in seconds.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub result_ttl: u64,
    /// Deliveries of a job (its worker stopping during it) before it ends failed.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// How long a queued job waits for a live worker of its checkpoint, in seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub job_timeout: u64,
    /// How often workers say they are alive, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub heartbeat_ms: u64,
    /// How long a running job may go without its worker's heartbeat before another worker takes
    /// it over, in milliseconds (longer than a sampler step).
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub claim_idle_ms: u64,
}

impl BrokerArgs {
    /// The settings, checked; `queue` is the per-checkpoint bound.
    pub fn settings(&self, queue: usize) -> Result<Settings> {
        if self.max_attempts == 0 {
            bail!("--max-attempts: must be at least 1");
        }
        if self.heartbeat_ms == 0 || self.claim_idle_ms <= self.heartbeat_ms {
            bail!("--claim-idle-ms must be longer than --heartbeat-ms (both above 0)");
        }
        Ok(Settings {
            result_ttl: Duration::from_secs(self.result_ttl.max(1)),
            max_attempts: self.max_attempts,
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            claim_idle: Duration::from_millis(self.claim_idle_ms),
            queue,
            job_timeout: Duration::from_secs(self.job_timeout),
            ..Settings::default()
        })
    }
}

/// `sumi worker`.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint this worker runs (.safetensors, .ckpt, or a diffusers folder).
    #[arg(long)]
    model: PathBuf,
    /// A folder of checkpoints (names the model as the front lists it).
    #[arg(long)]
    models_dir: Option<PathBuf>,
    /// Textual-inversion embeddings folder.
    #[arg(long)]
    embeddings: Option<PathBuf>,
    /// LoRA/LyCORIS folders (repeatable).
    #[arg(long = "lora-dir", value_name = "DIR")]
    lora_dirs: Vec<PathBuf>,
    /// Hypernetwork folders (repeatable).
    #[arg(long = "hypernetwork-dir", value_name = "DIR")]
    hypernetwork_dirs: Vec<PathBuf>,
    /// Upscaler model folders (repeatable).
    #[arg(long = "upscaler-dir", value_name = "DIR")]
    upscaler_dirs: Vec<PathBuf>,
    /// An external VAE file.
    #[arg(long)]
    vae: Option<PathBuf>,
    /// A TAESD decoder file for live previews.
    #[arg(long)]
    preview_decoder: Option<PathBuf>,
    /// Compute precision: f32, bf16 or auto.
    #[arg(long, default_value = "auto", value_name = "f32|bf16|auto")]
    precision: sumi_pipeline::Precision,
    /// This worker's name among the workers (default: host name and process id).
    #[arg(long)]
    name: Option<String>,
    /// Where a request's `save_images` keeps its pictures.
    #[arg(long, value_name = "DIR", default_value = "outputs")]
    outdir: PathBuf,
    #[command(flatten)]
    broker: BrokerArgs,
}

/// Runs a worker until SIGTERM or Ctrl-C (the running job is finished first).
pub fn run(a: Args) -> Result<()> {
    let Some(url) = a.broker.broker.clone() else {
        bail!("--broker: required (redis://host:port)");
    };
    crate::inputs::model(&a.model, "--model")?;
    let mut config = sumi_server::Config::new(a.model.clone());
    config.models_dir = a.models_dir.clone();
    config.load = LoadOptions {
        embeddings: a.embeddings.clone(),
        lora_dirs: a.lora_dirs.clone(),
        hypernetwork_dirs: a.hypernetwork_dirs.clone(),
        upscaler_dirs: a.upscaler_dirs.clone(),
        vae: a.vae.clone(),
        precision: a.precision,
        ..Default::default()
    };
    config.preview_decoder = a.preview_decoder.clone();
    config.outdir = a.outdir.clone();
    // one job at a time; the broker holds the queue
    config.queue = 1;
    let mut opts = sumi_server::broker_worker::WorkerOptions::new(url);
    opts.settings = a.broker.settings(16)?;
    if let Some(n) = &a.name {
        sumi_broker::check_id(n)
            .map_err(|_| anyhow::anyhow!("--name {n:?}: 1–128 letters, digits and ()-_.: only"))?;
        opts.name = n.clone();
    }
    runtime()?.block_on(async move {
        eprintln!("loading {} …", a.model.display());
        let signal = crate::serve::shutdown_signal()?;
        sumi_server::broker_worker::run(config, opts, signal)
            .await
            .context("sumi worker")?;
        eprintln!("stopped");
        Ok(())
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// What `sumi serve --broker` needs of serve's other options.
pub struct FrontOptions {
    /// `--host`.
    pub host: String,
    /// `--port`.
    pub port: u16,
    /// `--queue`: per checkpoint.
    pub queue: usize,
    /// `--api-auth`.
    pub auth: Option<(String, String)>,
    /// `--body-limit`.
    pub body_limit: usize,
    /// `--cors-allow-origins`, parsed.
    pub cors_allow_origins: Vec<String>,
}

/// Names the `sumi serve` options a front does not use (they are the workers').
pub fn warn_front_ignores(options: &[&str]) {
    if !options.is_empty() {
        eprintln!(
            "warning: {} not used by a --broker front (give the model's options to `sumi \
             worker`)",
            options.join(", ")
        );
    }
}

/// `sumi serve --broker URL`: an API front until SIGTERM or Ctrl-C.
pub fn serve_front(b: &BrokerArgs, o: FrontOptions) -> Result<()> {
    let Some(url) = b.broker.clone() else {
        bail!("--broker: required");
    };
    let config = sumi_server::broker_front::FrontConfig {
        url,
        settings: b.settings(o.queue)?,
        auth: o.auth,
        body_limit: o.body_limit,
        host: o.host.clone(),
        cors_allow_origins: o.cors_allow_origins,
        timeouts: sumi_server::Timeouts::default(),
        on_ready: Some(std::sync::Arc::new(|addr| {
            eprintln!("serving on http://{addr}");
        })),
    };
    runtime()?.block_on(async move {
        let addr: SocketAddr = tokio::net::lookup_host((o.host.as_str(), o.port))
            .await
            .with_context(|| format!("--host {}", o.host))?
            .next()
            .with_context(|| format!("--host {}: no address", o.host))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let signal = crate::serve::shutdown_signal()?;
        sumi_server::broker_front::serve(config, listener, signal)
            .await
            .context("sumi serve --broker")?;
        eprintln!("stopped");
        Ok(())
    })
}
