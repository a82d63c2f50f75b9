//! CPU kernels for the hot paths, as candle custom ops over f32 storage: attention that never
//! materialises the full score matrix, tiled im2col convolution, and the vectorised math
//! they need.

pub mod attention;
pub mod conv;
pub mod fastmath;
pub mod geglu;
pub mod group_norm;
