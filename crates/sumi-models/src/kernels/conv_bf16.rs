//! 2-D convolution with bf16 weights for f32 NCHW tensors on the CPU: the kernel packed once
//! as the GEMM's A operand, image columns converted to bf16 and packed straight from the
//! input (no f32 im2col buffer; for stride 1 from the input rows converted to bf16 once per
//! task), f32 accumulation started from the bias.
//! Tasks are (batch, block of output rows, block of output channels) on rayon's pool.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::gemm_bf16::{self, packed_a_len, packed_b_len, Init, MR, NR};
use super::{f32_slice, Unfilled};

/// Bytes of packed image columns one task builds at a time.
const COLUMN_BLOCK_BYTES: usize = 2 << 20;

/// A convolution kernel `[c_out, c_in, k, k]` packed as bf16 for [`gemm_bf16`].
#[derive(Debug, Clone)]
pub struct PackedConv {
    a: Vec<u32>,
    cout: usize,
    cin: usize,
    k: usize,
}

impl PackedConv {
    /// Packs `weight` (f32 values of `[cout, cin, k, k]`, row-major).
    pub fn new(weight: &[f32], cout: usize, cin: usize, k: usize) -> Self {
        let kk = cin * k * k;
        let mut a = vec![0; packed_a_len(cout, kk)];
        // in parallel, 8 panels at a time (this runs at load, once per layer)
        let rows = 8 * MR;
        a.par_chunks_mut(kk.div_ceil(2) * rows)
            .enumerate()
            .for_each(|(i, out)| {
                let m = rows.min(cout - i * rows);
                gemm_bf16::pack_a(&weight[i * rows * kk..(i * rows + m) * kk], m, kk, kk, out);
            });
        Self { a, cout, cin, k }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

struct ConvBf16<'a> {
    w: &'a PackedConv,
    bias: &'a [f32],
    stride: usize,
    padding: usize,
    up: usize,
}

/// Writes im2col row `kidx` (channel, ky, kx) for output rows `r0 .. r0 + nr` of the input
/// upsampled `up`× (nearest neighbour; `up` = 1 is the input itself).
#[inline(always)]
fn column_row(
    x: &[f32],
    (cin, h, w, up): (usize, usize, usize, usize),
    (k, s, p): (usize, usize, usize),
    (r0, ow): (usize, usize),
    kidx: usize,
    out: &mut [f32],
) {
    let (ci, ky, kx) = (kidx / (k * k), kidx / k % k, kidx % k);
    debug_assert!(ci < cin);
    let plane = &x[ci * h * w..(ci + 1) * h * w];
    let (vh, vw) = (h * up, w * up);
    for (j, o) in out.chunks_exact_mut(ow).enumerate() {
        let iy = ((r0 + j) * s + ky) as isize - p as isize;
        if iy < 0 || iy >= vh as isize {
            o.fill(0.0);
            continue;
        }
        let src = &plane[iy as usize / up * w..(iy as usize / up + 1) * w];
        if s == 1 && up == 1 {
            // ix = ox + kx - p: a shifted copy with zeros at the borders
            let lo = p.saturating_sub(kx).min(ow);
            let hi = (w + p).saturating_sub(kx).min(ow).max(lo);
            o[..lo].fill(0.0);
            o[lo..hi].copy_from_slice(&src[lo + kx - p..hi + kx - p]);
            o[hi..].fill(0.0);
        } else {
            for (ox, v) in o.iter_mut().enumerate() {
                let ix = (ox * s + kx) as isize - p as isize;
                *v = if ix >= 0 && (ix as usize) < vw {
                    src[ix as usize / up]
                } else {
                    0.0
                };
            }
        }
    }
}

/// Scratch space of one task's column packing.
#[derive(Default)]
struct ColumnScratch {
    /// Two f32 im2col rows (strided convolutions).
    rows: Vec<f32>,
    /// The input rows the block reads, as bf16, zero-padded and upsampled (stride 1).
    planes: Vec<u16>,
}

/// Packs the image columns of output rows `r0 .. r0 + nr` as the GEMM's B operand.
#[inline(always)]
fn pack_columns_body(
    x: &[f32],
    dims: (usize, usize, usize, usize),
    conv: (usize, usize, usize),
    rows: (usize, usize, usize),
    out: &mut [u32],
    scratch: &mut ColumnScratch,
) {
    let (r0, nr, ow) = rows;
    let kk = dims.0 * conv.0 * conv.0;
    if conv.1 == 1 {
        return pack_columns_stride1(x, dims, conv, rows, out, &mut scratch.planes);
    }
    gemm_bf16::pack_b_rows_with(kk, nr * ow, out, &mut scratch.rows, |i, row| {
        column_row(x, dims, conv, (r0, ow), i, row)
    });
}

/// Stride-1 columns without an f32 im2col row: the rows of the input that output rows
/// `r0 .. r0 + nr` read (`nr + k − 1` per channel) are converted to bf16 once, padded with
/// zeros and upsampled, and every packed pair is two shifted reads of them.
#[inline(always)]
fn pack_columns_stride1(
    x: &[f32],
    (cin, h, w, up): (usize, usize, usize, usize),
    (k, _, p): (usize, usize, usize),
    (r0, nr, ow): (usize, usize, usize),
    out: &mut [u32],
    planes: &mut Vec<u16>,
) {
    let (vh, vw) = (h * up, w * up);
    let (lh, pw) = (nr + k - 1, vw + 2 * p);
    planes.clear();
    planes.resize(cin * lh * pw, 0);
    for (ci, plane) in planes.chunks_exact_mut(lh * pw).enumerate() {
        let src = &x[ci * h * w..(ci + 1) * h * w];
        for (ly, row) in plane.chunks_exact_mut(pw).enumerate() {
            // padded row r0 + ly is input row (r0 + ly − p) / up of the upsampled image
            let Some(vy) = (r0 + ly).checked_sub(p).filter(|&vy| vy < vh) else {
                continue;
            };
            let srow = &src[vy / up * w..(vy / up + 1) * w];
            let dst = &mut row[p..p + vw];
            if up == 1 {
                for (d, &v) in dst.iter_mut().zip(srow) {
                    *d = gemm_bf16::bf16_bits(v) as u16;
                }
            } else {
                for (&v, run) in srow.iter().zip(dst.chunks_exact_mut(up)) {
                    run.fill(gemm_bf16::bf16_bits(v) as u16);
                }
            }
        }
    }
    let kk = cin * k * k;
    let kp = kk.div_ceil(2);
    let npx = nr * ow;
    // where row `kidx` = (channel, ky, kx) of the columns starts for output row 0
    let start = |kidx: usize| {
        let (ci, ky, kx) = (kidx / (k * k), kidx / k % k, kidx % k);
        (ci * lh + ky) * pw + kx
    };
    let zeros = vec![0u16; ow];
    for q in 0..kp {
        let (lo0, hi0) = (start(2 * q), (2 * q + 1 < kk).then(|| start(2 * q + 1)));
        for j in 0..nr {
            let lo = &planes[lo0 + j * pw..][..ow];
            let hi = match hi0 {
                Some(at) => &planes[at + j * pw..][..ow],
                None => &zeros[..],
            };
            let mut ox = 0;
            while ox < ow {
                let col = j * ow + ox;
                let (panel, lane) = (col / NR, col % NR);
                let seg = (NR - lane).min(ow - ox);
                let dst = &mut out[(panel * kp + q) * NR + lane..][..seg];
                for ((d, &a), &b) in dst.iter_mut().zip(&lo[ox..]).zip(&hi[ox..]) {
                    *d = a as u32 | (b as u32) << 16;
                }
                ox += seg;
            }
        }
        // columns past the last pixel in the last panel
        if npx % NR != 0 {
            let panel = npx / NR;
            out[(panel * kp + q) * NR + npx % NR..(panel * kp + q + 1) * NR].fill(0);
        }
    }
}

simd_dispatch! {
    fn pack_columns(
        x: &[f32],
        dims: (usize, usize, usize, usize),
        conv: (usize, usize, usize),
        rows: (usize, usize, usize),
        out: &mut [u32],
        scratch: &mut ColumnScratch,
    ) => pack_columns_body
}

impl CustomOp1 for ConvBf16<'_> {
    fn name(&self) -> &'static str {
        "sumi-conv2d-bf16"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "conv2d-bf16", "input")?;
        let (b, cin, h, wd) = l.shape().dims4()?;
        let w = self.w;
        if w.cin != cin || self.bias.len() != w.cout {
            return Err(candle_core::Error::Msg(format!(
                "conv2d-bf16: input {:?} for a {}→{} kernel with {} biases",
                l.shape(),
                w.cin,
                w.cout,
                self.bias.len()
            )));
        }
        let (s, p, k, cout, up) = (self.stride, self.padding, w.k, w.cout, self.up);
        let oh = (h * up + 2 * p)
            .checked_sub(k)
            .map(|v| v / s + 1)
            .unwrap_or(0);
        let ow = (wd * up + 2 * p)
            .checked_sub(k)
            .map(|v| v / s + 1)
            .unwrap_or(0);
        let kk = cin * k * k;
        let hw = oh * ow;
        // output rows per task: within the column budget, blocks of equal size, and a whole
        // number of B panels where the row width allows (16 or 8 wide rows: 2 or 4 rows)
        let grain = NR / gcd(ow.max(1), NR);
        let most = (COLUMN_BLOCK_BYTES / 2 / (kk * ow).max(1) / grain * grain).max(grain);
        let even = oh.div_ceil(oh.div_ceil(most).max(1));
        let rows = even.next_multiple_of(grain).clamp(1, oh.max(1));
        let blocks = oh.div_ceil(rows);
        // split the output channels too when there are fewer tasks than 2 per thread
        let panels = cout.div_ceil(MR);
        let want = 2 * rayon::current_num_threads();
        let msplit = want
            .div_ceil((b * blocks).max(1))
            .clamp(1, panels.div_ceil(8).max(1));
        let mchunk = (panels.div_ceil(msplit) * MR).max(MR);
        let msplit = cout.div_ceil(mchunk);
        let kp = kk.div_ceil(2);
        let mut out = Unfilled::new(b * cout * hw);
        let out_ptr = out.ptr();
        let out_ref = &out_ptr;
        (0..b * blocks * msplit).into_par_iter().for_each_init(
            || {
                (
                    Vec::<u32>::new(),
                    ColumnScratch::default(),
                    Vec::<f32>::new(),
                )
            },
            |(packed, scratch, cbuf), task| {
                let (bi, blk, mc) = (
                    task / (blocks * msplit),
                    task / msplit % blocks,
                    task % msplit,
                );
                let r0 = blk * rows;
                let nr = rows.min(oh - r0);
                let npx = nr * ow;
                let (m0, mlen) = (mc * mchunk, mchunk.min(cout - mc * mchunk));
                let xb = &x[bi * cin * h * wd..(bi + 1) * cin * h * wd];
                packed.resize(packed_b_len(kk, npx), 0);
                pack_columns(
                    xb,
                    (cin, h, wd, up),
                    (k, s, p),
                    (r0, nr, ow),
                    packed,
                    scratch,
                );
                // C goes to a buffer of the task's own (rows npx apart) and is copied out:
                // in the output, channels are h·w apart, often a power of two that puts a
                // tile's rows in the same cache sets (3–4% slower measured)
                cbuf.resize(mlen * npx, 0.0);
                let a = &w.a[m0 / MR * kp * MR..];
                let bias = Init::RowBias(&self.bias[m0..m0 + mlen]);
                // SAFETY: cbuf is mlen×npx with ldc npx.
                unsafe { gemm_bf16::gemm(mlen, npx, kk, a, packed, cbuf.as_mut_ptr(), npx, bias) };
                for (c, src) in cbuf.chunks_exact(npx).enumerate() {
                    // SAFETY: this task owns output pixels r0·ow .. (r0+nr)·ow of channels
                    // m0 .. m0+mlen of batch bi, inside `out`.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            out_ref.0.add(bi * cout * hw + (m0 + c) * hw + r0 * ow),
                            npx,
                        )
                    };
                    dst.copy_from_slice(src);
                }
            },
        );
        // SAFETY: the tasks cover every (batch, row block, channel block) and copy all of their C.
        let out = unsafe { out.filled() };
        Ok((CpuStorage::F32(out), Shape::from((b, cout, oh, ow))))
    }
}

/// Convolves `x` `[b, cin, h, w]` (f32, CPU) with a packed bf16 kernel and f32 `bias`.
pub fn conv2d_bf16(
    x: &Tensor,
    w: &PackedConv,
    bias: &[f32],
    stride: usize,
    padding: usize,
) -> candle_core::Result<Tensor> {
    conv2d_bf16_upsampled(x, w, bias, stride, padding, 1)
}

/// [`conv2d_bf16`] of `x` upsampled `up`× by nearest neighbour, without forming the
/// upsampled tensor.
pub fn conv2d_bf16_upsampled(
    x: &Tensor,
    w: &PackedConv,
    bias: &[f32],
    stride: usize,
    padding: usize,
    up: usize,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&ConvBf16 {
        w,
        bias,
        stride,
        padding,
        up: up.max(1),
    })
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
        let packed = PackedConv::new(&wt.flatten_all().unwrap().to_vec1().unwrap(), cout, cin, k);
        let got = conv2d_bf16(&x, &packed, &bias.to_vec1::<f32>().unwrap(), s, p).unwrap();
        // reference: the f32 convolution of bf16-rounded operands
        let r = |t: &Tensor| {
            t.to_dtype(candle_core::DType::BF16)
                .unwrap()
                .to_dtype(candle_core::DType::F32)
                .unwrap()
        };
        let want = r(&x)
            .conv2d(&r(&wt), p, s, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, cout, 1, 1)).unwrap())
            .unwrap();
        assert_eq!(got.dims(), want.dims());
        let err = crate::kernels::max_abs_diff(&got, &want);
        assert!(
            err < 1e-3,
            "b{b} {cin}->{cout} {h}x{w} k{k} s{s} p{p}: {err}"
        );
    }

    #[test]
    fn upsampled_matches_upsample_then_conv() {
        let dev = Device::Cpu;
        let (cin, cout) = (6, 5);
        let x = Tensor::randn(0f32, 1.0, (2, cin, 5, 7), &dev).unwrap();
        let wt = Tensor::randn(0f32, 0.3, (cout, cin, 3, 3), &dev).unwrap();
        let packed = PackedConv::new(&wt.flatten_all().unwrap().to_vec1().unwrap(), cout, cin, 3);
        let bias = vec![0.5; cout];
        let a = conv2d_bf16_upsampled(&x, &packed, &bias, 1, 1, 2).unwrap();
        let b = conv2d_bf16(&x.upsample_nearest2d(10, 14).unwrap(), &packed, &bias, 1, 1).unwrap();
        assert_eq!(a.dims(), &[2, cout, 10, 14]);
        assert_eq!(crate::kernels::max_abs_diff(&a, &b), 0.0);
    }

    #[test]
    fn matches_f32_conv_of_rounded_operands() {
        check((2, 5, 7), (9, 11), (3, 1, 1));
        check((1, 4, 3), (8, 8), (3, 2, 1));
        check((2, 6, 6), (9, 7), (3, 2, 0));
        check((1, 8, 4), (5, 6), (1, 1, 0));
        check((2, 3, 2), (10, 10), (3, 1, 0));
        check((1, 128, 40), (64, 64), (3, 1, 1)); // several row blocks
        check((1, 64, 200), (4, 4), (3, 1, 1)); // channel blocks
        check((2, 16, 24), (16, 16), (3, 1, 1)); // rows of half a panel
        check((1, 9, 13), (8, 8), (3, 1, 1)); // a quarter panel, odd k
        check((2, 7, 30), (12, 20), (1, 1, 0)); // 1×1, odd k, partial last panel
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    use candle_core::Device;

    /// `CONV_SHAPE=b,cin,cout,h,w,k,s,p,reps cargo test --release -p sumi-models conv_bf16_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn conv_bf16_speed() {
        let v: Vec<usize> = std::env::var("CONV_SHAPE")
            .unwrap_or_else(|_| "2,320,320,64,64,3,1,1,5".into())
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect();
        let (b, cin, cout, h, w, k, s, p, reps) =
            (v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]);
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev).unwrap();
        let wt: Vec<f32> = Tensor::randn(0f32, 0.3, (cout, cin, k, k), &dev)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let packed = PackedConv::new(&wt, cout, cin, k);
        let bias = vec![0.5f32; cout];
        let y = conv2d_bf16(&x, &packed, &bias, s, p).unwrap();
        let (oh, ow) = (y.dims()[2], y.dims()[3]);
        for _ in 0..3 {
            let t = std::time::Instant::now();
            for _ in 0..reps {
                conv2d_bf16(&x, &packed, &bias, s, p).unwrap();
            }
            let secs = t.elapsed().as_secs_f64();
            let gf = 2.0 * (reps * b * cout * oh * ow * cin * k * k) as f64 / secs / 1e9;
            println!(
                "conv {v:?}: {gf:.1} GFLOP/s ({:.2} ms each)",
                secs * 1e3 / reps as f64
            );
        }
    }
}
