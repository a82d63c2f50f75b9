//! One batch of a request: its seeds (A1111's `seed + i`, variation seeds), the initial noise
//! (the first draw of each image's generator), the sampler plan over the guided U-Net, A1111's
//! final latent blend, the check for NaN latents, and the decode.

use std::cell::Cell;
use std::ops::ControlFlow;

use candle_core::Tensor;

use sumi_sampling::noise::batch_seeds;
use sumi_sampling::{ImageRng, ImageRngOptions, Plan, SamplerNoise, Step};

use crate::cfg_skip::{Fired, SkipRule};
use crate::conditioning::{MultiCond, ScheduledCond};
use crate::denoise::{CfgDenoiser, LatentBlend};
use crate::error::{NanStage, Result};
use crate::generate::{Generated, Pipeline, Progress, Stop};
use crate::init::{Init, LatentShape};
use crate::request::Request;

/// The seeds of one batch.
pub(crate) struct BatchSeeds {
    /// The batch's index (0-based) of the request's `batch_count`.
    pub index: u32,
    /// One seed per image.
    pub seeds: Vec<u64>,
    /// One variation seed per image.
    pub subseeds: Vec<u64>,
}

impl BatchSeeds {
    /// Batch `index` of `req`, whose first seed and variation seed are `seed` and `subseed`:
    /// images count on from the previous batches (all share `seed` with a variation strength).
    pub fn of(req: &Request, index: u32, seed: u64, subseed: u64) -> Self {
        let size = u64::from(req.batch_size);
        let offset = u64::from(index) * size;
        let first = if req.subseed_strength == 0.0 {
            seed + offset
        } else {
            seed
        };
        let (seeds, subseeds) =
            batch_seeds(first, subseed + offset, req.subseed_strength, size as usize);
        Self {
            index,
            seeds,
            subseeds,
        }
    }
}

/// The prompt's and the negative prompt's conditioning.
pub(crate) struct Conds<'a> {
    /// The prompt (every `AND` part, scheduled).
    pub cond: &'a MultiCond,
    /// The negative prompt (scheduled).
    pub uncond: &'a [ScheduledCond],
}

/// What a batch made, and whether the caller asked to stop.
pub(crate) struct BatchOutcome {
    /// One image per seed.
    pub images: Vec<Generated>,
    /// The stop the progress callback asked for, if any.
    pub stop: Option<Stop>,
}

/// Everything a batch shares with the other batches of its request.
pub(crate) struct BatchInputs<'a> {
    /// The U-Net with the job's networks merged.
    pub unet: &'a sumi_models::UNet,
    /// The job's hypernetworks.
    pub hypernetworks: &'a sumi_models::Hypernetworks,
    /// Infotext keys of the job's networks (`Lora hashes`), after the processing's own.
    pub extra_params: &'a [(String, String)],
    /// The request.
    pub req: &'a Request,
    /// The sampler run.
    pub plan: &'a Plan,
    /// The source (img2img) and inpainting parts.
    pub init: &'a Init,
    /// The conditioning.
    pub conds: Conds<'a>,
    /// One image's latent shape.
    pub shape: LatentShape,
    /// Which pass of how many (the hires fix runs two per batch): `(0, 1)` without it.
    pub pass: (u32, u32),
    /// The uncond skips that have happened in the job so far (A1111 keeps their infotext keys
    /// on the job once they happen).
    pub fired: &'a Cell<Fired>,
    /// The refiner of this pass, if the job has one.
    pub refiner: Option<&'a crate::refiner::RefinerRun>,
}

impl BatchInputs<'_> {
    /// The infotext keys of the job's networks and token merging, then those of the skips that
    /// have happened.
    pub(crate) fn params_after_sampling(&self) -> Vec<(String, String)> {
        let mut out = self.extra_params.to_vec();
        let req = self.req;
        if req.token_merging_ratio != 0.0 {
            let r = crate::infotext::py_float_repr(req.token_merging_ratio);
            out.push(("Token merging ratio".to_string(), r));
        }
        if req.hires.is_some() && req.token_merging_ratio_hr != 0.0 {
            let r = crate::infotext::py_float_repr(req.token_merging_ratio_hr);
            out.push(("Token merging ratio hr".to_string(), r));
        }
        let job = self.refiner.map(|r| &*r.job);
        out.extend(crate::refiner::RefinerJob::params(
            job,
            req,
            self.fired.get(),
        ));
        out
    }
}

impl Pipeline {
    /// Runs one batch; `on_step` sees every sampler step and may stop it.
    pub(crate) fn run_batch(
        &self,
        inputs: &BatchInputs<'_>,
        batch: BatchSeeds,
        on_step: &mut dyn FnMut(&Progress<'_>) -> ControlFlow<Stop>,
    ) -> Result<BatchOutcome> {
        let (latents, stop) = self.sample_batch(inputs, &batch, on_step)?;
        let params = inputs.params_after_sampling();
        let decoder = crate::refiner::decoder(self, inputs.refiner);
        let images = decoder.finish_batch(inputs.init, &params, &batch, &latents)?;
        Ok(BatchOutcome { images, stop })
    }

    /// The sampler part of a batch: noise (each image generator's first draw) → the sampler
    /// over the guided U-Net from `inputs.init.latents` (img2img) or from noise → A1111's final
    /// latent blend → the NaN check. Returns the latents and the stop asked for, if any.
    pub(crate) fn sample_batch(
        &self,
        inputs: &BatchInputs<'_>,
        batch: &BatchSeeds,
        on_step: &mut dyn FnMut(&Progress<'_>) -> ControlFlow<Stop>,
    ) -> Result<(Tensor, Option<Stop>)> {
        let BatchInputs {
            req,
            plan,
            init,
            shape,
            ..
        } = inputs;
        // 1. initial latents: the noise is the first draw of each image's generator
        let rng_opts = ImageRngOptions {
            subseeds: batch.subseeds.clone(),
            subseed_strength: req.subseed_strength,
            ..Default::default()
        };
        let mut rng = ImageRng::new(
            req.rng,
            shape.dims(),
            batch.seeds.clone(),
            rng_opts,
            &self.device,
        );
        let x = plan.start(&rng.next_noise()?, init.latents.as_ref())?;
        // 2. the sampler over the guided U-Net (the refiner may take over)
        if let Some(r) = inputs.refiner {
            r.switched.set(false);
        }
        let mut denoiser = self.guided_unet(inputs);
        let mut stop = None;
        let started = std::time::Instant::now();
        let mut report = |s: &Step<'_>| match on_step(&Progress {
            batch: batch.index,
            batch_count: req.batch_count,
            pass: inputs.pass.0,
            passes: inputs.pass.1,
            step: s.i,
            steps: s.steps,
            denoised: Some(s.denoised),
            elapsed: started.elapsed(),
        }) {
            ControlFlow::Continue(()) => ControlFlow::Continue(()),
            ControlFlow::Break(why) => {
                stop = Some(why);
                ControlFlow::Break(())
            }
        };
        let noise = SamplerNoise {
            rng: &mut rng,
            seeds: &batch.seeds,
            source: req.rng,
        };
        let latents = plan.run(&mut denoiser, x, noise, &mut report);
        inputs.fired.set(inputs.fired.get().or(denoiser.skip.fired));
        let latents = latents?;
        // 3. A1111 blends the result with the source latents once more
        let latents = match (&init.blend, &init.latents) {
            (Some(blend), Some(source)) => blend.apply(&latents, source)?,
            _ => latents,
        };
        // A1111's `devices.test_for_nans(samples_ddim, "unet")`, before the decode
        crate::decode::check_finite(&latents, NanStage::Unet)?;
        Ok((latents, stop))
    }

    /// The pictures of a batch: decoded, with the original pixels outside the mask over the
    /// result, and what made each (A1111's `VAE Decoder: TAESD` last, where TAESD decodes: A1111
    /// leaves it out of hires-fix pictures, whose decode happens inside its hires pass, though
    /// TAESD decodes them too; Sumi writes it there as well, so that the infotext remakes them).
    pub(crate) fn finish_batch(
        &self,
        init: &Init,
        extra_params: &[(String, String)],
        batch: &BatchSeeds,
        latents: &Tensor,
    ) -> Result<Vec<Generated>> {
        let pictures = self.decode(latents, init.mask.as_ref())?;
        pictures
            .into_iter()
            .zip(batch.seeds.iter().zip(&batch.subseeds))
            .enumerate()
            .map(|(i, (image, (&seed, &subseed)))| {
                Ok(Generated {
                    image,
                    seed,
                    subseed,
                    latents: latents.get(i)?,
                    extra_params: init
                        .params
                        .iter()
                        .chain(extra_params)
                        .cloned()
                        .chain(self.vae_decoder_param())
                        .collect(),
                })
            })
            .collect()
    }

    /// A1111's `CFGDenoiser` over the U-Net for one batch.
    fn guided_unet<'a>(&'a self, inputs: &'a BatchInputs<'_>) -> CfgDenoiser<'a> {
        let init = inputs.init;
        CfgDenoiser {
            unet: inputs.unet,
            hypernetworks: inputs.hypernetworks,
            prediction: self.prediction(),
            schedule: &self.schedule,
            cond: inputs.conds.cond,
            uncond: inputs.conds.uncond,
            cfg_scale: inputs.req.cfg_scale,
            image_cond: init.image_cond.clone(),
            blend: match (&init.blend, &init.latents) {
                (Some(blend), Some(source)) => Some(LatentBlend {
                    init: source.clone(),
                    keep: blend.keep.clone(),
                    change: blend.change.clone(),
                    before: inputs.plan.blends_input(),
                }),
                _ => None,
            },
            step: 0,
            token_merging: match inputs.pass.0 {
                0 => inputs.req.token_merging_ratio,
                _ => inputs.req.token_merging_ratio_hr,
            },
            unet_rows: std::cell::Cell::new(0),
            skip: SkipRule {
                settings: inputs.req.uncond_skip,
                total_steps: inputs.plan.total_steps(),
                by_timestep: inputs.plan.sees_timesteps(),
                fired: Fired::default(),
            },
            refiner: inputs
                .refiner
                .filter(|r| r.active)
                .map(|run| crate::refiner::Switch {
                    run,
                    prior: inputs.fired.get(),
                }),
        }
    }
}
