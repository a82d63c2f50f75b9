//! SDXL in the pipeline: both text encoders built at load, the prompts encoded as
//! [`SdxlEncoders`] gives them (context and ADM vector per schedule entry), and the features
//! not wired for SDXL yet refused by name rather than run wrong.

use std::sync::Arc;

use candle_core::{DType, Device};
use sumi_models::ClipTextModel;
use sumi_prompt::{ClipPad, Timeline};

use crate::checkpoint::Checkpoint;
use crate::conditioning::{ConditioningOptions, MultiCond, ScheduledCond, TextEncoder};
use crate::error::{PipelineError, Result};
use crate::generate::Pipeline;
use crate::networks::{activations, Active};
use crate::request::Request;
use crate::sdxl::SdxlEncoders;

/// A1111's `sdxl_crop_top` and `sdxl_crop_left` options (their defaults; Sumi has no option
/// for them yet).
const CROP: (u32, u32) = (0, 0);

/// The U-Net and both text encoders of an SDXL checkpoint (no networks merged: LoRA on SDXL
/// is refused per job, see [`Pipeline::sdxl_refusals`]).
pub(crate) fn build_sdxl(
    ck: &Checkpoint,
    dtype: DType,
    dev: &Device,
) -> Result<(sumi_models::UNet, ClipTextModel, ClipTextModel)> {
    Ok((
        ck.unet(dtype, dev)?,
        ck.clip(dtype, dev)?,
        ck.clip_g(dtype, dev)?,
    ))
}

/// The warnings of loading an SDXL model with `opts`: the embeddings folder is not read.
pub(crate) fn load_notes(sdxl: bool, opts: &crate::generate::LoadOptions) -> Vec<String> {
    let mut notes = Vec::new();
    if !sdxl {
        return notes;
    }
    if let Some(dir) = &opts.embeddings {
        notes.push(format!(
            "embeddings: textual-inversion embeddings are not supported on SDXL models yet; {} \
             was not read",
            dir.display()
        ));
    }
    notes
}

fn unsupported(field: &'static str, what: &str) -> PipelineError {
    PipelineError::Request {
        field,
        detail: format!("{what} is not supported on SDXL models yet"),
    }
}

impl Pipeline {
    /// SDXL's second text encoder (OpenCLIP bigG), `None` for SD1/SD2.
    pub(crate) fn sdxl_clip_g(&self) -> Option<&Arc<ClipTextModel>> {
        self.clip_g.as_ref()
    }

    /// On an SDXL model: an error naming what the request asks for that is not wired for SDXL
    /// yet (hires fix, SD upscale, LoRA and hypernetworks), else the warnings for what is left
    /// out ([`load_notes`]). Nothing for SD1/SD2.
    pub(crate) fn sdxl_refusals(&self, req: &Request) -> Result<Vec<String>> {
        if self.clip_g.is_none() {
            return Ok(Vec::new());
        }
        if req.hires.is_some() {
            return Err(unsupported("hires", "the hires fix"));
        }
        if req.sd_upscale.is_some() {
            return Err(unsupported("sd_upscale", "SD upscale"));
        }
        let asked = activations(&req.prompt)?;
        if !asked.loras.is_empty() {
            return Err(unsupported("prompt", "LoRA (`<lora:…>`)"));
        }
        if !asked.hypernets.is_empty() {
            return Err(unsupported("prompt", "a hypernetwork (`<hypernet:…>`)"));
        }
        Ok(self.load_notes.clone())
    }

    /// A1111's SDXL conditioning of a prompt and a negative prompt (both encoders, the ADM
    /// vector of the request's size and crop 0, 0); `interrupted` is asked between bigG
    /// chunks.
    pub(crate) fn encode_sdxl(
        &self,
        active: &Active,
        (prompt, negative): (&str, &str),
        timeline: &Timeline,
        req: &Request,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<(MultiCond, Vec<ScheduledCond>)> {
        let clip_g = self
            .clip_g
            .as_ref()
            .ok_or_else(|| PipelineError::Conditioning("not an SDXL model".into()))?;
        let opts = ConditioningOptions {
            clip_skip: req.clip_skip,
            ..Default::default()
        };
        let unet_cfg = active.unet.config();
        let adm_in = unet_cfg
            .adm_in
            .ok_or_else(|| PipelineError::Conditioning("the SDXL U-Net has no ADM input".into()))?;
        let pooled = clip_g.config().projection.ok_or_else(|| {
            PipelineError::Conditioning("SDXL's bigG encoder has no text_projection".into())
        })?;
        let dev = &self.device;
        let l = TextEncoder::new_sdxl(&active.clip, dev, ClipPad::EndOfText, &[], opts.clone())?;
        let g = TextEncoder::new_sdxl(clip_g, dev, ClipPad::Zero, &[], opts)?
            .with_interrupt(interrupted);
        // an SDXL refiner (a job's refiner, [`crate::refiner`]) has bigG only
        let refiner = self.model.facts.family == sumi_weights::Family::SdxlRefiner;
        let enc = SdxlEncoders {
            clip_l: (!refiner).then_some(l),
            clip_g: g,
            size: (req.width, req.height),
            crop: CROP,
            adm_in,
            pooled,
            refiner,
        };
        let cond = enc.prompt(prompt, timeline)?;
        Ok((cond, enc.negative(negative, timeline)?))
    }
}
