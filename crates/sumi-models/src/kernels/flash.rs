//! Fused softmax attention for f32 on CPUs with AVX-512, for many keys (the U-Net's
//! self-attention at 4096–16384 tokens): scores never leave registers.
//!
//! Per (batch, head), K is laid out once as 64-key panels (`[panel][d][64]`) and V padded to
//! whole 16-lane vectors (`[key][dv]`). A task takes a block of query rows and walks the key
//! panels; for each panel and each group of up to 6 rows it computes the 6 × 64 scores in 24
//! registers (the same register block as [`super::gemm_f32`]), keeps a running row maximum
//! and sum (rescaling the row's partial output when the maximum grows, as online softmax
//! does), writes the 6 × 64 exponentials to a 1.5 KiB buffer, and adds their product with the
//! panel's 64 V rows into the rows' output accumulators (in L1). The panel of K and V (about
//! 22 KiB at head width 40) is reused by every row group of the block while it sits in L1.

use super::fastmath::LOG2E;

/// Keys per panel.
const KP: usize = 64;
/// Query rows per register group.
const R: usize = 6;

/// Whether [`attention_head_block`] runs on this CPU.
pub fn available() -> bool {
    super::avx512()
}

/// One (batch, head)'s K and V in the layouts the kernel reads.
pub struct HeadPanels {
    /// `[panel][d][KP]`, zero past the last key.
    kt: Vec<f32>,
    /// `[panels · KP][dv]`, zero past `d` and past the last key.
    v: Vec<f32>,
}

/// Head width rounded up to whole vectors.
fn padded_width(d: usize) -> usize {
    d.next_multiple_of(16)
}

/// Lays out keys `0..m` of one head (`k`, `v` rows `stride` apart, the head's `d` values at
/// the start of each row).
pub fn head_panels(k: &[f32], v: &[f32], m: usize, d: usize, stride: usize) -> HeadPanels {
    let panels = m.div_ceil(KP);
    let dv = padded_width(d);
    let mut kt = vec![0f32; panels * d * KP];
    let mut vp = vec![0f32; panels * KP * dv];
    for key in 0..m {
        let (p, lane) = (key / KP, key % KP);
        let src = &k[key * stride..][..d];
        for (dd, &x) in src.iter().enumerate() {
            kt[(p * d + dd) * KP + lane] = x;
        }
        vp[key * dv..][..d].copy_from_slice(&v[key * stride..][..d]);
    }
    HeadPanels { kt, v: vp }
}

/// Per-task scratch.
#[derive(Default)]
pub struct Scratch {
    /// Output accumulators, `[rows][dv]`.
    acc: Vec<f32>,
    /// Running maximum (of the unscaled scores) and sum per row, the sum as 16 lanes.
    max: Vec<f32>,
    sum: Vec<f32>,
    /// One group's exponentials, `[R][KP]`.
    p: Vec<f32>,
}

/// Attention of `rows` query rows (`q`, rows `q_stride` apart, `d` values each) over the `m`
/// keys of `hp`, scores scaled by `scale`; row `r`'s `d` outputs go to `out + r·out_stride`.
///
/// # Safety
/// [`available`] is true; `q` and `out` are valid for those rows (reads, and writes no one
/// else makes during the call); `hp` was made by [`head_panels`] for `m` keys of width `d`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_head_block(
    q: *const f32,
    q_stride: usize,
    rows: usize,
    hp: &HeadPanels,
    (m, d): (usize, usize),
    scale: f32,
    out: *mut f32,
    out_stride: usize,
    s: &mut Scratch,
) {
    let dv = padded_width(d);
    s.acc.clear();
    s.acc.resize(rows * dv, 0.0);
    s.max.clear();
    s.max.resize(rows, f32::NEG_INFINITY);
    s.sum.clear();
    s.sum.resize(rows * 16, 0.0);
    s.p.resize(R * KP, 0.0);
    let panels = m.div_ceil(KP);
    for pn in 0..panels {
        let valid = (m - pn * KP).min(KP);
        let kt = hp.kt[pn * d * KP..][..d * KP].as_ptr();
        let vv = hp.v[pn * KP * dv..][..KP * dv].as_ptr();
        let mut r0 = 0;
        while r0 < rows {
            let g = R.min(rows - r0);
            // SAFETY: the group's rows lie inside the caller's `rows`; the scratch was sized
            // above; the panel pointers index `hp` within the panel.
            unsafe {
                let grp = Group {
                    q: q.add(r0 * q_stride),
                    q_stride,
                    d,
                    dv,
                    kt,
                    v: vv,
                    valid,
                    scale,
                    acc: s.acc.as_mut_ptr().add(r0 * dv),
                    max: s.max.as_mut_ptr().add(r0),
                    sum: s.sum.as_mut_ptr().add(r0 * 16),
                    p: s.p.as_mut_ptr(),
                };
                match g {
                    6 => group::<6>(&grp),
                    5 => group::<5>(&grp),
                    4 => group::<4>(&grp),
                    3 => group::<3>(&grp),
                    2 => group::<2>(&grp),
                    _ => group::<1>(&grp),
                }
            }
            r0 += g;
        }
    }
    for r in 0..rows {
        let inv = 1.0 / s.sum[r * 16..][..16].iter().sum::<f32>();
        // SAFETY: row r of the output is the caller's, `d` floats.
        let dst = unsafe { std::slice::from_raw_parts_mut(out.add(r * out_stride), d) };
        for (o, &a) in dst.iter_mut().zip(&s.acc[r * dv..][..d]) {
            *o = a * inv;
        }
    }
}

/// One row group's operands for one key panel.
struct Group {
    q: *const f32,
    q_stride: usize,
    d: usize,
    dv: usize,
    kt: *const f32,
    v: *const f32,
    /// Keys of this panel that exist (the rest are masked out).
    valid: usize,
    scale: f32,
    acc: *mut f32,
    max: *mut f32,
    sum: *mut f32,
    p: *mut f32,
}

/// e^(c·x) for vectors with c·x ≤ 0 (the scores less their row maximum, in the softmax's
/// scale), by range reduction to a power of two and the degree-6 polynomial of
/// [`super::fastmath::exp`]; `c` is the score scale times log2(e). Lanes far below zero give
/// 0 (−∞ lanes are the caller's to mask).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn exp_scaled(
    s: std::arch::x86_64::__m512,
    max_c: std::arch::x86_64::__m512,
    c: std::arch::x86_64::__m512,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: register-only arithmetic; AVX-512F is enabled in the callers.
    unsafe {
        // t = c·s − c·max = (x in the exponent's base 2); k its nearest integer
        let t = _mm512_fmsub_ps(s, c, max_c);
        let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let r = _mm512_mul_ps(_mm512_sub_ps(t, k), _mm512_set1_ps(std::f32::consts::LN_2));
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        for q in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(q));
        }
        _mm512_scalef_ps(p, k)
    }
}

/// Scores, online softmax and the V product for `G` rows and one key panel.
///
/// # Safety
/// As [`attention_head_block`], for this group.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register blocks index several arrays at once
unsafe fn group<const G: usize>(t: &Group) {
    use std::arch::x86_64::*;
    // SAFETY: AVX-512F is enabled in the caller; pointers index the group's operands.
    unsafe {
        // scores: G rows × 64 keys in registers
        let mut s = [[_mm512_setzero_ps(); 4]; G];
        let rows: [*const f32; G] = std::array::from_fn(|r| t.q.add(r * t.q_stride));
        for kk in 0..t.d {
            let bk = t.kt.add(kk * KP);
            let bv: [__m512; 4] = std::array::from_fn(|v| _mm512_loadu_ps(bk.add(16 * v)));
            for r in 0..G {
                let a = _mm512_set1_ps(*rows[r].add(kk));
                for v in 0..4 {
                    s[r][v] = _mm512_fmadd_ps(a, bv[v], s[r][v]);
                }
            }
        }
        let c = t.scale * LOG2E;
        let cv = _mm512_set1_ps(c);
        // keys past the last one: −∞, so they do not set the maximum, and their exponentials
        // are zeroed below so they add nothing
        let masks: [__mmask16; 4] = std::array::from_fn(|v| {
            let left = t.valid.saturating_sub(16 * v).min(16);
            ((1u32 << left) - 1) as __mmask16
        });
        if t.valid < KP {
            let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
            for (v, &mask) in masks.iter().enumerate() {
                for row in s.iter_mut() {
                    row[v] = _mm512_mask_mov_ps(ninf, mask, row[v]);
                }
            }
        }
        for r in 0..G {
            let top = _mm512_max_ps(
                _mm512_max_ps(s[r][0], s[r][1]),
                _mm512_max_ps(s[r][2], s[r][3]),
            );
            let cm = _mm512_reduce_max_ps(top);
            let old = *t.max.add(r);
            let sum = t.sum.add(r * 16);
            if cm > old {
                if old != f32::NEG_INFINITY {
                    // the row's earlier terms were taken against a smaller maximum
                    let av = _mm512_set1_ps(super::fastmath::exp((old - cm) * t.scale));
                    _mm512_storeu_ps(sum, _mm512_mul_ps(_mm512_loadu_ps(sum), av));
                    let row = t.acc.add(r * t.dv);
                    for c0 in (0..t.dv).step_by(16) {
                        let x = _mm512_loadu_ps(row.add(c0));
                        _mm512_storeu_ps(row.add(c0), _mm512_mul_ps(x, av));
                    }
                }
                *t.max.add(r) = cm;
            }
            let max_c = _mm512_set1_ps(*t.max.add(r) * c);
            let mut tot = _mm512_loadu_ps(sum);
            for v in 0..4 {
                let e = _mm512_maskz_mov_ps(masks[v], exp_scaled(s[r][v], max_c, cv));
                tot = _mm512_add_ps(tot, e);
                _mm512_storeu_ps(t.p.add(r * KP + 16 * v), e);
            }
            _mm512_storeu_ps(sum, tot);
        }
        // output rows += p (G × 64) · V panel (64 × dv), four vectors of columns at a time
        let mut c0 = 0;
        while c0 < t.dv {
            match (t.dv - c0) / 16 {
                1 => pv::<G, 1>(t, c0),
                2 => pv::<G, 2>(t, c0),
                3 => pv::<G, 3>(t, c0),
                _ => pv::<G, 4>(t, c0),
            }
            c0 += 64;
        }
    }
}

/// `acc[r][c0 .. c0 + 16·NV] += Σ_k p[r][k] · V[k][c0 ..]` for the panel's 64 keys.
///
/// # Safety
/// As [`group`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register blocks index several arrays at once
unsafe fn pv<const G: usize, const NV: usize>(t: &Group, c0: usize) {
    use std::arch::x86_64::*;
    // SAFETY: AVX-512F is enabled in the caller; pointers index the group's operands.
    unsafe {
        let mut o: [[__m512; NV]; G] = std::array::from_fn(|r| {
            std::array::from_fn(|v| _mm512_loadu_ps(t.acc.add(r * t.dv + c0 + 16 * v)))
        });
        for kk in 0..KP {
            let vk = t.v.add(kk * t.dv + c0);
            let bv: [__m512; NV] = std::array::from_fn(|v| _mm512_loadu_ps(vk.add(16 * v)));
            for r in 0..G {
                let a = _mm512_set1_ps(*t.p.add(r * KP + kk));
                for v in 0..NV {
                    o[r][v] = _mm512_fmadd_ps(a, bv[v], o[r][v]);
                }
            }
        }
        for (r, row) in o.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                _mm512_storeu_ps(t.acc.add(r * t.dv + c0 + 16 * v), x);
            }
        }
    }
}
