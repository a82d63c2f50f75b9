//! The infotext of a generated image: A1111's `create_infotext` over the request, the image's
//! seeds and what the processing added, with the model's and VAE's short hashes (computed once).

use std::path::Path;

use sumi_sampling::plan::InfotextLabels;
use sumi_sampling::NoiseSource;

use crate::error::Result;
use crate::generate::{Generated, Pipeline};
use crate::infotext::{Infotext, Number};
use crate::request::Request;

impl Pipeline {
    /// A warning when `req.model_hash` (an infotext's `Model hash`, A1111's 10-digit short hash)
    /// is not this checkpoint's. Older 8-digit hashes and diffusers folders are not compared.
    pub(crate) fn model_hash_note(&self, req: &Request) -> Option<String> {
        let want = req.model_hash.as_deref()?.trim();
        if want.len() != 10 || self.model.format == sumi_weights::Format::Diffusers {
            return None;
        }
        let have = cached_short_hash(&self.hash, &self.model.path)?;
        let name = self.model.path.file_stem()?.to_string_lossy();
        (!have.eq_ignore_ascii_case(want)).then(|| {
            format!(
                "the infotext was made with the checkpoint of hash {want}, not {name} ({have}): \
                 the picture will differ"
            )
        })
    }

    /// A1111's infotext for one generated image of `req` (`Model hash` is the checkpoint file's
    /// short sha256, computed once).
    pub fn infotext(&self, req: &Request, g: &Generated) -> Result<Infotext> {
        let path = self.model.path.as_path();
        let hash = match self.model.format {
            sumi_weights::Format::Diffusers => None,
            _ => cached_short_hash(&self.hash, path),
        };
        let labels = InfotextLabels::of(req.sampler, req.scheduler);
        let cfg = if req.cfg_scale.fract() == 0.0 && req.cfg_scale.abs() < 1e15 {
            Number::Int(req.cfg_scale as i64)
        } else {
            Number::Float(req.cfg_scale)
        };
        Ok(Infotext {
            prompt: req.prompt.clone(),
            negative_prompt: req.negative_prompt.clone(),
            steps: req.steps,
            sampler: labels.sampler.to_string(),
            schedule_type: labels.schedule_type.to_string(),
            cfg_scale: cfg,
            seed: g.seed as i64,
            width: req.width,
            height: req.height,
            model_hash: hash,
            model: path.file_stem().map(|s| s.to_string_lossy().into_owned()),
            variation: (req.subseed_strength != 0.0)
                .then_some((g.subseed as i64, Number::Float(req.subseed_strength as f64))),
            denoising_strength: req
                .img2img
                .as_ref()
                .map(|i| i.denoising_strength)
                .or(req.hires.as_ref().map(|h| h.denoising_strength))
                .map(Number::Float),
            vae_hash: self
                .vae_path
                .as_ref()
                .and_then(|p| cached_short_hash(&self.vae_hash, p)),
            vae: self
                .vae_path
                .as_ref()
                .and_then(|p| p.file_stem())
                .map(|s| s.to_string_lossy().into_owned()),
            clip_skip: req.clip_skip as u32,
            rng: match req.rng {
                NoiseSource::Gpu => "GPU",
                NoiseSource::Cpu => "CPU",
                NoiseSource::Nv => "NV",
            }
            .to_string(),
            version: Some(format!("sumi-{}", env!("CARGO_PKG_VERSION"))),
            other: self
                .model
                .facts
                .inpaint
                .then(|| {
                    (
                        "Conditional mask weight".to_string(),
                        Number::Float(req.inpainting_mask_weight).to_string(),
                    )
                })
                .into_iter()
                .chain(g.extra_params.iter().cloned())
                .collect(),
            ..Default::default()
        })
    }
}

/// A file's A1111 short hash, computed on first use (none when the file cannot be read).
pub(crate) fn cached_short_hash(
    cell: &std::sync::OnceLock<Option<String>>,
    path: &Path,
) -> Option<String> {
    cell.get_or_init(|| {
        sumi_weights::sha256_file(path)
            .map(|h| h.short().to_string())
            .ok()
    })
    .clone()
}
