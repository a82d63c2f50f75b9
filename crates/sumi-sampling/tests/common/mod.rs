//! Shared test helpers: the Gaussian-mixture denoiser, fixture loading, noise
//! samplers over torch's CPU generator and replayed draws.
#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use sumi_sampling::noise::NoiseSampler;
use sumi_sampling::rng_torch_cpu::TorchCpuGenerator;
use sumi_sampling::Result;

pub const PI: [f64; 3] = [0.3, 0.5, 0.2];
pub const MU: [f64; 3] = [-1.5, 0.2, 1.8];
pub const STD: [f64; 3] = [0.3, 0.5, 0.25];

/// The exact MMSE denoiser of the elementwise 3-Gaussian mixture, in double,
/// as `tools/reference/sampling_sampler_fixtures.py` computes it.
pub fn gmm_denoise(x: &Tensor, sigma: f64) -> Result<Tensor> {
    let s2 = sigma * sigma;
    let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let out: Vec<f32> = xs
        .iter()
        .map(|&v| {
            let v = v as f64;
            let mut logw = [0f64; 3];
            let mut means = [0f64; 3];
            for k in 0..3 {
                let var = STD[k] * STD[k] + s2;
                logw[k] = PI[k].ln()
                    - 0.5 * (2.0 * std::f64::consts::PI * var).ln()
                    - (v - MU[k]).powi(2) / (2.0 * var);
                means[k] = MU[k] + STD[k] * STD[k] / var * (v - MU[k]);
            }
            let m = logw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = logw.iter().map(|l| (l - m).exp()).collect();
            let total: f64 = w.iter().sum();
            (w.iter()
                .zip(&means)
                .map(|(w, m)| w / total * m)
                .sum::<f64>()) as f32
        })
        .collect();
    Ok(Tensor::from_vec(out, x.shape(), x.device())?)
}

/// The tensors of fixture `tests/fixtures/<name>` (refused when missing or empty).
pub fn load(name: &str) -> HashMap<String, Tensor> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    sumi_testkit::fixture::tensors(&path).unwrap()
}

/// `torch.randn(shape, generator=g)` per draw.
pub struct TorchNoise {
    pub gen: TorchCpuGenerator,
    pub dims: Vec<usize>,
}

impl TorchNoise {
    pub fn new(seed: u64, dims: &[usize]) -> Self {
        Self {
            gen: TorchCpuGenerator::new(seed),
            dims: dims.to_vec(),
        }
    }
}

impl NoiseSampler for TorchNoise {
    fn sample(&mut self, _s: f64, _sn: f64) -> Result<Tensor> {
        let n = self.dims.iter().product();
        Ok(Tensor::from_vec(
            self.gen.randn(n),
            self.dims.as_slice(),
            &Device::Cpu,
        )?)
    }
}

/// Replays recorded draws in order.
pub struct Replay {
    pub draws: Vec<Tensor>,
    pub next: usize,
}

impl NoiseSampler for Replay {
    fn sample(&mut self, _s: f64, _sn: f64) -> Result<Tensor> {
        let t = self.draws[self.next].clone();
        self.next += 1;
        Ok(t)
    }
}

/// max |a − b| / max |b| (testkit's relative error; the 1e-30 floor keeps an all-zero
/// reference comparable).
pub fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let flat = |t: &Tensor| t.flatten_all().unwrap();
    sumi_testkit::rel_err_floor(&flat(a), &flat(b), 1e-30)
}
