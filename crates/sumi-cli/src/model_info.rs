//! `sumi model-info`: what a checkpoint is.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;
use sumi_pipeline::Checkpoint;
use sumi_weights::layout::{TEXT_ENCODER, UNET, VAE};
use sumi_weights::{sha256_file, Format, Prediction, PredictionSource};

/// Arguments of `sumi model-info`.
#[derive(clap::Args)]
pub struct Args {
    /// A checkpoint: .safetensors, .ckpt, or a diffusers folder.
    path: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Override the prediction type (`epsilon` or `v`).
    #[arg(long, value_parser = |s: &str| s.parse::<Prediction>())]
    prediction: Option<Prediction>,
}

fn source_name(s: &PredictionSource) -> String {
    match s {
        PredictionSource::Override => "override".into(),
        PredictionSource::Yaml(p) => format!("yaml:{}", p.display()),
        PredictionSource::Metadata => "modelspec.prediction_type".into(),
        PredictionSource::DiffusersConfig => "scheduler_config.json".into(),
        PredictionSource::Rule => "architecture rule".into(),
        PredictionSource::UnetTest => "A1111 U-Net test".into(),
    }
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    let ck = Checkpoint::open(&a.path, a.prediction)
        .with_context(|| format!("cannot identify {}", a.path.display()))?;
    let w = &ck.weights;
    let hash = match w.format() {
        Format::Diffusers => None,
        _ => Some(sha256_file(&a.path)?),
    };
    let hist = w.dtype_histogram();
    let storage = hist
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(d, _)| d.to_string())
        .unwrap_or_default();
    let params = |p: &str| w.param_count(p);
    let format = match w.format() {
        Format::Safetensors => "safetensors",
        Format::Checkpoint => "pytorch-zip",
        Format::Diffusers => "diffusers",
    };
    let prediction = match ck.prediction {
        Prediction::Epsilon => "epsilon",
        Prediction::V => "v",
    };
    let info = json!({
        "path": a.path.display().to_string(),
        "format": format,
        "architecture": ck.architecture(),
        "prediction": prediction,
        "prediction_source": source_name(&ck.prediction_source),
        "storage_dtype": storage,
        "dtypes": hist.iter().map(|(d, n)| (d.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "tensors": w.names().count(),
        "file_tensors": w.raw_keys().count(),
        "params": {"unet": params(UNET), "vae": params(VAE), "text_encoder": params(TEXT_ENCODER)},
        "sha256": hash.as_ref().map(|h| h.sha256.clone()),
        "short_hash": hash.as_ref().map(|h| h.short().to_string()),
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("{}", a.path.display());
    println!("  architecture   {}", ck.architecture());
    println!(
        "  prediction     {prediction} ({})",
        source_name(&ck.prediction_source)
    );
    println!("  format         {format}, stored as {storage}");
    println!(
        "  tensors        {} used of {} in the file",
        w.names().count(),
        w.raw_keys().count()
    );
    println!(
        "  parameters     U-Net {}, VAE {}, text encoder {}",
        params(UNET),
        params(VAE),
        params(TEXT_ENCODER)
    );
    if let Some(h) = &hash {
        println!("  sha256         {}", h.sha256);
        println!("  short hash     {}", h.short());
    }
    Ok(())
}
