//! The Stable Diffusion U-Net (diffusers `UNet2DConditionModel` naming) for SD1.x, SD2.x and
//! SDXL, ε or v output (the caller interprets it), 4 or 9 input channels, with a hook for
//! additive residuals (ControlNet-style) on the skip connections and the middle block.
//!
//! SDXL's U-Net differs only in sizes the weights show (3 levels, none with transformers at
//! level 0, a transformer depth per level) and in its ADM input: a vector `y` (SGM's name;
//! diffusers' `add_embedding` of `text_time`), the pooled text embedding concatenated with
//! Fourier embeddings of the size/crop/aesthetic conditions ([`fourier_embedding`]), passed
//! through two linear layers and added to the time embedding.

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::{ModelError, Result, Shapes};
use crate::hypernetwork::{Hypernetworks, NO_HYPERNETWORKS};
use crate::nn::{conv, group_norm, linear, Conv2d, GroupNorm, Linear, Reload};
use crate::unet_blocks::{Layers, ResnetBlock, SpatialTransformer, Upsample};

/// U-Net hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetConfig {
    /// Latent (+ conditioning) channels in: 4, or 9 for inpainting models.
    pub in_channels: usize,
    /// Channels out (4).
    pub out_channels: usize,
    /// Channels per level (SD: 320, 640, 1280, 1280).
    pub block_channels: Vec<usize>,
    /// Whether each level has spatial transformers.
    pub attention: Vec<bool>,
    /// Heads per level.
    pub heads: Vec<usize>,
    /// Residual blocks per down level (up levels have one more).
    pub layers_per_block: usize,
    /// Transformer blocks per spatial transformer, per level (0 where a level has none).
    pub depth: Vec<usize>,
    /// Transformer blocks in the middle block's spatial transformer.
    pub mid_depth: usize,
    /// Context (text embedding) width.
    pub context_dim: usize,
    /// Time-embedding width.
    pub time_dim: usize,
    /// Width of the ADM input vector `y` (SDXL base 2816, refiner 2560); `None` for SD1/SD2.
    pub adm_in: Option<usize>,
}

impl UNetConfig {
    /// SD1.x (`v1-inference.yaml`: 320 channels, mult 1-2-4-4, 8 heads, context 768).
    pub fn sd1() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_channels: vec![320, 640, 1280, 1280],
            attention: vec![true, true, true, false],
            heads: vec![8; 4],
            layers_per_block: 2,
            depth: vec![1, 1, 1, 0],
            mid_depth: 1,
            context_dim: 768,
            time_dim: 1280,
            adm_in: None,
        }
    }

    /// SDXL base (`sd_xl_base.yaml`: 320 channels, mult 1-2-4, no transformers at level 0,
    /// depths 2 and 10, 64-channel heads, context 2048, ADM 2816).
    pub fn sdxl() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_channels: vec![320, 640, 1280],
            attention: vec![false, true, true],
            heads: vec![5, 10, 20],
            layers_per_block: 2,
            depth: vec![0, 2, 10],
            mid_depth: 10,
            context_dim: 2048,
            time_dim: 1280,
            adm_in: Some(2816),
        }
    }

    /// Reads the sizes from the U-Net's canonical tensor shapes; `heads(channels, level)`
    /// supplies what the weights cannot show.
    pub fn infer(shapes: Shapes, heads: &dyn Fn(usize, usize) -> usize) -> Result<Self> {
        let get = |n: &str| {
            shapes(n).ok_or_else(|| ModelError::Config {
                component: "U-Net",
                detail: format!("missing tensor `{n}`"),
            })
        };
        let conv_in = get("conv_in.weight")?;
        let conv_out = get("conv_out.weight")?;
        let levels = (0..)
            .take_while(|i| shapes(&format!("down_blocks.{i}.resnets.0.conv1.weight")).is_some())
            .count();
        if levels == 0 {
            return Err(ModelError::Config {
                component: "U-Net",
                detail: "no down blocks".into(),
            });
        }
        let block_channels: Vec<usize> = (0..levels)
            .map(|i| get(&format!("down_blocks.{i}.resnets.0.conv1.weight")).map(|s| s[0]))
            .collect::<Result<_>>()?;
        let attention: Vec<bool> = (0..levels)
            .map(|i| shapes(&format!("down_blocks.{i}.attentions.0.proj_in.weight")).is_some())
            .collect();
        let first = attention
            .iter()
            .position(|&a| a)
            .ok_or_else(|| ModelError::Config {
                component: "U-Net",
                detail: "no attention blocks".into(),
            })?;
        let blocks = |pre: &str| {
            (0..)
                .take_while(|j| {
                    shapes(&format!("{pre}.transformer_blocks.{j}.norm1.weight")).is_some()
                })
                .count()
        };
        let pre = format!("down_blocks.{first}.attentions.0.transformer_blocks");
        let context_dim = get(&format!("{pre}.0.attn2.to_k.weight"))?[1];
        let depth = (0..levels)
            .map(|i| blocks(&format!("down_blocks.{i}.attentions.0")))
            .collect();
        let layers_per_block = (0..)
            .take_while(|j| shapes(&format!("down_blocks.0.resnets.{j}.conv1.weight")).is_some())
            .count();
        Ok(Self {
            in_channels: conv_in[1],
            out_channels: conv_out[0],
            heads: block_channels
                .iter()
                .enumerate()
                .map(|(i, &c)| heads(c, i))
                .collect(),
            block_channels,
            attention,
            layers_per_block,
            depth,
            mid_depth: blocks("mid_block.attentions.0"),
            context_dim,
            time_dim: get("time_embedding.linear_1.weight")?[0],
            adm_in: shapes("add_embedding.linear_1.weight").and_then(|s| s.get(1).copied()),
        })
    }
}

struct Level {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<SpatialTransformer>,
    down: Option<Conv2d>,
    up: Option<Upsample>,
}

/// Residuals added to the U-Net's skip connections (one per skip, in order) and to the middle
/// block's output, as a ControlNet produces them.
pub struct Residuals {
    /// One per skip connection (`3 · levels + 1` for SD).
    pub down: Vec<Tensor>,
    /// Added to the middle block's output.
    pub mid: Tensor,
}

/// The U-Net's inputs beyond `x`, `t` and the context.
#[derive(Clone, Copy)]
pub struct Extras<'a> {
    /// SDXL's ADM vector `[b, adm_in]` (`None` for SD1/SD2).
    pub y: Option<&'a Tensor>,
    /// ControlNet-style residuals.
    pub residuals: Option<&'a Residuals>,
    /// Hypernetworks on the attentions' contexts.
    pub hyper: &'a Hypernetworks,
    /// Token merging ratio (A1111's `token_merging_ratio`, tomesd with `use_rand=False`), 0 =
    /// none.
    pub token_merging: f64,
}

/// The U-Net.
pub struct UNet {
    cfg: UNetConfig,
    conv_in: Conv2d,
    time1: Linear,
    time2: Linear,
    /// SDXL's ADM input layers (`add_embedding.linear_1`/`linear_2`).
    adm: Option<(Linear, Linear)>,
    down: Vec<Level>,
    mid: (ResnetBlock, SpatialTransformer, ResnetBlock),
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    /// Builds the U-Net from names relative to it (`conv_in.weight`, `down_blocks.0…`).
    pub fn new(vb: VarBuilder, cfg: UNetConfig) -> Result<Self> {
        let ch = &cfg.block_channels;
        let n = ch.len();
        let t = cfg.time_dim;
        let level = |v: &[usize], lvl: usize, what: &str| {
            v.get(lvl).copied().ok_or_else(|| ModelError::Config {
                component: "U-Net",
                detail: format!("no {what} for level {lvl}"),
            })
        };
        let st = |vb: VarBuilder, c: usize, lvl: usize, depth: usize| {
            SpatialTransformer::new(
                vb,
                c,
                cfg.context_dim,
                level(&cfg.heads, lvl, "heads")?,
                depth,
            )
        };
        let mut down = Vec::with_capacity(n);
        for i in 0..n {
            let vb = vb.pp(format!("down_blocks.{i}"));
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..cfg.layers_per_block {
                let cin = if j == 0 {
                    if i == 0 {
                        ch[0]
                    } else {
                        ch[i - 1]
                    }
                } else {
                    ch[i]
                };
                resnets.push(ResnetBlock::new(
                    vb.pp(format!("resnets.{j}")),
                    cin,
                    ch[i],
                    Some(t),
                    1e-5,
                )?);
                if cfg.attention[i] {
                    let d = level(&cfg.depth, i, "depth")?;
                    attentions.push(st(vb.pp(format!("attentions.{j}")), ch[i], i, d)?);
                }
            }
            let down_conv = (i + 1 < n)
                .then(|| conv(vb.pp("downsamplers.0.conv"), ch[i], ch[i], 3, 2))
                .transpose()?;
            down.push(Level {
                resnets,
                attentions,
                down: down_conv,
                up: None,
            });
        }
        let m = vb.pp("mid_block");
        let mid = (
            ResnetBlock::new(m.pp("resnets.0"), ch[n - 1], ch[n - 1], Some(t), 1e-5)?,
            st(m.pp("attentions.0"), ch[n - 1], n - 1, cfg.mid_depth)?,
            ResnetBlock::new(m.pp("resnets.1"), ch[n - 1], ch[n - 1], Some(t), 1e-5)?,
        );
        let mut up = Vec::with_capacity(n);
        for i in 0..n {
            let lvl = n - 1 - i; // the down level this up level mirrors
            let vb = vb.pp(format!("up_blocks.{i}"));
            let prev = if i == 0 { ch[n - 1] } else { ch[lvl + 1] };
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..=cfg.layers_per_block {
                let skip = if j == cfg.layers_per_block {
                    if lvl == 0 {
                        ch[0]
                    } else {
                        ch[lvl - 1]
                    }
                } else {
                    ch[lvl]
                };
                let cin = if j == 0 { prev } else { ch[lvl] };
                resnets.push(ResnetBlock::new(
                    vb.pp(format!("resnets.{j}")),
                    cin + skip,
                    ch[lvl],
                    Some(t),
                    1e-5,
                )?);
                if cfg.attention[lvl] {
                    let d = level(&cfg.depth, lvl, "depth")?;
                    attentions.push(st(vb.pp(format!("attentions.{j}")), ch[lvl], lvl, d)?);
                }
            }
            let upsampler = (i + 1 < n)
                .then(|| Upsample::new(vb.pp("upsamplers.0"), ch[lvl]))
                .transpose()?;
            up.push(Level {
                resnets,
                attentions,
                down: None,
                up: upsampler,
            });
        }
        Ok(Self {
            conv_in: conv(vb.pp("conv_in"), cfg.in_channels, ch[0], 3, 1)?,
            time1: linear(vb.pp("time_embedding.linear_1"), ch[0], t, true)?,
            time2: linear(vb.pp("time_embedding.linear_2"), t, t, true)?,
            adm: cfg
                .adm_in
                .map(|a| -> Result<_> {
                    Ok((
                        linear(vb.pp("add_embedding.linear_1"), a, t, true)?,
                        linear(vb.pp("add_embedding.linear_2"), t, t, true)?,
                    ))
                })
                .transpose()?,
            down,
            mid,
            up,
            norm_out: group_norm(vb.pp("conv_norm_out"), 32, ch[0], 1e-5)?,
            conv_out: conv(vb.pp("conv_out"), ch[0], cfg.out_channels, 3, 1)?,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// The time embedding (plus SDXL's ADM embedding of `y`), through the SiLU every resnet
    /// applies to it.
    fn time_embedding(&self, t: &Tensor, y: Option<&Tensor>, dtype: DType) -> Result<Tensor> {
        let emb = sinusoidal(t, self.cfg.block_channels[0])?.to_dtype(dtype)?;
        let mut emb = self.time2.forward(&self.time1.forward(&emb)?.silu()?)?;
        match (&self.adm, y) {
            (Some((l1, l2)), Some(y)) => {
                let (yb, yd) = y.dims2()?;
                if yb != t.dim(0)? || Some(yd) != self.cfg.adm_in {
                    return Err(ModelError::Input {
                        component: "U-Net",
                        detail: format!(
                            "ADM vector [{yb}, {yd}] for batch {} and width {:?}",
                            t.dim(0)?,
                            self.cfg.adm_in
                        ),
                    });
                }
                let a = l2.forward(&l1.forward(&y.to_dtype(dtype)?)?.silu()?)?;
                emb = (emb + a)?;
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(ModelError::Input {
                    component: "U-Net",
                    detail: "this U-Net (SDXL) needs the ADM vector y".into(),
                })
            }
            (None, Some(_)) => {
                return Err(ModelError::Input {
                    component: "U-Net",
                    detail: "an ADM vector y for a U-Net without ADM input".into(),
                })
            }
        }
        Ok(emb.silu()?)
    }

    /// A1111's test for v-prediction SD2 checkpoints: the mean of `unet(x, 999, ctx) − x` for
    /// x = 0.5 everywhere (1×C×8×8) and a 2-token context of 0.5; below −1 means v. Returns the
    /// score; the caller compares it with −1.
    pub fn a1111_v_score(&self) -> Result<f32> {
        let dev = self.conv_in.device();
        let dt = self.conv_in.activation_dtype();
        let x = (Tensor::ones((1, self.cfg.in_channels, 8, 8), dt, dev)? * 0.5)?;
        let ctx = (Tensor::ones((1, 2, self.cfg.context_dim), dt, dev)? * 0.5)?;
        let t = Tensor::new(&[999f32], dev)?;
        let out = self.forward(&x, &t, &ctx)?;
        let x4 = x.narrow(1, 0, self.cfg.out_channels)?;
        Ok((out - x4)?
            .mean_all()?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?)
    }

    /// Predicts ε (or v) for `x` `[b, in, h, w]` at timesteps `t` `[b]` (float) with context
    /// `[b, m, context_dim]`.
    pub fn forward(&self, x: &Tensor, t: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        self.forward_with(x, t, ctx, None)
    }

    /// [`Self::forward`] with residuals added to the skips and the middle block.
    pub fn forward_with(
        &self,
        x: &Tensor,
        t: &Tensor,
        ctx: &Tensor,
        res: Option<&Residuals>,
    ) -> Result<Tensor> {
        self.forward_hyper(x, t, ctx, res, &NO_HYPERNETWORKS)
    }

    /// [`Self::forward_with`] with `hyper` changing every attention's key/value context.
    pub fn forward_hyper(
        &self,
        x: &Tensor,
        t: &Tensor,
        ctx: &Tensor,
        res: Option<&Residuals>,
        hyper: &Hypernetworks,
    ) -> Result<Tensor> {
        self.forward_full(x, t, ctx, None, res, hyper)
    }

    /// SDXL's forward: [`Self::forward`] with the ADM vector `y` `[b, adm_in]`.
    pub fn forward_adm(&self, x: &Tensor, t: &Tensor, ctx: &Tensor, y: &Tensor) -> Result<Tensor> {
        self.forward_full(x, t, ctx, Some(y), None, &NO_HYPERNETWORKS)
    }

    /// Every input: the ADM vector `y` (SDXL; `None` for SD1/SD2), residuals and
    /// hypernetworks.
    pub fn forward_full(
        &self,
        x: &Tensor,
        t: &Tensor,
        ctx: &Tensor,
        y: Option<&Tensor>,
        res: Option<&Residuals>,
        hyper: &Hypernetworks,
    ) -> Result<Tensor> {
        let extras = Extras {
            y,
            residuals: res,
            hyper,
            token_merging: 0.0,
        };
        self.forward_extras(x, t, ctx, &extras)
    }

    /// [`Self::forward_full`] with every extra input, token merging included.
    pub fn forward_extras(
        &self,
        x: &Tensor,
        t: &Tensor,
        ctx: &Tensor,
        extras: &Extras<'_>,
    ) -> Result<Tensor> {
        let Extras {
            y,
            residuals: res,
            hyper,
            token_merging,
        } = *extras;
        let (b, c, h0, w0) = x.dims4()?;
        // tomesd with max_downsample 1: only the transformers at the input's own resolution
        let merging = |h: &Tensor| -> Result<f64> {
            let (_, _, hh, hw) = h.dims4()?;
            Ok(if (hh, hw) == (h0, w0) {
                token_merging
            } else {
                0.0
            })
        };
        if c != self.cfg.in_channels {
            return Err(ModelError::Input {
                component: "U-Net",
                detail: format!(
                    "{c} input channels, the model takes {}",
                    self.cfg.in_channels
                ),
            });
        }
        let (cb, _, cd) = ctx.dims3()?;
        if cb != b || cd != self.cfg.context_dim {
            return Err(ModelError::Input {
                component: "U-Net",
                detail: format!(
                    "context [{cb}, _, {cd}] for batch {b} and width {}",
                    self.cfg.context_dim
                ),
            });
        }
        let emb = self.time_embedding(t, y, x.dtype())?;
        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for lvl in &self.down {
            for (j, r) in lvl.resnets.iter().enumerate() {
                h = r.forward(&h, Some(&emb))?;
                if let Some(a) = lvl.attentions.get(j) {
                    h = a.forward_merging(&h, ctx, hyper, merging(&h)?)?;
                }
                skips.push(h.clone());
            }
            if let Some(d) = &lvl.down {
                h = d.forward(&h)?;
                skips.push(h.clone());
            }
        }
        if let Some(res) = res {
            if res.down.len() != skips.len() {
                return Err(ModelError::Input {
                    component: "U-Net",
                    detail: format!("{} residuals for {} skips", res.down.len(), skips.len()),
                });
            }
            for (s, r) in skips.iter_mut().zip(&res.down) {
                *s = (&*s + r)?;
            }
        }
        h = self.mid.0.forward(&h, Some(&emb))?;
        h = self.mid.1.forward_hyper(&h, ctx, hyper)?;
        h = self.mid.2.forward(&h, Some(&emb))?;
        if let Some(res) = res {
            h = (h + &res.mid)?;
        }
        for lvl in &self.up {
            for (j, r) in lvl.resnets.iter().enumerate() {
                let s = skips.pop().ok_or_else(|| ModelError::Config {
                    component: "U-Net",
                    detail: "skip stack underflow".into(),
                })?;
                h = r.forward(&Tensor::cat(&[&fit_to_skip(h, &s)?, &s], 1)?, Some(&emb))?;
                if let Some(a) = lvl.attentions.get(j) {
                    h = a.forward_merging(&h, ctx, hyper, merging(&h)?)?;
                }
            }
            if let Some(u) = &lvl.up {
                h = u.forward(&h)?;
            }
        }
        Ok(self.conv_out.forward(&self.norm_out.forward_silu(&h)?)?)
    }
}

/// The sinusoidal embedding of `t` `[n]` in `dim` channels, cos first (diffusers' `Timesteps`
/// with `flip_sin_to_cos`, shift 0; SGM's `timestep_embedding`), as f32 `[n, dim]`.
fn sinusoidal(t: &Tensor, dim: usize) -> Result<Tensor> {
    let half = dim / 2;
    // f32 arithmetic in diffusers' order, (-ln 10000 · i) / half, then a correctly rounded exp
    let c = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((c * i as f32 / half as f32) as f64).exp() as f32)
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = t
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?;
    Ok(Tensor::cat(&[args.cos()?, args.sin()?], 1)?)
}

/// SDXL's Fourier embedding of the size conditions (SGM's `ConcatTimestepEmbedderND`, diffusers'
/// `add_time_proj`): each value of `values` `[b, k]` embedded in `dim` channels (cos first),
/// concatenated per row into `[b, k · dim]` (f32). `dim` must be even (256 for SDXL).
pub fn fourier_embedding(values: &Tensor, dim: usize) -> Result<Tensor> {
    let (b, k) = values.dims2()?;
    if dim == 0 || !dim.is_multiple_of(2) {
        return Err(ModelError::Input {
            component: "U-Net",
            detail: format!("Fourier embedding width {dim} is not a positive even number"),
        });
    }
    Ok(sinusoidal(&values.flatten_all()?, dim)?.reshape((b, k * dim))?)
}

/// A1111's `TorchHijackForUnet.cat` (`modules/sd_hijack_unet.py`): where the upsampled map and
/// its skip connection differ in size (a latent side that is not a multiple of 8, e.g. 75 → 38 →
/// 19 → 10 on the way down, 10 → 20 on the way up against a skip of 19), the map, already
/// upsampled ×2 and convolved, is resized to the skip's size by nearest neighbour
/// (`F.interpolate(a, b.shape[-2:], mode="nearest")`) before the concatenation. Diffusers
/// instead upsamples straight to the skip's size before the convolution, which differs.
fn fit_to_skip(h: Tensor, skip: &Tensor) -> Result<Tensor> {
    let (_, _, hh, hw) = h.dims4()?;
    let (_, _, sh, sw) = skip.dims4()?;
    if (hh, hw) == (sh, sw) {
        return Ok(h);
    }
    Ok(h.upsample_nearest2d(sh, sw)?)
}

impl UNet {
    /// Its layers that can be loaded again by name ([`Reload`]): every convolution, linear
    /// layer and GroupNorm (not the transformer blocks' LayerNorms).
    pub fn layers_mut(&mut self) -> Vec<&mut dyn Reload> {
        let mut out: Vec<&mut dyn Reload> =
            vec![&mut self.conv_in, &mut self.time1, &mut self.time2];
        if let Some((a1, a2)) = &mut self.adm {
            out.extend([a1 as &mut dyn Reload, a2]);
        }
        let (m0, m1, m2) = &mut self.mid;
        m0.layers_mut(&mut out);
        m1.layers_mut(&mut out);
        m2.layers_mut(&mut out);
        for l in self.down.iter_mut().chain(self.up.iter_mut()) {
            for r in &mut l.resnets {
                r.layers_mut(&mut out);
            }
            for a in &mut l.attentions {
                a.layers_mut(&mut out);
            }
            out.extend(l.down.as_mut().map(|d| d as &mut dyn Reload));
            if let Some(u) = &mut l.up {
                u.layers_mut(&mut out);
            }
        }
        out.extend([&mut self.norm_out as &mut dyn Reload, &mut self.conv_out]);
        out
    }
}
