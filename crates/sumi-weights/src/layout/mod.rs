//! Name tables: every checkpoint layout mapped onto one canonical naming.
//!
//! Canonical names are diffusers' module paths under a component prefix: `unet.` (diffusers
//! `UNet2DConditionModel`), `vae.` (`AutoencoderKL`), `text_encoder.` (transformers'
//! `CLIPTextModel` without its `text_model.` prefix) and, for SDXL, `text_encoder_2.`
//! (`CLIPTextModelWithProjection` likewise, with its `text_projection.weight`). Each layout is a table of
//! (source prefix, canonical prefix) pairs plus, for a few blocks, a table of inner renames.

pub mod diffusers;
pub mod ldm;
pub mod open_clip;
pub mod sgm;

/// Canonical component prefixes.
pub const UNET: &str = "unet.";
/// The VAE's canonical prefix.
pub const VAE: &str = "vae.";
/// The text encoder's canonical prefix.
pub const TEXT_ENCODER: &str = "text_encoder.";
/// The second text encoder's canonical prefix (SDXL's OpenCLIP ViT-bigG/14).
pub const TEXT_ENCODER_2: &str = "text_encoder_2.";

/// One canonical tensor produced from a source tensor: its name, and, for fused tensors, which
/// of `n` equal parts along the first axis it is (`Some((i, n))`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// Canonical name.
    pub name: String,
    /// Part `i` of `n` along axis 0, for tensors stored fused.
    pub part: Option<(usize, usize)>,
    /// A 2-D tensor stored transposed (open_clip's `text_projection`, `[width, projection]`
    /// where the canonical `text_projection.weight` is `[projection, width]`).
    pub transposed: bool,
}

impl Mapped {
    pub(crate) fn whole(name: String) -> Self {
        Self {
            name,
            part: None,
            transposed: false,
        }
    }

    pub(crate) fn fused(name: String, i: usize, n: usize) -> Self {
        Self {
            name,
            part: Some((i, n)),
            transposed: false,
        }
    }
}

/// Renames `key` by the first rule whose source prefix it starts with (rules are ordered so
/// that longer prefixes come first where two could match).
pub(crate) fn rename_prefix(key: &str, rules: &[(String, String)]) -> Option<String> {
    rules
        .iter()
        .find(|(src, _)| key.starts_with(src.as_str()))
        .map(|(src, dst)| format!("{dst}{}", &key[src.len()..]))
}

/// Applies inner renames (whole dotted segments or segment runs) to the part after a prefix.
pub(crate) fn rename_inner(rest: &str, rules: &[(&str, &str)]) -> String {
    for (src, dst) in rules {
        if let Some(tail) = rest.strip_prefix(src) {
            if tail.is_empty() || tail.starts_with('.') {
                return format!("{dst}{tail}");
            }
        }
    }
    rest.to_string()
}

/// Strips transformers' optional `text_model.` prefix from a CLIP key.
pub(crate) fn clip_key(key: &str) -> &str {
    key.strip_prefix("text_model.").unwrap_or(key)
}
