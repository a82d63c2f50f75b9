//! RRDBNet (ESRGAN, Real-ESRGAN, BSRGAN, ESRGAN+), built as spandrel's `ESRGAN` architecture
//! builds it: from the old-arch names (`model.0`, `model.1.sub.N.RDBk.convj.0`, …) to which
//! [`super::to_old_arch`] maps every layout.
//!
//! `model.0` conv → `model.1` shortcut (N RRDBs, then the `model.1.sub.N` conv, plus the
//! input) → per 2× step an upsample (nearest) + conv + LeakyReLU at `model.3`, `model.6`, … →
//! `model.{3n+2}` conv + LeakyReLU → `model.{3n+4}` conv. Pixel-unshuffle models (Real-ESRGAN
//! x2/x1) reflect-pad the input to a multiple of the factor, unshuffle it, and crop the output.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::ops::{leaky_relu, pixel_unshuffle, reflect_pad_to_multiple};
use super::EsrganConfig;
use crate::error::Result;
use crate::kernels::conv3x3::Epilogue;
use crate::nn::{conv, conv_cfg, Conv2d};

/// ESRGAN's activation slope.
const SLOPE: f64 = 0.2;

/// One residual dense block (`ResidualDenseBlock_5C`).
struct Rdb {
    convs: [Conv2d; 5],
    conv1x1: Option<Conv2d>,
}

impl Rdb {
    fn new(vb: VarBuilder, nf: usize, gc: usize, plus: bool) -> Result<Self> {
        let c =
            |j: usize, cin: usize, cout: usize| conv(vb.pp(format!("conv{j}.0")), cin, cout, 3, 1);
        Ok(Self {
            convs: [
                c(1, nf, gc)?,
                c(2, nf + gc, gc)?,
                c(3, nf + 2 * gc, gc)?,
                c(4, nf + 3 * gc, gc)?,
                c(5, nf + 4 * gc, nf)?,
            ],
            conv1x1: if plus {
                Some(conv_cfg(vb.pp("conv1x1"), nf, gc, 1, 1, 0, false)?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [c1, c2, c3, c4, c5] = &self.convs;
        let lrelu = Epilogue::LeakyRelu(SLOPE as f32);
        let x1 = c1.forward_cat(&[x], lrelu)?;
        let mut x2 = c2.forward_cat(&[x, &x1], lrelu)?;
        if let Some(c) = &self.conv1x1 {
            x2 = (x2 + c.forward(x)?)?;
        }
        let x3 = c3.forward_cat(&[x, &x1, &x2], lrelu)?;
        let mut x4 = c4.forward_cat(&[x, &x1, &x2, &x3], lrelu)?;
        if self.conv1x1.is_some() {
            x4 = (x4 + &x2)?;
        }
        let x5 = c5.forward_cat(&[x, &x1, &x2, &x3, &x4], Epilogue::None)?;
        Ok(((x5 * 0.2)? + x)?)
    }
}

/// Residual-in-residual dense block: three RDBs, scaled by 0.2, plus the input.
struct Rrdb([Rdb; 3]);

impl Rrdb {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.0[2].forward(&self.0[1].forward(&self.0[0].forward(x)?)?)?;
        Ok(((out * 0.2)? + x)?)
    }
}

/// The RRDBNet generator.
pub struct RrdbNet {
    config: EsrganConfig,
    conv_first: Conv2d,
    blocks: Vec<Rrdb>,
    lr_conv: Conv2d,
    upconvs: Vec<Conv2d>,
    hr_conv: Conv2d,
    conv_last: Conv2d,
}

impl RrdbNet {
    /// Builds it from old-arch names (`model.0.weight`, …) with `config`'s sizes; a missing or
    /// mis-shaped tensor is an error naming it.
    pub fn new(vb: VarBuilder, config: &EsrganConfig) -> Result<Self> {
        let (nf, gc) = (config.num_feat, config.num_grow_ch);
        let sub = vb.pp("model.1.sub");
        let blocks = (0..config.num_block)
            .map(|i| {
                let b = sub.pp(i.to_string());
                Ok(Rrdb([
                    Rdb::new(b.pp("RDB1"), nf, gc, config.plus)?,
                    Rdb::new(b.pp("RDB2"), nf, gc, config.plus)?,
                    Rdb::new(b.pp("RDB3"), nf, gc, config.plus)?,
                ]))
            })
            .collect::<Result<Vec<_>>>()?;
        let n = config.upsamples;
        let upconvs = (1..=n)
            .map(|i| conv(vb.pp(format!("model.{}", 3 * i)), nf, nf, 3, 1))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: config.clone(),
            conv_first: conv(vb.pp("model.0"), config.in_channels, nf, 3, 1)?,
            blocks,
            lr_conv: conv(sub.pp(config.num_block.to_string()), nf, nf, 3, 1)?,
            upconvs,
            hr_conv: conv(vb.pp(format!("model.{}", 3 * n + 2)), nf, nf, 3, 1)?,
            conv_last: conv(
                vb.pp(format!("model.{}", 3 * n + 4)),
                nf,
                config.out_channels,
                3,
                1,
            )?,
        })
    }

    /// Runs the network on `[n, c, h, w]` (c = the image channels, before any unshuffle).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let input = match self.config.shuffle_factor {
            Some(f) => pixel_unshuffle(&reflect_pad_to_multiple(x, f)?, f)?,
            None => x.clone(),
        };
        let fea = self.conv_first.forward_cat(&[&input], Epilogue::None)?;
        let mut trunk = fea.clone();
        for b in &self.blocks {
            trunk = b.forward(&trunk)?;
        }
        let mut fea = (fea + self.lr_conv.forward_cat(&[&trunk], Epilogue::None)?)?;
        for up in &self.upconvs {
            fea = leaky_relu(&up.forward_upsampled2x(&fea)?, SLOPE)?;
        }
        let fea = self
            .hr_conv
            .forward_cat(&[&fea], Epilogue::LeakyRelu(SLOPE as f32))?;
        let out = self.conv_last.forward_cat(&[&fea], Epilogue::None)?;
        Ok(match self.config.shuffle_factor {
            Some(_) => {
                let s = self.config.scale();
                out.narrow(2, 0, h * s)?.narrow(3, 0, w * s)?
            }
            None => out,
        })
    }
}
