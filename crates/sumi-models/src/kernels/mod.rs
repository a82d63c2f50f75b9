//! CPU kernels for the hot paths, as candle custom ops over f32 storage: attention that never
//! materialises the full score matrix, tiled im2col convolution, and the vectorised math
//! they need.

pub mod attention;
pub mod conv;
pub mod fastmath;
pub mod geglu;
pub mod group_norm;

use candle_core::{CpuStorage, Layout};

/// A raw output pointer shared by parallel tasks that write disjoint regions.
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: every kernel using it gives each task its own region of the buffer.
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

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
