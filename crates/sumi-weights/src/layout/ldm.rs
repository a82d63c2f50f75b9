//! The original LDM ("CompVis", A1111 single-file) layout of SD1.x/SD2.x checkpoints:
//! `model.diffusion_model.*`, `first_stage_model.*`, and the text encoder under
//! `cond_stage_model.transformer.*` (SD1, transformers layout) or `cond_stage_model.model.*`
//! (SD2, open_clip layout, see [`super::open_clip`]).

use std::sync::OnceLock;

use super::{clip_key, open_clip, rename_inner, rename_prefix, Mapped, TEXT_ENCODER, UNET, VAE};
use crate::detect::Family;

/// Prefix of the U-Net in LDM files.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// Prefix of the VAE in LDM files.
pub const VAE_PREFIX: &str = "first_stage_model.";
/// Prefix of an SD1 (transformers-layout) text encoder in LDM files.
pub const CLIP_PREFIX: &str = "cond_stage_model.transformer.";
/// Prefix of an SD2 (open_clip-layout) text encoder in LDM files.
pub const OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";

/// What kind of block a U-Net prefix names (resnets rename their inner layers).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Block {
    Resnet,
    Plain,
}

/// LDM `ResBlock` layer names → diffusers `ResnetBlock2D`.
const UNET_RESNET: &[(&str, &str)] = &[
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
];

/// LDM VAE attention layer names → diffusers `Attention`.
const VAE_ATTN: &[(&str, &str)] = &[
    ("norm", "group_norm"),
    ("q", "to_q"),
    ("k", "to_k"),
    ("v", "to_v"),
    ("proj_out", "to_out.0"),
];

/// One U-Net block prefix: LDM prefix, canonical prefix (without `unet.`), kind.
pub(crate) type UnetRow = (String, String, Block);

/// The U-Net table of an LDM/SGM U-Net of `levels` levels with 2 resnets per down level (3 per
/// up level); `up_attention(i)` says whether up level `i` (diffusers' numbering, lowest
/// resolution first) has transformers, which moves its upsampler from `.1` to `.2`. Down
/// attentions are listed for every level (absent ones simply never match).
pub(crate) fn build_unet_table(
    levels: usize,
    up_attention: &dyn Fn(usize) -> bool,
) -> Vec<UnetRow> {
    let mut t: Vec<UnetRow> = Vec::new();
    let mut add = |a: String, b: &str, k| t.push((a, b.to_string(), k));
    add(
        "time_embed.0.".into(),
        "time_embedding.linear_1.",
        Block::Plain,
    );
    add(
        "time_embed.2.".into(),
        "time_embedding.linear_2.",
        Block::Plain,
    );
    add(
        "label_emb.0.0.".into(),
        "add_embedding.linear_1.",
        Block::Plain,
    );
    add(
        "label_emb.0.2.".into(),
        "add_embedding.linear_2.",
        Block::Plain,
    );
    add("input_blocks.0.0.".into(), "conv_in.", Block::Plain);
    add("out.0.".into(), "conv_norm_out.", Block::Plain);
    add("out.2.".into(), "conv_out.", Block::Plain);
    for i in 0..levels {
        for j in 0..2 {
            let ib = 3 * i + j + 1;
            let r = format!("down_blocks.{i}.resnets.{j}.");
            add(format!("input_blocks.{ib}.0."), &r, Block::Resnet);
            let a = format!("down_blocks.{i}.attentions.{j}.");
            add(format!("input_blocks.{ib}.1."), &a, Block::Plain);
        }
        if i + 1 < levels {
            let d = format!("down_blocks.{i}.downsamplers.0.conv.");
            add(
                format!("input_blocks.{}.0.op.", 3 * (i + 1)),
                &d,
                Block::Plain,
            );
        }
        for j in 0..3 {
            let ob = 3 * i + j;
            let r = format!("up_blocks.{i}.resnets.{j}.");
            add(format!("output_blocks.{ob}.0."), &r, Block::Resnet);
            if up_attention(i) {
                let a = format!("up_blocks.{i}.attentions.{j}.");
                add(format!("output_blocks.{ob}.1."), &a, Block::Plain);
            }
        }
        if i + 1 < levels {
            let k = if up_attention(i) { 2 } else { 1 };
            let u = format!("up_blocks.{i}.upsamplers.0.");
            add(
                format!("output_blocks.{}.{k}.", 3 * i + 2),
                &u,
                Block::Plain,
            );
        }
    }
    add(
        "middle_block.0.".into(),
        "mid_block.resnets.0.",
        Block::Resnet,
    );
    add(
        "middle_block.1.".into(),
        "mid_block.attentions.0.",
        Block::Plain,
    );
    add(
        "middle_block.2.".into(),
        "mid_block.resnets.1.",
        Block::Resnet,
    );
    t
}

/// The SD1/SD2 U-Net table: 4 levels, attention in the first three down levels and the last
/// three up levels.
fn unet_table() -> &'static [UnetRow] {
    static T: OnceLock<Vec<UnetRow>> = OnceLock::new();
    T.get_or_init(|| build_unet_table(4, &|i| i > 0))
}

/// The VAE table (4 levels, 2 resnets per encoder level, 3 per decoder level).
fn vae_table() -> &'static [(String, String)] {
    static T: OnceLock<Vec<(String, String)>> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = Vec::new();
        for side in ["encoder", "decoder"] {
            t.push((
                format!("{side}.norm_out."),
                format!("{side}.conv_norm_out."),
            ));
            t.push((
                format!("{side}.mid.block_1."),
                format!("{side}.mid_block.resnets.0."),
            ));
            t.push((
                format!("{side}.mid.block_2."),
                format!("{side}.mid_block.resnets.1."),
            ));
            t.push((
                format!("{side}.mid.attn_1."),
                format!("{side}.mid_block.attentions.0."),
            ));
        }
        for i in 0..4 {
            for j in 0..2 {
                t.push((
                    format!("encoder.down.{i}.block.{j}."),
                    format!("encoder.down_blocks.{i}.resnets.{j}."),
                ));
            }
            t.push((
                format!("encoder.down.{i}.downsample."),
                format!("encoder.down_blocks.{i}.downsamplers.0."),
            ));
            for j in 0..3 {
                t.push((
                    format!("decoder.up.{}.block.{j}.", 3 - i),
                    format!("decoder.up_blocks.{i}.resnets.{j}."),
                ));
            }
            t.push((
                format!("decoder.up.{}.upsample.", 3 - i),
                format!("decoder.up_blocks.{i}.upsamplers.0."),
            ));
        }
        t
    })
}

fn unet_key(rest: &str) -> Option<String> {
    unet_key_in(unet_table(), rest)
}

/// Maps a U-Net key (without `model.diffusion_model.`) by `table`.
pub(crate) fn unet_key_in(table: &[UnetRow], rest: &str) -> Option<String> {
    let (src, dst, kind) = table
        .iter()
        .find(|(s, _, _)| rest.starts_with(s.as_str()))?;
    let tail = &rest[src.len()..];
    let tail = if *kind == Block::Resnet {
        rename_inner(tail, UNET_RESNET)
    } else {
        tail.to_string()
    };
    Some(format!("{UNET}{dst}{tail}"))
}

pub(crate) fn vae_key(rest: &str) -> String {
    let mut name = rename_prefix(rest, vae_table()).unwrap_or_else(|| rest.to_string());
    if let Some(i) = name.find("mid_block.attentions.0.") {
        let cut = i + "mid_block.attentions.0.".len();
        let inner = rename_inner(&name[cut..], VAE_ATTN);
        name = format!("{}{inner}", &name[..cut]);
    } else if name.contains("resnets.") {
        name = name.replace(".nin_shortcut.", ".conv_shortcut.");
    }
    format!("{VAE}{name}")
}

/// Maps one LDM key to its canonical tensors; `None` for keys no model uses (EMA copies,
/// `alphas_cumprod`, `position_ids`, …). `open_clip_layers` is the number of resblocks the
/// file's open_clip text encoder has (the last one is not used by SD2, see [`open_clip`]).
pub fn map_key(key: &str, open_clip_layers: usize) -> Vec<Mapped> {
    if let Some(rest) = key.strip_prefix(UNET_PREFIX) {
        return unet_key(rest).map(Mapped::whole).into_iter().collect();
    }
    if let Some(rest) = key.strip_prefix(VAE_PREFIX) {
        return vec![Mapped::whole(vae_key(rest))];
    }
    if let Some(rest) = key.strip_prefix(CLIP_PREFIX) {
        let rest = clip_key(rest);
        if rest.ends_with("position_ids") {
            return Vec::new();
        }
        return vec![Mapped::whole(format!("{TEXT_ENCODER}{rest}"))];
    }
    if let Some(rest) = key.strip_prefix(OPEN_CLIP_PREFIX) {
        return open_clip::map_key(rest, open_clip_layers);
    }
    Vec::new()
}

/// [`UNET_RESNET`] read backwards (diffusers `ResnetBlock2D` → LDM `ResBlock`).
fn unet_resnet_back(tail: &str) -> String {
    let back: Vec<(&str, &str)> = UNET_RESNET.iter().map(|&(a, b)| (b, a)).collect();
    rename_inner(tail, &back)
}

fn unet_key_back(rest: &str) -> Option<String> {
    unet_key_back_in(unet_table(), rest)
}

/// The inverse of [`unet_key_in`]: the LDM/SGM key (with `model.diffusion_model.`) of a
/// canonical U-Net name without its `unet.` prefix, by `table`.
pub(crate) fn unet_key_back_in(table: &[UnetRow], rest: &str) -> Option<String> {
    let (src, dst, kind) = table
        .iter()
        .find(|(_, d, _)| rest.starts_with(d.as_str()))?;
    let tail = &rest[dst.len()..];
    let tail = if *kind == Block::Resnet {
        unet_resnet_back(tail)
    } else {
        tail.to_string()
    };
    Some(format!("{UNET_PREFIX}{src}{tail}"))
}

fn vae_key_back(rest: &str) -> String {
    let mut name = rest.to_string();
    if let Some(i) = name.find("mid_block.attentions.0.") {
        let cut = i + "mid_block.attentions.0.".len();
        let back: Vec<(&str, &str)> = VAE_ATTN.iter().map(|&(a, b)| (b, a)).collect();
        let inner = rename_inner(&name[cut..], &back);
        name = format!("{}{inner}", &name[..cut]);
    } else if name.contains("resnets.") {
        name = name.replace(".conv_shortcut.", ".nin_shortcut.");
    }
    let back: Vec<(String, String)> = vae_table()
        .iter()
        .map(|(a, b)| (b.clone(), a.clone()))
        .collect();
    let name = rename_prefix(&name, &back).unwrap_or(name);
    format!("{VAE_PREFIX}{name}")
}

/// The inverse of [`map_key`]: the LDM key a canonical tensor comes from (for the q/k/v
/// tensors of an SD2 text encoder, the fused `in_proj_*` key and which third it is), or
/// `None` for names outside the U-Net, the VAE and the text encoder. SD1 text-encoder keys
/// come back with the `text_model.` prefix A1111's checkpoints use.
pub fn unmap_key(canonical: &str, family: Family) -> Option<Mapped> {
    if let Some(rest) = canonical.strip_prefix(UNET) {
        return unet_key_back(rest).map(Mapped::whole);
    }
    if let Some(rest) = canonical.strip_prefix(VAE) {
        return Some(Mapped::whole(vae_key_back(rest)));
    }
    let rest = canonical.strip_prefix(TEXT_ENCODER)?;
    match family {
        Family::Sd1 => Some(Mapped::whole(format!("{CLIP_PREFIX}text_model.{rest}"))),
        Family::Sd2 => open_clip::unmap_key(rest).map(|m| Mapped {
            name: format!("{OPEN_CLIP_PREFIX}{}", m.name),
            ..m
        }),
        Family::Sdxl | Family::SdxlRefiner => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(k: &str) -> String {
        map_key(k, 0).pop().map(|m| m.name).unwrap_or_default()
    }

    #[test]
    fn unet_names() {
        assert_eq!(
            one("model.diffusion_model.input_blocks.4.0.in_layers.2.weight"),
            "unet.down_blocks.1.resnets.0.conv1.weight"
        );
        assert_eq!(
            one("model.diffusion_model.input_blocks.9.0.op.bias"),
            "unet.down_blocks.2.downsamplers.0.conv.bias"
        );
        assert_eq!(
            one("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"),
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
        );
        assert_eq!(
            one("model.diffusion_model.output_blocks.2.1.conv.weight"),
            "unet.up_blocks.0.upsamplers.0.conv.weight"
        );
        assert_eq!(
            one("model.diffusion_model.output_blocks.5.2.conv.weight"),
            "unet.up_blocks.1.upsamplers.0.conv.weight"
        );
        assert_eq!(
            one("model.diffusion_model.output_blocks.11.0.skip_connection.bias"),
            "unet.up_blocks.3.resnets.2.conv_shortcut.bias"
        );
        assert_eq!(
            one("model.diffusion_model.middle_block.2.emb_layers.1.weight"),
            "unet.mid_block.resnets.1.time_emb_proj.weight"
        );
        assert_eq!(
            one("model.diffusion_model.out.2.weight"),
            "unet.conv_out.weight"
        );
        assert!(map_key("model.diffusion_model.nonsense.weight", 0).is_empty());
    }

    #[test]
    fn vae_and_clip_names() {
        assert_eq!(
            one("first_stage_model.decoder.up.3.block.0.nin_shortcut.weight"),
            "vae.decoder.up_blocks.0.resnets.0.conv_shortcut.weight"
        );
        assert_eq!(
            one("first_stage_model.encoder.mid.attn_1.proj_out.bias"),
            "vae.encoder.mid_block.attentions.0.to_out.0.bias"
        );
        assert_eq!(
            one("first_stage_model.decoder.mid.attn_1.norm.weight"),
            "vae.decoder.mid_block.attentions.0.group_norm.weight"
        );
        assert_eq!(
            one("first_stage_model.encoder.down.0.downsample.conv.weight"),
            "vae.encoder.down_blocks.0.downsamplers.0.conv.weight"
        );
        assert_eq!(
            one("first_stage_model.post_quant_conv.weight"),
            "vae.post_quant_conv.weight"
        );
        assert_eq!(
            one("cond_stage_model.transformer.text_model.encoder.layers.3.mlp.fc1.weight"),
            "text_encoder.encoder.layers.3.mlp.fc1.weight"
        );
        assert_eq!(
            one("cond_stage_model.transformer.final_layer_norm.bias"),
            "text_encoder.final_layer_norm.bias"
        );
        assert!(map_key(
            "cond_stage_model.transformer.text_model.embeddings.position_ids",
            0
        )
        .is_empty());
    }
}
