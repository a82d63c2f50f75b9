//! GroupNorm (optionally followed by SiLU) over f32 NCHW data on the CPU: each group's mean
//! and variance (two passes, accumulated in f64), then one pass that normalises, applies the
//! affine parameters and the activation. Groups run in parallel on rayon's pool.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::f32_slice;

use super::fastmath::exp;

struct GroupNorm {
    groups: usize,
    eps: f64,
    silu: bool,
}

#[inline(always)]
fn normalise_body(src: &[f32], dst: &mut [f32], mean: f32, scale: f32, shift: f32, silu: bool) {
    if silu {
        for (d, &s) in dst.iter_mut().zip(src) {
            let y = (s - mean) * scale + shift;
            *d = y / (1.0 + exp(-y));
        }
    } else {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = (s - mean) * scale + shift;
        }
    }
}

simd_dispatch! {
    fn normalise(src: &[f32], dst: &mut [f32], mean: f32, scale: f32, shift: f32, silu: bool) => normalise_body
}

impl CustomOp3 for GroupNorm {
    fn name(&self) -> &'static str {
        "sumi-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, b) = (
            f32_slice(s1, l1, "group_norm", "input")?,
            f32_slice(s2, l2, "group_norm", "weight")?,
            f32_slice(s3, l3, "group_norm", "bias")?,
        );
        let dims = l1.shape().dims();
        if dims.len() < 2 {
            return Err(candle_core::Error::Msg(format!(
                "group_norm: input {:?}",
                l1.shape()
            )));
        }
        let c = dims[1];
        let spatial: usize = dims[2..].iter().product();
        let g = self.groups;
        if g == 0 || !c.is_multiple_of(g) || w.len() != c || b.len() != c {
            return Err(candle_core::Error::Msg(format!(
                "group_norm: {c} channels, {g} groups, weight {} bias {}",
                w.len(),
                b.len()
            )));
        }
        let cpg = c / g;
        let group_len = cpg * spatial;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(group_len)
            .zip(x.par_chunks(group_len))
            .enumerate()
            .for_each(|(i, (dst, src))| {
                // f64 sums: exact for constant groups (e.g. a blank image), where the
                // normalisation amplifies any rounding by 1/sqrt(eps)
                let mean = src.iter().map(|&v| v as f64).sum::<f64>() / group_len as f64;
                let mean32 = mean as f32;
                let var = src
                    .iter()
                    .map(|&v| {
                        let d = (v - mean32) as f64;
                        d * d
                    })
                    .sum::<f64>()
                    / group_len as f64;
                let rstd = 1.0 / (var + self.eps).sqrt();
                let gi = i % g;
                for k in 0..cpg {
                    let ch = gi * cpg + k;
                    let scale = (rstd * w[ch] as f64) as f32;
                    let r = k * spatial..(k + 1) * spatial;
                    normalise(
                        &src[r.clone()],
                        &mut dst[r],
                        mean32,
                        scale,
                        b[ch],
                        self.silu,
                    );
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// GroupNorm of `x` `[n, c, …]` (f32, CPU) with `groups` groups, affine `weight`/`bias` `[c]`,
/// then SiLU when `silu`.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(weight, bias, &GroupNorm { groups, eps, silu })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    #[test]
    fn matches_candle_group_norm_and_silu() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0.5f32, 3.0, (2, 64, 9, 7), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.2, 64, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.2, 64, &dev).unwrap();
        let reference = candle_nn::GroupNorm::new(w.clone(), b.clone(), 64, 32, 1e-5).unwrap();
        let want = reference.forward(&x).unwrap();
        for silu in [false, true] {
            let got = group_norm(&x, &w, &b, 32, 1e-5, silu).unwrap();
            let want = if silu {
                want.silu().unwrap()
            } else {
                want.clone()
            };
            let err = crate::kernels::max_abs_diff(&got, &want);
            assert!(err < 2e-5, "silu {silu}: {err}");
        }
    }
}
