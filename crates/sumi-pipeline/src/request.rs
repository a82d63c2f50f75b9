//! What a caller asks for, validated before any work starts. Strings (sampler, scheduler,
//! RNG names) are parsed at the edge into enums; limits are named in their errors.

use sumi_sampling::{NoiseSource, SamplerKind, Scheduler};

pub use crate::hires::Hires;
pub use crate::sd_upscale::SdUpscale;

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
/// Longest prompt or negative prompt accepted, in bytes of UTF-8 (64 KiB). A1111 sets no
/// limit; this one is far above the prompts people write (a 75-token chunk is a few hundred
/// bytes) and bounds the work one request can ask of the prompt parser, the tokenizer and
/// the text encoder.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;

/// The img2img part of a request.
#[derive(Debug, Clone)]
pub struct Img2Img {
    /// The source image, already decoded.
    pub init_image: image::RgbImage,
    /// How the source is fitted to width × height.
    pub resize_mode: ResizeMode,
    /// How far the result may move from the source (0–1).
    pub denoising_strength: f64,
    /// A mask: change only part of the picture (A1111's inpaint).
    pub inpaint: Option<Inpaint>,
}

/// What fills the masked area before sampling (A1111's `inpainting_fill`, 0–3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskedContent {
    /// The source blurred into the masked area (0).
    Fill,
    /// The source as it is (1, A1111's UI default).
    #[default]
    Original,
    /// Fresh noise in the masked latents (2).
    LatentNoise,
    /// Zeros in the masked latents (3).
    LatentNothing,
}

impl MaskedContent {
    /// A1111's infotext and UI label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Fill => "fill",
            Self::Original => "original",
            Self::LatentNoise => "latent noise",
            Self::LatentNothing => "latent nothing",
        }
    }

    /// A1111's API number (`inpainting_fill`).
    pub fn from_index(i: i64) -> Option<Self> {
        Some(match i {
            0 => Self::Fill,
            1 => Self::Original,
            2 => Self::LatentNoise,
            3 => Self::LatentNothing,
            _ => return None,
        })
    }
}

/// The inpaint part of an img2img request (A1111's mask settings).
#[derive(Debug, Clone)]
pub struct Inpaint {
    /// The mask as given: white (or opaque, for an RGBA image whose alpha is not all 255)
    /// marks what changes. Turned into a binary mask as A1111's `create_binary_mask`.
    pub mask: image::DynamicImage,
    /// Gaussian blur sigma across (pixels; 0 = none).
    pub blur_x: u32,
    /// Gaussian blur sigma down (pixels; 0 = none).
    pub blur_y: u32,
    /// Change what is *not* masked.
    pub invert: bool,
    /// What the masked area starts from.
    pub fill: MaskedContent,
    /// Work on the masked area's box only, at full resolution, and paste it back.
    pub full_res: bool,
    /// Pixels added around the masked area's box when `full_res`.
    pub full_res_padding: u32,
    /// Threshold the mask at 128 (A1111's `mask_round`, on by default).
    pub round: bool,
}

/// Largest mask blur sigma accepted, in pixels.
pub const MAX_MASK_BLUR: u32 = 256;

impl Inpaint {
    /// Checks the mask settings against the rest of the request.
    fn validate(&self, i: &Img2Img) -> Result<()> {
        let (mw, mh) = (self.mask.width(), self.mask.height());
        if mw == 0 || mh == 0 {
            return Err(bad("mask", "the mask image is empty (0 pixels)"));
        }
        for (field, v) in [("mask-blur-x", self.blur_x), ("mask-blur-y", self.blur_y)] {
            if v > MAX_MASK_BLUR {
                return Err(bad(field, format!("{v} is outside 0..={MAX_MASK_BLUR}")));
            }
        }
        if self.full_res_padding > MAX_SIDE {
            return Err(bad(
                "inpaint-full-res-padding",
                format!("{} is outside 0..={MAX_SIDE}", self.full_res_padding),
            ));
        }
        if i.resize_mode == ResizeMode::LatentUpscale {
            return Err(bad(
                "resize-mode",
                "latent-upscale cannot be combined with a mask (A1111 fails on it too)",
            ));
        }
        Ok(())
    }
}

impl Default for Inpaint {
    /// A1111's UI defaults: blur 4, original, whole picture, padding 32 (an empty 1×1 mask).
    fn default() -> Self {
        Self {
            mask: image::DynamicImage::new_luma8(1, 1),
            blur_x: 4,
            blur_y: 4,
            invert: false,
            fill: MaskedContent::Original,
            full_res: false,
            full_res_padding: 32,
            round: true,
        }
    }
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
    /// How strongly inpainting checkpoints see the masked source (A1111's
    /// `inpainting_mask_weight`, 0–1; 1 = the full mask).
    pub inpainting_mask_weight: f64,
    /// The `Lora hashes` of the infotext the request was read from: a LoRA whose file's hash
    /// differs from the one recorded is named in a warning.
    pub lora_hashes: Option<String>,
    /// The `Model hash` of the infotext the request was read from: another checkpoint's is named
    /// in a warning.
    pub model_hash: Option<String>,
    /// The hires fix (txt2img only): a second, img2img pass at a larger size.
    pub hires: Option<Hires>,
    /// A1111's SD upscale script (img2img only): upscale, img2img tile by tile, recombine.
    pub sd_upscale: Option<SdUpscale>,
    /// A1111's options that skip the negative prompt on some steps (NGMS, skip early CFG).
    pub uncond_skip: crate::UncondSkip,
    /// Token merging ratio of the (first) pass, as A1111 picks it for the job (0 = none;
    /// tomesd on the U-Net's full-resolution self-attention).
    pub token_merging_ratio: f64,
    /// Token merging ratio of the hires fix's second pass (A1111's `token_merging_ratio_hr`,
    /// else the first pass's).
    pub token_merging_ratio_hr: f64,
    /// Other checkpoints for part of the job: the refiner, the hires pass's checkpoint.
    pub stages: crate::refiner::Stages,
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
            inpainting_mask_weight: 1.0,
            lora_hashes: None,
            model_hash: None,
            hires: None,
            sd_upscale: None,
            uncond_skip: crate::UncondSkip::default(),
            token_merging_ratio: 0.0,
            token_merging_ratio_hr: 0.0,
            stages: crate::refiner::Stages::default(),
        }
    }
}

pub(crate) fn bad(field: &'static str, detail: impl Into<String>) -> PipelineError {
    PipelineError::Request {
        field,
        detail: detail.into(),
    }
}

impl Request {
    /// Checks every field against its limits; the error names the field.
    pub fn validate(&self) -> Result<()> {
        for (field, p) in [
            ("prompt", &self.prompt),
            ("negative-prompt", &self.negative_prompt),
        ] {
            if p.len() > MAX_PROMPT_BYTES {
                return Err(bad(
                    field,
                    format!(
                        "{} bytes is longer than the limit of {MAX_PROMPT_BYTES} bytes (64 KiB)",
                        p.len()
                    ),
                ));
            }
        }
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
        if let Some(i) = &self.img2img {
            let s = i.denoising_strength;
            if !s.is_finite() || !(0.0..=1.0).contains(&s) {
                return Err(bad("denoising-strength", format!("{s} is outside 0..=1")));
            }
            if let Some(m) = &i.inpaint {
                m.validate(i)?;
            }
        }
        if let Some(h) = &self.hires {
            if self.img2img.is_some() {
                return Err(bad(
                    "enable-hr",
                    "the hires fix is a txt2img pass (A1111 has none for img2img)",
                ));
            }
            h.validate(self)?;
        }
        if let Some(s) = &self.sd_upscale {
            s.validate(self)?;
        }
        let w = self.inpainting_mask_weight;
        if !w.is_finite() || !(0.0..=1.0).contains(&w) {
            return Err(bad(
                "inpainting-mask-weight",
                format!("{w} is outside 0..=1"),
            ));
        }
        for (field, r) in [
            ("token-merging-ratio", self.token_merging_ratio),
            ("token-merging-ratio-hr", self.token_merging_ratio_hr),
        ] {
            if !r.is_finite() || !(0.0..=1.0).contains(&r) {
                return Err(bad(field, format!("{r} is outside 0..=1")));
            }
        }
        self.stages.validate(self)?;
        self.uncond_skip.validate()
    }
}
