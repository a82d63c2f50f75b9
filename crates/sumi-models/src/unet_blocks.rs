//! The U-Net's blocks in diffusers' form: `ResnetBlock2D`, `Transformer2DModel` (with its
//! `BasicTransformerBlock`s: self-attention, cross-attention, GEGLU feed-forward), and the
//! down/up-samplers.

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use crate::error::Result;
use crate::hypernetwork::{Hypernetworks, NO_HYPERNETWORKS};
use crate::kernels::tokens;
use crate::nn::{
    conv, group_norm, layer_norm, linear, multi_head_attention_with, Conv2d, GroupNorm, Linear,
    Reload,
};
use crate::tome::TokenMerge;

/// A residual block with a time-embedding projection (`time_emb_proj`), or without one (VAE).
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    /// Builds a block `cin → cout`; `temb` is the time-embedding width, if any.
    pub fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        temb: Option<usize>,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self {
            norm1: group_norm(vb.pp("norm1"), 32, cin, eps)?,
            conv1: conv(vb.pp("conv1"), cin, cout, 3, 1)?,
            time: temb
                .map(|t| linear(vb.pp("time_emb_proj"), t, cout, true))
                .transpose()?,
            norm2: group_norm(vb.pp("norm2"), 32, cout, eps)?,
            conv2: conv(vb.pp("conv2"), cout, cout, 3, 1)?,
            shortcut: (cin != cout)
                .then(|| conv(vb.pp("conv_shortcut"), cin, cout, 1, 1))
                .transpose()?,
        })
    }

    /// `x` `[b, c, h, w]`; `emb` the (already SiLU-ed) time embedding `[b, temb]`.
    pub fn forward(&self, x: &Tensor, emb: Option<&Tensor>) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = match (&self.time, emb) {
            (Some(t), Some(e)) => h.broadcast_add(&t.forward(e)?.unsqueeze(2)?.unsqueeze(3)?)?,
            _ => h,
        };
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let skip = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        Ok((skip + h)?)
    }
}

/// Multi-head attention with q/k/v projections without bias and a biased output projection.
pub struct CrossAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl CrossAttention {
    /// `dim` query width, `ctx` key/value width.
    pub fn new(vb: VarBuilder, dim: usize, ctx: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q: linear(vb.pp("to_q"), dim, dim, false)?,
            k: linear(vb.pp("to_k"), ctx, dim, false)?,
            v: linear(vb.pp("to_v"), ctx, dim, false)?,
            out: linear(vb.pp("to_out.0"), dim, dim, true)?,
            heads,
        })
    }

    /// `x` `[b, n, dim]` attending to `ctx` `[b, m, ctx]` (itself when `None`).
    pub fn forward(&self, x: &Tensor, ctx: Option<&Tensor>) -> Result<Tensor> {
        self.forward_hyper(x, ctx, &NO_HYPERNETWORKS)
    }

    /// [`Self::forward`] with `to_k` and `to_v` fed the context as `hyper` changes it (A1111's
    /// hijacked `CrossAttention.forward`; self-attention's context is `x`).
    pub fn forward_hyper(
        &self,
        x: &Tensor,
        ctx: Option<&Tensor>,
        hyper: &Hypernetworks,
    ) -> Result<Tensor> {
        let c = ctx.unwrap_or(x);
        let q = self.q.forward(x)?;
        let (k, v) = match hyper.apply(c)? {
            Some((ck, cv)) => (self.k.forward(&ck)?, self.v.forward(&cv)?),
            None => (self.k.forward(c)?, self.v.forward(c)?),
        };
        Ok(self.out.forward(&multi_head_attention_with(
            &q,
            &k,
            &v,
            self.heads,
            self.q.is_bf16(),
        )?)?)
    }
}

struct TransformerBlock {
    norm1: LayerNorm,
    attn1: CrossAttention,
    norm2: LayerNorm,
    attn2: CrossAttention,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn new(vb: VarBuilder, dim: usize, ctx: usize, heads: usize) -> Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            norm1: layer_norm(vb.pp("norm1"), dim, 1e-5)?,
            attn1: CrossAttention::new(vb.pp("attn1"), dim, dim, heads)?,
            norm2: layer_norm(vb.pp("norm2"), dim, 1e-5)?,
            attn2: CrossAttention::new(vb.pp("attn2"), dim, ctx, heads)?,
            norm3: layer_norm(vb.pp("norm3"), dim, 1e-5)?,
            ff_in: linear(vb.pp("ff.net.0.proj"), dim, 2 * inner, true)?,
            ff_out: linear(vb.pp("ff.net.2"), inner, dim, true)?,
        })
    }

    /// `tome`: token merging on the self-attention, `(ratio, (w, h))` of the block's token grid
    /// (tomesd's ToMe block: the plan from the block input, the norm's output merged).
    fn forward(
        &self,
        x: &Tensor,
        ctx: &Tensor,
        hyper: &Hypernetworks,
        tome: Option<(f64, (usize, usize))>,
    ) -> Result<Tensor> {
        let plan = match tome {
            Some((ratio, grid)) => {
                let r = crate::tome::merged_tokens(x.dim(1)?, ratio);
                TokenMerge::plan(x, grid, (2, 2), r)?
            }
            None => None,
        };
        let n = self.norm1.forward(x)?;
        let a = match &plan {
            Some(p) => p.unmerge(&self.attn1.forward_hyper(&p.merge(&n)?, None, hyper)?)?,
            None => self.attn1.forward_hyper(&n, None, hyper)?,
        };
        let x = (a + x)?;
        let x = (self
            .attn2
            .forward_hyper(&self.norm2.forward(&x)?, Some(ctx), hyper)?
            + &x)?;
        let h = self.ff_in.forward(&self.norm3.forward(&x)?)?;
        let g = if h.device().is_cpu() && h.dtype() == candle_core::DType::F32 {
            crate::profile::time(
                || (format!("geglu {:?}", h.dims()), 0.0),
                || crate::kernels::geglu::geglu(&h),
            )?
        } else {
            let half = h.dim(2)? / 2;
            (h.narrow(2, 0, half)? * h.narrow(2, half, half)?.gelu_erf()?)?
        };
        Ok((self.ff_out.forward(&g)? + x)?)
    }
}

/// A spatial transformer: GroupNorm, `proj_in`, transformer blocks, `proj_out`, residual.
/// `proj_in`/`proj_out` are 1×1 convolutions in SD1 and linear layers in SD2; both act on the
/// channel dimension, so both are applied as linear layers here.
pub struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Linear,
    blocks: Vec<TransformerBlock>,
    proj_out: Linear,
}

impl SpatialTransformer {
    /// `dim` channels, `ctx` context width, `depth` blocks of `heads` heads.
    pub fn new(vb: VarBuilder, dim: usize, ctx: usize, heads: usize, depth: usize) -> Result<Self> {
        let blocks = (0..depth)
            .map(|i| {
                TransformerBlock::new(vb.pp(format!("transformer_blocks.{i}")), dim, ctx, heads)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            norm: group_norm(vb.pp("norm"), 32, dim, 1e-6)?,
            proj_in: linear(vb.pp("proj_in"), dim, dim, true)?,
            blocks,
            proj_out: linear(vb.pp("proj_out"), dim, dim, true)?,
        })
    }

    /// `x` `[b, c, h, w]`, `ctx` `[b, m, ctx]`.
    pub fn forward(&self, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        self.forward_hyper(x, ctx, &NO_HYPERNETWORKS)
    }

    /// [`Self::forward`] with hypernetworks on every attention's context.
    pub fn forward_hyper(&self, x: &Tensor, ctx: &Tensor, hyper: &Hypernetworks) -> Result<Tensor> {
        self.forward_merging(x, ctx, hyper, 0.0)
    }

    /// [`Self::forward_hyper`] with token merging at `ratio` (0 = none) on every block's
    /// self-attention, as tomesd does at the U-Net's full resolution.
    pub fn forward_merging(
        &self,
        x: &Tensor,
        ctx: &Tensor,
        hyper: &Hypernetworks,
        ratio: f64,
    ) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let tome = (ratio > 0.0).then_some((ratio, (w, h)));
        let y = tokens::to_tokens(&self.norm.forward(x)?)?;
        let mut y = self.proj_in.forward(&y)?;
        for blk in &self.blocks {
            y = blk.forward(&y, ctx, hyper, tome)?;
        }
        let y = self.proj_out.forward(&y)?;
        Ok(tokens::add_from_tokens(&y, x)?)
    }
}

/// Nearest-neighbour ×2 upsampling followed by a 3×3 convolution (LDM's `Upsample`:
/// `F.interpolate(x, scale_factor=2, mode="nearest")`, then the convolution).
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    /// `ch` channels in and out.
    pub fn new(vb: VarBuilder, ch: usize) -> Result<Self> {
        Ok(Self {
            conv: conv(vb.pp("conv"), ch, ch, 3, 1)?,
        })
    }

    /// Upsamples `x` ×2 and convolves.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.conv.forward_upsampled2x(x)?)
    }
}

/// The blocks' layers that can be loaded again by name (see [`Reload`]), appended to `out`.
pub(crate) trait Layers {
    /// Appends the block's reloadable layers.
    fn layers_mut<'a>(&'a mut self, out: &mut Vec<&'a mut dyn Reload>);
}

impl Layers for ResnetBlock {
    fn layers_mut<'a>(&'a mut self, out: &mut Vec<&'a mut dyn Reload>) {
        out.extend([&mut self.norm1 as &mut dyn Reload, &mut self.conv1]);
        out.extend(self.time.as_mut().map(|t| t as &mut dyn Reload));
        out.extend([&mut self.norm2 as &mut dyn Reload, &mut self.conv2]);
        out.extend(self.shortcut.as_mut().map(|s| s as &mut dyn Reload));
    }
}

impl Layers for CrossAttention {
    fn layers_mut<'a>(&'a mut self, out: &mut Vec<&'a mut dyn Reload>) {
        out.extend([
            &mut self.q as &mut dyn Reload,
            &mut self.k,
            &mut self.v,
            &mut self.out,
        ]);
    }
}

impl Layers for SpatialTransformer {
    fn layers_mut<'a>(&'a mut self, out: &mut Vec<&'a mut dyn Reload>) {
        out.extend([&mut self.norm as &mut dyn Reload, &mut self.proj_in]);
        for b in &mut self.blocks {
            b.attn1.layers_mut(out);
            b.attn2.layers_mut(out);
            out.extend([&mut b.ff_in as &mut dyn Reload, &mut b.ff_out]);
        }
        out.push(&mut self.proj_out);
    }
}

impl Layers for Upsample {
    fn layers_mut<'a>(&'a mut self, out: &mut Vec<&'a mut dyn Reload>) {
        out.push(&mut self.conv);
    }
}
