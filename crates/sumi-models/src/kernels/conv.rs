//! 2-D convolution for f32 NCHW tensors on the CPU: output tiles of whole rows, each built as
//! one GEMM (`weight [c_out, c_in·k·k] × columns [c_in·k·k, pixels]`) over a small im2col
//! buffer, the bias written first and accumulated into. Tiles run on rayon's pool; the
//! columns of a tile stay a few MiB, so the full im2col matrix is never formed.
//!
//! With AVX-512, layers of 640 outputs and more at 16² and larger write their columns straight
//! into the panels of [`super::gemm_f32`], which reads the weights in place (the gemm crate
//! repacks all of them for every tile: 59 MB per tile at 1280 channels); tiles there are whole
//! rows across batch items, and the output channels are split among tasks when there are fewer
//! tiles than threads. With AVX2 only, that path measured behind the gemm crate's on every
//! U-Net layer (3×3 1280→1280 at 16²: 86 vs 133 GFLOP/s, 2 threads), so it stays off there;
//! Winograd runs on both (its products over [`super::gemm_f32`]); with AVX2 only it takes the
//! 1280-channel layers at 16² and 8² too, by output channels ([`super::winograd_small`]).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{f32_slice, gemm_f32, winograd, winograd_small, SendPtr, Unfilled};

/// Bytes of im2col columns one task builds at a time.
const COLUMN_BLOCK_BYTES: usize = 4 << 20;
/// Where Winograd's F(2×2, 3×3) runs (AVX-512 or AVX2, 3×3 stride 1 padding 1): from this many
/// inputs, up to this many outputs or from this many pixels per picture (its weight
/// transform, made at each call, stays small next to the products there; the U-Net's 1280
/// channels at 16² and 8² stay with the GEMMs, see `docs/perf.md`).
const WINOGRAD_MIN_CIN: usize = 64;
/// With AVX2 only, where the vector transforms do not apply (sizes whose tile rows are not
/// whole groups of 16), from this many inputs: with the scalar transforms the VAE's 128
/// channels at 512² ran 79 GFLOP/s by Winograd against the gemm crate's 103, 256 channels 124
/// vs 108 (direct-convolution flops, 2 threads); with the vector ones 158–170 vs 97–116.
const WINOGRAD_MIN_CIN_AVX2: usize = 256;
const WINOGRAD_MAX_COUT: usize = 640;
const WINOGRAD_ANY_PIXELS: usize = 1024;
/// With AVX2 only, the wider layers at fewer pixels than [`WINOGRAD_ANY_PIXELS`] go to
/// [`winograd_small`] (tasks by output channels) from this many pixels per picture: 1280→1280
/// at 16² measured 128–153 direct-equivalent GFLOP/s there against the gemm crate's 88–95,
/// 2560→1280 121–131 vs 80–86 (2 threads, interleaved medians of 5, `conv_paths_speed`). At
/// 8² the probe had them even (1280→1280 78–101 vs 80–113), but inside the U-Net forward
/// (`SUMI_PROFILE`, two interleaved pairs) Winograd led: 1280→1280 132 and 108 vs 105 and 93,
/// 2560→1280 112 and 97 vs 105 and 70.
const WINOGRAD_SMALL_MIN_PIXELS: usize = 64;
/// Where the packed path runs: layers at least this wide, with at least this many output
/// pixels per image (measured per layer: the U-Net's 640- and 1280-channel layers at 32² and
/// 16²; the gemm crate stays ahead on 320- and 512-channel layers and at 8², see
/// `docs/perf.md`).
const PACKED_MIN_COUT: usize = 640;
const PACKED_MIN_PIXELS: usize = 256;
/// Output pixels per task of the packed path (AVX-512): each task reads every weight once
/// per row block of the GEMM, so fewer pixels make it bound by memory.
const TASK_PIXELS: usize = 512;

struct Conv {
    stride: usize,
    padding: usize,
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "sumi-conv2d"
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
        let (x, w, bias) = (
            f32_slice(s1, l1, "conv2d", "input")?,
            f32_slice(s2, l2, "conv2d", "weight")?,
            f32_slice(s3, l3, "conv2d", "bias")?,
        );
        let (b, cin, h, wd) = l1.shape().dims4()?;
        let (cout, wcin, kh, kw) = l2.shape().dims4()?;
        if wcin != cin || kh != kw || bias.len() != cout {
            return Err(candle_core::Error::Msg(format!(
                "conv2d: input {:?}, weight {:?}, bias {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            )));
        }
        let (s, p, k) = (self.stride, self.padding, kh);
        let oh = (h + 2 * p).checked_sub(k).map(|v| v / s + 1).unwrap_or(0);
        let ow = (wd + 2 * p).checked_sub(k).map(|v| v / s + 1).unwrap_or(0);
        let kk = cin * k * k;
        let hw = oh * ow;
        let min_cin = match super::avx512() || winograd::vector_shapes(oh, ow) {
            true => WINOGRAD_MIN_CIN,
            false => WINOGRAD_MIN_CIN_AVX2,
        };
        let winograd_shape = k == 3 && s == 1 && p == 1;
        if winograd_shape
            && !super::avx512()
            && cin >= WINOGRAD_MIN_CIN_AVX2
            && cout > WINOGRAD_MAX_COUT
            && (WINOGRAD_SMALL_MIN_PIXELS..WINOGRAD_ANY_PIXELS).contains(&hw)
        {
            if let Some(out) = winograd_small::conv3x3(x, w, bias, (b, cin, h, wd), cout) {
                return Ok((CpuStorage::F32(out), Shape::from((b, cout, oh, ow))));
            }
        }
        if winograd_shape
            && cin >= min_cin
            && (cout <= WINOGRAD_MAX_COUT || hw >= WINOGRAD_ANY_PIXELS)
        {
            if let Some(out) = winograd::conv3x3(x, w, bias, (b, cin, h, wd), cout) {
                return Ok((CpuStorage::F32(out), Shape::from((b, cout, oh, ow))));
            }
        }
        if super::avx512() && cout >= PACKED_MIN_COUT && hw >= PACKED_MIN_PIXELS {
            let out = packed_conv(x, w, bias, (b, cin, h, wd), (cout, k, s, p), (oh, ow));
            return Ok((CpuStorage::F32(out), Shape::from((b, cout, oh, ow))));
        }
        let rows = (COLUMN_BLOCK_BYTES / 4 / (kk * ow).max(1)).clamp(1, oh.max(1));
        let blocks = oh.div_ceil(rows);
        let mut out = vec![0f32; b * cout * hw];
        let out_ptr = SendPtr(out.as_mut_ptr());
        let out_ref = &out_ptr;
        let pointwise = k == 1 && s == 1 && p == 0;
        (0..b * blocks)
            .into_par_iter()
            .for_each_init(Vec::<f32>::new, |cols, task| {
                let (bi, blk) = (task / blocks, task % blocks);
                let r0 = blk * rows;
                let nr = rows.min(oh - r0);
                let npx = nr * ow;
                let xb = &x[bi * cin * h * wd..(bi + 1) * cin * h * wd];
                // SAFETY: this task owns output pixels r0·ow .. (r0+nr)·ow of every channel of
                // batch bi; all pointers below stay inside their buffers.
                let dst = unsafe { out_ref.0.add(bi * cout * hw + r0 * ow) };
                for (c, &bv) in bias.iter().enumerate() {
                    // SAFETY: channel c's npx pixels from r0·ow lie in this task's region.
                    let row = unsafe { std::slice::from_raw_parts_mut(dst.add(c * hw), npx) };
                    row.fill(bv);
                }
                let (rhs, rhs_rs) = if pointwise {
                    (xb[r0 * ow..].as_ptr(), hw as isize)
                } else {
                    cols.resize(kk * npx, 0.0);
                    im2col(xb, cols, (cin, h, wd), (k, s, p), (r0, nr, ow));
                    (cols.as_ptr(), npx as isize)
                };
                // SAFETY: C is this task's cout×npx block (row stride hw), A the cout×kk
                // weights, B kk×npx columns (from `cols` or, pointwise, the input rows r0..).
                unsafe {
                    gemm::gemm(
                        cout,
                        npx,
                        kk,
                        dst,
                        1,
                        hw as isize,
                        true,
                        w.as_ptr(),
                        1,
                        kk as isize,
                        rhs,
                        1,
                        rhs_rs,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, cout, oh, ow))))
    }
}

/// Fills `cols` (`[cin·k·k, nr·ow]`) for output rows `r0 .. r0 + nr`.
fn im2col(
    x: &[f32],
    cols: &mut [f32],
    (cin, h, w): (usize, usize, usize),
    (k, s, p): (usize, usize, usize),
    (r0, nr, ow): (usize, usize, usize),
) {
    let npx = nr * ow;
    for ci in 0..cin {
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut cols[((ci * k + ky) * k + kx) * npx..][..npx];
                for (j, oy) in (r0..r0 + nr).enumerate() {
                    let out = &mut row[j * ow..(j + 1) * ow];
                    fill_row(plane, out, (h, w), (s, p), (oy, ky, kx));
                }
            }
        }
    }
}

/// The AVX-512 path: tasks of whole output rows (across batch items) of about
/// [`TASK_PIXELS`] pixels, their im2col columns written as the packed GEMM's panels, the
/// product into a panel-major buffer, then copied into the NCHW output. Where there are fewer
/// row blocks than threads, the output channels are split among tasks too.
fn packed_conv(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    (b, cin, h, wd): (usize, usize, usize, usize),
    (cout, k, s, p): (usize, usize, usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    const NR: usize = gemm_f32::NR;
    let (kk, hw) = (cin * k * k, oh * ow);
    let rows_all = b * oh;
    let rows = TASK_PIXELS.div_ceil(ow.max(1)).clamp(1, rows_all.max(1));
    let blocks = rows_all.div_ceil(rows);
    let threads = rayon::current_num_threads().max(1);
    let splits = if blocks < threads {
        threads.div_ceil(blocks).min(cout.div_ceil(6)).max(1)
    } else {
        1
    };
    let mchunk = cout.div_ceil(splits).div_ceil(6) * 6;
    let splits = cout.div_ceil(mchunk.max(1)).max(1);
    let mut out = Unfilled::new(b * cout * hw);
    let out_ptr = out.ptr();
    let out_ref = &out_ptr;
    (0..blocks * splits).into_par_iter().for_each_init(
        || (Vec::<f32>::new(), Vec::<f32>::new(), Vec::<f32>::new()),
        |(cols, line, cbuf), task| {
            let (blk, sp) = (task / splits, task % splits);
            let g0 = blk * rows;
            let nr = rows.min(rows_all - g0);
            let npx = nr * ow;
            let (m0, m1) = (sp * mchunk, ((sp + 1) * mchunk).min(cout));
            let m = m1 - m0;
            let panels = npx.div_ceil(NR);
            cols.resize(panels * NR * kk, 0.0);
            im2col_packed(x, cols, line, (cin, h, wd), (k, s, p), (g0, nr, oh, ow));
            cbuf.resize(panels * NR * m, 0.0);
            let d = gemm_f32::Dims {
                m,
                n: npx,
                k: kk,
                lda: kk,
                ldc: NR,
                cps: m * NR,
            };
            // SAFETY: AVX-512 is present (`available`); A is rows m0..m1 of the cout×kk
            // weights, the panels and `cbuf` were sized above.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                gemm_f32::gemm_packed(
                    d,
                    w.as_ptr().add(m0 * kk),
                    cols.as_ptr(),
                    cbuf.as_mut_ptr(),
                    gemm_f32::Init::Rows(&bias[m0..m1]),
                );
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = d;
            for (j, g) in (g0..g0 + nr).enumerate() {
                let (bi, oy) = (g / oh, g % oh);
                for c in m0..m1 {
                    let q = j * ow;
                    // SAFETY: row oy of channel c of batch bi belongs to this task alone
                    // (its rows, its channels); it lies inside the b·cout·hw output.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            out_ref.0.add((bi * cout + c) * hw + oy * ow),
                            ow,
                        )
                    };
                    panel_pieces(q, ow, |panel, lane, at, take| {
                        let src = &cbuf[(panel * m + c - m0) * NR + lane..][..take];
                        dst[at..at + take].copy_from_slice(src);
                    });
                }
            }
        },
    );
    // SAFETY: the tasks cover every output row of every batch item, every channel.
    unsafe { out.filled() }
}

/// Fills `cols` as the packed GEMM's panels (`[panel][cin·k·k][NR]`, pixel `q` of the block
/// in panel `q / NR`, lane `q % NR`) for the output rows `g0 .. g0 + nr` counted across batch
/// items (row `g` is row `g % oh` of item `g / oh`); `line` is scratch for rows that straddle
/// two panels. Lanes past the last pixel are left as they are.
fn im2col_packed(
    x: &[f32],
    cols: &mut [f32],
    line: &mut Vec<f32>,
    (cin, h, w): (usize, usize, usize),
    (k, s, p): (usize, usize, usize),
    (g0, nr, oh, ow): (usize, usize, usize, usize),
) {
    const NR: usize = gemm_f32::NR;
    let kk = cin * k * k;
    line.resize(ow, 0.0);
    for ci in 0..cin {
        for ky in 0..k {
            for kx in 0..k {
                let r = (ci * k + ky) * k + kx;
                for (j, g) in (g0..g0 + nr).enumerate() {
                    let (bi, oy) = (g / oh, g % oh);
                    let plane = &x[(bi * cin + ci) * h * w..][..h * w];
                    let q = j * ow;
                    if q % NR + ow <= NR {
                        let out = &mut cols[((q / NR) * kk + r) * NR + q % NR..][..ow];
                        fill_row(plane, out, (h, w), (s, p), (oy, ky, kx));
                        continue;
                    }
                    fill_row(plane, line, (h, w), (s, p), (oy, ky, kx));
                    panel_pieces(q, ow, |panel, lane, at, take| {
                        cols[(panel * kk + r) * NR + lane..][..take]
                            .copy_from_slice(&line[at..at + take]);
                    });
                }
            }
        }
    }
}

/// Splits pixels `q .. q + len` of a block at the GEMM's panel boundaries: `f(panel, lane,
/// offset from q, count)` for each piece.
fn panel_pieces(q: usize, len: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    const NR: usize = gemm_f32::NR;
    let mut at = 0;
    while at < len {
        let (panel, lane) = ((q + at) / NR, (q + at) % NR);
        let take = (NR - lane).min(len - at);
        f(panel, lane, at, take);
        at += take;
    }
}

/// Fills `out` (`ow` values) with tap `(ky, kx)` of output row `oy`: the input values it
/// reads, zeros in the padding.
fn fill_row(
    plane: &[f32],
    out: &mut [f32],
    (h, w): (usize, usize),
    (s, p): (usize, usize),
    (oy, ky, kx): (usize, usize, usize),
) {
    let ow = out.len();
    let iy = (oy * s + ky) as isize - p as isize;
    if iy < 0 || iy >= h as isize {
        out.fill(0.0);
        return;
    }
    let src = &plane[iy as usize * w..(iy as usize + 1) * w];
    if s == 1 {
        // ix = ox + kx - p: a shifted copy with zeros at the borders
        let lo = p.saturating_sub(kx).min(ow);
        let hi = (w + p).saturating_sub(kx).min(ow).max(lo);
        out[..lo].fill(0.0);
        out[lo..hi].copy_from_slice(&src[lo + kx - p..hi + kx - p]);
        out[hi..].fill(0.0);
    } else {
        for (ox, o) in out.iter_mut().enumerate() {
            let ix = (ox * s + kx) as isize - p as isize;
            *o = if ix >= 0 && (ix as usize) < w {
                src[ix as usize]
            } else {
                0.0
            };
        }
    }
}

/// Convolves `x` `[b, cin, h, w]` (f32, CPU) with `weight` `[cout, cin, k, k]` and `bias`
/// `[cout]`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(
        &weight.contiguous()?,
        &bias.contiguous()?,
        &Conv { stride, padding },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn check(
        (b, cin, cout): (usize, usize, usize),
        (h, w): (usize, usize),
        (k, s, p): (usize, usize, usize),
    ) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 0.3, (cout, cin, k, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
        let got = conv2d(&x, &wt, &bias, s, p).unwrap();
        let want = x
            .conv2d(&wt, p, s, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, cout, 1, 1)).unwrap())
            .unwrap();
        assert_eq!(got.dims(), want.dims());
        let err = crate::kernels::max_abs_diff(&got, &want);
        assert!(
            err < 1e-4,
            "b{b} {cin}->{cout} {h}x{w} k{k} s{s} p{p}: {err}"
        );
    }

    #[test]
    fn matches_candle_conv2d() {
        check((2, 5, 7), (9, 11), (3, 1, 1));
        check((1, 4, 3), (8, 8), (3, 2, 1));
        check((2, 6, 6), (9, 7), (3, 2, 0));
        check((1, 8, 4), (5, 6), (1, 1, 0));
        check((2, 3, 2), (10, 10), (3, 1, 0));
        check((1, 128, 16), (64, 64), (3, 1, 1)); // Winograd (vector transforms)
        check((1, 128, 8), (30, 30), (3, 1, 1)); // Winograd with AVX-512, im2col with AVX2
        check((1, 256, 8), (30, 30), (3, 1, 1)); // Winograd (scalar transforms)
        check((2, 260, 650), (17, 16), (3, 1, 1)); // AVX2: Winograd by output channels
        check((1, 48, 16), (96, 96), (3, 1, 1)); // the im2col GEMM over several row blocks
        check((2, 16, 13), (40, 40), (3, 1, 1));
        // the packed path (AVX-512): whole panels, rows straddling panels and an edge of
        // 2 rows of A (650 = 108·6 + 2), stride 2, pointwise; one tile for two threads splits
        // the output channels
        check((2, 8, 640), (16, 16), (3, 1, 1));
        check((1, 4, 650), (20, 21), (3, 1, 1));
        check((2, 6, 640), (33, 40), (3, 2, 1));
        check((2, 16, 700), (16, 16), (1, 1, 0));
        check((1, 3, 640), (16, 16), (3, 1, 1));
    }

    /// The packed path (AVX-512 only in the dispatch) and Winograd by output channels (AVX2
    /// only in the dispatch) against the dispatch's choice at the U-Net's 1280-channel layers,
    /// 2 threads, GFLOP/s, medians of 5 interleaved runs (`cargo test --release -p sumi-models
    /// --lib conv_paths_speed -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn conv_paths_speed() {
        if !gemm_f32::available() {
            return;
        }
        let dev = Device::Cpu;
        for &(cin, cout, hw, k) in &[
            (1280usize, 1280usize, 16usize, 3usize),
            (2560, 1280, 16, 3),
            (1280, 1280, 8, 3),
            (2560, 1280, 8, 3),
            (2560, 1280, 16, 1),
        ] {
            let p = k / 2;
            let x = Tensor::randn(0f32, 1.0, (2, cin, hw, hw), &dev).unwrap();
            let wt = Tensor::randn(0f32, 0.3, (cout, cin, k, k), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (xs, ws, bs) = (flat(&x), flat(&wt), flat(&bias));
            let flops = 2.0 * (2 * cin * cout * k * k * hw * hw) as f64;
            let (mut dispatch, mut packed, mut small) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..5 {
                let t = std::time::Instant::now();
                conv2d(&x, &wt, &bias, 1, p).unwrap();
                dispatch.push(flops / t.elapsed().as_secs_f64() / 1e9);
                let t = std::time::Instant::now();
                packed_conv(&xs, &ws, &bs, (2, cin, hw, hw), (cout, k, 1, p), (hw, hw));
                packed.push(flops / t.elapsed().as_secs_f64() / 1e9);
                if k == 3 {
                    let t = std::time::Instant::now();
                    winograd_small::conv3x3(&xs, &ws, &bs, (2, cin, hw, hw), cout);
                    small.push(flops / t.elapsed().as_secs_f64() / 1e9);
                }
            }
            let median = |mut v: Vec<f64>| match v.len() {
                0 => "-".to_string(),
                _ => {
                    v.sort_by(f64::total_cmp);
                    format!("{:.1}", v[v.len() / 2])
                }
            };
            println!(
                "k{k} {cin}->{cout} at {hw}x{hw}: dispatch {}, packed {}, winograd by channels {} \
                 GFLOP/s (direct-equivalent)",
                median(dispatch),
                median(packed),
                median(small)
            );
        }
    }
}
