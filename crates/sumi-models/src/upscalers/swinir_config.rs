//! SwinIR's sizes read from a state dict's shapes as spandrel 0.4.2's `SwinIRArch.load` reads
//! them, every one checked against a limit, and the tensor names such a network has.

use std::collections::{BTreeMap, BTreeSet};

use super::layout::{check, invalid, seq_len, shape};
use super::{Result, MAX_BLOCKS, MAX_FEATURES, MAX_IMAGE_CHANNELS, MAX_SCALE};

const A: &str = "SwinIR";
/// Largest attention window accepted (real files: 7 or 8).
pub const MAX_WINDOW: usize = 32;
/// Most residual Swin transformer layers (real files: 4 to 9).
pub const MAX_LAYERS: usize = 32;
/// Most attention heads per layer (real files: 6 to 8).
pub const MAX_HEADS: usize = 64;
/// Largest `img_size` accepted (real files: 48 to 128).
pub const MAX_IMG_SIZE: usize = 1024;

/// How a SwinIR network makes its output from the body's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwinUpsampler {
    /// Classical SR: conv + LeakyReLU, convolutions with pixel shuffles, a last conv.
    PixelShuffle,
    /// Lightweight SR: one conv to `out·s²` channels and a pixel shuffle.
    Direct,
    /// Real-world SR: conv + LeakyReLU, nearest ×2 upsamples with convolutions, `conv_hr`,
    /// `conv_last`.
    NearestConv,
    /// Denoising / JPEG artefact removal: the input plus a last conv of the features.
    None,
}

/// SwinIR sizes, as read from the weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwinIrConfig {
    /// Image channels in (and out: SwinIR's `num_out_ch` is its `in_chans`).
    pub in_channels: usize,
    /// Channels of the body (`embed_dim`).
    pub embed_dim: usize,
    /// Swin transformer blocks per residual layer.
    pub depths: Vec<usize>,
    /// Attention heads per residual layer.
    pub heads: Vec<usize>,
    /// The attention window's side.
    pub window: usize,
    /// The MLP's hidden width.
    pub mlp_hidden: usize,
    /// The `img_size` the network was built for (its blocks' `input_resolution`).
    pub img_size: usize,
    /// The output stage.
    pub upsampler: SwinUpsampler,
    /// The network's upscale (1 for [`SwinUpsampler::None`]).
    pub scale: usize,
    /// Channels of the upsampling convolutions (64).
    pub num_feat: usize,
    /// `resi_connection = "3conv"` (else one conv).
    pub three_conv: bool,
}

impl SwinIrConfig {
    /// spandrel's `img_range`: 255 for window-7 networks (the JPEG models), else 1.
    pub fn img_range(&self) -> f64 {
        if self.window == 7 {
            255.0
        } else {
            1.0
        }
    }
}

/// The sizes of a SwinIR state dict (spandrel's `SwinIRArch.load`).
pub fn swinir_config(shapes: &BTreeMap<String, Vec<usize>>) -> Result<SwinIrConfig> {
    if shapes.contains_key("conv_first.1.weight") {
        return Err(invalid(
            A,
            "networks with a pixel unshuffle before conv_first are not supported",
        ));
    }
    let has = |k: &str| shapes.contains_key(k);
    let upsampler = if has("conv_before_upsample.0.weight") {
        if has("conv_up1.weight") {
            SwinUpsampler::NearestConv
        } else {
            SwinUpsampler::PixelShuffle
        }
    } else if has("upsample.0.weight") {
        SwinUpsampler::Direct
    } else {
        SwinUpsampler::None
    };
    let first = shape(A, shapes, "conv_first.weight", 4)?;
    let in_channels = check(A, "input channels", first[1], MAX_IMAGE_CHANNELS)?;
    let embed_dim = check(A, "embed_dim", first[0], MAX_FEATURES)?;
    let (scale, num_feat) = match upsampler {
        SwinUpsampler::NearestConv => {
            let ups = shapes
                .keys()
                .filter(|k| k.contains("conv_up") && !k.contains("bias"))
                .count();
            if !(1..=3).contains(&ups) {
                return Err(invalid(A, format!("{ups} nearest upsampling convolutions")));
            }
            let nf = shape(A, shapes, "conv_up1.weight", 4)?[0];
            (1 << ups, nf)
        }
        SwinUpsampler::PixelShuffle => pixel_shuffle_params(shapes)?,
        SwinUpsampler::Direct => {
            let b = shape(A, shapes, "upsample.0.bias", 1)?[0];
            let s = (b / in_channels).isqrt();
            if s * s * in_channels != b {
                return Err(invalid(A, format!("upsample.0 makes {b} channels")));
            }
            (s, embed_dim)
        }
        SwinUpsampler::None => (1, embed_dim),
    };
    check(A, "scale", scale, MAX_SCALE)?;
    check(A, "num_feat", num_feat, MAX_FEATURES)?;
    let index = shape(
        A,
        shapes,
        "layers.0.residual_group.blocks.0.attn.relative_position_index",
        2,
    )?;
    let window = check(A, "window size", index[0].isqrt(), MAX_WINDOW)?;
    if window * window != index[0] || index[1] != index[0] {
        return Err(invalid(A, format!("relative_position_index is {index:?}")));
    }
    let img_size = match shapes.get("layers.0.residual_group.blocks.1.attn_mask") {
        Some(m) if !m.is_empty() => m[0].isqrt() * window,
        _ => 64,
    };
    check(A, "img_size", img_size, MAX_IMG_SIZE)?;
    if img_size <= window {
        return Err(invalid(
            A,
            format!("img_size {img_size} is not over the window {window}"),
        ));
    }
    let layers = check(
        A,
        "layers",
        seq_len(A, shapes.keys(), "layers")?,
        MAX_LAYERS,
    )?;
    let mut depths = Vec::with_capacity(layers);
    let mut heads = Vec::with_capacity(layers);
    for i in 0..layers {
        let g = format!("layers.{i}.residual_group.blocks");
        depths.push(check(
            A,
            "depth",
            seq_len(A, shapes.keys(), &g)?,
            MAX_BLOCKS,
        )?);
        let table = shape(
            A,
            shapes,
            &format!("{g}.0.attn.relative_position_bias_table"),
            2,
        )?;
        let h = check(A, "heads", table[1], MAX_HEADS.min(embed_dim))?;
        if !embed_dim.is_multiple_of(h) {
            return Err(invalid(A, format!("{h} heads for {embed_dim} channels")));
        }
        heads.push(h);
    }
    let mlp_hidden = shape(
        A,
        shapes,
        "layers.0.residual_group.blocks.0.mlp.fc1.bias",
        1,
    )?[0];
    check(A, "MLP width", mlp_hidden, 8 * MAX_FEATURES)?;
    let three_conv = !has("conv_after_body.weight");
    if three_conv && embed_dim < 4 {
        return Err(invalid(A, "3conv residuals need 4 or more channels"));
    }
    Ok(SwinIrConfig {
        in_channels,
        embed_dim,
        depths,
        heads,
        window,
        mlp_hidden,
        img_size,
        upsampler,
        scale,
        num_feat,
        three_conv,
    })
}

/// spandrel's `get_pixelshuffle_params(state, "upsample")`: the product of the shuffles of
/// `upsample.0`, `upsample.2`, … and the channels they take.
fn pixel_shuffle_params(shapes: &BTreeMap<String, Vec<usize>>) -> Result<(usize, usize)> {
    let (mut scale, mut nf) = (1usize, 64usize);
    for i in (0..10).step_by(2) {
        let Some(s) = shapes.get(&format!("upsample.{i}.weight")) else {
            break;
        };
        if s.len() != 4 || s[1] == 0 {
            return Err(invalid(A, format!("upsample.{i}.weight is {s:?}")));
        }
        nf = s[1];
        let r = (s[0] / nf).isqrt();
        // SwinIR's `Upsample`: ×2 steps, or one ×3
        let fits = r == 2 || (r == 3 && i == 0 && !shapes.contains_key("upsample.2.weight"));
        if r * r * nf != s[0] || !fits {
            return Err(invalid(A, format!("upsample.{i} makes {} channels", s[0])));
        }
        scale = scale.saturating_mul(r);
    }
    if scale == 1 {
        return Err(invalid(A, "no upsample.0 convolution"));
    }
    Ok((scale, nf))
}

/// The tensors a SwinIR network of `c` has (the buffers `relative_position_index` and
/// `attn_mask` included: files carry them; Sumi computes its own).
pub fn swinir_keys(c: &SwinIrConfig) -> BTreeSet<String> {
    let mut k = BTreeSet::new();
    let mut wb = |name: String| {
        k.insert(format!("{name}.weight"));
        k.insert(format!("{name}.bias"));
    };
    wb("conv_first".into());
    wb("patch_embed.norm".into());
    wb("norm".into());
    let resi = |wb: &mut dyn FnMut(String), p: &str| {
        if c.three_conv {
            for j in [0, 2, 4] {
                wb(format!("{p}.{j}"));
            }
        } else {
            wb(p.to_string());
        }
    };
    resi(&mut wb, "conv_after_body");
    for (i, &d) in c.depths.iter().enumerate() {
        resi(&mut wb, &format!("layers.{i}.conv"));
        for j in 0..d {
            let b = format!("layers.{i}.residual_group.blocks.{j}");
            for n in [
                "norm1",
                "norm2",
                "attn.qkv",
                "attn.proj",
                "mlp.fc1",
                "mlp.fc2",
            ] {
                wb(format!("{b}.{n}"));
            }
        }
    }
    match c.upsampler {
        SwinUpsampler::PixelShuffle => {
            wb("conv_before_upsample.0".into());
            let steps = if c.scale == 3 {
                1
            } else {
                c.scale.trailing_zeros() as usize
            };
            for s in 0..steps {
                wb(format!("upsample.{}", 2 * s));
            }
            wb("conv_last".into());
        }
        SwinUpsampler::Direct => wb("upsample.0".into()),
        SwinUpsampler::NearestConv => {
            wb("conv_before_upsample.0".into());
            for u in 1..=c.scale.trailing_zeros() {
                wb(format!("conv_up{u}"));
            }
            wb("conv_hr".into());
            wb("conv_last".into());
        }
        SwinUpsampler::None => wb("conv_last".into()),
    }
    for (i, &d) in c.depths.iter().enumerate() {
        for j in 0..d {
            let b = format!("layers.{i}.residual_group.blocks.{j}.attn");
            k.insert(format!("{b}.relative_position_bias_table"));
            k.insert(format!("{b}.relative_position_index"));
            k.insert(format!("layers.{i}.residual_group.blocks.{j}.attn_mask"));
        }
    }
    k
}
