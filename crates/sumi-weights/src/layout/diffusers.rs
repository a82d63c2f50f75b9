//! The diffusers folder layout: one safetensors (or PyTorch) file per component, whose keys
//! already are the canonical names once the component prefix is added.

use super::{clip_key, Mapped, TEXT_ENCODER, TEXT_ENCODER_2, UNET, VAE};

/// The components of a diffusers folder Sumi reads: (folder, canonical prefix, weight file
/// stems in order of preference). `text_encoder_2` is SDXL's (base and refiner); the SDXL
/// refiner has no `text_encoder`.
pub const COMPONENTS: &[(&str, &str, &[&str])] = &[
    ("unet", UNET, &["diffusion_pytorch_model"]),
    ("vae", VAE, &["diffusion_pytorch_model"]),
    ("text_encoder", TEXT_ENCODER, &["model", "pytorch_model"]),
    (
        "text_encoder_2",
        TEXT_ENCODER_2,
        &["model", "pytorch_model"],
    ),
];

/// Maps a key of component `prefix`'s file.
pub fn map_key(prefix: &str, key: &str) -> Vec<Mapped> {
    if prefix == TEXT_ENCODER || prefix == TEXT_ENCODER_2 {
        let k = clip_key(key);
        if k.ends_with("position_ids") {
            return Vec::new();
        }
        return vec![Mapped::whole(format!("{prefix}{k}"))];
    }
    vec![Mapped::whole(format!("{prefix}{key}"))]
}
