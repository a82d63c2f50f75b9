//! What a caller asks for, validated before any work starts. Strings (sampler, scheduler,
//! RNG names) are parsed at the edge into enums; limits are named in their errors.

use sumi_sampling::{NoiseSource, SamplerKind, Scheduler};

use crate::error::{PipelineError, Result};
use crate::image::ResizeMode;

/// Largest width or height accepted, in pixels.
pub const MAX_SIDE: u32 = 4096;
/// Most sampling steps accepted.
pub const MAX_STEPS: u32 = 500;
/// Most images per batch.
pub const MAX_BATCH_SIZE: u32 = 64;
/// Most batches per request.
pub const MAX_BATCH_COUNT: u32 = 1000;

/// The img2img part of a request.
#[derive(Debug, Clone)]
pub struct Img2Img {
    /// The source image, already decoded.
    pub init_image: image::RgbImage,
    /// How the source is fitted to width × height.
    pub resize_mode: ResizeMode,
    /// How far the result may move from the source (0–1).
    pub denoising_strength: f64,
}

/// One generation request (A1111's processing parameters).
#[derive(Debug, Clone)]
pub struct Request {
    /// The prompt, in A1111 syntax.
    pub prompt: String,
    /// The negative prompt.
    pub negative_prompt: String,
    /// Seed; -1 draws a random one (reported back).
    pub seed: i64,
    /// Variation seed; -1 draws a random one.
    pub subseed: i64,
    /// Variation strength (0 = off).
    pub subseed_strength: f32,
    /// Sampling steps.
    pub steps: u32,
    /// Classifier-free guidance scale.
    pub cfg_scale: f64,
    /// The sampler.
    pub sampler: SamplerKind,
    /// The schedule (Automatic = the sampler's default).
    pub scheduler: Scheduler,
    /// Output width in pixels (a multiple of 8 after A1111's rounding).
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// The noise source.
    pub rng: NoiseSource,
    /// CLIP skip (1 = last layer).
    pub clip_skip: usize,
    /// Images per sampler run.
    pub batch_size: u32,
    /// Sampler runs.
    pub batch_count: u32,
    /// A1111's "do exact steps" for img2img.
    pub exact_steps: bool,
    /// img2img settings; `None` for txt2img.
    pub img2img: Option<Img2Img>,
}

impl Default for Request {
    /// A1111's UI defaults: 20 steps, CFG 7, DPM++ 2M with its default schedule, 512×512,
    /// GPU noise, random seed.
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            seed: -1,
            subseed: -1,
            subseed_strength: 0.0,
            steps: 20,
            cfg_scale: 7.0,
            sampler: SamplerKind::DpmPp2M,
            scheduler: Scheduler::Automatic,
            width: 512,
            height: 512,
            rng: NoiseSource::Gpu,
            clip_skip: 1,
            batch_size: 1,
            batch_count: 1,
            exact_steps: false,
            img2img: None,
        }
    }
}

fn bad(field: &'static str, detail: impl Into<String>) -> PipelineError {
    PipelineError::Request {
        field,
        detail: detail.into(),
    }
}

impl Request {
    /// Checks every field against its limits; the error names the field.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [("width", self.width), ("height", self.height)] {
            if !(64..=MAX_SIDE).contains(&v) {
                return Err(bad(field, format!("{v} is outside 64..={MAX_SIDE} pixels")));
            }
        }
        if !(1..=MAX_STEPS).contains(&self.steps) {
            return Err(bad(
                "steps",
                format!("{} is outside 1..={MAX_STEPS}", self.steps),
            ));
        }
        if !self.cfg_scale.is_finite() || !(0.0..=100.0).contains(&self.cfg_scale) {
            return Err(bad(
                "cfg-scale",
                format!("{} is outside 0..=100", self.cfg_scale),
            ));
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(bad(
                "batch-size",
                format!("{} is outside 1..={MAX_BATCH_SIZE}", self.batch_size),
            ));
        }
        if !(1..=MAX_BATCH_COUNT).contains(&self.batch_count) {
            return Err(bad(
                "batch-count",
                format!("{} is outside 1..={MAX_BATCH_COUNT}", self.batch_count),
            ));
        }
        if !(1..=12).contains(&self.clip_skip) {
            return Err(bad(
                "clip-skip",
                format!("{} is outside 1..=12", self.clip_skip),
            ));
        }
        if !self.subseed_strength.is_finite() || !(0.0..=1.0).contains(&self.subseed_strength) {
            return Err(bad(
                "subseed-strength",
                format!("{} is outside 0..=1", self.subseed_strength),
            ));
        }
        if self.seed < -1 || self.subseed < -1 {
            return Err(bad("seed", "seeds are -1 (random) or non-negative"));
        }
        if !self.sampler.is_implemented() {
            return Err(bad(
                "sampler",
                format!(
                    "{} is not available in the pipeline yet",
                    self.sampler.label()
                ),
            ));
        }
        if let Some(i) = &self.img2img {
            let s = i.denoising_strength;
            if !s.is_finite() || !(0.0..=1.0).contains(&s) {
                return Err(bad("denoising-strength", format!("{s} is outside 0..=1")));
            }
        }
        Ok(())
    }
}
