//! DAT (Dual Aggregation Transformer), built as spandrel 0.4.2's `DAT` builds it from a state
//! dict (A1111 v1.10.1 runs DAT files through spandrel's descriptor): the input padded to 16
//! pixels as the descriptor's size requirement pads it, mean subtracted; `conv_first`; residual
//! groups of blocks alternating spatial-window attention (two branches on half the channels
//! each, windows `split[0]×split[1]` and the transpose, q/k/v zero-padded to a multiple of the
//! larger side, a position bias from `DynamicPosBias`, some blocks on shifted windows with the
//! cross-region mask) and channel attention, each with a depthwise-conv branch and the adaptive
//! interaction between the two, then the spatial-gate feed-forward network (SGFN); each group
//! ends in a conv plus its input; LayerNorm; `conv_after_body` plus the first features; the
//! upsampler; the mean added back and the padding cropped. Activations live as `[b, h, w, c]`.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{LayerNorm, VarBuilder};

use super::dat_config::{DatConfig, DatUpsampler};
use super::swinir::{roll, Head, Resi};
use super::window_attention::window_attention;
use crate::error::Result;
use crate::nn::{conv, layer_norm, linear, param, Conv2d, Linear};

/// LayerNorm's and BatchNorm's epsilon (PyTorch defaults).
const EPS: f64 = 1e-5;
/// spandrel's `SizeRequirements(minimum=16)` for DAT.
const MIN_SIDE: usize = 16;

/// A depthwise 3×3 convolution (padding 1, bias) on `[b, h, w, c]`.
struct DwConv {
    /// `[3, 3, c]`: the tap of each offset per channel.
    taps: Tensor,
    bias: Tensor,
}

impl DwConv {
    fn new(vb: VarBuilder, c: usize) -> Result<Self> {
        let w = param(&vb, (c, 1, 3, 3), "weight")?;
        Ok(Self {
            taps: w.reshape((c, 9))?.t()?.reshape((3, 3, c))?.contiguous()?,
            bias: param(&vb, c, "bias")?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, h, w, _) = x.dims4()?;
        let p = x.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?;
        let mut y = self.bias.broadcast_as(x.shape())?.contiguous()?;
        for dy in 0..3 {
            for dx in 0..3 {
                let tap = self.taps.get(dy)?.get(dx)?;
                let s = p.narrow(1, dy, h)?.narrow(2, dx, w)?;
                y = (y + s.broadcast_mul(&tap)?)?;
            }
        }
        Ok(y)
    }
}

/// BatchNorm in eval mode over the last dimension: `x·scale + shift`.
struct Bn {
    scale: Tensor,
    shift: Tensor,
}

impl Bn {
    fn new(vb: VarBuilder, c: usize) -> Result<Self> {
        let w = param(&vb, c, "weight")?;
        let b = param(&vb, c, "bias")?;
        let mean = param(&vb, c, "running_mean")?;
        let var = param(&vb, c, "running_var")?;
        let scale = (w / (var + EPS)?.sqrt()?)?;
        let shift = (b - (mean * &scale)?)?;
        Ok(Self { scale, shift })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)?)
    }
}

/// A 1×1 convolution on the last dimension.
struct Pointwise {
    /// `[in, out]`.
    w: Tensor,
    b: Tensor,
}

impl Pointwise {
    fn new(vb: VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        let w = param(&vb, (cout, cin, 1, 1), "weight")?;
        Ok(Self {
            w: w.reshape((cout, cin))?.t()?.contiguous()?,
            b: param(&vb, cout, "bias")?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_matmul(&self.w)?.broadcast_add(&self.b)?)
    }
}

/// The convolution branch and the adaptive interaction module's two maps.
struct Aim {
    dw: DwConv,
    dw_bn: Bn,
    ci: (Pointwise, Bn, Pointwise),
    si: (Pointwise, Bn, Pointwise),
}

impl Aim {
    fn new(vb: &VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            dw: DwConv::new(vb.pp("dwconv.0"), c)?,
            dw_bn: Bn::new(vb.pp("dwconv.1"), c)?,
            ci: (
                Pointwise::new(vb.pp("channel_interaction.1"), c, c / 8)?,
                Bn::new(vb.pp("channel_interaction.2"), c / 8)?,
                Pointwise::new(vb.pp("channel_interaction.4"), c / 8, c)?,
            ),
            si: (
                Pointwise::new(vb.pp("spatial_interaction.0"), c, c / 16)?,
                Bn::new(vb.pp("spatial_interaction.1"), c / 16)?,
                Pointwise::new(vb.pp("spatial_interaction.3"), c / 16, 1)?,
            ),
        })
    }

    /// `dwconv(v)`: depthwise conv, BatchNorm, GELU.
    fn conv(&self, v: &Tensor) -> Result<Tensor> {
        Ok(self.dw_bn.forward(&self.dw.forward(v)?)?.gelu_erf()?)
    }

    /// `sigmoid(channel_interaction(x))` `[b, 1, 1, c]` (average pool first).
    fn channel(&self, x: &Tensor) -> Result<Tensor> {
        let pooled = x.mean_keepdim(1)?.mean_keepdim(2)?;
        let (a, bn, b) = &self.ci;
        let y = bn.forward(&a.forward(&pooled)?)?.gelu_erf()?;
        Ok(candle_nn::ops::sigmoid(&b.forward(&y)?)?)
    }

    /// `sigmoid(spatial_interaction(x))` `[b, h, w, 1]`.
    fn spatial(&self, x: &Tensor) -> Result<Tensor> {
        let (a, bn, b) = &self.si;
        let y = bn.forward(&a.forward(x)?)?.gelu_erf()?;
        Ok(candle_nn::ops::sigmoid(&b.forward(&y)?)?)
    }
}

/// One branch of the spatial attention: windows `hs × ws`, its position bias.
struct Branch {
    hs: usize,
    ws: usize,
    heads: usize,
    /// `[heads, N, N]`.
    bias: Tensor,
}

/// `DynamicPosBias` (residual = false) of the branch's `rpe_biases` table, gathered by the
/// `relative_position_index` of its window: `[heads, N, N]`.
fn position_bias(
    vb: VarBuilder,
    pos_dim: usize,
    heads: usize,
    hs: usize,
    ws: usize,
) -> Result<Tensor> {
    let (rh, rw) = (2 * hs - 1, 2 * ws - 1);
    let mut table = Vec::with_capacity(rh * rw * 2);
    for dh in 0..rh {
        for dw in 0..rw {
            table.push(dh as f32 - (hs as f32 - 1.0));
            table.push(dw as f32 - (ws as f32 - 1.0));
        }
    }
    let dev = vb.device().clone();
    let mut pos = linear(vb.pp("pos_proj"), 2, pos_dim, true)?.forward(&Tensor::from_vec(
        table,
        (rh * rw, 2),
        &dev,
    )?)?;
    for (i, out) in [(1, pos_dim), (2, pos_dim), (3, heads)] {
        let ln = layer_norm(vb.pp(format!("pos{i}.0")), pos_dim, EPS)?;
        let fc = linear(vb.pp(format!("pos{i}.2")), pos_dim, out, true)?;
        pos = fc.forward(&ln.forward(&pos)?.relu()?)?;
    }
    let n = hs * ws;
    let mut idx = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let dh = (i / ws) + hs - 1 - (j / ws);
            let dw = (i % ws) + ws - 1 - (j % ws);
            idx.push((dh * rw + dw) as u32);
        }
    }
    let idx = Tensor::new(idx, &dev)?;
    Ok(pos
        .index_select(&idx, 0)?
        .reshape((n, n, heads))?
        .permute((2, 0, 1))?
        .contiguous()?)
}

impl Branch {
    /// Attention of `qkv` `[3, b, h, w, c]` (sides multiples of the window) in windows, with
    /// the mask of shifted windows when `shifted`; `[b, h, w, c]`. The windows go in groups of
    /// at most `ATTN_BUDGET` attention weights ([`window_attention`]).
    fn forward(&self, qkv: &Tensor, shifted: bool) -> Result<Tensor> {
        let (_, b, h, w, c) = qkv.dims5()?;
        let (hs, ws, heads) = (self.hs, self.ws, self.heads);
        let (nh, nw, n, hd) = (h / hs, w / ws, hs * ws, c / heads);
        let win = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, nh, hs, nw, ws, c))?
                .permute((0, 1, 3, 2, 4, 5))?
                .reshape((b * nh * nw, n, heads, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = (win(qkv.get(0)?)? * (hd as f64).powf(-0.5))?;
        let k = win(qkv.get(1)?)?;
        let v = win(qkv.get(2)?)?;
        let shift = shifted.then_some(((h, w), (hs, ws)));
        let y = window_attention(&q, &k, &v, &self.bias, shift)?;
        Ok(y.transpose(1, 2)?
            .reshape((b, nh, nw, hs, ws, c))?
            .permute((0, 1, 3, 2, 4, 5))?
            .reshape((b, h, w, c))?)
    }
}

/// The attention of a block.
enum Attn {
    /// Adaptive spatial attention: the two window branches; shifted or not.
    Spatial([Branch; 2], bool),
    /// Adaptive channel attention: `temperature` `[heads, 1, 1]`.
    Channel(Tensor, usize),
}

/// One dual aggregation Transformer block.
struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    attn: Attn,
    aim: Aim,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    sg_norm: LayerNorm,
    sg_conv: DwConv,
    fc2: Linear,
}

impl Block {
    fn new(vb: VarBuilder, c: &DatConfig, split: [usize; 2], g: usize, b: usize) -> Result<Self> {
        let dim = c.embed_dim;
        let heads = c.heads[g];
        let a = vb.pp("attn");
        let attn = if b.is_multiple_of(2) {
            let half = heads / 2;
            let [s0, s1] = split;
            let branch = |i: usize, hs: usize, ws: usize| -> Result<Branch> {
                let vb = a.pp(format!("attns.{i}.pos"));
                let bias = position_bias(vb, c.pos_dim(), half, hs, ws)?;
                Ok(Branch {
                    hs,
                    ws,
                    heads: half,
                    bias,
                })
            };
            Attn::Spatial(
                [branch(0, s0, s1)?, branch(1, s1, s0)?],
                DatConfig::shifted(g, b),
            )
        } else {
            Attn::Channel(param(&a, (heads, 1, 1), "temperature")?, heads)
        };
        let hid = c.hidden;
        Ok(Self {
            norm1: layer_norm(vb.pp("norm1"), dim, EPS)?,
            qkv: linear(a.pp("qkv"), dim, 3 * dim, c.qkv_bias)?,
            attn,
            aim: Aim::new(&a, dim)?,
            proj: linear(a.pp("proj"), dim, dim, true)?,
            norm2: layer_norm(vb.pp("norm2"), dim, EPS)?,
            fc1: linear(vb.pp("ffn.fc1"), dim, hid, true)?,
            sg_norm: layer_norm(vb.pp("ffn.sg.norm"), hid / 2, EPS)?,
            sg_conv: DwConv::new(vb.pp("ffn.sg.conv"), hid / 2)?,
            fc2: linear(vb.pp("ffn.fc2"), hid / 2, dim, true)?,
        })
    }

    /// `x` `[b, h, w, c]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.norm1.forward(x)?;
        let qkv = self.qkv.forward(&y)?;
        let a = match &self.attn {
            Attn::Spatial(branches, shifted) => self.spatial(&qkv, branches, *shifted)?,
            Attn::Channel(t, heads) => self.channel(&qkv, t, *heads)?,
        };
        let x = (x + self.proj.forward(&a)?)?;
        let y = self.fc1.forward(&self.norm2.forward(&x)?)?.gelu_erf()?;
        let half = y.dim(D::Minus1)? / 2;
        let gate = self
            .sg_conv
            .forward(&self.sg_norm.forward(&y.narrow(3, half, half)?)?)?;
        let y = self.fc2.forward(&(y.narrow(3, 0, half)? * gate)?)?;
        Ok((x + y)?)
    }

    /// `Adaptive_Spatial_Attention` after `qkv` `[b, h, w, 3c]`, before `proj`.
    fn spatial(&self, qkv: &Tensor, br: &[Branch; 2], shifted: bool) -> Result<Tensor> {
        let (b, h, w, c3) = qkv.dims4()?;
        let c = c3 / 3;
        let v = qkv.narrow(3, 2 * c, c)?;
        let m = br[0].hs.max(br[0].ws);
        let (ph, pw) = ((m - h % m) % m, (m - w % m) % m);
        let qkv = qkv
            .reshape((b, h, w, 3, c))?
            .permute((3, 0, 1, 2, 4))?
            .pad_with_zeros(2, 0, ph)?
            .pad_with_zeros(3, 0, pw)?;
        let mut outs = Vec::with_capacity(2);
        for (i, bb) in br.iter().enumerate() {
            let part = qkv.narrow(4, i * (c / 2), c / 2)?;
            let (sh, sw) = ((bb.hs / 2) as isize, (bb.ws / 2) as isize);
            let y = if shifted {
                let part = roll(&roll(&part, 2, -sh)?, 3, -sw)?.contiguous()?;
                let y = bb.forward(&part, true)?;
                roll(&roll(&y, 1, sh)?, 2, sw)?
            } else {
                bb.forward(&part.contiguous()?, false)?
            };
            outs.push(y.narrow(1, 0, h)?.narrow(2, 0, w)?);
        }
        let att = Tensor::cat(&outs, 3)?;
        let conv = self.aim.conv(&v.contiguous()?)?;
        let spatial = self.aim.spatial(&att)?;
        let att = att.broadcast_mul(&self.aim.channel(&conv)?)?;
        Ok((att + conv.broadcast_mul(&spatial)?)?)
    }

    /// `Adaptive_Channel_Attention` after `qkv` `[b, h, w, 3c]`, before `proj`.
    fn channel(&self, qkv: &Tensor, temperature: &Tensor, heads: usize) -> Result<Tensor> {
        let (b, h, w, c3) = qkv.dims4()?;
        let (c, n) = (c3 / 3, h * w);
        let hd = c / heads;
        // [b, heads, hd, n]
        let part = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(3, i * c, c)?
                .reshape((b, n, heads, hd))?
                .permute((0, 2, 3, 1))?
                .contiguous()?)
        };
        let normalize = |t: Tensor| -> Result<Tensor> {
            let norm = t.sqr()?.sum_keepdim(3)?.sqrt()?.maximum(1e-12)?;
            Ok(t.broadcast_div(&norm)?)
        };
        let q = normalize(part(0)?)?;
        let k = normalize(part(1)?)?;
        let v = part(2)?;
        let att = q
            .matmul(&k.t()?)?
            .broadcast_mul(&temperature.unsqueeze(0)?)?;
        let att = candle_nn::ops::softmax_last_dim(&att)?.matmul(&v)?;
        let att = att.permute((0, 3, 1, 2))?.reshape((b, h, w, c))?;
        let conv = self.aim.conv(&qkv.narrow(3, 2 * c, c)?.contiguous()?)?;
        let channel = self.aim.channel(&att)?;
        let att = att.broadcast_mul(&self.aim.spatial(&conv)?)?;
        Ok((att + conv.broadcast_mul(&channel)?)?)
    }
}

/// The DAT network.
pub struct Dat {
    config: DatConfig,
    conv_first: Conv2d,
    before_norm: LayerNorm,
    groups: Vec<(Vec<Block>, Resi)>,
    norm: LayerNorm,
    after_body: Resi,
    head: Head,
}

impl Dat {
    /// Builds it from spandrel's names with `c`'s sizes and `split` (the split sizes in the
    /// order of the file's `rpe_biases`).
    pub fn new(vb: VarBuilder, c: &DatConfig, split: [usize; 2]) -> Result<Self> {
        let dim = c.embed_dim;
        let mut groups = Vec::with_capacity(c.depths.len());
        for (g, &depth) in c.depths.iter().enumerate() {
            let l = vb.pp(format!("layers.{g}"));
            let blocks = (0..depth)
                .map(|b| Block::new(l.pp(format!("blocks.{b}")), c, split, g, b))
                .collect::<Result<_>>()?;
            groups.push((blocks, Resi::new(l.pp("conv"), dim, c.three_conv)?));
        }
        let out = c.in_channels;
        let head = match c.upsampler {
            DatUpsampler::PixelShuffle => Head::pixel_shuffle(&vb, dim, 64, c.scale, out)?,
            DatUpsampler::Direct => Head::direct(&vb, dim, c.scale, out)?,
        };
        Ok(Self {
            config: c.clone(),
            conv_first: conv(vb.pp("conv_first"), c.in_channels, dim, 3, 1)?,
            before_norm: layer_norm(vb.pp("before_RG.1"), dim, EPS)?,
            groups,
            norm: layer_norm(vb.pp("norm"), dim, EPS)?,
            after_body: Resi::new(vb.pp("conv_after_body"), dim, c.three_conv)?,
            head,
        })
    }

    /// The body (`forward_features`) on `[b, c, h, w]`.
    fn features(&self, x: &Tensor) -> Result<Tensor> {
        let nhwc = |t: &Tensor| -> Result<Tensor> { Ok(t.permute((0, 2, 3, 1))?.contiguous()?) };
        let nchw = |t: &Tensor| -> Result<Tensor> { Ok(t.permute((0, 3, 1, 2))?.contiguous()?) };
        let mut t = self.before_norm.forward(&nhwc(x)?)?;
        for (blocks, conv) in &self.groups {
            let mut y = t.clone();
            for blk in blocks {
                y = blk.forward(&y)?;
            }
            t = (nhwc(&conv.forward(&nchw(&y)?)?)? + t)?;
        }
        nchw(&self.norm.forward(&t)?)
    }

    /// Runs the network on f32 `[n, c, h, w]` in [0, 1], padded to 16 pixels first as
    /// spandrel's descriptor pads (reflect, then replicate) and cropped back.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (_, ch, h, w) = x.dims4()?;
        let x = pad_to_min(&pad_to_min(x, 2)?, 3)?;
        let mean: Vec<f32> = if ch == 3 {
            vec![0.4488, 0.4371, 0.4040]
        } else {
            vec![0.0; ch]
        };
        let mean = Tensor::from_vec(mean, (1, ch, 1, 1), x.device())?;
        let x = x.broadcast_sub(&mean)?.to_dtype(DType::F32)?;
        let first = self.conv_first.forward(&x)?;
        let body = (self.after_body.forward(&self.features(&first)?)? + &first)?;
        let y = self.head.forward(&body, &x)?;
        let y = y.broadcast_add(&mean)?;
        let s = c.scale;
        Ok(y.narrow(2, 0, h * s)?.narrow(3, 0, w * s)?)
    }
}

/// spandrel's `pad_tensor` for `SizeRequirements(minimum=16)` along `dim`: reflect padding of
/// up to `len − 1`, the rest replicating the new edge.
fn pad_to_min(x: &Tensor, dim: usize) -> Result<Tensor> {
    let len = x.dim(dim)?;
    if len >= MIN_SIDE {
        return Ok(x.clone());
    }
    let pad = MIN_SIDE - len;
    let reflect = pad.min(len - 1);
    let mut idx: Vec<u32> = (0..len)
        .chain((0..reflect).map(|k| len - 2 - k))
        .map(|i| i as u32)
        .collect();
    let edge = *idx.last().unwrap_or(&0);
    idx.resize(len + pad, edge);
    let idx = Tensor::new(idx, x.device())?;
    Ok(x.index_select(&idx, dim)?)
}
