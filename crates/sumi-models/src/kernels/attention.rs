//! Multi-head attention for `[batch, tokens, heads·dim]` tensors without forming the full
//! `tokens × keys` score matrix: work is split into (batch, head, block of query rows) tasks
//! run on rayon's pool. With many keys on AVX-512 (self-attention) each task runs the fused
//! kernel of [`super::flash`], on AVX2 the packed products of [`super::attention_packed`];
//! otherwise it computes its block of scores with one GEMM, an
//! in-place unnormalised softmax, and a second GEMM into the output, then divides by the row
//! sums. Inputs are read in their natural layout (no head transposes); the output comes back
//! in it.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{attention_packed, f32_slice, flash, SendPtr, Unfilled};

use super::fastmath::softmax_rows_unnormalised;

/// An attention op's inputs: `q` `[b, n, c]`, `k` and `v` `[b, m, c]` as f32 slices.
pub(crate) struct Qkv<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub b: usize,
    pub n: usize,
    pub m: usize,
    pub c: usize,
}

impl<'a> Qkv<'a> {
    /// Reads and checks the three inputs of `op` for `heads` heads (c a multiple of them).
    pub(crate) fn read(
        op: &str,
        heads: usize,
        (s1, l1): (&'a CpuStorage, &Layout),
        (s2, l2): (&'a CpuStorage, &Layout),
        (s3, l3): (&'a CpuStorage, &Layout),
    ) -> candle_core::Result<Self> {
        let (q, k, v) = (
            f32_slice(s1, l1, op, "q")?,
            f32_slice(s2, l2, op, "k")?,
            f32_slice(s3, l3, op, "v")?,
        );
        let (b, n, c) = l1.shape().dims3()?;
        let (bk, m, ck) = l2.shape().dims3()?;
        if l3.shape().dims3()? != (bk, m, ck) || bk != b || ck != c || heads == 0 || c % heads != 0
        {
            return Err(candle_core::Error::Msg(format!(
                "{op}: shapes q {:?} k {:?} v {:?} with {heads} heads",
                l1.shape(),
                l2.shape(),
                l3.shape(),
            )));
        }
        Ok(Self {
            q,
            k,
            v,
            b,
            n,
            m,
            c,
        })
    }
}

/// Where the fused kernel ([`flash`]) takes the attention: from 4096 keys at head widths up
/// to 80 (the U-Net's self-attention at 64² latents and larger), and from 8192 keys at any
/// width (the VAE's at 1024² pictures). Elsewhere the two GEMMs are as fast or faster
/// (measured: 1024 keys at width 80, 4096 at width 512, 256 at width 160), and
/// cross-attention's 77 keys stay with them too.
const FLASH_MIN_KEYS: usize = 4096;
const FLASH_MAX_WIDTH: usize = 80;
const FLASH_ANY_KEYS: usize = 8192;

/// The fused path: each (batch, head)'s K and V laid out once, then tasks of query rows.
fn fused(t: Qkv, h: usize, scale: f32) -> Vec<f32> {
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
    let heads: Vec<flash::HeadPanels> = (0..b * h)
        .into_par_iter()
        .map(|bh| {
            let (bi, hi) = (bh / h, bh % h);
            let at = bi * m * c + hi * d;
            flash::head_panels(&k[at..], &v[at..], m, d, c)
        })
        .collect();
    // query rows per task: the block's accumulators and Q rows stay in L1 with a key panel
    let rows = if d <= 64 {
        72
    } else if d <= 80 {
        48
    } else {
        24
    };
    let blocks = n.div_ceil(rows);
    let mut out = Unfilled::new(b * n * c);
    let out_ptr = out.ptr();
    let out_ref = &out_ptr;
    let heads = &heads;
    (0..b * h * blocks)
        .into_par_iter()
        .for_each_init(flash::Scratch::default, |scratch, task| {
            let (bh, blk) = (task / blocks, task % blocks);
            let (bi, hi) = (bh / h, bh % h);
            let r0 = blk * rows;
            let nr = rows.min(n - r0);
            let at = (bi * n + r0) * c + hi * d;
            // SAFETY: AVX-512 is present (`flash::available`); rows r0..r0+nr × the head's
            // d columns of q and of the output (stride c) are inside the b·n×c buffers, and
            // this task alone writes those of the output; `heads[bh]` was made for m keys of
            // width d.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                flash::attention_head_block(
                    q[at..].as_ptr(),
                    c,
                    nr,
                    &heads[bh],
                    (m, d),
                    scale,
                    out_ref.0.add(at),
                    c,
                    scratch,
                );
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (at, nr, scratch, out_ref, heads, scale);
        });
    // SAFETY: the tasks cover every row of every (batch, head), all d columns of each.
    unsafe { out.filled() }
}

/// Bytes of scores one task holds at a time.
const SCORE_BLOCK_BYTES: usize = 1 << 20;

/// K and V rearranged once per (batch, head) so the GEMMs of every block of query rows read
/// them in place: without it the GEMM repacks all of K (and V, when the head width is not a
/// multiple of 16) for each block, which at 8192+ keys (blocks of 32 rows or fewer) costs a
/// large part of the products.
struct HeadKv {
    /// `[b·h][d][m]`: each head's K transposed.
    kt: Option<Vec<f32>>,
    /// `[b·h][m][dp]`: each head's V with zero columns up to `dp`.
    vpad: Option<Vec<f32>>,
    dp: usize,
}

impl HeadKv {
    fn new(k: &[f32], v: &[f32], (b, h, m, c): (usize, usize, usize, usize), use_it: bool) -> Self {
        let d = c / h;
        let dp = d.next_multiple_of(16);
        if !use_it || d == 0 {
            return Self {
                kt: None,
                vpad: None,
                dp,
            };
        }
        let mut kt = vec![0f32; b * h * d * m];
        kt.par_chunks_mut(d * m).enumerate().for_each(|(bh, dst)| {
            let (bi, hi) = (bh / h, bh % h);
            for key in 0..m {
                let src = &k[(bi * m + key) * c + hi * d..][..d];
                for (dd, &x) in src.iter().enumerate() {
                    dst[dd * m + key] = x;
                }
            }
        });
        let vpad = (dp != d && d >= 16).then(|| {
            let mut vp = vec![0f32; b * h * m * dp];
            vp.par_chunks_mut(m * dp).enumerate().for_each(|(bh, dst)| {
                let (bi, hi) = (bh / h, bh % h);
                for key in 0..m {
                    dst[key * dp..][..d].copy_from_slice(&v[(bi * m + key) * c + hi * d..][..d]);
                }
            });
            vp
        });
        Self {
            kt: Some(kt),
            vpad,
            dp,
        }
    }
}

struct Attention {
    heads: usize,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "sumi-attention"
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
        let t = Qkv::read("attention", self.heads, (s1, l1), (s2, l2), (s3, l3))?;
        let h = self.heads;
        let d = t.c / h;
        let scale = 1.0 / (d as f32).sqrt();
        if flash::available()
            && (t.m >= FLASH_ANY_KEYS || (t.m >= FLASH_MIN_KEYS && d <= FLASH_MAX_WIDTH))
        {
            let shape = Shape::from((t.b, t.n, t.c));
            return Ok((CpuStorage::F32(fused(t, h, scale)), shape));
        }
        if attention_packed::takes(t.m, d) {
            let shape = Shape::from((t.b, t.n, t.c));
            return Ok((
                CpuStorage::F32(attention_packed::attention(t, h, scale)),
                shape,
            ));
        }
        let Qkv {
            q,
            k,
            v,
            b,
            n,
            m,
            c,
        } = t;
        let rows = (SCORE_BLOCK_BYTES / 4 / m.max(1))
            .clamp(8, 512)
            .min(n.max(1));
        let blocks = n.div_ceil(rows);
        // (with blocks of more than 48 rows the GEMM packs its operands anyway)
        let kv = HeadKv::new(k, v, (b, h, m, c), blocks > 1 && rows <= 48);
        let kv = &kv;
        let mut out = vec![0f32; b * n * c];
        let out_ptr = SendPtr(out.as_mut_ptr());
        let out_ref = &out_ptr;
        (0..b * h * blocks).into_par_iter().for_each_init(
            || (Vec::<f32>::new(), Vec::<f32>::new(), Vec::<f32>::new()),
            |(scores, sums, padded), task| {
                let (bh, blk) = (task / blocks, task % blocks);
                let (bi, hi) = (bh / h, bh % h);
                let r0 = blk * rows;
                let nr = rows.min(n - r0);
                scores.resize(nr * m, 0.0);
                sums.resize(nr, 0.0);
                let qp = q[(bi * n + r0) * c + hi * d..].as_ptr();
                // K as [d, m] (rows m apart) from `kv`, else K^T read in place (columns c apart)
                let (kp, k_cs, k_rs) = match &kv.kt {
                    Some(kt) => (kt[bh * d * m..].as_ptr(), 1, m as isize),
                    None => (k[bi * m * c + hi * d..].as_ptr(), c as isize, 1),
                };
                // SAFETY: all pointers stay inside their buffers for the given strides and
                // sizes (checked shapes above); each task owns its output rows × head columns.
                unsafe {
                    gemm::gemm(
                        nr,
                        m,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        m as isize,
                        false,
                        qp,
                        1,
                        c as isize,
                        kp,
                        k_cs,
                        k_rs,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                softmax_rows_unnormalised(scores, m, sums);
                // SAFETY: row (bi·n + r0), column hi·d is inside the b·n×c output buffer.
                let op = unsafe { out_ref.0.add((bi * n + r0) * c + hi * d) };
                // V from `kv` padded to dp columns (the product goes to `padded`, nr×dp),
                // else read in place with the product written straight to the output.
                let (vp, v_rs, dst, dst_rs, width) = match &kv.vpad {
                    Some(vpad) => {
                        padded.resize(nr * kv.dp, 0.0);
                        let vp = vpad[bh * m * kv.dp..].as_ptr();
                        (vp, kv.dp, padded.as_mut_ptr(), kv.dp, kv.dp)
                    }
                    None => (v[bi * m * c + hi * d..].as_ptr(), c, op, c, d),
                };
                // SAFETY: this task alone writes rows r0..r0+nr × head columns hi·d..(hi+1)·d of
                // the output (stride c), or its own nr×dp `padded`; `scores` is nr×m and `vp`
                // reads m rows of `width` columns `v_rs` apart within its buffer.
                unsafe {
                    gemm::gemm(
                        nr,
                        width,
                        m,
                        dst,
                        1,
                        dst_rs as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        m as isize,
                        vp,
                        1,
                        v_rs as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                    for (r, s) in sums.iter().enumerate() {
                        let row = std::slice::from_raw_parts_mut(op.add(r * c), d);
                        let inv = 1.0 / s;
                        if kv.vpad.is_some() {
                            let src = &padded[r * kv.dp..][..d];
                            row.iter_mut().zip(src).for_each(|(x, y)| *x = y * inv);
                        } else {
                            row.iter_mut().for_each(|x| *x *= inv);
                        }
                    }
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((b, n, c))))
    }
}

/// Softmax attention of `q` `[b, n, heads·d]` over `k`, `v` `[b, m, heads·d]` (f32, CPU),
/// scaled by 1/√d; returns `[b, n, heads·d]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &Attention { heads })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn bad_shapes_and_zero_heads_are_errors() {
        let dev = Device::Cpu;
        let t = |n: usize, c: usize| Tensor::zeros((1, n, c), candle_core::DType::F32, &dev);
        let (q, k) = (t(4, 8).unwrap(), t(5, 8).unwrap());
        for heads in [0, 3] {
            let e = attention(&q, &k, &k, heads).unwrap_err().to_string();
            assert!(e.contains("attention: shapes"), "{e}");
            let e = super::super::attention_bf16::attention_bf16(&q, &k, &k, heads)
                .unwrap_err()
                .to_string();
            assert!(e.contains("attention-bf16: shapes"), "{e}");
        }
        let e = attention(&q, &k, &t(6, 8).unwrap(), 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("with 2 heads"), "{e}");
        assert_eq!(attention(&q, &k, &k, 2).unwrap().dims(), &[1, 4, 8]);
    }

    /// softmax(q·kᵀ/√d)·v per head with candle's ops.
    pub(crate) fn naive(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Tensor {
        let split = |t: &Tensor| {
            let (b, n, c) = t.dims3().unwrap();
            t.reshape((b, n, heads, c / heads))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (b, n, c) = q.dims3().unwrap();
        let (q, k, v) = (split(q), split(k), split(v));
        let s = (q.matmul(&k.t().unwrap()).unwrap() / ((c / heads) as f64).sqrt()).unwrap();
        let p = candle_nn::ops::softmax_last_dim(&s).unwrap();
        p.matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, n, c))
            .unwrap()
    }

    #[test]
    fn several_blocks_match_the_naive_product() {
        let dev = Device::Cpu;
        // (keys, channels, heads). On AVX-512 the fused kernel takes 4100 and 8200 keys:
        // head widths 40 (V padded to 48), 64, 8, 80 and 160 (output in groups of four
        // vectors and less), partial key panels. The two GEMMs take the rest: 6000 keys at
        // width 100 give blocks of 43 query rows, so K is read transposed and V padded to 112;
        // 3000 keys give blocks of 87 rows, read in place; 64 keys one block. With AVX2 and
        // no AVX-512 the packed products take 4096+ keys at widths up to 80, the GEMMs the rest.
        for (m, c, heads) in [
            (8200, 80, 2),
            (8200, 128, 2),
            (8200, 16, 2),
            (4100, 80, 2),
            (8200, 160, 2),
            (8200, 320, 2),
            (4100, 16, 2),
            (6000, 200, 2),
            (3000, 80, 2),
            (64, 80, 2),
        ] {
            let n = 150;
            let q = Tensor::randn(0f32, 1.0, (2, n, c), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (2, m, c), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (2, m, c), &dev).unwrap();
            let got = attention(&q, &k, &v, heads).unwrap();
            let err = crate::kernels::max_abs_diff(&got, &naive(&q, &k, &v, heads));
            assert!(err < 1e-4, "{m} keys, {c} channels, {heads} heads: {err}");
        }
    }
}
