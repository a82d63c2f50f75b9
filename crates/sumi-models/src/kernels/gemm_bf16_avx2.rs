//! The AVX2 GEMM of [`gemm_bf16`](super::gemm_bf16) for CPUs without AVX-512 BF16: the same
//! packed pairs widened to f32 (a bf16 value is the high half of its f32), then f32 fused
//! multiply-adds, so the products and f32 sums are those of `vdpbf16ps` (each pair's two
//! products added in turn: the order of the additions differs from the dot instruction's).
//!
//! Depth blocks are [`KC`] pairs. Each B panel's block is widened once (`2·KC` rows of
//! [`NR`] floats, 16 KiB, in L1 while every row panel passes over it), each A panel's block
//! once per tile (`2·KC` rows of [`MR`] floats). A tile is then four register blocks of
//! 6 rows × 16 columns, as the f32 AVX2 GEMM's: per k, 2 loads of B and 6 broadcasts of A
//! feed 12 fused multiply-adds.

use std::arch::x86_64::*;

use super::gemm_bf16::{blocked, finish_partial, Init, TileInit, MR, NR};

/// Pairs of k per depth block.
const KC: usize = 64;
/// Rows per register block.
const RB: usize = 6;
/// Columns per register block (two vectors).
const CB: usize = 16;

/// `C = init + A·B` for packed `a` (`m`×`2·kp`) and `b` (`2·kp`×`n`), as
/// [`gemm_bf16::gemm`](super::gemm_bf16::gemm).
///
/// # Safety
/// The CPU has `avx2` and `fma`; `c` is valid for reads and writes of the `m`×`n` C at stride
/// `ldc` and no one else touches it during the call; `a` and `b` hold the packed panels; the
/// bias of `init` has `m` (rows) or `n` (columns) entries.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm(
    m: usize,
    n: usize,
    kp: usize,
    a: &[u32],
    b: &[u32],
    c: *mut f32,
    ldc: usize,
    init: Init,
) {
    let mut b_wide = vec![0f32; 2 * KC * NR];
    let mut a_wide = [0f32; 2 * KC * MR];
    let mut b_at = std::ptr::null();
    // SAFETY: C as our contract; `blocked` hands the closure panel blocks of `kc` pairs
    // inside `a` and `b` and tiles inside C.
    unsafe {
        blocked(
            (m, n, kp),
            KC,
            a,
            b,
            c,
            ldc,
            init,
            |kc, ap, bp, ct, ldc, rows, cols, ti| {
                if bp != b_at {
                    widen::<NR>(std::slice::from_raw_parts(bp, kc * NR), &mut b_wide);
                    b_at = bp;
                }
                widen::<MR>(std::slice::from_raw_parts(ap, kc * MR), &mut a_wide);
                tile(kc, &a_wide, &b_wide, ct, ldc, rows, cols, ti)
            },
        )
    }
}

/// Widens pairs of `W` values per k (`pairs[q·W + j]`) into rows of `W` floats:
/// `out[2q·W + j]` the low halves, `out[(2q+1)·W + j]` the high.
#[inline(always)]
fn widen<const W: usize>(pairs: &[u32], out: &mut [f32]) {
    for (p, o) in pairs.chunks_exact(W).zip(out.chunks_exact_mut(2 * W)) {
        let (lo, hi) = o.split_at_mut(W);
        for ((l, h), &x) in lo.iter_mut().zip(hi).zip(p) {
            *l = f32::from_bits(x << 16);
            *h = f32::from_bits(x & 0xffff_0000);
        }
    }
}

/// One `MR`×`NR` tile over `kc` pairs from widened panels, `rows`×`cols` of it written to C.
///
/// # Safety
/// AVX2 and FMA are enabled in the caller; the panels hold `kc` widened pairs; C's
/// `rows`×`cols` elements (and the bias entries `init` names) are valid and ours.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    init: TileInit,
) {
    assert!(a.len() >= 2 * kc * MR && b.len() >= 2 * kc * NR);
    let (a, b) = (a.as_ptr(), b.as_ptr());
    let blocks = || {
        (0..MR)
            .step_by(RB)
            .flat_map(|r0| (0..NR).step_by(CB).map(move |j0| (r0, j0)))
    };
    if rows == MR && cols == NR {
        for (r0, j0) in blocks() {
            let init = match init {
                // SAFETY: a row bias covers the tile's rows (caller).
                TileInit::RowBias(p) => TileInit::RowBias(unsafe { p.add(r0) }),
                // SAFETY: a column bias covers the tile's columns (caller).
                TileInit::ColBias(p) => TileInit::ColBias(unsafe { p.add(j0) }),
                other => other,
            };
            // SAFETY: the panels hold 2·kc rows (asserted); the block's rows and columns lie
            // inside the full tile of C, which is ours.
            unsafe {
                block(
                    2 * kc,
                    a.add(r0),
                    b.add(j0),
                    c.add(r0 * ldc + j0),
                    ldc,
                    init,
                )
            };
        }
        return;
    }
    let mut buf = [0f32; MR * NR];
    for (r0, j0) in blocks() {
        let out = buf[r0 * NR + j0..].as_mut_ptr();
        // SAFETY: as above, into the local MR×NR tile.
        unsafe { block(2 * kc, a.add(r0), b.add(j0), out, NR, TileInit::Zero) };
    }
    // SAFETY: rows×cols of C and the init's entries are valid (caller).
    unsafe { finish_partial(&buf, c, ldc, rows, cols, init) };
}

/// [`RB`] rows × [`CB`] columns over `k` widened rows: A from `a` (stride `MR`), B from `b`
/// (stride `NR`), the sums added to `init` and written to `c` (row stride `ldc`).
///
/// # Safety
/// AVX2 and FMA are enabled in the caller; the pointers cover `k` rows of the block, `c` its
/// rows and columns, a bias its rows or columns.
#[inline(always)]
unsafe fn block(k: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, init: TileInit) {
    // SAFETY: as the function's contract.
    unsafe {
        let mut acc: [[__m256; 2]; RB] = std::array::from_fn(|r| match init {
            TileInit::RowBias(p) => [_mm256_set1_ps(*p.add(r)); 2],
            TileInit::ColBias(p) => [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))],
            TileInit::Zero | TileInit::Accumulate => [_mm256_setzero_ps(); 2],
        });
        for kk in 0..k {
            let bk = b.add(kk * NR);
            let (b0, b1) = (_mm256_loadu_ps(bk), _mm256_loadu_ps(bk.add(8)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(kk * MR + r));
                acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (v, &x) in acc.iter().enumerate() {
                let at = c.add(r * ldc + 8 * v);
                let x = match init {
                    TileInit::Accumulate => _mm256_add_ps(x, _mm256_loadu_ps(at)),
                    _ => x,
                };
                _mm256_storeu_ps(at, x);
            }
        }
    }
}
