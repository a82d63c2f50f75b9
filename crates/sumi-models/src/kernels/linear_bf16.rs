//! Linear layers with bf16 weights for f32 activations on the CPU: the `[out, in]` weight
//! packed once as the GEMM's B operand, activation rows converted to bf16 and packed per
//! task, f32 accumulation started from the bias. Tasks are (block of rows,
//! block of output features) on rayon's pool.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::gemm_bf16::{self, packed_a_len, packed_b_len, Init, MR, NR};
use super::{f32_slice, Unfilled};

/// Rows of activations per task.
const ROWS: usize = 8 * MR;

/// A linear layer's weight `[out, in]` packed as bf16 for [`gemm_bf16`], with its f32 bias.
#[derive(Debug, Clone)]
pub struct PackedLinear {
    b: Vec<u32>,
    bias: Option<Vec<f32>>,
    cin: usize,
    cout: usize,
}

impl PackedLinear {
    /// Packs `weight` (f32 values of `[cout, cin]`, row-major).
    pub fn new(weight: &[f32], bias: Option<Vec<f32>>, cin: usize, cout: usize) -> Self {
        let mut b = vec![0; packed_b_len(cin, cout)];
        // in parallel, 8 panels at a time (this runs at load, once per layer)
        let cols = 8 * NR;
        b.par_chunks_mut(cin.div_ceil(2) * cols)
            .enumerate()
            .for_each(|(i, out)| {
                let n = cols.min(cout - i * cols);
                let w = &weight[i * cols * cin..(i * cols + n) * cin];
                gemm_bf16::pack_b_transposed(w, cin, n, cin, out);
            });
        Self { b, bias, cin, cout }
    }
}

struct LinearBf16<'a>(&'a PackedLinear);

impl CustomOp1 for LinearBf16<'_> {
    fn name(&self) -> &'static str {
        "sumi-linear-bf16"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "linear-bf16", "input")?;
        let w = self.0;
        let dims = l.shape().dims();
        if dims.last() != Some(&w.cin) {
            return Err(candle_core::Error::Msg(format!(
                "linear-bf16: input {:?} for {} input features",
                l.shape(),
                w.cin
            )));
        }
        let (k, n) = (w.cin, w.cout);
        let m = x.len() / k.max(1);
        let mblocks = m.div_ceil(ROWS);
        // split the output features when there are fewer row blocks than 4 per thread
        let npanels = n.div_ceil(NR);
        let want = 4 * rayon::current_num_threads();
        let nsplit = want
            .div_ceil(mblocks.max(1))
            .clamp(1, npanels.div_ceil(4).max(1));
        let nchunk = (npanels.div_ceil(nsplit) * NR).max(NR);
        let nsplit = n.div_ceil(nchunk).max(1);
        let kp = k.div_ceil(2);
        let mut out = Unfilled::new(m * n);
        let out_ptr = out.ptr();
        let out_ref = &out_ptr;
        (0..mblocks * nsplit)
            .into_par_iter()
            .for_each_init(Vec::<u32>::new, |packed, task| {
                let (mb, nc) = (task / nsplit, task % nsplit);
                let (r0, rows) = (mb * ROWS, ROWS.min(m - mb * ROWS));
                let (n0, cols) = (nc * nchunk, nchunk.min(n - nc * nchunk));
                packed.resize(packed_a_len(rows, k), 0);
                gemm_bf16::pack_a(&x[r0 * k..(r0 + rows) * k], rows, k, k, packed);
                // SAFETY: this task owns rows r0..r0+rows, columns n0..n0+cols of `out`.
                let dst = unsafe { out_ref.0.add(r0 * n + n0) };
                let b = &w.b[n0 / NR * kp * NR..];
                // SAFETY: `dst` starts this task's rows×cols block of `out` (row stride n), which
                // no other task touches; `packed` and `b` hold the rows×k and k×cols panels.
                unsafe {
                    let init = match &w.bias {
                        Some(bias) => Init::ColBias(&bias[n0..n0 + cols]),
                        None => Init::Zero,
                    };
                    gemm_bf16::gemm(rows, cols, k, packed, b, dst, n, init)
                };
            });
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        // SAFETY: the tasks cover every (row block, column chunk), and the GEMM writes all of its C from zero or the bias.
        let out = unsafe { out.filled() };
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

/// Applies a packed linear layer to `x` `[…, in]` (f32, CPU).
pub fn linear_bf16(x: &Tensor, w: &PackedLinear) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&LinearBf16(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Module};

    #[test]
    fn matches_f32_linear_of_rounded_operands() {
        let dev = Device::Cpu;
        for &(m, cin, cout, bias) in &[(5, 7, 9, true), (200, 33, 70, false), (3, 320, 640, true)] {
            let x = Tensor::randn(0f32, 1.0, (1, m, cin), &dev).unwrap();
            let w = Tensor::randn(0f32, 0.3, (cout, cin), &dev).unwrap();
            let b = bias.then(|| Tensor::randn(0f32, 1.0, cout, &dev).unwrap());
            let packed = PackedLinear::new(
                &w.flatten_all().unwrap().to_vec1().unwrap(),
                b.as_ref().map(|b| b.to_vec1().unwrap()),
                cin,
                cout,
            );
            let got = linear_bf16(&x, &packed).unwrap();
            let r = |t: &Tensor| {
                t.to_dtype(DType::BF16)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
            };
            let want = candle_nn::Linear::new(r(&w), b).forward(&r(&x)).unwrap();
            assert_eq!(got.dims(), want.dims());
            let err = crate::kernels::max_abs_diff(&got, &want);
            assert!(err < 1e-3, "{m}x{cin}->{cout}: {err}");
        }
    }
}
