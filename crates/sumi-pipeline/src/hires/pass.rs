//! The hires fix's second pass over one batch, as A1111's `sample_hr_pass`: the first pass's
//! latents resized (a latent mode) or its pictures decoded, upscaled and encoded again (an
//! image upscaler); A1111's crop; fresh noise from the same seeds at the new size; an img2img
//! run with "exact steps" (`hr_second_pass_steps or steps`), the hires sampler, schedule,
//! strength and conditioning; decode.

use std::ops::ControlFlow;
use std::sync::Arc;

use candle_core::Tensor;
use sumi_models::UNet;
use sumi_sampling::{Plan, PlanRequest, Strength};

use super::upscale::{resize_latents, resize_pictures, HiresUpscaler};
use super::{Hires, HiresTarget};
use crate::batch::{BatchInputs, BatchOutcome, BatchSeeds, Conds};
use crate::conditioning::{MultiCond, ScheduledCond};
use crate::error::Result;
use crate::generate::{Pipeline, Progress, Stop};
use crate::image::to_signed_chw;
use crate::init::{Init, LatentShape};
use crate::networks::{activations, Active};
use crate::request::Request;

/// What the second pass of every batch shares, prepared once per request.
pub(crate) struct HiresRun {
    /// The upscale to and the crop after.
    pub target: HiresTarget,
    /// How the first pass is enlarged.
    pub upscaler: HiresUpscaler,
    /// The sampler run (img2img, exact steps); `None` at strength 0, where A1111's schedule
    /// has no step and the upscaled latents are handed over as they are.
    pub plan: Option<Plan>,
    /// The U-Net with the hires prompt's networks.
    pub unet: Arc<UNet>,
    /// The hires prompt's hypernetworks.
    pub hypernetworks: sumi_models::Hypernetworks,
    /// The hires prompt's conditioning.
    pub cond: MultiCond,
    /// The hires negative prompt's conditioning.
    pub uncond: Vec<ScheduledCond>,
    /// Infotext keys of the hires fix, before the networks'.
    pub params: Vec<(String, String)>,
    /// The hires checkpoint (`hr_checkpoint_name`), when it is not the job's model.
    pub model: Option<Arc<Pipeline>>,
    /// The refiner's run in this pass.
    pub refiner: Option<crate::refiner::RefinerRun>,
}

impl HiresRun {
    /// The second pass's sampler run (A1111's `sample_img2img` with `steps` given: exact steps).
    pub fn plan(pipe: &Pipeline, h: &Hires, req: &crate::request::Request) -> Result<Plan> {
        let r = PlanRequest {
            sampler: h.sampler(req),
            scheduler: h.scheduler(req),
            steps: h.steps(req) as usize,
            img2img: Some(Strength {
                denoising: h.denoising_strength,
                exact_steps: true,
            }),
        };
        Plan::new(&r, &pipe.schedule).map_err(crate::generate::request_error)
    }
}

impl Pipeline {
    /// Prepares the second pass of `req` once: its plan, the upscaler (an unknown name is an
    /// error listing the known ones), the hires prompt's networks (merged anew only where they
    /// differ from the first pass's) and its conditioning, read on A1111's hires timeline.
    /// `None` when `on_step` interrupts while the prompts are encoded.
    pub(crate) fn prepare_hires(
        &self,
        req: &Request,
        h: &Hires,
        first: &Active,
        warnings: &mut Vec<String>,
        on_step: &mut dyn FnMut(&Progress<'_>) -> ControlFlow<Stop>,
    ) -> Result<Option<HiresRun>> {
        let plan = if h.denoising_strength > 0.0 {
            Some(HiresRun::plan(self, h, req)?)
        } else {
            None
        };
        let upscaler = HiresUpscaler::parse(h.upscaler.as_deref());
        if let HiresUpscaler::Image(name) = &upscaler {
            if self.upscalers.get(name).is_err() {
                let known: Vec<String> = super::LATENT_UPSCALE_MODES
                    .iter()
                    .map(|m| m.a1111_name().to_string())
                    .chain(self.upscalers.names())
                    .collect();
                return Err(crate::error::PipelineError::Request {
                    field: "hr-upscaler",
                    detail: format!(
                        "could not find upscaler named `{name}`; the hires fix's upscalers are: {}",
                        known.join(", ")
                    ),
                });
            }
        }
        let prompt = h.prompt(req);
        let same = prompt == req.prompt || {
            let (hr, first) = (activations(prompt)?, activations(&req.prompt)?);
            hr.loras == first.loras && hr.hypernets == first.hypernets
        };
        let own;
        let active = if same {
            first
        } else {
            let hr_req = Request {
                prompt: prompt.to_string(),
                lora_hashes: None,
                model_hash: None,
                img2img: None,
                ..req.clone()
            };
            own = self.activate_networks(&hr_req)?;
            for w in &own.warnings {
                if !warnings.contains(w) {
                    warnings.push(w.clone());
                }
            }
            &own
        };
        let timeline = h.timeline(req);
        let negative = h.negative_prompt(req);
        let target = h.target(req.width, req.height);
        // A1111's `calculate_hr_conds` sizes the prompts as the upscale target (`hr_upscale_to_x`,
        // `hr_upscale_to_y`, before the crop): SDXL's size conditions read them
        let sized = Request {
            width: target.width,
            height: target.height,
            img2img: None,
            sd_upscale: None,
            ..req.clone()
        };
        let conds = self.encode_prompts(
            active,
            (prompt, negative),
            &timeline,
            &sized,
            plan.as_ref().map_or(0, Plan::steps),
            on_step,
        )?;
        let Some((cond, uncond)) = conds else {
            return Ok(None);
        };
        Ok(Some(HiresRun {
            target,
            upscaler,
            plan,
            unet: active.unet.clone(),
            hypernetworks: active.hypernetworks.clone(),
            cond,
            uncond,
            params: h.infotext_params(req),
            model: None,
            refiner: None,
        }))
    }

    /// A1111's `VAE Encoder: TAESD`, added as an image upscaler's pictures are encoded (latent
    /// upscalers encode nothing).
    fn hires_encoder_param(&self, hr: &HiresRun) -> Option<(String, String)> {
        (self.taesd_encoder.is_some() && matches!(hr.upscaler, HiresUpscaler::Image(_)))
            .then(|| crate::decode::taesd_param("VAE Encoder"))
    }

    /// One batch with the hires fix: the first pass, then the second at the target size.
    /// An interrupt during the first pass hands over its pictures at the first size (A1111
    /// returns before the second pass); a skip there runs no second-pass step (A1111's sampler
    /// stops at its first call and returns the upscaled latents as they are).
    pub(crate) fn run_hires_batch(
        &self,
        first: &BatchInputs<'_>,
        hr: &HiresRun,
        batch: BatchSeeds,
        on_step: &mut dyn FnMut(&Progress<'_>) -> ControlFlow<Stop>,
    ) -> Result<BatchOutcome> {
        let (latents, stop) = self.sample_batch(first, &batch, on_step)?;
        // the first pass's pictures come from the model it ended on; the rest of the batch runs
        // on the hires checkpoint (A1111 loads it before the second pass)
        let first_decoder = crate::refiner::decoder(self, first.refiner);
        if stop == Some(Stop::Interrupt) {
            let params = first.params_after_sampling();
            let images = first_decoder.finish_batch(first.init, &params, &batch, &latents)?;
            return Ok(BatchOutcome { images, stop });
        }
        // A1111 adds `VAE Encoder` in its hires pass: after the networks' keys and those the
        // first pass set, before any the second pass sets
        let before = first.params_after_sampling();
        let encoder = self.hires_encoder_param(hr);
        let second = hr.model.as_deref().unwrap_or(self);
        if let Some(r) = &hr.refiner {
            r.switched.set(false);
        }
        let (start, image_cond) =
            second.hires_start(first, hr, &latents, first_decoder, on_step)?;
        let (_, _, h, w) = start.dims4()?;
        let init = Init {
            latents: Some(start),
            mask: None,
            blend: None,
            image_cond,
            params: first
                .init
                .params
                .iter()
                .chain(&hr.params)
                .cloned()
                .collect(),
            notes: Vec::new(),
        };
        let (latents, stop) = match (&hr.plan, stop) {
            (Some(plan), None) => {
                let inputs = BatchInputs {
                    unet: &hr.unet,
                    hypernetworks: &hr.hypernetworks,
                    extra_params: first.extra_params,
                    req: first.req,
                    plan,
                    init: &init,
                    conds: Conds {
                        cond: &hr.cond,
                        uncond: &hr.uncond,
                    },
                    shape: LatentShape {
                        channels: 4,
                        height: h,
                        width: w,
                    },
                    pass: (1, 2),
                    fired: first.fired,
                    refiner: hr.refiner.as_ref(),
                };
                second.sample_batch(&inputs, &batch, on_step)?
            }
            // strength 0 (no step) or a skip during the first pass (A1111's sampler stops at
            // its first call): the upscaled latents as they are
            _ => (init.latents.clone().unwrap_or(latents), stop),
        };
        let params = hires_params(before, first.params_after_sampling(), encoder);
        let decoder = crate::refiner::decoder(second, hr.refiner.as_ref());
        let images = decoder.finish_batch(&init, &params, &batch, &latents)?;
        Ok(BatchOutcome { images, stop })
    }

    /// The second pass's start latents (upscaled and cropped) and, for inpainting checkpoints,
    /// its image conditioning; an image upscaler sees the first pass's pictures as
    /// `first_decoder` decodes them.
    fn hires_start(
        &self,
        first: &BatchInputs<'_>,
        hr: &HiresRun,
        latents: &Tensor,
        first_decoder: &Pipeline,
        on_step: &mut dyn FnMut(&Progress<'_>) -> ControlFlow<Stop>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let t = hr.target;
        let (th, tw) = (t.height as usize / 8, t.width as usize / 8);
        let n = latents.dim(0)?;
        let (samples, cond_source) = match &hr.upscaler {
            HiresUpscaler::Latent(mode) => {
                let samples = resize_latents(latents, th, tw, *mode)?;
                // A1111 decodes the upscaled latents for the conditioning only where the mask
                // weight asks for the picture
                let source = if self.model.facts.inpaint && first.req.inpainting_mask_weight < 1.0 {
                    Some(self.decode_first_stage(&samples)?)
                } else {
                    None
                };
                (samples, source)
            }
            HiresUpscaler::Image(name) => {
                let pictures = first_decoder.decode(latents, None)?;
                let mut signed = Vec::with_capacity(n);
                let mut unit = Vec::with_capacity(n);
                // the model upscaler asks between tiles whether to interrupt
                let jobs = first.req.batch_count * 2;
                let mut on_tile = |_| crate::sd_upscale::interrupt_asked(on_step, jobs);
                for p in &pictures {
                    let size = (t.width, t.height);
                    let up = resize_pictures(&self.upscalers, p, size, name, &mut on_tile)?;
                    let (w, h) = (up.width() as usize, up.height() as usize);
                    signed.push(Tensor::from_vec(
                        to_signed_chw(&up),
                        (1, 3, h, w),
                        &self.device,
                    )?);
                    unit.push(Tensor::from_vec(
                        crate::image::to_unit_chw(&up),
                        (1, 3, h, w),
                        &self.device,
                    )?);
                }
                let x = Tensor::cat(&signed, 0)?;
                let samples = self.encode_first_stage(&x)?;
                // A1111 passes the [0, 1] pictures as the conditioning's source
                (samples, Some(Tensor::cat(&unit, 0)?))
            }
        };
        let (_, _, h, w) = samples.dims4()?;
        let (ty, tx) = (t.truncate_y as usize, t.truncate_x as usize);
        let samples = samples
            .narrow(2, ty / 2, h - ty / 2 - ty.div_ceil(2))?
            .narrow(3, tx / 2, w - tx / 2 - tx.div_ceil(2))?
            .contiguous()?;
        let image_cond = self.hires_image_cond(&samples, cond_source.as_ref(), first, t)?;
        Ok((samples, image_cond))
    }

    /// Inpainting checkpoints' extra input for the second pass, image by image (A1111's
    /// `txt2img_image_conditioning` or `img2img_image_conditioning` of the upscaled batch; the
    /// crop applies to the latents, so the conditioning is cropped the same way).
    fn hires_image_cond(
        &self,
        samples: &Tensor,
        source: Option<&Tensor>,
        first: &BatchInputs<'_>,
        t: HiresTarget,
    ) -> Result<Option<Tensor>> {
        if !self.model.facts.inpaint {
            return Ok(None);
        }
        let (n, _, h, w) = samples.dims4()?;
        let shape = LatentShape {
            channels: 4,
            height: t.height as usize / 8,
            width: t.width as usize / 8,
        };
        let weight = first.req.inpainting_mask_weight;
        let cond = match source {
            // a blank picture, the same for every image: encoded once
            None => self.inpainting_conditioning(shape, n, None, None, weight)?,
            Some(s) => {
                let mut rows = Vec::with_capacity(n);
                for i in 0..n {
                    let src = s.narrow(0, i, 1)?;
                    rows.extend(self.inpainting_conditioning(
                        shape,
                        1,
                        Some(&src),
                        None,
                        weight,
                    )?);
                }
                Some(Tensor::cat(&rows, 0)?)
            }
        };
        let (ty, tx) = (t.truncate_y as usize, t.truncate_x as usize);
        cond.map(|c| Ok(c.narrow(2, ty / 2, h)?.narrow(3, tx / 2, w)?.contiguous()?))
            .transpose()
    }
}

/// The infotext keys a hires picture gets after the processing's own: those known when the
/// first pass ended (`before`), A1111's `VAE Encoder` where the hires pass encodes with TAESD,
/// then the keys that only the second pass set (in `after`, the list at its end).
fn hires_params(
    before: Vec<(String, String)>,
    after: Vec<(String, String)>,
    encoder: Option<(String, String)>,
) -> Vec<(String, String)> {
    let (known, new): (Vec<_>, Vec<_>) = after
        .into_iter()
        .partition(|(k, _)| before.iter().any(|(b, _)| b == k));
    // the first pass's keys in their order, with their values at the end
    let first = before.into_iter().map(|(k, v)| {
        let now = known.iter().find(|(n, _)| *n == k);
        now.cloned().unwrap_or((k, v))
    });
    first.chain(encoder).chain(new).collect()
}

#[cfg(test)]
mod tests {
    use super::hires_params;

    fn kv(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_encoder_key_follows_the_first_pass_keys() {
        let before = kv(&[("Lora hashes", "a: 1"), ("NGMS", "1")]);
        let after = kv(&[
            ("Lora hashes", "a: 1"),
            ("NGMS", "2"),
            ("Skip early CFG", "0.1"),
        ]);
        let got = hires_params(before, after, Some(("VAE Encoder".into(), "TAESD".into())));
        let want = [
            ("Lora hashes", "a: 1"),
            ("NGMS", "2"),
            ("VAE Encoder", "TAESD"),
            ("Skip early CFG", "0.1"),
        ];
        assert_eq!(got, kv(&want));
        assert_eq!(
            hires_params(kv(&[]), kv(&[("A", "1")]), None),
            kv(&[("A", "1")])
        );
    }
}
