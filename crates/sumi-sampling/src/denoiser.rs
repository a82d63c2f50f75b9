//! The denoiser contract and the discrete-time Stable Diffusion adapter.
//!
//! Samplers only see a [`Denoiser`]: `denoise(x, sigma) -> x0` (k-diffusion's
//! model contract, Karras et al. 2022). SD's U-Net is a discrete-time DDPM
//! network (1000 timesteps, scaled-linear betas 0.00085 → 0.012); the adapter
//! [`CompVisDenoiser`] maps sigma to a fractional timestep by log-sigma
//! interpolation ([`DiscreteSchedule`], as k-diffusion's `DiscreteSchedule`) and
//! applies the ε or v scalings of k-diffusion's `CompVisDenoiser` /
//! `CompVisVDenoiser`.

use candle_core::Tensor;

use crate::error::{Result, SamplingError};
use crate::schedules::torch_linspace_f32;

/// Anything that estimates the clean sample `x0` from `x` at noise level `sigma`.
pub trait Denoiser {
    /// `D(x, sigma)`: the denoised estimate, same shape as `x`.
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor>;

    /// CFG++ (Chung et al. 2024; A1111's `ddim_cfgpp` through its `CFGDenoiser`'s
    /// `cond_scale_miltiplier` and `last_noise_uncond`): one evaluation whose guidance
    /// scale is multiplied by `scale_multiplier`, returned with the unconditional
    /// prediction of the same call. Only classifier-free-guidance denoisers can answer;
    /// the default refuses.
    fn denoise_cfg_pp(
        &mut self,
        x: &Tensor,
        sigma: f64,
        scale_multiplier: f64,
    ) -> Result<GuidedPrediction> {
        let _ = (x, sigma, scale_multiplier);
        Err(SamplingError::InvalidParameter {
            what: "denoiser",
            detail: "CFG++ needs a classifier-free-guidance denoiser (one with an unconditional prediction)".into(),
        })
    }

    /// UniPC's model call as A1111 makes it (`UniPCCFG.model` through `CFGDenoiserTimesteps`):
    /// the clean estimate at variance-preserving `x` and continuous time t, where UniPC's
    /// schedule has `alpha` = α_t and `sigma` = σ_t. A1111 feeds the network `x` itself with
    /// the fractional timestep `t_model = (t − 1/N)·1000` (float32) and takes the noise
    /// prediction ε from it — for a v model `√ᾱ[k]·v + √(1 − ᾱ[k])·x` at the *truncated*
    /// `k = int(t_model)` (`CompVisTimestepsVDenoiser`) — and returns `(x − σ_t·ε)/α_t`.
    /// The default answers at the same noise level through [`Self::denoise`]:
    /// `D(x/α_t, σ_t/α_t)`.
    fn denoise_at_timestep(
        &mut self,
        x: &Tensor,
        t_model: f64,
        alpha: f64,
        sigma: f64,
    ) -> Result<Tensor> {
        let _ = t_model;
        self.denoise(&(x / alpha)?, sigma / alpha)
    }
}

/// What a classifier-free-guidance denoiser returns to CFG++ ([`Denoiser::denoise_cfg_pp`]).
#[derive(Clone, Debug)]
pub struct GuidedPrediction {
    /// The guided estimate `uncond + Σ wᵢ · scale · multiplier · (condᵢ − uncond)`.
    pub denoised: Tensor,
    /// The unconditional estimate at the same `x` and sigma (as `x0`, like `denoised`:
    /// `(x − uncond) / σ` is the unconditional ε).
    pub uncond: Tensor,
}

impl<F> Denoiser for F
where
    F: FnMut(&Tensor, f64) -> Result<Tensor>,
{
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        self(x, sigma)
    }
}

/// SD's training schedule: `betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2`
/// (double), `alphas_cumprod = cumprod(1 - betas)`, stored by LDM as float32.
pub fn sd_alphas_cumprod() -> Vec<f64> {
    scaled_linear_alphas_cumprod(0.00085, 0.012, 1000)
}

/// `alphas_cumprod` for LDM's "linear" (scaled-linear) beta schedule, each value
/// rounded to float32 as LDM registers it.
pub fn scaled_linear_alphas_cumprod(beta_start: f64, beta_end: f64, steps: usize) -> Vec<f64> {
    let (a, b) = (beta_start.sqrt(), beta_end.sqrt());
    let step = if steps > 1 {
        (b - a) / (steps - 1) as f64
    } else {
        0.0
    };
    let mut prod = 1.0f64;
    (0..steps)
        .map(|i| {
            // torch.linspace: from the start for the first half, from the end after
            let s = if i < steps / 2 {
                a + step * i as f64
            } else {
                b - step * (steps - 1 - i) as f64
            };
            prod *= 1.0 - s * s;
            prod as f32 as f64
        })
        .collect()
}

/// The 1000 discrete noise levels of a DDPM model and the sigma ↔ t maps,
/// computed in float32 in k-diffusion's order (A1111's schedules, and through
/// them the Brownian tree's query times, depend on the float32 bits).
#[derive(Clone, Debug)]
pub struct DiscreteSchedule {
    alphas_cumprod: Vec<f64>,
    sigmas: Vec<f64>,
    log_sigmas: Vec<f64>,
    quantize: bool,
    /// LCM: the table keeps every `skip`-th level and timesteps are `j·skip + skip − 1`.
    lcm_skip: Option<usize>,
}

impl DiscreteSchedule {
    /// From `alphas_cumprod` (ascending t): `sigma_t = sqrt((1 - ᾱ_t) / ᾱ_t)`,
    /// each rounded to float32 as k-diffusion holds them.
    pub fn from_alphas_cumprod(alphas_cumprod: &[f64]) -> Result<Self> {
        if alphas_cumprod.len() < 2 {
            return Err(SamplingError::InvalidParameter {
                what: "alphas_cumprod",
                detail: format!("need at least 2 values, got {}", alphas_cumprod.len()),
            });
        }
        if let Some(bad) = alphas_cumprod.iter().find(|a| !(**a > 0.0 && **a < 1.0)) {
            return Err(SamplingError::InvalidParameter {
                what: "alphas_cumprod",
                detail: format!("value {bad} outside (0, 1)"),
            });
        }
        // float32 as k-diffusion: ((1 - ᾱ) / ᾱ) ** 0.5, then log
        let sigmas: Vec<f64> = alphas_cumprod
            .iter()
            .map(|&a| {
                let a = a as f32;
                ((1.0 - a) / a).sqrt() as f64
            })
            .collect();
        let log_sigmas = sigmas.iter().map(|s| ln32(*s as f32) as f64).collect();
        Ok(Self {
            alphas_cumprod: alphas_cumprod.to_vec(),
            sigmas,
            log_sigmas,
            quantize: false,
            lcm_skip: None,
        })
    }

    /// SD 1.x / 2.x schedule (scaled-linear betas 0.00085 → 0.012, 1000 steps).
    pub fn sd() -> Self {
        Self::from_alphas_cumprod(&sd_alphas_cumprod()).expect("SD schedule is valid")
    }

    /// A1111's `LCMCompVisDenoiser` schedule: 50 "original" LCM timesteps, the
    /// levels `ᾱ[T − 1 − k·skip]` (skip = T / 50), `sigma_to_t` quantized to
    /// `j·skip + skip − 1`, `t_to_sigma` interpolating on the reduced table.
    pub fn lcm(&self) -> Result<Self> {
        const ORIGINAL_TIMESTEPS: usize = 50;
        let total = self.alphas_cumprod.len();
        let skip = total / ORIGINAL_TIMESTEPS;
        if skip == 0 {
            return Err(SamplingError::InvalidParameter {
                what: "alphas_cumprod",
                detail: format!("LCM needs at least {ORIGINAL_TIMESTEPS} timesteps, got {total}"),
            });
        }
        let mut valid = vec![0.0; ORIGINAL_TIMESTEPS];
        for k in 0..ORIGINAL_TIMESTEPS {
            valid[ORIGINAL_TIMESTEPS - 1 - k] = self.alphas_cumprod[total - 1 - k * skip];
        }
        let mut out = Self::from_alphas_cumprod(&valid)?;
        out.lcm_skip = Some(skip);
        Ok(out)
    }

    /// Whether this is an LCM schedule (see [`DiscreteSchedule::lcm`]).
    pub fn is_lcm(&self) -> bool {
        self.lcm_skip.is_some()
    }

    /// Round `sigma_to_t` to the nearest integer timestep (A1111 option
    /// "enable_quantization").
    pub fn with_quantize(mut self, quantize: bool) -> Self {
        self.quantize = quantize;
        self
    }

    /// `alphas_cumprod` (ᾱ_t), ascending in t.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// The discrete sigmas, ascending in t.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// Smallest discrete sigma (t = 0).
    pub fn sigma_min(&self) -> f64 {
        self.sigmas[0]
    }

    /// Largest discrete sigma (t = T - 1).
    pub fn sigma_max(&self) -> f64 {
        self.sigmas[self.sigmas.len() - 1]
    }

    /// Fractional timestep for `sigma` by linear interpolation of log sigma
    /// between neighbouring discrete levels (clamped to the table).
    pub fn sigma_to_t(&self, sigma: f64) -> f64 {
        let log_sigma = sigma.ln();
        let n = self.log_sigmas.len();
        if let Some(skip) = self.lcm_skip {
            return (self.nearest_level(log_sigma) * skip + skip - 1) as f64;
        }
        if self.quantize {
            return self.nearest_level(log_sigma) as f64;
        }
        // float32 as k-diffusion: last index whose log sigma is <= log_sigma
        // (0 if none), at most n - 2, then linear in log sigma
        let log_sigma = ln32(sigma as f32);
        let low_idx = self
            .log_sigmas
            .iter()
            .rposition(|ls| log_sigma - *ls as f32 >= 0.0)
            .unwrap_or(0)
            .min(n - 2);
        let high_idx = low_idx + 1;
        let (low, high) = (
            self.log_sigmas[low_idx] as f32,
            self.log_sigmas[high_idx] as f32,
        );
        let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
        ((1.0 - w) * low_idx as f32 + w * high_idx as f32) as f64
    }

    /// Index of the discrete level nearest in log sigma (first on ties, as `argmin`).
    fn nearest_level(&self, log_sigma: f64) -> usize {
        let mut best = 0;
        for (i, ls) in self.log_sigmas.iter().enumerate() {
            if (log_sigma - ls).abs() < (log_sigma - self.log_sigmas[best]).abs() {
                best = i;
            }
        }
        best
    }

    /// Sigma at fractional timestep `t` (log-linear between the two neighbours;
    /// LCM schedules first map `t` to `(t − skip + 1) / skip` on their table).
    pub fn t_to_sigma(&self, t: f64) -> f64 {
        // float32 as k-diffusion: floor / ceil / frac, lerp of log sigma, exp
        let t = match self.lcm_skip {
            Some(skip) => (t as f32 - (skip - 1) as f32) / skip as f32,
            None => t as f32,
        };
        let t = t.clamp(0.0, (self.sigmas.len() - 1) as f32);
        let (low_idx, high_idx) = (t.floor() as usize, t.ceil() as usize);
        let w = t - t.trunc();
        let (ls_low, ls_high) = (
            self.log_sigmas[low_idx] as f32,
            self.log_sigmas[high_idx] as f32,
        );
        exp32((1.0 - w) * ls_low + w * ls_high) as f64
    }

    /// k-diffusion's `get_sigmas(n)`: `n` timesteps evenly spaced from T-1 to 0,
    /// mapped to sigma, then a final 0 (A1111 "Uniform").
    pub fn get_sigmas(&self, n: usize) -> Vec<f64> {
        let (t_max, t_min) = match self.lcm_skip {
            // LCM: from t(sigma_max) to t(sigma_min) on the LCM timesteps
            Some(_) => (
                self.sigma_to_t(self.sigma_max()),
                self.sigma_to_t(self.sigma_min()),
            ),
            None => ((self.sigmas.len() - 1) as f64, 0.0),
        };
        let mut out: Vec<f64> = torch_linspace_f32(t_max as f32, t_min as f32, n)
            .into_iter()
            .map(|t| self.t_to_sigma(t as f64))
            .collect();
        out.push(0.0);
        out
    }
}

/// Float32 natural log, correctly rounded (torch's CPU `log` agrees with it
/// for about 94% of inputs; its exact implementation is MKL's).
pub(crate) fn ln32(v: f32) -> f32 {
    (v as f64).ln() as f32
}

/// Float32 exp, correctly rounded (torch's CPU `exp` agrees for about 99%).
pub(crate) fn exp32(v: f32) -> f32 {
    (v as f64).exp() as f32
}

/// `torch.linspace(start, end, n)` in double.
pub(crate) fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f64;
            let half = n / 2;
            (0..n)
                .map(|i| {
                    if i < half {
                        start + step * i as f64
                    } else {
                        end - step * (n - 1 - i) as f64
                    }
                })
                .collect()
        }
    }
}

/// What the network predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Prediction {
    /// ε-prediction (SD 1.x, SD 2.x base 512).
    #[default]
    Epsilon,
    /// v-prediction (SD 2.x 768-v).
    V,
}

/// `(c_skip, c_out, c_in)` of k-diffusion's CompVis wrappers with `sigma_data = 1`:
/// ε: `(1, -σ, 1/√(σ²+1))`; v: `(1/(σ²+1), -σ/√(σ²+1), 1/√(σ²+1))`.
pub fn scalings(prediction: Prediction, sigma: f64) -> (f64, f64, f64) {
    let c_in = 1.0 / (sigma * sigma + 1.0).sqrt();
    match prediction {
        Prediction::Epsilon => (1.0, -sigma, c_in),
        Prediction::V => (1.0 / (sigma * sigma + 1.0), -sigma * c_in, c_in),
    }
}

/// LCM's boundary-condition scalings `(c_skip, c_out)` at integer timestep `t`
/// (A1111 `LCMCompVisDenoiser.get_scaled_out`, `σ_data = 0.5`, `τ = 10 t`).
pub fn lcm_boundary_scalings(t: f64) -> (f64, f64) {
    let sigma_data2 = 0.25;
    let tau = t * 10.0;
    (
        sigma_data2 / (tau * tau + sigma_data2),
        tau / (tau * tau + sigma_data2).sqrt(),
    )
}

/// A discrete-time network: `apply(x · c_in, t)` returns ε or v.
pub trait DiscreteModel {
    /// The raw network output for the scaled input at fractional timestep `t`.
    fn apply(&mut self, x_in: &Tensor, t: f64) -> Result<Tensor>;
}

impl<F> DiscreteModel for F
where
    F: FnMut(&Tensor, f64) -> Result<Tensor>,
{
    fn apply(&mut self, x_in: &Tensor, t: f64) -> Result<Tensor> {
        self(x_in, t)
    }
}

/// k-diffusion's `CompVisDenoiser` / `CompVisVDenoiser`: turns a discrete-time
/// ε or v network into a [`Denoiser`]. With an LCM schedule
/// ([`DiscreteSchedule::lcm`]) it is A1111's `LCMCompVisDenoiser`: the ε
/// result is passed through the consistency-model boundary scalings
/// `c_skip = σ_d² / (τ² + σ_d²)`, `c_out = τ / √(τ² + σ_d²)` with
/// `τ = 10 · t(σ)` and `σ_d = 0.5`.
pub struct CompVisDenoiser<M> {
    /// The discrete noise levels of the model.
    pub schedule: DiscreteSchedule,
    /// ε or v.
    pub prediction: Prediction,
    /// The network.
    pub model: M,
}

impl<M: DiscreteModel> CompVisDenoiser<M> {
    /// Wraps `model` with the SD schedule.
    pub fn new(model: M, prediction: Prediction) -> Self {
        Self {
            schedule: DiscreteSchedule::sd(),
            prediction,
            model,
        }
    }
}

impl<M: DiscreteModel> Denoiser for CompVisDenoiser<M> {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let (c_skip, c_out, c_in) = scalings(self.prediction, sigma);
        let t = self.schedule.sigma_to_t(sigma);
        let out = self.model.apply(&x.affine(c_in, 0.0)?, t)?;
        let denoised = match self.prediction {
            Prediction::Epsilon => (x + out.affine(c_out, 0.0)?)?,
            Prediction::V => (out.affine(c_out, 0.0)? + x.affine(c_skip, 0.0)?)?,
        };
        if self.schedule.is_lcm() {
            let (c_skip, c_out) = lcm_boundary_scalings(t);
            return Ok((denoised.affine(c_out, 0.0)? + x.affine(c_skip, 0.0)?)?);
        }
        Ok(denoised)
    }
}
