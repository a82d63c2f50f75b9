//! SwinIR, built as spandrel 0.4.2's `SwinIR` builds it from a state dict (A1111 v1.10.1 runs
//! SwinIR files through spandrel): the input reflect-padded to a multiple of the window, mean
//! subtracted and scaled by `img_range`; `conv_first`; residual Swin transformer layers (each:
//! Swin blocks — window attention with a learned relative position bias, every other block on
//! windows shifted by half a window with the cross-region mask — then a conv, plus the layer's
//! input); LayerNorm; `conv_after_body` plus the first features; the upsampler; the mean added
//! back and the padding cropped.

use candle_core::{DType, Module, Tensor};
use candle_nn::LayerNorm;
use candle_nn::VarBuilder;

use super::ops::{leaky_relu, pixel_shuffle, reflect_pad_to_multiple};
use super::swinir_config::{SwinIrConfig, SwinUpsampler};
use super::window_attention::window_attention;
use crate::error::Result;
use crate::nn::{conv, layer_norm, linear, param, Conv2d, Linear};

/// LayerNorm's epsilon (`nn.LayerNorm` default).
const EPS: f64 = 1e-5;

/// One Swin transformer block.
struct SwinBlock {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    /// `[heads, N, N]`: the relative position bias of every token pair in a window.
    bias: Tensor,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    shift: usize,
}

/// `relative_position_index` of a `ws × ws` window: for tokens `i`, `j` at `(hi, wi)` and
/// `(hj, wj)`, `(hi − hj + ws − 1)·(2ws − 1) + (wi − wj + ws − 1)`.
fn relative_position_index(ws: usize) -> Vec<u32> {
    let n = ws * ws;
    let mut idx = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let dh = (i / ws) + ws - 1 - (j / ws);
            let dw = (i % ws) + ws - 1 - (j % ws);
            idx.push((dh * (2 * ws - 1) + dw) as u32);
        }
    }
    idx
}

impl SwinBlock {
    fn new(vb: VarBuilder, c: &SwinIrConfig, heads: usize, shift: usize) -> Result<Self> {
        let dim = c.embed_dim;
        let ws = c.window;
        let n = ws * ws;
        let table = param(
            &vb.pp("attn"),
            ((2 * ws - 1) * (2 * ws - 1), heads),
            "relative_position_bias_table",
        )?
        .to_dtype(DType::F32)?;
        let idx = Tensor::new(relative_position_index(ws), table.device())?;
        let bias = table
            .index_select(&idx, 0)?
            .reshape((n, n, heads))?
            .permute((2, 0, 1))?
            .contiguous()?;
        Ok(Self {
            norm1: layer_norm(vb.pp("norm1"), dim, EPS)?,
            qkv: linear(vb.pp("attn.qkv"), dim, 3 * dim, true)?,
            proj: linear(vb.pp("attn.proj"), dim, dim, true)?,
            bias,
            norm2: layer_norm(vb.pp("norm2"), dim, EPS)?,
            fc1: linear(vb.pp("mlp.fc1"), dim, c.mlp_hidden, true)?,
            fc2: linear(vb.pp("mlp.fc2"), c.mlp_hidden, dim, true)?,
            heads,
            shift,
        })
    }

    /// `x` `[b, h·w, c]` (tokens of an `h × w` map, both multiples of `ws`).
    fn forward(&self, x: &Tensor, (h, w): (usize, usize), ws: usize) -> Result<Tensor> {
        let (b, _, c) = x.dims3()?;
        let y = self.norm1.forward(x)?.reshape((b, h, w, c))?;
        let y = if self.shift > 0 {
            roll(
                &roll(&y, 1, -(self.shift as isize))?,
                2,
                -(self.shift as isize),
            )?
        } else {
            y
        };
        let windows = partition(&y, ws)?;
        let a = self.attention(&windows, (self.shift > 0).then_some(((h, w), (ws, ws))))?;
        let y = reverse(&a, ws, b, h, w)?;
        let y = if self.shift > 0 {
            roll(&roll(&y, 1, self.shift as isize)?, 2, self.shift as isize)?
        } else {
            y
        };
        let x = (x + y.reshape((b, h * w, c))?)?;
        let m = self
            .fc2
            .forward(&self.fc1.forward(&self.norm2.forward(&x)?)?.gelu_erf()?)?;
        Ok((x + m)?)
    }

    /// Window attention over `x` `[b·windows, N, c]` (windows in raster order per image);
    /// `shifted`: the map and window sizes of a shifted block's mask.
    fn attention(
        &self,
        x: &Tensor,
        shifted: Option<((usize, usize), (usize, usize))>,
    ) -> Result<Tensor> {
        let (bw, n, c) = x.dims3()?;
        let hd = c / self.heads;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((bw, n, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)? * (hd as f64).powf(-0.5))?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let y = window_attention(&q, &k, &v, &self.bias, shifted)?;
        let y = y.transpose(1, 2)?.reshape((bw, n, c))?;
        Ok(self.proj.forward(&y)?)
    }
}

/// `torch.roll(x, shift, dim)` (DAT's too).
pub(super) fn roll(x: &Tensor, dim: usize, shift: isize) -> Result<Tensor> {
    let len = x.dim(dim)?;
    let s = shift.rem_euclid(len as isize) as usize;
    if s == 0 {
        return Ok(x.clone());
    }
    Ok(Tensor::cat(
        &[&x.narrow(dim, len - s, s)?, &x.narrow(dim, 0, len - s)?],
        dim,
    )?)
}

/// `window_partition`: `[b, h, w, c]` → `[b·(h/ws)·(w/ws), ws·ws, c]`.
fn partition(x: &Tensor, ws: usize) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    Ok(x.reshape((b, h / ws, ws, w / ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b * (h / ws) * (w / ws), ws * ws, c))?)
}

/// `window_reverse`: the inverse of [`partition`].
fn reverse(x: &Tensor, ws: usize, b: usize, h: usize, w: usize) -> Result<Tensor> {
    let c = x.dim(2)?;
    Ok(x.reshape((b, h / ws, w / ws, ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b, h, w, c))?)
}

/// A residual 1-conv or 3-conv (conv, LeakyReLU 0.2, 1×1 conv, LeakyReLU, conv); DAT's too.
pub(super) enum Resi {
    One(Conv2d),
    Three([Conv2d; 3]),
}

impl Resi {
    pub(super) fn new(vb: VarBuilder, dim: usize, three: bool) -> Result<Self> {
        Ok(if three {
            Resi::Three([
                conv(vb.pp("0"), dim, dim / 4, 3, 1)?,
                conv(vb.pp("2"), dim / 4, dim / 4, 1, 1)?,
                conv(vb.pp("4"), dim / 4, dim, 3, 1)?,
            ])
        } else {
            Resi::One(conv(vb, dim, dim, 3, 1)?)
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Resi::One(c) => c.forward(x)?,
            Resi::Three([a, b, c]) => {
                let y = leaky_relu(&a.forward(x)?, 0.2)?;
                let y = leaky_relu(&b.forward(&y)?, 0.2)?;
                c.forward(&y)?
            }
        })
    }
}

/// The output stage's layers (DAT's too: its two upsamplers).
pub(super) enum Head {
    /// `conv_before_upsample`, the shuffle convs, `conv_last`.
    PixelShuffle(Conv2d, Vec<(Conv2d, usize)>, Conv2d),
    /// `upsample.0` and its shuffle.
    Direct(Conv2d, usize),
    /// `conv_before_upsample`, `conv_up1..`, `conv_hr`, `conv_last`.
    NearestConv(Conv2d, Vec<Conv2d>, Conv2d, Conv2d),
    /// `conv_last` (added to the input).
    None(Conv2d),
}

impl Head {
    /// `conv_before_upsample.0`, `upsample.0`, `upsample.2`, … (×2 steps, or one ×3) and
    /// `conv_last`.
    pub(super) fn pixel_shuffle(
        vb: &VarBuilder,
        dim: usize,
        nf: usize,
        scale: usize,
        out: usize,
    ) -> Result<Self> {
        let steps: Vec<usize> = if scale == 3 {
            vec![3]
        } else {
            vec![2; scale.trailing_zeros() as usize]
        };
        let convs = steps
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                let up = vb.pp(format!("upsample.{}", 2 * i));
                Ok((conv(up, nf, r * r * nf, 3, 1)?, r))
            })
            .collect::<Result<_>>()?;
        Ok(Head::PixelShuffle(
            conv(vb.pp("conv_before_upsample.0"), dim, nf, 3, 1)?,
            convs,
            conv(vb.pp("conv_last"), nf, out, 3, 1)?,
        ))
    }

    /// `upsample.0` to `out·scale²` channels and its shuffle.
    pub(super) fn direct(vb: &VarBuilder, dim: usize, scale: usize, out: usize) -> Result<Self> {
        let cv = conv(vb.pp("upsample.0"), dim, scale * scale * out, 3, 1)?;
        Ok(Head::Direct(cv, scale))
    }

    /// The output of the body's features `body`; `x` is the network's (normalized) input.
    pub(super) fn forward(&self, body: &Tensor, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Head::PixelShuffle(before, ups, last) => {
                let mut y = leaky_relu(&before.forward(body)?, 0.01)?;
                for (cv, r) in ups {
                    y = pixel_shuffle(&cv.forward(&y)?, *r)?;
                }
                last.forward(&y)?
            }
            Head::Direct(cv, s) => pixel_shuffle(&cv.forward(body)?, *s)?,
            Head::NearestConv(before, ups, hr, last) => {
                let mut y = leaky_relu(&before.forward(body)?, 0.01)?;
                for cv in ups {
                    let (_, _, yh, yw) = y.dims4()?;
                    y = leaky_relu(&cv.forward(&y.upsample_nearest2d(2 * yh, 2 * yw)?)?, 0.2)?;
                }
                last.forward(&leaky_relu(&hr.forward(&y)?, 0.2)?)?
            }
            Head::None(last) => (x + last.forward(body)?)?,
        })
    }
}

/// The SwinIR network.
pub struct SwinIr {
    config: SwinIrConfig,
    conv_first: Conv2d,
    embed_norm: LayerNorm,
    layers: Vec<(Vec<SwinBlock>, Resi)>,
    norm: LayerNorm,
    after_body: Resi,
    head: Head,
}

impl SwinIr {
    /// Builds it from spandrel's names with `c`'s sizes.
    pub fn new(vb: VarBuilder, c: &SwinIrConfig) -> Result<Self> {
        let dim = c.embed_dim;
        let mut layers = Vec::with_capacity(c.depths.len());
        for (i, (&depth, &heads)) in c.depths.iter().zip(&c.heads).enumerate() {
            let l = vb.pp(format!("layers.{i}"));
            let blocks = (0..depth)
                .map(|j| {
                    let shift = if j % 2 == 0 { 0 } else { c.window / 2 };
                    SwinBlock::new(l.pp(format!("residual_group.blocks.{j}")), c, heads, shift)
                })
                .collect::<Result<_>>()?;
            layers.push((blocks, Resi::new(l.pp("conv"), dim, c.three_conv)?));
        }
        let nf = c.num_feat;
        let out = c.in_channels;
        let head = match c.upsampler {
            SwinUpsampler::PixelShuffle => Head::pixel_shuffle(&vb, dim, nf, c.scale, out)?,
            SwinUpsampler::Direct => Head::direct(&vb, dim, c.scale, out)?,
            SwinUpsampler::NearestConv => Head::NearestConv(
                conv(vb.pp("conv_before_upsample.0"), dim, nf, 3, 1)?,
                (1..=c.scale.trailing_zeros())
                    .map(|u| conv(vb.pp(format!("conv_up{u}")), nf, nf, 3, 1))
                    .collect::<Result<_>>()?,
                conv(vb.pp("conv_hr"), nf, nf, 3, 1)?,
                conv(vb.pp("conv_last"), nf, out, 3, 1)?,
            ),
            SwinUpsampler::None => Head::None(conv(vb.pp("conv_last"), dim, out, 3, 1)?),
        };
        Ok(Self {
            config: c.clone(),
            conv_first: conv(vb.pp("conv_first"), c.in_channels, dim, 3, 1)?,
            embed_norm: layer_norm(vb.pp("patch_embed.norm"), dim, EPS)?,
            layers,
            norm: layer_norm(vb.pp("norm"), dim, EPS)?,
            after_body: Resi::new(vb.pp("conv_after_body"), dim, c.three_conv)?,
            head,
        })
    }

    /// The body (`forward_features`) on `[b, c, h, w]`.
    fn features(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let ws = self.config.window;
        let tokens = |t: &Tensor| -> Result<Tensor> { Ok(t.flatten_from(2)?.transpose(1, 2)?) };
        let map = |t: &Tensor| -> Result<Tensor> { Ok(t.transpose(1, 2)?.reshape((b, c, h, w))?) };
        let mut t = self.embed_norm.forward(&tokens(x)?)?;
        for (blocks, conv) in &self.layers {
            let mut y = t.clone();
            for blk in blocks {
                y = blk.forward(&y, (h, w), ws)?;
            }
            t = tokens(&conv.forward(&map(&y)?)?)?.add(&t)?;
        }
        map(&self.norm.forward(&t)?)
    }

    /// Runs the network on f32 `[n, c, h, w]` in [0, 1].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (_, ch, h, w) = x.dims4()?;
        let x = reflect_pad_to_multiple(x, c.window)?;
        let mean: Vec<f32> = if ch == 3 {
            vec![0.4488, 0.4371, 0.4040]
        } else {
            vec![0.0; ch]
        };
        let mean = Tensor::from_vec(mean, (1, ch, 1, 1), x.device())?;
        let range = c.img_range();
        let x = (x.broadcast_sub(&mean)? * range)?;
        let first = self.conv_first.forward(&x)?;
        let body = (self.after_body.forward(&self.features(&first)?)? + &first)?;
        let y = self.head.forward(&body, &x)?;
        let y = ((y / range)?.broadcast_add(&mean))?;
        let s = c.scale;
        Ok(y.narrow(2, 0, h * s)?.narrow(3, 0, w * s)?)
    }
}
