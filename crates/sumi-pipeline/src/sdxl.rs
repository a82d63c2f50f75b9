//! SDXL conditioning as A1111 v1.10.1 computes it (`modules/sd_models_xl.py`
//! `get_learned_conditioning`, SGM's `GeneralConditioner`): both encoders read the same texts
//! with A1111's chunking and emphasis each ([`TextEncoder::new_sdxl`]); the cross-attention
//! context is CLIP-L's states then bigG's, side by side (768 + 1280 = 2048 wide at full size;
//! the refiner has bigG only), and the ADM vector `y` is bigG's pooled embedding of the first
//! chunk then the Fourier embeddings ([`sumi_models::fourier_embedding`], 256 channels each)
//! of the original size (height, width), the crop's top and left, and the target size (height,
//! width) — A1111 passes the image's size as both sizes — or, for the refiner, the aesthetic
//! score instead of the target size (A1111's options: 6 for prompts, 2.5 for negative ones).
//! An all-empty negative prompt has zero context and zero pooled embedding
//! (`force_zero_embeddings`), its size embeddings kept.
//!
//! [`SdxlEncoders`] gives a job's prompts as the pipeline's schedules ([`ScheduledCond`] with
//! the ADM vector in `vector`).

use candle_core::Tensor;
use sumi_models::fourier_embedding;
use sumi_prompt::{ScheduleEntry, Timeline};

use crate::conditioning::{
    negative_conds, prompt_conds, scheduled, MultiCond, ScheduledCond, TextEncoder,
};
use crate::error::{PipelineError, Result};

/// A1111's default refiner aesthetic score for prompts (`sdxl_refiner_high_aesthetic_score`).
pub const HIGH_AESTHETIC_SCORE: f32 = 6.0;
/// A1111's default refiner aesthetic score for negative prompts
/// (`sdxl_refiner_low_aesthetic_score`).
pub const LOW_AESTHETIC_SCORE: f32 = 2.5;

/// The size conditions of SDXL's ADM vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AdmConditions {
    /// The base model: original size, crop top/left, target size (heights first).
    Base {
        /// (height, width) of the original image.
        original: (f32, f32),
        /// (top, left) of the crop.
        crop: (f32, f32),
        /// (height, width) of the target.
        target: (f32, f32),
    },
    /// The refiner: original size, crop top/left, aesthetic score.
    Refiner {
        /// (height, width) of the original image.
        original: (f32, f32),
        /// (top, left) of the crop.
        crop: (f32, f32),
        /// The aesthetic score.
        aesthetic: f32,
    },
}

impl AdmConditions {
    /// A1111's base conditions for an image of `width` × `height`: both sizes the image's,
    /// the crop from its options (`sdxl_crop_top`, `sdxl_crop_left`, default 0).
    pub fn base(width: u32, height: u32, crop_top: u32, crop_left: u32) -> Self {
        let size = (height as f32, width as f32);
        Self::Base {
            original: size,
            crop: (crop_top as f32, crop_left as f32),
            target: size,
        }
    }

    /// A1111's refiner conditions: the base's sizes, the aesthetic score for a prompt or a
    /// negative prompt ([`HIGH_AESTHETIC_SCORE`], [`LOW_AESTHETIC_SCORE`] by default).
    pub fn refiner(width: u32, height: u32, crop_top: u32, crop_left: u32, aesthetic: f32) -> Self {
        Self::Refiner {
            original: (height as f32, width as f32),
            crop: (crop_top as f32, crop_left as f32),
            aesthetic,
        }
    }

    /// The values embedded, in the conditioner's order.
    pub fn values(&self) -> Vec<f32> {
        match *self {
            Self::Base {
                original,
                crop,
                target,
            } => vec![original.0, original.1, crop.0, crop.1, target.0, target.1],
            Self::Refiner {
                original,
                crop,
                aesthetic,
            } => vec![original.0, original.1, crop.0, crop.1, aesthetic],
        }
    }
}

/// The width of each Fourier embedding for a U-Net whose ADM input is `adm_in` wide, given
/// the pooled embedding's width and the conditions (256 for SDXL: 2816 = 1280 + 6 · 256,
/// refiner 2560 = 1280 + 5 · 256).
pub fn fourier_width(adm_in: usize, pooled: usize, conditions: &AdmConditions) -> Result<usize> {
    let n = conditions.values().len();
    let rest = adm_in.saturating_sub(pooled);
    if rest == 0 || !rest.is_multiple_of(n) || !(rest / n).is_multiple_of(2) {
        return Err(PipelineError::Conditioning(format!(
            "an ADM input of {adm_in} does not hold a pooled embedding of {pooled} and {n} \
             even-width Fourier embeddings"
        )));
    }
    Ok(rest / n)
}

/// A1111's `force_zero_negative_prompt`: a negative prompt whose texts are all empty.
pub fn force_zero(negative: bool, texts: &[&str]) -> bool {
    negative && texts.iter().all(|t| t.is_empty())
}

/// SDXL conditioning of a batch of texts.
#[derive(Debug, Clone)]
pub struct SdxlCond {
    /// The cross-attention context `[texts, tokens, CLIP-L width + bigG width]`.
    pub context: Tensor,
    /// The ADM vector `[texts, pooled + conditions · fourier width]`.
    pub vector: Tensor,
}

/// SGM's conditioner on `texts` (A1111 encodes a schedule's texts together): `clip_l` is
/// `None` for the refiner; `zero` is [`force_zero`]'s answer.
pub fn sdxl_conditioning(
    clip_l: Option<&TextEncoder>,
    clip_g: &TextEncoder,
    texts: &[&str],
    conditions: &AdmConditions,
    fourier: usize,
    zero: bool,
) -> Result<SdxlCond> {
    let (zg, pooled) = clip_g.encode_texts_pooled(texts)?;
    let pooled = pooled.ok_or_else(|| {
        PipelineError::Conditioning("SDXL's bigG encoder has no text_projection".into())
    })?;
    let mut parts = Vec::with_capacity(2);
    if let Some(l) = clip_l {
        parts.push(l.encode_texts(texts)?);
    }
    parts.push(zg);
    if let [a, b] = &parts[..] {
        if a.dim(1)? != b.dim(1)? {
            return Err(PipelineError::Conditioning(format!(
                "CLIP-L gives {} tokens and bigG {} for the same texts",
                a.dim(1)?,
                b.dim(1)?
            )));
        }
    }
    let mut context = Tensor::cat(&parts, 2)?;
    let mut pooled = pooled;
    if zero {
        context = context.zeros_like()?;
        pooled = pooled.zeros_like()?;
    }
    let values = conditions.values();
    let rows: Vec<f32> = texts.iter().flat_map(|_| values.iter().copied()).collect();
    let rows = Tensor::from_vec(rows, (texts.len(), values.len()), pooled.device())?;
    let emb = fourier_embedding(&rows, fourier)
        .map_err(PipelineError::TextEncoder)?
        .to_dtype(pooled.dtype())?;
    Ok(SdxlCond {
        context,
        vector: Tensor::cat(&[&pooled, &emb], 1)?,
    })
}

/// SDXL's encoders and the size conditions of one job: A1111's `get_learned_conditioning`
/// on each schedule's texts.
pub struct SdxlEncoders<'a> {
    /// CLIP-L (`None` for the refiner).
    pub clip_l: Option<TextEncoder<'a>>,
    /// OpenCLIP bigG, with its projection.
    pub clip_g: TextEncoder<'a>,
    /// The picture's (width, height): the original and target sizes.
    pub size: (u32, u32),
    /// A1111's `sdxl_crop_top`, `sdxl_crop_left`.
    pub crop: (u32, u32),
    /// The U-Net's ADM input width.
    pub adm_in: usize,
    /// The pooled embedding's width (bigG's projection).
    pub pooled: usize,
    /// A refiner (aesthetic score instead of the target size).
    pub refiner: bool,
}

impl SdxlEncoders<'_> {
    /// The size conditions of a prompt or a negative prompt.
    pub fn conditions(&self, negative: bool) -> AdmConditions {
        let ((w, h), (top, left)) = (self.size, self.crop);
        if self.refiner {
            let score = if negative {
                LOW_AESTHETIC_SCORE
            } else {
                HIGH_AESTHETIC_SCORE
            };
            AdmConditions::refiner(w, h, top, left, score)
        } else {
            AdmConditions::base(w, h, top, left)
        }
    }

    /// A schedule's texts encoded together, one cond (context and vector) per entry.
    pub fn schedule_conds(
        &self,
        schedule: &[ScheduleEntry],
        negative: bool,
    ) -> Result<Vec<ScheduledCond>> {
        let texts: Vec<&str> = schedule.iter().map(|e| e.text.as_str()).collect();
        let conditions = self.conditions(negative);
        let fourier = fourier_width(self.adm_in, self.pooled, &conditions)?;
        let zero = force_zero(negative, &texts);
        let c = sdxl_conditioning(
            self.clip_l.as_ref(),
            &self.clip_g,
            &texts,
            &conditions,
            fourier,
            zero,
        )?;
        scheduled(schedule, &c.context, Some(&c.vector))
    }

    /// A prompt's conditioning, as [`TextEncoder::prompt`].
    pub fn prompt(&self, prompt: &str, timeline: &Timeline) -> Result<MultiCond> {
        prompt_conds(prompt, timeline, &|s| self.schedule_conds(s, false))
    }

    /// A negative prompt's conditioning, as [`TextEncoder::negative`].
    pub fn negative(&self, prompt: &str, timeline: &Timeline) -> Result<Vec<ScheduledCond>> {
        negative_conds(prompt, timeline, &|s| self.schedule_conds(s, true))
    }
}
