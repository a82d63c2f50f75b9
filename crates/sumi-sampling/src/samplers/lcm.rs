//! LCM sampling as A1111 ships it
//! (`modules/sd_samplers_lcm.py` `sample_lcm`).

use candle_core::Tensor;

use super::{add_scaled, check_sigmas, report, OnStep, SamplerParams};
use crate::denoiser::Denoiser;
use crate::error::Result;
use crate::noise::NoiseSampler;

/// Latent Consistency Model sampling (A1111 `sample_lcm`): jump to the
/// denoised estimate, then re-noise to the next sigma with fresh noise.
pub fn sample_lcm(
    denoiser: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut dyn NoiseSampler,
    _p: &SamplerParams,
    on_step: &mut OnStep<'_>,
) -> Result<Tensor> {
    check_sigmas(sigmas)?;
    for i in 0..sigmas.len() - 1 {
        let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = denoiser.denoise(&x, sigma)?;
        if report(on_step, i, sigmas, sigma, &x, &denoised) {
            return Ok(denoised);
        }
        x = denoised;
        if sigma_next > 0.0 {
            x = add_scaled(&x, &noise.sample(sigma, sigma_next)?, sigma_next)?;
        }
    }
    Ok(x)
}
