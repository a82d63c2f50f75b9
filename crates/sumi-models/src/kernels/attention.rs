//! Multi-head attention for `[batch, tokens, heads·dim]` tensors without forming the full
//! `tokens × keys` score matrix: work is split into (batch, head, block of query rows) tasks
//! run on rayon's pool; each computes its block of scores with one GEMM, an in-place
//! unnormalised softmax, and a second GEMM into the output, then divides by the row sums.
//! Inputs are read in their natural layout (no head transposes); the output comes back in it.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{f32_slice, SendPtr};

use super::fastmath::softmax_rows_unnormalised;

/// Bytes of scores one task holds at a time.
const SCORE_BLOCK_BYTES: usize = 1 << 20;

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
        let (q, k, v) = (
            f32_slice(s1, l1, "attention", "q")?,
            f32_slice(s2, l2, "attention", "k")?,
            f32_slice(s3, l3, "attention", "v")?,
        );
        let (b, n, c) = l1.shape().dims3()?;
        let (bk, m, ck) = l2.shape().dims3()?;
        if l3.shape().dims3()? != (bk, m, ck) || bk != b || ck != c || c % self.heads != 0 {
            return Err(candle_core::Error::Msg(format!(
                "attention: shapes q {:?} k {:?} v {:?} with {} heads",
                l1.shape(),
                l2.shape(),
                l3.shape(),
                self.heads
            )));
        }
        let h = self.heads;
        let d = c / h;
        let scale = 1.0 / (d as f32).sqrt();
        let rows = (SCORE_BLOCK_BYTES / 4 / m.max(1))
            .clamp(8, 512)
            .min(n.max(1));
        let blocks = n.div_ceil(rows);
        let mut out = vec![0f32; b * n * c];
        let out_ptr = SendPtr(out.as_mut_ptr());
        let out_ref = &out_ptr;
        (0..b * h * blocks).into_par_iter().for_each_init(
            || (Vec::<f32>::new(), Vec::<f32>::new()),
            |(scores, sums), task| {
                let (bh, blk) = (task / blocks, task % blocks);
                let (bi, hi) = (bh / h, bh % h);
                let r0 = blk * rows;
                let nr = rows.min(n - r0);
                scores.resize(nr * m, 0.0);
                sums.resize(nr, 0.0);
                let qp = q[(bi * n + r0) * c + hi * d..].as_ptr();
                let kp = k[bi * m * c + hi * d..].as_ptr();
                let vp = v[bi * m * c + hi * d..].as_ptr();
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
                        c as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                softmax_rows_unnormalised(scores, m, sums);
                let op = unsafe { out_ref.0.add((bi * n + r0) * c + hi * d) };
                unsafe {
                    gemm::gemm(
                        nr,
                        d,
                        m,
                        op,
                        1,
                        c as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        m as isize,
                        vp,
                        1,
                        c as isize,
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
                        row.iter_mut().for_each(|x| *x *= inv);
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
