//! How a prompt is read, for `sumi prompt`: A1111's reading (extra networks, `AND` parts with
//! their weights, the schedule, the weighted segments), the tokens of each 77-token chunk with
//! A1111's "75/150" counter, the textual-inversion embeddings loaded, skipped and found in the
//! prompt, and — with a checkpoint — the conditioning's shape per schedule entry.
//!
//! Two steps, so that a refused prompt is reported before any model is opened:
//! [`ReadPrompt::new`] reads the text, [`PromptReport::new`] adds the embeddings and the model.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::path::Path;

use candle_core::{DType, Device};
use serde_json::{json, Value};
use sumi_prompt::{
    read_negative_prompt, read_prompt, Chunking, EmbeddingIndex, PromptReading, Timeline, Tokenizer,
};
use sumi_weights::embedding::{Embedding, EmbeddingDir};

use crate::checkpoint::Checkpoint;
use crate::conditioning::{embedding_index, ConditioningOptions, Emphasis, TextEncoder};
use crate::error::Result;

/// `(end_step, shape)` per schedule entry.
type Shapes = Vec<(u32, Vec<usize>)>;

/// A prompt read as A1111 reads it for a number of steps.
pub struct ReadPrompt {
    prompt: String,
    steps: u32,
    negative: bool,
    timeline: Timeline,
    reading: PromptReading,
}

impl ReadPrompt {
    /// Reads `prompt` for `steps` sampling steps; `negative` reads it as a negative prompt
    /// (no `AND` split, extra networks kept). A prompt A1111 refuses is an error saying where.
    pub fn new(prompt: &str, steps: u32, negative: bool) -> Result<Self> {
        let timeline = Timeline::new(steps);
        let reading = if negative {
            read_negative_prompt(prompt, &timeline)
        } else {
            read_prompt(prompt, &timeline)
        }?;
        Ok(Self {
            prompt: prompt.to_string(),
            steps,
            negative,
            timeline,
            reading,
        })
    }
}

/// How a report encodes the prompt when it has a checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct ReportEncoding {
    /// The emphasis mode.
    pub emphasis: Emphasis,
    /// CLIP skip (SD2 ignores it, as A1111).
    pub clip_skip: usize,
}

/// A1111's defaults: emphasis "Original", CLIP skip 1 (the last layer).
impl Default for ReportEncoding {
    fn default() -> Self {
        Self {
            emphasis: Emphasis::Original,
            clip_skip: 1,
        }
    }
}

/// The conditioning a checkpoint makes of the prompt.
struct Encoded {
    architecture: &'static str,
    emphasis: Emphasis,
    clip_skip: usize,
    /// `(weight, shapes)` per `AND` part.
    parts: Vec<(f64, Shapes)>,
}

/// `sumi prompt`'s report: see the module documentation.
pub struct PromptReport {
    read: ReadPrompt,
    /// Whether an embeddings folder was given.
    listed: bool,
    loaded: Vec<String>,
    skipped: Vec<String>,
    rendered: String,
    counter: (usize, usize),
    found: Vec<Embedding>,
    encoded: Option<Encoded>,
}

impl PromptReport {
    /// Completes a reading: the embeddings of `embeddings` (checked against the checkpoint's
    /// text-encoder width when there is one), the chunks and token counter, the embeddings the
    /// prompt uses, and with `model` the conditioning's shapes.
    pub fn new(
        read: ReadPrompt,
        model: Option<&Checkpoint>,
        embeddings: Option<&Path>,
        encoding: ReportEncoding,
    ) -> Result<Self> {
        let clip = match model {
            Some(ck) => Some(ck.clip(DType::F32, &Device::Cpu)?),
            None => None,
        };
        let width = clip.as_ref().map(|c| c.config().hidden);
        let dir = match embeddings {
            Some(d) => EmbeddingDir::load(d, width)?,
            None => EmbeddingDir::default(),
        };
        let tok = Tokenizer::shared();
        let index = embedding_index(tok, &dir.loaded);
        let chunking = Chunking::default();
        let counter = read.reading.token_counter(tok, &index, &chunking);
        let found = embeddings_found(&read.reading, tok, &index, &chunking, &dir.loaded);
        let rendered = read.reading.render(Some((tok, &index, &chunking)));
        let encoded = match (model, &clip) {
            (Some(ck), Some(clip)) => {
                let opts = ConditioningOptions {
                    emphasis: encoding.emphasis,
                    clip_skip: encoding.clip_skip,
                    chunking,
                };
                let enc = TextEncoder::new(clip, &Device::Cpu, &ck.facts, &dir.loaded, opts)?;
                Some(Encoded {
                    architecture: ck.architecture(),
                    emphasis: encoding.emphasis,
                    clip_skip: enc.clip_skip(),
                    parts: encode(&enc, &read)?,
                })
            }
            _ => None,
        };
        Ok(Self {
            listed: embeddings.is_some(),
            loaded: dir.loaded.iter().map(|e| e.name.clone()).collect(),
            skipped: dir.skipped.iter().map(ToString::to_string).collect(),
            rendered,
            counter,
            found: found.into_iter().cloned().collect(),
            encoded,
            read,
        })
    }

    /// A1111's token counter `(tokens, max)` ("76/150").
    pub fn token_counter(&self) -> (usize, usize) {
        self.counter
    }

    /// The embeddings the prompt uses, in order of first use.
    pub fn embeddings_found(&self) -> Vec<&str> {
        self.found.iter().map(|e| e.name.as_str()).collect()
    }

    /// `sumi prompt --json`'s object: A1111's reading with `token_counter`, `embeddings` (with
    /// A1111's `TI hashes` short hash, read from the files), `skipped_embeddings` and, with a
    /// checkpoint, `conditioning`.
    pub fn to_json(&self) -> Result<Value> {
        let found = self
            .found
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
        let mut v = self.read.reading.to_json();
        if let Some(obj) = v.as_object_mut() {
            let (tokens, max) = self.counter;
            obj.insert(
                "token_counter".into(),
                json!({"tokens": tokens, "max": max}),
            );
            obj.insert("embeddings".into(), json!(found));
            obj.insert("skipped_embeddings".into(), json!(self.skipped));
            if let Some(e) = &self.encoded {
                obj.insert("conditioning".into(), e.to_json());
            }
        }
        Ok(v)
    }
}

/// `sumi prompt`'s text.
impl fmt::Display for PromptReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.read.negative {
            "negative prompt"
        } else {
            "prompt"
        };
        writeln!(f, "{kind} read for {} steps", self.read.steps)?;
        if self.listed {
            writeln!(f, "embeddings loaded: {}", list(&self.loaded))?;
            for s in &self.skipped {
                writeln!(f, "embedding skipped: {s}")?;
            }
        }
        f.write_str(&self.rendered)?;
        let (count, target) = self.counter;
        writeln!(f, "token counter {count}/{target}")?;
        let used: Vec<String> = self
            .found
            .iter()
            .map(|e| format!("{} ({} vectors, {})", e.name, e.len(), e.path.display()))
            .collect();
        writeln!(f, "embeddings found: {}", list(&used))?;
        if let Some(e) = &self.encoded {
            f.write_str(&e.render())?;
        }
        Ok(())
    }
}

impl Encoded {
    fn to_json(&self) -> Value {
        let parts: Vec<Value> = self
            .parts
            .iter()
            .map(|(w, s)| {
                let schedule: Vec<Value> = s
                    .iter()
                    .map(|(end, shape)| json!({"end_step": end, "shape": shape}))
                    .collect();
                json!({"weight": w, "schedule": schedule})
            })
            .collect();
        json!({
            "architecture": self.architecture,
            "emphasis": self.emphasis.name(),
            "clip_skip": self.clip_skip,
            "parts": parts,
        })
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "conditioning ({}, emphasis {}, CLIP skip {}):",
            self.architecture, self.emphasis, self.clip_skip
        );
        for (i, (w, sched)) in self.parts.iter().enumerate() {
            let mut from = 1;
            for (end, shape) in sched {
                let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
                let _ = writeln!(
                    out,
                    "  part {} (weight {w}) steps {from}-{end}: {}",
                    i + 1,
                    dims.join("×")
                );
                from = end + 1;
            }
        }
        out
    }
}

/// The conditioning's `(weight, shapes)` per part (a negative prompt is one part of weight 1).
fn encode(enc: &TextEncoder<'_>, read: &ReadPrompt) -> Result<Vec<(f64, Shapes)>> {
    if read.negative {
        let s = enc.negative(&read.prompt, &read.timeline)?;
        let shapes = s.iter().map(|e| (e.end_step, e.cond.dims().to_vec()));
        return Ok(vec![(1.0, shapes.collect())]);
    }
    Ok(enc
        .prompt(&read.prompt, &read.timeline)?
        .parts
        .iter()
        .map(|p| {
            let s = p.schedule.iter();
            (
                p.weight,
                s.map(|e| (e.end_step, e.cond.dims().to_vec())).collect(),
            )
        })
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn embeddings() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/embeddings")
    }

    #[test]
    fn counter_embeddings_and_text_without_a_model() {
        let read = ReadPrompt::new("a tinyemb cat BREAK (tinypt:1.2) wide", 4, false).unwrap();
        let dir = embeddings();
        let r = PromptReport::new(read, None, Some(&dir), ReportEncoding::default()).unwrap();
        // BREAK fills the first chunk to 75; the second holds tinypt's 2 vectors and wide's 2
        // (without a model the 768-wide file loads too)
        assert_eq!(r.token_counter(), (79, 150));
        assert_eq!(r.embeddings_found(), ["tinyemb", "tinypt", "wide"]);
        let text = r.to_string();
        assert!(text.starts_with("prompt read for 4 steps\nembeddings loaded: tinyconcept, tinydict, tinyemb, tinypt, wide\n"), "{text}");
        assert!(text.contains("token counter 79/150\n"), "{text}");
        let v = r.to_json().unwrap();
        assert_eq!(v["token_counter"], json!({"tokens": 79, "max": 150}));
        assert_eq!(v["embeddings"][1]["vectors"], 2);
        assert_eq!(v["skipped_embeddings"].as_array().unwrap().len(), 5);
        assert!(v.get("conditioning").is_none());
        let d = ReportEncoding::default();
        assert_eq!((d.emphasis, d.clip_skip), (Emphasis::Original, 1));
    }

    #[test]
    fn a_refused_prompt_says_where() {
        let e = ReadPrompt::new("a (cat:1.2.3)", 20, false).err().unwrap();
        assert!(e.to_string().contains("column 8: `1.2.3`"), "{e}");
        // a negative prompt keeps `AND` whole, so one part
        let r = PromptReport::new(
            ReadPrompt::new("x AND y", 20, true).unwrap(),
            None,
            None,
            ReportEncoding::default(),
        )
        .unwrap();
        let v = r.to_json().unwrap();
        assert_eq!(v["subprompts"].as_array().unwrap().len(), 1);
        let text = r.to_string();
        let want = "negative prompt read for 20 steps\n  steps 1-20: \"x AND y\"\n    tokens 3/75 in 1 chunk(s)\n";
        assert!(text.starts_with(want), "{text}");
        assert!(
            text.ends_with("token counter 3/75\nembeddings found: none\n"),
            "{text}"
        );
    }
}
