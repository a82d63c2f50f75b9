//! Linear multistep (k-diffusion `sample_lms`): Adams-style coefficients from
//! integrating the Lagrange basis polynomials over each sigma interval.

use std::collections::VecDeque;

use candle_core::Tensor;

use super::{check_sigmas, report, to_d, OnStep, SamplerParams};
use crate::denoiser::Denoiser;
use crate::error::{Result, SamplingError};
use crate::noise::NoiseSampler;

/// `∫_{t[i]}^{t[i+1]} Π_{k≠j} (τ − t[i−k]) / (t[i−j] − t[i−k]) dτ`
/// (k-diffusion `linear_multistep_coeff`). The integrand is a polynomial of
/// degree `order − 1`, integrated exactly by 4-point Gauss-Legendre for
/// `order ≤ 8` (scipy's adaptive quadrature is exact for it too).
pub fn linear_multistep_coeff(order: usize, t: &[f64], i: usize, j: usize) -> Result<f64> {
    if order == 0 || order - 1 > i || j >= order || i + 1 >= t.len() {
        return Err(SamplingError::InvalidParameter {
            what: "LMS order",
            detail: format!("order {order} too high for step {i}"),
        });
    }
    let f = |tau: f64| -> f64 {
        (0..order)
            .filter(|&k| k != j)
            .map(|k| (tau - t[i - k]) / (t[i - j] - t[i - k]))
            .product()
    };
    // 4-point Gauss-Legendre nodes and weights on [-1, 1]
    const NODES: [f64; 4] = [
        -0.861_136_311_594_052_6,
        -0.339_981_043_584_856_3,
        0.339_981_043_584_856_3,
        0.861_136_311_594_052_6,
    ];
    const WEIGHTS: [f64; 4] = [
        0.347_854_845_137_453_85,
        0.652_145_154_862_546_1,
        0.652_145_154_862_546_1,
        0.347_854_845_137_453_85,
    ];
    let (a, b) = (t[i], t[i + 1]);
    let (half, mid) = (0.5 * (b - a), 0.5 * (a + b));
    Ok(half
        * NODES
            .iter()
            .zip(WEIGHTS)
            .map(|(x, w)| w * f(mid + half * x))
            .sum::<f64>())
}

/// Linear multistep sampler of order `p.lms_order` (k-diffusion `sample_lms`).
pub fn sample_lms(
    denoiser: &mut dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    _noise: &mut dyn NoiseSampler,
    p: &SamplerParams,
    on_step: &mut OnStep<'_>,
) -> Result<Tensor> {
    check_sigmas(sigmas)?;
    if p.lms_order == 0 || p.lms_order > 8 {
        return Err(SamplingError::InvalidParameter {
            what: "LMS order",
            detail: format!("{} is outside 1..=8", p.lms_order),
        });
    }
    let mut ds: VecDeque<Tensor> = VecDeque::new();
    for i in 0..sigmas.len() - 1 {
        let sigma = sigmas[i];
        let denoised = denoiser.denoise(&x, sigma)?;
        let d = to_d(&x, sigma, &denoised)?;
        ds.push_back(d);
        if ds.len() > p.lms_order {
            ds.pop_front();
        }
        if report(on_step, i, sigmas, sigma, &x, &denoised) {
            return Ok(denoised);
        }
        let cur_order = (i + 1).min(p.lms_order);
        let mut update: Option<Tensor> = None;
        for (j, d) in ds.iter().rev().enumerate().take(cur_order) {
            let coeff = linear_multistep_coeff(cur_order, sigmas, i, j)?;
            let term = d.affine(coeff, 0.0)?;
            update = Some(match update {
                None => term,
                Some(u) => (u + term)?,
            });
        }
        if let Some(u) = update {
            x = (x + u)?;
        }
    }
    Ok(x)
}
