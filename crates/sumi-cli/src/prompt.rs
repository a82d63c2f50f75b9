//! `sumi prompt`: how Sumi (as A1111) reads a prompt — extra networks, `AND` parts and their
//! weights, the schedule, the weighted segments, the tokens of each 77-token chunk with A1111's
//! "75/150" counter, and the textual-inversion embeddings found. With `--model`, the prompt is
//! also encoded and the conditioning's shape per schedule entry shown.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use serde_json::json;
use sumi_pipeline::conditioning::{ConditioningOptions, Emphasis, TextEncoder};
use sumi_pipeline::Checkpoint;
use sumi_prompt::{
    read_negative_prompt, read_prompt, Chunking, EmbeddingIndex, PromptReading, Timeline, Tokenizer,
};
use sumi_weights::embedding::{Embedding, EmbeddingDir};

/// `(end_step, shape)` per schedule entry.
type Shapes = Vec<(u32, Vec<usize>)>;

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
    let timeline = Timeline::new(a.steps);
    let reading = if a.negative {
        read_negative_prompt(&a.prompt, &timeline)
    } else {
        read_prompt(&a.prompt, &timeline)
    }
    .context("A1111 refuses this prompt")?;

    let ck = match &a.model {
        Some(p) => Some(
            Checkpoint::open(p, None).with_context(|| format!("cannot open {}", p.display()))?,
        ),
        None => None,
    };
    let clip = match &ck {
        Some(ck) => Some(ck.clip(DType::F32, &Device::Cpu)?),
        None => None,
    };
    let width = clip.as_ref().map(|c| c.config().hidden);
    let dir = match &a.embeddings {
        Some(d) => EmbeddingDir::load(d, width)?,
        None => EmbeddingDir::default(),
    };
    let tok = Tokenizer::shared();
    let index = sumi_pipeline::conditioning::embedding_index(tok, &dir.loaded);
    let chunking = Chunking::default();
    let (count, target) = reading.token_counter(tok, &index, &chunking);
    let found = embeddings_found(&reading, tok, &index, &chunking, &dir.loaded);

    let encoded = match (&ck, &clip) {
        (Some(ck), Some(clip)) => {
            let opts = ConditioningOptions {
                emphasis: a.emphasis,
                clip_skip: a.clip_skip,
                chunking: chunking.clone(),
            };
            let enc = TextEncoder::new(clip, &Device::Cpu, &ck.facts, &dir.loaded, opts)?;
            let parts: Vec<(f64, Shapes)> = if a.negative {
                let s = enc.negative(&a.prompt, &timeline)?;
                vec![(
                    1.0,
                    s.iter()
                        .map(|e| (e.end_step, e.cond.dims().to_vec()))
                        .collect(),
                )]
            } else {
                enc.prompt(&a.prompt, &timeline)?
                    .parts
                    .iter()
                    .map(|p| {
                        let s = p.schedule.iter();
                        (
                            p.weight,
                            s.map(|e| (e.end_step, e.cond.dims().to_vec())).collect(),
                        )
                    })
                    .collect()
            };
            Some((ck.architecture(), enc.clip_skip(), parts))
        }
        _ => None,
    };

    if a.json {
        let found_json = found
            .iter()
            .map(|e| {
                Ok(json!({
                    "name": e.name,
                    "vectors": e.len(),
                    "path": e.path.display().to_string(),
                    "hash": e.short_hash()?,
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut v = reading.to_json();
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "token_counter".into(),
                json!({"tokens": count, "max": target}),
            );
            obj.insert("embeddings".into(), json!(found_json));
            obj.insert(
                "skipped_embeddings".into(),
                json!(dir
                    .skipped
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()),
            );
            if let Some((arch, skip, parts)) = &encoded {
                obj.insert(
                    "conditioning".into(),
                    json!({
                        "architecture": arch,
                        "emphasis": a.emphasis.name(),
                        "clip_skip": skip,
                        "parts": parts.iter().map(|(w, s)| json!({
                            "weight": w,
                            "schedule": s.iter().map(|(end, shape)| json!({"end_step": end, "shape": shape})).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                    }),
                );
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }

    let kind = if a.negative {
        "negative prompt"
    } else {
        "prompt"
    };
    println!("{kind} read for {} steps", a.steps);
    if a.embeddings.is_some() {
        let names: Vec<&str> = dir.loaded.iter().map(|e| e.name.as_str()).collect();
        println!("embeddings loaded: {}", list(&names));
        for s in &dir.skipped {
            println!("embedding skipped: {s}");
        }
    }
    print!("{}", reading.render(Some((tok, &index, &chunking))));
    println!("token counter {count}/{target}");
    let used: Vec<String> = found
        .iter()
        .map(|e| format!("{} ({} vectors, {})", e.name, e.len(), e.path.display()))
        .collect();
    println!("embeddings found: {}", list(&used));
    if let Some((arch, skip, parts)) = &encoded {
        println!(
            "conditioning ({arch}, emphasis {}, CLIP skip {skip}):",
            a.emphasis
        );
        for (i, (w, sched)) in parts.iter().enumerate() {
            let mut from = 1;
            for (end, shape) in sched {
                let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
                println!(
                    "  part {} (weight {w}) steps {from}-{end}: {}",
                    i + 1,
                    dims.join("×")
                );
                from = end + 1;
            }
        }
    }
    Ok(())
}

fn list<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items
            .iter()
            .map(|s| s.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The embeddings the chunker places anywhere in the prompt, in order of first use.
fn embeddings_found<'e>(
    reading: &PromptReading,
    tok: &Tokenizer,
    index: &EmbeddingIndex,
    chunking: &Chunking,
    loaded: &'e [Embedding],
) -> Vec<&'e Embedding> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for sub in reading.chunks(tok, index, chunking) {
        for (_, chunks) in &sub.schedule {
            for fix in chunks.chunks.iter().flat_map(|c| &c.fixes) {
                if seen.insert(fix.name.clone()) {
                    if let Some(e) = loaded.iter().find(|e| e.name == fix.name) {
                        out.push(e);
                    }
                }
            }
        }
    }
    out
}
