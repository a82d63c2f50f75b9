//! Elementwise f32 passes over large tensors, in parallel and in one pass where candle would
//! make one single-threaded pass per op: the network merge's `updown · scale · multiplier`
//! and its `weight + updown` (a rank-64 LoRA on the SD1.5 U-Net: ~0.9 s per affine and
//! ~0.5 s for the add, single-threaded). Each computes exactly what the candle ops it
//! replaces compute (`affine(a, 0)` is `x · a + 0`), so results are bit-identical.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::f32_slice;

/// Elements per parallel task.
const CHUNK: usize = 1 << 16;

#[inline(always)]
fn affine2_body(x: &[f32], out: &mut [f32], a: f32, b: f32) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v * a + 0.0) * b + 0.0;
    }
}

simd_dispatch! {
    fn affine2_chunk(x: &[f32], out: &mut [f32], a: f32, b: f32) => affine2_body
}

#[inline(always)]
fn add_body(x: &[f32], y: &[f32], out: &mut [f32]) {
    for ((o, &u), &v) in out.iter_mut().zip(x).zip(y) {
        *o = u + v;
    }
}

simd_dispatch! {
    fn add_chunk(x: &[f32], y: &[f32], out: &mut [f32]) => add_body
}

struct Affine2(f32, f32);

impl CustomOp1 for Affine2 {
    fn name(&self) -> &'static str {
        "sumi-affine2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "affine2", "input")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, x)| affine2_chunk(x, o, self.0, self.1));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

struct Add;

impl CustomOp2 for Add {
    fn name(&self) -> &'static str {
        "sumi-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, y) = (
            f32_slice(s1, l1, "add", "lhs")?,
            f32_slice(s2, l2, "add", "rhs")?,
        );
        if l1.shape() != l2.shape() {
            return Err(candle_core::Error::Msg(format!(
                "add: shapes {:?} and {:?} differ",
                l1.shape(),
                l2.shape()
            )));
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
            .for_each(|(o, (x, y))| add_chunk(x, y, o));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

fn is_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}

/// `t.affine(a, 0)?.affine(b, 0)` in one parallel pass for f32 on the CPU (candle's ops
/// otherwise), bit-identical.
pub fn affine_twice(t: &Tensor, a: f64, b: f64) -> candle_core::Result<Tensor> {
    if !is_cpu_f32(t) {
        return t.affine(a, 0.0)?.affine(b, 0.0);
    }
    t.contiguous()?
        .apply_op1_no_bwd(&Affine2(a as f32, b as f32))
}

/// `x + y` for tensors of one shape, in parallel for f32 on the CPU (candle's add
/// otherwise), bit-identical.
pub fn add(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    if !(is_cpu_f32(x) && is_cpu_f32(y)) || x.dims() != y.dims() {
        return x.broadcast_add(y);
    }
    x.contiguous()?.apply_op2_no_bwd(&y.contiguous()?, &Add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn bits(t: &Tensor) -> Vec<u32> {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        v.into_iter().map(f32::to_bits).collect()
    }

    #[test]
    fn match_candles_ops_bit_for_bit() {
        let dev = Device::Cpu;
        // past one chunk, with zeros of both signs and a transposed (strided) input
        let n = CHUNK * 2 + 37;
        let x = Tensor::randn(0f32, 3.0, n, &dev).unwrap();
        let zeros = Tensor::new(&[0.0f32, -0.0, 1e-38, -1e-38], &dev).unwrap();
        let x = Tensor::cat(&[&x, &zeros], 0).unwrap();
        let y = Tensor::randn(0f32, 1.0, x.dims(), &dev).unwrap();
        for (a, b) in [(0.5, 0.7), (1.0 / 3.0, -1.3), (0.0, 2.0), (-1e-3, 1e30)] {
            let want = x.affine(a, 0.0).unwrap().affine(b, 0.0).unwrap();
            assert_eq!(
                bits(&affine_twice(&x, a, b).unwrap()),
                bits(&want),
                "{a} {b}"
            );
            let sum = want.broadcast_add(&y).unwrap();
            assert_eq!(
                bits(&add(&y, &want).unwrap()),
                bits(&y.broadcast_add(&want).unwrap())
            );
            assert_eq!(bits(&add(&want, &y).unwrap()), bits(&sum));
        }
        let m = Tensor::randn(0f32, 1.0, (70, 90), &dev)
            .unwrap()
            .t()
            .unwrap();
        let want = m.affine(0.3, 0.0).unwrap().affine(1.7, 0.0).unwrap();
        assert_eq!(bits(&affine_twice(&m, 0.3, 1.7).unwrap()), bits(&want));
        let other = Tensor::randn(0f32, 1.0, (90, 70), &dev).unwrap();
        assert_eq!(
            bits(&add(&m, &other).unwrap()),
            bits(&m.broadcast_add(&other).unwrap())
        );
        // a broadcast falls back to candle's
        let row = Tensor::randn(0f32, 1.0, 70, &dev).unwrap();
        assert_eq!(
            bits(&add(&other, &row).unwrap()),
            bits(&other.broadcast_add(&row).unwrap())
        );
    }
}
