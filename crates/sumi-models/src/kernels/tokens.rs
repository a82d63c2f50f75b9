//! The layout changes around a spatial transformer, in parallel, for f32 CPU tensors: a
//! feature map `[b, c, h, w]` into tokens `[b, h·w, c]`, and tokens back into a feature map
//! with the residual added in the same pass (candle's strided copy runs on one thread; these
//! two were ~2% of a bf16 U-Net forward there). Other devices and dtypes use candle's ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{f32_slice, Unfilled};

/// Channels × pixels of one transposed tile.
const TILE: usize = 32;

/// `dst[p·c + ch] = src[ch·hw + p]` for the channels `c0 .. c0 + TILE` of one image, a
/// tile of pixels at a time.
fn transpose_tiles(src: &[f32], c: usize, hw: usize, c0: usize, dst: *mut f32) {
    let c1 = (c0 + TILE).min(c);
    for p0 in (0..hw).step_by(TILE) {
        let p1 = (p0 + TILE).min(hw);
        for ch in c0..c1 {
            let row = &src[ch * hw + p0..ch * hw + p1];
            for (i, &v) in row.iter().enumerate() {
                // SAFETY: (p0 + i)·c + ch < hw·c, inside this image's output (caller).
                unsafe { *dst.add((p0 + i) * c + ch) = v };
            }
        }
    }
}

struct ToTokens;

impl CustomOp1 for ToTokens {
    fn name(&self) -> &'static str {
        "sumi-to-tokens"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "to-tokens", "input")?;
        let (b, c, h, w) = l.shape().dims4()?;
        let hw = h * w;
        let mut out = Unfilled::new(b * hw * c);
        let ptr = out.ptr();
        let ptr = &ptr;
        (0..b * c.div_ceil(TILE)).into_par_iter().for_each(|task| {
            let (bi, cb) = (task / c.div_ceil(TILE), task % c.div_ceil(TILE));
            // SAFETY: image bi's output; this task writes only its channels.
            let dst = unsafe { ptr.0.add(bi * hw * c) };
            transpose_tiles(&x[bi * c * hw..(bi + 1) * c * hw], c, hw, cb * TILE, dst);
        });
        // SAFETY: the tasks cover every (image, channel block), each all pixels.
        let out = unsafe { out.filled() };
        Ok((CpuStorage::F32(out), Shape::from((b, hw, c))))
    }
}

struct AddFromTokens {
    h: usize,
    w: usize,
}

impl CustomOp2 for AddFromTokens {
    fn name(&self) -> &'static str {
        "sumi-add-from-tokens"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = f32_slice(s1, l1, "add-from-tokens", "tokens")?;
        let x = f32_slice(s2, l2, "add-from-tokens", "residual")?;
        let (b, n, c) = l1.shape().dims3()?;
        let (h, w) = (self.h, self.w);
        if l2.shape().dims4()? != (b, c, h, w) || n != h * w {
            return Err(candle_core::Error::Msg(format!(
                "add-from-tokens: tokens {:?} for a residual {:?}",
                l1.shape(),
                l2.shape()
            )));
        }
        let hw = n;
        let mut out = Unfilled::new(b * c * hw);
        let ptr = out.ptr();
        let ptr = &ptr;
        (0..b * hw.div_ceil(TILE)).into_par_iter().for_each(|task| {
            let (bi, pb) = (task / hw.div_ceil(TILE), task % hw.div_ceil(TILE));
            let (p0, p1) = (pb * TILE, (pb * TILE + TILE).min(hw));
            let (ys, xs) = (&y[bi * hw * c..], &x[bi * c * hw..]);
            for ch in 0..c {
                for p in p0..p1 {
                    // SAFETY: element (bi, ch, p) of the output, written by this task only.
                    unsafe {
                        *ptr.0.add((bi * c + ch) * hw + p) = ys[p * c + ch] + xs[ch * hw + p]
                    };
                }
            }
        });
        // SAFETY: the tasks cover every (image, pixel block), each all channels.
        let out = unsafe { out.filled() };
        Ok((CpuStorage::F32(out), Shape::from((b, c, h, w))))
    }
}

fn fast(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}

/// `[b, c, h, w]` → `[b, h·w, c]` (contiguous).
pub fn to_tokens(x: &Tensor) -> candle_core::Result<Tensor> {
    if fast(x) {
        return x.contiguous()?.apply_op1_no_bwd(&ToTokens);
    }
    x.flatten_from(2)?.transpose(1, 2)?.contiguous()
}

/// `y` `[b, h·w, c]` back to `[b, c, h, w]`, plus `x` `[b, c, h, w]`.
pub fn add_from_tokens(y: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if fast(y) && fast(x) {
        return y
            .contiguous()?
            .apply_op2_no_bwd(&x.contiguous()?, &AddFromTokens { h, w });
    }
    y.transpose(1, 2)?.reshape((b, c, h, w))? + x
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn match_candle_layouts_exactly() {
        let dev = Device::Cpu;
        for &(b, c, h, w) in &[(2, 40, 7, 9), (1, 3, 1, 1), (2, 64, 8, 8)] {
            let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
            let t = to_tokens(&x).unwrap();
            let want = x.flatten_from(2).unwrap().transpose(1, 2).unwrap();
            assert_eq!(t.dims(), want.dims());
            assert_eq!(crate::kernels::max_abs_diff(&t, &want), 0.0);
            let y = Tensor::randn(0f32, 1.0, (b, h * w, c), &dev).unwrap();
            let got = add_from_tokens(&y, &x).unwrap();
            let want = (y.transpose(1, 2).unwrap().reshape((b, c, h, w)).unwrap() + &x).unwrap();
            assert_eq!(crate::kernels::max_abs_diff(&got, &want), 0.0);
        }
    }
}
