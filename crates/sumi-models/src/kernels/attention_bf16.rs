//! Multi-head attention with bf16 dot products (f32 accumulation and softmax) for
//! `[batch, tokens, heads·dim]` f32 tensors, computed transposed so that every operand packs
//! cheaply for [`gemm_bf16`]:
//! - per (batch, head), once: the keys scaled by 1/√d packed as A (`keys × d`), and the values
//!   transposed, packed as A (`d × keys`);
//! - per block of query rows: `Sᵀ = K·Qᵀ` (`keys × rows`, f32), a softmax down each column
//!   whose exponentials are written straight into the packed B operand `Pᵀ`, then
//!   `Oᵀ = Vᵀ·Pᵀ` (`d × rows`), divided by the column sums on the way into the output.
//!
//! The full `tokens × keys` matrix is never formed; blocks run on rayon's pool.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::attention::Qkv;
use super::fastmath::exp;
use super::gemm_bf16::{
    self, bf16_bits, bf16_bits_finite, bf16_to_f32, packed_a_len, packed_b_len, Init, MR, NR,
};
use super::Unfilled;

/// Bytes of (transposed) scores one task holds at a time.
const SCORE_BLOCK_BYTES: usize = 1 << 20;

struct AttentionBf16 {
    heads: usize,
}

/// Packs `A[i][j] = src[j·ld + i]` (`rows`×`k`, a transposed source) for [`gemm_bf16`].
fn pack_a_transposed(src: &[f32], rows: usize, k: usize, ld: usize, out: &mut [u32]) {
    let kp = k.div_ceil(2);
    for (p, panel) in out.chunks_exact_mut(kp * MR).enumerate() {
        for q in 0..kp {
            for r in 0..MR {
                let i = p * MR + r;
                panel[q * MR + r] = if i < rows {
                    let lo = bf16_bits(src[2 * q * ld + i]);
                    let hi = if 2 * q + 1 < k {
                        bf16_bits(src[(2 * q + 1) * ld + i])
                    } else {
                        0
                    };
                    lo | (hi << 16)
                } else {
                    0
                };
            }
        }
    }
}

/// Softmax down the columns of `s` (`m`×`nr`, row-major): the unnormalised exponentials go
/// into `out` as the packed B operand (`m`×`nr`), their column sums (of the bf16-rounded
/// values that get multiplied) into `sums`.
#[inline(always)]
fn softmax_columns_body(
    s: &[f32],
    m: usize,
    nr: usize,
    out: &mut [u32],
    maxs: &mut Vec<f32>,
    sums: &mut Vec<f32>,
) {
    maxs.clear();
    maxs.resize(nr, f32::NEG_INFINITY);
    for row in s.chunks_exact(nr).take(m) {
        for (mx, &v) in maxs.iter_mut().zip(row) {
            *mx = mx.max(v);
        }
    }
    sums.clear();
    sums.resize(nr, 0.0);
    let kp = m.div_ceil(2);
    for q in 0..kp {
        let r0 = &s[2 * q * nr..(2 * q + 1) * nr];
        for p in 0..nr.div_ceil(NR) {
            let c0 = p * NR;
            let w = NR.min(nr - c0);
            let dst = &mut out[(p * kp + q) * NR..][..NR];
            let (mx, sm) = (&maxs[c0..c0 + w], &mut sums[c0..c0 + w]);
            if 2 * q + 1 < m {
                let r1 = &s[(2 * q + 1) * nr + c0..][..w];
                for ((((d, &a), &b), &x), su) in dst
                    .iter_mut()
                    .zip(&r0[c0..])
                    .zip(r1)
                    .zip(mx)
                    .zip(sm.iter_mut())
                {
                    let (ea, eb) = (bf16_bits_finite(exp(a - x)), bf16_bits_finite(exp(b - x)));
                    *su += bf16_to_f32(ea) + bf16_to_f32(eb);
                    *d = ea | (eb << 16);
                }
            } else {
                for (((d, &a), &x), su) in dst.iter_mut().zip(&r0[c0..]).zip(mx).zip(sm.iter_mut())
                {
                    let ea = bf16_bits_finite(exp(a - x));
                    *su += bf16_to_f32(ea);
                    *d = ea;
                }
            }
            dst[w..].fill(0);
        }
    }
}

simd_dispatch! {
    fn softmax_columns_portable(
        s: &[f32],
        m: usize,
        nr: usize,
        out: &mut [u32],
        maxs: &mut Vec<f32>,
        sums: &mut Vec<f32>,
    ) => softmax_columns_body
}

/// [`softmax_columns_body`]: in AVX-512 where the CPU has BF16 conversions, else portable.
fn softmax_columns(
    s: &[f32],
    m: usize,
    nr: usize,
    out: &mut [u32],
    maxs: &mut Vec<f32>,
    sums: &mut Vec<f32>,
) {
    #[cfg(target_arch = "x86_64")]
    if gemm_bf16::has_bf16_dot() && is_x86_feature_detected!("avx512bw") {
        maxs.resize(nr, 0.0);
        sums.resize(nr, 0.0);
        // SAFETY: the features were just detected; `s` holds m×nr, `out` the packed m×nr.
        unsafe { softmax_columns_avx512(s, m, nr, out, maxs, sums) };
        return;
    }
    softmax_columns_portable(s, m, nr, out, maxs, sums)
}

/// e^x for x ≤ 0 in 16 lanes: x clamped at −87, 2^k·p(r) with a degree-5 polynomial on
/// |r| ≤ ln2/2 (relative error ~2e-6, far below the bf16 rounding that follows).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn exp_nonpositive(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
    let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 120.0);
    for c in [1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, k)
}

/// [`softmax_columns_body`] in AVX-512: per 16 columns, two rows' exponentials rounded to
/// bf16 together (`vcvtne2ps2bf16`) and interleaved into pairs with one word permutation.
///
/// # Safety
/// The CPU has `avx512f`, `avx512bw` and `avx512bf16` (the buffer lengths are asserted).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn softmax_columns_avx512(
    s: &[f32],
    m: usize,
    nr: usize,
    out: &mut [u32],
    maxs: &mut [f32],
    sums: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!(s.len() >= m * nr && maxs.len() >= nr && sums.len() >= nr);
    let kp = m.div_ceil(2);
    assert!(out.len() >= packed_b_len(m, nr));
    let chunks = nr.div_ceil(16);
    let mask = |c: usize| -> __mmask16 {
        let w = (nr - 16 * c).min(16);
        ((1u32 << w) - 1) as __mmask16
    };
    // SAFETY: every load and store below is in bounds: column chunk c covers columns 16c..
    // under its mask, inside rows of `s` (m×nr), `maxs`/`sums` (nr) and the packed panel rows
    // of `out` (lengths asserted above); the caller has checked the CPU features.
    unsafe {
        for c in 0..chunks {
            let (k, at) = (mask(c), 16 * c);
            let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
            for row in 0..m {
                let v = _mm512_maskz_loadu_ps(k, s.as_ptr().add(row * nr + at));
                mx = _mm512_max_ps(mx, v);
            }
            _mm512_mask_storeu_ps(maxs.as_mut_ptr().add(at), k, mx);
            _mm512_mask_storeu_ps(sums.as_mut_ptr().add(at), k, _mm512_setzero_ps());
        }
        // word j of the result: word j/2 of the low half (even j) or of the high half (odd)
        let idx = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
            4, 19, 3, 18, 2, 17, 1, 16, 0,
        );
        let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
        for q in 0..kp {
            let (r0, r1) = (2 * q, 2 * q + 1);
            for c in 0..chunks {
                let (k, at) = (mask(c), 16 * c);
                let mx = _mm512_maskz_loadu_ps(k, maxs.as_ptr().add(at));
                let a = _mm512_maskz_loadu_ps(k, s.as_ptr().add(r0 * nr + at));
                let ea = _mm512_maskz_mov_ps(k, exp_nonpositive(_mm512_sub_ps(a, mx)));
                let eb = if r1 < m {
                    let b = _mm512_maskz_loadu_ps(k, s.as_ptr().add(r1 * nr + at));
                    _mm512_maskz_mov_ps(k, exp_nonpositive(_mm512_sub_ps(b, mx)))
                } else {
                    _mm512_setzero_ps()
                };
                let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(eb, ea));
                let pairs = _mm512_permutexvar_epi16(idx, both);
                // column 16c + l lies in panel (16c + l) / NR at lane (16c + l) % NR
                let (panel, lane) = (at / NR, at % NR);
                let dst = out.as_mut_ptr().add((panel * kp + q) * NR + lane);
                _mm512_storeu_si512(dst.cast(), pairs);
                // the sums are of the rounded values that get multiplied
                let lo = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(pairs));
                let hi = _mm512_castsi512_ps(_mm512_and_si512(pairs, high));
                let sp = sums.as_mut_ptr().add(at);
                let sum = _mm512_add_ps(_mm512_maskz_loadu_ps(k, sp), _mm512_add_ps(lo, hi));
                _mm512_mask_storeu_ps(sp, k, sum);
            }
            // a last panel half never touched by a chunk
            if chunks % 2 == 1 {
                let at = 16 * chunks;
                let dst = out.as_mut_ptr().add((at / NR * kp + q) * NR + at % NR);
                _mm512_storeu_si512(dst.cast(), _mm512_setzero_si512());
            }
        }
    }
}

#[derive(Default)]
struct Scratch {
    q: Vec<u32>,
    scores: Vec<f32>,
    p: Vec<u32>,
    o: Vec<f32>,
    maxs: Vec<f32>,
    sums: Vec<f32>,
}

impl CustomOp3 for AttentionBf16 {
    fn name(&self) -> &'static str {
        "sumi-attention-bf16"
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
        let Qkv {
            q,
            k,
            v,
            b,
            n,
            m,
            c,
        } = Qkv::read("attention-bf16", self.heads, (s1, l1), (s2, l2), (s3, l3))?;
        let h = self.heads;
        let d = c / h;
        let scale = 1.0 / (d as f32).sqrt();
        let (ka_len, va_len) = (packed_a_len(m, d), packed_a_len(d, m));
        let mut ka = vec![0u32; b * h * ka_len];
        let mut va = vec![0u32; b * h * va_len];
        ka.par_chunks_mut(ka_len.max(1))
            .zip(va.par_chunks_mut(va_len.max(1)))
            .enumerate()
            .for_each(|(bh, (ka, va))| {
                let (bi, hi) = (bh / h, bh % h);
                let base = bi * m * c + hi * d;
                let scaled: Vec<f32> = (0..m)
                    .flat_map(|j| k[base + j * c..base + j * c + d].iter().map(|x| x * scale))
                    .collect();
                gemm_bf16::pack_a(&scaled, m, d, d, ka);
                pack_a_transposed(&v[base..], d, m, c, va);
            });
        // query rows per task: whole B panels, scores near SCORE_BLOCK_BYTES
        let rows = (SCORE_BLOCK_BYTES / 4 / m.max(1) / NR * NR)
            .clamp(NR, 512)
            .min(n.max(1));
        let blocks = n.div_ceil(rows);
        let mut out = Unfilled::new(b * n * c);
        let out_ptr = out.ptr();
        let out_ref = &out_ptr;
        let (ka, va) = (&ka, &va);
        (0..b * h * blocks)
            .into_par_iter()
            .for_each_init(Scratch::default, |t, task| {
                let (bh, blk) = (task / blocks, task % blocks);
                let (bi, hi) = (bh / h, bh % h);
                let r0 = blk * rows;
                let nr = rows.min(n - r0);
                // Qᵀ block as B: B[dd][r] = q[row r0 + r][head dd]
                t.q.resize(packed_b_len(d, nr), 0);
                gemm_bf16::pack_b_transposed(&q[(bi * n + r0) * c + hi * d..], d, nr, c, &mut t.q);
                t.scores.resize(m * nr, 0.0);
                let kh = &ka[bh * ka_len..(bh + 1) * ka_len];
                // SAFETY: scores is m×nr with ldc nr, owned by this task.
                unsafe {
                    gemm_bf16::gemm(m, nr, d, kh, &t.q, t.scores.as_mut_ptr(), nr, Init::Zero)
                };
                t.p.resize(packed_b_len(m, nr), 0);
                softmax_columns(&t.scores, m, nr, &mut t.p, &mut t.maxs, &mut t.sums);
                t.o.resize(d * nr, 0.0);
                let vh = &va[bh * va_len..(bh + 1) * va_len];
                // SAFETY: o is d×nr with ldc nr, owned by this task.
                unsafe { gemm_bf16::gemm(d, nr, m, vh, &t.p, t.o.as_mut_ptr(), nr, Init::Zero) };
                for (r, s) in t.sums.iter().enumerate().take(nr) {
                    let inv = 1.0 / s;
                    // SAFETY: this task owns rows r0..r0+nr, columns hi·d..(hi+1)·d of batch bi.
                    let row = unsafe {
                        std::slice::from_raw_parts_mut(
                            out_ref.0.add((bi * n + r0 + r) * c + hi * d),
                            d,
                        )
                    };
                    for (dd, o) in row.iter_mut().enumerate() {
                        *o = t.o[dd * nr + r] * inv;
                    }
                }
            });
        // SAFETY: the tasks cover every (batch, head, row block) and write its rows' head columns.
        let out = unsafe { out.filled() };
        Ok((CpuStorage::F32(out), Shape::from((b, n, c))))
    }
}

/// Softmax attention of `q` `[b, n, heads·d]` over `k`, `v` `[b, m, heads·d]` (f32, CPU),
/// scaled by 1/√d, with bf16 dot products; returns `[b, n, heads·d]` (f32).
pub fn attention_bf16(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
) -> candle_core::Result<Tensor> {
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &AttentionBf16 { heads })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn matches_f32_attention_of_rounded_inputs() {
        let dev = Device::Cpu;
        for &(b, n, m, heads, d) in &[(2, 70, 77, 2, 40), (1, 300, 300, 1, 24), (2, 33, 5, 3, 8)] {
            let c = heads * d;
            let r = |t: Tensor| {
                t.to_dtype(DType::BF16)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
            };
            let q = r(Tensor::randn(0f32, 1.0, (b, n, c), &dev).unwrap());
            let k = r(Tensor::randn(0f32, 1.0, (b, m, c), &dev).unwrap());
            let v = r(Tensor::randn(0f32, 1.0, (b, m, c), &dev).unwrap());
            let got = attention_bf16(&q, &k, &v, heads).unwrap();
            let want = super::super::attention::attention(&q, &k, &v, heads).unwrap();
            let err = crate::kernels::max_abs_diff(&got, &want);
            // probabilities rounded to bf16 (and keys scaled before rounding)
            assert!(err < 2e-2, "b{b} n{n} m{m} h{heads} d{d}: {err}");
        }
    }
}
