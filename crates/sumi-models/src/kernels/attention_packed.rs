//! Attention through the packed f32 GEMM ([`gemm_f32`]) for CPUs where the fused kernel of
//! [`super::flash`] does not run (AVX2 without AVX-512) and there are many keys: each
//! (batch, head)'s K is laid out once, transposed and scaled by 1/√d, in the GEMM's 64-column
//! panels, and V in panels of its columns. A task (a head and a block of query rows) then
//! computes its scores with one packed product (Q read in place) whose tiles store
//! `exp(score − first)` straight from the registers, `first` being the row's largest score over
//! the first 64 keys (a row whose true max lies so far above it that its sum gets huge is
//! computed again with its own max), and a second packed product straight
//! into the output, whose rows it divides by their sums. Against the two-pass softmax over the
//! stored scores it replaced, 2 threads, 4096 keys: width 40 61–69 → 68–74 GFLOP/s, width 64
//! 76–77 → 80–81. The generic GEMM the other path calls repacks K for every block of rows.

use rayon::prelude::*;

use super::attention::Qkv;
use super::fastmath::softmax_rows_unnormalised;
use super::gemm_f32::{self, Dims, Init, NR};
use super::SendPtr;

/// Keys from which this path takes the attention, at head widths up to [`MAX_WIDTH`] (the
/// U-Net's self-attention at 64² latents and larger). Measured against the generic GEMMs, 2
/// threads: 4096 keys at width 64 (SDXL's 64² level) 75–82 vs 65–67 GFLOP/s, at width 40
/// about even (62–77 vs 57–77); 1000 keys at width 80 71–73 vs 81–86, and 4096 keys at width
/// 512 (the VAE's) 41–45 vs 77–85: with few query rows per block K and V stream from memory
/// for every block.
const MIN_KEYS: usize = 4096;
const MAX_WIDTH: usize = 80;

/// Bytes of scores per task (a block of query rows × all keys).
const SCORE_BLOCK_BYTES: usize = 512 << 10;

/// Whether [`attention`] takes `m` keys at head width `d` on this CPU.
pub(crate) fn takes(m: usize, d: usize) -> bool {
    m >= MIN_KEYS && (1..=MAX_WIDTH).contains(&d) && !super::flash::available() && super::avx2_fma()
}

/// One (batch, head)'s K and V in the packed GEMM's panels.
struct HeadPanels {
    /// `[m.div_ceil(NR)][d][NR]`: K transposed and scaled, zero past the last key.
    kt: Vec<f32>,
    /// `[d.div_ceil(NR)][m][NR]`: V, zero past the head's last column.
    v: Vec<f32>,
}

fn head_panels(k: &[f32], v: &[f32], (m, d, c): (usize, usize, usize), scale: f32) -> HeadPanels {
    let mut kt = vec![0f32; m.div_ceil(NR) * d * NR];
    for (p, panel) in kt.chunks_exact_mut(d * NR).enumerate() {
        for (j, key) in (p * NR..m.min((p + 1) * NR)).enumerate() {
            for (dd, &x) in k[key * c..][..d].iter().enumerate() {
                panel[dd * NR + j] = x * scale;
            }
        }
    }
    let mut vp = vec![0f32; d.div_ceil(NR) * m * NR];
    for (p, panel) in vp.chunks_exact_mut(m * NR).enumerate() {
        let (j0, w) = (p * NR, NR.min(d - p * NR));
        for (key, row) in panel.chunks_exact_mut(NR).enumerate() {
            row[..w].copy_from_slice(&v[key * c + j0..][..w]);
        }
    }
    HeadPanels { kt, v: vp }
}

/// Softmax attention of `t` over `h` heads with scores scaled by `scale`, `[b, n, c]` out.
///
/// # Panics
/// Without AVX2 and FMA, or with heads wider than [`gemm_f32::EXP_MAX_DEPTH`] ([`takes`] is
/// false for both).
pub(crate) fn attention(t: Qkv, h: usize, scale: f32) -> Vec<f32> {
    let Qkv {
        q,
        k,
        v,
        b,
        n,
        m,
        c,
    } = t;
    let d = c / h;
    if d == 0 {
        return Vec::new();
    }
    assert!(
        super::avx2_fma() && d <= gemm_f32::EXP_MAX_DEPTH,
        "attention_packed: heads {d} wide need AVX2 and at most {} channels",
        gemm_f32::EXP_MAX_DEPTH
    );
    let heads: Vec<HeadPanels> = (0..b * h)
        .into_par_iter()
        .map(|bh| {
            let at = (bh / h) * m * c + (bh % h) * d;
            head_panels(&k[at..], &v[at..], (m, d, c), scale)
        })
        .collect();
    let rows = (SCORE_BLOCK_BYTES / 4 / m.max(1))
        .clamp(6, 512)
        .min(n.max(1));
    let blocks = n.div_ceil(rows);
    let mut out = vec![0f32; b * n * c];
    let out_ptr = SendPtr(out.as_mut_ptr());
    let out_ref = &out_ptr;
    let heads = &heads;
    (0..b * h * blocks).into_par_iter().for_each_init(
        || (Vec::<f32>::new(), Vec::<f32>::new(), Scratch::default()),
        |(scores, sums, scratch), task| {
            let (bh, blk) = (task / blocks, task % blocks);
            let (bi, hi) = (bh / h, bh % h);
            let r0 = blk * rows;
            let nr = rows.min(n - r0);
            scores.resize(nr * m, 0.0);
            sums.resize(nr, 0.0);
            let panels = &heads[bh];
            let scores_dims = Dims {
                m: nr,
                n: m,
                k: d,
                lda: c,
                ldc: m,
                cps: NR,
            };
            let q_rows = &q[(bi * n + r0) * c + hi * d..];
            scores_exp(scores_dims, q_rows, panels, scores, sums, scratch);
            // SAFETY: row bi·n + r0, column hi·d is inside the b·n×c output.
            let op = unsafe { out_ref.0.add((bi * n + r0) * c + hi * d) };
            let out_dims = Dims {
                m: nr,
                n: d,
                k: m,
                lda: m,
                ldc: c,
                cps: NR,
            };
            // SAFETY: `scores` is nr×m; the V panels hold d.div_ceil(NR)·m·NR floats; this
            // task alone writes rows r0..r0+nr × the head's d columns of the output (stride
            // c), and the GEMM touches no column past them.
            unsafe {
                gemm_f32::gemm_packed(out_dims, scores.as_ptr(), panels.v.as_ptr(), op, Init::Zero);
                for (r, s) in sums.iter().enumerate() {
                    let row = std::slice::from_raw_parts_mut(op.add(r * c), d);
                    let inv = 1.0 / s;
                    row.iter_mut().for_each(|x| *x *= inv);
                }
            }
        },
    );
    out
}

/// A thread's buffers for [`scores_exp`]: each row's largest score over the first panel of
/// keys, and 8 lane sums per row.
#[derive(Default)]
struct Scratch {
    firsts: Vec<f32>,
    lanes: Vec<f32>,
}

/// The row sums for which a fused row stands: under the upper end no score lay more than
/// ln(1e30) ≈ 69 above the subtracted value, short of the 88 where `exp` clamps; the lower end
/// is a guard (the first panel's largest score gives exp(0) = 1 to every sum). Rows outside
/// (or NaN) are computed again with their own max.
const FUSED_SUMS: std::ops::Range<f32> = 1e-25..1e30;

/// A task's unnormalised softmax scores (`scores`, `nr × m`) and their row sums, the
/// exponentials taken in the GEMM's registers against each row's largest score over the first
/// panel of keys (the softmax is the same whatever the subtracted value, and the true max
/// rarely lies far above it). Rows whose sum leaves [`FUSED_SUMS`] are computed again with
/// their own max, as the two-pass softmax does.
fn scores_exp(
    dims: Dims,
    q_rows: &[f32],
    panels: &HeadPanels,
    scores: &mut [f32],
    sums: &mut [f32],
    scratch: &mut Scratch,
) {
    let (nr, m) = (dims.m, dims.n);
    let first = Dims {
        n: m.min(NR),
        ..dims
    };
    // SAFETY: AVX2 and FMA are present (asserted in `attention`); Q's nr rows of the head's d
    // columns lie inside `q_rows` at stride c (`dims.lda`); the K panels hold
    // m.div_ceil(NR)·d·NR floats; `scores` is nr×m, and the first product writes only its
    // first panel's columns (where the second writes next).
    unsafe {
        gemm_f32::gemm_packed(
            first,
            q_rows.as_ptr(),
            panels.kt.as_ptr(),
            scores.as_mut_ptr(),
            Init::Zero,
        )
    };
    let Scratch { firsts, lanes } = scratch;
    firsts.clear();
    firsts.extend((0..nr).map(|r| {
        let row = &scores[r * m..][..first.n];
        row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
    }));
    lanes.clear();
    lanes.resize(8 * nr, 0.0);
    // SAFETY: as above; d ≤ EXP_MAX_DEPTH (asserted) is one depth block, `firsts` has nr
    // values and `lanes` 8·nr.
    unsafe {
        gemm_f32::gemm_packed_exp(
            dims,
            q_rows.as_ptr(),
            panels.kt.as_ptr(),
            scores.as_mut_ptr(),
            firsts,
            lanes,
        )
    };
    for (r, s) in sums.iter_mut().enumerate().take(nr) {
        *s = lanes[8 * r..8 * r + 8].iter().sum();
        if FUSED_SUMS.contains(s) {
            continue;
        }
        let row = &mut scores[r * m..(r + 1) * m];
        let one = Dims { m: 1, ..dims };
        // SAFETY: as above, for row r alone.
        unsafe {
            gemm_f32::gemm_packed(
                one,
                q_rows[r * dims.lda..].as_ptr(),
                panels.kt.as_ptr(),
                row.as_mut_ptr(),
                Init::Zero,
            )
        };
        softmax_rows_unnormalised(row, m, std::slice::from_mut(s));
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// The packed path's largest difference from the naive product for `q` `[b, n, c]` over
    /// `k`, `v` `[b, m, c]`.
    fn error(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> f32 {
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (qs, ks, vs) = (flat(q), flat(k), flat(v));
        let (b, n, c) = q.dims3().unwrap();
        let t = Qkv {
            q: &qs,
            k: &ks,
            v: &vs,
            b,
            n,
            m: k.dim(1).unwrap(),
            c,
        };
        let scale = 1.0 / ((c / heads) as f32).sqrt();
        let got = Tensor::from_vec(attention(t, heads, scale), (b, n, c), q.device()).unwrap();
        let want = super::super::attention::tests::naive(q, k, v, heads);
        crate::kernels::max_abs_diff(&got, &want)
    }

    /// The packed path against the reference product wherever AVX2 and FMA run (also on
    /// AVX-512 CPUs, where the dispatch prefers the fused kernel): head widths 40 (a partial
    /// quarter), 64, 80 and 160 (two and three panels of V), partial key panels, blocks of
    /// query rows with a short last one.
    #[test]
    fn matches_the_naive_product() {
        if !super::super::avx2_fma() {
            return;
        }
        let dev = Device::Cpu;
        for (m, c, heads, n) in [
            (1100, 80, 2, 150),
            (1024, 128, 2, 70),
            (4100, 160, 2, 40),
            (1030, 160, 1, 301),
            (77, 40, 1, 9),
        ] {
            let q = Tensor::randn(0f32, 1.0, (2, n, c), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (2, m, c), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (2, m, c), &dev).unwrap();
            let err = error(&q, &k, &v, heads);
            assert!(err < 1e-4, "{m} keys, {c} channels, {heads} heads: {err}");
        }
        // the fused exponentials' fallback: two keys beyond the first panel score ~140 above
        // every key in it, 1.9 apart, so the fused sums leave their range and the rows are
        // computed again with their own max (clamped at exp(88), the two would weigh the same
        // and their products with V overflow)
        let (m, c, n) = (300, 40, 13);
        let spike = |t: Tensor, rows: &[(usize, f32)]| {
            let mut v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for &(r, at) in rows {
                v[r * c] = at;
            }
            Tensor::from_vec(v, t.dims(), &dev).unwrap()
        };
        let every: Vec<_> = (0..n).map(|r| (r, 30.0)).collect();
        let q = spike(Tensor::randn(0f32, 0.1, (1, n, c), &dev).unwrap(), &every);
        let k = Tensor::randn(0f32, 0.1, (1, m, c), &dev).unwrap();
        let k = spike(k, &[(200, 30.0), (250, 29.6)]);
        let v = Tensor::randn(0f32, 1.0, (1, m, c), &dev).unwrap();
        let err = error(&q, &k, &v, 1);
        assert!(err < 1e-4, "two keys far above the first panel's: {err}");
        // heads of width 0: an empty output, no panic (and the dispatch leaves them alone)
        let t = Qkv {
            q: &[],
            k: &[],
            v: &[],
            b: 2,
            n: 5,
            m: 4096,
            c: 0,
        };
        assert!(attention(t, 2, 1.0).is_empty());
        assert!(!takes(4096, 0));
    }

    /// The packed path against the generic one at shapes the dispatch leaves to the generic
    /// GEMMs (fewer keys than [`MIN_KEYS`] or heads wider than [`MAX_WIDTH`]; raise them here
    /// to compare at others): `ATTN_SHAPE=keys,channels,heads cargo test --release -p
    /// sumi-models --lib attention_packed_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn attention_packed_speed() {
        let v: Vec<usize> = std::env::var("ATTN_SHAPE")
            .unwrap_or_else(|_| "1000,640,8".into())
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect();
        let (m, c, heads) = (v[0], v[1], v[2]);
        assert!(
            !takes(m, c / heads),
            "a shape the dispatch leaves to the generic GEMMs"
        );
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, m, c), &dev).unwrap();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = 1.0 / ((c / heads) as f32).sqrt();
        let flops = 4.0 * (2 * m * m * c) as f64;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            super::super::attention::attention(&x, &x, &x, heads).unwrap();
            let generic = flops / t.elapsed().as_secs_f64() / 1e9;
            let t = std::time::Instant::now();
            let qkv = Qkv {
                q: &xs,
                k: &xs,
                v: &xs,
                b: 2,
                n: m,
                m,
                c,
            };
            attention(qkv, heads, scale);
            let packed = flops / t.elapsed().as_secs_f64() / 1e9;
            println!("{m} keys, {c} channels, {heads} heads: generic {generic:.1}, packed {packed:.1} GFLOP/s");
        }
    }
}
