//! f32 linear layers over [`gemm_f32`] on CPUs with AVX2 and FMA but not AVX-512 (where it
//! was measured ahead of candle's matmul): `y = x Wᵀ + b` for `x` `[…, in]` and `W`
//! `[out, in]`.
//! `Wᵀ` is packed into the GEMM's 64-column panels at each call (`in · out` floats, small next
//! to the product for the row counts where it is used); tasks take blocks of activation rows,
//! read in place as the GEMM's left operand, and write their output rows started from the
//! bias, so no separate bias pass runs.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::gemm_f32::{self, Dims, Init, NR};
use super::{f32_slice, Unfilled};

/// Rows of activations per task.
const ROWS: usize = 96;
/// Fewer rows than this stay on candle's matmul. Measured here (AVX2, 2 threads, GFLOP/s,
/// candle → packed, the two run alternately in one process, best of 7, two runs): 8192 rows
/// 320→320 70–80 → 96–115, 1280→320 80–93 → 81–101; 2048 rows 640→640 72–95 → 78–97,
/// 640→5120 72–81 → 85–91, 2560→640 98–106 → 105–115; but 512 rows 1280→1280 111–113 →
/// 89–109, 1280→10240 99–112 → 57–60 and 5120→1280 86–96 → 62–70, where the per-call packing
/// of `Wᵀ` weighs more than candle's blocking loses. (Before the alternating runs, 2048 rows
/// had measured 153 → 127 one after the other, and this stood at 4096.)
pub const MIN_ROWS: usize = 2048;

/// `Wᵀ` (`w` is `[n, k]`) in zero-padded 64-column panels: `[panel][k][NR]`.
fn pack_transposed(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut bp = vec![0f32; n.div_ceil(NR) * k * NR];
    bp.par_chunks_mut(k * NR)
        .enumerate()
        .for_each(|(p, panel)| {
            for j in 0..NR.min(n - p * NR) {
                let row = &w[(p * NR + j) * k..][..k];
                for (kk, &v) in row.iter().enumerate() {
                    panel[kk * NR + j] = v;
                }
            }
        });
    bp
}

/// Whether [`linear_f32`] takes layers on this CPU: AVX2 and FMA without AVX-512.
fn runs_here() -> bool {
    gemm_f32::available() && !super::avx512()
}

struct LinearF32<'a> {
    /// The bias padded to whole panels, if any.
    bias: Option<&'a [f32]>,
}

impl CustomOp2 for LinearF32<'_> {
    fn name(&self) -> &'static str {
        "sumi-linear-f32"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "linear-f32", "input")?;
        let w = f32_slice(s2, l2, "linear-f32", "weight")?;
        let dims = l1.shape().dims();
        let (n, k) = l2.shape().dims2()?;
        if dims.last() != Some(&k) || !gemm_f32::available() {
            return Err(candle_core::Error::Msg(format!(
                "linear-f32: input {:?} for weight {:?}",
                l1.shape(),
                l2.shape()
            )));
        }
        let m = x.len() / k.max(1);
        let bp = pack_transposed(w, n, k);
        let mut out = Unfilled::new(m * n);
        let out_ptr = out.ptr();
        let out_ref = &out_ptr;
        let init = match self.bias {
            Some(b) => Init::Cols(b),
            None => Init::Zero,
        };
        (0..m.div_ceil(ROWS)).into_par_iter().for_each(|blk| {
            let (r0, rows) = (blk * ROWS, ROWS.min(m - blk * ROWS));
            let d = Dims {
                m: rows,
                n,
                k,
                lda: k,
                ldc: n,
                cps: NR,
            };
            // SAFETY: the GEMM runs here (`available`); A is rows r0.. of `x` (k floats
            // each), B the packed panels of all n columns, C this task's own rows of `out`
            // (n floats each); the bias covers whole panels.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                gemm_f32::gemm_packed(
                    d,
                    x[r0 * k..].as_ptr(),
                    bp.as_ptr(),
                    out_ref.0.add(r0 * n),
                    init,
                )
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (d, init);
        });
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        // SAFETY: the tasks cover every row, and the GEMM writes all n columns of each.
        let out = unsafe { out.filled() };
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

/// `x Wᵀ + b` for `x` `[…, in]` (f32, CPU) and `weight` `[out, in]`; `None` where this path
/// does not run on this CPU (see `runs_here`) or `x` has fewer than [`MIN_ROWS`] rows (the
/// caller then uses candle's).
pub fn linear_f32(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> candle_core::Result<Option<Tensor>> {
    let k = x.dims().last().copied().unwrap_or(0);
    let rows = x.elem_count() / k.max(1);
    let cpu_f32 = x.device().is_cpu() && x.dtype() == candle_core::DType::F32;
    // measured against candle's matmul on AVX2 only: with AVX-512 candle's stays until this
    // path is measured there
    if !runs_here() || !cpu_f32 || rows < MIN_ROWS || weight.dtype() != x.dtype() {
        return Ok(None);
    }
    packed(x, weight, bias).map(Some)
}

/// The packed path of [`linear_f32`], on any CPU where [`gemm_f32`] runs (f32 operands).
fn packed(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let n = weight.dim(0)?;
    let bias = match bias {
        Some(b) => {
            let mut v = b.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
            // padded to whole panels below; a bias of another length is an error, as
            // candle's broadcast add would give
            if v.len() != n {
                return Err(candle_core::Error::Msg(format!(
                    "linear-f32: bias of {} values for {n} outputs",
                    v.len()
                )));
            }
            v.resize(n.div_ceil(NR) * NR, 0.0);
            Some(v)
        }
        None => None,
    };
    let op = LinearF32 {
        bias: bias.as_deref(),
    };
    x.contiguous()?.apply_op2_no_bwd(&weight.contiguous()?, &op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module};

    #[test]
    fn matches_candle_linear() {
        // the packed path wherever the GEMM runs (with AVX-512 too, where `linear_f32` itself
        // leaves layers to candle)
        if !gemm_f32::available() {
            return;
        }
        let dev = Device::Cpu;
        for &(b, m, cin, cout, bias) in &[
            (1, MIN_ROWS, 7, 9, true),
            (2, 2100, 33, 70, false),
            (2, 2050, 320, 200, true),
            (1, 4097, 300, 129, true),
        ] {
            let x = Tensor::randn(0f32, 1.0, (b, m, cin), &dev).unwrap();
            let w = Tensor::randn(0f32, 0.3, (cout, cin), &dev).unwrap();
            let bv = bias.then(|| Tensor::randn(0f32, 1.0, cout, &dev).unwrap());
            let got = packed(&x, &w, bv.as_ref()).unwrap();
            if runs_here() {
                let gated = linear_f32(&x, &w, bv.as_ref()).unwrap().unwrap();
                assert_eq!(crate::kernels::max_abs_diff(&got, &gated), 0.0);
            }
            let want = candle_nn::Linear::new(w, bv).forward(&x).unwrap();
            assert_eq!(got.dims(), want.dims());
            let err = crate::kernels::max_abs_diff(&got, &want);
            assert!(err < 1e-4, "{b}x{m}x{cin}->{cout}: {err}");
        }
        // fewer rows than MIN_ROWS: left to candle
        let x = Tensor::zeros((1, MIN_ROWS - 1, 8), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::zeros((4, 8), candle_core::DType::F32, &dev).unwrap();
        assert!(linear_f32(&x, &w, None).unwrap().is_none());
        // a bias of the wrong length is refused by name, not padded
        let b = Tensor::zeros(3, candle_core::DType::F32, &dev).unwrap();
        let e = packed(&x, &w, Some(&b)).unwrap_err().to_string();
        assert!(e.contains("bias of 3 values for 4 outputs"), "{e}");
    }

    /// GFLOP/s of the packed path against candle's linear, run alternately, best of 7 (at
    /// every shape, also those under [`MIN_ROWS`] that `linear_f32` leaves to candle):
    /// `cargo test --release … linear_f32_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn linear_f32_speed() {
        if !runs_here() {
            return;
        }
        let dev = Device::Cpu;
        for &(m, cin, cout) in &[
            (8192, 320, 320),
            (8192, 1280, 320),
            (2048, 640, 640),
            (2048, 640, 5120),
            (2048, 2560, 640),
            (512, 1280, 1280),
            (512, 1280, 10240),
            (512, 5120, 1280),
            (8192, 320, 2560),
        ] {
            let x = Tensor::randn(0f32, 1.0, (2, m / 2, cin), &dev).unwrap();
            let w = Tensor::randn(0f32, 0.3, (cout, cin), &dev).unwrap();
            let bv = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
            let lin = candle_nn::Linear::new(w.clone(), Some(bv.clone()));
            let gf = 2.0 * (m * cin * cout) as f64 / 1e9;
            let (mut a, mut b) = (f64::MAX, f64::MAX);
            for _ in 0..7 {
                let t = std::time::Instant::now();
                lin.forward(&x).unwrap();
                a = a.min(t.elapsed().as_secs_f64());
                let t = std::time::Instant::now();
                packed(&x, &w, Some(&bv)).unwrap();
                b = b.min(t.elapsed().as_secs_f64());
            }
            println!(
                "m{m} {cin}->{cout}: candle {:.1} GFLOP/s, packed {:.1}",
                gf / a,
                gf / b
            );
        }
    }
}
