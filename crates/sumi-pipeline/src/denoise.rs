//! The U-Net as a sampler's [`Denoiser`](sumi_sampling::Denoiser): k-diffusion's CompVis wrapper (ε or v, sigma → t)
//! inside A1111's `CFGDenoiser` — conds of every image and `AND` part first, the unconds
//! last; one U-Net call when cond and uncond have the same token count, separate calls
//! otherwise (A1111's default, unpadded); `denoised = uncond + Σ wᵢ·cfg·(condᵢ − uncond)`.
//! The prompt-schedule step counter advances once per call, as A1111's does.
//! CFG++ (DDIM CFG++) asks through [`Denoiser::denoise_cfg_pp`](sumi_sampling::Denoiser::denoise_cfg_pp)
//! for the scale multiplied by A1111's `cond_scale_miltiplier` and the unconditional
//! prediction (A1111's `last_noise_uncond`), both of the same U-Net call.
//! UniPC asks through [`Denoiser::denoise_at_timestep`](sumi_sampling::Denoiser::denoise_at_timestep)
//! as A1111's `CFGDenoiserTimesteps` answers it: the U-Net on the variance-preserving `x` at a
//! fractional timestep, guided ε (a v model's at `ᾱ[int(t)]`), turned into the clean estimate.

use candle_core::{DType, Tensor};
use sumi_models::{Hypernetworks, UNet};
use sumi_sampling::denoiser::{scalings, GuidedPrediction};
use sumi_sampling::{DiscreteSchedule, Prediction};

use crate::cfg_skip::SkipRule;
use crate::conditioning::{cond_at, vector_at, MultiCond, ScheduledCond};

/// Classifier-free guidance over a batch of images sharing one prompt.
pub struct CfgDenoiser<'a> {
    /// The network.
    pub unet: &'a UNet,
    /// The hypernetworks on its attention.
    pub hypernetworks: &'a Hypernetworks,
    /// ε or v.
    pub prediction: Prediction,
    /// The model's discrete noise levels.
    pub schedule: &'a DiscreteSchedule,
    /// The prompt's conditioning.
    pub cond: &'a MultiCond,
    /// The negative prompt's conditioning.
    pub uncond: &'a [ScheduledCond],
    /// Guidance scale.
    pub cfg_scale: f64,
    /// Extra U-Net input channels per image (inpainting models), concatenated to x.
    pub image_cond: Option<Tensor>,
    /// Inpainting: the source latents put back outside the mask after every step.
    pub blend: Option<LatentBlend>,
    /// A1111's step counter (denoiser calls so far).
    pub step: u32,
    /// When the uncond rows are skipped (NGMS, skip early CFG), and what skipped.
    pub(crate) skip: SkipRule,
    /// Token merging ratio on the U-Net's full-resolution self-attention (0 = none).
    pub token_merging: f64,
    /// The refiner, until it takes over ([`crate::refiner`]).
    pub(crate) refiner: Option<crate::refiner::Switch<'a>>,
}

/// A1111's latent mask blend in its `CFGDenoiser`.
///
/// k-diffusion samplers (`mask_before_denoising` off): the guided prediction becomes
/// `denoised · nmask + init_latent · mask`.
///
/// Timestep samplers (DDIM, PLMS, UniPC: `mask_before_denoising` on): the *input* is blended
/// with the clean source in the variance-preserving scale, `x = init_latent · mask + nmask · x`,
/// while the sampler keeps its own `x` to turn the prediction into ε. In the sigma scale the
/// denoiser sees (`x_ve = x_vp · √(1 + σ²)`) that is `x' = init · mask · √(1 + σ²) + nmask ·
/// x`, and the prediction handed back is `D(x') + (x − x')`, so that `(x − D)/σ` is the ε A1111
/// computes from the blended input.
pub struct LatentBlend {
    /// The source latents (`init_latent`), `[1 or batch, 4, h, w]`.
    pub init: Tensor,
    /// `mask`: 1 where the source stays.
    pub keep: Tensor,
    /// `nmask`: 1 where the picture changes.
    pub change: Tensor,
    /// Blend the input (timestep samplers) instead of the prediction.
    pub before: bool,
}

impl LatentBlend {
    /// `x' = init · mask · √(1 + σ²) + nmask · x`.
    fn blend_input(&self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        let scale = (1.0 + sigma * sigma).sqrt();
        x.broadcast_mul(&self.change)?
            .broadcast_add(&self.init.broadcast_mul(&self.keep)?.affine(scale, 0.0)?)
    }

    /// `denoised · nmask + init · mask`.
    fn blend_output(&self, denoised: &Tensor) -> candle_core::Result<Tensor> {
        denoised
            .broadcast_mul(&self.change)?
            .broadcast_add(&self.init.broadcast_mul(&self.keep)?)
    }
}

fn err(e: impl std::fmt::Display) -> sumi_sampling::SamplingError {
    sumi_sampling::SamplingError::InvalidParameter {
        what: "denoiser",
        detail: e.to_string(),
    }
}

/// How the sampler asks for a prediction.
#[derive(Clone, Copy, Debug)]
enum ModelInput {
    /// k-diffusion's CompVis wrapper at noise level sigma (`x` in the sigma scale): returns
    /// `D(x, σ)`.
    Sigma(f64),
    /// A1111's `CompVisTimesteps(V)Denoiser` at a (fractional) U-Net timestep, `x` in the
    /// variance-preserving scale: returns ε (a v model's `√ᾱ[k]·v + √(1 − ᾱ[k])·x` at
    /// `k = int(t)`, as A1111 indexes `alphas_cumprod` by `t.to(int)`).
    Timestep(f64),
}

impl CfgDenoiser<'_> {
    /// The U-Net's extra inputs: SDXL's ADM vectors `y`, the hypernetworks and the token
    /// merging.
    fn extras<'b>(&'b self, y: Option<&'b Tensor>) -> sumi_models::Extras<'b> {
        sumi_models::Extras {
            y,
            residuals: None,
            hyper: self.hypernetworks,
            token_merging: self.token_merging,
        }
    }

    /// The CompVis wrapper on rows `x` with contexts `ctx` (one per row), image conditioning
    /// `ic` and SDXL's ADM vectors `y` (one per row) if any.
    fn inner(
        &self,
        x: &Tensor,
        input: ModelInput,
        ctx: &Tensor,
        ic: Option<&Tensor>,
        y: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let sigma = match input {
            ModelInput::Sigma(sigma) => sigma,
            ModelInput::Timestep(t) => return self.inner_at_timestep(x, t, ctx, ic, y),
        };
        let (c_skip, c_out, c_in) = scalings(self.prediction, sigma);
        let t = self.schedule.sigma_to_t(sigma);
        let rows = x.dim(0)?;
        let ts = Tensor::full(t as f32, rows, x.device())?;
        let x_in = x.affine(c_in, 0.0)?;
        let x_in = match ic {
            Some(ic) => Tensor::cat(&[&x_in, ic], 1)?,
            None => x_in,
        };
        let out = self
            .unet
            .forward_extras(&x_in, &ts, ctx, &self.extras(y))
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        match self.prediction {
            Prediction::Epsilon => x + out.affine(c_out, 0.0)?,
            Prediction::V => out.affine(c_out, 0.0)? + x.affine(c_skip, 0.0)?,
        }
    }

    /// ε at U-Net timestep `t` for variance-preserving rows `x` ([`ModelInput::Timestep`]).
    fn inner_at_timestep(
        &self,
        x: &Tensor,
        t: f64,
        ctx: &Tensor,
        ic: Option<&Tensor>,
        y: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let ts = Tensor::full(t as f32, x.dim(0)?, x.device())?;
        let x_in = match ic {
            Some(ic) => Tensor::cat(&[x, ic], 1)?,
            None => x.clone(),
        };
        let out = self
            .unet
            .forward_extras(&x_in, &ts, ctx, &self.extras(y))
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        match self.prediction {
            Prediction::Epsilon => Ok(out),
            Prediction::V => {
                let ac = self.schedule.alphas_cumprod();
                let a = ac[(t.max(0.0) as usize).min(ac.len() - 1)];
                out.affine(a.sqrt(), 0.0)? + x.affine((1.0 - a).sqrt(), 0.0)?
            }
        }
    }

    /// SDXL's ADM vectors at the current step: the cond rows (image by image, part by part)
    /// and the uncond rows (one per image); `None` for SD1/SD2.
    fn adm_rows(
        &self,
        b: usize,
        parts: usize,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let msg = |e: crate::error::PipelineError| candle_core::Error::Msg(e.to_string());
        let (Some(vc), Some(vu)) = (
            self.cond.vectors_at(self.step).map_err(msg)?,
            vector_at(self.uncond, self.step),
        ) else {
            return Ok((None, None));
        };
        let rows: Vec<Tensor> = (0..b)
            .flat_map(|_| 0..parts)
            .map(|p| vc.get(p))
            .collect::<candle_core::Result<_>>()?;
        let uncond = vu.unsqueeze(0)?.repeat((b, 1))?;
        Ok((Some(Tensor::stack(&rows, 0)?), Some(uncond)))
    }

    /// `(guided, uncond)` with the guidance scale multiplied by `scale_multiplier`.
    fn run(
        &mut self,
        x: &Tensor,
        input: ModelInput,
        scale_multiplier: f64,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let b = x.dim(0)?;
        let (weights, conds) = self
            .cond
            .at_step(self.step)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let uncond = cond_at(self.uncond, self.step)
            .ok_or_else(|| candle_core::Error::Msg("empty negative prompt schedule".into()))?;
        let parts = weights.len();
        // rows: image 0's parts, image 1's parts, …, then one uncond row per image
        let mut xs = Vec::with_capacity(b * parts);
        let mut cs = Vec::with_capacity(b * parts);
        for i in 0..b {
            let xi = x.get(i)?;
            for p in 0..parts {
                xs.push(xi.clone());
                cs.push(conds.get(p)?);
            }
        }
        let x_cond = Tensor::stack(&xs, 0)?;
        let c_cond = Tensor::stack(&cs, 0)?;
        let (y_cond, y_uncond) = self.adm_rows(b, parts)?;
        let (y_cond, y_uncond) = (y_cond.as_ref(), y_uncond.as_ref());
        let ic_rows = |reps: usize| -> candle_core::Result<Option<Tensor>> {
            self.image_cond
                .as_ref()
                .map(|ic| {
                    let rows: Vec<Tensor> = (0..b)
                        .flat_map(|i| std::iter::repeat_n(i, reps))
                        .map(|i| ic.get(i))
                        .collect::<candle_core::Result<_>>()?;
                    Tensor::stack(&rows, 0)
                })
                .transpose()
        };
        let level = match input {
            ModelInput::Sigma(sigma) if self.skip.by_timestep => self.schedule.sigma_to_t(sigma),
            ModelInput::Sigma(sigma) => sigma,
            ModelInput::Timestep(t) => t,
        };
        let (den_cond, den_uncond) = if self.skip.skips(self.step, level) {
            // the cond rows only; each image's first cond prediction stands for its uncond one
            let c = self.inner(&x_cond, input, &c_cond, ic_rows(parts)?.as_ref(), y_cond)?;
            let firsts: Vec<Tensor> = (0..b)
                .map(|i| c.get(i * parts))
                .collect::<candle_core::Result<_>>()?;
            let u = Tensor::stack(&firsts, 0)?;
            (c, u)
        } else if c_cond.dim(1)? == uncond.dim(0)? {
            let u_ctx = uncond.unsqueeze(0)?.repeat((b, 1, 1))?;
            let all_x = Tensor::cat(&[&x_cond, x], 0)?;
            let all_c = Tensor::cat(&[&c_cond, &u_ctx], 0)?;
            let ic = match (ic_rows(parts)?, ic_rows(1)?) {
                (Some(a), Some(u)) => Some(Tensor::cat(&[&a, &u], 0)?),
                _ => None,
            };
            let y = match (y_cond, y_uncond) {
                (Some(c), Some(u)) => Some(Tensor::cat(&[c, u], 0)?),
                _ => None,
            };
            let out = self.inner(&all_x, input, &all_c, ic.as_ref(), y.as_ref())?;
            (out.narrow(0, 0, b * parts)?, out.narrow(0, b * parts, b)?)
        } else {
            let u_ctx = uncond.unsqueeze(0)?.repeat((b, 1, 1))?;
            let c = self.inner(&x_cond, input, &c_cond, ic_rows(parts)?.as_ref(), y_cond)?;
            let u = self.inner(x, input, &u_ctx, ic_rows(1)?.as_ref(), y_uncond)?;
            (c, u)
        };
        let scale = self.cfg_scale * scale_multiplier;
        let mut out = Vec::with_capacity(b);
        for i in 0..b {
            let u = den_uncond.get(i)?;
            let mut d = u.clone();
            for (p, w) in weights.iter().enumerate() {
                let c = den_cond.get(i * parts + p)?;
                d = (d + ((c - &u)? * (w * scale))?)?;
            }
            out.push(d);
        }
        Ok((
            Tensor::stack(&out, 0)?.to_dtype(DType::F32)?,
            den_uncond.to_dtype(DType::F32)?,
        ))
    }

    /// Blends (inpainting), runs and counts one call: `(guided, uncond)`, both handed
    /// back relative to the caller's `x` as the module docs of [`LatentBlend`] say.
    fn guided(
        &mut self,
        x: &Tensor,
        sigma: f64,
        scale_multiplier: f64,
    ) -> sumi_sampling::Result<(Tensor, Tensor)> {
        self.apply_refiner(crate::refiner::Level::Sigma(sigma));
        let before = match &self.blend {
            Some(b) if b.before => Some(b.blend_input(x, sigma).map_err(err)?),
            _ => None,
        };
        let (d, u) = self
            .run(
                before.as_ref().unwrap_or(x),
                ModelInput::Sigma(sigma),
                scale_multiplier,
            )
            .map_err(err)?;
        let (d, u) = match (&self.blend, &before) {
            (None, _) => (d, u),
            (Some(b), None) => (b.blend_output(&d).map_err(err)?, u),
            (Some(_), Some(xb)) => {
                let shift = (x - xb).map_err(err)?;
                ((d + &shift).map_err(err)?, (u + shift).map_err(err)?)
            }
        };
        self.step += 1;
        Ok((d, u))
    }
}

impl sumi_sampling::Denoiser for CfgDenoiser<'_> {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> sumi_sampling::Result<Tensor> {
        Ok(self.guided(x, sigma, 1.0)?.0)
    }

    fn denoise_cfg_pp(
        &mut self,
        x: &Tensor,
        sigma: f64,
        scale_multiplier: f64,
    ) -> sumi_sampling::Result<GuidedPrediction> {
        let (denoised, uncond) = self.guided(x, sigma, scale_multiplier)?;
        Ok(GuidedPrediction { denoised, uncond })
    }

    /// A1111's UniPC call: the input blended with the source in the variance-preserving scale
    /// (`mask_before_denoising`), guided ε of the blended input at timestep `t_model`, and the
    /// clean estimate `(x − σ_t·ε)/α_t` on the sampler's own `x`.
    fn denoise_at_timestep(
        &mut self,
        x: &Tensor,
        t_model: f64,
        alpha: f64,
        sigma: f64,
    ) -> sumi_sampling::Result<Tensor> {
        self.apply_refiner(crate::refiner::Level::Timestep(t_model));
        let blended = match &self.blend {
            Some(b) if b.before => Some(b.blend_input(x, 0.0).map_err(err)?),
            _ => None,
        };
        let (eps, _) = self
            .run(
                blended.as_ref().unwrap_or(x),
                ModelInput::Timestep(t_model),
                1.0,
            )
            .map_err(err)?;
        let x0 = ((x - eps.affine(sigma, 0.0)?)? / alpha)?;
        let x0 = match &self.blend {
            Some(b) if !b.before => b.blend_output(&x0).map_err(err)?,
            _ => x0,
        };
        self.step += 1;
        Ok(x0)
    }
}
