//! Euler-family samplers of Karras et al. (2022) as k-diffusion implements them:
//! Euler and Heun (Algorithm 2, with churn), DPM2 (DPM-Solver-2 midpoint in log
//! sigma), and their ancestral variants.

use candle_core::Tensor;

use super::{
    add_scaled, check_sigmas, get_ancestral_step, report, scale, to_d, OnStep, SamplerParams,
};
use crate::denoiser::Denoiser;
use crate::error::Result;
use crate::noise::NoiseSampler;

/// Churn of Algorithm 2: returns `(x, sigma_hat)`. The noise draw happens every
/// step when churn is enabled, as k-diffusion draws `randn_like` every step
/// (without churn the draws are never used, so none are made).
fn churn(
    x: Tensor,
    sigmas: &[f64],
    i: usize,
    noise: &mut dyn NoiseSampler,
    p: &SamplerParams,
) -> Result<(Tensor, f64)> {
    let sigma = sigmas[i];
    let steps = (sigmas.len() - 1) as f64;
    let gamma = if p.s_tmin <= sigma && sigma <= p.s_tmax {
        (p.s_churn / steps).min(2f64.sqrt() - 1.0)
    } else {
        0.0
    };
    let eps = if p.s_churn > 0.0 {
        Some(scale(&noise.sample(sigma, sigmas[i + 1])?, p.s_noise)?)
    } else {
        None
    };
    let sigma_hat = sigma * (gamma + 1.0);
    match eps {
        Some(eps) if gamma > 0.0 => {
            let x = add_scaled(&x, &eps, (sigma_hat.powi(2) - sigma.powi(2)).sqrt())?;
            Ok((x, sigma_hat))
        }
        _ => Ok((x, sigma_hat)),
    }
}

/// Euler steps, Algorithm 2 of Karras et al. (2022) (k-diffusion `sample_euler`).
pub fn sample_euler(
    denoiser: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut dyn NoiseSampler,
    p: &SamplerParams,
    on_step: &mut OnStep<'_>,
) -> Result<Tensor> {
    check_sigmas(sigmas)?;
    for i in 0..sigmas.len() - 1 {
        let (x_hat, sigma_hat) = churn(x, sigmas, i, noise, p)?;
        x = x_hat;
        let denoised = denoiser.denoise(&x, sigma_hat)?;
        let d = to_d(&x, sigma_hat, &denoised)?;
        if report(on_step, i, sigmas, sigma_hat, &x, &denoised) {
            return Ok(denoised);
        }
        let dt = sigmas[i + 1] - sigma_hat;
        x = add_scaled(&x, &d, dt)?;
    }
    Ok(x)
}

/// Ancestral sampling with Euler steps (k-diffusion `sample_euler_ancestral`).
pub fn sample_euler_ancestral(
    denoiser: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut dyn NoiseSampler,
    p: &SamplerParams,
    on_step: &mut OnStep<'_>,
) -> Result<Tensor> {
    check_sigmas(sigmas)?;
    for i in 0..sigmas.len() - 1 {
        let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = denoiser.denoise(&x, sigma)?;
        let (sigma_down, sigma_up) = get_ancestral_step(sigma, sigma_next, p.eta);
        if report(on_step, i, sigmas, sigma, &x, &denoised) {
            return Ok(denoised);
        }
        let d = to_d(&x, sigma, &denoised)?;
        let dt = sigma_down - sigma;
        x = add_scaled(&x, &d, dt)?;
        if sigma_next > 0.0 {
            x = add_scaled(&x, &noise.sample(sigma, sigma_next)?, p.s_noise * sigma_up)?;
        }
    }
    Ok(x)
}

/// Heun steps, Algorithm 2 of Karras et al. (2022) (k-diffusion `sample_heun`);
/// the last step (to sigma 0) is an Euler step.
pub fn sample_heun(
    denoiser: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut dyn NoiseSampler,
    p: &SamplerParams,
    on_step: &mut OnStep<'_>,
) -> Result<Tensor> {
    check_sigmas(sigmas)?;
    for i in 0..sigmas.len() - 1 {
        let (x_hat, sigma_hat) = churn(x, sigmas, i, noise, p)?;
        x = x_hat;
        let sigma_next = sigmas[i + 1];
        let denoised = denoiser.denoise(&x, sigma_hat)?;
        let d = to_d(&x, sigma_hat, &denoised)?;
        if report(on_step, i, sigmas, sigma_hat, &x, &denoised) {
            return Ok(denoised);
        }
        let dt = sigma_next - sigma_hat;
        if sigma_next == 0.0 {
            x = add_scaled(&x, &d, dt)?;
        } else {
            let x_2 = add_scaled(&x, &d, dt)?;
            let denoised_2 = denoiser.denoise(&x_2, sigma_next)?;
            let d_2 = to_d(&x_2, sigma_next, &denoised_2)?;
            let d_prime = ((d + d_2)? / 2.0)?;
            x = add_scaled(&x, &d_prime, dt)?;
        }
    }
    Ok(x)
}

/// The midpoint of DPM-Solver-2: `exp(lerp(ln a, ln b, 1/2))`.
fn log_midpoint(a: f64, b: f64) -> f64 {
    let (la, lb) = (a.ln(), b.ln());
    (la + 0.5 * (lb - la)).exp()
}

/// DPM-Solver-2 inspired second-order steps with Karras churn (k-diffusion `sample_dpm_2`).
pub fn sample_dpm_2(
    denoiser: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut dyn NoiseSampler,
    p: &SamplerParams,
    on_step: &mut OnStep<'_>,
) -> Result<Tensor> {
    check_sigmas(sigmas)?;
    for i in 0..sigmas.len() - 1 {
        let (x_hat, sigma_hat) = churn(x, sigmas, i, noise, p)?;
        x = x_hat;
        let sigma_next = sigmas[i + 1];
        let denoised = denoiser.denoise(&x, sigma_hat)?;
        let d = to_d(&x, sigma_hat, &denoised)?;
        if report(on_step, i, sigmas, sigma_hat, &x, &denoised) {
            return Ok(denoised);
        }
        if sigma_next == 0.0 {
            x = add_scaled(&x, &d, sigma_next - sigma_hat)?;
        } else {
            let sigma_mid = log_midpoint(sigma_hat, sigma_next);
            let x_2 = add_scaled(&x, &d, sigma_mid - sigma_hat)?;
            let denoised_2 = denoiser.denoise(&x_2, sigma_mid)?;
            let d_2 = to_d(&x_2, sigma_mid, &denoised_2)?;
            x = add_scaled(&x, &d_2, sigma_next - sigma_hat)?;
        }
    }
    Ok(x)
}

/// Ancestral sampling with DPM-Solver-2 steps (k-diffusion `sample_dpm_2_ancestral`).
/// As in k-diffusion, noise is only added after a second-order step (not when
/// `sigma_down` is 0).
pub fn sample_dpm_2_ancestral(
    denoiser: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut dyn NoiseSampler,
    p: &SamplerParams,
    on_step: &mut OnStep<'_>,
) -> Result<Tensor> {
    check_sigmas(sigmas)?;
    for i in 0..sigmas.len() - 1 {
        let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = denoiser.denoise(&x, sigma)?;
        let (sigma_down, sigma_up) = get_ancestral_step(sigma, sigma_next, p.eta);
        if report(on_step, i, sigmas, sigma, &x, &denoised) {
            return Ok(denoised);
        }
        let d = to_d(&x, sigma, &denoised)?;
        if sigma_down == 0.0 {
            x = add_scaled(&x, &d, sigma_down - sigma)?;
        } else {
            let sigma_mid = log_midpoint(sigma, sigma_down);
            let x_2 = add_scaled(&x, &d, sigma_mid - sigma)?;
            let denoised_2 = denoiser.denoise(&x_2, sigma_mid)?;
            let d_2 = to_d(&x_2, sigma_mid, &denoised_2)?;
            x = add_scaled(&x, &d_2, sigma_down - sigma)?;
            x = add_scaled(&x, &noise.sample(sigma, sigma_next)?, p.s_noise * sigma_up)?;
        }
    }
    Ok(x)
}
