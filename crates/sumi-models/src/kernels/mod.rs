//! CPU kernels for the hot paths, as candle custom ops over f32 storage: attention that never
//! materialises the full score matrix (fused, scores in registers, on AVX-512 for many keys),
//! tiled im2col convolution (over an AVX-512 GEMM with packed columns for the wide layers),
//! the bf16 path's packed GEMM and its convolution, linear and attention users, the layout
//! changes around attention, and the vectorised math they need.

/// Defines `$name`, which runs `$body` (an `#[inline(always)]` function written so the
/// compiler vectorises it) compiled for AVX-512, else for AVX2+FMA, else for the baseline,
/// chosen at run time.
macro_rules! simd_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:path) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if is_x86_feature_detected!("avx512f") {
                    // SAFETY: the feature was just detected.
                    return unsafe { avx512($($arg),*) };
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the features were just detected.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

pub mod attention;
pub mod attention_bf16;
mod attention_packed;
pub mod conv;
pub mod conv3x3;
pub mod conv_bf16;
pub mod elementwise;
pub mod fastmath;
pub mod flash;
pub mod geglu;
pub mod gemm_bf16;
#[cfg(target_arch = "x86_64")]
mod gemm_bf16_avx2;
#[cfg(target_arch = "x86_64")]
mod gemm_bf16_avx512;
pub mod gemm_f32;
pub mod group_norm;
pub mod linear_bf16;
pub mod linear_f32;
pub mod tokens;
pub mod winograd;
pub mod winograd_small;

use candle_core::{CpuStorage, Layout};

/// Whether the CPU has AVX-512F (the f32 kernels written with its intrinsics run; without it
/// their callers take the portable paths).
pub(crate) fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU has AVX2 and FMA (the f32 GEMM over packed panels and the kernels built on
/// it run their 8-lane register blocks where AVX-512F is absent).
pub(crate) fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A raw output pointer shared by parallel tasks that write disjoint regions.
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: every kernel using it gives each task its own region of the buffer.
unsafe impl Sync for SendPtr {}
// SAFETY: the buffer outlives the parallel region that carries the pointer (the kernels
// join their tasks before reading or freeing it), and tasks write disjoint regions.
unsafe impl Send for SendPtr {}

/// An output buffer that parallel tasks fill through a [`SendPtr`], allocated without
/// zeroing (the kernels that use it write every element, so a zeroing pass would be wasted).
pub(crate) struct Unfilled {
    v: Vec<f32>,
    len: usize,
}

impl Unfilled {
    pub(crate) fn new(len: usize) -> Self {
        Self {
            v: Vec::with_capacity(len),
            len,
        }
    }

    /// The pointer tasks write through (the buffer's spare capacity).
    pub(crate) fn ptr(&mut self) -> SendPtr {
        SendPtr(self.v.as_mut_ptr())
    }

    /// The filled buffer.
    ///
    /// # Safety
    /// Every one of the `len` elements has been written.
    pub(crate) unsafe fn filled(mut self) -> Vec<f32> {
        // SAFETY: capacity ≥ len, and the caller vouches that all are initialised.
        unsafe { self.v.set_len(self.len) };
        self.v
    }
}

/// The contiguous f32 data of a custom op's input, or an error naming the op and input.
pub(crate) fn f32_slice<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        return Err(candle_core::Error::Msg(format!("{op}: {what} must be f32")));
    };
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: {what} must be contiguous")))?;
    Ok(&v[a..b])
}

/// max |a − b| over all elements (the kernels' tests compare against candle's ops with it).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    let d = (a - b).and_then(|d| d.abs()).and_then(|d| d.flatten_all());
    d.and_then(|d| d.max(0))
        .and_then(|m| m.to_scalar::<f32>())
        .unwrap_or(f32::INFINITY)
}
