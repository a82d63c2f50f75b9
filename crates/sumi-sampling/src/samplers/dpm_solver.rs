//! DPM-Solver (Lu et al. 2022, arXiv 2206.00927) as k-diffusion 0.1.1.post1 runs it
//! (`class DPMSolver`): fixed-step "DPM fast" (`sample_dpm_fast`, DPM-Solver-fast's
//! third/second/first-order mix for a budget of `n` model evaluations) and "DPM
//! adaptive" (`sample_dpm_adaptive`, DPM-Solver-23 with a PID step-size controller).
//!
//! Both work in `t = −ln σ` and take `sigma_min`/`sigma_max` instead of a schedule.
//! k-diffusion holds `t`, `h` and every coefficient as float32 0-dim tensors, so the
//! scalar arithmetic here is float32 in the same order (the adaptive controller's
//! accept/reject decisions and its step positions depend on it); the PID controller
//! itself is Python floats, so double.
//!
//! Noise: with `eta > 0` every step is an ancestral step (`get_ancestral_step` on the
//! step's sigmas, the deterministic part run to `t(σ_down)`). DPM fast draws one noise
//! tensor per step, even where it adds zero of it; DPM adaptive draws one per accepted
//! step. A1111 leaves k-diffusion's default `noise_sampler`, `torch.randn_like`, which
//! its `TorchHijack` turns into the image RNG's next draw.

use candle_core::Tensor;

use super::{add_scaled, Level, OnStep, SamplerParams, Step};
use crate::denoiser::{exp32, ln32, Denoiser};
use crate::error::{Result, SamplingError};
use crate::noise::NoiseSampler;
use crate::schedules::torch_linspace_f32;

/// `σ(t) = exp(−t)`.
fn sigma_of(t: f32) -> f32 {
    exp32(-t)
}

/// `t(σ) = −ln σ`.
fn t_of(sigma: f32) -> f32 {
    -ln32(sigma)
}

/// Float32 `expm1`, correctly rounded (torch's CPU `expm1` is; the C library's
/// `expm1f` can be an ulp off, which DPM-Solver's third-order terms amplify).
fn expm1_32(v: f32) -> f32 {
    (v as f64).exp_m1() as f32
}

/// k-diffusion `get_ancestral_step` on float32 sigmas: `(σ_down, σ_up)`.
fn ancestral_step_f32(sigma_from: f32, sigma_to: f32, eta: f64) -> (f32, f32) {
    let (from2, to2) = (sigma_from * sigma_from, sigma_to * sigma_to);
    let up = eta as f32 * (to2 * (from2 - to2) / from2).sqrt();
    // Python's min(a, b) keeps a unless b < a
    let sigma_up = if up < sigma_to { up } else { sigma_to };
    ((to2 - sigma_up * sigma_up).sqrt(), sigma_up)
}

/// The model evaluations of one step (k-diffusion's `eps_cache`: `eps`, `eps_r1`, `eps_r2`).
#[derive(Default)]
struct EpsCache {
    eps: Option<Tensor>,
    eps_r1: Option<Tensor>,
    eps_r2: Option<Tensor>,
}

/// `DPMSolver` over a [`Denoiser`]: `ε(x, t) = (x − D(x, σ(t))) / σ(t)`.
struct Solver<'a> {
    denoiser: &'a mut dyn Denoiser,
    /// Model evaluations so far.
    nfe: usize,
}

impl Solver<'_> {
    /// `(ε, denoised)` at `(x, t)`.
    fn eps(&mut self, x: &Tensor, t: f32) -> Result<(Tensor, Tensor)> {
        let sigma = sigma_of(t);
        let denoised = self.denoiser.denoise(x, sigma as f64)?;
        self.nfe += 1;
        // a true division, as torch's by the 0-dim sigma (the adaptive controller's
        // first error estimates are at rounding level, so the bits matter)
        let sigma_t = Tensor::full(sigma, x.shape(), x.device())?.to_dtype(x.dtype())?;
        let eps = (x - &denoised)?.div(&sigma_t)?;
        Ok((eps, denoised))
    }

    /// `eps_cache[slot]`, evaluated at `(x, t)` when absent.
    fn cached(&mut self, slot: &mut Option<Tensor>, x: &Tensor, t: f32) -> Result<Tensor> {
        if let Some(e) = slot {
            return Ok(e.clone());
        }
        let (e, _) = self.eps(x, t)?;
        *slot = Some(e.clone());
        Ok(e)
    }

    /// `dpm_solver_1_step`: `x − σ(t_next) · expm1(h) · ε`.
    fn step_1(&mut self, x: &Tensor, t: f32, t_next: f32, c: &mut EpsCache) -> Result<Tensor> {
        let h = t_next - t;
        let eps = self.cached(&mut c.eps, x, t)?;
        add_scaled(x, &eps, -(sigma_of(t_next) * expm1_32(h)) as f64)
    }

    /// `dpm_solver_2_step` with midpoint ratio `r1`.
    fn step_2(
        &mut self,
        x: &Tensor,
        t: f32,
        t_next: f32,
        r1: f64,
        c: &mut EpsCache,
    ) -> Result<Tensor> {
        let h = t_next - t;
        let eps = self.cached(&mut c.eps, x, t)?;
        let r1h = r1 as f32 * h;
        let s1 = t + r1h;
        let u1 = add_scaled(x, &eps, -(sigma_of(s1) * expm1_32(r1h)) as f64)?;
        let eps_r1 = self.cached(&mut c.eps_r1, &u1, s1)?;
        let sigma_next = sigma_of(t_next);
        let x_2 = add_scaled(x, &eps, -(sigma_next * expm1_32(h)) as f64)?;
        let coeff = sigma_next / (2.0 * r1) as f32 * expm1_32(h);
        add_scaled(&x_2, &(eps_r1 - &eps)?, -coeff as f64)
    }

    /// `dpm_solver_3_step` with `r1 = 1/3`, `r2 = 2/3`.
    fn step_3(&mut self, x: &Tensor, t: f32, t_next: f32, c: &mut EpsCache) -> Result<Tensor> {
        let (r1, r2) = (1.0f64 / 3.0, 2.0f64 / 3.0);
        let h = t_next - t;
        let eps = self.cached(&mut c.eps, x, t)?;
        let (r1h, r2h) = (r1 as f32 * h, r2 as f32 * h);
        let (s1, s2) = (t + r1h, t + r2h);
        let u1 = add_scaled(x, &eps, -(sigma_of(s1) * expm1_32(r1h)) as f64)?;
        let eps_r1 = self.cached(&mut c.eps_r1, &u1, s1)?;
        let u2 = add_scaled(x, &eps, -(sigma_of(s2) * expm1_32(r2h)) as f64)?;
        let coeff = sigma_of(s2) * (r2 / r1) as f32 * (expm1_32(r2h) / r2h - 1.0);
        let u2 = add_scaled(&u2, &(eps_r1 - &eps)?, -coeff as f64)?;
        let eps_r2 = self.cached(&mut c.eps_r2, &u2, s2)?;
        let sigma_next = sigma_of(t_next);
        let x_3 = add_scaled(x, &eps, -(sigma_next * expm1_32(h)) as f64)?;
        let coeff = sigma_next / r2 as f32 * (expm1_32(h) / h - 1.0);
        add_scaled(&x_3, &(eps_r2 - &eps)?, -coeff as f64)
    }
}

/// Checks k-diffusion's preconditions: positive finite sigmas, and `eta = 0` unless
/// sampling runs towards lower noise (`t_end > t_start`).
fn check_range(sigma_min: f64, sigma_max: f64, eta: f64) -> Result<(f32, f32)> {
    if !(sigma_min > 0.0 && sigma_max > 0.0 && sigma_min.is_finite() && sigma_max.is_finite()) {
        return Err(SamplingError::InvalidSigmas(format!(
            "DPM-Solver needs positive finite sigma_min and sigma_max, got {sigma_min} and {sigma_max}"
        )));
    }
    let (t_start, t_end) = (t_of(sigma_max as f32), t_of(sigma_min as f32));
    if eta != 0.0 && t_end <= t_start {
        return Err(SamplingError::InvalidParameter {
            what: "eta",
            detail: format!(
                "DPM-Solver with eta {eta} needs sigma_min < sigma_max, got {sigma_min} and {sigma_max} \
                 (k-diffusion: 'eta must be 0 for reverse sampling')"
            ),
        });
    }
    Ok((t_start, t_end))
}

/// The orders of DPM-Solver-fast's steps for a budget of `nfe` evaluations:
/// `m = ⌊nfe/3⌋ + 1` steps, third order but for a (2, 1) or (nfe mod 3) tail.
pub fn dpm_fast_orders(nfe: usize) -> Vec<usize> {
    let m = nfe / 3 + 1;
    if nfe.is_multiple_of(3) {
        let mut o = vec![3; m.saturating_sub(2)];
        o.extend([2, 1]);
        o
    } else {
        let mut o = vec![3; m - 1];
        o.push(nfe % 3);
        o
    }
}

/// DPM-Solver-fast (k-diffusion `sample_dpm_fast`): `n` model evaluations on steps
/// uniform in `t = −ln σ` from `sigma_max` down to `sigma_min` (both > 0; sampling
/// ends at `sigma_min`, not 0). Uses `p.eta` and `p.s_noise`. `x` must be at
/// `sigma_max`. `on_step` sees each step after its first evaluation.
#[allow(clippy::too_many_arguments)]
pub fn sample_dpm_fast(
    denoiser: &mut dyn Denoiser,
    mut x: Tensor,
    sigma_min: f64,
    sigma_max: f64,
    n: usize,
    noise: &mut dyn NoiseSampler,
    p: &SamplerParams,
    on_step: &mut OnStep<'_>,
) -> Result<Tensor> {
    let (t_start, t_end) = check_range(sigma_min, sigma_max, p.eta)?;
    if n == 0 {
        return Err(SamplingError::InvalidParameter {
            what: "steps",
            detail: "DPM fast needs at least 1 model evaluation".into(),
        });
    }
    let orders = dpm_fast_orders(n);
    let ts = torch_linspace_f32(t_start, t_end, orders.len() + 1);
    let mut solver = Solver { denoiser, nfe: 0 };
    for (i, &order) in orders.iter().enumerate() {
        let (t, t_next) = (ts[i], ts[i + 1]);
        let (t_next_, su) = if p.eta != 0.0 {
            let (sd, _) = ancestral_step_f32(sigma_of(t), sigma_of(t_next), p.eta);
            let t_next_ = t_end.min(t_of(sd));
            let (a, b) = (sigma_of(t_next), sigma_of(t_next_));
            (t_next_, (a * a - b * b).sqrt())
        } else {
            (t_next, 0.0)
        };
        let mut cache = EpsCache::default();
        let (eps, denoised) = solver.eps(&x, t)?;
        cache.eps = Some(eps);
        let step = Step {
            i,
            steps: orders.len(),
            level: Level::Sigma {
                sigma: sigma_of(t) as f64,
                sigma_hat: sigma_of(t) as f64,
            },
            x: &x,
            denoised: &denoised,
        };
        if on_step(&step).is_break() {
            return Ok(denoised);
        }
        x = match order {
            1 => solver.step_1(&x, t, t_next_, &mut cache)?,
            2 => solver.step_2(&x, t, t_next_, 0.5, &mut cache)?,
            _ => solver.step_3(&x, t, t_next_, &mut cache)?,
        };
        let z = noise.sample(sigma_of(t) as f64, sigma_of(t_next) as f64)?;
        x = add_scaled(&x, &z, (su * p.s_noise as f32) as f64)?;
    }
    Ok(x)
}

/// k-diffusion's adaptive-step settings (`sample_dpm_adaptive`'s keyword defaults,
/// which A1111 leaves as they are).
#[derive(Clone, Debug)]
pub struct AdaptiveParams {
    /// 2 (DPM-Solver-12) or 3 (DPM-Solver-23, default).
    pub order: usize,
    /// Relative tolerance (0.05).
    pub rtol: f64,
    /// Absolute tolerance (0.0078).
    pub atol: f64,
    /// First step size in `t` (0.05).
    pub h_init: f64,
    /// PID proportional coefficient (0).
    pub pcoeff: f64,
    /// PID integral coefficient (1).
    pub icoeff: f64,
    /// PID derivative coefficient (0).
    pub dcoeff: f64,
    /// A step is accepted when the controller's factor is at least this (0.81).
    pub accept_safety: f64,
}

impl Default for AdaptiveParams {
    fn default() -> Self {
        Self {
            order: 3,
            rtol: 0.05,
            atol: 0.0078,
            h_init: 0.05,
            pcoeff: 0.0,
            icoeff: 1.0,
            dcoeff: 0.0,
            accept_safety: 0.81,
        }
    }
}

/// What DPM adaptive did (k-diffusion's `info` dict).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdaptiveInfo {
    /// Attempted steps (accepted + rejected).
    pub steps: usize,
    /// Model evaluations (`order` per attempt).
    pub nfe: usize,
    /// Accepted steps.
    pub n_accept: usize,
    /// Rejected steps.
    pub n_reject: usize,
}

/// k-diffusion's `PIDStepSizeController` (Python floats).
struct Pid {
    h: f64,
    b: [f64; 3],
    accept_safety: f64,
    errs: Option<[f64; 3]>,
}

impl Pid {
    fn new(h: f64, a: &AdaptiveParams, order: f64) -> Self {
        Self {
            h,
            b: [
                (a.pcoeff + a.icoeff + a.dcoeff) / order,
                -(a.pcoeff + 2.0 * a.dcoeff) / order,
                a.dcoeff / order,
            ],
            accept_safety: a.accept_safety,
            errs: None,
        }
    }

    /// `propose_step`: rescales `h` and says whether the step is accepted.
    fn propose(&mut self, error: f64) -> bool {
        let inv_error = 1.0 / (error + 1e-8);
        let errs = self.errs.get_or_insert([inv_error; 3]);
        errs[0] = inv_error;
        let factor = errs[0].powf(self.b[0]) * errs[1].powf(self.b[1]) * errs[2].powf(self.b[2]);
        let factor = 1.0 + (factor - 1.0).atan();
        let accept = factor >= self.accept_safety;
        if accept {
            errs[2] = errs[1];
            errs[1] = errs[0];
        }
        self.h *= factor;
        accept
    }
}

/// The controller's error: `‖(x_low − x_high) / max(atol, rtol · max(|x_low|, |x_prev|))‖ / √numel`
/// over the whole batch, in float32 as torch's CPU computes it: the ratio per element, the
/// squares summed in 8 float lanes in order, the lanes added in order (torch's
/// `linalg.norm` matches this bit for bit on single-threaded reductions), then the square
/// root and the division by `√numel` rounded to float32.
fn step_error(
    x_low: &Tensor,
    x_high: &Tensor,
    x_prev: &Tensor,
    rtol: f32,
    atol: f32,
) -> Result<f64> {
    let low: Vec<f32> = x_low.flatten_all()?.to_vec1()?;
    let high: Vec<f32> = x_high.flatten_all()?.to_vec1()?;
    let prev: Vec<f32> = x_prev.flatten_all()?.to_vec1()?;
    let mut lanes = [0f32; 8];
    let mut tail = Vec::new();
    let full = low.len() / 8 * 8;
    for (i, ((l, h), p)) in low.iter().zip(&high).zip(&prev).enumerate() {
        let delta = atol.max(rtol * l.abs().max(p.abs()));
        let r = (l - h) / delta;
        if i < full {
            lanes[i % 8] += r * r;
        } else {
            tail.push(r * r);
        }
    }
    let sum = lanes.iter().chain(&tail).fold(0f32, |acc, v| acc + v);
    Ok((sum.sqrt() / (low.len() as f64).sqrt() as f32) as f64)
}

/// DPM-Solver-12/23 with adaptive step size (k-diffusion `sample_dpm_adaptive`): from
/// `sigma_max` down to `sigma_min` (both > 0; sampling ends at `sigma_min`), each
/// attempt a pair of lower/higher-order solutions whose difference drives the PID
/// controller (order 1.5 with noise, else `order`). Uses `p.eta` and `p.s_noise`
/// (A1111 passes eta and leaves s_noise at 1). `on_step` is called after every
/// attempt, accepted or not, with the resulting `x` and the attempt's `denoised`
/// (`Step::i` counts attempts; `Step::steps` is the attempts so far: the total is
/// not known in advance). Returns `x` and how many steps and evaluations it took.
#[allow(clippy::too_many_arguments)]
pub fn sample_dpm_adaptive(
    denoiser: &mut dyn Denoiser,
    mut x: Tensor,
    sigma_min: f64,
    sigma_max: f64,
    noise: &mut dyn NoiseSampler,
    p: &SamplerParams,
    a: &AdaptiveParams,
    on_step: &mut OnStep<'_>,
) -> Result<(Tensor, AdaptiveInfo)> {
    if !matches!(a.order, 2 | 3) {
        return Err(SamplingError::InvalidParameter {
            what: "order",
            detail: format!("DPM adaptive order should be 2 or 3, got {}", a.order),
        });
    }
    let (t_start, t_end) = check_range(sigma_min, sigma_max, p.eta)?;
    let forward = t_end > t_start;
    let h_init = a.h_init.abs() * if forward { 1.0 } else { -1.0 };
    let (atol, rtol) = (a.atol as f32, a.rtol as f32);
    let pid_order = if p.eta != 0.0 { 1.5 } else { a.order as f64 };
    let mut pid = Pid::new(h_init, a, pid_order);
    let mut info = AdaptiveInfo::default();
    let mut solver = Solver { denoiser, nfe: 0 };
    let mut s = t_start;
    let mut x_prev = x.clone();
    let tol = 1e-5f32;
    while if forward {
        s < t_end - tol
    } else {
        s > t_end + tol
    } {
        let stepped = s + pid.h as f32;
        let t = if forward {
            t_end.min(stepped)
        } else {
            t_end.max(stepped)
        };
        let (t_, su) = if p.eta != 0.0 {
            let (sd, _) = ancestral_step_f32(sigma_of(s), sigma_of(t), p.eta);
            let t_ = t_end.min(t_of(sd));
            let (u, v) = (sigma_of(t), sigma_of(t_));
            (t_, (u * u - v * v).sqrt())
        } else {
            (t, 0.0)
        };
        let mut cache = EpsCache::default();
        let (eps, denoised) = solver.eps(&x, s)?;
        cache.eps = Some(eps);
        let (x_low, x_high) = if a.order == 2 {
            let low = solver.step_1(&x, s, t_, &mut cache)?;
            (low, solver.step_2(&x, s, t_, 0.5, &mut cache)?)
        } else {
            let low = solver.step_2(&x, s, t_, 1.0 / 3.0, &mut cache)?;
            (low, solver.step_3(&x, s, t_, &mut cache)?)
        };
        let error = step_error(&x_low, &x_high, &x_prev, rtol, atol)?;
        if pid.propose(error) {
            let z = noise.sample(sigma_of(s) as f64, sigma_of(t) as f64)?;
            x = add_scaled(&x_high, &z, (su * p.s_noise as f32) as f64)?;
            x_prev = x_low;
            s = t;
            info.n_accept += 1;
        } else {
            info.n_reject += 1;
        }
        info.nfe += a.order;
        info.steps += 1;
        let step = Step {
            i: info.steps - 1,
            steps: info.steps,
            level: Level::Sigma {
                sigma: sigma_of(s) as f64,
                sigma_hat: sigma_of(s) as f64,
            },
            x: &x,
            denoised: &denoised,
        };
        if on_step(&step).is_break() {
            return Ok((denoised, info));
        }
    }
    Ok((x, info))
}
