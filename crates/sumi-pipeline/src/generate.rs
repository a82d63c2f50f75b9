//! The data path, top to bottom: validate → image in → conditioning → initial latents →
//! sampler over the U-Net with classifier-free guidance → VAE decode → pixels.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use sumi_models::{ClipTextModel, Precision, TaesdDecoder, UNet, Vae};
use sumi_prompt::Timeline;
use sumi_sampling::brownian::BrownianTreeNoiseSampler;
use sumi_sampling::img2img::{img2img_steps, slice_for_t_enc};
use sumi_sampling::names::sampler_sigmas;
use sumi_sampling::noise::{batch_seeds, fixed_seed};
use sumi_sampling::samplers::{
    ddim_img2img, ddim_timesteps, sample_ddim, sample_plms, sample_unipc, unipc_img2img_t_start,
};
use sumi_sampling::schedules::ScheduleOptions;
use sumi_sampling::{
    DiscreteSchedule, ImageRng, ImageRngOptions, NoiseSampler, NoiseSource, SamplerKind,
    SamplerParams, Scheduler, Step,
};
use sumi_weights::embedding::{Embedding, EmbeddingDir};
use sumi_weights::Prediction;

use crate::checkpoint::{Checkpoint, ModelIdentity};
use crate::conditioning::{ConditioningOptions, TextEncoder};
use crate::denoise::CfgDenoiser;
use crate::error::{PipelineError, Result};
use crate::image::{effective_size, to_tensor, ResizeMode};
use crate::infotext::{Infotext, Number};
use crate::inpaint::{self, MaskParts};
use crate::request::{MaskedContent, Request};

/// How to load a pipeline.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Overrides the detected prediction type.
    pub prediction: Option<Prediction>,
    /// A folder of textual-inversion embeddings, used by file name in prompts.
    pub embeddings: Option<PathBuf>,
    /// An external VAE file replacing the checkpoint's own.
    pub vae: Option<PathBuf>,
    /// A TAESD decoder file: decode with it instead of the VAE (fast, approximate).
    pub taesd_decoder: Option<PathBuf>,
    /// Compute precision of the U-Net, VAE and text encoder (default f32;
    /// [`Precision::auto`] picks bf16 where the CPU has bf16 dot products).
    pub precision: Precision,
}

/// What a progress callback may ask of a running job (A1111's Interrupt and Skip buttons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stop now: the current batch is decoded from its latest prediction and handed over,
    /// later batches are not run.
    Interrupt,
    /// Stop this batch: it is decoded from its latest prediction and handed over, and the
    /// next batch starts.
    Skip,
}

/// Where a run is, for progress reporting.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Batch index (0-based) of `batch_count`.
    pub batch: u32,
    /// Batches in the request.
    pub batch_count: u32,
    /// Sampler step (0-based).
    pub step: usize,
    /// Sampler steps in this run.
    pub steps: usize,
    /// The step's prediction of the clean latents `[batch, 4, h/8, w/8]` (for previews).
    pub denoised: &'a Tensor,
}

/// One output image and what made it.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The pixels.
    pub image: RgbImage,
    /// Its seed.
    pub seed: u64,
    /// Its variation seed.
    pub subseed: u64,
    /// The final latents `[4, h/8, w/8]` (U-Net scale).
    pub latents: Tensor,
    /// Infotext keys the processing added (inpainting's `Mask blur`, `Masked content`, …), in
    /// A1111's order.
    pub extra_params: Vec<(String, String)>,
}

/// A loaded checkpoint with its networks, ready to generate.
pub struct Pipeline {
    /// What is known about the checkpoint (its file is closed once the networks are built).
    pub model: ModelIdentity,
    pub(crate) unet: UNet,
    pub(crate) vae: Vae,
    pub(crate) clip: ClipTextModel,
    pub(crate) embeddings: Vec<Embedding>,
    pub(crate) schedule: DiscreteSchedule,
    pub(crate) device: Device,
    pub(crate) hash: std::sync::OnceLock<Option<String>>,
    pub(crate) vae_path: Option<PathBuf>,
    pub(crate) taesd: Option<TaesdDecoder>,
    pub(crate) vae_hash: std::sync::OnceLock<Option<String>>,
}

impl Pipeline {
    /// Opens `path` and builds its networks (f32, CPU).
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let device = Device::Cpu;
        let mut checkpoint = Checkpoint::open_unresolved(path, opts.prediction)?;
        let wdt = opts.precision.weight_dtype();
        let unet = checkpoint.unet(wdt, &device)?;
        checkpoint.resolve_with(&unet)?;
        let vae = match &opts.vae {
            Some(p) => Checkpoint::external_vae(p, wdt, &device)?,
            None => checkpoint.vae(wdt, &device)?,
        };
        let clip = checkpoint.clip(wdt, &device)?;
        let embeddings = match &opts.embeddings {
            Some(dir) => EmbeddingDir::load(dir, Some(clip.config().hidden))?.loaded,
            None => Vec::new(),
        };
        Ok(Self {
            taesd: opts
                .taesd_decoder
                .as_ref()
                .map(|p| -> Result<TaesdDecoder> {
                    let w = sumi_weights::Weights::open_raw(p)?;
                    TaesdDecoder::new(w.var_builder(DType::F32, &device), 4).map_err(|source| {
                        PipelineError::Model {
                            path: p.clone(),
                            source,
                        }
                    })
                })
                .transpose()?,
            model: checkpoint.identity(),
            vae_path: opts.vae.clone(),
            unet,
            vae,
            clip,
            embeddings,
            schedule: DiscreteSchedule::sd(),
            device,
            hash: std::sync::OnceLock::new(),
            vae_hash: std::sync::OnceLock::new(),
        })
    }

    /// Runs a request; `on_step` sees every sampler step and may stop the run early
    /// ([`Stop`]); the images made until then are returned.
    pub fn generate(
        &self,
        req: &Request,
        on_step: &mut dyn FnMut(&Progress<'_>) -> ControlFlow<Stop>,
    ) -> Result<Vec<Generated>> {
        let mut out = Vec::new();
        self.generate_each(req, on_step, &mut |g| {
            out.push(g);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Self::generate`], handing each image to `on_image` as soon as its batch is decoded
    /// (so a long run keeps what it has made if it stops later).
    pub fn generate_each(
        &self,
        req: &Request,
        on_step: &mut dyn FnMut(&Progress<'_>) -> ControlFlow<Stop>,
        on_image: &mut dyn FnMut(Generated) -> Result<()>,
    ) -> Result<()> {
        // 1. validate
        req.validate()?;
        let (width, height) = effective_size(req.width, req.height);
        let latent_shape = (4, height as usize / 8, width as usize / 8);
        let prediction = match self.model.prediction {
            Prediction::Epsilon => sumi_sampling::Prediction::Epsilon,
            Prediction::V => sumi_sampling::Prediction::V,
        };

        // 2. image in (with its mask): the source's posterior mean, U-Net scale
        let source = match &req.img2img {
            Some(i) => Some(inpaint::prepare(i, width, height)?),
            None => None,
        };
        let source_pixels = match &source {
            Some(s) => Some(to_tensor(&s.image, &self.device)?),
            None => None,
        };
        let mut init_latents = match (&req.img2img, &source_pixels) {
            (Some(i), Some(x)) => {
                let lat = self.vae.encode(x).map_err(|e| self.model_err(e))?;
                Some(match i.resize_mode {
                    // A1111 encodes the image at its own size and resizes the latent
                    ResizeMode::LatentUpscale => {
                        lat.upsample_bilinear2d(latent_shape.1, latent_shape.2, false)?
                    }
                    _ => lat,
                })
            }
            _ => None,
        };
        let mask = source.as_ref().and_then(|s| s.mask.as_ref());
        let extra_params = source.as_ref().map_or_else(Vec::new, |s| s.params.clone());
        let blend = match mask {
            Some(m) => Some(self.latent_blend(m, latent_shape)?),
            None => None,
        };
        let image_cond = self.inpainting_conditioning(
            latent_shape,
            req.batch_size as usize,
            source_pixels.as_ref(),
            mask,
            req.inpainting_mask_weight,
        )?;

        // 3. conditioning
        let opts = ConditioningOptions {
            clip_skip: req.clip_skip,
            ..Default::default()
        };
        let te = TextEncoder::new(
            &self.clip,
            &self.device,
            &self.model.facts,
            &self.embeddings,
            opts,
        )?;
        let timeline = Timeline::new(req.steps);
        let cond = te.prompt(&req.prompt, &timeline)?;
        let uncond = te.negative(&req.negative_prompt, &timeline)?;

        // 4. the schedule, and the part of it img2img runs
        let (sched_steps, t_enc) = match &req.img2img {
            Some(i) => img2img_steps(req.steps as usize, i.denoising_strength, req.exact_steps),
            None => (req.steps as usize, 0),
        };
        let timestep_sampler = matches!(
            req.sampler,
            SamplerKind::Ddim | SamplerKind::Plms | SamplerKind::UniPc
        );
        let sigmas = if timestep_sampler {
            Vec::new()
        } else {
            sampler_sigmas(
                req.sampler,
                req.scheduler,
                sched_steps,
                &self.schedule,
                &ScheduleOptions::for_model(&self.schedule),
                false,
            )?
        };
        let run_sigmas: &[f64] = match (&req.img2img, timestep_sampler) {
            (_, true) => &[],
            (Some(_), false) => slice_for_t_enc(&sigmas, sched_steps, t_enc),
            (None, false) => &sigmas,
        };
        // A1111's timestep samplers: DDIM timesteps, img2img noised to timesteps[t_enc] in the
        // variance-preserving scale
        let timesteps = if timestep_sampler {
            ddim_timesteps(sched_steps, 1000)?
        } else {
            Vec::new()
        };
        let ts_img2img = match (&req.img2img, timestep_sampler) {
            (Some(_), true) => Some(ddim_img2img(&timesteps, t_enc, &self.schedule)?),
            _ => None,
        };
        // A1111's UniPC runs order 3 (`uni_pc_order`) and asserts at least that many steps
        if req.sampler == SamplerKind::UniPc {
            let n = ts_img2img
                .as_ref()
                .map_or(timesteps.len(), |(ts, _, _)| ts.len());
            if n < 3 {
                return Err(PipelineError::Request {
                    field: "steps",
                    detail: format!(
                        "UniPC is order 3 and needs at least 3 sampling steps; this request runs {n}"
                    ),
                });
            }
        }

        let seed = fixed_seed(req.seed);
        let subseed = fixed_seed(req.subseed);
        let bs = req.batch_size as usize;
        // masked content: A1111 puts noise (from the first batch's seeds) or zeros in the masked
        // latents once, before any batch runs
        if let (Some(m), Some(init), Some((keep, change))) = (mask, &init_latents, &blend) {
            init_latents = match m.fill {
                MaskedContent::LatentNoise => {
                    // A1111's all_seeds[0:batch_size]
                    let step = u64::from(req.subseed_strength == 0.0);
                    let seeds: Vec<u64> = (0..bs as u64).map(|k| seed + k * step).collect();
                    let mut g = ImageRng::new(
                        req.rng,
                        latent_shape,
                        seeds,
                        ImageRngOptions::default(),
                        &self.device,
                    );
                    let noise = g.next_noise()?;
                    Some(
                        init.broadcast_mul(keep)?
                            .broadcast_add(&noise.broadcast_mul(change)?)?,
                    )
                }
                MaskedContent::LatentNothing => Some(init.broadcast_mul(keep)?),
                _ => Some(init.clone()),
            };
        }
        for n in 0..req.batch_count {
            let offset = n as u64 * bs as u64;
            let first = if req.subseed_strength == 0.0 {
                seed + offset
            } else {
                seed
            };
            let (seeds, subseeds) = batch_seeds(first, subseed + offset, req.subseed_strength, bs);
            // 5. initial latents: noise is the first draw of each image's generator
            let rng_opts = ImageRngOptions {
                subseeds: subseeds.clone(),
                subseed_strength: req.subseed_strength,
                ..Default::default()
            };
            let mut rng =
                ImageRng::new(req.rng, latent_shape, seeds.clone(), rng_opts, &self.device);
            let noise = rng.next_noise()?;
            let x = match (&init_latents, &ts_img2img) {
                (Some(init), Some((_, a, b))) => init
                    .affine(*a, 0.0)?
                    .broadcast_add(&noise.affine(*b, 0.0)?)?,
                (None, _) if timestep_sampler => noise,
                (Some(init), None) => init.broadcast_add(&(noise.affine(run_sigmas[0], 0.0))?)?,
                (None, _) => noise.affine(run_sigmas[0], 0.0)?,
            };
            // 6. sampling
            let mut brownian;
            let noise_sampler: &mut dyn NoiseSampler = if req.sampler.options().brownian_noise {
                let (lo, hi) = BrownianTreeNoiseSampler::sigma_range(&sigmas);
                let shape = [bs, latent_shape.0, latent_shape.1, latent_shape.2];
                brownian =
                    BrownianTreeNoiseSampler::new(lo, hi, &seeds, &shape, req.rng, &self.device)?;
                &mut brownian
            } else {
                &mut rng
            };
            let mut den = CfgDenoiser {
                unet: &self.unet,
                prediction,
                schedule: &self.schedule,
                cond: &cond,
                uncond: &uncond,
                cfg_scale: req.cfg_scale,
                image_cond: image_cond.clone(),
                blend: match (&blend, &init_latents) {
                    (Some((keep, change)), Some(init)) => Some(crate::denoise::LatentBlend {
                        init: init.clone(),
                        keep: keep.clone(),
                        change: change.clone(),
                        before: timestep_sampler,
                    }),
                    _ => None,
                },
                step: 0,
            };
            let mut stopped = None;
            let mut cb = |s: &Step<'_>| match on_step(&Progress {
                batch: n,
                batch_count: req.batch_count,
                step: s.i,
                steps: s.steps,
                denoised: s.denoised,
            }) {
                ControlFlow::Continue(()) => ControlFlow::Continue(()),
                ControlFlow::Break(why) => {
                    stopped = Some(why);
                    ControlFlow::Break(())
                }
            };
            let latents = match req.sampler {
                SamplerKind::Ddim | SamplerKind::Plms | SamplerKind::UniPc => {
                    let run_ts: &[usize] = ts_img2img.as_ref().map_or(&timesteps, |(ts, _, _)| ts);
                    match req.sampler {
                        // A1111's default eta for DDIM is 0
                        SamplerKind::Ddim => sample_ddim(
                            &mut den,
                            x,
                            &self.schedule,
                            run_ts,
                            noise_sampler,
                            0.0,
                            &mut cb,
                        )?,
                        SamplerKind::Plms => {
                            sample_plms(&mut den, x, &self.schedule, run_ts, &mut cb)?
                        }
                        _ => {
                            let t_start = match ts_img2img {
                                Some(_) => Some(unipc_img2img_t_start(&timesteps, t_enc)?),
                                None => None,
                            };
                            sample_unipc(
                                &mut den,
                                x,
                                &self.schedule,
                                run_ts.len(),
                                t_start,
                                3,
                                &mut cb,
                            )?
                        }
                    }
                }
                _ => sumi_sampling::sample(
                    req.sampler,
                    &mut den,
                    x,
                    run_sigmas,
                    noise_sampler,
                    &SamplerParams::default(),
                    &mut cb,
                )?,
            };
            // A1111 blends the result with the source latents once more
            let latents = match (&blend, &init_latents) {
                (Some((keep, change)), Some(init)) => latents
                    .broadcast_mul(change)?
                    .broadcast_add(&init.broadcast_mul(keep)?)?,
                _ => latents,
            };
            // 7. decode
            let pixels = match &self.taesd {
                // TAESD decodes to [0, 1]; bring it to the VAE's [-1, 1]
                Some(t) => t
                    .forward(&latents)
                    .map_err(|e| self.model_err(e))?
                    .affine(2.0, -1.0)?,
                None => self.vae.decode(&latents).map_err(|e| self.model_err(e))?,
            };
            for (i, (&s, &ss)) in seeds.iter().zip(&subseeds).enumerate() {
                let mut image = to_image(&pixels.get(i)?)?;
                // 8. the original pixels outside the mask, over the result
                if let Some(m) = mask {
                    image = crate::composite::apply_overlay(&image, m.paste_to, &m.overlay)?;
                }
                on_image(Generated {
                    image,
                    seed: s,
                    subseed: ss,
                    latents: latents.get(i)?,
                    extra_params: extra_params.clone(),
                })?;
            }
            if stopped == Some(Stop::Interrupt) {
                break;
            }
        }
        Ok(())
    }

    /// A1111's infotext for one generated image of `req` (`Model hash` is the checkpoint file's
    /// short sha256, computed once).
    pub fn infotext(&self, req: &Request, g: &Generated) -> Result<Infotext> {
        let path = self.model.path.as_path();
        let hash = match self.model.format {
            sumi_weights::Format::Diffusers => None,
            _ => cached_short_hash(&self.hash, path),
        };
        let schedule_type = match (req.scheduler, req.sampler.default_scheduler()) {
            (Scheduler::Automatic, Some(d)) => d.label(),
            (s, _) => s.label(),
        };
        let cfg = if req.cfg_scale.fract() == 0.0 && req.cfg_scale.abs() < 1e15 {
            Number::Int(req.cfg_scale as i64)
        } else {
            Number::Float(req.cfg_scale)
        };
        Ok(Infotext {
            prompt: req.prompt.clone(),
            negative_prompt: req.negative_prompt.clone(),
            steps: req.steps,
            sampler: req.sampler.label().to_string(),
            schedule_type: schedule_type.to_string(),
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
                .map(|i| Number::Float(i.denoising_strength)),
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

    /// The extra U-Net input of inpainting checkpoints: a mask channel, then the latents of the
    /// masked source (the posterior mean, where A1111 samples it).
    ///
    /// txt2img (A1111's `txt2img_image_conditioning`): a mask of ones and a blank (zero) image.
    /// img2img (`inpainting_image_conditioning`): the mask (rounded when A1111 rounds; ones
    /// without a mask), the source as `torch.lerp(source, source · (1 − mask), weight)`, and the
    /// mask sampled to the latent size by nearest neighbour.
    fn inpainting_conditioning(
        &self,
        (_, h, w): (usize, usize, usize),
        batch: usize,
        source: Option<&Tensor>,
        mask: Option<&MaskParts>,
        weight: f64,
    ) -> Result<Option<Tensor>> {
        if !self.model.facts.inpaint {
            return Ok(None);
        }
        let (mask_px, lat) = match source {
            None => {
                let blank = Tensor::zeros((1, 3, h * 8, w * 8), DType::F32, &self.device)?;
                let lat = self.vae.encode(&blank).map_err(|e| self.model_err(e))?;
                (None, lat)
            }
            Some(src) => {
                let (_, _, ph, pw) = src.dims4()?;
                let m = match mask {
                    Some(m) => {
                        let v: Vec<f32> = m
                            .image_mask
                            .pixels()
                            .map(|p| {
                                let f = f32::from(p[0]) / 255.0;
                                if m.round {
                                    f.round_ties_even()
                                } else {
                                    f
                                }
                            })
                            .collect();
                        Tensor::from_vec(v, (1, 1, ph, pw), &self.device)?
                    }
                    None => Tensor::ones((1, 1, ph, pw), DType::F32, &self.device)?,
                };
                // torch.lerp(start, end, w): start + w·(end − start) below 0.5, else
                // end − (end − start)·(1 − w)
                let end = src.broadcast_mul(&m.affine(-1.0, 1.0)?)?;
                let diff = (&end - src)?;
                let img = if weight < 0.5 {
                    (src + diff.affine(weight, 0.0)?)?
                } else {
                    (&end - diff.affine(1.0 - weight, 0.0)?)?
                };
                let lat = self.vae.encode(&img).map_err(|e| self.model_err(e))?;
                (Some(m), lat)
            }
        };
        let mask_lat = match mask_px {
            // nearest: latent pixel (i, j) reads mask pixel (8i, 8j)
            Some(m) => {
                let (_, _, ph, pw) = m.dims4()?;
                let rows: Vec<u32> = (0..h).map(|i| ((i * ph) / h) as u32).collect();
                let cols: Vec<u32> = (0..w).map(|j| ((j * pw) / w) as u32).collect();
                let rows = Tensor::new(rows.as_slice(), &self.device)?;
                let cols = Tensor::new(cols.as_slice(), &self.device)?;
                m.index_select(&rows, 2)?.index_select(&cols, 3)?
            }
            None => Tensor::ones((1, 1, h, w), DType::F32, &self.device)?,
        };
        Ok(Some(
            Tensor::cat(&[&mask_lat, &lat], 1)?.repeat((batch, 1, 1, 1))?,
        ))
    }

    /// `(mask, nmask)` of A1111's latent blend, `[1, 4, h/8, w/8]`: `nmask` is 1 where the
    /// picture changes, `mask = 1 − nmask`.
    fn latent_blend(
        &self,
        m: &MaskParts,
        (c, h, w): (usize, usize, usize),
    ) -> Result<(Tensor, Tensor)> {
        let change = Tensor::from_vec(m.latent_mask.clone(), (1, 1, h, w), &self.device)?
            .repeat((1, c, 1, 1))?;
        let keep = change.affine(-1.0, 1.0)?;
        Ok((keep, change))
    }

    fn model_err(&self, source: sumi_models::ModelError) -> PipelineError {
        PipelineError::Model {
            path: self.model.path.clone(),
            source,
        }
    }
}

/// A file's A1111 short hash, computed on first use (none when the file cannot be read).
fn cached_short_hash(cell: &std::sync::OnceLock<Option<String>>, path: &Path) -> Option<String> {
    cell.get_or_init(|| {
        sumi_weights::sha256_file(path)
            .map(|h| h.short().to_string())
            .ok()
    })
    .clone()
}

/// A1111's conversion of a decoded image: `(x + 1) / 2` clamped to [0, 1], × 255, truncated.
pub fn to_image(x: &Tensor) -> Result<RgbImage> {
    let (c, h, w) = x.dims3()?;
    if c != 3 {
        return Err(PipelineError::Conditioning(format!(
            "decoded image has {c} channels"
        )));
    }
    let x = ((x.to_dtype(DType::F32)? + 1.0)? / 2.0)?.clamp(0f32, 1f32)?;
    let x = (x * 255.0)?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let bytes: Vec<u8> = x.into_iter().map(|v| v as u8).collect();
    RgbImage::from_raw(w as u32, h as u32, bytes)
        .ok_or_else(|| PipelineError::Conditioning("decoded image has the wrong size".into()))
}
