//! 3×3 convolution (stride 1, padding 1) of f32 NCHW tensors by Winograd's F(2×2, 3×3) on
//! CPUs with AVX-512 or AVX2+FMA: every 2×2 block of outputs comes from a 4×4 input tile
//! through 16 products instead of 36, so the multiply-adds drop 2.25× at the cost of linear
//! transforms of the inputs, weights and outputs.
//!
//! The weights go to `U = G g Gᵀ` (16 values per input/output channel pair) at each call,
//! which is cheap next to the products for layers up to a few hundred channels (the U-Net's
//! 320- and 640-channel levels, the VAE's 256 and 512). Tasks take blocks of tiles across
//! batch items: each writes its tiles' `V = Bᵀ d B` straight into the panels of
//! [`super::gemm_f32`] (one set per transform position), runs the 16 products
//! `M_ξ = U_ξ V_ξ` there, and writes `Y = Aᵀ M A` plus the bias to the output. The input and
//! output transforms take 16 tiles per vector with AVX-512 and 8 with AVX2, where the tile
//! rows allow (see `vector_shapes`); one tile at a time elsewhere.
//!
//! F(2×2, 3×3)'s transforms use only 0, ±1 and ±½, so its rounding stays close to the direct
//! sum's (the tests hold it to 1e-4 of candle's convolution).

use rayon::prelude::*;

use super::{gemm_f32, SendPtr, Unfilled};

/// Tiles per task (whole 64-column panels; with the vector transforms, the whole tile rows
/// that fit).
const TASK_TILES: usize = 256;

/// `[cout][16][cin]`: position ξ = 4·i + j of `G g Gᵀ` for each channel pair (so `U_ξ` is
/// the rows `ξ·cin ..` at stride `16·cin`).
fn transform_weights(w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let mut u = vec![0f32; cout * 16 * cin];
    u.par_chunks_mut(16 * cin)
        .zip(w.par_chunks(9 * cin))
        .for_each(|(dst, g)| transform_channel(g, dst, cin, cin));
    u
}

/// One output channel's `G g Gᵀ`: `w` is its `[cin][3][3]` weights; position ξ of input
/// channel `ci` goes to `dst[ξ · stride + ci]`. (Eight channels at a time by AVX2 gathers
/// measured slower than this on Zen 3.)
pub(super) fn transform_channel(w: &[f32], dst: &mut [f32], cin: usize, stride: usize) {
    for ci in 0..cin {
        let g = &w[ci * 9..][..9];
        // t = G g (4×3), then t Gᵀ (4×4)
        let mut t = [[0f32; 3]; 4];
        for c in 0..3 {
            let (a, b, d) = (g[c], g[3 + c], g[6 + c]);
            t[0][c] = a;
            t[1][c] = 0.5 * (a + b + d);
            t[2][c] = 0.5 * (a - b + d);
            t[3][c] = d;
        }
        for (i, r) in t.iter().enumerate() {
            let v = [
                r[0],
                0.5 * (r[0] + r[1] + r[2]),
                0.5 * (r[0] - r[1] + r[2]),
                r[2],
            ];
            for (j, x) in v.into_iter().enumerate() {
                dst[(4 * i + j) * stride + ci] = x;
            }
        }
    }
}

/// `Bᵀ d B` of a 4×4 tile (rows of `d`).
#[inline(always)]
pub(super) fn input_tile(d: &[[f32; 4]; 4]) -> [f32; 16] {
    let mut t = [[0f32; 4]; 4];
    for c in 0..4 {
        t[0][c] = d[0][c] - d[2][c];
        t[1][c] = d[1][c] + d[2][c];
        t[2][c] = d[2][c] - d[1][c];
        t[3][c] = d[1][c] - d[3][c];
    }
    let mut v = [0f32; 16];
    for (i, r) in t.iter().enumerate() {
        v[4 * i] = r[0] - r[2];
        v[4 * i + 1] = r[1] + r[2];
        v[4 * i + 2] = r[2] - r[1];
        v[4 * i + 3] = r[1] - r[3];
    }
    v
}

/// `Aᵀ m A` (2×2) of one tile's 16 products.
#[inline(always)]
pub(super) fn output_tile(m: &[f32; 16]) -> [[f32; 2]; 2] {
    let mut t = [[0f32; 4]; 2];
    for c in 0..4 {
        t[0][c] = m[c] + m[4 + c] + m[8 + c];
        t[1][c] = m[4 + c] - m[8 + c] - m[12 + c];
    }
    [
        [t[0][0] + t[0][1] + t[0][2], t[0][1] - t[0][2] - t[0][3]],
        [t[1][0] + t[1][1] + t[1][2], t[1][1] - t[1][2] - t[1][3]],
    ]
}

/// A tile's item, top-left input pixel (−1 at the borders), and whether all 16 of its inputs
/// lie inside the picture.
pub(super) type TileAt = (usize, isize, isize, bool);

/// The coordinates of tiles `t0 .. t0 + nt` (row-major over items, tile rows, tiles).
pub(super) fn tile_coords(
    coords: &mut Vec<TileAt>,
    (t0, nt): (usize, usize),
    (th, tw): (usize, usize),
    (h, w): (usize, usize),
) {
    coords.clear();
    coords.extend((t0..t0 + nt).map(|t| {
        let (bi, ty, tx) = (t / (th * tw), (t / tw) % th, t % tw);
        let (y0, x0) = (2 * ty as isize - 1, 2 * tx as isize - 1);
        let inside = y0 >= 0 && x0 >= 0 && y0 + 4 <= h as isize && x0 + 4 <= w as isize;
        (bi, y0, x0, inside)
    }));
}

/// The input transform one tile at a time (any size): `V[ξ][panel][ci][lane]` for input
/// channels `c0 .. c0 + nc` of `cin` (`ci` counted from `c0`).
pub(super) fn inputs_scalar(
    x: &[f32],
    v: &mut [f32],
    coords: &[TileAt],
    (cin, h, w): (usize, usize, usize),
    (c0, nc): (usize, usize),
    panels: usize,
) {
    const NR: usize = gemm_f32::NR;
    let hw = h * w;
    for ci in 0..nc {
        for (j, &(bi, y0, x0, inside)) in coords.iter().enumerate() {
            let plane = &x[(bi * cin + c0 + ci) * hw..][..hw];
            let mut d = [[0f32; 4]; 4];
            if inside {
                let base = y0 as usize * w + x0 as usize;
                for (r, row) in d.iter_mut().enumerate() {
                    row.copy_from_slice(&plane[base + r * w..][..4]);
                }
            } else {
                for (r, row) in d.iter_mut().enumerate() {
                    let y = y0 + r as isize;
                    if y < 0 || y >= h as isize {
                        continue;
                    }
                    for (c, val) in row.iter_mut().enumerate() {
                        let xx = x0 + c as isize;
                        if xx >= 0 && xx < w as isize {
                            *val = plane[y as usize * w + xx as usize];
                        }
                    }
                }
            }
            let tv = input_tile(&d);
            let (p, lane) = (j / NR, j % NR);
            for (xi, &val) in tv.iter().enumerate() {
                v[((xi * panels + p) * nc + ci) * NR + lane] = val;
            }
        }
    }
}

/// The output transform one tile at a time: `Aᵀ M A` plus the bias, the pixels inside the
/// picture written through `out` (the task's own tiles). `m` holds `cout` channels (`bias`
/// theirs), which are channels `c0 ..` of an output of `ctot`.
pub(super) fn outputs_scalar(
    m: &[f32],
    out: &SendPtr,
    bias: &[f32],
    coords: &[TileAt],
    (cout, h, w): (usize, usize, usize),
    (c0, ctot): (usize, usize),
    panels: usize,
) {
    const NR: usize = gemm_f32::NR;
    let hw = h * w;
    for (c, &bc) in bias.iter().enumerate().take(cout) {
        for (j, &(bi, y0, x0, _)) in coords.iter().enumerate() {
            let (p, lane) = (j / NR, j % NR);
            let mt: [f32; 16] =
                std::array::from_fn(|xi| m[((xi * panels + p) * cout + c) * NR + lane]);
            let y = output_tile(&mt);
            let (oy0, ox0) = ((y0 + 1) as usize, (x0 + 1) as usize);
            for (r, row) in y.iter().enumerate() {
                let oy = oy0 + r;
                if oy >= h {
                    continue;
                }
                for (cc, &val) in row.iter().enumerate() {
                    let ox = ox0 + cc;
                    if ox < w {
                        // SAFETY: pixel (oy, ox) of channel c0 + c of item bi belongs to
                        // this task alone; it lies inside the b·ctot·h·w output.
                        unsafe { *out.0.add((bi * ctot + c0 + c) * hw + oy * w + ox) = val + bc };
                    }
                }
            }
        }
    }
}

/// Whether the vector transforms apply: even sizes, tile rows in whole groups of 16 (the
/// U-Net's and the VAE's sizes from 32×32 up, in steps of 32). Their tasks take whole tile
/// rows.
pub(crate) fn vector_shapes(h: usize, w: usize) -> bool {
    let tw = w / 2;
    h.is_multiple_of(2) && w.is_multiple_of(2) && tw > 0 && tw.is_multiple_of(16)
}

/// The four input rows of tile row `ty` (rows `2·ty − 1 ..`) into `buf` (`4 · (w + 2)`
/// floats), each with a zero column on either side; rows outside the picture are zeros.
fn padded_rows(buf: &mut [f32], plane: &[f32], ty: usize, (h, w): (usize, usize)) {
    let wp = w + 2;
    for r in 0..4 {
        let dst = &mut buf[r * wp..][..wp];
        match (2 * ty + r).checked_sub(1).filter(|&y| y < h) {
            Some(y) => {
                dst[0] = 0.0;
                dst[1..=w].copy_from_slice(&plane[y * w..][..w]);
                dst[w + 1] = 0.0;
            }
            None => dst.fill(0.0),
        }
    }
}

/// The input transform with AVX2 and FMA for a task of whole tile rows, 8 tiles at a time
/// (as [`inputs_avx512`]; the even and odd columns split by a shuffle and a lane permute).
///
/// # Safety
/// AVX2 is present; `v` holds `16 · panels · cin · NR` floats; `x` is `[b, cin, h, w]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)] // the column pass indexes four rows at once
unsafe fn inputs_avx2(
    x: &[f32],
    v: &mut [f32],
    buf: &mut Vec<f32>,
    (cin, h, w): (usize, usize, usize),
    (t0, nt, panels): (usize, usize, usize),
) {
    use std::arch::x86_64::*;
    const NR: usize = gemm_f32::NR;
    let (th, tw, hw) = (h / 2, w / 2, h * w);
    let wp = w + 2;
    buf.clear();
    buf.resize(4 * wp, 0.0);
    // even and odd elements of (l, h): shuffle within 128-bit lanes, then order the 64-bit
    // pairs [l0 l2 | h0 h2 | l4 l6 | h4 h6] → [l0 l2 l4 l6 h0 h2 h4 h6]
    #[inline(always)]
    unsafe fn split(l: __m256, h: __m256) -> (__m256, __m256) {
        // SAFETY: register-only; AVX2 is enabled in the caller.
        unsafe {
            let e = _mm256_shuffle_ps::<0b10_00_10_00>(l, h);
            let o = _mm256_shuffle_ps::<0b11_01_11_01>(l, h);
            let order = |x: __m256| {
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(x)))
            };
            (order(e), order(o))
        }
    }
    // SAFETY: loads stay inside the four padded rows (index ≤ 2·(tw−8) + 17 = w + 1) and
    // stores inside `v` (checked sizes); AVX2 is present.
    unsafe {
        for ci in 0..cin {
            for tr in 0..nt / tw {
                let row_t = t0 / tw + tr;
                let (bi, ty) = (row_t / th, row_t % th);
                let plane = &x[(bi * cin + ci) * hw..][..hw];
                padded_rows(buf, plane, ty, (h, w));
                let bp = buf.as_ptr();
                for g in 0..tw / 8 {
                    let base = 16 * g;
                    let rp: [[__m256; 4]; 4] = std::array::from_fn(|r| {
                        let at = bp.add(r * wp + base);
                        let (e0, e1) = split(_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8)));
                        let (e2, e3) =
                            split(_mm256_loadu_ps(at.add(2)), _mm256_loadu_ps(at.add(10)));
                        [
                            _mm256_sub_ps(e0, e2),
                            _mm256_add_ps(e1, e2),
                            _mm256_sub_ps(e2, e1),
                            _mm256_sub_ps(e1, e3),
                        ]
                    });
                    let jt = tr * tw + 8 * g;
                    let (p, lane) = (jt / NR, jt % NR);
                    for j in 0..4 {
                        let col = [
                            _mm256_sub_ps(rp[0][j], rp[2][j]),
                            _mm256_add_ps(rp[1][j], rp[2][j]),
                            _mm256_sub_ps(rp[2][j], rp[1][j]),
                            _mm256_sub_ps(rp[1][j], rp[3][j]),
                        ];
                        for (i, &val) in col.iter().enumerate() {
                            let xi = 4 * i + j;
                            let at = ((xi * panels + p) * cin + ci) * NR + lane;
                            _mm256_storeu_ps(v[at..][..8].as_mut_ptr(), val);
                        }
                    }
                }
            }
        }
    }
}

/// The output transform with AVX2 and FMA for a task of whole tile rows, 8 tiles at a time:
/// `Aᵀ M A` plus the bias into the NCHW output (the even and odd output columns interleaved
/// by unpacks and a lane permute).
///
/// # Safety
/// AVX2 is present; `m` holds `16 · panels · cout · NR` floats; `out` is the
/// `[b, cout, h, w]` output, whose pixels of these tiles no one else writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn outputs_avx2(
    m: &[f32],
    out: *mut f32,
    bias: &[f32],
    (cout, h, w): (usize, usize, usize),
    (t0, nt, panels): (usize, usize, usize),
) {
    use std::arch::x86_64::*;
    const NR: usize = gemm_f32::NR;
    let (th, tw, hw) = (h / 2, w / 2, h * w);
    // SAFETY: reads stay inside `m` (checked sizes), writes inside the tiles' output rows;
    // AVX2 is present.
    unsafe {
        for c in 0..cout {
            let bv = _mm256_set1_ps(bias[c]);
            for tr in 0..nt / tw {
                let row_t = t0 / tw + tr;
                let (bi, ty) = (row_t / th, row_t % th);
                let dst = out.add((bi * cout + c) * hw + 2 * ty * w);
                for g in 0..tw / 8 {
                    let jt = tr * tw + 8 * g;
                    let (p, lane) = (jt / NR, jt % NR);
                    let mv: [__m256; 16] = std::array::from_fn(|xi| {
                        _mm256_loadu_ps(
                            m[((xi * panels + p) * cout + c) * NR + lane..][..8].as_ptr(),
                        )
                    });
                    for r in 0..2 {
                        let s: [__m256; 4] = std::array::from_fn(|cc| {
                            if r == 0 {
                                _mm256_add_ps(_mm256_add_ps(mv[cc], mv[4 + cc]), mv[8 + cc])
                            } else {
                                _mm256_sub_ps(_mm256_sub_ps(mv[4 + cc], mv[8 + cc]), mv[12 + cc])
                            }
                        });
                        let y0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s[0], s[1]), s[2]), bv);
                        let y1 = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(s[1], s[2]), s[3]), bv);
                        let (lo, hi) = (_mm256_unpacklo_ps(y0, y1), _mm256_unpackhi_ps(y0, y1));
                        let row = dst.add(r * w + 16 * g);
                        _mm256_storeu_ps(row, _mm256_permute2f128_ps::<0x20>(lo, hi));
                        _mm256_storeu_ps(row.add(8), _mm256_permute2f128_ps::<0x31>(lo, hi));
                    }
                }
            }
        }
    }
}

/// `[0, 2, …, 30]` and `[1, 3, …, 31]`: the even and odd elements of two vectors.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn deinterleave_indices() -> (std::arch::x86_64::__m512i, std::arch::x86_64::__m512i) {
    use std::arch::x86_64::*;
    // SAFETY: register-only; AVX-512F is enabled in the callers.
    unsafe {
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        (even, _mm512_add_epi32(even, _mm512_set1_epi32(1)))
    }
}

/// The input transform for a task of whole tile rows, 16 tiles at a time (see
/// [`vector_shapes`]): `V[ξ][panel][ci][lane]` for tiles `t0 ..` (`nt` of them).
///
/// # Safety
/// AVX-512F is present; `v` holds `16 · panels · cin · NR` floats; `x` is `[b, cin, h, w]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)] // the column pass indexes four rows at once
unsafe fn inputs_avx512(
    x: &[f32],
    v: &mut [f32],
    buf: &mut Vec<f32>,
    (cin, h, w): (usize, usize, usize),
    (t0, nt, panels): (usize, usize, usize),
) {
    use std::arch::x86_64::*;
    const NR: usize = gemm_f32::NR;
    let (th, tw, hw) = (h / 2, w / 2, h * w);
    let wp = w + 2;
    buf.clear();
    buf.resize(4 * wp, 0.0);
    // SAFETY: loads stay inside the four padded rows (index ≤ 2·(tw−16) + 33 = w + 1) and
    // stores inside `v` (checked sizes); AVX-512F is present.
    unsafe {
        let (even, odd) = deinterleave_indices();
        for ci in 0..cin {
            for tr in 0..nt / tw {
                let row_t = t0 / tw + tr;
                let (bi, ty) = (row_t / th, row_t % th);
                let plane = &x[(bi * cin + ci) * hw..][..hw];
                padded_rows(buf, plane, ty, (h, w));
                let bp = buf.as_ptr();
                for g in 0..tw / 16 {
                    let base = 32 * g;
                    let rp: [[__m512; 4]; 4] = std::array::from_fn(|r| {
                        let at = bp.add(r * wp + base);
                        let (l0, h0) = (_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16)));
                        let (l2, h2) = (_mm512_loadu_ps(at.add(2)), _mm512_loadu_ps(at.add(18)));
                        let e0 = _mm512_permutex2var_ps(l0, even, h0);
                        let e1 = _mm512_permutex2var_ps(l0, odd, h0);
                        let e2 = _mm512_permutex2var_ps(l2, even, h2);
                        let e3 = _mm512_permutex2var_ps(l2, odd, h2);
                        [
                            _mm512_sub_ps(e0, e2),
                            _mm512_add_ps(e1, e2),
                            _mm512_sub_ps(e2, e1),
                            _mm512_sub_ps(e1, e3),
                        ]
                    });
                    let jt = tr * tw + 16 * g;
                    let (p, lane) = (jt / NR, jt % NR);
                    for j in 0..4 {
                        let col = [
                            _mm512_sub_ps(rp[0][j], rp[2][j]),
                            _mm512_add_ps(rp[1][j], rp[2][j]),
                            _mm512_sub_ps(rp[2][j], rp[1][j]),
                            _mm512_sub_ps(rp[1][j], rp[3][j]),
                        ];
                        for (i, &val) in col.iter().enumerate() {
                            let xi = 4 * i + j;
                            let at = ((xi * panels + p) * cin + ci) * NR + lane;
                            _mm512_storeu_ps(v[at..][..16].as_mut_ptr(), val);
                        }
                    }
                }
            }
        }
    }
}

/// The output transform for a task of whole tile rows, 16 tiles at a time: `Aᵀ M A` plus the
/// bias into the NCHW output.
///
/// # Safety
/// AVX-512F is present; `m` holds `16 · panels · cout · NR` floats; `out` is the
/// `[b, cout, h, w]` output, whose pixels of these tiles no one else writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn outputs_avx512(
    m: &[f32],
    out: *mut f32,
    bias: &[f32],
    (cout, h, w): (usize, usize, usize),
    (t0, nt, panels): (usize, usize, usize),
) {
    use std::arch::x86_64::*;
    const NR: usize = gemm_f32::NR;
    let (th, tw, hw) = (h / 2, w / 2, h * w);
    // SAFETY: reads stay inside `m` (checked sizes), writes inside the tiles' output rows;
    // AVX-512F is present.
    unsafe {
        let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
        for c in 0..cout {
            let bv = _mm512_set1_ps(bias[c]);
            for tr in 0..nt / tw {
                let row_t = t0 / tw + tr;
                let (bi, ty) = (row_t / th, row_t % th);
                let dst = out.add((bi * cout + c) * hw + 2 * ty * w);
                for g in 0..tw / 16 {
                    let jt = tr * tw + 16 * g;
                    let (p, lane) = (jt / NR, jt % NR);
                    let mv: [__m512; 16] = std::array::from_fn(|xi| {
                        _mm512_loadu_ps(
                            m[((xi * panels + p) * cout + c) * NR + lane..][..16].as_ptr(),
                        )
                    });
                    for r in 0..2 {
                        let s: [__m512; 4] = std::array::from_fn(|cc| {
                            if r == 0 {
                                _mm512_add_ps(_mm512_add_ps(mv[cc], mv[4 + cc]), mv[8 + cc])
                            } else {
                                _mm512_sub_ps(_mm512_sub_ps(mv[4 + cc], mv[8 + cc]), mv[12 + cc])
                            }
                        });
                        let y0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s[0], s[1]), s[2]), bv);
                        let y1 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(s[1], s[2]), s[3]), bv);
                        let row = dst.add(r * w + 32 * g);
                        _mm512_storeu_ps(row, _mm512_permutex2var_ps(y0, lo, y1));
                        _mm512_storeu_ps(row.add(16), _mm512_permutex2var_ps(y0, hi, y1));
                    }
                }
            }
        }
    }
}

/// Convolves `x` (`[b, cin, h, w]`) with `w` (`[cout, cin, 3, 3]`) and `bias`, stride 1,
/// padding 1: the `[b, cout, h, w]` output. `None` where the CPU lacks both AVX-512 and
/// AVX2+FMA (the GEMM's instruction sets).
pub fn conv3x3(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    (b, cin, h, wd): (usize, usize, usize, usize),
    cout: usize,
) -> Option<Vec<f32>> {
    const NR: usize = gemm_f32::NR;
    if !gemm_f32::available() {
        return None;
    }
    let (th, tw) = (h.div_ceil(2), wd.div_ceil(2));
    let tiles = b * th * tw;
    let u = transform_weights(w, cout, cin);
    // the vector transforms (AVX-512's, else AVX2's: `available` holds one of them)
    let vector = vector_shapes(h, wd);
    let wide = super::avx512();
    let per_task = if vector {
        (TASK_TILES / tw).max(1) * tw
    } else {
        TASK_TILES
    };
    let blocks = tiles.div_ceil(per_task);
    let hw = h * wd;
    let mut out = Unfilled::new(b * cout * hw);
    let out_ptr = out.ptr();
    let out_ref = &out_ptr;
    let u = &u;
    (0..blocks).into_par_iter().for_each_init(
        || {
            (
                Vec::<f32>::new(),
                Vec::<f32>::new(),
                Vec::new(),
                Vec::<f32>::new(),
            )
        },
        |(v, m, coords, buf), blk| {
            let t0 = blk * per_task;
            let nt = per_task.min(tiles - t0);
            let panels = nt.div_ceil(NR);
            v.resize(16 * panels * cin * NR, 0.0);
            m.resize(16 * panels * cout * NR, 0.0);
            #[cfg(target_arch = "x86_64")]
            if vector {
                // SAFETY: AVX-512 is present (`wide`), else AVX2 (`available`); `v` was sized
                // above.
                unsafe {
                    match wide {
                        true => inputs_avx512(x, v, buf, (cin, h, wd), (t0, nt, panels)),
                        false => inputs_avx2(x, v, buf, (cin, h, wd), (t0, nt, panels)),
                    }
                };
            }
            if !vector {
                tile_coords(coords, (t0, nt), (th, tw), (h, wd));
                inputs_scalar(x, v, coords, (cin, h, wd), (0, cin), panels);
            }
            for xi in 0..16 {
                let d = gemm_f32::Dims {
                    m: cout,
                    n: nt,
                    k: cin,
                    lda: 16 * cin,
                    ldc: NR,
                    cps: cout * NR,
                };
                // SAFETY: the GEMM runs here (`available`); U_ξ is cout rows of cin at stride
                // 16·cin, V_ξ holds `panels` panels of cin×NR, M_ξ `panels`×cout×NR, all sized
                // above.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    gemm_f32::gemm_packed(
                        d,
                        u[xi * cin..].as_ptr(),
                        v[xi * panels * cin * NR..].as_ptr(),
                        m[xi * panels * cout * NR..].as_mut_ptr(),
                        gemm_f32::Init::Zero,
                    );
                }
                #[cfg(not(target_arch = "x86_64"))]
                let _ = d;
            }
            #[cfg(target_arch = "x86_64")]
            if vector {
                // SAFETY: AVX-512 is present (`wide`), else AVX2 (`available`); `m` was sized
                // above; this task's tiles are its own output pixels.
                unsafe {
                    let dims = (cout, h, wd);
                    match wide {
                        true => outputs_avx512(m, out_ref.0, bias, dims, (t0, nt, panels)),
                        false => outputs_avx2(m, out_ref.0, bias, dims, (t0, nt, panels)),
                    }
                };
            }
            if !vector {
                outputs_scalar(m, out_ref, bias, coords, (cout, h, wd), (0, cout), panels);
            }
        },
    );
    // SAFETY: the tiles cover every output pixel of every item and channel.
    Some(unsafe { out.filled() })
}

#[cfg(test)]
pub(super) mod tests {
    use candle_core::{Device, Tensor};

    /// A 3×3 stride-1 padding-1 convolution over flat NCHW buffers, as [`super::conv3x3`].
    pub(in crate::kernels) type Conv3x3 =
        fn(&[f32], &[f32], &[f32], (usize, usize, usize, usize), usize) -> Option<Vec<f32>>;

    fn check(b: usize, cin: usize, cout: usize, h: usize, w: usize) {
        check_conv(super::conv3x3, (b, cin, cout), (h, w));
    }

    /// `conv` against candle's convolution plus the bias, within 1e-4 of the output's scale
    /// (nothing checked where it returns `None`: a CPU without the GEMM).
    pub(in crate::kernels) fn check_conv(
        conv: Conv3x3,
        (b, cin, cout): (usize, usize, usize),
        (h, w): (usize, usize),
    ) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev).unwrap();
        let wt = Tensor::randn(0f32, 0.3, (cout, cin, 3, 3), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
        let want = x
            .conv2d(&wt, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, cout, 1, 1)).unwrap())
            .unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let Some(got) = conv(&flat(&x), &flat(&wt), &flat(&bias), (b, cin, h, w), cout) else {
            return;
        };
        let want = flat(&want);
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
        assert!(
            err < 1e-4 * scale.max(1.0),
            "b{b} {cin}->{cout} {h}x{w}: {err} of {scale}"
        );
    }

    #[test]
    fn matches_candle_conv2d() {
        check(2, 5, 7, 9, 11); // odd sizes: partial tiles at the bottom and right
        check(1, 64, 13, 16, 16);
        check(2, 3, 70, 33, 20); // several tasks across batch items, an edge of A's rows
        check(2, 5, 66, 32, 32); // the vector transforms: tasks of 16 tile rows of 16
        check(1, 4, 9, 64, 64); // tile rows of 32 (two groups), 4 per task
        check(1, 2, 3, 10, 128); // one tile row of 64 per task
        check(2, 3, 5, 12, 96); // tile rows of 48, 5 per task
    }
}
