//! DDIM CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free
//! Guidance for Diffusion Models") as A1111 v1.10.1 runs it
//! (`sd_samplers_timesteps_impl.ddim_cfgpp`): A1111's DDIM (same timesteps, same
//! quirks as [`super::sample_ddim`]) with two changes made through its `CFGDenoiser`:
//! the guidance scale is multiplied by `1/12.5` (`cond_scale_miltiplier`, mapping CFG
//! 0…12.5 to 0…1), and the direction term uses the *unconditional* noise prediction
//! (`last_noise_uncond`) instead of the guided one:
//!
//! `x_prev = √ᾱ_prev · x0_guided + √(1 − ᾱ_prev − σ_t²) · ε_uncond + σ_t · z`.
//!
//! Unlike A1111's plain DDIM here, the noise `z` is drawn at every step even with
//! `eta = 0` (A1111 draws `randn_like` unconditionally; `σ_t = 0` makes it add
//! nothing, but the image RNG advances).

use candle_core::Tensor;

use super::ddim_plms::{check_timesteps, ddim_sigma, report_timestep};
use super::{add_scaled, OnStep};
use crate::denoiser::{Denoiser, DiscreteSchedule};
use crate::error::Result;
use crate::noise::NoiseSampler;

/// A1111's `cond_scale_miltiplier` for CFG++: `1 / 12.5`.
pub const CFG_PP_SCALE_MULTIPLIER: f64 = 1.0 / 12.5;

/// DDIM CFG++ with noise amount `eta` (A1111 option `eta_ddim`, default 0). `x` is in
/// the VP scale (txt2img: the noise itself; img2img: see [`super::ddim_img2img`]);
/// `denoiser` must answer [`Denoiser::denoise_cfg_pp`]. `on_step` is called after each
/// update with the new `x` and `denoised = pred_x0` (of the guided prediction), as
/// A1111's callback.
pub fn sample_ddim_cfgpp(
    denoiser: &mut dyn Denoiser,
    mut x: Tensor,
    schedule: &DiscreteSchedule,
    timesteps: &[usize],
    noise: &mut dyn NoiseSampler,
    eta: f64,
    on_step: &mut OnStep<'_>,
) -> Result<Tensor> {
    check_timesteps(timesteps, schedule)?;
    let ac = schedule.alphas_cumprod();
    let n = timesteps.len();
    let steps = n.saturating_sub(1);
    for i in 0..steps {
        let index = n - 1 - i;
        let t = timesteps[index];
        let (a_t, a_prev) = (ac[t], ac[timesteps[index - 1]]);
        let sigma_t = ddim_sigma(eta, a_t, a_prev);
        // ε of the guided and of the unconditional prediction at the VE-scale input
        let sigma = schedule.sigmas()[t];
        let x_ve = (&x / a_t.sqrt())?;
        let guided = denoiser.denoise_cfg_pp(&x_ve, sigma, CFG_PP_SCALE_MULTIPLIER)?;
        let e_t = ((&x_ve - &guided.denoised)? / sigma)?;
        let e_uncond = ((&x_ve - &guided.uncond)? / sigma)?;
        let pred_x0 = ((&x - e_t.affine((1.0 - a_t).sqrt(), 0.0)?)? / a_t.sqrt())?;
        let dir_coeff = (1.0 - a_prev - sigma_t * sigma_t).sqrt();
        x = add_scaled(&pred_x0.affine(a_prev.sqrt(), 0.0)?, &e_uncond, dir_coeff)?;
        let z = noise.sample(sigma, schedule.sigmas()[timesteps[index - 1]])?;
        x = add_scaled(&x, &z, sigma_t)?;
        if report_timestep(on_step, (i, steps), t, &x, &pred_x0) {
            return Ok(pred_x0);
        }
    }
    Ok(x)
}
