//! `sumi prompt`: how Sumi (as A1111) reads a prompt — extra networks, `AND` parts and their
//! weights, the schedule, the weighted segments, the tokens of each 77-token chunk with A1111's
//! "75/150" counter, and the textual-inversion embeddings found. With `--model`, the prompt is
//! also encoded and the conditioning's shape per schedule entry shown.

use std::path::PathBuf;

use anyhow::{Context, Result};
use sumi_pipeline::prompt_report::{PromptReport, ReadPrompt, ReportEncoding};
use sumi_pipeline::{Checkpoint, Emphasis};

/// Arguments of `sumi prompt`.
#[derive(clap::Args)]
pub struct Args {
    /// The prompt.
    prompt: String,
    /// Sampling steps the schedule is read for.
    #[arg(long, default_value_t = 20)]
    steps: u32,
    /// A checkpoint: its padding and text-encoder width apply, and the prompt is encoded.
    #[arg(long)]
    model: Option<PathBuf>,
    /// A folder of textual-inversion embeddings (A1111's `embeddings/`).
    #[arg(long)]
    embeddings: Option<PathBuf>,
    /// Read it as a negative prompt (no `AND` split, extra networks kept).
    #[arg(long)]
    negative: bool,
    /// Emphasis mode for the encoding with `--model` (Original, "No norm", Ignore, None).
    #[arg(long, default_value = "Original", value_parser = |s: &str| s.parse::<Emphasis>())]
    emphasis: Emphasis,
    /// CLIP skip for the encoding with `--model` (SD2 ignores it, as A1111).
    #[arg(long, default_value_t = 1)]
    clip_skip: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    let read =
        ReadPrompt::new(&a.prompt, a.steps, a.negative).context("A1111 refuses this prompt")?;
    let ck = match &a.model {
        Some(p) => {
            crate::inputs::model(p, "--model")?;
            Some(
                Checkpoint::open(p, None)
                    .with_context(|| format!("cannot open {}", p.display()))?,
            )
        }
        None => None,
    };
    let encoding = ReportEncoding {
        emphasis: a.emphasis,
        clip_skip: a.clip_skip,
    };
    if let Some(d) = &a.embeddings {
        crate::inputs::folder(d, "--embeddings")?;
    }
    let report = PromptReport::new(read, ck.as_ref(), a.embeddings.as_deref(), encoding)?;
    if a.json {
        crate::terminal::println(&serde_json::to_string_pretty(&report.to_json()?)?)?;
    } else {
        crate::terminal::print(&report.to_string())?;
    }
    Ok(())
}
