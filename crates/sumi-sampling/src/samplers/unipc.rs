//! UniPC (Zhao et al. 2023) as A1111 runs it (`modules/models/diffusion/uni_pc`
//! via `sd_samplers_timesteps_impl.unipc`): multistep predictor-corrector in
//! data-prediction form, B(h) = h ("bh1"), time-uniform steps, order 3 with
//! lower orders at the end — A1111's defaults (`uni_pc_variant`,
//! `uni_pc_skip_type`, `uni_pc_order`, `uni_pc_lower_order_final`).
//!
//! The variance-preserving schedule is UniPC's discrete `NoiseScheduleVP`:
//! continuous time `t ∈ [1/N, 1]`, `t_i = (i + 1)/N`, `log α_t` piecewise
//! linear in t through `½ log ᾱ_i`. The data prediction at `(x, t)` is
//! [`Denoiser::denoise_at_timestep`]: A1111's `UniPCCFG.model` feeds the U-Net
//! `x` itself with the fractional timestep `(t − 1/N)·1000` (float32), not the
//! timestep of the noise level `σ_t/α_t` by log-sigma interpolation (up to
//! 1.7e-3 timesteps apart), and a v model's ε is taken at `ᾱ[int(t_model)]`.

use candle_core::Tensor;

use super::{Level, OnStep, Step};
use crate::denoiser::{Denoiser, DiscreteSchedule};
use crate::error::{Result, SamplingError};
use crate::schedules::torch_linspace_f32;

/// UniPC's discrete VP noise schedule.
struct VpSchedule {
    t_array: Vec<f64>,
    log_alpha: Vec<f64>,
}

impl VpSchedule {
    fn new(schedule: &DiscreteSchedule) -> Self {
        let n = schedule.alphas_cumprod().len();
        let t_array = torch_linspace_f32(0.0, 1.0, n + 1)[1..]
            .iter()
            .map(|t| *t as f64)
            .collect();
        let log_alpha = schedule
            .alphas_cumprod()
            .iter()
            .map(|a| 0.5 * a.ln())
            .collect();
        Self { t_array, log_alpha }
    }

    /// `log α_t`: piecewise linear through the keypoints, extended linearly
    /// beyond them with the outermost segments.
    fn log_mean_coeff(&self, t: f64) -> f64 {
        let (xs, ys) = (&self.t_array, &self.log_alpha);
        let k = xs.len();
        let j = xs.partition_point(|v| *v < t).clamp(1, k - 1) - 1;
        ys[j] + (t - xs[j]) * (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
    }

    fn alpha(&self, t: f64) -> f64 {
        self.log_mean_coeff(t).exp()
    }

    fn std(&self, t: f64) -> f64 {
        (1.0 - (2.0 * self.log_mean_coeff(t)).exp()).sqrt()
    }

    fn lambda(&self, t: f64) -> f64 {
        let l = self.log_mean_coeff(t);
        l - 0.5 * (1.0 - (2.0 * l).exp()).ln()
    }
}

/// Solves the small dense system `a · x = b` (Gaussian elimination, partial pivoting).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        if a[piv][col] == 0.0 || !a[piv][col].is_finite() {
            return Err(SamplingError::InvalidSigmas(
                "UniPC: singular step-ratio system".into(),
            ));
        }
        a.swap(col, piv);
        b.swap(col, piv);
        let (top, rest) = a.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for (offset, row) in rest.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            for (v, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *v -= f * p;
            }
            b[col + 1 + offset] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Ok(x)
}

struct UniPc<'a> {
    denoiser: &'a mut dyn Denoiser,
    ns: VpSchedule,
}

impl UniPc<'_> {
    /// Data prediction `x0(x, t)`, the network at A1111's model time
    /// `get_model_input_time(t) = (t − 1/N)·1000`, in float32 as torch computes it.
    fn model_fn(&mut self, x: &Tensor, t: f64) -> Result<Tensor> {
        let (alpha, std) = (self.ns.alpha(t), self.ns.std(t));
        let t_model = (t as f32 - (1.0 / self.ns.t_array.len() as f64) as f32) * 1000.0;
        self.denoiser
            .denoise_at_timestep(x, t_model as f64, alpha, std)
    }

    /// `multistep_uni_pc_bh_update` with B(h) = h, data prediction.
    fn update(
        &mut self,
        x: &Tensor,
        model_prev: &[Tensor],
        t_prev: &[f64],
        t: f64,
        order: usize,
        use_corrector: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let ns = &self.ns;
        let t_prev_0 = t_prev[t_prev.len() - 1];
        let model_prev_0 = &model_prev[model_prev.len() - 1];
        let lambda_prev_0 = ns.lambda(t_prev_0);
        let h = ns.lambda(t) - lambda_prev_0;
        let (sigma_prev_0, sigma_t) = (ns.std(t_prev_0), ns.std(t));
        let alpha_t = ns.alpha(t);

        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for i in 1..order {
            let lambda_prev_i = ns.lambda(t_prev[t_prev.len() - 1 - i]);
            let rk = (lambda_prev_i - lambda_prev_0) / h;
            rks.push(rk);
            d1s.push(((&model_prev[model_prev.len() - 1 - i] - model_prev_0)? / rk)?);
        }
        rks.push(1.0);

        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial_i = 1.0;
        let b_h = hh;
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            r.push(
                rks.iter()
                    .map(|rk| rk.powi(i as i32 - 1))
                    .collect::<Vec<f64>>(),
            );
            b.push(h_phi_k * factorial_i / b_h);
            factorial_i *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial_i;
        }

        let x_t_ = (x.affine(sigma_t / sigma_prev_0, 0.0)?
            - model_prev_0.affine(alpha_t * h_phi_1, 0.0)?)?;
        let weighted = |rhos: &[f64], d1s: &[Tensor]| -> Result<Option<Tensor>> {
            let mut acc: Option<Tensor> = None;
            for (rho, d) in rhos.iter().zip(d1s) {
                let term = d.affine(*rho, 0.0)?;
                acc = Some(match acc {
                    None => term,
                    Some(a) => (a + term)?,
                });
            }
            Ok(acc)
        };
        let mut x_t = x_t_.clone();
        if !d1s.is_empty() {
            let rhos_p = if order == 2 {
                vec![0.5]
            } else {
                let sub: Vec<Vec<f64>> = r[..order - 1]
                    .iter()
                    .map(|row| row[..order - 1].to_vec())
                    .collect();
                solve(sub, b[..order - 1].to_vec())?
            };
            if let Some(pred_res) = weighted(&rhos_p, &d1s)? {
                x_t = (&x_t_ - pred_res.affine(alpha_t * b_h, 0.0)?)?;
            }
        }
        if !use_corrector {
            return Ok((x_t, None));
        }
        let rhos_c = if order == 1 { vec![0.5] } else { solve(r, b)? };
        let model_t = self.model_fn(&x_t, t)?;
        let d1_t = (&model_t - model_prev_0)?;
        let mut corr = d1_t.affine(rhos_c[rhos_c.len() - 1], 0.0)?;
        if let Some(c) = weighted(&rhos_c[..rhos_c.len() - 1], &d1s)? {
            corr = (c + corr)?;
        }
        let x_t = (&x_t_ - corr.affine(alpha_t * b_h, 0.0)?)?;
        Ok((x_t, Some(model_t)))
    }
}

/// A1111's img2img start time for UniPC: `timesteps[t_enc − 1]/1000 + 1/1000`
/// (in float32, as torch computes it; A1111 notes it is likely off by a bit,
/// since the latent was noised to `timesteps[t_enc]`).
pub fn unipc_img2img_t_start(timesteps: &[usize], t_enc: usize) -> Result<f64> {
    let t = t_enc
        .checked_sub(1)
        .and_then(|i| timesteps.get(i))
        .ok_or_else(|| SamplingError::InvalidParameter {
            what: "t_enc",
            detail: format!(
                "UniPC img2img needs 1..={} encoding steps, got {t_enc}",
                timesteps.len()
            ),
        })?;
    Ok((*t as f32 / 1000.0 + 0.001f32) as f64)
}

/// A1111's UniPC for `steps` updates (A1111 passes `len(timesteps)` of its DDIM
/// timesteps) from time `t_start` (1 for txt2img; A1111 img2img uses
/// `timesteps[t_enc − 1]/1000 + 1/1000`) to `1/N`, with `order` (A1111
/// default 3, at most `steps`). `x` is in the VP scale; the result is too.
pub fn sample_unipc(
    denoiser: &mut dyn Denoiser,
    mut x: Tensor,
    schedule: &DiscreteSchedule,
    steps: usize,
    t_start: Option<f64>,
    order: usize,
    on_step: &mut OnStep<'_>,
) -> Result<Tensor> {
    if order == 0 || steps < order {
        return Err(SamplingError::InvalidParameter {
            what: "UniPC order",
            detail: format!("order {order} must be between 1 and the {steps} sampling steps"),
        });
    }
    let n = schedule.alphas_cumprod().len() as f64;
    let t_0 = 1.0 / n;
    let t_t = t_start.unwrap_or(1.0);
    let timesteps: Vec<f64> = torch_linspace_f32(t_t as f32, t_0 as f32, steps + 1)
        .into_iter()
        .map(|t| t as f64)
        .collect();
    let mut u = UniPc {
        denoiser,
        ns: VpSchedule::new(schedule),
    };
    let mut model_prev = vec![u.model_fn(&x, timesteps[0])?];
    let mut t_prev = vec![timesteps[0]];
    let mut index = 0usize;
    // the model time of a continuous t in DDPM timesteps: (t − 1/N) · N
    let mut report = |x: &Tensor, denoised: &Tensor, t: f64, index: &mut usize| -> bool {
        let step = Step {
            i: *index,
            steps,
            level: Level::Timestep((t - t_0) * n),
            x,
            denoised,
        };
        *index += 1;
        on_step(&step).is_break()
    };
    for (init_order, &t) in timesteps.iter().enumerate().take(order).skip(1) {
        let (x_new, model_x) = u.update(&x, &model_prev, &t_prev, t, init_order, true)?;
        x = x_new;
        let model_x = match model_x {
            Some(m) => m,
            None => u.model_fn(&x, t)?,
        };
        if report(&x, &model_x, t, &mut index) {
            return Ok(model_x);
        }
        model_prev.push(model_x);
        t_prev.push(t);
    }
    for (step, &t) in timesteps.iter().enumerate().skip(order) {
        let step_order = order.min(steps + 1 - step);
        let use_corrector = step != steps;
        let (x_new, model_x) = u.update(&x, &model_prev, &t_prev, t, step_order, use_corrector)?;
        x = x_new;
        let shown = model_x
            .clone()
            .unwrap_or_else(|| model_prev[model_prev.len() - 1].clone());
        if report(&x, &shown, t, &mut index) {
            return Ok(shown);
        }
        model_prev.rotate_left(1);
        t_prev.rotate_left(1);
        let last = t_prev.len() - 1;
        t_prev[last] = t;
        if step < steps {
            let m = match model_x {
                Some(m) => m,
                None => u.model_fn(&x, t)?,
            };
            let last = model_prev.len() - 1;
            model_prev[last] = m;
        }
    }
    Ok(x)
}
