//! Prompt → conditioning tensors, as A1111 computes them (`modules/sd_hijack_clip.py`
//! `TextConditionalModel.forward`/`process_tokens`, `modules/sd_emphasis.py`,
//! `modules/prompt_parser.py` `get_learned_conditioning` and
//! `get_multicond_learned_conditioning`).
//!
//! For one `AND` part, every text of its schedule is chunked (75 tokens + start/end), and the
//! texts are encoded **together**, chunk by chunk: chunk `i` of every text forms one CLIP batch
//! (a text with fewer chunks gets empty ones), textual-inversion vectors replace the token
//! embeddings at their positions, CLIP runs (CLIP skip: SD1 reads layer `-skip` through the
//! final layer norm; SD2 always reads its penultimate layer and ignores the option, as A1111),
//! then the emphasis applies. "Original" multiplies every token's vector by its weight and
//! rescales so the mean of the whole batch — every schedule text's chunk `i`, not each text on
//! its own — is what it was (both means accumulated in f64 where A1111 sums in the model's
//! dtype: the difference is rounding, and only visible when the mean is near zero). The chunks
//! are then concatenated along the tokens.
//!
//! Positive prompts lose their extra networks and are split on `AND` ([`TextEncoder::prompt`]);
//! negative prompts are encoded whole ([`TextEncoder::negative`]), as A1111.
//!
//! SD2 pads with id 0 after the first end token of each chunk; SD1 pads with the end token.
//!
//! SDXL's encoders ([`TextEncoder::new_sdxl`]) read the penultimate layer without the final
//! layer norm (CLIP-L's `hidden_states[11]`, bigG's "penultimate"), and bigG also gives the
//! pooled embedding of the first chunk ([`TextEncoder::encode_texts_pooled`]); see
//! [`crate::sdxl`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor, D};
use sumi_models::ClipTextModel;
use sumi_prompt::{
    chunk_segments, extra_networks, multicond, parse_prompt_attention, prompt_schedule, Chunk,
    Chunking, ClipPad, EmbeddingIndex, PromptChunks, ScheduleEntry, Segment, Timeline, Tokenizer,
};
use sumi_weights::embedding::Embedding;
use sumi_weights::{Family, ModelFacts};

use crate::error::{PipelineError, Result};

/// A1111's "Emphasis mode" option (`opts.emphasis`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emphasis {
    /// Multiply by the weights, then restore the batch's original mean (A1111's default).
    #[default]
    Original,
    /// Multiply by the weights only ("No norm").
    NoNorm,
    /// Parse brackets (and `BREAK`) but apply no weights.
    Ignore,
    /// No emphasis parsing at all: brackets and `BREAK` are plain text.
    None,
}

impl Emphasis {
    /// A1111's name for the mode.
    pub fn name(self) -> &'static str {
        match self {
            Emphasis::Original => "Original",
            Emphasis::NoNorm => "No norm",
            Emphasis::Ignore => "Ignore",
            Emphasis::None => "None",
        }
    }
}

impl std::fmt::Display for Emphasis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Emphasis {
    type Err = PipelineError;

    /// A1111's names (`Original`, `No norm`, `Ignore`, `None`), case-insensitive; `no-norm`
    /// and `nonorm` are accepted for the command line.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "original" => Ok(Emphasis::Original),
            "no norm" | "no-norm" | "nonorm" | "no_norm" => Ok(Emphasis::NoNorm),
            "ignore" => Ok(Emphasis::Ignore),
            "none" => Ok(Emphasis::None),
            _ => Err(PipelineError::UnknownEmphasis(s.to_string())),
        }
    }
}

/// Conditioning options (A1111's defaults by [`ConditioningOptions::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditioningOptions {
    /// Emphasis mode.
    pub emphasis: Emphasis,
    /// A1111's "Clip skip" (`CLIP_stop_at_last_layers`): 1 = last layer; SD2 ignores it.
    pub clip_skip: usize,
    /// Chunking options.
    pub chunking: Chunking,
}

impl Default for ConditioningOptions {
    fn default() -> Self {
        ConditioningOptions {
            emphasis: Emphasis::Original,
            clip_skip: 1,
            chunking: Chunking::default(),
        }
    }
}

/// The conditioning for the steps up to and including `end_step` (A1111's
/// `ScheduledPromptConditioning`).
#[derive(Debug, Clone)]
pub struct ScheduledCond {
    /// Last step of this entry (A1111's `end_at_step`).
    pub end_step: u32,
    /// `[tokens, width]`, tokens a multiple of 77.
    pub cond: Tensor,
    /// SDXL's ADM vector `[adm_in]` (pooled embedding and size conditions); `None` for
    /// SD1/SD2.
    pub vector: Option<Tensor>,
}

/// One `AND` part: its schedule and its weight in the CFG combination (A1111's
/// `ComposableScheduledPromptConditioning`).
#[derive(Debug, Clone)]
pub struct WeightedCond {
    /// The part's weight.
    pub weight: f64,
    /// Its schedule.
    pub schedule: Vec<ScheduledCond>,
}

/// A prompt's conditioning: one [`WeightedCond`] per `AND` part (A1111's
/// `MulticondLearnedConditioning` for one image).
#[derive(Debug, Clone)]
pub struct MultiCond {
    /// The parts, in prompt order.
    pub parts: Vec<WeightedCond>,
}

/// The entry of `schedule` in force at A1111's step counter `step` (`reconstruct_cond_batch`:
/// the first entry with `step <= end_step`, the first entry when none is).
///
/// `step` is A1111's `CFGDenoiser.step`: the number of denoiser calls made so far, 0 at the
/// first. An entry ending at step 5 therefore serves the first six calls, as in A1111.
pub fn cond_at(schedule: &[ScheduledCond], step: u32) -> Option<&Tensor> {
    schedule
        .iter()
        .find(|e| step <= e.end_step)
        .or(schedule.first())
        .map(|e| &e.cond)
}

/// The ADM vector of the entry of `schedule` in force at `step` (the entry [`cond_at`] picks).
pub fn vector_at(schedule: &[ScheduledCond], step: u32) -> Option<&Tensor> {
    schedule
        .iter()
        .find(|e| step <= e.end_step)
        .or(schedule.first())
        .and_then(|e| e.vector.as_ref())
}

impl MultiCond {
    /// SDXL: the ADM vectors of the parts at `step`, `[parts, adm_in]`, in the order of
    /// [`Self::at_step`]'s conds; `None` for SD1/SD2.
    pub fn vectors_at(&self, step: u32) -> Result<Option<Tensor>> {
        let vs: Option<Vec<Tensor>> = self
            .parts
            .iter()
            .map(|p| vector_at(&p.schedule, step).cloned())
            .collect();
        match vs {
            Some(vs) if !vs.is_empty() => Ok(Some(Tensor::stack(&vs, 0)?)),
            _ => Ok(None),
        }
    }

    /// A1111's `reconstruct_multicond_batch` for one image: the parts' weights and their conds
    /// at `step` (see [`cond_at`]) stacked `[parts, tokens, width]`, shorter ones extended by
    /// repeating their last vector (`stack_conds`).
    pub fn at_step(&self, step: u32) -> Result<(Vec<f64>, Tensor)> {
        let conds: Vec<&Tensor> = self
            .parts
            .iter()
            .filter_map(|p| cond_at(&p.schedule, step))
            .collect();
        if conds.is_empty() {
            return Err(PipelineError::Conditioning(
                "the prompt has no parts".into(),
            ));
        }
        let weights = self.parts.iter().map(|p| p.weight).collect();
        Ok((weights, stack_conds(&conds)?))
    }
}

/// A1111's `stack_conds`: stacks `[tokens, width]` conds, extending the shorter ones by
/// repeating their last vector.
pub fn stack_conds(conds: &[&Tensor]) -> Result<Tensor> {
    let most = conds
        .iter()
        .map(|c| c.dim(0))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let most = most.into_iter().max().unwrap_or(0);
    let mut out = Vec::with_capacity(conds.len());
    for c in conds {
        let n = c.dim(0)?;
        if n < most {
            let last = c.narrow(0, n - 1, 1)?;
            let rep = last.repeat((most - n, 1))?;
            out.push(Tensor::cat(&[*c, &rep], 0)?);
        } else {
            out.push((*c).clone());
        }
    }
    Ok(Tensor::stack(&out, 0)?)
}

/// The embedding index the chunker uses for `embeddings` (A1111's `ids_lookup`).
pub fn embedding_index(tok: &Tokenizer, embeddings: &[Embedding]) -> EmbeddingIndex {
    EmbeddingIndex::new(tok, embeddings.iter().map(|e| (e.name.as_str(), e.len())))
}

/// The pad token of a model.
pub fn clip_pad(facts: &ModelFacts) -> ClipPad {
    if facts.clip_pad_token == ClipPad::Zero.id() {
        ClipPad::Zero
    } else {
        ClipPad::EndOfText
    }
}

/// One part of a prompt as text: its weight and its schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct PartText {
    /// The part's weight in the CFG combination (1 for negatives).
    pub weight: f64,
    /// Its schedule.
    pub schedule: Vec<ScheduleEntry>,
}

/// The prompt texts of a prompt, stage by stage as A1111 reads them for conditioning: extra
/// networks removed and `AND` split (positive prompts only), then one schedule per part.
pub fn prompt_parts(prompt: &str, timeline: &Timeline, negative: bool) -> Result<Vec<PartText>> {
    let parts = if negative {
        vec![(1.0, prompt.to_string())]
    } else {
        let (text, _) = extra_networks::extract(prompt);
        multicond::split_and(&text)
            .into_iter()
            .map(|p| (p.weight, p.text))
            .collect()
    };
    parts
        .into_iter()
        .map(|(weight, text)| {
            Ok(PartText {
                weight,
                schedule: prompt_schedule(&text, timeline)?,
            })
        })
        .collect()
}

/// CLIP with A1111's prompt handling around it: chunking, embeddings, CLIP skip, emphasis.
pub struct TextEncoder<'a> {
    clip: &'a ClipTextModel,
    device: Device,
    tok: &'static Tokenizer,
    pad: ClipPad,
    skip: usize,
    opts: ConditioningOptions,
    vectors: HashMap<String, Tensor>,
    index: EmbeddingIndex,
    /// SDXL: the layer is read without the final layer norm (and, for an encoder with a
    /// projection, the first chunk's pooled embedding is kept).
    sdxl: bool,
    /// Asked before each chunk is encoded: `true` stops with [`PipelineError::Interrupted`].
    interrupt: Option<RefCell<&'a mut dyn FnMut() -> bool>>,
}

impl<'a> TextEncoder<'a> {
    /// Wraps `clip` (on `device`) of a model described by `facts`; `embeddings` must have the
    /// encoder's width (an error names the file otherwise).
    pub fn new(
        clip: &'a ClipTextModel,
        device: &Device,
        facts: &ModelFacts,
        embeddings: &[Embedding],
        opts: ConditioningOptions,
    ) -> Result<Self> {
        let cfg = clip.config();
        let skip = match facts.family {
            // A1111 reads SD2's penultimate layer whatever the option says; the canonical
            // SD2 encoder already ends there
            Family::Sd2 => 1,
            _ => opts.clip_skip,
        };
        if skip == 0 || skip > cfg.layers {
            return Err(PipelineError::Conditioning(format!(
                "CLIP skip {} is outside 1..={} for this text encoder",
                opts.clip_skip, cfg.layers
            )));
        }
        Self::build(
            clip,
            device,
            (clip_pad(facts), skip, false),
            embeddings,
            opts,
        )
    }

    /// The encoder with `(pad, skip, sdxl)`, the embeddings' widths checked.
    fn build(
        clip: &'a ClipTextModel,
        device: &Device,
        (pad, skip, sdxl): (ClipPad, usize, bool),
        embeddings: &[Embedding],
        opts: ConditioningOptions,
    ) -> Result<Self> {
        for e in embeddings {
            e.check_width(clip.config().hidden)?;
        }
        let tok = Tokenizer::shared();
        Ok(TextEncoder {
            clip,
            device: device.clone(),
            tok,
            pad,
            skip,
            index: embedding_index(tok, embeddings),
            sdxl,
            interrupt: None,
            vectors: embeddings
                .iter()
                .map(|e| (e.name.clone(), e.vectors.clone()))
                .collect(),
            opts,
        })
    }

    /// One of SDXL's encoders (CLIP-L: `pad` the end token; bigG: `pad` 0, with its
    /// projection): A1111 reads the penultimate layer without the final layer norm whatever
    /// the CLIP skip option says (`sdxl_clip_l_skip` off, its default).
    pub fn new_sdxl(
        clip: &'a ClipTextModel,
        device: &Device,
        pad: ClipPad,
        embeddings: &[Embedding],
        opts: ConditioningOptions,
    ) -> Result<Self> {
        let cfg = clip.config();
        if cfg.layers < 2 {
            return Err(PipelineError::Conditioning(format!(
                "an SDXL text encoder of {} layers has no penultimate layer",
                cfg.layers
            )));
        }
        Self::build(clip, device, (pad, 2, true), embeddings, opts)
    }

    /// Asks `interrupted` before each chunk is encoded; when it answers `true` the encoding
    /// stops with [`PipelineError::Interrupted`].
    pub fn with_interrupt(mut self, interrupted: &'a mut dyn FnMut() -> bool) -> Self {
        self.interrupt = Some(RefCell::new(interrupted));
        self
    }

    /// The CLIP skip in force (1 for SD2 whatever was asked).
    pub fn clip_skip(&self) -> usize {
        self.skip
    }

    /// The options.
    pub fn options(&self) -> &ConditioningOptions {
        &self.opts
    }

    /// A1111's `tokenize_line`: the chunks of one prompt text (emphasis parsed unless the
    /// mode is [`Emphasis::None`]).
    pub fn chunks(&self, text: &str) -> Result<PromptChunks> {
        let segments = match self.opts.emphasis {
            Emphasis::None => vec![Segment::new(text, 1.0)],
            _ => parse_prompt_attention(text)?,
        };
        Ok(chunk_segments(
            &segments,
            self.tok,
            &self.index,
            &self.opts.chunking,
        ))
    }

    /// The embeddings a prompt uses, by name in order of first use (for A1111's `TI hashes`
    /// infotext field); `negative` reads it as a negative prompt.
    pub fn embeddings_in(
        &self,
        prompt: &str,
        timeline: &Timeline,
        negative: bool,
    ) -> Result<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        for part in prompt_parts(prompt, timeline, negative)? {
            for e in &part.schedule {
                for fix in self.chunks(&e.text)?.chunks.iter().flat_map(|c| &c.fixes) {
                    if !names.contains(&fix.name) {
                        names.push(fix.name.clone());
                    }
                }
            }
        }
        Ok(names)
    }

    /// A1111's `forward(texts)`: the texts encoded together, `[texts, tokens, width]`.
    pub fn encode_texts(&self, texts: &[&str]) -> Result<Tensor> {
        let mut batch = Vec::with_capacity(texts.len());
        let mut cache: HashMap<&str, PromptChunks> = HashMap::new();
        for &t in texts {
            let c = match cache.get(t) {
                Some(c) => c.clone(),
                None => {
                    let c = self.chunks(t)?;
                    cache.insert(t, c.clone());
                    c
                }
            };
            batch.push(c);
        }
        self.encode_chunks(&batch)
    }

    /// Encodes chunked texts together (see [`Self::encode_texts`]).
    pub fn encode_chunks(&self, batch: &[PromptChunks]) -> Result<Tensor> {
        Ok(self.encode_chunks_pooled(batch)?.0)
    }

    /// [`Self::encode_texts`] with, for SDXL's bigG, the pooled embedding of every text's first
    /// chunk `[texts, projection]` (A1111's `zs[0].pooled`).
    pub fn encode_texts_pooled(&self, texts: &[&str]) -> Result<(Tensor, Option<Tensor>)> {
        let batch = texts
            .iter()
            .map(|t| self.chunks(t))
            .collect::<Result<Vec<_>>>()?;
        self.encode_chunks_pooled(&batch)
    }

    fn encode_chunks_pooled(&self, batch: &[PromptChunks]) -> Result<(Tensor, Option<Tensor>)> {
        let count = batch.iter().map(|p| p.chunks.len()).max().unwrap_or(0);
        if count == 0 {
            return Err(PipelineError::Conditioning("nothing to encode".into()));
        }
        let len = self.opts.chunking.chunk_length;
        let empty = Chunk::empty(len);
        let mut zs = Vec::with_capacity(count);
        let mut first_pooled = None;
        for i in 0..count {
            if let Some(asked) = &self.interrupt {
                if (asked.borrow_mut())() {
                    return Err(PipelineError::Interrupted);
                }
            }
            let chunks: Vec<&Chunk> = batch
                .iter()
                .map(|p| p.chunks.get(i).unwrap_or(&empty))
                .collect();
            let (z, pooled) = self.process_chunks(&chunks)?;
            if i == 0 {
                first_pooled = pooled;
            }
            zs.push(z);
        }
        Ok((Tensor::cat(&zs, 1)?, first_pooled))
    }

    /// A1111's `process_tokens` for chunk `i` of every text: `[texts, 77, width]`, and the
    /// pooled embedding when this is SDXL's bigG.
    fn process_chunks(&self, chunks: &[&Chunk]) -> Result<(Tensor, Option<Tensor>)> {
        let dev = self.device.clone();
        let n = chunks[0].tokens.len();
        if chunks.iter().any(|c| c.tokens.len() != n) {
            return Err(PipelineError::Conditioning(
                "chunks of one batch differ in length".into(),
            ));
        }
        let ids: Vec<u32> = chunks.iter().flat_map(|c| c.ids(self.pad)).collect();
        let ids = Tensor::from_vec(ids, (chunks.len(), n), &dev)?;
        let embeds = self.clip.embed_tokens(&ids).map_err(text_encoder)?;
        let embeds = if chunks.iter().any(|c| !c.fixes.is_empty()) {
            let rows = chunks
                .iter()
                .enumerate()
                .map(|(b, c)| self.splice(&embeds.get(b)?, c))
                .collect::<Result<Vec<_>>>()?;
            Tensor::stack(&rows, 0)?
        } else {
            embeds
        };
        let (z, pooled) = if !self.sdxl {
            let z = self.clip.forward_embeds(&embeds, self.skip);
            (z.map_err(text_encoder)?, None)
        } else if self.clip.config().projection.is_some() {
            let eos = ClipTextModel::eos_positions(&ids).map_err(text_encoder)?;
            let (z, p) = self
                .clip
                .hidden_and_pooled(&embeds, self.skip, &eos)
                .map_err(text_encoder)?;
            (z, Some(p))
        } else {
            let z = self.clip.hidden_state(&embeds, self.skip);
            (z.map_err(text_encoder)?, None)
        };
        let mults: Vec<f32> = chunks
            .iter()
            .flat_map(|c| c.multipliers.iter().map(|&m| m as f32))
            .collect();
        let mults = Tensor::from_vec(mults, (chunks.len(), n, 1), &dev)?.to_dtype(z.dtype())?;
        let z = match self.opts.emphasis {
            Emphasis::Original => {
                let original = mean(&z)?;
                let z = z.broadcast_mul(&mults)?;
                let new = mean(&z)?;
                let ratio = Tensor::new(&[original / new], &dev)?.to_dtype(z.dtype())?;
                z.broadcast_mul(&ratio)?
            }
            Emphasis::NoNorm => z.broadcast_mul(&mults)?,
            Emphasis::Ignore | Emphasis::None => z,
        };
        Ok((z, pooled))
    }

    /// A1111's `EmbeddingsWithFixes`: the vectors of each embedding replace the token
    /// embeddings from position `offset + 1` (after the start token), cut at the chunk's end.
    fn splice(&self, row: &Tensor, chunk: &Chunk) -> Result<Tensor> {
        let mut row = row.clone();
        let n = row.dim(0)?;
        for fix in &chunk.fixes {
            let vecs = self.vectors.get(&fix.name).ok_or_else(|| {
                PipelineError::Conditioning(format!("embedding `{}` is not loaded", fix.name))
            })?;
            let start = fix.offset + 1;
            let take = n.saturating_sub(start).min(vecs.dim(0)?);
            if take == 0 {
                continue;
            }
            let vecs = vecs
                .narrow(0, 0, take)?
                .to_device(row.device())?
                .to_dtype(row.dtype())?;
            let mut parts = vec![row.narrow(0, 0, start)?, vecs];
            if start + take < n {
                parts.push(row.narrow(0, start + take, n - start - take)?);
            }
            row = Tensor::cat(&parts, 0)?;
        }
        Ok(row)
    }

    /// A1111's `get_learned_conditioning` for one prompt's schedule: the texts are encoded
    /// together, one cond per entry.
    pub fn schedule_conds(&self, schedule: &[ScheduleEntry]) -> Result<Vec<ScheduledCond>> {
        let texts: Vec<&str> = schedule.iter().map(|e| e.text.as_str()).collect();
        scheduled(schedule, &self.encode_texts(&texts)?, None)
    }

    /// A positive prompt's conditioning (A1111's `get_multicond_learned_conditioning` for one
    /// prompt): extra networks removed, `AND` parts with weights, each with its schedule.
    pub fn prompt(&self, prompt: &str, timeline: &Timeline) -> Result<MultiCond> {
        prompt_conds(prompt, timeline, &|s| self.schedule_conds(s))
    }

    /// A negative prompt's conditioning (A1111's `get_learned_conditioning`: no `AND` split,
    /// no extra-network removal), one cond per schedule entry.
    pub fn negative(&self, prompt: &str, timeline: &Timeline) -> Result<Vec<ScheduledCond>> {
        negative_conds(prompt, timeline, &|s| self.schedule_conds(s))
    }
}

/// The entries of `schedule` with their rows of `context` `[entries, tokens, width]` and, for
/// SDXL, of `vectors` `[entries, adm_in]`.
pub(crate) fn scheduled(
    schedule: &[ScheduleEntry],
    context: &Tensor,
    vectors: Option<&Tensor>,
) -> Result<Vec<ScheduledCond>> {
    schedule
        .iter()
        .enumerate()
        .map(|(i, e)| {
            Ok(ScheduledCond {
                end_step: e.end_step,
                cond: context.get(i)?,
                vector: vectors.map(|v| v.get(i)).transpose()?,
            })
        })
        .collect()
}

/// A schedule's texts encoded together, one cond per entry.
pub(crate) type EncodeSchedule<'e> = dyn Fn(&[ScheduleEntry]) -> Result<Vec<ScheduledCond>> + 'e;

/// [`TextEncoder::prompt`] over any schedule encoder (`encode`): the parts' schedules, each
/// distinct one encoded once.
pub(crate) fn prompt_conds(
    prompt: &str,
    timeline: &Timeline,
    encode: &EncodeSchedule<'_>,
) -> Result<MultiCond> {
    let mut cache: HashMap<String, Vec<ScheduledCond>> = HashMap::new();
    let mut parts = Vec::new();
    for PartText { weight, schedule } in prompt_parts(prompt, timeline, false)? {
        let key = schedule
            .iter()
            .map(|e| format!("{}\u{0}{}", e.end_step, e.text))
            .collect::<Vec<_>>()
            .join("\u{1}");
        let conds = match cache.get(&key) {
            Some(c) => c.clone(),
            None => {
                let c = encode(&schedule)?;
                cache.insert(key, c.clone());
                c
            }
        };
        parts.push(WeightedCond {
            weight,
            schedule: conds,
        });
    }
    Ok(MultiCond { parts })
}

/// [`TextEncoder::negative`] over any schedule encoder (`encode`).
pub(crate) fn negative_conds(
    prompt: &str,
    timeline: &Timeline,
    encode: &EncodeSchedule<'_>,
) -> Result<Vec<ScheduledCond>> {
    let parts = prompt_parts(prompt, timeline, true)?;
    match parts.into_iter().next() {
        Some(part) => encode(&part.schedule),
        None => Err(PipelineError::Conditioning("empty schedule".into())),
    }
}

fn text_encoder(source: sumi_models::ModelError) -> PipelineError {
    PipelineError::TextEncoder(source)
}

/// Mean of every element, accumulated in f64, as the f32 value torch's `mean()` gives.
fn mean(z: &Tensor) -> Result<f32> {
    let m = z
        .to_dtype(DType::F64)?
        .flatten_all()?
        .mean(D::Minus1)?
        .to_scalar::<f64>()?;
    Ok(m as f32)
}
