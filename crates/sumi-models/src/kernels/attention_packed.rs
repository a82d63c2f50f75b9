//! Attention through the packed f32 GEMM ([`gemm_f32`]) for CPUs where the fused kernel of
//! [`super::flash`] does not run (AVX2 without AVX-512) and there are many keys. Each (batch,
//! head)'s K is laid out once, transposed and scaled by log₂(e)/√d, in the GEMM's 64-key
//! panels, and V in blocks of the same 64 keys (each in 64-column panels). A task takes a
//! head and a block of [`ROWS`] query rows and walks the key panels: one packed product (Q
//! read in place) whose tiles store `2^(score − first)` straight from the registers into a
//! panel of scores that stays in L1, `first` being the row's largest score over the first
//! panel, then a second packed product adding that panel's part of the output. A row whose
//! true max lies so far above `first` that its sum gets huge is computed again with its own
//! max. Against the products over all keys at once (a 32-row block's scores, 512 KiB, written
//! to L2 and read back), both with the base-2 exponentials, run alternately in one process
//! (2 threads, width 40, best of 20): 4096 keys 108–113 → 122–125 GFLOP/s, 9216 keys 96–99 →
//! 110–113. In the U-Net's profile, with the exponentials also changed: 72 → 88 GFLOP/s.

use rayon::prelude::*;

use super::attention::Qkv;
use super::fastmath::{softmax_rows_unnormalised, LOG2E};
use super::gemm_f32::{self, Dims, Init, NR};
use super::{SendPtr, Unfilled};

/// Keys from which this path takes the attention, at head widths up to [`MAX_WIDTH`] (the
/// U-Net's self-attention at 64² latents and larger). Measured against the generic GEMMs, 2
/// threads: 4096 keys at width 64 (SDXL's 64² level) 75–82 vs 65–67 GFLOP/s, at width 40
/// about even (62–77 vs 57–77); 1000 keys at width 80 71–73 vs 81–86, and 4096 keys at width
/// 512 (the VAE's) 41–45 vs 77–85: with few query rows per block K and V stream from memory
/// for every block. (Measured before the 64-key panels.)
const MIN_KEYS: usize = 4096;
const MAX_WIDTH: usize = 80;

/// Query rows per task: its Q rows, its panel of scores (`ROWS × 64`), its output rows and a
/// panel of K and V stay in L1 and L2. Throughput over the products over all keys (in one
/// process, 2 threads, width 40): 24 rows 1.08–1.09×, 30 1.13–1.15×, 36 1.08–1.14×, 42
/// 1.08–1.15×, 48 1.09–1.19×, 60 1.10–1.11× at 4096 keys; 36 and 60 even at 9216.
const ROWS: usize = 36;

/// Whether [`attention`] takes `m` keys at head width `d` on this CPU.
pub(crate) fn takes(m: usize, d: usize) -> bool {
    m >= MIN_KEYS && (1..=MAX_WIDTH).contains(&d) && !super::flash::available() && super::avx2_fma()
}

/// One (batch, head)'s K and V in the packed GEMM's panels.
struct HeadPanels {
    /// `[m.div_ceil(NR)][d][NR]`: K transposed and scaled, zero past the last key.
    kt: Vec<f32>,
    /// `[m.div_ceil(NR)][d.div_ceil(NR)][NR][NR]`: each 64-key block of V in panels of its
    /// columns, zero past the last key and past the head's last column.
    v: Vec<f32>,
}

impl HeadPanels {
    /// Column panels of V.
    fn v_panels(d: usize) -> usize {
        d.div_ceil(NR)
    }

    /// Adds `p` (`rows × NR`: key panel `panel`'s weights for `rows` query rows) times that
    /// panel's V rows to `o` (`rows × d`).
    fn add_v_product(&self, panel: usize, d: usize, p: &[f32], o: &mut [f32]) {
        let rows = o.len() / d;
        let len = Self::v_panels(d) * NR * NR;
        let block = &self.v[panel * len..][..len];
        assert!(p.len() >= rows * NR, "add_v_product: {} weights", p.len());
        let dims = Dims {
            m: rows,
            n: d,
            k: NR,
            lda: NR,
            ldc: d,
            cps: NR,
        };
        // SAFETY: panels are made only in `attention`, which asserted AVX2 and FMA; `p` holds
        // rows×NR floats, the block d.div_ceil(NR)·NR·NR, `o` rows×d.
        unsafe {
            gemm_f32::gemm_packed(
                dims,
                p.as_ptr(),
                block.as_ptr(),
                o.as_mut_ptr(),
                Init::Accumulate,
            )
        };
    }
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
    let vp = HeadPanels::v_panels(d);
    let mut vb = vec![0f32; m.div_ceil(NR) * vp * NR * NR];
    for key in 0..m {
        let (p, row) = (key / NR, key % NR);
        for cp in 0..vp {
            let (j0, w) = (cp * NR, NR.min(d - cp * NR));
            vb[((p * vp + cp) * NR + row) * NR..][..w].copy_from_slice(&v[key * c + j0..][..w]);
        }
    }
    HeadPanels { kt, v: vb }
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
            head_panels(&k[at..], &v[at..], (m, d, c), scale * LOG2E)
        })
        .collect();
    let rows = ROWS.min(n.max(1));
    let blocks = n.div_ceil(rows);
    let mut out = Unfilled::new(b * n * c);
    let out_ptr = out.ptr();
    let out_ref = &out_ptr;
    let heads = &heads;
    (0..b * h * blocks)
        .into_par_iter()
        .for_each_init(Scratch::default, |scratch, task| {
            let (bh, blk) = (task / blocks, task % blocks);
            let (bi, hi) = (bh / h, bh % h);
            let r0 = blk * rows;
            let nr = rows.min(n - r0);
            let at = (bi * n + r0) * c + hi * d;
            // SAFETY: rows r0..r0+nr × the head's d columns of the b·n×c output (stride c)
            // are this task's alone.
            let op = SendPtr(unsafe { out_ref.0.add(at) });
            let rows = Rows {
                q: &q[at..],
                c,
                nr,
                m,
                d,
            };
            block(rows, &heads[bh], scratch, op);
        });
    // SAFETY: the tasks cover every row of every (batch, head), all d columns of each.
    unsafe { out.filled() }
}

/// A task's query rows: `nr` rows of `d` values, `c` apart, over `m` keys.
struct Rows<'a> {
    q: &'a [f32],
    c: usize,
    nr: usize,
    m: usize,
    d: usize,
}

/// A thread's buffers for [`block`].
#[derive(Default)]
struct Scratch {
    /// A panel of exponentiated scores, `[nr][NR]`.
    p: Vec<f32>,
    /// The output rows before their division by the sums, `[nr][d]`.
    o: Vec<f32>,
    /// Each row's largest score over the first panel of keys, and 8 lane sums per row.
    firsts: Vec<f32>,
    lanes: Vec<f32>,
}

/// The row sums for which a fused row stands: under the upper end no score lay more than
/// log₂(1e30) ≈ 100 above the subtracted value, short of the 127 where `2^x` clamps; the
/// lower end is a guard (the first panel's largest score gives 2^0 = 1 to every sum). Rows
/// outside (or NaN) are computed again with their own max.
const FUSED_SUMS: std::ops::Range<f32> = 1e-25..1e30;

/// One task: the attention of `t`'s rows over the head's panels into `out` (rows `t.c`
/// apart).
fn block(t: Rows, hp: &HeadPanels, s: &mut Scratch, out: SendPtr) {
    let Rows { q, c, nr, m, d } = t;
    let Scratch {
        p,
        o,
        firsts,
        lanes,
    } = s;
    p.clear();
    p.resize(nr * NR, 0.0);
    o.clear();
    o.resize(nr * d, 0.0);
    let first = Dims {
        m: nr,
        n: m.min(NR),
        k: d,
        lda: c,
        ldc: NR,
        cps: NR,
    };
    // SAFETY: AVX2 and FMA are present (asserted in `attention`); Q's nr rows of d values lie
    // inside `q` at stride c; the K panels hold m.div_ceil(NR)·d·NR floats; `p` is nr×NR.
    unsafe {
        gemm_f32::gemm_packed(
            first,
            q.as_ptr(),
            hp.kt.as_ptr(),
            p.as_mut_ptr(),
            Init::Zero,
        )
    };
    firsts.clear();
    firsts.extend((0..nr).map(|r| {
        let row = &p[r * NR..][..first.n];
        row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
    }));
    lanes.clear();
    lanes.resize(8 * nr, 0.0);
    for panel in 0..m.div_ceil(NR) {
        // (a partial last panel leaves the earlier panel's values in its columns past `valid`:
        // finite, they meet V's zero rows there, and the lane sums take valid columns only)
        let valid = NR.min(m - panel * NR);
        let scores = Dims { n: valid, ..first };
        // SAFETY: as above for this panel's d·NR floats of K; d ≤ EXP_MAX_DEPTH (asserted),
        // `firsts` has nr values and `lanes` 8·nr.
        unsafe {
            gemm_f32::gemm_packed_exp2(
                scores,
                q.as_ptr(),
                hp.kt[panel * d * NR..].as_ptr(),
                p.as_mut_ptr(),
                firsts,
                lanes,
            )
        };
        hp.add_v_product(panel, d, p, o);
    }
    for r in 0..nr {
        let mut sum: f32 = lanes[8 * r..8 * r + 8].iter().sum();
        let row = &mut o[r * d..][..d];
        if !FUSED_SUMS.contains(&sum) {
            sum = row_again(&q[r * c..], hp, (m, d), row);
        }
        let inv = 1.0 / sum;
        // SAFETY: row r of the task's output rows, its d columns.
        let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(r * c), d) };
        dst.iter_mut()
            .zip(row.iter())
            .for_each(|(x, y)| *x = y * inv);
    }
}

/// One query row's output over all `m` keys computed again with the row's own max, as the
/// two-pass softmax does, into `o` (`d` values); returns the row's sum.
fn row_again(q: &[f32], hp: &HeadPanels, (m, d): (usize, usize), o: &mut [f32]) -> f32 {
    let panels = m.div_ceil(NR);
    let mut scores = vec![0f32; panels * NR];
    let one = Dims {
        m: 1,
        n: m,
        k: d,
        lda: d,
        ldc: m,
        cps: NR,
    };
    // SAFETY: as in `block`, for one row (the first d values of `q`) into `scores`.
    unsafe {
        gemm_f32::gemm_packed(
            one,
            q.as_ptr(),
            hp.kt.as_ptr(),
            scores.as_mut_ptr(),
            Init::Zero,
        )
    };
    // the scores are in base 2: back to e's
    scores[..m]
        .iter_mut()
        .for_each(|x| *x *= std::f32::consts::LN_2);
    let mut sum = 0f32;
    softmax_rows_unnormalised(&mut scores[..m], m, std::slice::from_mut(&mut sum));
    o.fill(0.0);
    for panel in 0..panels {
        hp.add_v_product(panel, d, &scores[panel * NR..], o);
    }
    sum
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
    /// quarter), 64, 80 and 160 (two and three panels of V), partial last key panels (and a
    /// single partial one), blocks of query rows with a short last one.
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
            (30, 40, 1, 7),
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

    /// GFLOP/s of the packed path, best of 9, at `ATTN_SHAPE=keys,channels,heads` (default
    /// the U-Net's 64² level, batch 2), and of the generic GEMMs where the dispatch leaves the
    /// shape to them: `cargo test --release -p sumi-models --lib attention_packed_speed --
    /// --ignored --nocapture`.
    #[test]
    #[ignore]
    fn attention_packed_speed() {
        let v: Vec<usize> = std::env::var("ATTN_SHAPE")
            .unwrap_or_else(|_| "4096,320,8".into())
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect();
        let (m, c, heads) = (v[0], v[1], v[2]);
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, m, c), &dev).unwrap();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = 1.0 / ((c / heads) as f32).sqrt();
        let flops = 4.0 * (2 * m * m * c) as f64;
        let (mut generic, mut packed) = (f64::MAX, f64::MAX);
        for _ in 0..9 {
            if !takes(m, c / heads) {
                let t = std::time::Instant::now();
                super::super::attention::attention(&x, &x, &x, heads).unwrap();
                generic = generic.min(t.elapsed().as_secs_f64());
            }
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
            packed = packed.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{m} keys, {c} channels, {heads} heads: generic {:.1}, packed {:.1} GFLOP/s",
            flops / generic / 1e9,
            flops / packed / 1e9
        );
    }
}
