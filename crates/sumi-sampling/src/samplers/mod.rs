//! The samplers: one function each, k-diffusion's algorithms
//! (`k_diffusion/sampling.py`, 0.1.1.post1) over the [`Denoiser`] contract.
//!
//! Every sampler takes `(denoiser, x, sigmas, noise, params, on_step)` and
//! returns the final `x`. `x` must already be scaled to `sigmas[0]` (txt2img:
//! `noise · sigmas[0]`; img2img: `init + noise · sigmas[0]`). `on_step` is called
//! once per step, after the step's first model evaluation (where k-diffusion
//! calls its callback); returning `ControlFlow::Break` stops sampling and the
//! sampler returns that step's `denoised` (A1111 returns its last latent
//! preview on interrupt). Scalar coefficients are computed in double, tensor
//! arithmetic in the tensor's dtype.
//!
//! A1111's timestep samplers (DDIM, DDIM CFG++, PLMS, UniPC) work in the
//! variance-preserving scale on DDIM timesteps instead of a sigma schedule:
//! [`sample_ddim`], [`sample_ddim_cfgpp`], [`sample_plms`], [`sample_unipc`].
//! DPM fast and DPM adaptive run between `sigma_min` and `sigma_max` in float32
//! `t = −ln σ` ([`sample_dpm_fast`], [`sample_dpm_adaptive`]); Restart is A1111's
//! own sampler on a schedule ([`sample_restart`]).

use std::ops::ControlFlow;

use candle_core::Tensor;

use crate::denoiser::Denoiser;
use crate::error::{Result, SamplingError};
use crate::names::SamplerKind;
use crate::noise::NoiseSampler;

mod ddim_cfgpp;
mod ddim_plms;
mod dpm_solver;
mod dpmpp;
mod euler;
mod lcm;
mod lms;
mod restart;
mod unipc;

pub use ddim_cfgpp::{sample_ddim_cfgpp, CFG_PP_SCALE_MULTIPLIER};
pub use ddim_plms::{ddim_img2img, ddim_timesteps, sample_ddim, sample_plms};
pub use dpm_solver::{
    dpm_fast_orders, sample_dpm_adaptive, sample_dpm_fast, AdaptiveInfo, AdaptiveParams,
};
pub use dpmpp::{
    sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_2s_ancestral, sample_dpmpp_3m_sde,
    sample_dpmpp_sde,
};
pub use euler::{
    sample_dpm_2, sample_dpm_2_ancestral, sample_euler, sample_euler_ancestral, sample_heun,
};
pub use lcm::sample_lcm;
pub use lms::{linear_multistep_coeff, sample_lms};
pub use restart::{restart_steps, sample_restart};
pub use unipc::{sample_unipc, unipc_img2img_t_start};

/// What `on_step` sees (k-diffusion's callback dict).
pub struct Step<'a> {
    /// Step index, 0-based.
    pub i: usize,
    /// Number of steps (`sigmas.len() - 1`).
    pub steps: usize,
    /// Where on the noise scale the step evaluated the model.
    pub level: Level,
    /// `x` at the model evaluation.
    pub x: &'a Tensor,
    /// The model's denoised estimate.
    pub denoised: &'a Tensor,
}

/// Where on the noise scale a step evaluated the model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Level {
    /// k-diffusion samplers: the step's sigma, and the sigma the model was evaluated at
    /// (`sigma_hat`, above `sigma` with churn).
    Sigma {
        /// The step's sigma.
        sigma: f64,
        /// The sigma the model saw.
        sigma_hat: f64,
    },
    /// Timestep samplers (variance-preserving scale): the model's time in DDPM timesteps
    /// (`0..1000`; fractional for UniPC's continuous time).
    Timestep(f64),
}

/// Progress/cancel callback.
pub type OnStep<'a> = dyn FnMut(&Step<'_>) -> ControlFlow<()> + 'a;

/// Sampler parameters, A1111's defaults via [`Default`].
#[derive(Clone, Debug)]
pub struct SamplerParams {
    /// Ancestral / SDE noise amount (A1111 `eta_ancestral`, default 1).
    pub eta: f64,
    /// Noise multiplier (A1111 `s_noise`, default 1).
    pub s_noise: f64,
    /// Churn of Euler, Heun, DPM2 (default 0).
    pub s_churn: f64,
    /// Churn applies for sigmas in `[s_tmin, s_tmax]`.
    pub s_tmin: f64,
    /// Upper end of the churn window (default infinity).
    pub s_tmax: f64,
    /// DPM++ SDE intermediate step ratio (default 1/2).
    pub r: f64,
    /// DPM++ 2M SDE: Heun instead of midpoint (set by "DPM++ 2M SDE Heun").
    pub solver_heun: bool,
    /// LMS order (default 4).
    pub lms_order: usize,
}

impl Default for SamplerParams {
    fn default() -> Self {
        Self {
            eta: 1.0,
            s_noise: 1.0,
            s_churn: 0.0,
            s_tmin: 0.0,
            s_tmax: f64::INFINITY,
            r: 0.5,
            solver_heun: false,
            lms_order: 4,
        }
    }
}

/// Runs the sampler `kind` (see the module docs for the contract).
pub fn sample(
    kind: SamplerKind,
    denoiser: &mut dyn Denoiser,
    x: Tensor,
    sigmas: &[f64],
    noise: &mut dyn NoiseSampler,
    params: &SamplerParams,
    on_step: &mut OnStep<'_>,
) -> Result<Tensor> {
    let mut p = params.clone();
    match kind {
        SamplerKind::Euler => sample_euler(denoiser, x, sigmas, noise, &p, on_step),
        SamplerKind::EulerAncestral => {
            sample_euler_ancestral(denoiser, x, sigmas, noise, &p, on_step)
        }
        SamplerKind::Heun => sample_heun(denoiser, x, sigmas, noise, &p, on_step),
        SamplerKind::Dpm2 => sample_dpm_2(denoiser, x, sigmas, noise, &p, on_step),
        SamplerKind::Dpm2Ancestral => {
            sample_dpm_2_ancestral(denoiser, x, sigmas, noise, &p, on_step)
        }
        SamplerKind::Lms => sample_lms(denoiser, x, sigmas, noise, &p, on_step),
        SamplerKind::DpmPp2SAncestral => {
            sample_dpmpp_2s_ancestral(denoiser, x, sigmas, noise, &p, on_step)
        }
        SamplerKind::DpmPp2M => sample_dpmpp_2m(denoiser, x, sigmas, noise, &p, on_step),
        SamplerKind::DpmPpSde => sample_dpmpp_sde(denoiser, x, sigmas, noise, &p, on_step),
        SamplerKind::DpmPp2MSde => {
            p.solver_heun = false;
            sample_dpmpp_2m_sde(denoiser, x, sigmas, noise, &p, on_step)
        }
        SamplerKind::DpmPp2MSdeHeun => {
            p.solver_heun = true;
            sample_dpmpp_2m_sde(denoiser, x, sigmas, noise, &p, on_step)
        }
        SamplerKind::DpmPp3MSde => sample_dpmpp_3m_sde(denoiser, x, sigmas, noise, &p, on_step),
        SamplerKind::Lcm => sample_lcm(denoiser, x, sigmas, noise, &p, on_step),
        SamplerKind::Restart => sample_restart(denoiser, x, sigmas, noise, &p, on_step),
        SamplerKind::Ddim | SamplerKind::DdimCfgPp | SamplerKind::Plms | SamplerKind::UniPc => {
            Err(SamplingError::InvalidParameter {
                what: "sampler",
                detail: format!(
                    "{} is a timestep sampler: use samplers::sample_ddim / sample_ddim_cfgpp / sample_plms / sample_unipc",
                    kind.label()
                ),
            })
        }
        SamplerKind::DpmFast | SamplerKind::DpmAdaptive => Err(SamplingError::InvalidParameter {
            what: "sampler",
            detail: format!(
                "{} runs between sigma_min and sigma_max, not on a schedule: use samplers::sample_dpm_fast / sample_dpm_adaptive",
                kind.label()
            ),
        }),
    }
}

/// Checks that a schedule is usable: at least two finite, non-negative sigmas.
pub(crate) fn check_sigmas(sigmas: &[f64]) -> Result<()> {
    if sigmas.len() < 2 {
        return Err(SamplingError::InvalidSigmas(format!(
            "need at least 2 sigmas, got {}",
            sigmas.len()
        )));
    }
    if let Some(bad) = sigmas.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
        return Err(SamplingError::InvalidSigmas(format!(
            "sigma {bad} is not finite and >= 0"
        )));
    }
    Ok(())
}

/// `x · s` for a scalar `s`.
pub(crate) fn scale(x: &Tensor, s: f64) -> Result<Tensor> {
    Ok(x.affine(s, 0.0)?)
}

/// `a + b · s`.
pub(crate) fn add_scaled(a: &Tensor, b: &Tensor, s: f64) -> Result<Tensor> {
    Ok((a + b.affine(s, 0.0)?)?)
}

/// k-diffusion `to_d`: the Karras ODE derivative `(x − denoised) / σ`.
pub(crate) fn to_d(x: &Tensor, sigma: f64, denoised: &Tensor) -> Result<Tensor> {
    Ok(((x - denoised)? / sigma)?)
}

/// k-diffusion `get_ancestral_step`: `(sigma_down, sigma_up)` for an ancestral
/// step from `sigma_from` to `sigma_to` with noise amount `eta`.
pub fn get_ancestral_step(sigma_from: f64, sigma_to: f64, eta: f64) -> (f64, f64) {
    if eta == 0.0 {
        return (sigma_to, 0.0);
    }
    let sigma_up = sigma_to.min(
        eta * (sigma_to.powi(2) * (sigma_from.powi(2) - sigma_to.powi(2)) / sigma_from.powi(2))
            .sqrt(),
    );
    let sigma_down = (sigma_to.powi(2) - sigma_up.powi(2)).sqrt();
    (sigma_down, sigma_up)
}

/// Calls `on_step`; `true` when sampling must stop.
pub(crate) fn report(
    on_step: &mut OnStep<'_>,
    i: usize,
    sigmas: &[f64],
    sigma_hat: f64,
    x: &Tensor,
    denoised: &Tensor,
) -> bool {
    let step = Step {
        i,
        steps: sigmas.len() - 1,
        level: Level::Sigma {
            sigma: sigmas[i],
            sigma_hat,
        },
        x,
        denoised,
    };
    on_step(&step).is_break()
}
