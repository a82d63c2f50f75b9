//! `sumi model-info`: what a checkpoint is (the pipeline's checkpoint report).

use std::path::PathBuf;

use anyhow::{Context, Result};
use sumi_pipeline::checkpoint_report::CheckpointReport;
use sumi_pipeline::{Checkpoint, Prediction};

/// Arguments of `sumi model-info`.
#[derive(clap::Args)]
pub struct Args {
    /// A checkpoint: .safetensors, .ckpt, a diffusers folder, or a Hugging Face Hub id
    /// (org/name, org/name/file.safetensors, …@revision; downloaded once into the Hub cache).
    path: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Override the prediction type (`epsilon` or `v`).
    #[arg(long, value_parser = |s: &str| s.parse::<Prediction>())]
    prediction: Option<Prediction>,
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    crate::inputs::model(&a.path, "model-info")?;
    let path = crate::hub_models::file(&a.path, "model-info", false)?;
    crate::inputs::model(&path, "model-info")?;
    let ck = Checkpoint::identify(&path, a.prediction)
        .with_context(|| format!("cannot identify {}", path.display()))?;
    let report = CheckpointReport::of(&ck)?;
    if a.json {
        crate::terminal::println(&serde_json::to_string_pretty(&report.to_json())?)?;
    } else {
        crate::terminal::print(&report.to_string())?;
    }
    Ok(())
}
