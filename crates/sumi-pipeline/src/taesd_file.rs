//! Which TAESD file was given as a decoder. Sumi's models (SD1, SD2) decode with TAESD's SD
//! decoder; an encoder (other layers) and the SDXL decoder (the same layers with other weights,
//! told apart by the names its files are published under: `taesdxl_decoder.safetensors`) would
//! make wrong pictures or fail deep in the build, so they are refused up front, by what they are.

use std::path::Path;

use sumi_weights::Weights;

/// Why `w` (read from `path`) is not a TAESD decoder for SD1/SD2, or `None` when it may be one.
pub fn wrong_taesd_decoder(w: &Weights, path: &Path) -> Option<&'static str> {
    wrong_taesd_decoder_for(w, path, false)
}

/// [`wrong_taesd_decoder`] for an SD1/SD2 model or, `sdxl`, an SDXL one (which needs TAESDXL's
/// decoder: a file whose name does not say so is refused).
pub fn wrong_taesd_decoder_for(w: &Weights, path: &Path, sdxl: bool) -> Option<&'static str> {
    // the decoder starts with a clamp, then a 4 → 64 convolution (`1.weight`); the encoder
    // starts with a 3 → 64 convolution (`0.weight`)
    if w.contains("0.weight") && !w.contains("1.weight") {
        return Some("this is a TAESD encoder, not a decoder (taesd_decoder.safetensors)");
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let xl = ["taesdxl", "sdxl", "_xl", "-xl"]
        .iter()
        .any(|m| stem.contains(m));
    if sdxl && !xl {
        return Some(
            "by its name this is not TAESDXL's decoder; SDXL models need TAESDXL's \
             (taesdxl_decoder.safetensors): TAESD's SD decoder makes wrong pictures of SDXL latents",
        );
    }
    if xl && !sdxl {
        return Some(
            "by its name this is TAESDXL's decoder, for SDXL latents; SD1/SD2 models need \
             TAESD's (taesd_decoder.safetensors)",
        );
    }
    None
}
