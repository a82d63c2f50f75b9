//! Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative
//! Processes") as A1111 v1.10.1 runs it (`modules/sd_samplers_extra.py`
//! `restart_sampler`, A1111's own code, not k-diffusion's).
//!
//! With fewer than 20 steps it is plain Heun (the last step, to 0, an Euler step).
//! From 20 steps A1111 re-schedules: `restart_steps = 9`, `restart_times = 1` (from 36
//! steps `steps // 4` and 2), a Karras schedule of `steps − restart_steps ·
//! restart_times` steps from the given schedule's last non-zero sigma to its first,
//! and after the step that lands on the sigma nearest 0.1 it jumps back up to the
//! sigma nearest 2 (adding `randn · s_noise · √(σ_hi² − σ_lo²)`) and runs a Karras
//! schedule of `restart_steps + 1` sigmas (without its 0) down again, `restart_times`
//! times. The total is always `steps` Heun steps. The noise is `torch.randn_like`,
//! which A1111's `TorchHijack` makes the image RNG's next draw; sigma arithmetic is
//! float32 as A1111's sigma tensors.

use candle_core::Tensor;

use super::{add_scaled, check_sigmas, to_d, Level, OnStep, SamplerParams, Step};
use crate::denoiser::Denoiser;
use crate::error::Result;
use crate::noise::NoiseSampler;
use crate::schedules::karras;

/// First index of the float32 value nearest `target` (`torch.argmin(abs(sigmas − target))`).
fn nearest(sigmas: &[f64], target: f64) -> usize {
    let target = target as f32;
    let mut best = 0;
    for (i, s) in sigmas.iter().enumerate() {
        if (*s as f32 - target).abs() < (sigmas[best] as f32 - target).abs() {
            best = i;
        }
    }
    best
}

/// The `(old_sigma, new_sigma)` pairs A1111's `restart_sampler` walks for `sigmas`
/// (with its automatic restart list), in order: one Heun step each.
pub fn restart_steps(sigmas: &[f64]) -> Vec<(f64, f64)> {
    let steps = sigmas.len().saturating_sub(1);
    if steps == 0 {
        return Vec::new();
    }
    let mut sigmas = sigmas.to_vec();
    // {index: (restart_steps, restart_times, restart_max)}
    let mut restart: Option<(usize, usize, usize, f64)> = None;
    if steps >= 20 {
        let (restart_steps, restart_times) = if steps >= 36 { (steps / 4, 2) } else { (9, 1) };
        sigmas = karras(
            steps - restart_steps * restart_times,
            sigmas[sigmas.len() - 2],
            sigmas[0],
            7.0,
        );
        restart = Some((nearest(&sigmas, 0.1), restart_steps + 1, restart_times, 2.0));
    }
    let mut list = Vec::with_capacity(steps);
    for i in 0..sigmas.len() - 1 {
        list.push((sigmas[i], sigmas[i + 1]));
        let Some((min_idx, restart_steps, restart_times, restart_max)) = restart else {
            continue;
        };
        if i + 1 != min_idx {
            continue;
        }
        let max_idx = nearest(&sigmas, restart_max);
        if max_idx < min_idx {
            let mut sigma_restart = karras(restart_steps, sigmas[min_idx], sigmas[max_idx], 7.0);
            sigma_restart.pop();
            for _ in 0..restart_times {
                list.extend(sigma_restart.windows(2).map(|w| (w[0], w[1])));
            }
        }
    }
    list
}

/// A1111's `restart_sampler` (see the module docs) with `p.s_noise` (A1111 leaves it at 1:
/// the function is not in its table of samplers taking the `s_noise` option).
/// `on_step` is called once per Heun step after its first evaluation, with `Step::i`
/// counting Heun steps over all segments.
pub fn sample_restart(
    denoiser: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut dyn NoiseSampler,
    p: &SamplerParams,
    on_step: &mut OnStep<'_>,
) -> Result<Tensor> {
    check_sigmas(sigmas)?;
    let list = restart_steps(sigmas);
    let mut last_sigma: Option<f32> = None;
    for (i, &(old_sigma, new_sigma)) in list.iter().enumerate() {
        let (old32, new32) = (old_sigma as f32, new_sigma as f32);
        if let Some(last) = last_sigma {
            if last < old32 {
                let z = noise.sample(old_sigma, last as f64)?;
                let amount = (old32 * old32 - last * last).sqrt();
                x = add_scaled(&x, &z, (p.s_noise as f32 * amount) as f64)?;
            }
        }
        // heun_step
        let denoised = denoiser.denoise(&x, old_sigma)?;
        let d = to_d(&x, old_sigma, &denoised)?;
        let step = Step {
            i,
            steps: list.len(),
            level: Level::Sigma {
                sigma: old_sigma,
                sigma_hat: old_sigma,
            },
            x: &x,
            denoised: &denoised,
        };
        if on_step(&step).is_break() {
            return Ok(denoised);
        }
        let dt = (new32 - old32) as f64;
        let x_2 = add_scaled(&x, &d, dt)?;
        x = if new_sigma == 0.0 {
            x_2
        } else {
            let denoised_2 = denoiser.denoise(&x_2, new_sigma)?;
            let d_2 = to_d(&x_2, new_sigma, &denoised_2)?;
            let d_prime = ((d + d_2)? / 2.0)?;
            add_scaled(&x, &d_prime, dt)?
        };
        last_sigma = Some(new32);
    }
    Ok(x)
}
