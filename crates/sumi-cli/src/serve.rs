//! `sumi serve`: the A1111-compatible HTTP API and web page (`sumi-server`), until SIGTERM or
//! Ctrl-C, which drain the running job and exit 0.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sumi_pipeline::LoadOptions;

/// `sumi serve`.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint loaded at start: .safetensors, .ckpt, a diffusers folder, or a Hugging
    /// Face Hub id (org/name, org/name/file.safetensors, …@revision; downloaded once into the
    /// Hub cache) [$SUMI_MODEL, else the default SD1.5 model from the Hub, as txt2img's]; not
    /// with `--broker`.
    #[arg(long, conflicts_with = "broker")]
    model: Option<PathBuf>,
    /// A folder of checkpoints to list (`/sdapi/v1/sd-models`) and switch between.
    #[arg(long)]
    models_dir: Option<PathBuf>,
    /// The address to listen on (only this one).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port.
    #[arg(long, default_value_t = 7860)]
    port: u16,
    /// Jobs that may wait behind the running one; more get 429.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// HTTP basic credentials required by the API and page, as USER:PASS.
    #[arg(long, value_name = "USER:PASS")]
    api_auth: Option<String>,
    /// Textual-inversion embeddings folder.
    #[arg(long)]
    embeddings: Option<PathBuf>,
    /// A folder of LoRA/LyCORIS files for `<lora:name:weight>` tags (searched recursively;
    /// repeatable).
    #[arg(long = "lora-dir", value_name = "DIR")]
    lora_dirs: Vec<PathBuf>,
    /// A folder of hypernetwork `.pt` files for `<hypernet:name:multiplier>` tags, listed by
    /// `/sdapi/v1/hypernetworks` (searched recursively; repeatable).
    #[arg(long = "hypernetwork-dir", value_name = "DIR")]
    hypernetwork_dirs: Vec<PathBuf>,
    /// A folder of upscaler model files (ESRGAN/Real-ESRGAN .pth or .safetensors) for the hires
    /// fix and upscaling, named by file name (searched recursively; repeatable).
    #[arg(long = "upscaler-dir", value_name = "DIR")]
    upscaler_dirs: Vec<PathBuf>,
    /// An external VAE file, or a Hub id (org/name/vae.safetensors).
    #[arg(long)]
    vae: Option<PathBuf>,
    /// A TAESD decoder file for live previews (default: A1111's cheap approximation).
    #[arg(long)]
    preview_decoder: Option<PathBuf>,
    /// Compute precision of the U-Net, VAE and text encoder: f32, bf16 (weights in bf16, bf16
    /// dot products with f32 sums), or auto (bf16 where the CPU has AVX-512 BF16, else f32);
    /// as the CLI's, so API and CLI pixels match.
    #[arg(long, default_value = "auto", value_name = "f32|bf16|auto")]
    precision: sumi_pipeline::Precision,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = sumi_server::DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// Origins whose web pages may call the API, comma-separated (as A1111's): e.g.
    /// `http://localhost:3000,https://sd.example`, or `*` for any. Other pages' requests that
    /// change state are refused 403; the server's own page is always allowed.
    #[arg(long, value_name = "ORIGIN,...")]
    cors_allow_origins: Option<String>,
    /// Where a request's `save_images` keeps its pictures, numbered as the CLI numbers them
    /// (A1111 keeps them under outputs/ too).
    #[arg(long, value_name = "DIR", default_value = "outputs")]
    outdir: PathBuf,
    #[command(flatten)]
    broker: crate::worker::BrokerArgs,
}

// clap prints the arguments on a parse error only; never derive Debug here (password).

/// Runs the server.
pub fn run(a: Args) -> Result<()> {
    let auth = match &a.api_auth {
        None => None,
        Some(s) => match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Some((u.to_string(), p.to_string())),
            _ => bail!("--api-auth: expected USER:PASS"),
        },
    };
    if a.queue == 0 {
        bail!("--queue: must be at least 1");
    }
    if a.broker.broker.is_some() {
        // the model's options belong to the workers: named, not dropped silently
        let unused: Vec<&str> = [
            ("--models-dir", a.models_dir.is_some()),
            ("--embeddings", a.embeddings.is_some()),
            ("--lora-dir", !a.lora_dirs.is_empty()),
            ("--hypernetwork-dir", !a.hypernetwork_dirs.is_empty()),
            ("--upscaler-dir", !a.upscaler_dirs.is_empty()),
            ("--vae", a.vae.is_some()),
            ("--preview-decoder", a.preview_decoder.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        crate::worker::warn_front_ignores(&unused);
        let o = crate::worker::FrontOptions {
            cors_allow_origins: match &a.cors_allow_origins {
                None => Vec::new(),
                Some(list) => sumi_server::guard::parse_origins(list)
                    .map_err(|e| anyhow::anyhow!("--cors-allow-origins: {e}"))?,
            },
            host: a.host.clone(),
            port: a.port,
            queue: a.queue,
            auth,
            body_limit: a.body_limit,
        };
        return crate::worker::serve_front(&a.broker, o);
    }
    if let Some(d) = &a.models_dir {
        if !d.is_dir() {
            bail!("--models-dir {}: not a folder", d.display());
        }
    }
    // a FIFO (device, socket) given as a file would block the start for good
    if let Some(m) = &a.model {
        crate::inputs::model(m, "--model")?;
    }
    for (p, what) in [(&a.vae, "--vae"), (&a.preview_decoder, "--preview-decoder")] {
        if let Some(p) = p {
            crate::inputs::file(p, what)?;
        }
    }
    if let Some(d) = &a.embeddings {
        crate::inputs::folder(d, "--embeddings")?;
    }
    let cors_allow_origins = match &a.cors_allow_origins {
        None => Vec::new(),
        Some(list) => sumi_server::guard::parse_origins(list)
            .map_err(|e| anyhow::anyhow!("--cors-allow-origins: {e}"))?,
    };
    // a Hub model is fetched once the other options are known to be valid
    let model = crate::hub_models::model(a.model.as_deref(), "--model", false)?;
    crate::inputs::model(&model, "--model")?;
    let vae = match &a.vae {
        Some(v) => Some(crate::hub_models::file(v, "--vae", false)?),
        None => None,
    };
    let config = sumi_server::Config {
        model: model.clone(),
        models_dir: a.models_dir.clone(),
        load: LoadOptions {
            embeddings: a.embeddings.clone(),
            lora_dirs: a.lora_dirs.clone(),
            hypernetwork_dirs: a.hypernetwork_dirs.clone(),
            upscaler_dirs: a.upscaler_dirs.clone(),
            vae,
            precision: a.precision,
            ..Default::default()
        },
        queue: a.queue,
        auth,
        preview_decoder: a.preview_decoder.clone(),
        body_limit: a.body_limit,
        host: a.host.clone(),
        port: a.port,
        cors_allow_origins,
        outdir: a.outdir.clone(),
        on_ready: Some(std::sync::Arc::new(|addr| {
            eprintln!("serving on http://{addr}");
        })),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let addr: SocketAddr = tokio::net::lookup_host((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("--host {}", a.host))?
            .next()
            .with_context(|| format!("--host {}: no address", a.host))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        eprintln!("loading {} …", model.display());
        // the handler is installed now, so a SIGTERM while the model loads is not lost
        let signal = shutdown_signal()?;
        let shutdown = async move {
            signal.await;
            eprintln!("shutting down: finishing the running job");
        };
        sumi_server::serve(config, listener, shutdown)
            .await
            .context("sumi serve")?;
        eprintln!("stopped");
        Ok(())
    })
}

/// A future that completes on SIGTERM or Ctrl-C (SIGINT); the handlers are installed before it
/// is first polled.
pub(crate) fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async move {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
