//! SDXL in the pipeline: both text encoders built at load, the prompts encoded as
//! [`SdxlEncoders`] gives them (context and ADM vector per schedule entry), and the warnings
//! particular to SDXL (an external VAE named for another family, SD1/SD2 embeddings named in a
//! prompt).

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};
use sumi_models::ClipTextModel;
use sumi_prompt::{ClipPad, Timeline};

use crate::checkpoint::Checkpoint;
use sumi_weights::embedding::{Embedding, EmbeddingError, SdxlEmbeddingDir};

use crate::conditioning::{ConditioningOptions, MultiCond, ScheduledCond, TextEncoder};
use crate::embedding_report::{EmbeddingInfo, EmbeddingReport, SkippedEmbedding};
use crate::error::{PipelineError, Result};
use crate::generate::Pipeline;
use crate::networks::Active;
use crate::request::Request;
use crate::sdxl::SdxlEncoders;

/// A1111's `sdxl_crop_top` and `sdxl_crop_left` options (their defaults; Sumi has no option
/// for them yet).
const CROP: (u32, u32) = (0, 0);

/// The U-Net and both text encoders of an SDXL checkpoint (no networks merged: the first job
/// merges its LoRAs in place).
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

/// The warnings of loading a model with `opts`: an external VAE whose file name says another
/// model family ([`vae_family_note`]).
pub(crate) fn load_notes(sdxl: bool, opts: &crate::generate::LoadOptions) -> Vec<String> {
    opts.vae
        .as_deref()
        .and_then(|p| vae_family_note(p, sdxl))
        .into_iter()
        .collect()
}

/// A warning when the external VAE `path` may be for another model family than the model's.
/// SD1/SD2 and SDXL VAEs have the same tensors (A1111 uses either without a word), and
/// nothing in a VAE file says which family it was trained for; only its name can (SDXL VAEs
/// are published as `sdxl_vae`, `sdxl-vae-fp16-fix`, …). So on SDXL a name without `xl` is
/// warned, and on SD1/SD2 a name with `sdxl`.
pub(crate) fn vae_family_note(path: &Path, sdxl: bool) -> Option<String> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    let consequence = "colours and detail come out wrong with another family's VAE (A1111 \
                       uses it without a word: both families' VAEs have the same tensors)";
    if sdxl && !name.contains("xl") {
        Some(format!(
            "vae: {} does not say SDXL in its name; if it is an SD1/SD2 VAE, {consequence}",
            path.display()
        ))
    } else if !sdxl && name.contains("sdxl") {
        Some(format!(
            "vae: {} looks like an SDXL VAE by its name, on an SD1/SD2 model: {consequence}",
            path.display()
        ))
    } else {
        None
    }
}

/// The SDXL embeddings of `dir` for text encoders `clip_l` and `clip_g` wide, as A1111
/// registers them (`clip_l`/`clip_g` pairs of the summed width; one-encoder SD1/SD2 embeddings
/// skipped): the CLIP-L parts, the bigG parts (same names, same order), and the report.
pub(crate) fn load_sdxl_embeddings(
    dir: &Path,
    clip_l: usize,
    clip_g: usize,
) -> Result<(Vec<Embedding>, Vec<Embedding>, EmbeddingReport)> {
    let found = SdxlEmbeddingDir::load(dir, clip_l, clip_g)?;
    let mut report = EmbeddingReport::default();
    for e in &found.loaded {
        report.loaded.push(EmbeddingInfo {
            shape: e.width(),
            ..EmbeddingInfo::from(&e.clip_l)
        });
    }
    for e in &found.other {
        let reason = EmbeddingError::NotSdxl {
            path: e.path.clone(),
            width: e.width(),
        };
        report.skipped.push(SkippedEmbedding {
            embedding: EmbeddingInfo::from(e),
            reason: reason.to_string(),
        });
    }
    report
        .unreadable
        .extend(found.skipped.iter().map(ToString::to_string));
    let (l, g) = found
        .loaded
        .into_iter()
        .map(|e| (e.clip_l, e.clip_g))
        .unzip();
    Ok((l, g, report))
}

impl Pipeline {
    /// The latent space of the model's latents (previews pick their projection and TAESD
    /// decoder by it).
    pub fn latent_space(&self) -> crate::preview::LatentSpace {
        if self.clip_g.is_some() {
            crate::preview::LatentSpace::Sdxl
        } else {
            crate::preview::LatentSpace::Sd
        }
    }

    /// SDXL's second text encoder (OpenCLIP bigG) as the last job's networks left it, `None`
    /// for SD1/SD2.
    pub(crate) fn sdxl_clip_g(&self) -> Option<&std::sync::Mutex<Option<Arc<ClipTextModel>>>> {
        self.clip_g.as_ref()
    }

    /// The warnings of loading ([`load_notes`]) and, on an SDXL model, for the prompts'
    /// skipped embeddings.
    pub(crate) fn sdxl_notes(&self, req: &Request) -> Vec<String> {
        let mut notes = self.load_notes.clone();
        if self.clip_g.is_some() {
            notes.extend(self.skipped_embedding_notes(req));
        }
        notes
    }

    /// A warning for each skipped embedding (an SD1/SD2 one on SDXL) whose name the prompts
    /// hold: A1111 reads it as words.
    fn skipped_embedding_notes(&self, req: &Request) -> Vec<String> {
        self.embedding_report
            .skipped
            .iter()
            .filter(|s| {
                let name = s.embedding.name.as_str();
                req.prompt.contains(name) || req.negative_prompt.contains(name)
            })
            .map(|s| {
                format!(
                    "embedding {}: not used, the prompt reads the name as words: {}",
                    s.embedding.name, s.reason
                )
            })
            .collect()
    }

    /// The width bundled embeddings must have: A1111's `expected_shape`, on SDXL both text
    /// encoders' widths summed (so no one-encoder embedding fits).
    pub(crate) fn embedding_width(&self) -> usize {
        let g = self.clip_g.as_ref().and_then(|m| {
            m.lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|g| g.config().hidden)
        });
        self.clip_width + g.unwrap_or(0)
    }

    /// A1111's SDXL conditioning of a prompt and a negative prompt (both encoders, the ADM
    /// vector of the request's size and crop 0, 0: the hires fix's second pass passes a request
    /// sized as its upscale target, SD upscale one sized as its tiles); `interrupted` is asked
    /// between bigG chunks.
    pub(crate) fn encode_sdxl(
        &self,
        active: &Active,
        (prompt, negative): (&str, &str),
        timeline: &Timeline,
        req: &Request,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<(MultiCond, Vec<ScheduledCond>)> {
        let clip_g = active
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
        let l = TextEncoder::new_sdxl(
            &active.clip,
            dev,
            ClipPad::EndOfText,
            &self.embeddings,
            opts.clone(),
        )?;
        let g = TextEncoder::new_sdxl(clip_g, dev, ClipPad::Zero, &self.embeddings_g, opts)?
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

#[cfg(test)]
mod tests {
    use super::vae_family_note;
    use std::path::Path;

    #[test]
    fn a_vae_name_of_another_family_is_warned() {
        let note = |name: &str, sdxl: bool| vae_family_note(Path::new(name), sdxl);
        assert!(note("/v/vae-ft-mse-840000-ema-pruned.safetensors", true).is_some());
        assert!(note("/v/sdxl_vae.safetensors", true).is_none());
        assert!(note("/v/sdxl-vae-fp16-fix.safetensors", true).is_none());
        assert!(note("/v/XL_VAE_C.safetensors", true).is_none());
        assert!(note("/v/vae-ft-mse-840000-ema-pruned.safetensors", false).is_none());
        let sd1 = note("/v/sdxl_vae.safetensors", false).unwrap();
        assert!(sd1.contains("looks like an SDXL VAE"), "{sd1}");
    }
}
