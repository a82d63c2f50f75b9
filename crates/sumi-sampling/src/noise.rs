//! A1111's noise: the sources ("GPU", "CPU", "NV"), one generator per image
//! (`modules/rng.py` `ImageRNG`), variation seeds (subseed + slerp), seed
//! resize, the eta noise seed delta (ENSD) and the [`NoiseSampler`] contract the
//! samplers draw from.

use std::str::FromStr;

use candle_core::{Device, Tensor};

use crate::error::{Result, SamplingError};
use crate::rng_philox::PhiloxGenerator;
use crate::rng_torch_cpu::TorchCpuGenerator;

/// Where standard normal numbers come from (A1111 setting "Random number generator source").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NoiseSource {
    /// "GPU": `torch.randn` on CUDA. Reproduced with the Philox4x32-10 emulation
    /// (the same numbers as "NV").
    #[default]
    Gpu,
    /// "CPU": `torch.randn` with a CPU generator (mt19937).
    Cpu,
    /// "NV": A1111's CPU emulation of CUDA's Philox randn (`rng_philox.py`).
    Nv,
}

impl FromStr for NoiseSource {
    type Err = SamplingError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "GPU" => Ok(Self::Gpu),
            "CPU" => Ok(Self::Cpu),
            "NV" => Ok(Self::Nv),
            _ => Err(SamplingError::UnknownNoiseSource {
                name: s.to_string(),
            }),
        }
    }
}

impl NoiseSource {
    /// A fresh generator seeded with `seed` (`rng.create_generator`).
    pub fn generator(self, seed: u64) -> SeededGenerator {
        match self {
            Self::Cpu => SeededGenerator::Cpu(Box::new(TorchCpuGenerator::new(seed))),
            Self::Gpu | Self::Nv => SeededGenerator::Philox(PhiloxGenerator::new(seed)),
        }
    }

    /// `rng.randn_local(seed, shape)`: the first `n` normals of a fresh generator.
    pub fn randn_local(self, seed: u64, n: usize) -> Vec<f32> {
        self.generator(seed).randn(n)
    }
}

/// A seeded normal generator of one of the sources; successive calls continue
/// its stream exactly as successive `randn` calls do in A1111.
#[derive(Clone)]
pub enum SeededGenerator {
    /// torch CPU generator.
    Cpu(Box<TorchCpuGenerator>),
    /// Philox emulation.
    Philox(PhiloxGenerator),
}

impl SeededGenerator {
    /// Next `n` standard normal float32 values (one `randn` call of `n` elements).
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        match self {
            Self::Cpu(g) => g.randn(n),
            Self::Philox(g) => g.randn(n),
        }
    }
}

/// What samplers draw their stochastic noise from: k-diffusion's
/// `noise_sampler(sigma, sigma_next)`. Plain sources ignore the sigmas; the
/// Brownian tree uses them.
pub trait NoiseSampler {
    /// Noise for the step from `sigma` to `sigma_next`, shaped like the latent batch.
    fn sample(&mut self, sigma: f64, sigma_next: f64) -> Result<Tensor>;
}

/// A1111's `get_fixed_seed`: -1 becomes a random seed in `[0, 4294967294)`
/// (drawn from the operating system's hasher entropy; report it back to the
/// user). Other seeds pass through; other negative ones wrap to 64 bits as
/// `torch.manual_seed` does.
pub fn fixed_seed(seed: i64) -> u64 {
    if seed != -1 {
        return seed as u64;
    }
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    h.finish() % 4_294_967_294
}

/// A1111's seeds for a batch of `n` images: `seed + i` (all equal to `seed`
/// when a variation strength is set) and `subseed + i`.
pub fn batch_seeds(
    seed: u64,
    subseed: u64,
    subseed_strength: f32,
    n: usize,
) -> (Vec<u64>, Vec<u64>) {
    let seeds = (0..n as u64)
        .map(|i| seed.wrapping_add(if subseed_strength == 0.0 { i } else { 0 }))
        .collect();
    let subseeds = (0..n as u64).map(|i| subseed.wrapping_add(i)).collect();
    (seeds, subseeds)
}

/// Options of [`ImageRng`] beyond the seeds.
#[derive(Clone, Debug, Default)]
pub struct ImageRngOptions {
    /// Variation seeds, one per image (missing entries count as 0).
    pub subseeds: Vec<u64>,
    /// Variation strength; 0 disables variation.
    pub subseed_strength: f32,
    /// "Resize seed from" height and width in pixels (0 = off).
    pub seed_resize_from: (usize, usize),
    /// Eta noise seed delta: sampler noise comes from generators seeded `seed + ensd`.
    pub eta_noise_seed_delta: u64,
}

/// A1111's `ImageRNG`: one generator per image; the first call gives the
/// initial latent noise (with variation and seed resize), later calls the
/// samplers' noise, stacked over the batch as `(B, C, H, W)`.
pub struct ImageRng {
    source: NoiseSource,
    shape: (usize, usize, usize),
    seeds: Vec<u64>,
    options: ImageRngOptions,
    generators: Vec<SeededGenerator>,
    is_first: bool,
    device: Device,
}

impl ImageRng {
    /// `ImageRNG(shape, seeds, …)` with per-image latent shape `(C, H, W)`.
    pub fn new(
        source: NoiseSource,
        shape: (usize, usize, usize),
        seeds: Vec<u64>,
        options: ImageRngOptions,
        device: &Device,
    ) -> Self {
        let generators = seeds.iter().map(|&s| source.generator(s)).collect();
        Self {
            source,
            shape,
            seeds,
            options,
            generators,
            is_first: true,
            device: device.clone(),
        }
    }

    fn numel(shape: (usize, usize, usize)) -> usize {
        shape.0 * shape.1 * shape.2
    }

    fn first(&mut self) -> Result<Tensor> {
        let (c, h, w) = self.shape;
        let (rh, rw) = self.options.seed_resize_from;
        let noise_shape = if rh == 0 || rw == 0 {
            self.shape
        } else {
            (c, rh / 8, rw / 8)
        };
        let resized = noise_shape != self.shape;
        let mut out = Vec::with_capacity(self.seeds.len() * Self::numel(self.shape));
        for (i, &seed) in self.seeds.iter().enumerate() {
            let subnoise = if self.options.subseed_strength != 0.0 {
                let subseed = self.options.subseeds.get(i).copied().unwrap_or(0);
                Some(self.source.randn_local(subseed, Self::numel(noise_shape)))
            } else {
                None
            };
            let mut noise = if resized {
                self.source.randn_local(seed, Self::numel(noise_shape))
            } else {
                self.generators[i].randn(Self::numel(self.shape))
            };
            if let Some(sub) = subnoise {
                noise = slerp(self.options.subseed_strength, &noise, &sub, noise_shape);
            }
            if resized {
                let mut x = self.generators[i].randn(Self::numel(self.shape));
                paste_centered(&mut x, (c, h, w), &noise, noise_shape);
                noise = x;
            }
            out.extend_from_slice(&noise);
        }
        if self.options.eta_noise_seed_delta != 0 {
            let delta = self.options.eta_noise_seed_delta;
            self.generators = self
                .seeds
                .iter()
                .map(|&s| self.source.generator(s.wrapping_add(delta)))
                .collect();
        }
        Ok(Tensor::from_vec(
            out,
            (self.seeds.len(), c, h, w),
            &self.device,
        )?)
    }

    /// `ImageRNG.next()`: the initial noise on the first call, then one draw per
    /// image from its generator.
    pub fn next_noise(&mut self) -> Result<Tensor> {
        if self.is_first {
            self.is_first = false;
            return self.first();
        }
        let (c, h, w) = self.shape;
        let n = Self::numel(self.shape);
        let mut out = Vec::with_capacity(self.seeds.len() * n);
        for g in &mut self.generators {
            out.extend_from_slice(&g.randn(n));
        }
        Ok(Tensor::from_vec(
            out,
            (self.seeds.len(), c, h, w),
            &self.device,
        )?)
    }
}

impl NoiseSampler for ImageRng {
    fn sample(&mut self, _sigma: f64, _sigma_next: f64) -> Result<Tensor> {
        self.next_noise()
    }
}

/// A1111's `slerp(val, low, high)` on one image's `(C, H, W)` noise: the norms
/// and dot products run over dimension 1 (H), giving one angle per `(c, w)`;
/// when the mean dot product exceeds 0.9995 it falls back to `low·val + high·(1−val)`.
/// Computed in double, rounded once to float.
pub fn slerp(val: f32, low: &[f32], high: &[f32], shape: (usize, usize, usize)) -> Vec<f32> {
    let (c, h, w) = shape;
    let idx = |ci: usize, hi: usize, wi: usize| (ci * h + hi) * w + wi;
    let val = val as f64;
    let mut dots = vec![0f64; c * w];
    for ci in 0..c {
        for wi in 0..w {
            let (mut nl, mut nh) = (0f64, 0f64);
            for hi in 0..h {
                nl += (low[idx(ci, hi, wi)] as f64).powi(2);
                nh += (high[idx(ci, hi, wi)] as f64).powi(2);
            }
            let (nl, nh) = (nl.sqrt(), nh.sqrt());
            let mut dot = 0f64;
            for hi in 0..h {
                dot += (low[idx(ci, hi, wi)] as f64 / nl) * (high[idx(ci, hi, wi)] as f64 / nh);
            }
            dots[ci * w + wi] = dot;
        }
    }
    let mean = dots.iter().sum::<f64>() / dots.len().max(1) as f64;
    let mut out = vec![0f32; low.len()];
    if mean > 0.9995 {
        for (o, (&l, &hv)) in out.iter_mut().zip(low.iter().zip(high)) {
            *o = (l as f64 * val + hv as f64 * (1.0 - val)) as f32;
        }
        return out;
    }
    for ci in 0..c {
        for wi in 0..w {
            let omega = dots[ci * w + wi].acos();
            let so = omega.sin();
            let a = ((1.0 - val) * omega).sin() / so;
            let b = (val * omega).sin() / so;
            for hi in 0..h {
                let k = idx(ci, hi, wi);
                out[k] = (a * low[k] as f64 + b * high[k] as f64) as f32;
            }
        }
    }
    out
}

/// A1111's seed-resize paste: the noise generated at `from` size is centred
/// into (or cropped from the centre onto) `x` of size `to`, both `(C, H, W)`.
fn paste_centered(
    x: &mut [f32],
    to: (usize, usize, usize),
    noise: &[f32],
    from: (usize, usize, usize),
) {
    let (c, th, tw) = to;
    let (_, fh, fw) = from;
    // Python floor division of possibly negative differences
    let dx = (tw as i64 - fw as i64).div_euclid(2);
    let dy = (th as i64 - fh as i64).div_euclid(2);
    let w = if dx >= 0 {
        fw as i64
    } else {
        fw as i64 + 2 * dx
    };
    let h = if dy >= 0 {
        fh as i64
    } else {
        fh as i64 + 2 * dy
    };
    let (tx, ty) = (dx.max(0), dy.max(0));
    let (sx, sy) = ((-dx).max(0), (-dy).max(0));
    for ci in 0..c {
        for row in 0..h.max(0) {
            for col in 0..w.max(0) {
                let dst = (ci * th) as i64 * tw as i64 + (ty + row) * tw as i64 + tx + col;
                let src = (ci * fh) as i64 * fw as i64 + (sy + row) * fw as i64 + sx + col;
                if let (Ok(d), Ok(s)) = (usize::try_from(dst), usize::try_from(src)) {
                    if d < x.len() && s < noise.len() {
                        x[d] = noise[s];
                    }
                }
            }
        }
    }
}
