//! Building blocks shared by the networks: loaders for convolutions, linear layers and norms
//! with the checkpoint's names, and the activations the architectures use.

use candle_core::{Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, LayerNorm, Linear, VarBuilder};

use crate::error::Result;

/// A `k`×`k` convolution with bias, `same` padding for odd `k`.
pub fn conv(vb: VarBuilder, cin: usize, cout: usize, k: usize, stride: usize) -> Result<Conv2d> {
    conv_cfg(vb, cin, cout, k, stride, k / 2, true)
}

/// A convolution with explicit padding and optional bias.
pub fn conv_cfg(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
    bias: bool,
) -> Result<Conv2d> {
    let w = vb.get((cout, cin, k, k), "weight")?;
    let b = if bias {
        Some(vb.get(cout, "bias")?)
    } else {
        None
    };
    let cfg = Conv2dConfig {
        padding,
        stride,
        dilation: 1,
        groups: 1,
        cudnn_fwd_algo: None,
    };
    Ok(Conv2d::new(w, b, cfg))
}

/// A linear layer (`weight` is `[out, in]`; 1×1 kernels are accepted by the weight store).
pub fn linear(vb: VarBuilder, cin: usize, cout: usize, bias: bool) -> Result<Linear> {
    let w = vb.get((cout, cin), "weight")?;
    let b = if bias {
        Some(vb.get(cout, "bias")?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

/// GroupNorm with affine parameters.
pub fn group_norm(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<GroupNorm> {
    let w = vb.get(channels, "weight")?;
    let b = vb.get(channels, "bias")?;
    Ok(GroupNorm::new(w, b, channels, groups, eps)?)
}

/// LayerNorm with affine parameters.
pub fn layer_norm(vb: VarBuilder, dim: usize, eps: f64) -> Result<LayerNorm> {
    let w = vb.get(dim, "weight")?;
    let b = vb.get(dim, "bias")?;
    Ok(LayerNorm::new(w, b, eps))
}

/// Applies a module.
pub fn fwd<M: Module>(m: &M, x: &Tensor) -> Result<Tensor> {
    Ok(m.forward(x)?)
}

/// Scaled dot-product attention over `[batch, heads, tokens, head_dim]` tensors, optionally
/// with an additive mask broadcast over batch and heads.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let d = q.dim(candle_core::D::Minus1)?;
    let scale = 1.0 / (d as f64).sqrt();
    let w = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? * scale)?;
    let w = match mask {
        Some(m) => w.broadcast_add(m)?,
        None => w,
    };
    let w = candle_nn::ops::softmax_last_dim(&w)?;
    Ok(w.matmul(&v.contiguous()?)?)
}

/// Splits `[b, n, heads·d]` into `[b, heads, n, d]`.
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    Ok(x.reshape((b, n, heads, c / heads))?.transpose(1, 2)?)
}

/// Merges `[b, heads, n, d]` back into `[b, n, heads·d]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, n, d) = x.dims4()?;
    Ok(x.transpose(1, 2)?.reshape((b, n, h * d))?)
}
