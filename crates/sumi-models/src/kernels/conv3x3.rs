//! Direct 3×3 convolution (stride 1, padding 1) of f32 NCHW activations on CPUs with
//! AVX-512, where it beats the im2col GEMM: narrow layers (the upscalers' 32- and 64-channel
//! convolutions, TAESD, an image's 3 output channels) and wide images (the VAE's top levels).
//!
//! Each task takes a stripe of output rows: it copies the rows it reads, with a zero border, into a
//! small buffer (from several input tensors at once, so a channel concatenation is never formed;
//! optionally upsampled 2× by nearest neighbour on the way, so the upsampled tensor is never formed
//! either). It then computes register blocks of output-channel vectors × pixels (4 × 6 where the
//! outputs come in blocks of 64, 2 × 12, or 1 × 24 for at most 16 outputs): for each input channel
//! and tap, the block's weight vectors and one broadcast input value per pixel make 24 fused
//! multiply-adds, every load a whole contiguous vector or a scalar (no shifted vector loads). Input
//! channels go in chunks whose weights (18 KiB) stay in L1 while the chunk sweeps the stripe; the
//! partial sums live in a pixel-major buffer, transposed 16 × 16 in registers into the NCHW output
//! (with an optional LeakyReLU) at the end. The output grid is the padded width (two columns per
//! row are computed and dropped), so every tap is a plain shifted read. Without AVX-512 the caller
//! falls back to the im2col path.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::{f32_slice, SendPtr};

/// Register blocks: 16-lane output-channel vectors × pixels. 4 × 6 (10 loads per 24
/// multiply-adds) where the outputs come in whole blocks of 64, 1 × 24 for at most 16
/// outputs (an image's 3 channels: the lanes past them are wasted, but the im2col path would
/// copy every input nine times for them), else 2 × 12.
const WIDE: (usize, usize) = (4, 6);
const NARROW: (usize, usize) = (2, 12);
const SINGLE: (usize, usize) = (1, 24);
/// The most pixels per register block (the stripe's padding is sized for it).
const PB: usize = 24;
/// Bytes of the weights one channel block uses for one chunk of input channels (they stay in
/// L1 while the chunk sweeps the stripe): 8 input channels at 64 outputs, 16 at 32, 32 at 16.
const CHUNK_WEIGHT_BYTES: usize = 18 * 1024;
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

/// Whether [`conv3x3_upsampled`] runs on this CPU.
pub fn available() -> bool {
    super::avx512()
}

/// Convolves the channel concatenation of `inputs` (each `[b, c_i, h, w]`, f32 on the CPU),
/// upsampled `up`× (1 or 2) by nearest neighbour without forming the upsampled tensor, with
/// `weight` `[cout, Σc_i, 3, 3]` and `bias` `[cout]`, stride 1, padding 1, then applies `epi`.
/// `None` where the CPU lacks AVX-512 (use the im2col path).
pub fn conv3x3_upsampled(
    inputs: &[&Tensor],
    weight: &Tensor,
    bias: &Tensor,
    epi: Epilogue,
    up: usize,
) -> Result<Option<Tensor>> {
    let (cout, wcin, kh, kw) = weight.dims4()?;
    if !available() || inputs.is_empty() || cout == 0 || !(1..=2).contains(&up) {
        return Ok(None);
    }
    let (b, _, ih, iw) = inputs[0].dims4()?;
    let conts = inputs
        .iter()
        .map(|x| x.contiguous())
        .collect::<Result<Vec<_>>>()?;
    let guards: Vec<_> = conts.iter().map(|t| t.storage_and_layout()).collect();
    let mut parts = Vec::with_capacity(inputs.len());
    for ((st, l), x) in guards.iter().zip(&conts) {
        let (xb, c, xh, xw) = x.dims4()?;
        if (xb, xh, xw) != (b, ih, iw) {
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
    if (wcin, kh, kw) != (cin, 3, 3) || bias.dims1()? != cout {
        candle_core::bail!(
            "conv3x3: {cin} input channels, weight {:?}, bias {:?}",
            weight.dims(),
            bias.dims()
        );
    }
    let geo = Geometry::new(b, cin, cout, (ih, iw), up)?;
    let packed = pack_weights(&weight.flatten_all()?.to_vec1::<f32>()?, cout, cin, geo.cb);
    let mut bias = bias.to_vec1::<f32>()?;
    bias.resize(geo.cout_p, 0.0);
    // not zeroed: the tasks below write every element (each stripe's rows of every channel)
    let mut out = Vec::<f32>::with_capacity(geo.out_len);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let out_ref = &out_ptr;
    let parts = &parts;
    let (packed, bias, geo) = (&packed, &bias, &geo);
    (0..b * geo.stripes).into_par_iter().for_each_init(
        || (Vec::<f32>::new(), Vec::<f32>::new()),
        |(stripe, grid), task| {
            let (bi, s) = (task / geo.stripes, task % geo.stripes);
            let r0 = s * geo.rows;
            let nr = geo.rows.min(geo.h - r0);
            fill_stripe(stripe, parts, geo, bi, r0, nr);
            let cells = (nr * geo.wp).div_ceil(geo.pb) * geo.pb;
            grid.resize(geo.cout_p * cells, 0.0);
            // SAFETY: AVX-512 was detected in `available`; the buffers are sized by
            // `Geometry` for these loops (see `compute`).
            unsafe {
                match geo.cb / 16 {
                    4 => compute::<4, 6>(stripe, grid, packed, bias, geo, cells),
                    2 => compute::<2, 12>(stripe, grid, packed, bias, geo, cells),
                    _ => compute::<1, 24>(stripe, grid, packed, bias, geo, cells),
                }
            };
            // SAFETY: this task owns rows r0..r0+nr of batch bi, every channel.
            let dst = unsafe { out_ref.0.add(bi * cout * geo.h * geo.w + r0 * geo.w) };
            store(grid, dst, geo, cells, nr, epi);
        },
    );
    // SAFETY: the stripes cover rows 0..h of every batch, and `store` wrote every channel's
    // pixels of those rows; the capacity is `out_len`.
    unsafe { out.set_len(geo.out_len) };
    Tensor::from_vec(out, (b, cout, geo.h, geo.w), inputs[0].device()).map(Some)
}

/// The sizes one call works with, checked.
struct Geometry {
    /// Input size (before upsampling) and the upsampling factor.
    ih: usize,
    iw: usize,
    up: usize,
    /// Output size.
    h: usize,
    w: usize,
    /// Padded row width (w + 2).
    wp: usize,
    cin: usize,
    cout: usize,
    /// Output channels per register block (16 × vectors), pixels per register block.
    cb: usize,
    pb: usize,
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
    fn new(b: usize, cin: usize, cout: usize, (ih, iw): (usize, usize), up: usize) -> Result<Self> {
        let too_big =
            || candle_core::Error::Msg(format!("conv3x3: {b}x{cin}x{ih}x{iw} is too large"));
        let h = ih.checked_mul(up).ok_or_else(too_big)?;
        let w = iw.checked_mul(up).ok_or_else(too_big)?;
        let wp = w.checked_add(2).ok_or_else(too_big)?;
        let row_bytes = cin
            .checked_mul(wp)
            .and_then(|v| v.checked_mul(4))
            .ok_or_else(too_big)?;
        let rows = (STRIPE_BYTES / row_bytes.max(1)).clamp(1, h.max(1));
        let plane = ((rows * wp).div_ceil(PB) * PB)
            .checked_add(2 * wp + 2)
            .ok_or_else(too_big)?;
        let out_len = b
            .checked_mul(cout)
            .and_then(|v| v.checked_mul(h))
            .and_then(|v| v.checked_mul(w))
            .ok_or_else(too_big)?;
        cin.checked_mul(plane).ok_or_else(too_big)?;
        let (cv, pb) = if cout.is_multiple_of(WIDE.0 * 16) {
            WIDE
        } else if cout <= 16 {
            SINGLE
        } else {
            NARROW
        };
        let cb = cv * 16;
        let cout_p = cout.div_ceil(cb) * cb;
        cout_p.checked_mul(rows * wp + PB).ok_or_else(too_big)?;
        Ok(Self {
            ih,
            iw,
            up,
            h,
            w,
            wp,
            cin,
            cout,
            cb,
            pb,
            cout_p,
            rows,
            stripes: h.div_ceil(rows),
            plane,
            out_len,
        })
    }
}

/// `[cout, cin, 3, 3]` as `[cout/cb][cin][9][cb]`, zero-padded to whole channel blocks.
fn pack_weights(w: &[f32], cout: usize, cin: usize, cb: usize) -> Vec<f32> {
    let blocks = cout.div_ceil(cb);
    let mut p = vec![0f32; blocks * cin * 9 * cb];
    for co in 0..cout {
        let (blk, lane) = (co / cb, co % cb);
        for ci in 0..cin {
            for t in 0..9 {
                p[((blk * cin + ci) * 9 + t) * cb + lane] = w[(co * cin + ci) * 9 + t];
            }
        }
    }
    p
}

/// Fills `stripe` (`[cin][plane]`) with the (upsampled) input rows `r0 − 1 .. r0 + nr + 1` of
/// batch `bi`, each at padded width with a zero column either side, zeros outside the image.
/// The floats past those rows are left as they are: they only reach output cells that are
/// dropped.
fn fill_stripe(
    stripe: &mut Vec<f32>,
    parts: &[(&[f32], usize)],
    g: &Geometry,
    bi: usize,
    r0: usize,
    nr: usize,
) {
    stripe.resize(g.cin * g.plane, 0.0);
    let mut ci = 0;
    for (data, c) in parts {
        for k in 0..*c {
            let plane = &data[((bi * c) + k) * g.ih * g.iw..][..g.ih * g.iw];
            let dst = &mut stripe[ci * g.plane..][..g.plane];
            for (sr, row) in dst.chunks_exact_mut(g.wp).take(nr + 2).enumerate() {
                let Some(y) = (r0 + sr).checked_sub(1).filter(|&y| y < g.h) else {
                    row.fill(0.0);
                    continue;
                };
                let src = &plane[(y / g.up) * g.iw..][..g.iw];
                row[0] = 0.0;
                row[g.w + 1] = 0.0;
                let out = &mut row[1..=g.w];
                if g.up == 1 {
                    out.copy_from_slice(src);
                } else {
                    upsample2(src, out);
                }
            }
            ci += 1;
        }
    }
}

/// `out[i] = src[i / 2]`, eight source values at a time where it can.
fn upsample2(src: &[f32], out: &mut [f32]) {
    let mut oc = out.chunks_exact_mut(16);
    let mut sc = src.chunks_exact(8);
    for (o, s) in (&mut oc).zip(&mut sc) {
        for (i, v) in o.iter_mut().enumerate() {
            *v = s[i / 2];
        }
    }
    for (o, &v) in oc.into_remainder().chunks_mut(2).zip(sc.remainder()) {
        o.fill(v);
    }
}

/// The register-blocked loops: for each chunk of 16 input channels, each block of 32 output
/// channels and each block of 12 pixels,
/// `grid[cb][j][c] += Σ w[c][ci][tap] · stripe[ci][j + off(tap)]`, the bias taken as the
/// starting value in the first chunk.
///
/// # Safety
/// The CPU has AVX-512F. `stripe` holds `g.cin · g.plane` floats, `grid` `g.cout_p · cells`,
/// `packed` `g.cout_p · g.cin · 9`, `bias` `g.cout_p`; `cells` is a multiple of `PB` with
/// `cells + 2·wp + 2 ≤ plane` as in [`Geometry::new`], so every read below stays inside
/// `stripe`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn compute<const CV: usize, const PB: usize>(
    stripe: &[f32],
    grid: &mut [f32],
    packed: &[f32],
    bias: &[f32],
    g: &Geometry,
    cells: usize,
) {
    use std::arch::x86_64::*;
    let cb = CV * 16;
    // SAFETY: every pointer below indexes `stripe`, `grid`, `packed` and `bias` within the
    // sizes the caller vouches for (see # Safety); AVX-512F is present.
    unsafe {
        let offs: [usize; 9] = std::array::from_fn(|t| (t / 3) * g.wp + t % 3);
        let sp = stripe.as_ptr();
        let gp = grid.as_mut_ptr();
        let chunk = CHUNK_WEIGHT_BYTES / (9 * cb * 4);
        for c0 in (0..g.cin).step_by(chunk) {
            let c1 = (c0 + chunk).min(g.cin);
            for blk in 0..g.cout_p / cb {
                let wchunk = packed.as_ptr().add((blk * g.cin + c0) * 9 * cb);
                let gblock = gp.add(blk * cells * cb);
                for j0 in (0..cells).step_by(PB) {
                    let o = gblock.add(j0 * cb);
                    let mut acc: [[__m512; CV]; PB] = std::array::from_fn(|p| {
                        std::array::from_fn(|v| {
                            if c0 == 0 {
                                _mm512_loadu_ps(bias.as_ptr().add(blk * cb + 16 * v))
                            } else {
                                _mm512_loadu_ps(o.add(p * cb + 16 * v))
                            }
                        })
                    });
                    for ci in c0..c1 {
                        let xrow = sp.add(ci * g.plane + j0);
                        let wrow = wchunk.add((ci - c0) * 9 * cb);
                        for (t, &off) in offs.iter().enumerate() {
                            let x = xrow.add(off);
                            let ws: [__m512; CV] =
                                std::array::from_fn(|v| _mm512_loadu_ps(wrow.add(t * cb + 16 * v)));
                            for (p, row) in acc.iter_mut().enumerate() {
                                let xv = _mm512_set1_ps(*x.add(p));
                                for (a, wv) in row.iter_mut().zip(&ws) {
                                    *a = _mm512_fmadd_ps(xv, *wv, *a);
                                }
                            }
                        }
                    }
                    for (p, row) in acc.iter().enumerate() {
                        for (v, a) in row.iter().enumerate() {
                            _mm512_storeu_ps(o.add(p * cb + 16 * v), *a);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn compute<const CV: usize, const PB: usize>(
    _: &[f32],
    _: &mut [f32],
    _: &[f32],
    _: &[f32],
    _: &Geometry,
    _: usize,
) {
    unreachable!("conv3x3 runs only where `available` says so")
}

/// Writes the pixel-major `grid` (`[cout_p/cb][cells][cb]`) of `nr` rows into the NCHW output
/// at `dst` (row `r0` of channel 0 of this batch), applying `epi`: 16 pixels × 16 channels
/// at a time, transposed in registers.
fn store(grid: &[f32], dst: *mut f32, g: &Geometry, cells: usize, nr: usize, epi: Epilogue) {
    // SAFETY: `store` is only called where `available` found AVX-512F.
    unsafe { store_avx512(grid, dst, g, cells, nr, epi) }
}

/// [`store`]'s loops.
///
/// # Safety
/// The CPU has AVX-512F; `grid` holds `g.cout_p · cells` floats with `cells ≥ nr · wp`; the
/// caller's task owns rows `r0 .. r0 + nr` of every output channel, `dst` pointing at row
/// `r0` of channel 0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn store_avx512(
    grid: &[f32],
    dst: *mut f32,
    g: &Geometry,
    cells: usize,
    nr: usize,
    epi: Epilogue,
) {
    use std::arch::x86_64::*;
    let hw = g.h * g.w;
    let slope = match epi {
        Epilogue::LeakyRelu(s) => Some(_mm512_set1_ps(s)),
        Epilogue::None => None,
    };
    for blk in 0..g.cout_p / g.cb {
        let block = &grid[blk * cells * g.cb..][..cells * g.cb];
        for y in 0..nr {
            for x0 in (0..g.w).step_by(16) {
                let n = 16.min(g.w - x0);
                let mask: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
                for v in 0..g.cb / 16 {
                    let c0 = blk * g.cb + v * 16;
                    if c0 >= g.cout {
                        break;
                    }
                    let rows: [__m512; 16] = std::array::from_fn(|i| {
                        if i < n {
                            let px = &block[(y * g.wp + x0 + i) * g.cb + v * 16..][..16];
                            // SAFETY: `px` is 16 floats of `grid`.
                            unsafe { _mm512_loadu_ps(px.as_ptr()) }
                        } else {
                            _mm512_setzero_ps()
                        }
                    });
                    let cols = transpose16(rows);
                    for (c, col) in cols.iter().enumerate().take(g.cout - c0) {
                        let val = match slope {
                            Some(s) => _mm512_max_ps(*col, _mm512_mul_ps(*col, s)),
                            None => *col,
                        };
                        // SAFETY: channel c0 + c < cout, pixels x0 .. x0 + n of row y, inside
                        // the caller's region (see # Safety).
                        unsafe {
                            let o = dst.add((c0 + c) * hw + y * g.w + x0);
                            _mm512_mask_storeu_ps(o, mask, val);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn store_avx512(_: &[f32], _: *mut f32, _: &Geometry, _: usize, _: usize, _: Epilogue) {
    unreachable!("conv3x3 runs only where `available` says so")
}

/// The 16×16 transpose of `r` (row i, lane j → row j, lane i).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose16(r: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    // pairs of rows interleaved, then pairs of pairs, then 128-bit lanes twice
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let base = i & !3;
        let (a, b) = (t[base + ((i >> 1) & 1)], t[base + 2 + ((i >> 1) & 1)]);
        if i % 2 == 0 {
            _mm512_shuffle_ps::<0x44>(a, b)
        } else {
            _mm512_shuffle_ps::<0xEE>(a, b)
        }
    });
    let v: [__m512; 16] = std::array::from_fn(|i| {
        let base = i & !7;
        let (a, b) = (u[base + (i & 3)], u[base + 4 + (i & 3)]);
        if (i >> 2) & 1 == 0 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xDD>(a, b)
        }
    });
    std::array::from_fn(|i| {
        let (a, b) = (v[i & 7], v[8 + (i & 7)]);
        if i < 8 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xDD>(a, b)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn check(parts: &[usize], cout: usize, (h, w): (usize, usize), epi: Epilogue, up: usize) {
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
        let got = conv3x3_upsampled(&refs, &wt, &bias, epi, up).unwrap();
        let got = got.unwrap();
        let mut want = Tensor::cat(&refs, 1)
            .unwrap()
            .upsample_nearest2d(h * up, w * up)
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
        assert!(err < 1e-4, "{parts:?}->{cout} {h}x{w} up {up}: {err}");
    }

    #[test]
    fn matches_candle_conv_on_odd_shapes() {
        check(&[5], 3, (7, 9), Epilogue::None, 1);
        check(&[40], 3, (6, 30), Epilogue::LeakyRelu(0.2), 1); // 1 × 24, several chunks
        check(&[64, 32, 32], 32, (19, 33), Epilogue::LeakyRelu(0.2), 1);
        check(&[40], 37, (1, 130), Epilogue::None, 1);
        check(&[3], 64, (64, 5), Epilogue::LeakyRelu(0.2), 1);
        check(&[17], 48, (5, 3), Epilogue::None, 1);
    }

    #[test]
    fn folds_a_nearest_upsample() {
        check(&[20], 32, (7, 5), Epilogue::None, 2);
        check(&[16, 3], 64, (1, 9), Epilogue::LeakyRelu(0.2), 2);
    }

    #[test]
    fn transposes_16_by_16() {
        if !available() {
            return;
        }
        use std::arch::x86_64::*;
        let m: Vec<f32> = (0..256).map(|v| v as f32).collect();
        // SAFETY: AVX-512F is present; each load reads 16 of `m`'s 256 floats.
        let cols = unsafe {
            transpose16(std::array::from_fn(|i| {
                _mm512_loadu_ps(m[i * 16..].as_ptr())
            }))
        };
        for (j, col) in cols.iter().enumerate() {
            let mut out = [0f32; 16];
            // SAFETY: stores 16 floats into `out`.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), *col) };
            let want: Vec<f32> = (0..16).map(|i| (i * 16 + j) as f32).collect();
            assert_eq!(out.to_vec(), want, "column {j}");
        }
    }

    #[test]
    fn tall_images_span_several_stripes() {
        // 192 channels at width 300: a few rows per 1 MiB stripe, so many stripes
        check(&[96, 96], 40, (41, 300), Epilogue::None, 1);
    }
}
