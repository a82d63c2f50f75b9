//! DDIM (Song et al. 2021) and PLMS (Liu et al. 2022) as A1111 runs them
//! (`sd_samplers_timesteps_impl.ddim` / `.plms`): timestep samplers in the
//! variance-preserving scale, over the [`Denoiser`] contract
//! (`ε = (x/√ᾱ − D(x/√ᾱ, σ_t)) / σ_t`, which for the CompVis adapter is the
//! network's ε, or the ε derived from v).
//!
//! A1111's quirks are kept: timesteps `range(0, 1000, 1000 // steps) + 1`
//! (clipped to 999), `ᾱ_prev` of the first timestep is `ᾱ_0` (not 1), and the
//! loop runs `len(timesteps) − 1` updates, so it stops at the noise level of
//! the first timestep and returns that `x` (VP scale).

use candle_core::Tensor;

use super::{add_scaled, Level, OnStep, Step};
use crate::denoiser::{Denoiser, DiscreteSchedule};
use crate::error::{Result, SamplingError};
use crate::noise::NoiseSampler;

/// A1111's DDIM timesteps for `steps` ("uniform" discretization):
/// `clip(range(0, T, T // steps) + 1, 0, T − 1)`.
pub fn ddim_timesteps(steps: usize, num_timesteps: usize) -> Result<Vec<usize>> {
    if steps == 0 || steps > num_timesteps {
        return Err(SamplingError::InvalidParameter {
            what: "steps",
            detail: format!("DDIM needs 1..={num_timesteps} steps, got {steps}"),
        });
    }
    let stride = num_timesteps / steps;
    Ok((0..num_timesteps)
        .step_by(stride)
        .map(|t| (t + 1).min(num_timesteps - 1))
        .collect())
}

/// A1111 img2img for timestep samplers: `(timesteps[..t_enc], √ᾱ, √(1 − ᾱ))` at
/// `timesteps[t_enc]`; the start is `init · √ᾱ + noise · √(1 − ᾱ)`.
pub fn ddim_img2img(
    timesteps: &[usize],
    t_enc: usize,
    schedule: &DiscreteSchedule,
) -> Result<(Vec<usize>, f64, f64)> {
    let t = *timesteps
        .get(t_enc)
        .ok_or_else(|| SamplingError::InvalidParameter {
            what: "t_enc",
            detail: format!("{t_enc} is past the {} timesteps", timesteps.len()),
        })?;
    let a = schedule.alphas_cumprod()[t];
    Ok((timesteps[..t_enc].to_vec(), a.sqrt(), (1.0 - a).sqrt()))
}

/// ε at VP-scale `x` and integer timestep `t`, through the denoiser.
fn eps(
    denoiser: &mut dyn Denoiser,
    x: &Tensor,
    schedule: &DiscreteSchedule,
    t: usize,
) -> Result<Tensor> {
    let a_t = schedule.alphas_cumprod()[t];
    let sigma = schedule.sigmas()[t];
    let x_ve = (x / a_t.sqrt())?;
    let denoised = denoiser.denoise(&x_ve, sigma)?;
    Ok(((&x_ve - &denoised)? / sigma)?)
}

/// Refuses timesteps outside the model's schedule.
pub(super) fn check_timesteps(timesteps: &[usize], schedule: &DiscreteSchedule) -> Result<()> {
    let n = schedule.alphas_cumprod().len();
    match timesteps.iter().find(|t| **t >= n) {
        Some(bad) => Err(SamplingError::InvalidParameter {
            what: "timesteps",
            detail: format!("timestep {bad} outside 0..{n}"),
        }),
        None => Ok(()),
    }
}

/// Pseudo linear multistep (A1111 `plms`): a pseudo improved-Euler first step,
/// then Adams-Bashforth of orders 2, 3 and 4 on ε. Same timestep conventions
/// and `on_step` timing as [`sample_ddim`].
pub fn sample_plms(
    denoiser: &mut dyn Denoiser,
    mut x: Tensor,
    schedule: &DiscreteSchedule,
    timesteps: &[usize],
    on_step: &mut OnStep<'_>,
) -> Result<Tensor> {
    check_timesteps(timesteps, schedule)?;
    let ac = schedule.alphas_cumprod();
    let n = timesteps.len();
    let steps = n.saturating_sub(1);
    let mut old_eps: Vec<Tensor> = Vec::new();
    for i in 0..steps {
        let index = n - 1 - i;
        let (t, t_next) = (timesteps[index], timesteps[index - 1]);
        let (a_t, a_prev) = (ac[t], ac[t_next]);
        let x_prev_and_pred = |x: &Tensor, e: &Tensor| -> Result<(Tensor, Tensor)> {
            let pred_x0 = ((x - e.affine((1.0 - a_t).sqrt(), 0.0)?)? / a_t.sqrt())?;
            let x_prev = add_scaled(
                &pred_x0.affine(a_prev.sqrt(), 0.0)?,
                e,
                (1.0 - a_prev).sqrt(),
            )?;
            Ok((x_prev, pred_x0))
        };
        let e_t = eps(denoiser, &x, schedule, t)?;
        let e_prime = match old_eps.len() {
            0 => {
                let (x_prev, _) = x_prev_and_pred(&x, &e_t)?;
                let e_next = eps(denoiser, &x_prev, schedule, t_next)?;
                ((&e_t + e_next)? / 2.0)?
            }
            1 => ((e_t.affine(3.0, 0.0)? - &old_eps[0])? / 2.0)?,
            2 => {
                let s = (e_t.affine(23.0, 0.0)? - old_eps[1].affine(16.0, 0.0)?)?;
                ((s + old_eps[0].affine(5.0, 0.0)?)? / 12.0)?
            }
            _ => {
                let k = old_eps.len();
                let s = (e_t.affine(55.0, 0.0)? - old_eps[k - 1].affine(59.0, 0.0)?)?;
                let s = (s + old_eps[k - 2].affine(37.0, 0.0)?)?;
                ((s - old_eps[k - 3].affine(9.0, 0.0)?)? / 24.0)?
            }
        };
        let (x_prev, pred_x0) = x_prev_and_pred(&x, &e_prime)?;
        old_eps.push(e_t);
        if old_eps.len() >= 4 {
            old_eps.remove(0);
        }
        x = x_prev;
        if report_timestep(on_step, (i, steps), t, &x, &pred_x0) {
            return Ok(pred_x0);
        }
    }
    Ok(x)
}

/// DDIM with noise amount `eta` (A1111 option `eta_ddim`, default 0). `x` is in
/// the VP scale (txt2img: the noise itself). `on_step` is called after each
/// update with the new `x` and `denoised = pred_x0`, as A1111's callback.
pub fn sample_ddim(
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
        let a_t = ac[timesteps[index]];
        let a_prev = ac[timesteps[index - 1]];
        let sigma_t = ddim_sigma(eta, a_t, a_prev);
        let sigma = schedule.sigmas()[timesteps[index]];
        let e_t = eps(denoiser, &x, schedule, timesteps[index])?;
        let pred_x0 = ((&x - e_t.affine((1.0 - a_t).sqrt(), 0.0)?)? / a_t.sqrt())?;
        let dir_coeff = (1.0 - a_prev - sigma_t * sigma_t).sqrt();
        x = add_scaled(&pred_x0.affine(a_prev.sqrt(), 0.0)?, &e_t, dir_coeff)?;
        if sigma_t != 0.0 {
            x = add_scaled(
                &x,
                &noise.sample(sigma, schedule.sigmas()[timesteps[index - 1]])?,
                sigma_t,
            )?;
        }
        if report_timestep(on_step, (i, steps), timesteps[index], &x, &pred_x0) {
            return Ok(pred_x0);
        }
    }
    Ok(x)
}

/// DDIM's noise amount between `ᾱ_t` and `ᾱ_prev`:
/// `eta · sqrt((1 − ᾱ_prev) / (1 − ᾱ_t) · (1 − ᾱ_t / ᾱ_prev))`.
pub(super) fn ddim_sigma(eta: f64, a_t: f64, a_prev: f64) -> f64 {
    eta * ((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)).sqrt()
}

/// A1111's callback of the timestep samplers, after an update: the new `x` and
/// `pred_x0` at timestep `t`; `true` when sampling must stop.
pub(super) fn report_timestep(
    on_step: &mut OnStep<'_>,
    (i, steps): (usize, usize),
    t: usize,
    x: &Tensor,
    pred_x0: &Tensor,
) -> bool {
    let step = Step {
        i,
        steps,
        level: Level::Timestep(t as f64),
        x,
        denoised: pred_x0,
    };
    on_step(&step).is_break()
}
