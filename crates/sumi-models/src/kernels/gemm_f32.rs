//! f32 GEMM whose right operand comes in packed 64-column panels:
//! `C[m, n] = init + Σ_k A[m, k] · B[k, n]`, A read in place (row-major, any row stride: the
//! convolution's weights need no repacking), B as `[panel][k][64]` (the convolution's im2col
//! columns and Winograd's transformed inputs are written straight into that layout), C
//! row-major with any row stride or in panels (see [`Dims::cps`]).
//!
//! With AVX-512 the register block is 6 rows × 4 vectors (a whole panel's 64 columns): per
//! `k`, 4 vector loads of B and 6 broadcasts of A feed 24 fused multiply-adds; the depth goes
//! in blocks of [`KC`], so a panel's block (24 KiB) stays in L1 while every row block of A
//! passes over it. With AVX2 and FMA (16 registers of 8 lanes) it is 6 rows × 2 vectors: 2
//! loads and 6 broadcasts feed 12 (6 rows × 1 vector where a quarter has at most 8 valid
//! columns: the attention's heads of 40 waste no lanes there); each 16-column quarter of a
//! panel in turn has its depth block (`KC_AVX2`, 16 KiB) in L1 while the row tiles of a block
//! of A (kept in L2) pass over it, and the tiles prefetch the next quarter's block a slice
//! each. C's tiles start from a bias per row or per column, zero, or C's own values in the
//! first depth block, and later blocks add their sums to C at the store. [`gemm_packed_exp2`]
//! exponentiates a softmax's scores (in base 2) at the store.

/// Columns per packed panel of B.
pub const NR: usize = 64;
/// Rows of A per register block.
const MR: usize = 6;
/// Depth per block: a panel's block takes `KC · NR · 4` bytes (24 KiB; 128 and 256 measured
/// slower).
const KC: usize = 96;
/// Bytes of C rows plus A block a row block aims to keep in L2.
const L2_BLOCK_BYTES: usize = 512 << 10;

/// Whether [`gemm_packed`] runs on this CPU (AVX-512F, or AVX2 with FMA).
pub fn available() -> bool {
    super::avx512() || super::avx2_fma()
}

/// The shape of one product.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of B and C (the panels hold `n.div_ceil(NR)` · `NR`).
    pub n: usize,
    /// Depth.
    pub k: usize,
    /// Row strides of A and C, in floats.
    pub lda: usize,
    pub ldc: usize,
    /// Distance in C from one 64-column panel to the next: `NR` for a row-major C, or
    /// `m · NR` with `ldc = NR` for C in panels (`[panel][m][NR]`: a tile's rows then share no
    /// cache sets, which rows a power-of-two apart in memory would).
    pub cps: usize,
}

/// What C's sums start from.
#[derive(Debug, Clone, Copy)]
pub enum Init<'a> {
    Zero,
    /// `bias[i]` for row `i` (at least `m` values).
    Rows(&'a [f32]),
    /// `bias[j]` for column `j` (at least `n.div_ceil(NR) · NR` values: whole panels).
    Cols(&'a [f32]),
    /// What C holds (a product over an earlier part of the depth).
    Accumulate,
}

/// Computes C (see the module doc) from `init`. Columns of C past `n` are not touched.
///
/// # Safety
/// [`available`] is true. `a` holds rows `0..m` of `k` floats at stride `lda`; `bp` holds
/// `n.div_ceil(NR) · k · NR` floats (initialised); `c` is valid for writes of rows `0..m` of
/// `n` floats at stride `ldc` (panels `cps` apart), and no one else touches them during the
/// call; `init`'s bias has the length it asks for.
#[cfg(target_arch = "x86_64")]
pub unsafe fn gemm_packed(d: Dims, a: *const f32, bp: *const f32, c: *mut f32, init: Init<'_>) {
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(d: Dims, a: *const f32, bp: *const f32, c: *mut f32, init: Init<'_>) {
        // SAFETY: as `gemm_packed`; AVX-512F is enabled here.
        unsafe { blocks(d, a, bp, c, init) }
    }
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(d: Dims, a: *const f32, bp: *const f32, c: *mut f32, init: Init<'_>) {
        // SAFETY: as `gemm_packed`; AVX2 and FMA are enabled here.
        unsafe { blocks_avx2(d, a, bp, c, init, None) }
    }
    // SAFETY: the caller vouches for the operands and for `available`, so one of the two
    // feature sets is present.
    unsafe {
        if super::avx512() {
            avx512(d, a, bp, c, init)
        } else {
            avx2(d, a, bp, c, init)
        }
    }
}

/// [`gemm_packed`] from zero on the AVX2 kernel (on any CPU with AVX2 and FMA, AVX-512 ones
/// too) in one depth block, each value stored as `2^(sum − max[row])` and added to its row's
/// 8 lane sums in `sums` (`sums[8·row ..]`, which the caller zeroes and then adds up): the
/// scores of a softmax (scaled by log₂ e beforehand) exponentiated as they leave the
/// registers.
///
/// # Panics
/// If `d.k` exceeds one depth block ([`EXP_MAX_DEPTH`]), `max` holds fewer than `m` values or
/// `sums` fewer than `8·m`.
///
/// # Safety
/// As [`gemm_packed`], with [`super::avx2_fma`] for `available`.
#[cfg(target_arch = "x86_64")]
pub unsafe fn gemm_packed_exp2(
    d: Dims,
    a: *const f32,
    bp: *const f32,
    c: *mut f32,
    max: &[f32],
    sums: &mut [f32],
) {
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(d: Dims, a: *const f32, bp: *const f32, c: *mut f32, e: (*const f32, *mut f32)) {
        // SAFETY: as `gemm_packed_exp2`; AVX2 and FMA are enabled here.
        unsafe { blocks_avx2(d, a, bp, c, Init::Zero, Some(e)) }
    }
    assert!(
        d.k <= KC_AVX2 && max.len() >= d.m && sums.len() >= 8 * d.m,
        "gemm_packed_exp2: depth {} (at most {KC_AVX2}), {} maxima and {} sums for {} rows",
        d.k,
        max.len(),
        sums.len(),
        d.m
    );
    // SAFETY: the caller vouches for the operands and for AVX2 with FMA.
    unsafe { avx2(d, a, bp, c, (max.as_ptr(), sums.as_mut_ptr())) }
}

/// Depth up to which [`gemm_packed_exp2`] runs (one depth block).
pub const EXP_MAX_DEPTH: usize = KC_AVX2;

/// The blocking of [`gemm_packed`] around AVX-512's register blocks.
///
/// # Safety
/// As [`gemm_packed`]; AVX-512F is enabled in the caller.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn blocks(d: Dims, a: *const f32, bp: *const f32, c: *mut f32, init: Init<'_>) {
    let panels = d.n.div_ceil(NR);
    // rows per block: its C rows (all columns) and A block stay in L2 across depth blocks
    let mc = (L2_BLOCK_BYTES / 4 / (panels * NR + KC)).max(MR) / MR * MR;
    for m0 in (0..d.m).step_by(mc) {
        let m1 = (m0 + mc).min(d.m);
        for k0 in (0..d.k).step_by(KC) {
            let kc = KC.min(d.k - k0);
            for p in 0..panels {
                let nv = (d.n - p * NR).min(NR);
                // SAFETY: offsets stay inside the operands the caller vouches for.
                unsafe {
                    let b = bp.add((p * d.k + k0) * NR);
                    // the B block after this one, prefetched a slice per tile
                    let next_b = if p + 1 < panels {
                        bp.add(((p + 1) * d.k + k0) * NR)
                    } else if k0 + kc < d.k {
                        bp.add((k0 + kc) * NR)
                    } else {
                        b
                    };
                    let next_kc = if p + 1 < panels {
                        kc
                    } else {
                        KC.min(d.k.saturating_sub(k0 + kc))
                    };
                    let b_lines = next_kc * NR / 16;
                    let per_tile = b_lines.div_ceil((m1 - m0).div_ceil(MR)).max(1);
                    let mut i = m0;
                    let mut ti = 0;
                    while i < m1 {
                        let rows = MR.min(m1 - i);
                        let na = if i + rows < m1 { i + rows } else { m0 };
                        let lo = (ti * per_tile).min(b_lines);
                        let hi = ((ti + 1) * per_tile).min(b_lines);
                        ti += 1;
                        let t = Tile {
                            pf_a: a.add(na * d.lda + k0),
                            pf_b: next_b.add(lo * 16),
                            pf_b_lines: hi - lo,
                            kc,
                            a: a.add(i * d.lda + k0),
                            lda: d.lda,
                            b,
                            c: c.add(i * d.ldc + p * d.cps),
                            ldc: d.ldc,
                            nv,
                            start: Start::of(init, k0, i, p * NR),
                            exp: None,
                        };
                        match rows {
                            6 => tile::<6>(&t),
                            5 => tile::<5>(&t),
                            4 => tile::<4>(&t),
                            3 => tile::<3>(&t),
                            2 => tile::<2>(&t),
                            _ => tile::<1>(&t),
                        }
                        i += rows;
                    }
                }
            }
        }
    }
}

/// Where a tile's sums start.
#[derive(Clone, Copy)]
enum Start {
    /// From a bias value per row (the tile's first row's).
    Bias(*const f32),
    /// From a bias value per column (the tile's first column's).
    ColBias(*const f32),
    Zero,
    /// From what C holds (a later depth block).
    Load,
}

impl Start {
    /// A tile's start at depth `k0`, first row `i` and first column `j`.
    ///
    /// # Safety
    /// `init`'s bias holds row `i` or column `j`.
    unsafe fn of(init: Init<'_>, k0: usize, i: usize, j: usize) -> Self {
        // SAFETY: the caller vouches for the offsets.
        unsafe {
            match (k0, init) {
                (0, Init::Rows(b)) => Start::Bias(b.as_ptr().add(i)),
                (0, Init::Cols(b)) => Start::ColBias(b.as_ptr().add(j)),
                (0, Init::Zero) => Start::Zero,
                _ => Start::Load,
            }
        }
    }
}

/// One register block's operands (AVX2's blocks: the quarter's first column for `b` and `c`,
/// its valid columns from there in `nv`, no prefetch of A, and `pf_b` the first of
/// `pf_b_lines` rows of the next quarter's block, `NR` floats apart).
struct Tile {
    /// The next tile's A rows (prefetched), and a slice of the next B block.
    pf_a: *const f32,
    pf_b: *const f32,
    pf_b_lines: usize,
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    /// Valid columns (1..=64) of this panel (AVX2: from the quarter's first, all 16 when at
    /// least 16).
    nv: usize,
    start: Start,
    /// AVX2's [`gemm_packed_exp2`]: the tile's first row's max and 8 lane sums.
    exp: Option<(*const f32, *mut f32)>,
}

/// `R` rows × 64 columns of C over `kc` of depth.
///
/// # Safety
/// As [`gemm_packed`], for this tile's rows, columns and depth block.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile<const R: usize>(t: &Tile) {
    use std::arch::x86_64::*;
    // SAFETY: AVX-512F is enabled in the caller; the pointers index the tile's operands.
    unsafe {
        let masks: [__mmask16; 4] = std::array::from_fn(|v| {
            let left = t.nv.saturating_sub(16 * v).min(16);
            ((1u32 << left) - 1) as __mmask16
        });
        // the sums start from the bias or zero; a later depth block adds C at the store, so
        // the multiply-adds never wait for C's loads (its rows come from L3 or memory)
        let mut acc: [[__m512; 4]; R] = std::array::from_fn(|r| match t.start {
            Start::Bias(bp) => [_mm512_set1_ps(*bp.add(r)); 4],
            Start::ColBias(bp) => std::array::from_fn(|v| _mm512_loadu_ps(bp.add(16 * v))),
            Start::Zero | Start::Load => [_mm512_setzero_ps(); 4],
        });
        let rows: [*const f32; R] = std::array::from_fn(|r| t.a.add(r * t.lda));
        let a_lines = t.kc.div_ceil(16);
        for kk in 0..t.kc {
            if kk % 2 == 0 {
                let j = kk / 2;
                let (r, l) = (j / a_lines.max(1), j % a_lines.max(1));
                if r < MR {
                    _mm_prefetch::<_MM_HINT_T0>(t.pf_a.add(r * t.lda + l * 16) as *const i8);
                }
            } else if kk / 2 < t.pf_b_lines {
                _mm_prefetch::<_MM_HINT_T0>(t.pf_b.add(kk / 2 * 16) as *const i8);
            }
            let bk = t.b.add(kk * NR);
            let bv: [__m512; 4] = std::array::from_fn(|v| _mm512_loadu_ps(bk.add(16 * v)));
            for r in 0..R {
                let av = _mm512_set1_ps(*rows[r].add(kk));
                for v in 0..4 {
                    acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                if masks[v] != 0 {
                    let at = t.c.add(r * t.ldc + 16 * v);
                    let x = match t.start {
                        Start::Load => _mm512_add_ps(x, _mm512_maskz_loadu_ps(masks[v], at)),
                        _ => x,
                    };
                    _mm512_mask_storeu_ps(at, masks[v], x);
                }
            }
        }
    }
}

/// Depth per block of the AVX2 path (a quarter panel's block, `KC_AVX2 · 16 · 4` bytes, stays
/// in L1 while the row tiles pass over it).
const KC_AVX2: usize = 256;
/// Depths up to this go in one block (a quarter's block of 24 KiB still fits L1 beside A's
/// rows): a depth of 320 in blocks of 256 and 64 stored C and loaded it back for the second,
/// and C's rows of a task of the wide linear layers do not stay in L2. Linear layers of 8192
/// rows, 2 threads, interleaved medians of 9, two runs: 320→320 78.1 and 116.5 vs 75.1 and
/// 105.8 GFLOP/s, 320→2560 63.6 and 55.3 vs 61.8 and 55.0 (1280→320, whose blocks do not
/// change: 112.8 and 97.6 vs 110.5 and 96.9).
const KC_AVX2_ONE: usize = 384;

/// Rows of A per block of the AVX2 path: the block's depth slice (`MC_AVX2 · KC_AVX2 · 4`
/// bytes, 252 KiB; 378 KiB for a single block of [`KC_AVX2_ONE`]) stays in L2 while every
/// quarter of every panel passes under it. (Sizing
/// the block so that C's whole rows stayed in L2 too left 6–12 rows per block for outputs
/// 1280–10240 wide, and B then streamed from memory once per block: 24–40 GFLOP/s.)
const MC_AVX2: usize = (L2_BLOCK_BYTES / 2 / 4 / KC_AVX2) / MR * MR;

/// The blocking of [`gemm_packed`] with AVX2's register blocks: each 16-column quarter of a
/// panel in turn, the row tiles of a block of A passing over its depth block; each tile
/// prefetches a slice of the next quarter's depth block (its rows are single lines 256 bytes
/// apart, which the hardware prefetchers do not fetch ahead of the first tile) and, when it
/// adds to C, its own C rows.
///
/// # Safety
/// As [`gemm_packed`]; AVX2 and FMA are enabled in the caller.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn blocks_avx2(
    d: Dims,
    a: *const f32,
    bp: *const f32,
    c: *mut f32,
    init: Init<'_>,
    exp: Option<(*const f32, *mut f32)>,
) {
    let panels = d.n.div_ceil(NR);
    let kcb = match (KC_AVX2 + 1..=KC_AVX2_ONE).contains(&d.k) {
        true => d.k,
        false => KC_AVX2,
    };
    for m0 in (0..d.m).step_by(MC_AVX2) {
        let m1 = (m0 + MC_AVX2).min(d.m);
        let tiles = (m1 - m0).div_ceil(MR);
        for k0 in (0..d.k).step_by(kcb) {
            let kc = kcb.min(d.k - k0);
            for p in 0..panels {
                let nv = (d.n - p * NR).min(NR);
                let quarters = nv.div_ceil(16);
                for q in 0..quarters {
                    // the next quarter's depth block: this panel's next quarter, the next
                    // panel's first, or the first panel's next depth block
                    let (next, next_kc) = if q + 1 < quarters {
                        ((p * d.k + k0) * NR + 16 * (q + 1), kc)
                    } else if p + 1 < panels {
                        (((p + 1) * d.k + k0) * NR, kc)
                    } else {
                        ((k0 + kc) * NR, kcb.min(d.k - k0 - kc))
                    };
                    let per_tile = next_kc.div_ceil(tiles);
                    let mut i = m0;
                    let mut ti = 0;
                    while i < m1 {
                        let rows = MR.min(m1 - i);
                        let lo = (ti * per_tile).min(next_kc);
                        let hi = ((ti + 1) * per_tile).min(next_kc);
                        ti += 1;
                        // SAFETY: offsets stay inside the operands the caller vouches for (the
                        // prefetch slice is empty where there is no next block).
                        unsafe {
                            let t = Tile {
                                pf_a: std::ptr::null(),
                                pf_b: bp.wrapping_add(next + lo * NR),
                                pf_b_lines: hi - lo,
                                kc,
                                a: a.add(i * d.lda + k0),
                                lda: d.lda,
                                b: bp.add((p * d.k + k0) * NR + 16 * q),
                                c: c.add(i * d.ldc + p * d.cps + 16 * q),
                                ldc: d.ldc,
                                nv: nv - 16 * q,
                                start: Start::of(init, k0, i, p * NR + 16 * q),
                                exp: exp.map(|(mx, sums)| (mx.add(i), sums.add(8 * i))),
                            };
                            match (rows, t.nv > 8) {
                                (6, true) => quarter::<6, 2>(&t),
                                (5, true) => quarter::<5, 2>(&t),
                                (4, true) => quarter::<4, 2>(&t),
                                (3, true) => quarter::<3, 2>(&t),
                                (2, true) => quarter::<2, 2>(&t),
                                (_, true) => quarter::<1, 2>(&t),
                                (6, false) => quarter::<6, 1>(&t),
                                (5, false) => quarter::<5, 1>(&t),
                                (4, false) => quarter::<4, 1>(&t),
                                (3, false) => quarter::<3, 1>(&t),
                                (2, false) => quarter::<2, 1>(&t),
                                (_, false) => quarter::<1, 1>(&t),
                            }
                        }
                        i += rows;
                    }
                }
            }
        }
    }
}

/// `R` rows × `8·V` columns (a quarter's 16, or 8 where no more are valid) of C over `kc` of
/// depth with AVX2 and FMA: `R·V` accumulators, `V` loads of B and `R` broadcasts of A per
/// `k`.
///
/// # Safety
/// As [`gemm_packed`], for this block's rows, columns and depth; AVX2 and FMA are enabled in
/// the caller.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn quarter<const R: usize, const V: usize>(t: &Tile) {
    use std::arch::x86_64::*;
    // SAFETY: AVX2 and FMA are enabled in the caller; the pointers index the block's operands
    // (loads of B stay inside the panel, stores of C inside its valid columns).
    unsafe {
        let mut acc: [[__m256; V]; R] = std::array::from_fn(|r| match t.start {
            Start::Bias(bp) => [_mm256_set1_ps(*bp.add(r)); V],
            Start::ColBias(bp) => std::array::from_fn(|v| _mm256_loadu_ps(bp.add(8 * v))),
            Start::Zero | Start::Load => [_mm256_setzero_ps(); V],
        });
        let rows: [*const f32; R] = std::array::from_fn(|r| t.a.add(r * t.lda));
        for j in 0..t.pf_b_lines {
            _mm_prefetch::<_MM_HINT_T0>(t.pf_b.add(j * NR) as *const i8);
        }
        if let Start::Load = t.start {
            for r in 0..R {
                _mm_prefetch::<_MM_HINT_T0>(t.c.add(r * t.ldc) as *const i8);
            }
        }
        for kk in 0..t.kc {
            let bk = t.b.add(kk * NR);
            let bv: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(bk.add(8 * v)));
            for r in 0..R {
                let av = _mm256_broadcast_ss(&*rows[r].add(kk));
                for v in 0..V {
                    acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
                }
            }
        }
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        if let Some((mx, sums)) = t.exp {
            let mut xs = [_mm256_setzero_ps(); 12];
            for r in 0..R {
                let m = _mm256_set1_ps(*mx.add(r));
                for v in 0..V {
                    xs[r * V + v] = _mm256_sub_ps(acc[r][v], m);
                }
            }
            // in groups of four, side by side (xs has room for the last group's padding)
            for g in (0..R * V).step_by(4) {
                let y = super::fastmath::exp2_avx2([xs[g], xs[g + 1], xs[g + 2], xs[g + 3]]);
                xs[g..g + 4].copy_from_slice(&y);
            }
            for r in 0..R {
                let at = t.c.add(r * t.ldc);
                let mut sum = _mm256_loadu_ps(sums.add(8 * r));
                for v in 0..V {
                    let n = t.nv.saturating_sub(8 * v).min(8) as i32;
                    let y = xs[r * V + v];
                    if n == 8 {
                        _mm256_storeu_ps(at.add(8 * v), y);
                        sum = _mm256_add_ps(sum, y);
                    } else if n > 0 {
                        // (masked stores are slow on some CPUs: only for partial vectors)
                        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane);
                        _mm256_maskstore_ps(at.add(8 * v), mask, y);
                        sum = _mm256_add_ps(sum, _mm256_and_ps(y, _mm256_castsi256_ps(mask)));
                    }
                }
                _mm256_storeu_ps(sums.add(8 * r), sum);
            }
            return;
        }
        for (r, row) in acc.iter().enumerate() {
            let at = t.c.add(r * t.ldc);
            for (v, &x) in row.iter().enumerate() {
                let p = at.add(8 * v);
                if t.nv >= 8 * (v + 1) {
                    let x = match t.start {
                        Start::Load => _mm256_add_ps(x, _mm256_loadu_ps(p)),
                        _ => x,
                    };
                    _mm256_storeu_ps(p, x);
                } else if t.nv > 8 * v {
                    let n = (t.nv - 8 * v) as i32;
                    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane);
                    let x = match t.start {
                        Start::Load => _mm256_add_ps(x, _mm256_maskload_ps(p, mask)),
                        _ => x,
                    };
                    _mm256_maskstore_ps(p, mask, x);
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Packs `b` (`[k][n]`) into zero-padded 64-column panels.
    fn pack(b: &[f32], k: usize, n: usize) -> Vec<f32> {
        let panels = n.div_ceil(NR);
        let mut p = vec![0f32; panels * k * NR];
        for kk in 0..k {
            for j in 0..n {
                p[((j / NR) * k + kk) * NR + j % NR] = b[kk * n + j];
            }
        }
        p
    }

    /// `bias`: 0 none, 1 per row, 2 per column, 3 adding to what C holds.
    fn check(m: usize, n: usize, k: usize, bias_kind: u8) {
        let (lda, ldc) = (k + 3, n + 5);
        let val = |i: usize, s: usize| ((i * 2654435761 + s) % 1000) as f32 / 500.0 - 1.0;
        let a: Vec<f32> = (0..m * lda).map(|i| val(i, 1)).collect();
        let b: Vec<f32> = (0..k * n).map(|i| val(i, 7)).collect();
        let bias: Vec<f32> = (0..m.max(n.div_ceil(NR) * NR)).map(|i| val(i, 3)).collect();
        let mut c = vec![9f32; m * ldc];
        let d = Dims {
            m,
            n,
            k,
            lda,
            ldc,
            cps: NR,
        };
        // SAFETY: the buffers have the sizes `gemm_packed` asks for.
        unsafe {
            gemm_packed(
                d,
                a.as_ptr(),
                pack(&b, k, n).as_ptr(),
                c.as_mut_ptr(),
                match bias_kind {
                    1 => Init::Rows(&bias),
                    2 => Init::Cols(&bias),
                    3 => Init::Accumulate,
                    _ => Init::Zero,
                },
            )
        };
        let mut worst = 0f32;
        for i in 0..m {
            for j in 0..ldc {
                let got = c[i * ldc + j];
                if j >= n {
                    assert_eq!(got, 9.0, "column {j} past n written");
                    continue;
                }
                let mut want = match bias_kind {
                    1 => bias[i] as f64,
                    2 => bias[j] as f64,
                    3 => 9.0,
                    _ => 0.0,
                };
                for kk in 0..k {
                    want += a[i * lda + kk] as f64 * b[kk * n + j] as f64;
                }
                worst = worst.max((got - want as f32).abs() / (1.0 + want.abs() as f32));
            }
        }
        assert!(worst < 1e-5, "m{m} n{n} k{k}: {worst}");
    }

    #[test]
    fn matches_a_plain_product() {
        if !available() {
            return;
        }
        check(13, 150, 300, 1); // row edges 6+6+1, a partial panel, one depth block of 300 (AVX2)
        check(100, 2560, 50, 1); // several row blocks (C's rows of 40 panels fill L2)
        check(6, 64, 128, 0);
        check(5, 17, 1, 1);
        check(12, 200, 129, 0);
        check(13, 150, 600, 2); // per-column bias: partial quarters and panels
        check(7, 9, 3, 2);
        check(520, 130, 700, 2); // AVX2: three row blocks (the last partial), three depth blocks
        check(50, 70, 300, 3); // adding to C from the first depth block on
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod speed {
    use super::*;

    /// GFLOP/s of one thread at U-Net shapes (`cargo test --release … -- --ignored`).
    #[test]
    #[ignore]
    fn gemm_f32_speed() {
        if !available() {
            return;
        }
        for &(m, n, k) in &[
            (6usize, 64usize, 256usize),
            (48, 64, 256),
            (320usize, 1024usize, 320usize),
            (640, 1024, 640),
            (1280, 256, 1280),
            (320, 256, 2880),
            (96, 1280, 1280), // a linear layer's task of 96 rows at 512 rows 1280 -> 1280
            (96, 5120, 640),
            (32, 4096, 40), // attention at the 64² level: scores, and their product with V
            (32, 40, 4096),
            (48, 128, 1280), // Winograd's products by channel blocks: 1280 channels at 16²
            (48, 32, 1280),  // and at 8²
        ] {
            let a = vec![0.5f32; m * k];
            let bp = vec![0.25f32; n.div_ceil(NR) * k * NR];
            let mut c = vec![0f32; m * n];
            let d = Dims {
                m,
                n,
                k,
                lda: k,
                ldc: n,
                cps: NR,
            };
            let reps = (4e9 / (2 * m * n * k) as f64) as usize + 1;
            let mut s = f64::MAX;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    // SAFETY: the buffers have the sizes `gemm_packed` asks for.
                    unsafe { gemm_packed(d, a.as_ptr(), bp.as_ptr(), c.as_mut_ptr(), Init::Zero) };
                }
                s = s.min(t.elapsed().as_secs_f64());
            }
            println!(
                "m{m} n{n} k{k}: {:.1} GFLOP/s",
                2.0 * (m * n * k * reps) as f64 / s / 1e9
            );
        }
    }
}
