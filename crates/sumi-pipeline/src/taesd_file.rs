//! Which TAESD file was given as a decoder. Sumi's models (SD1, SD2) decode with TAESD's SD
//! decoder; an encoder (other layers) and the SDXL decoder (the same layers with other weights,
//! told apart by the names its files are published under: `taesdxl_decoder.safetensors`) would
//! make wrong pictures or fail deep in the build, so they are refused up front, by what they are.
//! The same for a file given as an encoder (A1111's "VAE type for encode: TAESD").

use std::path::Path;

use candle_core::{DType, Device};
use sumi_models::TaesdEncoder;
use sumi_weights::Weights;

use crate::error::{PipelineError, Result};

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
    let xl = named_xl(path);
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

/// Why `w` (read from `path`) is not a TAESD encoder for an SD1/SD2 model or, `sdxl`, an SDXL
/// one (TAESDXL's, told by its file name as for the decoder), or `None` when it may be one.
pub fn wrong_taesd_encoder_for(w: &Weights, path: &Path, sdxl: bool) -> Option<&'static str> {
    if w.contains("1.weight") && !w.contains("0.weight") {
        return Some("this is a TAESD decoder, not an encoder (taesd_encoder.safetensors)");
    }
    let xl = named_xl(path);
    match (sdxl, xl) {
        (true, false) => Some(
            "by its name this is not TAESDXL's encoder; SDXL models need TAESDXL's \
             (taesdxl_encoder.safetensors)",
        ),
        (false, true) => Some(
            "by its name this is TAESDXL's encoder, for SDXL; SD1/SD2 models need TAESD's \
             (taesd_encoder.safetensors)",
        ),
        _ => None,
    }
}

/// Whether the file's name says it is TAESDXL's (`taesdxl_…`, `…sdxl…`, `…_xl`, `…-xl`).
fn named_xl(path: &Path) -> bool {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    ["taesdxl", "sdxl", "_xl", "-xl"]
        .iter()
        .any(|m| stem.contains(m))
}

/// The TAESD encoder of file `path` for an SD1/SD2 model or, `sdxl`, an SDXL one; errors name
/// the option (`taesd-encoder`).
pub(crate) fn load_encoder(path: &Path, sdxl: bool, device: &Device) -> Result<TaesdEncoder> {
    let bad = |detail: String| PipelineError::Request {
        field: "taesd-encoder",
        detail,
    };
    let w = Weights::open_raw(path).map_err(|e| bad(e.to_string()))?;
    if let Some(why) = wrong_taesd_encoder_for(&w, path, sdxl) {
        return Err(bad(format!("{}: {why}", path.display())));
    }
    TaesdEncoder::new(w.var_builder(DType::F32, device), 4)
        .map_err(|e| bad(format!("{}: {e}", path.display())))
}
