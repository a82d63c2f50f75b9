//! A bf16 GEMM with f32 accumulation, `C += A · B`, for packed operands.
//!
//! Both operands hold bf16 values in pairs along K (one `u32` per pair, the even k in the low
//! half), the layout AVX-512 BF16's `vdpbf16ps` multiplies: each instruction adds, in 16 f32
//! lanes, `a.lo·b.lo + a.hi·b.hi`.
//! - A is packed in panels of [`MR`] rows: `a[(panel·kp + q)·MR + r] = (A[r][2q], A[r][2q+1])`;
//!   the micro-kernel broadcasts one pair per row.
//! - B is packed in panels of [`NR`] columns: `b[(panel·kp + q)·NR + j] = (B[2q][j], B[2q+1][j])`;
//!   the micro-kernel loads two 16-lane vectors per pair of k.
//!
//! Rows of C are contiguous along N, so the kernel serves both convolutions (A = weights,
//! B = image columns) and linear layers (A = activations, B = weights). Missing rows, columns
//! and the odd last k are zero in the packed operands. The f32 → bf16 conversion rounds to
//! nearest even. Without `avx512bf16` the AVX2 kernel (`gemm_bf16_avx2`) widens the pairs to
//! f32 and computes the same sums with FMA, and without AVX2 a portable kernel does.

/// Rows of A per panel (broadcast operand).
pub const MR: usize = 12;
/// Columns of B per panel (two 16-lane vectors).
pub const NR: usize = 32;
/// Pairs of k per cache block: one B block (`KC·NR` pairs, 16 KiB) stays in L1.
const KC: usize = 128;

/// The bf16 bits of `x`, rounded to nearest even (NaN stays NaN).
#[inline(always)]
pub fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    if x.is_nan() {
        return (b >> 16) | 0x40;
    }
    (b.wrapping_add(0x7fff + ((b >> 16) & 1))) >> 16
}

/// [`bf16_bits`] for values known to be finite (no NaN check).
#[inline(always)]
pub fn bf16_bits_finite(x: f32) -> u32 {
    let b = x.to_bits();
    (b.wrapping_add(0x7fff + ((b >> 16) & 1))) >> 16
}

/// The f32 value of bf16 bits.
#[inline(always)]
pub fn bf16_to_f32(bits: u32) -> f32 {
    f32::from_bits(bits << 16)
}

/// Whether the CPU has AVX-512 BF16 dot products.
pub fn has_bf16_dot() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `u32`s of a packed A with `m` rows and `k` columns.
pub fn packed_a_len(m: usize, k: usize) -> usize {
    m.div_ceil(MR) * k.div_ceil(2) * MR
}

/// `u32`s of a packed B with `k` rows and `n` columns.
pub fn packed_b_len(k: usize, n: usize) -> usize {
    n.div_ceil(NR) * k.div_ceil(2) * NR
}

#[inline(always)]
fn pack_a_body(src: &[f32], m: usize, k: usize, lda: usize, out: &mut [u32]) {
    let kp = k.div_ceil(2);
    for (p, panel) in out.chunks_exact_mut(kp * MR).enumerate() {
        for r in 0..MR {
            let row = p * MR + r;
            if row >= m {
                for q in 0..kp {
                    panel[q * MR + r] = 0;
                }
                continue;
            }
            let s = &src[row * lda..row * lda + k];
            for q in 0..k / 2 {
                panel[q * MR + r] = bf16_bits(s[2 * q]) | (bf16_bits(s[2 * q + 1]) << 16);
            }
            if k % 2 == 1 {
                panel[(kp - 1) * MR + r] = bf16_bits(s[k - 1]);
            }
        }
    }
}

simd_dispatch! {
    fn pack_a_portable(src: &[f32], m: usize, k: usize, lda: usize, out: &mut [u32]) => pack_a_body
}

/// Packs rows `A[i][j] = src[i·lda + j]` (`m`×`k`) into `out` ([`packed_a_len`] long).
pub fn pack_a(src: &[f32], m: usize, k: usize, lda: usize, out: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if has_bf16_dot() {
        assert!(out.len() >= packed_a_len(m, k));
        assert!(m == 0 || src.len() >= (m - 1) * lda + k);
        // SAFETY: the features were just detected.
        unsafe { pack_rows_avx512::<MR>(src, m, k, lda, out) };
        return;
    }
    pack_a_portable(src, m, k, lda, out)
}

/// Packs `m` rows `src[i·lda ..][..k]` into panels of `W` rows, pairs along the rows (A with
/// `W` = [`MR`], an n-major B with `W` = [`NR`]), with AVX-512 BF16 conversions: a panel's
/// rows are rounded 16 values at a time (`vcvtneps2bf16`, whose adjacent values are already
/// the packed pairs) into a row-major buffer, then moved to the panel's pair-major order;
/// ~10× the portable loop.
///
/// # Safety
/// The CPU has `avx512f` and `avx512bf16` (every memory access goes through checked slices).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pack_rows_avx512<const W: usize>(
    src: &[f32],
    m: usize,
    k: usize,
    lda: usize,
    out: &mut [u32],
) {
    use std::arch::x86_64::*;
    /// Pairs per buffered chunk of a panel.
    const QC: usize = 64;
    let kp = k.div_ceil(2);
    let mut buf = [[0u32; QC]; W];
    for (p, panel) in out.chunks_exact_mut(kp * W).enumerate() {
        for q0 in (0..kp).step_by(QC) {
            let qc = QC.min(kp - q0);
            for (r, row_buf) in buf.iter_mut().enumerate() {
                let row = p * W + r;
                if row >= m {
                    row_buf[..qc].fill(0);
                    continue;
                }
                let s = &src[row * lda + 2 * q0..row * lda + k.min(2 * (q0 + qc))];
                let mut chunks = s.chunks_exact(16);
                for (i, c) in (&mut chunks).enumerate() {
                    // SAFETY: 16 floats read from `c`, 8 pairs written inside row_buf.
                    unsafe {
                        let v = _mm512_loadu_ps(c.as_ptr());
                        let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
                        _mm256_storeu_si256(row_buf.as_mut_ptr().add(8 * i).cast(), h);
                    }
                }
                let done = (s.len() / 16) * 8;
                for (o, pair) in row_buf[done..qc]
                    .iter_mut()
                    .zip(chunks.remainder().chunks(2))
                {
                    let hi = pair.get(1).map_or(0, |&v| bf16_bits(v));
                    *o = bf16_bits(pair[0]) | (hi << 16);
                }
            }
            for q in 0..qc {
                let dst = &mut panel[(q0 + q) * W..(q0 + q + 1) * W];
                for (d, row_buf) in dst.iter_mut().zip(&buf) {
                    *d = row_buf[q];
                }
            }
        }
    }
}

#[inline(always)]
fn interleave(lo: &[f32], hi: Option<&[f32]>, out: &mut [u32]) {
    match hi {
        Some(hi) => {
            for ((o, &a), &b) in out.iter_mut().zip(lo).zip(hi) {
                *o = bf16_bits(a) | (bf16_bits(b) << 16);
            }
        }
        None => {
            for (o, &a) in out.iter_mut().zip(lo) {
                *o = bf16_bits(a);
            }
        }
    }
}

/// Packs B from a function that writes row `k` (all `n` columns) into a buffer: the source
/// of image columns and of k-major matrices. `out` is [`packed_b_len`] long.
#[inline(always)]
pub fn pack_b_rows_with(
    k: usize,
    n: usize,
    out: &mut [u32],
    rows: &mut Vec<f32>,
    mut row: impl FnMut(usize, &mut [f32]),
) {
    let kp = k.div_ceil(2);
    let panels = n.div_ceil(NR);
    rows.resize(2 * panels * NR, 0.0);
    let (r0, r1) = rows.split_at_mut(panels * NR);
    for q in 0..kp {
        row(2 * q, &mut r0[..n]);
        let has_hi = 2 * q + 1 < k;
        if has_hi {
            row(2 * q + 1, &mut r1[..n]);
        }
        for p in 0..panels {
            let dst = &mut out[(p * kp + q) * NR..][..NR];
            let c0 = p * NR;
            let w = NR.min(n - c0);
            interleave(
                &r0[c0..c0 + w],
                has_hi.then(|| &r1[c0..c0 + w]),
                &mut dst[..w],
            );
            dst[w..].fill(0);
        }
    }
}

#[cfg(test)]
#[inline(always)]
fn pack_b_body(src: &[f32], k: usize, n: usize, ldb: usize, out: &mut [u32], rows: &mut Vec<f32>) {
    pack_b_rows_with(k, n, out, rows, |i, r| {
        r.copy_from_slice(&src[i * ldb..i * ldb + n])
    });
}

simd_dispatch! {
    #[cfg(test)]
    /// Packs a k-major B, `B[i][j] = src[i·ldb + j]` (`k`×`n`), into `out`
    /// ([`packed_b_len`] long); `rows` is scratch.
    pub fn pack_b(src: &[f32], k: usize, n: usize, ldb: usize, out: &mut [u32], rows: &mut Vec<f32>) => pack_b_body
}

/// Packs an n-major B, `B[i][j] = src[j·ldb + i]` (a linear layer's `[out, in]` weight is B
/// with `k = in`, `n = out`), into `out` ([`packed_b_len`] long).
pub fn pack_b_transposed(src: &[f32], k: usize, n: usize, ldb: usize, out: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if has_bf16_dot() {
        assert!(out.len() >= packed_b_len(k, n));
        assert!(n == 0 || src.len() >= (n - 1) * ldb + k);
        // SAFETY: the features were just detected.
        unsafe { pack_rows_avx512::<NR>(src, n, k, ldb, out) };
        return;
    }
    pack_b_transposed_portable(src, k, n, ldb, out)
}

fn pack_b_transposed_portable(src: &[f32], k: usize, n: usize, ldb: usize, out: &mut [u32]) {
    let kp = k.div_ceil(2);
    for (p, panel) in out.chunks_exact_mut(kp * NR).enumerate() {
        for j in 0..NR {
            let col = p * NR + j;
            if col >= n {
                for q in 0..kp {
                    panel[q * NR + j] = 0;
                }
                continue;
            }
            let s = &src[col * ldb..col * ldb + k];
            for q in 0..kp {
                let lo = bf16_bits(s[2 * q]);
                let hi = s.get(2 * q + 1).map_or(0, |&v| bf16_bits(v));
                panel[q * NR + j] = lo | (hi << 16);
            }
        }
    }
}

/// What a GEMM adds its product to.
#[derive(Debug, Clone, Copy)]
pub enum Init<'a> {
    /// `C += A·B` (the tests check it; the kernels' users start from zero or a bias).
    #[cfg_attr(not(test), expect(dead_code))]
    Accumulate,
    /// `C = A·B`.
    Zero,
    /// `C[i][j] = bias[i] + (A·B)[i][j]` (`m` entries: a convolution's per-channel bias).
    RowBias(&'a [f32]),
    /// `C[i][j] = bias[j] + (A·B)[i][j]` (`n` entries: a linear layer's bias).
    ColBias(&'a [f32]),
}

/// [`Init`] for one tile: bias pointers at the tile's first row or column.
#[derive(Debug, Clone, Copy)]
pub(super) enum TileInit {
    Accumulate,
    Zero,
    RowBias(*const f32),
    ColBias(*const f32),
}

/// `C = init + A·B` for packed `a` (`m`×`k`) and `b` (`k`×`n`); `C[i][j]` at `c[i·ldc + j]`.
///
/// # Safety
/// `c` must be valid for reads and writes of `C[i][j]` for all `i < m`, `j < n`, and no
/// other thread may access those elements during the call.
///
/// # Panics
/// If a packed operand is shorter than its shape needs, or a bias than `m` (rows) or `n`
/// (columns).
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[u32],
    b: &[u32],
    c: *mut f32,
    ldc: usize,
    init: Init,
) {
    let kp = k.div_ceil(2);
    assert!(a.len() >= packed_a_len(m, k) && b.len() >= packed_b_len(k, n));
    match init {
        Init::RowBias(bias) => assert!(bias.len() >= m),
        Init::ColBias(bias) => assert!(bias.len() >= n),
        Init::Accumulate | Init::Zero => {}
    }
    #[cfg(target_arch = "x86_64")]
    if has_bf16_dot() {
        // SAFETY: the features were just detected; the caller vouches for `c`.
        unsafe { gemm_avx512(m, n, kp, a, b, c, ldc, init) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::avx2_fma() {
        // SAFETY: the features were just detected; the caller vouches for `c`.
        unsafe { super::gemm_bf16_avx2::gemm(m, n, kp, a, b, c, ldc, init) };
        return;
    }
    // SAFETY: the portable kernel needs only what our caller vouches for: `c` valid and
    // exclusive for the m×n C at stride `ldc` (the operand lengths were asserted above).
    unsafe { gemm_portable(m, n, kp, a, b, c, ldc, init) };
}

/// The block loops around a tile kernel `kern(kc, a, b, c, ldc, rows, cols, init)`. K is
/// cut into equal blocks of at most `kc_max` pairs; the first applies `init`, the rest
/// accumulate. Each B panel's block is passed to the tiles of every row panel in turn.
///
/// # Safety
/// `c` is valid for reads and writes of the `m`×`n` C at stride `ldc` and no one else touches
/// it during the call; `a` and `b` hold the packed panels of `m`×`2·kp` and `2·kp`×`n`.
/// `kern` is then called only with panel pointers inside `a` and `b` and tiles inside C.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn blocked(
    (m, n, kp): (usize, usize, usize),
    kc_max: usize,
    a: &[u32],
    b: &[u32],
    c: *mut f32,
    ldc: usize,
    init: Init,
    mut kern: impl FnMut(usize, *const u32, *const u32, *mut f32, usize, usize, usize, TileInit),
) {
    let blocks = kp.div_ceil(kc_max).max(1);
    let step = kp.div_ceil(blocks);
    for blk in 0..blocks {
        let k0 = blk * step;
        let kc = step.min(kp - k0.min(kp));
        for np in 0..n.div_ceil(NR) {
            let bp = b[(np * kp + k0) * NR..].as_ptr();
            let cols = NR.min(n - np * NR);
            for mp in 0..m.div_ceil(MR) {
                let ap = a[(mp * kp + k0) * MR..].as_ptr();
                let rows = MR.min(m - mp * MR);
                let tinit = match (blk, init) {
                    (0, Init::Zero) => TileInit::Zero,
                    (0, Init::RowBias(bias)) => TileInit::RowBias(bias[mp * MR..].as_ptr()),
                    (0, Init::ColBias(bias)) => TileInit::ColBias(bias[np * NR..].as_ptr()),
                    _ => TileInit::Accumulate,
                };
                // SAFETY: the tile lies inside C (caller) and the panels inside `a`, `b`.
                let ct = unsafe { c.add(mp * MR * ldc + np * NR) };
                kern(kc, ap, bp, ct, ldc, rows, cols, tinit);
            }
        }
    }
}

/// Adds a computed tile `buf` (`MR`×`NR`, stride `NR`) to its `init` and writes the
/// `rows`×`cols` corner of it to C.
///
/// # Safety
/// `c` valid for `rows`×`cols` with stride `ldc`; bias pointers for `rows`/`cols` entries.
pub(super) unsafe fn finish_partial(
    buf: &[f32; MR * NR],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    init: TileInit,
) {
    for (r, src) in buf.chunks_exact(NR).enumerate().take(rows) {
        // SAFETY: row r < rows of C (caller).
        let dst = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), cols) };
        for (j, (d, &v)) in dst.iter_mut().zip(src).enumerate() {
            *d = v + match init {
                TileInit::Accumulate => *d,
                TileInit::Zero => 0.0,
                // SAFETY: a row bias covers the `rows` rows of C (caller); r < rows.
                TileInit::RowBias(p) => unsafe { *p.add(r) },
                // SAFETY: a column bias covers the `cols` columns of C (caller); j < cols.
                TileInit::ColBias(p) => unsafe { *p.add(j) },
            };
        }
    }
}

/// [`gemm`] with the assembly tile kernel.
///
/// # Safety
/// The CPU has `avx512f` and `avx512bf16`; `c` as for [`gemm`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_avx512(
    m: usize,
    n: usize,
    kp: usize,
    a: &[u32],
    b: &[u32],
    c: *mut f32,
    ldc: usize,
    init: Init,
) {
    // SAFETY: C is valid and exclusive (our contract), as `blocked` needs; it hands `tile`
    // panels inside `a`, `b` and tiles inside C, and `tile`'s CPU features are ours.
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
                super::gemm_bf16_avx512::tile(kc, ap, bp, ct, ldc, rows, cols, ti)
            },
        )
    }
}

/// The same tile in portable code (bf16 pairs widened to f32).
#[inline(always)]
fn kernel_portable_body(kc: usize, a: &[u32], b: &[u32], acc: &mut [[f32; NR]; MR]) {
    for q in 0..kc {
        let bq = &b[q * NR..(q + 1) * NR];
        for (r, acc) in acc.iter_mut().enumerate() {
            let p = a[q * MR + r];
            let (alo, ahi) = (bf16_to_f32(p & 0xffff), bf16_to_f32(p >> 16));
            for (o, &bp) in acc.iter_mut().zip(bq) {
                *o += alo * bf16_to_f32(bp & 0xffff) + ahi * bf16_to_f32(bp >> 16);
            }
        }
    }
}

simd_dispatch! {
    fn kernel_portable(kc: usize, a: &[u32], b: &[u32], acc: &mut [[f32; NR]; MR]) => kernel_portable_body
}

/// [`gemm`] with the portable tile kernel.
///
/// # Safety
/// `c` as for [`gemm`].
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_portable(
    m: usize,
    n: usize,
    kp: usize,
    a: &[u32],
    b: &[u32],
    c: *mut f32,
    ldc: usize,
    init: Init,
) {
    // SAFETY: C is valid and exclusive (our contract), as `blocked` needs; the tile closure
    // gets panel pointers with `kc` pairs of MR (NR) values inside `a` (`b`) and a tile of C.
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
                let a = std::slice::from_raw_parts(ap, kc * MR);
                let b = std::slice::from_raw_parts(bp, kc * NR);
                let mut acc = [[0f32; NR]; MR];
                kernel_portable(kc, a, b, &mut acc);
                finish_partial(
                    acc.as_flattened().try_into().expect("MR·NR"),
                    ct,
                    ldc,
                    rows,
                    cols,
                    ti,
                );
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn round(x: f32) -> f64 {
        bf16_to_f32(bf16_bits(x)) as f64
    }

    /// Reference: bf16-rounded inputs, f64 sums; both the dispatched and the portable kernel,
    /// from each [`Init`] (C's old values, zero, a row bias, a column bias).
    fn check(m: usize, n: usize, k: usize, transposed_b: bool) {
        for mode in 0..4 {
            check_from(m, n, k, transposed_b, mode);
        }
    }

    fn check_from(m: usize, n: usize, k: usize, transposed_b: bool, mode: usize) {
        let a = rand(m * k, 1 + m as u64);
        let bsrc = rand(k * n, 7 + n as u64);
        let c0 = rand(m * n, 3);
        let mut pa = vec![0; packed_a_len(m, k)];
        pack_a(&a, m, k, k, &mut pa);
        let mut pb = vec![0; packed_b_len(k, n)];
        // B[i][j]: k-major source, or its transpose as a linear weight [n, k]
        let bij = |i: usize, j: usize| {
            if transposed_b {
                bsrc[j * k + i]
            } else {
                bsrc[i * n + j]
            }
        };
        if transposed_b {
            pack_b_transposed(&bsrc, k, n, k, &mut pb);
        } else {
            pack_b(&bsrc, k, n, n, &mut pb, &mut Vec::new());
        }
        let (rb, cb) = (rand(m, 11), rand(n, 12));
        let (init, start): (Init, Box<dyn Fn(usize, usize) -> f32>) = match mode {
            0 => (Init::Accumulate, Box::new(|i, j| c0[i * n + j])),
            1 => (Init::Zero, Box::new(|_, _| 0.0)),
            2 => (Init::RowBias(&rb), Box::new(|i, _| rb[i])),
            _ => (Init::ColBias(&cb), Box::new(|_, j| cb[j])),
        };
        let mut c = c0.clone();
        let mut cp = c0.clone();
        // the AVX2 tile wherever it runs (the dispatch prefers AVX-512 BF16's)
        let mut cv = c0.clone();
        // SAFETY: c, cp and cv are m×n with ldc n; the AVX2 GEMM runs only where its features are.
        unsafe {
            gemm(m, n, k, &pa, &pb, c.as_mut_ptr(), n, init);
            gemm_portable(m, n, k.div_ceil(2), &pa, &pb, cp.as_mut_ptr(), n, init);
            #[cfg(target_arch = "x86_64")]
            if crate::kernels::avx2_fma() {
                super::super::gemm_bf16_avx2::gemm(
                    m,
                    n,
                    k.div_ceil(2),
                    &pa,
                    &pb,
                    cv.as_mut_ptr(),
                    n,
                    init,
                );
            } else {
                cv.clone_from(&cp);
            }
            #[cfg(not(target_arch = "x86_64"))]
            cv.clone_from(&cp);
        }
        let mut worst = 0f64;
        for i in 0..m {
            for j in 0..n {
                let want = start(i, j) as f64
                    + (0..k)
                        .map(|l| round(a[i * k + l]) * round(bij(l, j)))
                        .sum::<f64>();
                let scale = (0..k)
                    .map(|l| (round(a[i * k + l]) * round(bij(l, j))).abs())
                    .sum::<f64>()
                    + 1.0;
                worst = worst.max((c[i * n + j] as f64 - want).abs() / scale);
                worst = worst.max((cp[i * n + j] as f64 - want).abs() / scale);
                worst = worst.max((cv[i * n + j] as f64 - want).abs() / scale);
            }
        }
        assert!(
            worst < 1e-5,
            "{m}x{n}x{k} transposed {transposed_b} init {mode}: {worst}"
        );
    }

    #[test]
    fn odd_shapes_match_reference() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (13, 33, 3),
            (12, 32, 2),
            (25, 47, 257),
            (7, 70, 300),
            (40, 5, 129),
            (24, 64, 600), // full tiles only, several k blocks
            (36, 96, 40),
        ] {
            check(m, n, k, false);
            check(m, n, k, true);
        }
    }

    #[test]
    fn packing_paths_agree() {
        for &(m, k, lda) in &[
            (13, 37, 40),
            (12, 256, 256),
            (5, 1, 3),
            (30, 161, 170),
            (70, 40, 320),
        ] {
            let src = rand(m * lda, 9 + k as u64);
            let mut fast = vec![7; packed_a_len(m, k)];
            let mut slow = vec![9; packed_a_len(m, k)];
            pack_a(&src, m, k, lda, &mut fast);
            pack_a_portable(&src, m, k, lda, &mut slow);
            assert_eq!(fast, slow, "{m}x{k} lda {lda}");
            // the same rows as an n-major B
            let mut fast = vec![7; packed_b_len(k, m)];
            let mut slow = vec![9; packed_b_len(k, m)];
            pack_b_transposed(&src, k, m, lda, &mut fast);
            pack_b_transposed_portable(&src, k, m, lda, &mut slow);
            assert_eq!(fast, slow, "B {k}x{m} ldb {lda}");
        }
    }

    #[test]
    fn portable_kernel_matches() {
        let (m, n, k) = (14, 35, 261);
        let a = rand(m * k, 5);
        let b = rand(k * n, 6);
        let mut pa = vec![0; packed_a_len(m, k)];
        pack_a(&a, m, k, k, &mut pa);
        let mut pb = vec![0; packed_b_len(k, n)];
        pack_b(&b, k, n, n, &mut pb, &mut Vec::new());
        let mut c1 = vec![0f32; m * n];
        let mut c2 = vec![0f32; m * n];
        // SAFETY: both are m×n with ldc n.
        unsafe {
            gemm(m, n, k, &pa, &pb, c1.as_mut_ptr(), n, Init::Accumulate);
            gemm_portable(
                m,
                n,
                k.div_ceil(2),
                &pa,
                &pb,
                c2.as_mut_ptr(),
                n,
                Init::Accumulate,
            );
        }
        for (x, y) in c1.iter().zip(&c2) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }

    /// Throughput on one thread and on two at once (each its own GEMM):
    /// `cargo test --release -p sumi-models gemm_bf16_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn gemm_bf16_speed() {
        let shape: Vec<usize> = std::env::var("GEMM_SHAPE")
            .unwrap_or_else(|_| "640,1024,2880".into())
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect();
        let (m, n, k) = (shape[0], shape[1], shape[2]);
        let reps = shape.get(3).copied().unwrap_or(1);
        let mut pa = vec![0; packed_a_len(m, k)];
        pack_a(&rand(m * k, 1), m, k, k, &mut pa);
        let mut pb = vec![0; packed_b_len(k, n)];
        pack_b(&rand(k * n, 2), k, n, n, &mut pb, &mut Vec::new());
        for threads in [1, 2] {
            for _ in 0..3 {
                let t = std::time::Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..threads {
                        s.spawn(|| {
                            let mut c = vec![0f32; m * n];
                            for _ in 0..reps {
                                // SAFETY: c is m×n.
                                unsafe { gemm(m, n, k, &pa, &pb, c.as_mut_ptr(), n, Init::Zero) };
                            }
                        });
                    }
                });
                let s = t.elapsed().as_secs_f64();
                let gf = 2.0 * (reps * threads * m * n * k) as f64 / s / 1e9;
                println!("{threads} thread(s): {gf:.1} GFLOP/s");
            }
        }
    }

    #[test]
    fn rounding_is_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // halfway between 1.0 and the next bf16: ties to even (1.0)
        assert_eq!(bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(bf16_bits(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert!(bf16_to_f32(bf16_bits(f32::NAN)).is_nan());
    }
}
