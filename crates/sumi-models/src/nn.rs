//! Building blocks shared by the networks: loaders for convolutions, linear layers and norms
//! with the checkpoint's names, and the activations the architectures use.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use crate::error::Result;
use crate::kernels::conv_bf16::PackedConv;
use crate::kernels::linear_bf16::PackedLinear;

mod reload;
pub use reload::Reload;

/// A `k`×`k` convolution with bias, `same` padding for odd `k`.
pub fn conv(vb: VarBuilder, cin: usize, cout: usize, k: usize, stride: usize) -> Result<Conv2d> {
    conv_cfg(vb, cin, cout, k, stride, k / 2, true)
}

/// A convolution with explicit padding and optional bias. A bf16 `VarBuilder` gives the bf16
/// compute path: the kernel packed as bf16 for the crate's bf16 convolution, the bias f32.
pub fn conv_cfg(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
    bias: bool,
) -> Result<Conv2d> {
    let shape = (cin, cout, k, bias);
    let bias = if bias {
        param(&vb, cout, "bias")?
    } else {
        Tensor::zeros(cout, param_dtype(&vb), vb.device())?
    };
    let device = vb.device().clone();
    let name = vb.prefix();
    let kernel = if is_bf16(&vb) {
        // decoded to f32 (exact for f16/bf16 files), packed, and the f32 copy dropped
        let weight = param(&vb, (cout, cin, k, k), "weight")?;
        let packed = with_f32(&weight, |w| PackedConv::new(w, cout, cin, k))?;
        Kernel::Bf16 {
            packed: Arc::new(packed),
            bias: Arc::new(bias.to_vec1::<f32>()?),
        }
    } else {
        let weight = vb.get((cout, cin, k, k), "weight")?;
        Kernel::F32 { weight, bias }
    };
    Ok(Conv2d {
        kernel,
        device,
        stride,
        padding,
        spec: Box::new(ConvSpec { name, shape }),
    })
}

/// What a convolution was built from, to load it again (boxed: a convolution is in every
/// block, and this is only read when its weights change).
#[derive(Debug, Clone)]
struct ConvSpec {
    /// The builder's prefix it was built under (its canonical name).
    name: String,
    /// `(cin, cout, k, bias)`.
    shape: (usize, usize, usize, bool),
}

/// Runs `f` on the f32 elements of `t` (CPU), without copying a contiguous tensor.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let slice = match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) => &v[a..b],
        _ => {
            return Err(candle_core::Error::Msg(format!(
                "bf16 packing needs a contiguous f32 CPU tensor, got {:?} on {:?}",
                t.dtype(),
                t.device()
            ))
            .into())
        }
    };
    Ok(f(slice))
}

/// Whether `vb` builds the bf16 compute path (weights held as packed bf16, activations f32).
fn is_bf16(vb: &VarBuilder) -> bool {
    vb.dtype() == DType::BF16
}

/// The dtype of biases, norm parameters (and, before packing, bf16-path weights): f32 on the
/// bf16 path, else the `VarBuilder`'s.
fn param_dtype(vb: &VarBuilder) -> DType {
    if is_bf16(vb) {
        DType::F32
    } else {
        vb.dtype()
    }
}

/// A parameter tensor (bias, norm weight): f32 when `vb` builds the bf16 path, else in `vb`'s
/// dtype; read unrounded from the checkpoint.
pub fn param(vb: &VarBuilder, shape: impl Into<candle_core::Shape>, name: &str) -> Result<Tensor> {
    Ok(vb.get_with_hints_dtype(shape, name, candle_nn::Init::Const(0.0), param_dtype(vb))?)
}

#[derive(Debug, Clone)]
enum Kernel {
    F32 {
        weight: Tensor,
        bias: Tensor,
    },
    Bf16 {
        packed: Arc<PackedConv>,
        bias: Arc<Vec<f32>>,
    },
}

/// A 2-D convolution with bias (zeros where the checkpoint has none).
#[derive(Debug, Clone)]
pub struct Conv2d {
    kernel: Kernel,
    device: Device,
    stride: usize,
    padding: usize,
    spec: Box<ConvSpec>,
}

impl Conv2d {
    /// The device the kernel lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of the activations it takes: f32 for the bf16 path, else the kernel's.
    pub fn activation_dtype(&self) -> DType {
        match &self.kernel {
            Kernel::F32 { weight, .. } => weight.dtype(),
            Kernel::Bf16 { .. } => DType::F32,
        }
    }
}

impl Conv2d {
    /// `forward` of `x` upsampled 2× by nearest neighbour; the bf16 path and the f32 direct
    /// kernel (where `direct` takes the layer) never form the upsampled tensor.
    pub fn forward_upsampled2x(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Kernel::Bf16 { packed, bias } = &self.kernel {
            return crate::kernels::conv_bf16::conv2d_bf16_upsampled(
                x,
                packed,
                bias,
                self.stride,
                self.padding,
                2,
            );
        }
        if let Some(y) = self.direct(&[x], crate::kernels::conv3x3::Epilogue::None, 2)? {
            return Ok(y);
        }
        let (_, _, h, w) = x.dims4()?;
        self.forward(&x.upsample_nearest2d(2 * h, 2 * w)?)
    }

    /// The direct 3×3 kernel ([`crate::kernels::conv3x3`]) of the concatenation of `xs`
    /// upsampled `up`×, where it applies: an f32 3×3 stride-1 padding-1 convolution of f32
    /// CPU inputs on a CPU with AVX-512, with at most 64 outputs (upscalers, TAESD: the im2col
    /// GEMM is short of rows there) or an output at least 512 wide (the VAE's top levels:
    /// im2col tasks of one row there overflow L2). The im2col GEMM is faster on the U-Net's and
    /// the VAE's lower levels (measured: 512→512 at 128² 212–260 GF/s against 197–229).
    /// `None` elsewhere.
    fn direct(
        &self,
        xs: &[&Tensor],
        epi: crate::kernels::conv3x3::Epilogue,
        up: usize,
    ) -> candle_core::Result<Option<Tensor>> {
        let Kernel::F32 { weight, bias } = &self.kernel else {
            return Ok(None);
        };
        let (_, cout, k, _) = self.spec.shape;
        let direct = k == 3 && (self.stride, self.padding) == (1, 1);
        let cpu_f32 = xs
            .iter()
            .all(|x| x.device().is_cpu() && x.dtype() == DType::F32);
        let out_w = xs
            .first()
            .map_or(0, |x| x.dims().last().copied().unwrap_or(0) * up);
        let suited = cout <= 64 || out_w >= 512;
        if !(direct && cpu_f32 && suited && weight.dtype() == DType::F32) {
            return Ok(None);
        }
        crate::kernels::conv3x3::conv3x3_upsampled(xs, weight, bias, epi, up)
    }

    /// `forward` of the channel concatenation of `xs`, then `epi`: the direct convolution of
    /// [`crate::kernels::conv3x3`] where `direct` takes the layer (the concatenation
    /// is never formed); elsewhere the concatenation goes through `forward`.
    pub fn forward_cat(
        &self,
        xs: &[&Tensor],
        epi: crate::kernels::conv3x3::Epilogue,
    ) -> candle_core::Result<Tensor> {
        use crate::kernels::conv3x3::Epilogue;
        if let Some(y) = self.direct(xs, epi, 1)? {
            return Ok(y);
        }
        let y = match xs {
            [x] => self.forward(x)?,
            _ => self.forward(&Tensor::cat(xs, 1)?)?,
        };
        match epi {
            Epilogue::None => Ok(y),
            Epilogue::LeakyRelu(s) => y.maximum(&(&y * f64::from(s))?),
        }
    }
}

/// The profile key and flops of a convolution of `x` by `weight` (see [`crate::profile`]).
fn conv_key(x: &Tensor, weight: &Tensor, stride: usize) -> (String, f64) {
    match (x.dims(), weight.dims()) {
        (&[b, cin, h, w], &[cout, _, k, _]) => {
            let pixels = (h / stride.max(1)) * (w / stride.max(1));
            let flops = 2.0 * (b * cin * cout * k * k * pixels) as f64;
            (format!("conv k{k} s{stride} {cin}->{cout} @{h}x{w}"), flops)
        }
        (x, w) => (format!("conv {x:?} by {w:?}"), 0.0),
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (weight, bias) = match &self.kernel {
            Kernel::Bf16 { packed, bias } => {
                return crate::kernels::conv_bf16::conv2d_bf16(
                    x,
                    packed,
                    bias,
                    self.stride,
                    self.padding,
                );
            }
            Kernel::F32 { weight, bias } => (weight, bias),
        };
        if let Some(y) = self.direct(&[x], crate::kernels::conv3x3::Epilogue::None, 1)? {
            return Ok(y);
        }
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return crate::profile::time(
                || conv_key(x, weight, self.stride),
                || crate::kernels::conv::conv2d(x, weight, bias, self.stride, self.padding),
            );
        }
        let y = x.conv2d(weight, self.padding, self.stride, 1, 1)?;
        y.broadcast_add(&bias.reshape((1, (), 1, 1))?)
    }
}

/// A linear layer (`weight` is `[out, in]`; 1×1 kernels are accepted by the weight store).
/// A bf16 `VarBuilder` gives the bf16 compute path (the crate's packed bf16 linear kernel).
pub fn linear(vb: VarBuilder, cin: usize, cout: usize, bias: bool) -> Result<Linear> {
    let name = vb.prefix();
    let shape = (cin, cout, bias);
    let b = if bias {
        Some(param(&vb, cout, "bias")?)
    } else {
        None
    };
    if is_bf16(&vb) {
        let w = param(&vb, (cout, cin), "weight")?;
        let b = b.map(|b| b.to_vec1::<f32>()).transpose()?;
        let packed = with_f32(&w, |w| PackedLinear::new(w, b, cin, cout))?;
        let kind = LinearKind::Bf16(Arc::new(packed));
        return Ok(Linear { kind, name, shape });
    }
    let w = vb.get((cout, cin), "weight")?;
    let kind = LinearKind::F32(candle_nn::Linear::new(w, b));
    Ok(Linear { kind, name, shape })
}

/// A linear layer: candle's over f32 (or f16/bf16) tensors, or packed bf16 weights.
#[derive(Debug, Clone)]
pub struct Linear {
    kind: LinearKind,
    /// The builder's prefix it was built under (its canonical name).
    name: String,
    /// `(cin, cout, bias)` as built.
    shape: (usize, usize, bool),
}

#[derive(Debug, Clone)]
enum LinearKind {
    F32(candle_nn::Linear),
    Bf16(Arc<PackedLinear>),
}

impl Linear {
    /// Whether the weights are packed bf16 (the bf16 compute path).
    pub fn is_bf16(&self) -> bool {
        matches!(self.kind, LinearKind::Bf16(_))
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.kind {
            LinearKind::F32(l) => crate::profile::time(
                || {
                    let (cin, cout, _) = self.shape;
                    let rows = x.elem_count() / cin.max(1);
                    let flops = 2.0 * (rows * cin * cout) as f64;
                    (format!("linear rows{rows} {cin}->{cout}"), flops)
                },
                || match crate::kernels::linear_f32::linear_f32(x, l.weight(), l.bias())? {
                    Some(y) => Ok(y),
                    None => l.forward(x),
                },
            ),
            LinearKind::Bf16(p) => crate::kernels::linear_bf16::linear_bf16(x, p),
        }
    }
}

/// GroupNorm with affine parameters.
pub fn group_norm(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<GroupNorm> {
    let weight = param(&vb, channels, "weight")?;
    let bias = param(&vb, channels, "bias")?;
    Ok(GroupNorm {
        name: vb.prefix(),
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
    /// The builder's prefix it was built under (its canonical name).
    name: String,
    inner: candle_nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// The crate's kernel (f32 on the CPU), with SiLU after it if `silu`; `None` elsewhere.
    fn fast(&self, x: &Tensor, silu: bool) -> Option<candle_core::Result<Tensor>> {
        if !(x.device().is_cpu() && x.dtype() == candle_core::DType::F32) {
            return None;
        }
        let label = if silu { "groupnorm+silu" } else { "groupnorm" };
        Some(crate::profile::time(
            || (format!("{label} {:?}", x.dims()), 0.0),
            || {
                let (w, b) = (&self.weight, &self.bias);
                crate::kernels::group_norm::group_norm(x, w, b, self.groups, self.eps, silu)
            },
        ))
    }

    /// `silu(group_norm(x))`.
    pub fn forward_silu(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self.fast(x, true) {
            Some(y) => y,
            None => self.inner.forward(x)?.silu(),
        }
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self.fast(x, false) {
            Some(y) => y,
            None => self.inner.forward(x),
        }
    }
}

/// LayerNorm with affine parameters.
pub fn layer_norm(vb: VarBuilder, dim: usize, eps: f64) -> Result<LayerNorm> {
    let w = param(&vb, dim, "weight")?;
    let b = param(&vb, dim, "bias")?;
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
        return crate::profile::time(
            || match (q.dims(), k.dims()) {
                (&[b, n, c], &[_, m, _]) => {
                    let flops = 4.0 * (b * n * m * c) as f64;
                    (format!("attention n{n} m{m} c{c} heads{heads}"), flops)
                }
                (q, k) => (format!("attention {q:?} over {k:?}"), 0.0),
            },
            || Ok(crate::kernels::attention::attention(q, k, v, heads)?),
        );
    }
    let a = attention(
        &split_heads(q, heads)?,
        &split_heads(k, heads)?,
        &split_heads(v, heads)?,
        None,
    )?;
    merge_heads(&a)
}

/// [`multi_head_attention`], with bf16 dot products (f32 softmax and sums) when `bf16` and
/// the inputs are f32 on the CPU.
pub fn multi_head_attention_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    bf16: bool,
) -> Result<Tensor> {
    if bf16 && q.device().is_cpu() && q.dtype() == DType::F32 {
        return Ok(crate::kernels::attention_bf16::attention_bf16(
            q, k, v, heads,
        )?);
    }
    multi_head_attention(q, k, v, heads)
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
