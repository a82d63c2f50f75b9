//! open_clip's text transformer, as SD2 LDM files store it (`cond_stage_model.model.*`), mapped
//! onto the transformers CLIP naming. Its attention keeps q, k and v fused in `in_proj_*`
//! (split here into three parts along axis 0), and SD2 reads the penultimate layer, so the last
//! resblock is left out — exactly the 23-layer encoder diffusers ships for SD2.

use super::{Mapped, TEXT_ENCODER};

/// Per-resblock renames.
const RESBLOCK: &[(&str, &str)] = &[
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("attn.out_proj.", "self_attn.out_proj."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
];

/// Maps one key (without `cond_stage_model.model.`) of an encoder with `layers` resblocks.
pub fn map_key(rest: &str, layers: usize) -> Vec<Mapped> {
    map_key_to(rest, layers, TEXT_ENCODER)
}

/// [`map_key`] onto the canonical component `prefix` (`text_encoder_2.` for SDXL's bigG,
/// whose every resblock is used: pass `usize::MAX` as `layers`).
pub fn map_key_to(rest: &str, layers: usize, prefix: &str) -> Vec<Mapped> {
    let whole = |s: &str| vec![Mapped::whole(format!("{prefix}{s}"))];
    match rest {
        "token_embedding.weight" => return whole("embeddings.token_embedding.weight"),
        "positional_embedding" => return whole("embeddings.position_embedding.weight"),
        "ln_final.weight" => return whole("final_layer_norm.weight"),
        "ln_final.bias" => return whole("final_layer_norm.bias"),
        _ => {}
    }
    let Some(tail) = rest.strip_prefix("transformer.resblocks.") else {
        return Vec::new();
    };
    let Some((n, inner)) = tail.split_once('.') else {
        return Vec::new();
    };
    let Ok(n) = n.parse::<usize>() else {
        return Vec::new();
    };
    if n.saturating_add(1) >= layers {
        return Vec::new();
    }
    let layer = format!("{prefix}encoder.layers.{n}.");
    if let Some(kind) = inner.strip_prefix("attn.in_proj_") {
        return ["q_proj", "k_proj", "v_proj"]
            .iter()
            .enumerate()
            .map(|(i, p)| Mapped::fused(format!("{layer}self_attn.{p}.{kind}"), i, 3))
            .collect();
    }
    RESBLOCK
        .iter()
        .find_map(|(s, d)| {
            inner
                .strip_prefix(s)
                .map(|t| vec![Mapped::whole(format!("{layer}{d}{t}"))])
        })
        .unwrap_or_default()
}

/// The inverse of [`map_key`] for a canonical name without its `text_encoder.` prefix: the
/// open_clip key (without `cond_stage_model.model.`), and for q/k/v which third of the fused
/// `in_proj_*` tensor it is.
pub fn unmap_key(rest: &str) -> Option<Mapped> {
    let whole = |s: &str| Some(Mapped::whole(s.to_string()));
    match rest {
        "embeddings.token_embedding.weight" => return whole("token_embedding.weight"),
        "embeddings.position_embedding.weight" => return whole("positional_embedding"),
        "final_layer_norm.weight" => return whole("ln_final.weight"),
        "final_layer_norm.bias" => return whole("ln_final.bias"),
        _ => {}
    }
    let (n, inner) = rest.strip_prefix("encoder.layers.")?.split_once('.')?;
    let n: usize = n.parse().ok()?;
    let layer = format!("transformer.resblocks.{n}.");
    if let Some(t) = inner.strip_prefix("self_attn.") {
        for (i, p) in ["q_proj.", "k_proj.", "v_proj."].iter().enumerate() {
            if let Some(kind) = t.strip_prefix(p) {
                return Some(Mapped::fused(format!("{layer}attn.in_proj_{kind}"), i, 3));
            }
        }
    }
    RESBLOCK.iter().find_map(|(s, d)| {
        inner
            .strip_prefix(d)
            .map(|t| Mapped::whole(format!("{layer}{s}{t}")))
    })
}

/// The number of resblocks among `keys` (open_clip keys without the model prefix).
pub fn count_layers<'a>(keys: impl Iterator<Item = &'a str>) -> usize {
    keys.filter_map(|k| k.strip_prefix("transformer.resblocks."))
        .filter_map(|t| t.split_once('.').and_then(|(n, _)| n.parse::<usize>().ok()))
        .map(|n| n + 1)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_qkv_is_split_and_last_layer_dropped() {
        let m = map_key("transformer.resblocks.1.attn.in_proj_weight", 3);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[1].name,
            "text_encoder.encoder.layers.1.self_attn.k_proj.weight"
        );
        assert_eq!(m[2].part, Some((2, 3)));
        assert!(map_key("transformer.resblocks.2.ln_1.weight", 3).is_empty());
        assert_eq!(
            map_key("transformer.resblocks.0.mlp.c_proj.bias", 3)[0].name,
            "text_encoder.encoder.layers.0.mlp.fc2.bias"
        );
        assert_eq!(
            map_key("positional_embedding", 3)[0].name,
            "text_encoder.embeddings.position_embedding.weight"
        );
        assert!(map_key("text_projection", 3).is_empty());
        assert_eq!(
            count_layers(
                [
                    "transformer.resblocks.0.ln_1.weight",
                    "transformer.resblocks.23.ln_2.bias"
                ]
                .into_iter()
            ),
            24
        );
    }
}
