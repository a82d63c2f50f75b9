//! SRVGGNetCompact (Real-ESRGAN's `realesr-general-x4v3`, `realesr-animevideov3`): `body.0`
//! conv, PReLU, `num_conv` × (conv, PReLU), a last conv to `out·s²` channels, pixel shuffle by
//! `s`, plus the input upsampled by nearest neighbour (the network learns the residual).

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::ops::{pixel_shuffle, prelu};
use super::CompactConfig;
use crate::error::Result;
use crate::nn::{conv, param, Conv2d};

/// The SRVGGNetCompact network.
pub struct Compact {
    config: CompactConfig,
    /// Each conv with the PReLU weights after it (none after the last).
    layers: Vec<(Conv2d, Option<Tensor>)>,
}

impl Compact {
    /// Builds it from the `body.N` names with `config`'s sizes.
    pub fn new(vb: VarBuilder, config: &CompactConfig) -> Result<Self> {
        let nf = config.num_feat;
        let body = vb.pp("body");
        let mut layers = Vec::with_capacity(config.num_conv + 2);
        for i in 0..=config.num_conv {
            let cin = if i == 0 { config.in_channels } else { nf };
            let c = conv(body.pp((2 * i).to_string()), cin, nf, 3, 1)?;
            let a = param(&body.pp((2 * i + 1).to_string()), nf, "weight")?;
            layers.push((c, Some(a)));
        }
        let s = config.scale;
        let last = conv(
            body.pp((2 * config.num_conv + 2).to_string()),
            nf,
            config.out_channels * s * s,
            3,
            1,
        )?;
        layers.push((last, None));
        Ok(Self {
            config: config.clone(),
            layers,
        })
    }

    /// Runs the network on `[n, c, h, w]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (c, a) in &self.layers {
            h = c.forward(&h)?;
            if let Some(a) = a {
                h = prelu(&h, a)?;
            }
        }
        let s = self.config.scale;
        let out = pixel_shuffle(&h, s)?;
        let (_, _, ih, iw) = x.dims4()?;
        let base = x.upsample_nearest2d(ih * s, iw * s)?;
        Ok((out + base)?)
    }
}
