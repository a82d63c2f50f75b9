//! Stability's `generative-models` (SGM) single-file layout of SDXL checkpoints, as A1111
//! loads them: the U-Net under `model.diffusion_model.*` (LDM block numbering, with the ADM
//! input `label_emb.0.0`/`label_emb.0.2` → `add_embedding.linear_1`/`linear_2`), the VAE under
//! `first_stage_model.*`, and the text encoders under `conditioner.embedders.<k>.*`:
//! `transformer.text_model.*` is a CLIP ViT-L/14 in transformers' layout (canonical
//! `text_encoder.`), `model.*` an OpenCLIP ViT-bigG/14 (canonical `text_encoder_2.`, every
//! resblock kept, `text_projection` stored transposed). The base holds both encoders
//! (embedders 0 and 1), the refiner only bigG (embedder 0).
//!
//! The U-Net's level count and which up levels have transformers (SDXL base: none at the
//! highest resolution; refiner: none at the lowest either) are read from the file's keys, since
//! they decide where the upsamplers are numbered.

use std::collections::HashSet;

use super::ldm::{build_unet_table, unet_key_in, vae_key, UnetRow, UNET_PREFIX, VAE_PREFIX};
use super::{clip_key, open_clip, Mapped, TEXT_ENCODER, TEXT_ENCODER_2};

/// The prefix of SGM's conditioner embedders.
pub const EMBEDDERS_PREFIX: &str = "conditioner.embedders.";

/// Whether a file's keys are in the SGM layout (any `conditioner.embedders.*` key).
pub fn is_sgm<'a>(mut keys: impl Iterator<Item = &'a str>) -> bool {
    keys.any(|k| k.starts_with(EMBEDDERS_PREFIX))
}

/// The per-file facts the SGM mapping needs.
pub struct SgmLayout {
    unet: Vec<UnetRow>,
}

impl SgmLayout {
    /// Reads the U-Net's level count and up-level transformers from the file's keys.
    pub fn new<'a>(keys: impl Iterator<Item = &'a str>) -> Self {
        let mut max_input = 0usize;
        let mut blocks: HashSet<String> = HashSet::new();
        for k in keys {
            let Some(rest) = k.strip_prefix(UNET_PREFIX) else {
                continue;
            };
            let mut it = rest.splitn(4, '.');
            let (Some(kind), Some(n), Some(sub)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<usize>() else {
                continue;
            };
            if kind == "input_blocks" {
                max_input = max_input.max(n);
            }
            if kind == "output_blocks" {
                blocks.insert(format!("{n}.{sub}"));
            }
        }
        // 1 conv_in + 2 resnets per level + a downsampler between levels = 3 · levels
        let levels = (max_input + 1) / 3;
        let unet = build_unet_table(levels, &|i| blocks.contains(&format!("{}.1", 3 * i)));
        Self { unet }
    }

    /// Maps one SGM key to its canonical tensors; empty for keys no model uses
    /// (`alphas_cumprod`, `logit_scale`, `position_ids`, …).
    pub fn map_key(&self, key: &str) -> Vec<Mapped> {
        if let Some(rest) = key.strip_prefix(UNET_PREFIX) {
            return unet_key_in(&self.unet, rest)
                .map(Mapped::whole)
                .into_iter()
                .collect();
        }
        if let Some(rest) = key.strip_prefix(VAE_PREFIX) {
            return vec![Mapped::whole(vae_key(rest))];
        }
        let Some(rest) = key.strip_prefix(EMBEDDERS_PREFIX) else {
            return Vec::new();
        };
        let Some((_, rest)) = rest.split_once('.') else {
            return Vec::new();
        };
        if let Some(t) = rest.strip_prefix("transformer.") {
            let t = clip_key(t);
            if t.ends_with("position_ids") {
                return Vec::new();
            }
            return vec![Mapped::whole(format!("{TEXT_ENCODER}{t}"))];
        }
        if let Some(t) = rest.strip_prefix("model.") {
            if t == "text_projection" {
                return vec![Mapped {
                    name: format!("{TEXT_ENCODER_2}text_projection.weight"),
                    part: None,
                    transposed: true,
                }];
            }
            return open_clip::map_key_to(t, usize::MAX, TEXT_ENCODER_2);
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(keys: &[&str]) -> SgmLayout {
        SgmLayout::new(keys.iter().copied())
    }

    fn one(l: &SgmLayout, k: &str) -> String {
        l.map_key(k).pop().map(|m| m.name).unwrap_or_default()
    }

    #[test]
    fn sdxl_base_unet_names() {
        let l = layout(&[
            "model.diffusion_model.input_blocks.8.1.proj_in.weight",
            "model.diffusion_model.output_blocks.0.1.proj_in.weight",
            "model.diffusion_model.output_blocks.3.1.proj_in.weight",
        ]);
        let p = "model.diffusion_model.";
        for (k, want) in [
            ("label_emb.0.0.weight", "unet.add_embedding.linear_1.weight"),
            ("label_emb.0.2.bias", "unet.add_embedding.linear_2.bias"),
            (
                "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight",
                "unet.down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight",
            ),
            (
                "input_blocks.6.0.op.weight",
                "unet.down_blocks.1.downsamplers.0.conv.weight",
            ),
            (
                "output_blocks.2.1.norm.weight",
                "unet.up_blocks.0.attentions.2.norm.weight",
            ),
            (
                "output_blocks.2.2.conv.weight",
                "unet.up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.2.conv.bias",
                "unet.up_blocks.1.upsamplers.0.conv.bias",
            ),
            (
                "output_blocks.8.0.skip_connection.weight",
                "unet.up_blocks.2.resnets.2.conv_shortcut.weight",
            ),
            (
                "middle_block.1.transformer_blocks.1.norm3.bias",
                "unet.mid_block.attentions.0.transformer_blocks.1.norm3.bias",
            ),
        ] {
            assert_eq!(one(&l, &format!("{p}{k}")), want, "{k}");
        }
        assert!(l
            .map_key(&format!("{p}output_blocks.8.2.conv.weight"))
            .is_empty());
    }

    #[test]
    fn refiner_upsampler_without_attention_and_encoders() {
        // 4 levels, no transformers in up level 0 (the lowest resolution)
        let l = layout(&[
            "model.diffusion_model.input_blocks.11.0.in_layers.0.weight",
            "model.diffusion_model.output_blocks.3.1.proj_in.weight",
        ]);
        assert_eq!(
            one(&l, "model.diffusion_model.output_blocks.2.1.conv.weight"),
            "unet.up_blocks.0.upsamplers.0.conv.weight"
        );
        assert_eq!(
            one(&l, "model.diffusion_model.output_blocks.5.2.conv.weight"),
            "unet.up_blocks.1.upsamplers.0.conv.weight"
        );
        let m = l.map_key("conditioner.embedders.0.model.text_projection");
        assert_eq!(m[0].name, "text_encoder_2.text_projection.weight");
        assert!(m[0].transposed);
        let m =
            l.map_key("conditioner.embedders.0.model.transformer.resblocks.31.attn.in_proj_bias");
        assert_eq!(
            m[2].name,
            "text_encoder_2.encoder.layers.31.self_attn.v_proj.bias"
        );
        assert_eq!(m[2].part, Some((2, 3)));
        assert_eq!(
            one(
                &l,
                "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"
            ),
            "text_encoder.final_layer_norm.weight"
        );
        assert!(l
            .map_key("conditioner.embedders.1.model.logit_scale")
            .is_empty());
        assert!(l.map_key("alphas_cumprod").is_empty());
        assert_eq!(
            one(
                &l,
                "first_stage_model.decoder.up.3.block.0.nin_shortcut.weight"
            ),
            "vae.decoder.up_blocks.0.resnets.0.conv_shortcut.weight"
        );
    }
}
