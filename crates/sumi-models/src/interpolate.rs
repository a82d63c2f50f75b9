//! Latent resizing for hires fix: `torch.nn.functional.interpolate(samples, size=(H, W),
//! mode=m, antialias=aa)` (align_corners at its default, `False`) for A1111 v1.10.1's six
//! "latent upscale modes" (`modules/shared.py`, `latent_upscale_modes`), computed as torch
//! 2.15's CPU float32 kernels compute it (`aten/src/ATen/native/cpu/UpSampleKernel.cpp`,
//! `aten/src/ATen/native/UpSample.h`), operation by operation.
//!
//! What "operation by operation" means here:
//! * the scale is `float(in) / out` (`compute_scales_value<float>`); source indices, lambdas and
//!   weights are float32 with the float/double promotions of the C++ source kept (a `+ 0.5`
//!   literal is a double);
//! * torch's build contracts some `a * b + c` into fused multiply-adds (GCC, `-ffp-contract=fast`,
//!   AVX-512 kernels) and not others; which ones was measured against torch on this project's
//!   reference machine (every contraction below is pinned by the fixtures) and is written out
//!   with [`f32::mul_add`];
//! * bilinear and nearest-exact have two kernels in torch, chosen by
//!   `_use_vectorized_kernel_cond_2d`: the channels-last one when `out_h + out_w <= 128` (or the
//!   input is channels-last contiguous with more than 3 channels: for an NCHW tensor, a 1×1
//!   input), the generic TensorIterator one otherwise; they round differently, so both are here.
//!   The channels-last bilinear kernel treats its first `C - C % 16` channels with AVX-512
//!   vectors (another summation order) and the rest with scalar code;
//! * the antialiased modes are torch's separable path: the width pass first, then the height
//!   pass, a pass skipped where that size is unchanged; PIL's filters (triangle; Keys cubic
//!   with `a = -0.5`), support `interp_size / 2 · max(scale, 1)`, windows truncated at the
//!   borders and weights divided by their sum.
//!
//! Not reproduced: torch's `at::get_num_threads() == 1 && C == 3` switch to the channels-last
//! bilinear kernel (A1111 runs torch multi-threaded, and latents have 4 channels), and the
//! summation order of an AVX2-only torch (8-lane vectors): results then differ in the last bit.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::error::{ModelError, Result};

/// A1111's latent upscale modes (hires fix's "Latent …" upscalers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LatentUpscaleMode {
    /// `Latent`: bilinear, no antialiasing (A1111's default latent upscaler).
    Bilinear,
    /// `Latent (antialiased)`: bilinear with antialiasing.
    BilinearAntialiased,
    /// `Latent (bicubic)`: bicubic (`A = -0.75`), no antialiasing.
    Bicubic,
    /// `Latent (bicubic antialiased)`: bicubic with antialiasing (`A = -0.5`).
    BicubicAntialiased,
    /// `Latent (nearest)`: torch's `nearest` (floor of `dst · scale`).
    Nearest,
    /// `Latent (nearest-exact)`: torch's `nearest-exact` (pixel centres).
    NearestExact,
}

impl LatentUpscaleMode {
    /// Every mode, in A1111's listing order (that of `/sdapi/v1/latent-upscale-modes`).
    pub const ALL: [Self; 6] = [
        Self::Bilinear,
        Self::BilinearAntialiased,
        Self::Bicubic,
        Self::BicubicAntialiased,
        Self::Nearest,
        Self::NearestExact,
    ];

    /// The name A1111 gives the mode (its hires fix upscaler name).
    pub fn a1111_name(self) -> &'static str {
        match self {
            Self::Bilinear => "Latent",
            Self::BilinearAntialiased => "Latent (antialiased)",
            Self::Bicubic => "Latent (bicubic)",
            Self::BicubicAntialiased => "Latent (bicubic antialiased)",
            Self::Nearest => "Latent (nearest)",
            Self::NearestExact => "Latent (nearest-exact)",
        }
    }

    /// The mode A1111 names `name` (exact spelling), if it is a latent upscale mode.
    pub fn from_a1111_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.a1111_name() == name)
    }

    /// The `mode` argument A1111 passes to torch's `interpolate`.
    pub fn torch_mode(self) -> &'static str {
        match self {
            Self::Bilinear | Self::BilinearAntialiased => "bilinear",
            Self::Bicubic | Self::BicubicAntialiased => "bicubic",
            Self::Nearest => "nearest",
            Self::NearestExact => "nearest-exact",
        }
    }

    /// The `antialias` argument A1111 passes to torch's `interpolate`.
    pub fn antialias(self) -> bool {
        matches!(self, Self::BilinearAntialiased | Self::BicubicAntialiased)
    }
}

/// Lanes of torch's `Vectorized<float>` in its AVX-512 kernels.
const VEC_LANES: usize = 16;

/// Resizes an NCHW tensor to `height × width` as A1111's hires fix does with `mode` (torch's
/// `interpolate` on the CPU in float32; see the module documentation). Any batch and channel
/// count; upscaling and downscaling, each axis on its own.
///
/// A tensor that is not f32 is converted to f32, resized, and converted back to its dtype
/// (torch resizes an f16/bf16 tensor with its own reduced-precision kernels: such a result can
/// differ from torch's in the last bit of the half). Errors: a tensor that is not 4-D, a zero
/// dimension or size, or an output too large to address.
pub fn interpolate(
    x: &Tensor,
    height: usize,
    width: usize,
    mode: LatentUpscaleMode,
) -> Result<Tensor> {
    let bad = |detail: String| ModelError::Input {
        component: "interpolate",
        detail,
    };
    let (n, c, h, w) = x
        .dims4()
        .map_err(|_| bad(format!("expected an NCHW tensor, got shape {:?}", x.dims())))?;
    if n == 0 || c == 0 || h == 0 || w == 0 || height == 0 || width == 0 {
        return Err(bad(format!(
            "zero size: input {:?}, output {height}×{width}",
            x.dims()
        )));
    }
    let planes = n * c;
    let out_plane = height
        .checked_mul(width)
        .filter(|&p| {
            p.checked_mul(planes)
                .is_some_and(|t| t <= isize::MAX as usize / 4)
        })
        .ok_or_else(|| bad(format!("output {planes}×{height}×{width} is too large")))?;
    let dtype = x.dtype();
    let input = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let size = Size {
        h,
        w,
        oh: height,
        ow: width,
    };
    // torch's `_use_vectorized_kernel_cond_2d`: an NCHW-contiguous tensor is also channels-last
    // contiguous when C == 1 or H == W == 1.
    let channels_last = (c > 3 && h * w == 1) || height + width <= 128;
    let plan = Plan::new(mode, size, channels_last);
    let mut out = vec![0f32; planes * out_plane];
    out.par_chunks_mut(out_plane)
        .zip(input.par_chunks(h * w))
        .enumerate()
        .for_each(|(p, (dst, src))| plan.run(src, dst, p % c, c));
    Ok(Tensor::from_vec(out, (n, c, height, width), x.device())?.to_dtype(dtype)?)
}

/// Input and output sizes of one plane.
#[derive(Debug, Clone, Copy)]
struct Size {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

/// `compute_scales_value<float>(nullopt, in, out)`: `float(in) / out` in float32.
fn scale(input: usize, output: usize) -> f32 {
    input as f32 / output as f32
}

/// A per-plane resize with its index and weight tables, built once for all planes.
struct Plan {
    size: Size,
    kernel: Kernel,
}

/// The tables of one mode.
enum Kernel {
    /// Source index per output row and column.
    Nearest { rows: Vec<usize>, cols: Vec<usize> },
    /// Bilinear; `channels_last` selects the rounding of torch's channels-last kernel.
    Linear {
        rows: Vec<Lerp>,
        cols: Vec<Lerp>,
        channels_last: bool,
    },
    /// Bicubic, four clamped taps per axis.
    Cubic { rows: Vec<Taps4>, cols: Vec<Taps4> },
    /// The separable antialiased path.
    Antialiased {
        rows: Vec<Window>,
        cols: Vec<Window>,
    },
}

impl Plan {
    fn new(mode: LatentUpscaleMode, s: Size, channels_last: bool) -> Self {
        use LatentUpscaleMode as M;
        let kernel = match mode {
            M::Nearest => Kernel::Nearest {
                rows: nearest_axis(s.h, s.oh),
                cols: nearest_axis(s.w, s.ow),
            },
            M::NearestExact => Kernel::Nearest {
                rows: nearest_exact_axis(s.h, s.oh, channels_last),
                cols: nearest_exact_axis(s.w, s.ow, channels_last),
            },
            M::Bilinear => Kernel::Linear {
                rows: linear_axis(s.h, s.oh, channels_last),
                cols: linear_axis(s.w, s.ow, channels_last),
                channels_last,
            },
            M::Bicubic => Kernel::Cubic {
                rows: cubic_axis(s.h, s.oh),
                cols: cubic_axis(s.w, s.ow),
            },
            M::BilinearAntialiased => Kernel::Antialiased {
                rows: aa_axis(s.h, s.oh, Filter::Triangle),
                cols: aa_axis(s.w, s.ow, Filter::Triangle),
            },
            M::BicubicAntialiased => Kernel::Antialiased {
                rows: aa_axis(s.h, s.oh, Filter::Cubic),
                cols: aa_axis(s.w, s.ow, Filter::Cubic),
            },
        };
        Self { size: s, kernel }
    }

    /// Resizes one `h × w` plane (channel `channel` of `channels`) into the `oh × ow` `dst`.
    fn run(&self, src: &[f32], dst: &mut [f32], channel: usize, channels: usize) {
        let Size { w, ow, .. } = self.size;
        match &self.kernel {
            Kernel::Nearest { rows, cols } => {
                for (drow, &r) in dst.chunks_exact_mut(ow).zip(rows) {
                    let srow = &src[r * w..][..w];
                    for (d, &q) in drow.iter_mut().zip(cols) {
                        *d = srow[q];
                    }
                }
            }
            Kernel::Linear {
                rows,
                cols,
                channels_last,
            } => {
                // The channels-last kernel runs its first `C - C % 16` channels on vectors.
                let vector = *channels_last && channel < channels - channels % VEC_LANES;
                for (drow, r) in dst.chunks_exact_mut(ow).zip(rows) {
                    let (top, bottom) = (&src[r.i0 * w..][..w], &src[r.i1 * w..][..w]);
                    for (d, q) in drow.iter_mut().zip(cols) {
                        let corners = [top[q.i0], top[q.i1], bottom[q.i0], bottom[q.i1]];
                        *d = bilinear(corners, r, q, *channels_last, vector);
                    }
                }
            }
            Kernel::Cubic { rows, cols } => {
                for (drow, r) in dst.chunks_exact_mut(ow).zip(rows) {
                    for (d, q) in drow.iter_mut().zip(cols) {
                        *d = r.sum(|k| q.sum(|j| src[r.idx[k] * w + q.idx[j]]));
                    }
                }
            }
            Kernel::Antialiased { rows, cols } => aa_plane(self.size, rows, cols, src, dst),
        }
    }
}

/// One bilinear output from its corners `[i00, i01, i10, i11]` (row, column), in the rounding
/// of the kernel torch runs.
fn bilinear(v: [f32; 4], r: &Lerp, q: &Lerp, channels_last: bool, vector: bool) -> f32 {
    let [a, b, c, d] = v;
    if !channels_last {
        // `Interpolate<2, .., 2>`: `t0 * w0 + t1 * w1` along each axis, width first.
        let t0 = a.mul_add(q.l0, b * q.l1);
        let t1 = c.mul_add(q.l0, d * q.l1);
        return t0.mul_add(r.l0, t1 * r.l1);
    }
    let (w00, w01, w10, w11) = (r.l0 * q.l0, r.l0 * q.l1, r.l1 * q.l0, r.l1 * q.l1);
    if vector {
        // `i00 * w00 + (i01 * w01 + (i10 * w10 + i11 * w11))` on `Vectorized<float>`.
        a.mul_add(w00, b.mul_add(w01, d.mul_add(w11, c * w10)))
    } else {
        // The scalar tail: `i00 * w00 + i01 * w01 + i10 * w10 + i11 * w11`.
        d.mul_add(w11, c.mul_add(w10, a.mul_add(w00, b * w01)))
    }
}

/// `HelperInterpNearest`: `min(floor(dst · scale), in − 1)` in float32 (both torch kernels).
fn nearest_axis(input: usize, output: usize) -> Vec<usize> {
    let s = scale(input, output);
    (0..output)
        .map(|k| ((s * k as f32).floor() as usize).min(input - 1))
        .collect()
}

/// `nearest-exact`: the channels-last kernel's `nearest_neighbor_exact_compute_source_index`
/// (`floorf((dst + 0.5) · scale)`, the product in double), or the generic kernel's
/// `HelperInterpNearestExact` (`floorf(max(scale · (dst + 0.5) − 0.5, 0) + 0.5)`, the source
/// index fused, the `+ 0.5` in double).
fn nearest_exact_axis(input: usize, output: usize, channels_last: bool) -> Vec<usize> {
    let s = scale(input, output);
    (0..output)
        .map(|k| {
            let f = if channels_last {
                ((k as f64 + 0.5) * s as f64) as f32
            } else {
                let src = s.mul_add(k as f32 + 0.5, -0.5).max(0.0);
                (src as f64 + 0.5) as f32
            };
            (f.floor() as usize).min(input - 1)
        })
        .collect()
}

/// One output index of a bilinear axis (`compute_source_index_and_lambda`).
#[derive(Debug, Clone, Copy)]
struct Lerp {
    i0: usize,
    i1: usize,
    l0: f32,
    l1: f32,
}

/// `compute_source_index_and_lambda`: the source index `scale · (dst + 0.5) − 0.5` (fused in
/// the channels-last kernel, two roundings in the generic one), negatives clamped to 0.
fn linear_axis(input: usize, output: usize, channels_last: bool) -> Vec<Lerp> {
    let s = scale(input, output);
    (0..output)
        .map(|k| {
            if input == output {
                return Lerp {
                    i0: k,
                    i1: k,
                    l0: 1.0,
                    l1: 0.0,
                };
            }
            let half = k as f32 + 0.5;
            let src = if channels_last {
                s.mul_add(half, -0.5)
            } else {
                s * half - 0.5
            };
            let src = src.max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            Lerp {
                i0,
                i1,
                l0: 1.0 - l1,
                l1,
            }
        })
        .collect()
}

/// One output index of a bicubic axis: four clamped source indices and their weights.
#[derive(Debug, Clone, Copy)]
struct Taps4 {
    idx: [usize; 4],
    w: [f32; 4],
}

impl Taps4 {
    /// `Interpolate<.., 4>` as compiled: `v0 · w0 + v1 · w1` (the first product fused), then
    /// `+ v2 · w2` and `+ v3 · w3`, fused.
    fn sum(&self, v: impl Fn(usize) -> f32) -> f32 {
        let acc = v(0).mul_add(self.w[0], v(1) * self.w[1]);
        let acc = v(2).mul_add(self.w[2], acc);
        v(3).mul_add(self.w[3], acc)
    }
}

/// `HelperInterpCubic::compute_indices_weights`: source index `scale · (dst + 0.5) − 0.5`
/// (fused, not clamped), `guard_index_and_lambda`, `get_cubic_upsample_coefficients` with
/// `A = −0.75`, reads clamped to the plane.
fn cubic_axis(input: usize, output: usize) -> Vec<Taps4> {
    let s = scale(input, output);
    let last = input as i64 - 1;
    (0..output)
        .map(|k| {
            let src = s.mul_add(k as f32 + 0.5, -0.5);
            let i = (src.floor() as i64).min(last);
            let t = (src - i as f32).clamp(0.0, 1.0);
            let u = 1.0 - t;
            let a = -0.75;
            Taps4 {
                idx: [0, 1, 2, 3].map(|j| (i + j - 1).clamp(0, last) as usize),
                w: [
                    keys_far(t + 1.0, a, false),
                    keys_near(t, a, false),
                    keys_near(u, a, false),
                    keys_far(u + 1.0, a, false),
                ],
            }
        })
        .collect()
}

/// `cubic_convolution1`, `((A + 2) · x − (A + 3)) · x · x + 1` for `|x| ≤ 1`: the inner
/// product fused; the final `+ 1` fused only in the antialiasing filter (`fuse_last`).
fn keys_near(x: f32, a: f32, fuse_last: bool) -> f32 {
    let p = (a + 2.0).mul_add(x, -(a + 3.0)) * x;
    if fuse_last {
        p.mul_add(x, 1.0)
    } else {
        p * x + 1.0
    }
}

/// `cubic_convolution2`, `((A · x − 5A) · x + 8A) · x − 4A` for `1 ≤ |x| ≤ 2`: the first two
/// steps fused; the final `− 4A` fused only in the antialiasing filter (`fuse_last`).
fn keys_far(x: f32, a: f32, fuse_last: bool) -> f32 {
    let p = a.mul_add(x, -5.0 * a).mul_add(x, 8.0 * a);
    if fuse_last {
        p.mul_add(x, -4.0 * a)
    } else {
        p * x - 4.0 * a
    }
}

/// The antialiasing filters (PIL's, as torch copies them).
#[derive(Debug, Clone, Copy)]
enum Filter {
    /// `HelperInterpLinear::aa_filter`: `1 − |x|` on `|x| < 1`; interp size 2.
    Triangle,
    /// `HelperInterpCubic::aa_filter`: Keys' cubic with `a = −0.5`; interp size 4.
    Cubic,
}

impl Filter {
    fn interp_size(self) -> f64 {
        match self {
            Self::Triangle => 2.0,
            Self::Cubic => 4.0,
        }
    }

    fn eval(self, x: f32) -> f32 {
        let x = x.abs();
        match self {
            Self::Triangle if x < 1.0 => 1.0 - x,
            Self::Cubic if x < 1.0 => keys_near(x, -0.5, true),
            Self::Cubic if x < 2.0 => keys_far(x, -0.5, true),
            _ => 0.0,
        }
    }
}

/// One output index's antialiasing window: its first source index and normalised weights.
#[derive(Debug, Clone)]
struct Window {
    start: usize,
    weights: Vec<f32>,
}

impl Window {
    /// `interpolate_aa_single_dim`: `out = v0 · w0`, then `out += vj · wj`. GCC unrolls the
    /// loop by four: the unrolled steps round the product and the sum apart, the remaining
    /// `(len − 1) % 4` steps are fused.
    fn sum(&self, v: impl Fn(usize) -> f32) -> f32 {
        let w = &self.weights;
        let unrolled = (w.len() - 1) / 4 * 4;
        let mut acc = v(self.start) * w[0];
        for (j, &wj) in w.iter().enumerate().skip(1) {
            let x = v(self.start + j);
            acc = if j <= unrolled {
                acc + x * wj
            } else {
                x.mul_add(wj, acc)
            };
        }
        acc
    }
}

/// `_compute_index_ranges_weights` / `_compute_indices_min_size_weights_aa` for float32, with
/// their float/double promotions: support `interp_size / 2 · max(scale, 1)`, window
/// `[center − support + 0.5, center + support + 0.5)` truncated at the borders, weights
/// `filter((j + xmin − center + 0.5) / max(scale, 1))` divided by their (float) sum.
fn aa_axis(input: usize, output: usize, filter: Filter) -> Vec<Window> {
    let s = scale(input, output);
    let half = filter.interp_size() * 0.5;
    let (support, invscale) = if s >= 1.0 {
        ((half * s as f64) as f32, (1.0 / s as f64) as f32)
    } else {
        (half as f32, 1.0)
    };
    let max_size = support.ceil() as i64 * 2 + 1;
    (0..output)
        .map(|k| {
            let center = (s as f64 * (k as f64 + 0.5)) as f32;
            let xmin = (((center - support) as f64 + 0.5) as i64).max(0);
            let xmax = (((center + support) as f64 + 0.5) as i64).min(input as i64);
            let size = (xmax - xmin).clamp(0, max_size);
            let mut weights: Vec<f32> = (xmin..xmin + size)
                .map(|x| filter.eval((((x as f32 - center) as f64 + 0.5) * invscale as f64) as f32))
                .collect();
            let total = weights.iter().fold(0f32, |t, &w| t + w);
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            // The window is never empty (`2 · support ≥ 2` and `xmin < input`); were it, torch
            // would read one zero weight.
            if weights.is_empty() {
                weights.push(0.0);
            }
            Window {
                start: (xmin as usize).min(input - 1),
                weights,
            }
        })
        .collect()
}

/// torch's `separable_upsample_generic_Nd_kernel_impl` on one plane: the width pass, then the
/// height pass, each only where that size changes (a plain copy where neither does).
fn aa_plane(s: Size, rows: &[Window], cols: &[Window], src: &[f32], dst: &mut [f32]) {
    let Size { h, w, oh, ow } = s;
    let horizontal = |into: &mut [f32]| {
        for (irow, orow) in src.chunks_exact(w).zip(into.chunks_exact_mut(ow)) {
            for (d, q) in orow.iter_mut().zip(cols) {
                *d = q.sum(|x| irow[x]);
            }
        }
    };
    let vertical = |from: &[f32], into: &mut [f32]| {
        for (orow, r) in into.chunks_exact_mut(ow).zip(rows) {
            for (x, d) in orow.iter_mut().enumerate() {
                *d = r.sum(|y| from[y * ow + x]);
            }
        }
    };
    match (w != ow, h != oh) {
        (false, false) => dst.copy_from_slice(src),
        (true, false) => horizontal(dst),
        (false, true) => vertical(src, dst),
        (true, true) => {
            let mut mid = vec![0f32; h * ow];
            horizontal(&mut mid);
            vertical(&mid, dst);
        }
    }
}
