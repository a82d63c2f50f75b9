//! Direct 3×3 convolution (stride 1, padding 1) of f32 NCHW activations on CPUs with
//! AVX-512, for the narrow layers of the upscaler networks (RRDBNet's dense blocks have 32
//! output channels, where an im2col GEMM spends most of its time copying columns).
//!
//! Each task takes a stripe of output rows: it copies the rows it reads, with a zero border,
//! into a small buffer (from several input tensors at once, so a channel concatenation is
//! never formed), then computes output blocks of 4 channels × 96 pixels in registers,
//! broadcasting one weight against six 16-pixel input vectors per input channel and tap.
//! The output grid is the padded width (two columns per row are computed and dropped), so
//! every tap is a plain shifted load. An optional LeakyReLU is applied as the block is
//! stored. Without AVX-512 the caller falls back to the im2col path.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::{f32_slice, SendPtr};

/// Output channels per register block.
const CB: usize = 4;
/// 16-lane vectors per register block (96 pixels).
const PV: usize = 6;
/// Pixels per register block.
const PB: usize = PV * 16;
/// Input channels per cache block (their rows of one pixel block stay in L1).
const CI_BLOCK: usize = 32;
/// Bytes of stripe buffer a task aims for.
const STRIPE_BYTES: usize = 1 << 20;

/// What is applied to each output value as it is stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Epilogue {
    /// The convolution plus bias.
    None,
    /// `max(v, slope·v)` (slope below 1).
    LeakyRelu(f32),
}

/// Whether [`conv3x3`] runs on this CPU.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Convolves the channel concatenation of `inputs` (each `[b, c_i, h, w]`, f32 on the CPU)
/// with `weight` `[cout, Σc_i, 3, 3]` and `bias` `[cout]`, stride 1, padding 1, then applies
/// `epi`. `None` where the CPU lacks AVX-512 (use the im2col path).
pub fn conv3x3(
    inputs: &[&Tensor],
    weight: &Tensor,
    bias: &Tensor,
    epi: Epilogue,
) -> Result<Option<Tensor>> {
    if !available() || inputs.is_empty() {
        return Ok(None);
    }
    let (b, _, h, w) = inputs[0].dims4()?;
    let conts = inputs
        .iter()
        .map(|x| x.contiguous())
        .collect::<Result<Vec<_>>>()?;
    let guards: Vec<_> = conts.iter().map(|t| t.storage_and_layout()).collect();
    let mut parts = Vec::with_capacity(inputs.len());
    for ((st, l), x) in guards.iter().zip(&conts) {
        let (xb, c, xh, xw) = x.dims4()?;
        if (xb, xh, xw) != (b, h, w) {
            candle_core::bail!(
                "conv3x3: inputs {:?} and {:?} differ",
                inputs[0].dims(),
                x.dims()
            );
        }
        let candle_core::Storage::Cpu(cs) = &**st else {
            candle_core::bail!("conv3x3: inputs must be on the CPU");
        };
        parts.push((f32_slice(cs, l, "conv3x3", "input")?, c));
    }
    let cin: usize = parts.iter().map(|p| p.1).sum();
    let (cout, wcin, kh, kw) = weight.dims4()?;
    if (wcin, kh, kw) != (cin, 3, 3) || bias.dims1()? != cout {
        candle_core::bail!(
            "conv3x3: {cin} input channels, weight {:?}, bias {:?}",
            weight.dims(),
            bias.dims()
        );
    }
    let packed = pack_weights(&weight.flatten_all()?.to_vec1::<f32>()?, cout, cin);
    let bias = bias.to_vec1::<f32>()?;
    let geo = Geometry::new(b, cin, cout, h, w)?;
    let mut out = vec![0f32; geo.out_len];
    let out_ptr = SendPtr(out.as_mut_ptr());
    let out_ref = &out_ptr;
    let parts = &parts;
    let (packed, bias) = (&packed, &bias);
    (0..b * geo.stripes).into_par_iter().for_each_init(
        || (Vec::<f32>::new(), Vec::<f32>::new()),
        |(stripe, grid), task| {
            let (bi, s) = (task / geo.stripes, task % geo.stripes);
            let r0 = s * geo.rows;
            let nr = geo.rows.min(h - r0);
            fill_stripe(stripe, parts, &geo, bi, r0, nr);
            let cells = (nr * geo.wp).div_ceil(PB) * PB;
            grid.clear();
            grid.resize(geo.cout_p * cells, 0.0);
            // SAFETY: AVX-512 was detected in `available`; the buffers are sized by
            // `Geometry` for these loops (see `compute`).
            unsafe { compute(stripe, grid, packed, bias, &geo, cells, epi) };
            for c in 0..cout {
                for y in 0..nr {
                    let src = &grid[c * cells + y * geo.wp..][..w];
                    // SAFETY: this task owns rows r0..r0+nr of batch bi, every channel.
                    unsafe {
                        let dst = out_ref.0.add(((bi * cout + c) * h + r0 + y) * w);
                        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, w);
                    }
                }
            }
        },
    );
    Tensor::from_vec(out, (b, cout, h, w), inputs[0].device()).map(Some)
}

/// The sizes one call works with, checked.
struct Geometry {
    h: usize,
    w: usize,
    /// Padded row width (w + 2).
    wp: usize,
    cin: usize,
    cout_p: usize,
    /// Output rows per task, and the number of such stripes.
    rows: usize,
    stripes: usize,
    /// Floats per input channel in the stripe buffer (rows + 2 padded rows, plus the reads
    /// past the last pixel block).
    plane: usize,
    out_len: usize,
}

impl Geometry {
    fn new(b: usize, cin: usize, cout: usize, h: usize, w: usize) -> Result<Self> {
        let too_big =
            || candle_core::Error::Msg(format!("conv3x3: {b}x{cin}x{h}x{w} is too large"));
        let wp = w.checked_add(2).ok_or_else(too_big)?;
        let row_bytes = cin
            .checked_mul(wp)
            .and_then(|v| v.checked_mul(4))
            .ok_or_else(too_big)?;
        let rows = (STRIPE_BYTES / row_bytes.max(1)).clamp(1, h.max(1));
        let plane = ((rows * wp).div_ceil(PB) * PB)
            .checked_add(2 * wp + 2 + 16)
            .ok_or_else(too_big)?;
        let out_len = b
            .checked_mul(cout)
            .and_then(|v| v.checked_mul(h))
            .and_then(|v| v.checked_mul(w))
            .ok_or_else(too_big)?;
        cin.checked_mul(plane).ok_or_else(too_big)?;
        Ok(Self {
            h,
            w,
            wp,
            cin,
            cout_p: cout.div_ceil(CB) * CB,
            rows,
            stripes: h.div_ceil(rows),
            plane,
            out_len,
        })
    }
}

/// `[cout, cin, 3, 3]` as `[cout/CB][cin][9][CB]`, zero-padded to whole channel blocks.
fn pack_weights(w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let blocks = cout.div_ceil(CB);
    let mut p = vec![0f32; blocks * cin * 9 * CB];
    for co in 0..cout {
        let (blk, lane) = (co / CB, co % CB);
        for ci in 0..cin {
            for t in 0..9 {
                p[((blk * cin + ci) * 9 + t) * CB + lane] = w[(co * cin + ci) * 9 + t];
            }
        }
    }
    p
}

/// Fills `stripe` (`[cin][plane]`) with input rows `r0 − 1 .. r0 + nr + 1` of batch `bi`,
/// each at padded width with a zero column either side, zeros outside the image.
fn fill_stripe(
    stripe: &mut Vec<f32>,
    parts: &[(&[f32], usize)],
    g: &Geometry,
    bi: usize,
    r0: usize,
    nr: usize,
) {
    stripe.clear();
    stripe.resize(g.cin * g.plane, 0.0);
    let mut ci = 0;
    for (data, c) in parts {
        for k in 0..*c {
            let plane = &data[((bi * c) + k) * g.h * g.w..][..g.h * g.w];
            let dst = &mut stripe[ci * g.plane..][..g.plane];
            for sr in 0..nr + 2 {
                let Some(y) = (r0 + sr).checked_sub(1).filter(|&y| y < g.h) else {
                    continue;
                };
                dst[sr * g.wp + 1..][..g.w].copy_from_slice(&plane[y * g.w..][..g.w]);
            }
            ci += 1;
        }
    }
}

/// The register-blocked loops: for each 96-pixel block, each block of 32 input channels and
/// each block of 4 output channels, `grid[c][j] += Σ w[c][ci][tap] · stripe[ci][j + off(tap)]`,
/// with the bias added first and `epi` applied after the last input block.
///
/// # Safety
/// The CPU has AVX-512F. `stripe` holds `g.cin · g.plane` floats, `grid` `g.cout_p · cells`,
/// `packed` `g.cout_p · g.cin · 9`, `bias` at least `cout` (read for `c < bias.len()`);
/// `cells` is a multiple of `PB` with `cells + 2·wp + 2 + 16 ≤ plane` rounded as in
/// [`Geometry::new`], so every load below stays inside `stripe`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn compute(
    stripe: &[f32],
    grid: &mut [f32],
    packed: &[f32],
    bias: &[f32],
    g: &Geometry,
    cells: usize,
    epi: Epilogue,
) {
    use std::arch::x86_64::*;
    // SAFETY: every pointer below indexes `stripe`, `grid` and `packed` within the sizes the
    // caller vouches for (see # Safety); AVX-512F is present.
    unsafe {
        let offs: [usize; 9] = std::array::from_fn(|t| (t / 3) * g.wp + t % 3);
        let sp = stripe.as_ptr();
        let gp = grid.as_mut_ptr();
        for j0 in (0..cells).step_by(PB) {
            for c0 in (0..g.cin).step_by(CI_BLOCK) {
                let c1 = (c0 + CI_BLOCK).min(g.cin);
                let last = c1 == g.cin;
                for cb in 0..g.cout_p / CB {
                    let mut acc = [[_mm512_setzero_ps(); PV]; CB];
                    for (l, row) in acc.iter_mut().enumerate() {
                        let o = gp.add((cb * CB + l) * cells + j0);
                        for (v, a) in row.iter_mut().enumerate() {
                            *a = if c0 == 0 {
                                _mm512_set1_ps(bias.get(cb * CB + l).copied().unwrap_or(0.0))
                            } else {
                                _mm512_loadu_ps(o.add(16 * v))
                            };
                        }
                    }
                    for ci in c0..c1 {
                        let xrow = sp.add(ci * g.plane + j0);
                        let wrow = packed.as_ptr().add((cb * g.cin + ci) * 9 * CB);
                        for (t, &off) in offs.iter().enumerate() {
                            let x = xrow.add(off);
                            let xs: [__m512; PV] =
                                std::array::from_fn(|v| _mm512_loadu_ps(x.add(16 * v)));
                            for (l, row) in acc.iter_mut().enumerate() {
                                let wv = _mm512_set1_ps(*wrow.add(t * CB + l));
                                for (a, xv) in row.iter_mut().zip(&xs) {
                                    *a = _mm512_fmadd_ps(wv, *xv, *a);
                                }
                            }
                        }
                    }
                    for (l, row) in acc.iter().enumerate() {
                        let o = gp.add((cb * CB + l) * cells + j0);
                        for (v, a) in row.iter().enumerate() {
                            let val = match epi {
                                Epilogue::LeakyRelu(s) if last => {
                                    _mm512_max_ps(*a, _mm512_mul_ps(*a, _mm512_set1_ps(s)))
                                }
                                _ => *a,
                            };
                            _mm512_storeu_ps(o.add(16 * v), val);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn compute(
    _: &[f32],
    _: &mut [f32],
    _: &[f32],
    _: &[f32],
    _: &Geometry,
    _: usize,
    _: Epilogue,
) {
    unreachable!("conv3x3 runs only where `available` says so")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn check(parts: &[usize], cout: usize, (h, w): (usize, usize), epi: Epilogue) {
        if !available() {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        }
        let dev = Device::Cpu;
        let xs: Vec<Tensor> = parts
            .iter()
            .map(|&c| Tensor::randn(0f32, 1.0, (2, c, h, w), &dev).unwrap())
            .collect();
        let cin: usize = parts.iter().sum();
        let wt = Tensor::randn(0f32, 0.2, (cout, cin, 3, 3), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
        let refs: Vec<&Tensor> = xs.iter().collect();
        let got = conv3x3(&refs, &wt, &bias, epi).unwrap().unwrap();
        let mut want = Tensor::cat(&refs, 1)
            .unwrap()
            .conv2d(&wt, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, cout, 1, 1)).unwrap())
            .unwrap();
        if let Epilogue::LeakyRelu(s) = epi {
            want = want.maximum(&(&want * s as f64).unwrap()).unwrap();
        }
        assert_eq!(got.dims(), want.dims());
        let err = crate::kernels::max_abs_diff(&got, &want);
        assert!(err < 1e-4, "{parts:?}->{cout} {h}x{w}: {err}");
    }

    #[test]
    fn matches_candle_conv_on_odd_shapes() {
        check(&[5], 3, (7, 9), Epilogue::None);
        check(&[64, 32, 32], 32, (19, 33), Epilogue::LeakyRelu(0.2));
        check(&[40], 37, (1, 130), Epilogue::None);
        check(&[3], 64, (64, 5), Epilogue::LeakyRelu(0.2));
    }

    #[test]
    fn tall_images_span_several_stripes() {
        // 192 channels at width 300: a few rows per 1 MiB stripe, so many stripes
        check(&[96, 96], 8, (41, 300), Epilogue::None);
    }
}
