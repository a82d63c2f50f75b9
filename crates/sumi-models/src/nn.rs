//! Building blocks shared by the networks: loaders for convolutions, linear layers and norms
//! with the checkpoint's names, and the activations the architectures use.

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

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
    let weight = vb.get((cout, cin, k, k), "weight")?;
    let bias = if bias {
        vb.get(cout, "bias")?
    } else {
        Tensor::zeros(cout, weight.dtype(), weight.device())?
    };
    Ok(Conv2d {
        weight,
        bias,
        stride,
        padding,
    })
}

/// A 2-D convolution with bias (zeros where the checkpoint has none).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// The kernel `[c_out, c_in, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
            return crate::kernels::conv::conv2d(
                x,
                &self.weight,
                &self.bias,
                self.stride,
                self.padding,
            );
        }
        let y = x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
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
    let weight = vb.get(channels, "weight")?;
    let bias = vb.get(channels, "bias")?;
    Ok(GroupNorm {
        inner: candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?,
        weight,
        bias,
        groups,
        eps,
    })
}

/// GroupNorm with affine parameters; [`GroupNorm::forward_silu`] fuses the SiLU that follows
/// it in every residual block.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: candle_nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    fn fast(&self, x: &Tensor) -> bool {
        x.device().is_cpu() && x.dtype() == candle_core::DType::F32
    }

    /// `silu(group_norm(x))`.
    pub fn forward_silu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.fast(x) {
            return crate::kernels::group_norm::group_norm(
                x,
                &self.weight,
                &self.bias,
                self.groups,
                self.eps,
                true,
            );
        }
        self.inner.forward(x)?.silu()
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.fast(x) {
            return crate::kernels::group_norm::group_norm(
                x,
                &self.weight,
                &self.bias,
                self.groups,
                self.eps,
                false,
            );
        }
        self.inner.forward(x)
    }
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

/// Multi-head attention of `q` `[b, n, heads·d]` over `k`, `v` `[b, m, heads·d]`, no mask:
/// the blocked CPU kernel for f32 on the CPU, the plain composition elsewhere.
pub fn multi_head_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    if q.device().is_cpu() && q.dtype() == candle_core::DType::F32 {
        return Ok(crate::kernels::attention::attention(q, k, v, heads)?);
    }
    let a = attention(
        &split_heads(q, heads)?,
        &split_heads(k, heads)?,
        &split_heads(v, heads)?,
        None,
    )?;
    merge_heads(&a)
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
