//! Which TAESD file was given as a decoder. SD1/SD2 models decode with TAESD's SD decoder, SDXL
//! models with TAESDXL's (the same layers with other weights, told apart by the names its files
//! are published under: `taesd_decoder.safetensors`, `taesdxl_decoder.safetensors`); an encoder
//! (other layers) or the other model kind's decoder would make wrong pictures or fail deep in
//! the build, so they are refused up front, by what they are. A1111 keeps both decoders in one
//! folder and picks by the model ([`decoder_for`] does the same with the file's folder). The same
//! for a file given as an encoder (A1111's "VAE type for encode: TAESD").

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use sumi_models::TaesdEncoder;
use sumi_weights::Weights;

use crate::error::{PipelineError, Result};

/// TAESD's SD1/SD2 decoder's published file name.
pub const SD_DECODER: &str = "taesd_decoder.safetensors";
/// TAESDXL's decoder's published file name.
pub const SDXL_DECODER: &str = "taesdxl_decoder.safetensors";

/// Why `w` (read from `path`) is not a TAESD decoder for SD1/SD2, or `None` when it may be one.
pub fn wrong_taesd_decoder(w: &Weights, path: &Path) -> Option<&'static str> {
    wrong_taesd_decoder_for(w, path, false)
}

/// Why `w` is not a TAESD decoder at all (an encoder), or `None`.
pub fn not_a_decoder(w: &Weights) -> Option<&'static str> {
    // the decoder starts with a clamp, then a 4 → 64 convolution (`1.weight`); the encoder
    // starts with a 3 → 64 convolution (`0.weight`)
    (w.contains("0.weight") && !w.contains("1.weight"))
        .then_some("this is a TAESD encoder, not a decoder (taesd_decoder.safetensors)")
}

/// Whether the file's name says TAESDXL (`taesdxl`, `sdxl`, `_xl`, `-xl` in its stem).
pub fn named_xl(path: &Path) -> bool {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    ["taesdxl", "sdxl", "_xl", "-xl"]
        .iter()
        .any(|m| stem.contains(m))
}

/// The decoder of the kind `xl` beside `path` under its published name, where that file is
/// there and is not `path` itself.
pub fn sibling(path: &Path, xl: bool) -> Option<PathBuf> {
    let name = if xl { SDXL_DECODER } else { SD_DECODER };
    let q = path.parent()?.join(name);
    (q.is_file() && q.file_name() != path.file_name()).then_some(q)
}

/// The decoder file for an SDXL (`sdxl`) or SD1/SD2 model given `path`: `path` when its name
/// fits the model, else the fitting decoder beside it ([`sibling`]) where there is one, else
/// `path` (which [`wrong_taesd_decoder_for`] then refuses, saying why).
pub fn decoder_for(path: &Path, sdxl: bool) -> PathBuf {
    if named_xl(path) == sdxl {
        return path.to_path_buf();
    }
    sibling(path, sdxl).unwrap_or_else(|| path.to_path_buf())
}

/// [`wrong_taesd_decoder`] for an SD1/SD2 model or, `sdxl`, an SDXL one (which needs TAESDXL's
/// decoder: a file whose name does not say so is refused).
pub fn wrong_taesd_decoder_for(w: &Weights, path: &Path, sdxl: bool) -> Option<&'static str> {
    if let Some(why) = not_a_decoder(w) {
        return Some(why);
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
