//! DAT's sizes read from a state dict's shapes as spandrel 0.4.2's `DATArch.load` reads them,
//! every one checked against a limit, and the tensor names such a network has.
//!
//! spandrel reads the split sizes from the values of `rpe_biases` (its last row plus one); the
//! shapes give the pair but not its order, so [`dat_config`] puts the smaller first (as every
//! released DAT file: 8×32, 8×16, 2×4) and [`split_from_rpe_biases`] reads the order from the
//! values when the network is built.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::Tensor;

use super::layout::{check, invalid, seq_len, shape};
use super::{Result, MAX_BLOCKS, MAX_FEATURES, MAX_IMAGE_CHANNELS, MAX_SCALE};

const A: &str = "DAT";
/// Largest split (window) side accepted (released files: 32).
pub const MAX_SPLIT: usize = 32;
/// Most attention heads per group (released files: 6; the spatial branches get half each).
pub const MAX_HEADS: usize = 64;
/// Most residual groups (released files: 4 to 6).
pub const MAX_LAYERS: usize = 32;
/// spandrel's DAT always builds 64 upsampling channels (`num_feat = 64`).
const NUM_FEAT: usize = 64;
/// The first block of the first group whose attention is shifted (it carries `attn_mask_0`).
const MASK_KEY: &str = "layers.0.blocks.2.attn.attn_mask_0";
const RPE_KEY: &str = "layers.0.blocks.0.attn.attns.0.rpe_biases";

/// How a DAT network makes its output from the body's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatUpsampler {
    /// Classical SR: conv + LeakyReLU, convolutions with pixel shuffles, a last conv.
    PixelShuffle,
    /// Lightweight SR: one conv to `out·s²` channels and a pixel shuffle.
    Direct,
}

/// DAT sizes, as read from the weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatConfig {
    /// Image channels in (and out).
    pub in_channels: usize,
    /// Channels of the body (`embed_dim`).
    pub embed_dim: usize,
    /// Dual aggregation blocks per residual group.
    pub depths: Vec<usize>,
    /// Attention heads per residual group (the spatial attention's two branches get half each).
    pub heads: Vec<usize>,
    /// `split_size`: the spatial window of the first branch is `split[0]` high and `split[1]`
    /// wide, the second branch's the transpose.
    pub split: [usize; 2],
    /// The SGFN's hidden width (`embed_dim · expansion_factor`).
    pub hidden: usize,
    /// Whether `qkv` has a bias.
    pub qkv_bias: bool,
    /// The `img_size` the network was built for (only the size of its stored masks).
    pub img_size: usize,
    /// The output stage.
    pub upsampler: DatUpsampler,
    /// The network's upscale.
    pub scale: usize,
    /// `resi_connection = "3conv"` (else one conv).
    pub three_conv: bool,
}

impl DatConfig {
    /// The channels of `DynamicPosBias` (`embed_dim // 2 // 4 // 4`).
    pub fn pos_dim(&self) -> usize {
        self.embed_dim / 2 / 4 / 4
    }

    /// Whether block `b` of group `g` attends in shifted windows (spandrel's condition).
    pub fn shifted(g: usize, b: usize) -> bool {
        if g.is_multiple_of(2) {
            b >= 2 && (b - 2).is_multiple_of(4)
        } else {
            b.is_multiple_of(4)
        }
    }
}

/// spandrel's `DATArch` condition (beyond the keys `layout` looks for): all of these keys, one
/// of the residual convs and one of the upsamplers.
const DAT_KEYS: &[&str] = &[
    "conv_first.weight",
    "before_RG.1.weight",
    "before_RG.1.bias",
    "layers.0.blocks.0.norm1.weight",
    "layers.0.blocks.0.norm2.weight",
    "layers.0.blocks.0.ffn.fc1.weight",
    "layers.0.blocks.0.ffn.sg.norm.weight",
    "layers.0.blocks.0.ffn.sg.conv.weight",
    "layers.0.blocks.0.ffn.fc2.weight",
    "layers.0.blocks.0.attn.qkv.weight",
    "layers.0.blocks.0.attn.proj.weight",
    "layers.0.blocks.0.attn.dwconv.0.weight",
    "layers.0.blocks.0.attn.dwconv.1.running_mean",
    "layers.0.blocks.0.attn.channel_interaction.1.weight",
    "layers.0.blocks.0.attn.channel_interaction.2.running_mean",
    "layers.0.blocks.0.attn.channel_interaction.4.weight",
    "layers.0.blocks.0.attn.spatial_interaction.0.weight",
    "layers.0.blocks.0.attn.spatial_interaction.1.running_mean",
    "layers.0.blocks.0.attn.spatial_interaction.3.weight",
    "layers.0.blocks.0.attn.attns.0.rpe_biases",
    "layers.0.blocks.0.attn.attns.0.relative_position_index",
    "layers.0.blocks.0.attn.attns.0.pos.pos_proj.weight",
    "layers.0.blocks.0.attn.attns.0.pos.pos1.0.weight",
    "layers.0.blocks.0.attn.attns.0.pos.pos3.0.weight",
    "norm.weight",
];

/// The sizes of a DAT state dict (spandrel's `DATArch.load`; a key of spandrel's condition
/// missing is an error naming it).
pub fn dat_config(shapes: &BTreeMap<String, Vec<usize>>) -> Result<DatConfig> {
    let has = |k: &str| shapes.contains_key(k);
    if let Some(k) = DAT_KEYS.iter().find(|k| !has(k)) {
        return Err(invalid(A, format!("`{k}` is missing")));
    }
    let ps = [
        "conv_after_body.weight",
        "conv_before_upsample.0.weight",
        "conv_last.weight",
    ];
    if !has("conv_after_body.weight") && !has("conv_after_body.4.weight") {
        return Err(invalid(
            A,
            "neither `conv_after_body.weight` nor `conv_after_body.4.weight`",
        ));
    }
    if !ps.iter().all(|k| has(k)) && !has("upsample.0.weight") {
        return Err(invalid(
            A,
            "no upsampler (`conv_last` with its convs, or `upsample.0`)",
        ));
    }
    let first = shape(A, shapes, "conv_first.weight", 4)?;
    let in_channels = check(A, "input channels", first[1], MAX_IMAGE_CHANNELS)?;
    let embed_dim = check(A, "embed_dim", first[0], MAX_FEATURES)?;
    if !embed_dim.is_multiple_of(2) || embed_dim < 32 {
        return Err(invalid(
            A,
            format!("embed_dim {embed_dim} is odd or under 32 (no position-bias channels)"),
        ));
    }
    let layers = check(
        A,
        "residual groups",
        seq_len(A, shapes.keys(), "layers")?,
        MAX_LAYERS,
    )?;
    let mut depths = Vec::with_capacity(layers);
    let mut heads = Vec::with_capacity(layers);
    for i in 0..layers {
        let depth = check(
            A,
            "depth",
            seq_len(A, shapes.keys(), &format!("layers.{i}.blocks"))?,
            MAX_BLOCKS,
        )?;
        let h = if depth >= 2 {
            shape(
                A,
                shapes,
                &format!("layers.{i}.blocks.1.attn.temperature"),
                3,
            )?[0]
        } else {
            let key = format!("layers.{i}.blocks.0.attn.attns.0.pos.pos3.2.weight");
            shape(A, shapes, &key, 2)?[0].saturating_mul(2)
        };
        let h = check(A, "heads", h, MAX_HEADS.min(embed_dim))?;
        let fits = h >= 2 && embed_dim.is_multiple_of(h) && (embed_dim / 2).is_multiple_of(h / 2);
        if !fits {
            return Err(invalid(A, format!("{h} heads for {embed_dim} channels")));
        }
        depths.push(depth);
        heads.push(h);
    }
    let upsampler = if has("conv_last.weight") {
        DatUpsampler::PixelShuffle
    } else {
        DatUpsampler::Direct
    };
    let scale = match upsampler {
        DatUpsampler::PixelShuffle => pixel_shuffle_scale(shapes)?,
        DatUpsampler::Direct => {
            let o = shape(A, shapes, "upsample.0.weight", 4)?[0];
            let s = (o / in_channels).isqrt();
            if s * s * in_channels != o {
                return Err(invalid(A, format!("upsample.0 makes {o} channels")));
            }
            s
        }
    };
    check(A, "scale", scale, MAX_SCALE)?;
    let three_conv = !has("conv_after_body.weight");
    let hidden = shape(A, shapes, "layers.0.blocks.0.ffn.fc1.weight", 2)?[0];
    let hidden = check(A, "SGFN width", hidden, 8 * MAX_FEATURES)?;
    if !hidden.is_multiple_of(2) {
        return Err(invalid(A, format!("SGFN width {hidden} is odd")));
    }
    let img_size = match shapes.get(MASK_KEY) {
        Some(m) if m.len() == 3 => check(A, "img_size", m[0].saturating_mul(m[1]).isqrt(), 4096)?,
        Some(m) => return Err(invalid(A, format!("`{MASK_KEY}` has shape {m:?}"))),
        None => 64,
    };
    Ok(DatConfig {
        in_channels,
        embed_dim,
        depths,
        heads,
        split: split_from_shapes(shapes)?,
        hidden,
        qkv_bias: has("layers.0.blocks.0.attn.qkv.bias"),
        img_size,
        upsampler,
        scale,
        three_conv,
    })
}

/// The split pair from the shapes of `rpe_biases` (`[(2a−1)(2b−1), 2]`) and
/// `relative_position_index` (`[ab, ab]`), the smaller first.
fn split_from_shapes(shapes: &BTreeMap<String, Vec<usize>>) -> Result<[usize; 2]> {
    let rpe = shape(A, shapes, RPE_KEY, 2)?;
    let idx_key = "layers.0.blocks.0.attn.attns.0.relative_position_index";
    let idx = shape(A, shapes, idx_key, 2)?;
    let (n, p) = (rpe[0], idx[0]);
    let bad = || {
        invalid(
            A,
            format!("rpe_biases {rpe:?} and relative_position_index {idx:?}"),
        )
    };
    if rpe[1] != 2 || idx[1] != p || p == 0 || p > MAX_SPLIT * MAX_SPLIT {
        return Err(bad());
    }
    // (2a−1)(2b−1) = 4ab − 2(a+b) + 1
    let sum2 = (4 * p + 1).checked_sub(n).ok_or_else(bad)?;
    let sum = sum2 / 2;
    let disc = (sum * sum).checked_sub(4 * p).ok_or_else(bad)?;
    let root = disc.isqrt();
    if !sum2.is_multiple_of(2) || root * root != disc || !(sum - root).is_multiple_of(2) {
        return Err(bad());
    }
    let (a, b) = ((sum - root) / 2, (sum + root) / 2);
    check(A, "split size", a, MAX_SPLIT)?;
    check(A, "split size", b, MAX_SPLIT)?;
    if !b.is_multiple_of(a) {
        return Err(invalid(
            A,
            format!("split sizes {a} and {b}: {a} does not divide {b}"),
        ));
    }
    Ok([a, b])
}

/// spandrel's `split_size = rpe_biases[-1] + 1`: the order of `config.split` as the values of
/// `rpe_biases` give it (which must be the pair its shape gave).
pub fn split_from_rpe_biases(config: &DatConfig, rpe: &Tensor) -> Result<[usize; 2]> {
    let rows = rpe.dim(0).unwrap_or(0);
    let last = rpe
        .get(rows.saturating_sub(1))
        .and_then(|t| t.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>())
        .map_err(|e| invalid(A, format!("rpe_biases: {e}")))?;
    let [a, b] = config.split;
    let split = [last[0] + 1.0, last[1] + 1.0];
    if split == [a as f32, b as f32] {
        Ok([a, b])
    } else if split == [b as f32, a as f32] {
        Ok([b, a])
    } else {
        Err(invalid(
            A,
            format!("rpe_biases ends with {last:?}, its shape says split sizes {a} and {b}"),
        ))
    }
}

/// spandrel's `get_pixelshuffle_params(state, "upsample")` for DAT's `Upsample`: ×2 steps at
/// `upsample.0`, `upsample.2`, …, or one ×3, from 64 channels.
fn pixel_shuffle_scale(shapes: &BTreeMap<String, Vec<usize>>) -> Result<usize> {
    let mut scale = 1usize;
    for i in (0..10).step_by(2) {
        let Some(s) = shapes.get(&format!("upsample.{i}.weight")) else {
            break;
        };
        if s.len() != 4 || s[1] != NUM_FEAT {
            return Err(invalid(A, format!("upsample.{i}.weight is {s:?}")));
        }
        let r = (s[0] / NUM_FEAT).isqrt();
        let fits = r == 2 || (r == 3 && i == 0 && !shapes.contains_key("upsample.2.weight"));
        if r * r * NUM_FEAT != s[0] || !fits {
            return Err(invalid(A, format!("upsample.{i} makes {} channels", s[0])));
        }
        scale = scale.saturating_mul(r);
    }
    if scale == 1 {
        return Err(invalid(A, "no upsample.0 convolution"));
    }
    Ok(scale)
}

/// The upsampling convolutions' shuffle factors.
pub(super) fn shuffle_steps(scale: usize) -> Vec<usize> {
    if scale == 3 {
        vec![3]
    } else {
        vec![2; scale.trailing_zeros() as usize]
    }
}

/// The tensors a DAT network of `c` has (the buffers `rpe_biases`, `relative_position_index`,
/// `attn_mask_*` and `num_batches_tracked` included: files carry them; Sumi computes its own).
pub fn dat_keys(c: &DatConfig) -> BTreeSet<String> {
    let mut k = BTreeSet::new();
    let mut wb = |name: String| {
        k.insert(format!("{name}.weight"));
        k.insert(format!("{name}.bias"));
    };
    wb("conv_first".into());
    wb("before_RG.1".into());
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
    let mut bufs = Vec::new();
    for (g, &d) in c.depths.iter().enumerate() {
        resi(&mut wb, &format!("layers.{g}.conv"));
        for b in 0..d {
            let p = format!("layers.{g}.blocks.{b}");
            for n in [
                "norm1",
                "norm2",
                "ffn.fc1",
                "ffn.sg.norm",
                "ffn.sg.conv",
                "ffn.fc2",
            ] {
                wb(format!("{p}.{n}"));
            }
            wb(format!("{p}.attn.proj"));
            wb(format!("{p}.attn.dwconv.0"));
            for n in ["dwconv.1", "channel_interaction.2", "spatial_interaction.1"] {
                wb(format!("{p}.attn.{n}"));
                for s in ["running_mean", "running_var", "num_batches_tracked"] {
                    bufs.push(format!("{p}.attn.{n}.{s}"));
                }
            }
            for n in ["channel_interaction.1", "channel_interaction.4"] {
                wb(format!("{p}.attn.{n}"));
            }
            for n in ["spatial_interaction.0", "spatial_interaction.3"] {
                wb(format!("{p}.attn.{n}"));
            }
            bufs.push(format!("{p}.attn.qkv.weight"));
            if c.qkv_bias {
                bufs.push(format!("{p}.attn.qkv.bias"));
            }
            if !b.is_multiple_of(2) {
                bufs.push(format!("{p}.attn.temperature"));
                continue;
            }
            for a in 0..2 {
                let q = format!("{p}.attn.attns.{a}");
                bufs.push(format!("{q}.rpe_biases"));
                bufs.push(format!("{q}.relative_position_index"));
                for n in [
                    "pos_proj", "pos1.0", "pos1.2", "pos2.0", "pos2.2", "pos3.0", "pos3.2",
                ] {
                    wb(format!("{q}.pos.{n}"));
                }
            }
            if DatConfig::shifted(g, b) {
                bufs.push(format!("{p}.attn.attn_mask_0"));
                bufs.push(format!("{p}.attn.attn_mask_1"));
            }
        }
    }
    match c.upsampler {
        DatUpsampler::PixelShuffle => {
            wb("conv_before_upsample.0".into());
            for s in 0..shuffle_steps(c.scale).len() {
                wb(format!("upsample.{}", 2 * s));
            }
            wb("conv_last".into());
        }
        DatUpsampler::Direct => wb("upsample.0".into()),
    }
    k.extend(bufs);
    k
}
