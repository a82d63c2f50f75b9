//! DPM-Solver++ samplers (Lu et al. 2022) as k-diffusion implements them, in
//! the half-log-SNR time `t = −ln σ` (`sigma_fn(t) = e^{−t}`): 2S ancestral,
//! SDE (stochastic, Brownian noise), 2M, 2M SDE (midpoint or Heun) and 3M SDE.

use candle_core::Tensor;

use super::{
    add_scaled, check_sigmas, get_ancestral_step, report, scale, to_d, OnStep, SamplerParams,
};
use crate::denoiser::Denoiser;
use crate::error::Result;
use crate::noise::NoiseSampler;

fn t_fn(sigma: f64) -> f64 {
    -sigma.ln()
}

fn sigma_fn(t: f64) -> f64 {
    (-t).exp()
}

/// `a · x + b · y` for scalars `a`, `b`.
fn lincomb(x: &Tensor, a: f64, y: &Tensor, b: f64) -> Result<Tensor> {
    Ok((x.affine(a, 0.0)? + y.affine(b, 0.0)?)?)
}

/// Ancestral sampling with DPM-Solver++(2S) steps (k-diffusion `sample_dpmpp_2s_ancestral`).
pub fn sample_dpmpp_2s_ancestral(
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
        if sigma_down == 0.0 {
            let d = to_d(&x, sigma, &denoised)?;
            x = add_scaled(&x, &d, sigma_down - sigma)?;
        } else {
            let (t, t_next) = (t_fn(sigma), t_fn(sigma_down));
            let r = 0.5;
            let h = t_next - t;
            let s = t + r * h;
            let x_2 = lincomb(&x, sigma_fn(s) / sigma_fn(t), &denoised, -(-h * r).exp_m1())?;
            let denoised_2 = denoiser.denoise(&x_2, sigma_fn(s))?;
            x = lincomb(
                &x,
                sigma_fn(t_next) / sigma_fn(t),
                &denoised_2,
                -(-h).exp_m1(),
            )?;
        }
        if sigma_next > 0.0 {
            x = add_scaled(&x, &noise.sample(sigma, sigma_next)?, p.s_noise * sigma_up)?;
        }
    }
    Ok(x)
}

/// The times k-diffusion's DPM++ SDE hands its noise sampler, in float32 as
/// torch computes them from the float32 sigmas: `(σ(t), σ(s), σ(t_next))` with
/// `t = −ln σ`, `s = t + r·(t_next − t)`, `σ(t) = e^{−t}`. (The Brownian tree
/// resolves times to 1e-6, so the float32 round trip matters; torch's float
/// `log`/`exp` are approximated by correctly rounded ones.)
fn sde_noise_times(sigma: f64, sigma_next: f64, r: f64) -> (f64, f64, f64) {
    let ln32 = |v: f32| (v as f64).ln() as f32;
    let exp32 = |v: f32| (v as f64).exp() as f32;
    let t = -ln32(sigma as f32);
    let t_next = -ln32(sigma_next as f32);
    let h = t_next - t;
    let s = t + h * r as f32;
    (exp32(-t) as f64, exp32(-s) as f64, exp32(-t_next) as f64)
}

/// DPM-Solver++ (stochastic) (k-diffusion `sample_dpmpp_sde`): two stages per
/// step with ratio `p.r`, each adding Brownian noise; `noise` is called with
/// `(σ(t), σ(s))` and `(σ(t), σ(t_next))`, computed in float32 as k-diffusion does.
pub fn sample_dpmpp_sde(
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
        if report(on_step, i, sigmas, sigma, &x, &denoised) {
            return Ok(denoised);
        }
        if sigma_next == 0.0 {
            let d = to_d(&x, sigma, &denoised)?;
            x = add_scaled(&x, &d, sigma_next - sigma)?;
            continue;
        }
        let (t, t_next) = (t_fn(sigma), t_fn(sigma_next));
        let h = t_next - t;
        let s = t + h * p.r;
        let fac = 1.0 / (2.0 * p.r);
        let (q_t, q_s, q_next) = sde_noise_times(sigma, sigma_next, p.r);

        // Step 1
        let (sd, su) = get_ancestral_step(sigma_fn(t), sigma_fn(s), p.eta);
        let s_ = t_fn(sd);
        let mut x_2 = lincomb(
            &x,
            sigma_fn(s_) / sigma_fn(t),
            &denoised,
            -(t - s_).exp_m1(),
        )?;
        x_2 = add_scaled(&x_2, &noise.sample(q_t, q_s)?, p.s_noise * su)?;
        let denoised_2 = denoiser.denoise(&x_2, sigma_fn(s))?;

        // Step 2
        let (sd, su) = get_ancestral_step(sigma_fn(t), sigma_fn(t_next), p.eta);
        let t_next_ = t_fn(sd);
        let denoised_d = lincomb(&denoised, 1.0 - fac, &denoised_2, fac)?;
        x = lincomb(
            &x,
            sigma_fn(t_next_) / sigma_fn(t),
            &denoised_d,
            -(t - t_next_).exp_m1(),
        )?;
        x = add_scaled(&x, &noise.sample(q_t, q_next)?, p.s_noise * su)?;
    }
    Ok(x)
}

/// DPM-Solver++(2M) (k-diffusion `sample_dpmpp_2m`).
pub fn sample_dpmpp_2m(
    denoiser: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    _noise: &mut dyn NoiseSampler,
    _p: &SamplerParams,
    on_step: &mut OnStep<'_>,
) -> Result<Tensor> {
    check_sigmas(sigmas)?;
    let mut old_denoised: Option<Tensor> = None;
    for i in 0..sigmas.len() - 1 {
        let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = denoiser.denoise(&x, sigma)?;
        if report(on_step, i, sigmas, sigma, &x, &denoised) {
            return Ok(denoised);
        }
        let (t, t_next) = (t_fn(sigma), t_fn(sigma_next));
        let h = t_next - t;
        let ratio = sigma_fn(t_next) / sigma_fn(t);
        x = match &old_denoised {
            Some(old) if sigma_next != 0.0 => {
                let h_last = t - t_fn(sigmas[i - 1]);
                let r = h_last / h;
                let denoised_d =
                    lincomb(&denoised, 1.0 + 1.0 / (2.0 * r), old, -(1.0 / (2.0 * r)))?;
                lincomb(&x, ratio, &denoised_d, -(-h).exp_m1())?
            }
            _ => lincomb(&x, ratio, &denoised, -(-h).exp_m1())?,
        };
        old_denoised = Some(denoised);
    }
    Ok(x)
}

/// DPM-Solver++(2M) SDE (k-diffusion `sample_dpmpp_2m_sde`), midpoint or
/// (`p.solver_heun`) Heun correction; noise scaled by
/// `σ_next · sqrt(1 − e^{−2ηh})`.
pub fn sample_dpmpp_2m_sde(
    denoiser: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut dyn NoiseSampler,
    p: &SamplerParams,
    on_step: &mut OnStep<'_>,
) -> Result<Tensor> {
    check_sigmas(sigmas)?;
    let mut old_denoised: Option<Tensor> = None;
    let mut h_last: Option<f64> = None;
    for i in 0..sigmas.len() - 1 {
        let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = denoiser.denoise(&x, sigma)?;
        if report(on_step, i, sigmas, sigma, &x, &denoised) {
            return Ok(denoised);
        }
        if sigma_next == 0.0 {
            x = denoised.clone();
        } else {
            let (t, s) = (-sigma.ln(), -sigma_next.ln());
            let h = s - t;
            let eta_h = p.eta * h;
            let one_minus = -(-h - eta_h).exp_m1();
            x = lincomb(
                &x,
                sigma_next / sigma * (-eta_h).exp(),
                &denoised,
                one_minus,
            )?;
            if let (Some(old), Some(h_last)) = (&old_denoised, h_last) {
                let r = h_last / h;
                let diff = (&denoised - old)?;
                let coeff = if p.solver_heun {
                    (one_minus / (-h - eta_h) + 1.0) * (1.0 / r)
                } else {
                    0.5 * one_minus * (1.0 / r)
                };
                x = add_scaled(&x, &diff, coeff)?;
            }
            if p.eta != 0.0 {
                let amount = sigma_next * (-(-2.0 * eta_h).exp_m1()).sqrt() * p.s_noise;
                x = add_scaled(&x, &noise.sample(sigma, sigma_next)?, amount)?;
            }
            h_last = Some(h);
        }
        old_denoised = Some(denoised);
    }
    Ok(x)
}

/// DPM-Solver++(3M) SDE (k-diffusion `sample_dpmpp_3m_sde`).
pub fn sample_dpmpp_3m_sde(
    denoiser: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut dyn NoiseSampler,
    p: &SamplerParams,
    on_step: &mut OnStep<'_>,
) -> Result<Tensor> {
    check_sigmas(sigmas)?;
    let (mut denoised_1, mut denoised_2): (Option<Tensor>, Option<Tensor>) = (None, None);
    let (mut h_1, mut h_2): (Option<f64>, Option<f64>) = (None, None);
    for i in 0..sigmas.len() - 1 {
        let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = denoiser.denoise(&x, sigma)?;
        if report(on_step, i, sigmas, sigma, &x, &denoised) {
            return Ok(denoised);
        }
        let mut h_now = h_1;
        if sigma_next == 0.0 {
            x = denoised.clone();
        } else {
            let (t, s) = (-sigma.ln(), -sigma_next.ln());
            let h = s - t;
            h_now = Some(h);
            let h_eta = h * (p.eta + 1.0);
            x = lincomb(&x, (-h_eta).exp(), &denoised, -(-h_eta).exp_m1())?;
            match (&denoised_1, &denoised_2, h_1, h_2) {
                (Some(d_1), Some(d_2), Some(h1), Some(h2)) => {
                    let (r0, r1) = (h1 / h, h2 / h);
                    let d1_0 = scale(&(&denoised - d_1)?, 1.0 / r0)?;
                    let d1_1 = scale(&(d_1 - d_2)?, 1.0 / r1)?;
                    let diff = (&d1_0 - &d1_1)?;
                    let d1 = add_scaled(&d1_0, &diff, r0 / (r0 + r1))?;
                    let d2 = scale(&diff, 1.0 / (r0 + r1))?;
                    let phi_2 = (-h_eta).exp_m1() / h_eta + 1.0;
                    let phi_3 = phi_2 / h_eta - 0.5;
                    x = add_scaled(&add_scaled(&x, &d1, phi_2)?, &d2, -phi_3)?;
                }
                (Some(d_1), _, Some(h1), _) => {
                    let r = h1 / h;
                    let d = scale(&(&denoised - d_1)?, 1.0 / r)?;
                    let phi_2 = (-h_eta).exp_m1() / h_eta + 1.0;
                    x = add_scaled(&x, &d, phi_2)?;
                }
                _ => {}
            }
            if p.eta != 0.0 {
                let amount = sigma_next * (-(-2.0 * h * p.eta).exp_m1()).sqrt() * p.s_noise;
                x = add_scaled(&x, &noise.sample(sigma, sigma_next)?, amount)?;
            }
        }
        denoised_2 = denoised_1.take();
        denoised_1 = Some(denoised);
        h_2 = h_1;
        h_1 = h_now;
    }
    Ok(x)
}
