//! TAESD, the tiny distilled autoencoder for SD1.x/SD2.x latents (keys are its
//! `nn.Sequential` indices: `0.weight`, `1.conv.0.bias`, …). Images are in [0, 1]; latents are
//! U-Net-scale.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::error::Result;
use crate::nn::{conv, conv_cfg, Conv2d};

const C: usize = 64;

struct Block {
    convs: [Conv2d; 3],
}

impl Block {
    fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            convs: [
                conv(vb.pp("conv.0"), C, C, 3, 1)?,
                conv(vb.pp("conv.2"), C, C, 3, 1)?,
                conv(vb.pp("conv.4"), C, C, 3, 1)?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.convs[0].forward(x)?.relu()?;
        let h = self.convs[1].forward(&h)?.relu()?;
        let h = self.convs[2].forward(&h)?;
        Ok((h + x)?.relu()?)
    }
}

enum Op {
    Conv(Conv2d),
    Block(Block),
    Relu,
    Up,
    Clamp,
}

fn run(ops: &[Op], x: &Tensor) -> Result<Tensor> {
    let mut h = x.clone();
    for op in ops {
        h = match op {
            Op::Conv(c) => c.forward(&h)?,
            Op::Block(b) => b.forward(&h)?,
            Op::Relu => h.relu()?,
            Op::Up => {
                let (_, _, y, x) = h.dims4()?;
                h.upsample_nearest2d(2 * y, 2 * x)?
            }
            Op::Clamp => ((&h / 3.0)?.tanh()? * 3.0)?,
        };
    }
    Ok(h)
}

/// TAESD's encoder: image in [0, 1] → U-Net-scale latents (÷8).
pub struct TaesdEncoder {
    ops: Vec<Op>,
}

impl TaesdEncoder {
    /// Builds it from the raw `nn.Sequential` keys; `latent` channels (4 for SD).
    pub fn new(vb: VarBuilder, latent: usize) -> Result<Self> {
        let mut ops = vec![
            Op::Conv(conv(vb.pp("0"), 3, C, 3, 1)?),
            Op::Block(Block::new(vb.pp("1"))?),
        ];
        for stage in 0..3 {
            let base = 2 + 4 * stage;
            ops.push(Op::Conv(conv_cfg(
                vb.pp(base.to_string()),
                C,
                C,
                3,
                2,
                1,
                false,
            )?));
            for k in 1..=3 {
                ops.push(Op::Block(Block::new(vb.pp((base + k).to_string()))?));
            }
        }
        ops.push(Op::Conv(conv(vb.pp("14"), C, latent, 3, 1)?));
        Ok(Self { ops })
    }

    /// Encodes images `[b, 3, h, w]` in [0, 1].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        run(&self.ops, x)
    }
}

/// TAESD's decoder: U-Net-scale latents → image in about [0, 1] (×8).
pub struct TaesdDecoder {
    ops: Vec<Op>,
}

impl TaesdDecoder {
    /// Builds it from the raw `nn.Sequential` keys; `latent` channels (4 for SD).
    pub fn new(vb: VarBuilder, latent: usize) -> Result<Self> {
        let mut ops = vec![
            Op::Clamp,
            Op::Conv(conv(vb.pp("1"), latent, C, 3, 1)?),
            Op::Relu,
        ];
        for stage in 0..3 {
            let base = 3 + 5 * stage;
            for k in 0..3 {
                ops.push(Op::Block(Block::new(vb.pp((base + k).to_string()))?));
            }
            ops.push(Op::Up);
            ops.push(Op::Conv(conv_cfg(
                vb.pp((base + 4).to_string()),
                C,
                C,
                3,
                1,
                1,
                false,
            )?));
        }
        ops.push(Op::Block(Block::new(vb.pp("18"))?));
        ops.push(Op::Conv(conv(vb.pp("19"), C, 3, 3, 1)?));
        Ok(Self { ops })
    }

    /// Decodes latents `[b, 4, h, w]`.
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        run(&self.ops, z)
    }
}
