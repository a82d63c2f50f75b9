//! Sigma schedules: A1111's "Schedule type" list (`modules/sd_schedulers.py`),
//! built on k-diffusion's schedule functions. Each returns the sigmas the
//! sampler walks, highest first; all but `kl_optimal` end with a 0.
//!
//! A1111 holds schedules as float32 tensors, and the Brownian tree of the SDE
//! samplers resolves query times to 1e-6, so float32 bits matter: every
//! schedule is rounded to float32, and karras / exponential / polyexponential /
//! uniform / normal / sgm_uniform repeat torch's float32 arithmetic (torch's
//! `linspace` kernel, which fuses `start + step·i` into one multiply-add, then
//! the float ops in k-diffusion's order). torch's float `pow`/`exp`/`log`/`sqrt`
//! (MKL, not always correctly rounded) are approximated by correctly rounded
//! ones. Measured over 3..=60 steps against torch 2.15: karras differs in 19 of
//! 1885 sigmas (only for ≥ 34 steps), exponential in 16, uniform/normal in
//! about 16% (inherited from the discrete table, whose float32 `sqrt` differs
//! in 168 of 1000 levels), each by an ulp.

use std::str::FromStr;

use crate::denoiser::{linspace, DiscreteSchedule};
use crate::error::{Result, SamplingError};

/// A1111's schedule types, in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// The sampler's default (see [`crate::names::SamplerKind::default_scheduler`]); uniform when it has none.
    Automatic,
    /// The model's own discrete sigmas at evenly spaced timesteps (k-diffusion `get_sigmas`).
    Uniform,
    /// Karras et al. (2022), rho = 7.
    Karras,
    /// Evenly spaced in log sigma.
    Exponential,
    /// Polynomial in log sigma, rho = 1.
    Polyexponential,
    /// Evenly spaced timesteps over n + 1 points, last dropped (SGM / SDXL style).
    SgmUniform,
    /// "KL Optimal" (tan of evenly spaced arctan sigma); ends at sigma_min, not 0.
    KlOptimal,
    /// NVIDIA's Align Your Steps, log-linearly interpolated to n.
    AlignYourSteps,
    /// Every (1000/n)-th discrete sigma, from the top.
    Simple,
    /// Evenly spaced timesteps over n points (A1111 "Normal").
    Normal,
    /// DDIM's uniform timestep stride.
    Ddim,
    /// Timesteps at Beta-distribution quantiles (Lee et al. 2024).
    Beta,
}

/// Every scheduler, in A1111's order.
pub const ALL_SCHEDULERS: [Scheduler; 12] = [
    Scheduler::Automatic,
    Scheduler::Uniform,
    Scheduler::Karras,
    Scheduler::Exponential,
    Scheduler::Polyexponential,
    Scheduler::SgmUniform,
    Scheduler::KlOptimal,
    Scheduler::AlignYourSteps,
    Scheduler::Simple,
    Scheduler::Normal,
    Scheduler::Ddim,
    Scheduler::Beta,
];

impl Scheduler {
    /// A1111's internal name (`automatic`, `sgm_uniform`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Automatic => "automatic",
            Self::Uniform => "uniform",
            Self::Karras => "karras",
            Self::Exponential => "exponential",
            Self::Polyexponential => "polyexponential",
            Self::SgmUniform => "sgm_uniform",
            Self::KlOptimal => "kl_optimal",
            Self::AlignYourSteps => "align_your_steps",
            Self::Simple => "simple",
            Self::Normal => "normal",
            Self::Ddim => "ddim",
            Self::Beta => "beta",
        }
    }

    /// A1111's label, as written in infotext ("Schedule type: Karras").
    pub fn label(self) -> &'static str {
        match self {
            Self::Automatic => "Automatic",
            Self::Uniform => "Uniform",
            Self::Karras => "Karras",
            Self::Exponential => "Exponential",
            Self::Polyexponential => "Polyexponential",
            Self::SgmUniform => "SGM Uniform",
            Self::KlOptimal => "KL Optimal",
            Self::AlignYourSteps => "Align Your Steps",
            Self::Simple => "Simple",
            Self::Normal => "Normal",
            Self::Ddim => "DDIM",
            Self::Beta => "Beta",
        }
    }

    /// Extra accepted names (A1111: "SGMUniform").
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::SgmUniform => &["SGMUniform"],
            _ => &[],
        }
    }

    /// The rho A1111 passes by default (-1 when the schedule has none).
    pub fn default_rho(self) -> f64 {
        match self {
            Self::Karras => 7.0,
            Self::Polyexponential => 1.0,
            _ => -1.0,
        }
    }
}

impl FromStr for Scheduler {
    type Err = SamplingError;

    /// Accepts the name, the label or an alias (A1111 matches these exactly;
    /// case is ignored here).
    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim();
        ALL_SCHEDULERS
            .into_iter()
            .find(|sch| {
                sch.name().eq_ignore_ascii_case(wanted)
                    || sch.label().eq_ignore_ascii_case(wanted)
                    || sch.aliases().iter().any(|a| a.eq_ignore_ascii_case(wanted))
            })
            .ok_or_else(|| SamplingError::UnknownScheduler {
                name: s.to_string(),
                valid: ALL_SCHEDULERS.map(|s| s.label()).join(", "),
            })
    }
}

/// Which Align Your Steps table to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AysModel {
    /// SD 1.5 table (A1111's default for every non-SDXL model).
    #[default]
    Sd15,
    /// SDXL table.
    Sdxl,
}

/// Parameters of a schedule beyond the step count.
#[derive(Clone, Debug)]
pub struct ScheduleOptions {
    /// Lowest sigma (A1111: the model's smallest discrete sigma).
    pub sigma_min: f64,
    /// Highest sigma (A1111: the model's largest discrete sigma).
    pub sigma_max: f64,
    /// rho for karras / polyexponential; `None` = the scheduler's default.
    pub rho: Option<f64>,
    /// Beta schedule alpha (A1111 option `beta_dist_alpha`, default 0.6).
    pub beta_alpha: f64,
    /// Beta schedule beta (A1111 option `beta_dist_beta`, default 0.6).
    pub beta_beta: f64,
    /// Align Your Steps table.
    pub ays_model: AysModel,
}

impl ScheduleOptions {
    /// A1111's defaults for a model: its sigma range, default rho, Beta(0.6, 0.6), SD 1.5 AYS.
    pub fn for_model(model: &DiscreteSchedule) -> Self {
        Self {
            sigma_min: model.sigma_min(),
            sigma_max: model.sigma_max(),
            rho: None,
            beta_alpha: 0.6,
            beta_beta: 0.6,
            ays_model: AysModel::Sd15,
        }
    }
}

/// `torch.linspace(start, end, n)` for float32 as torch's CPU kernel computes
/// it: `step = (end − start) / (n − 1)`, element i is `fma(step, i, start)` in
/// the first half and `fma(−step, n − 1 − i, end)` in the second.
pub fn torch_linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 0 {
        return vec![];
    }
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

fn with_zero(v: impl Iterator<Item = f32>) -> Vec<f64> {
    v.map(|s| s as f64).chain(std::iter::once(0.0)).collect()
}

/// k-diffusion `get_sigmas_karras(n, sigma_min, sigma_max, rho)`, in torch's float32.
pub fn karras(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    let span = (min_inv_rho - max_inv_rho) as f32;
    let (max32, rho32) = (max_inv_rho as f32, rho as f32 as f64);
    with_zero(
        torch_linspace_f32(0.0, 1.0, n)
            .into_iter()
            .map(|ramp| ((max32 + ramp * span) as f64).powf(rho32) as f32),
    )
}

/// k-diffusion `get_sigmas_exponential(n, sigma_min, sigma_max)`, in torch's float32.
pub fn exponential(n: usize, sigma_min: f64, sigma_max: f64) -> Vec<f64> {
    with_zero(
        torch_linspace_f32(sigma_max.ln() as f32, sigma_min.ln() as f32, n)
            .into_iter()
            .map(|v| (v as f64).exp() as f32),
    )
}

/// k-diffusion `get_sigmas_polyexponential(n, sigma_min, sigma_max, rho)`, in torch's float32.
pub fn polyexponential(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    let (lmin, lmax) = (sigma_min.ln(), sigma_max.ln());
    let (span, lmin32) = ((lmax - lmin) as f32, lmin as f32);
    with_zero(torch_linspace_f32(1.0, 0.0, n).into_iter().map(|r| {
        let r = if rho == 1.0 {
            r
        } else {
            (r as f64).powf(rho) as f32
        };
        ((r * span + lmin32) as f64).exp() as f32
    }))
}

/// A1111 `sgm_uniform`: n + 1 evenly spaced timesteps from t(sigma_max) to
/// t(sigma_min), the last dropped, then 0.
pub fn sgm_uniform(n: usize, sigma_min: f64, sigma_max: f64, model: &DiscreteSchedule) -> Vec<f64> {
    let (start, end) = (model.sigma_to_t(sigma_max), model.sigma_to_t(sigma_min));
    let mut out: Vec<f64> = torch_linspace_f32(start as f32, end as f32, n + 1)
        .into_iter()
        .take(n)
        .map(|t| model.t_to_sigma(t as f64))
        .collect();
    out.push(0.0);
    out
}

/// A1111 `normal_scheduler`: n evenly spaced timesteps from t(sigma_max) to t(sigma_min), then 0.
pub fn normal(n: usize, sigma_min: f64, sigma_max: f64, model: &DiscreteSchedule) -> Vec<f64> {
    let (start, end) = (model.sigma_to_t(sigma_max), model.sigma_to_t(sigma_min));
    let mut out: Vec<f64> = torch_linspace_f32(start as f32, end as f32, n)
        .into_iter()
        .map(|t| model.t_to_sigma(t as f64))
        .collect();
    out.push(0.0);
    out
}

/// A1111 `kl_optimal`: `tan(i/n · atan σ_min + (1 − i/n) · atan σ_max)` for
/// i = 0..=n. No 0 is appended: the last sigma is sigma_min (as A1111).
pub fn kl_optimal(n: usize, sigma_min: f64, sigma_max: f64) -> Vec<f64> {
    let (a_min, a_max) = (sigma_min.atan(), sigma_max.atan());
    (0..=n)
        .map(|i| {
            let f = i as f64 / n as f64;
            (f * a_min + (1.0 - f) * a_max).tan()
        })
        .collect()
}

const AYS_SD15: [f64; 11] = [
    14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029,
];
const AYS_SDXL: [f64; 11] = [
    14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029,
];

/// A1111 `get_align_your_steps_sigmas`: the 11-point table, log-linearly
/// interpolated to n points when n ≠ 11, then 0.
pub fn align_your_steps(n: usize, model: AysModel) -> Vec<f64> {
    let table: &[f64; 11] = match model {
        AysModel::Sd15 => &AYS_SD15,
        AysModel::Sdxl => &AYS_SDXL,
    };
    let mut out: Vec<f64> = if n == table.len() {
        table.to_vec()
    } else {
        // interpolate log sigma (ascending) over [0, 1], then reverse
        let xs = linspace(0.0, 1.0, table.len());
        let ys: Vec<f64> = table.iter().rev().map(|s| s.ln()).collect();
        let mut v: Vec<f64> = linspace(0.0, 1.0, n)
            .into_iter()
            .map(|x| interp(x, &xs, &ys).exp())
            .collect();
        v.reverse();
        v
    };
    out.push(0.0);
    out
}

/// `np.interp` for increasing `xs`.
fn interp(x: f64, xs: &[f64], ys: &[f64]) -> f64 {
    let last = xs.len() - 1;
    if x <= xs[0] {
        return ys[0];
    }
    if x >= xs[last] {
        return ys[last];
    }
    let j = xs.partition_point(|v| *v <= x) - 1;
    let slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j]);
    slope * (x - xs[j]) + ys[j]
}

/// A1111 `simple_scheduler`: `sigmas[-(1 + int(i · 1000/n))]` for i < n, then 0.
pub fn simple(n: usize, model: &DiscreteSchedule) -> Vec<f64> {
    let s = model.sigmas();
    let ss = s.len() as f64 / n as f64;
    let mut out: Vec<f64> = (0..n)
        .map(|i| s[s.len() - 1 - (i as f64 * ss) as usize])
        .collect();
    out.push(0.0);
    out
}

/// A1111 `ddim_scheduler`: every `max(1000 / n, 1)`-th sigma from index 1,
/// reversed, then 0. (The count can differ from n, as in A1111.)
pub fn ddim(n: usize, model: &DiscreteSchedule) -> Vec<f64> {
    let s = model.sigmas();
    let ss = (s.len() / n).max(1);
    let mut out: Vec<f64> = (1..s.len()).step_by(ss).map(|i| s[i]).collect();
    out.reverse();
    out.push(0.0);
    out
}

/// A1111 `beta_scheduler`: `sigma_min + ppf(1 − i/(n−1)) · (sigma_max − sigma_min)`
/// with the Beta(alpha, beta) quantile function, then 0.
pub fn beta(n: usize, sigma_min: f64, sigma_max: f64, alpha: f64, beta: f64) -> Vec<f64> {
    let mut out: Vec<f64> = linspace(0.0, 1.0, n)
        .into_iter()
        .map(|t| {
            sigma_min + crate::special::beta_ppf(1.0 - t, alpha, beta) * (sigma_max - sigma_min)
        })
        .collect();
    out.push(0.0);
    out
}

/// The sigmas of `scheduler` for `n` steps (`Automatic` is treated as `Uniform`;
/// resolve it against the sampler first with [`crate::names::sampler_sigmas`]).
pub fn sigmas(
    scheduler: Scheduler,
    n: usize,
    model: &DiscreteSchedule,
    opts: &ScheduleOptions,
) -> Result<Vec<f64>> {
    if n == 0 {
        return Err(SamplingError::InvalidParameter {
            what: "steps",
            detail: "a schedule needs at least 1 step".into(),
        });
    }
    let (lo, hi) = (opts.sigma_min, opts.sigma_max);
    if !(lo > 0.0 && hi > lo) {
        return Err(SamplingError::InvalidParameter {
            what: "sigma range",
            detail: format!("need 0 < sigma_min < sigma_max, got {lo} and {hi}"),
        });
    }
    let rho = opts.rho.unwrap_or(scheduler.default_rho());
    let sigmas = match scheduler {
        Scheduler::Automatic | Scheduler::Uniform => model.get_sigmas(n),
        Scheduler::Karras => karras(n, lo, hi, rho),
        Scheduler::Exponential => exponential(n, lo, hi),
        Scheduler::Polyexponential => polyexponential(n, lo, hi, rho),
        Scheduler::SgmUniform => sgm_uniform(n, lo, hi, model),
        Scheduler::KlOptimal => kl_optimal(n, lo, hi),
        Scheduler::AlignYourSteps => align_your_steps(n, opts.ays_model),
        Scheduler::Simple => simple(n, model),
        Scheduler::Normal => normal(n, lo, hi, model),
        Scheduler::Ddim => ddim(n, model),
        Scheduler::Beta => beta(n, lo, hi, opts.beta_alpha, opts.beta_beta),
    };
    // A1111's schedules are float32 tensors
    Ok(sigmas.into_iter().map(|s| s as f32 as f64).collect())
}
