//! The KL autoencoder (diffusers `AutoencoderKL` naming). The latent scale factor lives here:
//! [`Vae::encode`] returns U-Net-scale latents and [`Vae::decode`] takes them.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::{ModelError, Result, Shapes};
use crate::kernels::tokens;
use crate::nn::{
    conv, conv_cfg, group_norm, linear, multi_head_attention, Conv2d, GroupNorm, Linear,
};
use crate::unet_blocks::{ResnetBlock, Upsample};

/// VAE hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    /// Channels per level (SD: 128, 256, 512, 512).
    pub block_channels: Vec<usize>,
    /// Residual blocks per encoder level (decoder levels have one more).
    pub layers_per_block: usize,
    /// Latent channels (4).
    pub latent_channels: usize,
    /// Latent scale factor (SD1/SD2: 0.18215).
    pub scale_factor: f64,
}

impl VaeConfig {
    /// Reads the sizes from the VAE's canonical shapes; SD1/SD2's scale factor.
    pub fn infer(shapes: Shapes) -> Result<Self> {
        let levels = (0..)
            .take_while(|i| {
                shapes(&format!("encoder.down_blocks.{i}.resnets.0.conv1.weight")).is_some()
            })
            .count();
        let block_channels = (0..levels)
            .map(|i| {
                shapes(&format!("encoder.down_blocks.{i}.resnets.0.conv1.weight")).map(|s| s[0])
            })
            .collect::<Option<Vec<_>>>()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ModelError::Config {
                component: "VAE",
                detail: "no encoder blocks".into(),
            })?;
        let latent = shapes("decoder.conv_in.weight").ok_or_else(|| ModelError::Config {
            component: "VAE",
            detail: "missing tensor `decoder.conv_in.weight`".into(),
        })?[1];
        let layers_per_block = (0..)
            .take_while(|j| {
                shapes(&format!("encoder.down_blocks.0.resnets.{j}.conv1.weight")).is_some()
            })
            .count();
        Ok(Self {
            block_channels,
            layers_per_block,
            latent_channels: latent,
            scale_factor: 0.18215,
        })
    }
}

struct AttnBlock {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl AttnBlock {
    fn new(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            norm: group_norm(vb.pp("group_norm"), 32, c, 1e-6)?,
            q: linear(vb.pp("to_q"), c, c, true)?,
            k: linear(vb.pp("to_k"), c, c, true)?,
            v: linear(vb.pp("to_v"), c, c, true)?,
            out: linear(vb.pp("to_out.0"), c, c, true)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = tokens::to_tokens(&self.norm.forward(x)?)?;
        let (q, k, v) = (
            self.q.forward(&y)?,
            self.k.forward(&y)?,
            self.v.forward(&y)?,
        );
        // f32 even on the bf16 path: one head of 512 channels, cheap next to the convolutions,
        // and bf16 scores move the tiny fixture VAE's output measurably
        let a = multi_head_attention(&q, &k, &v, 1)?;
        Ok(tokens::add_from_tokens(&self.out.forward(&a)?, x)?)
    }
}

struct Mid {
    r1: ResnetBlock,
    attn: AttnBlock,
    r2: ResnetBlock,
}

impl Mid {
    fn new(vb: VarBuilder, c: usize) -> Result<Self> {
        Ok(Self {
            r1: ResnetBlock::new(vb.pp("resnets.0"), c, c, None, 1e-6)?,
            attn: AttnBlock::new(vb.pp("attentions.0"), c)?,
            r2: ResnetBlock::new(vb.pp("resnets.1"), c, c, None, 1e-6)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.r2
            .forward(&self.attn.forward(&self.r1.forward(x, None)?)?, None)
    }
}

struct Encoder {
    conv_in: Conv2d,
    blocks: Vec<(Vec<ResnetBlock>, Option<Conv2d>)>,
    mid: Mid,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

struct Decoder {
    conv_in: Conv2d,
    mid: Mid,
    blocks: Vec<(Vec<ResnetBlock>, Option<Upsample>)>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// The autoencoder.
pub struct Vae {
    cfg: VaeConfig,
    encoder: Encoder,
    quant_conv: Conv2d,
    post_quant_conv: Conv2d,
    decoder: Decoder,
}

impl Vae {
    /// Builds the VAE from names relative to it (`encoder.conv_in.weight`, …).
    pub fn new(vb: VarBuilder, cfg: VaeConfig) -> Result<Self> {
        let ch = &cfg.block_channels;
        let n = ch.len();
        let lat = cfg.latent_channels;
        let e = vb.pp("encoder");
        let mut blocks = Vec::new();
        for i in 0..n {
            let b = e.pp(format!("down_blocks.{i}"));
            let resnets = (0..cfg.layers_per_block)
                .map(|j| {
                    let cin = if j == 0 {
                        if i == 0 {
                            ch[0]
                        } else {
                            ch[i - 1]
                        }
                    } else {
                        ch[i]
                    };
                    ResnetBlock::new(b.pp(format!("resnets.{j}")), cin, ch[i], None, 1e-6)
                })
                .collect::<Result<_>>()?;
            // diffusers pads (0, 1, 0, 1) then convolves with stride 2 and no padding
            let down = (i + 1 < n)
                .then(|| conv_cfg(b.pp("downsamplers.0.conv"), ch[i], ch[i], 3, 2, 0, true))
                .transpose()?;
            blocks.push((resnets, down));
        }
        let encoder = Encoder {
            conv_in: conv(e.pp("conv_in"), 3, ch[0], 3, 1)?,
            blocks,
            mid: Mid::new(e.pp("mid_block"), ch[n - 1])?,
            norm_out: group_norm(e.pp("conv_norm_out"), 32, ch[n - 1], 1e-6)?,
            conv_out: conv(e.pp("conv_out"), ch[n - 1], 2 * lat, 3, 1)?,
        };
        let d = vb.pp("decoder");
        let mut blocks = Vec::new();
        for i in 0..n {
            let lvl = n - 1 - i;
            let b = d.pp(format!("up_blocks.{i}"));
            let prev = if i == 0 { ch[n - 1] } else { ch[lvl + 1] };
            let resnets = (0..=cfg.layers_per_block)
                .map(|j| {
                    ResnetBlock::new(
                        b.pp(format!("resnets.{j}")),
                        if j == 0 { prev } else { ch[lvl] },
                        ch[lvl],
                        None,
                        1e-6,
                    )
                })
                .collect::<Result<_>>()?;
            let up = (i + 1 < n)
                .then(|| Upsample::new(b.pp("upsamplers.0"), ch[lvl]))
                .transpose()?;
            blocks.push((resnets, up));
        }
        let decoder = Decoder {
            conv_in: conv(d.pp("conv_in"), lat, ch[n - 1], 3, 1)?,
            mid: Mid::new(d.pp("mid_block"), ch[n - 1])?,
            blocks,
            norm_out: group_norm(d.pp("conv_norm_out"), 32, ch[0], 1e-6)?,
            conv_out: conv(d.pp("conv_out"), ch[0], 3, 3, 1)?,
        };
        Ok(Self {
            quant_conv: conv(vb.pp("quant_conv"), 2 * lat, 2 * lat, 1, 1)?,
            post_quant_conv: conv(vb.pp("post_quant_conv"), lat, lat, 1, 1)?,
            encoder,
            decoder,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// The posterior's mean and log-variance (unscaled latent space) for images `[b, 3, h, w]`
    /// in [-1, 1].
    pub fn encode_moments(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let e = &self.encoder;
        let mut h = e.conv_in.forward(x)?;
        for (resnets, down) in &e.blocks {
            for r in resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(d) = down {
                h = d.forward(&h.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?)?;
            }
        }
        h = e.mid.forward(&h)?;
        h = e.conv_out.forward(&e.norm_out.forward_silu(&h)?)?;
        let m = self.quant_conv.forward(&h)?;
        let lat = self.cfg.latent_channels;
        Ok((m.narrow(1, 0, lat)?, m.narrow(1, lat, lat)?))
    }

    /// U-Net-scale latents for images in [-1, 1]: the posterior mean × scale factor.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        Ok((self.encode_moments(x)?.0 * self.cfg.scale_factor)?)
    }

    /// Decodes unscaled latents `[b, 4, h, w]` to images in (about) [-1, 1].
    pub fn decode_unscaled(&self, z: &Tensor) -> Result<Tensor> {
        let d = &self.decoder;
        let mut h = d.conv_in.forward(&self.post_quant_conv.forward(z)?)?;
        h = d.mid.forward(&h)?;
        for (resnets, up) in &d.blocks {
            for r in resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(u) = up {
                h = u.forward(&h)?;
            }
        }
        Ok(d.conv_out.forward(&d.norm_out.forward_silu(&h)?)?)
    }

    /// Decodes U-Net-scale latents (divided by the scale factor first).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        self.decode_unscaled(&(latents / self.cfg.scale_factor)?)
    }
}
