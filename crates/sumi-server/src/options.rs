//! `/sdapi/v1/options`: A1111's settings that Sumi honours (clip skip, noise source, exact steps,
//! inpainting mask weight), with A1111's defaults; other keys are accepted, kept and echoed back.
//! `sd_model_checkpoint` is the loaded checkpoint's title (setting it switches the model; see
//! `routes`).

use serde_json::{json, Map, Value};
use sumi_pipeline::NoiseSource;

use crate::error::ApiError;

/// The options map with A1111's defaults for the keys Sumi reads or reports.
pub fn defaults(preview_taesd: bool) -> Map<String, Value> {
    let pairs = [
        ("sd_vae", json!("Automatic")),
        ("CLIP_stop_at_last_layers", json!(1)),
        ("randn_source", json!("GPU")),
        ("eta_noise_seed_delta", json!(0)),
        ("img2img_fix_steps", json!(false)),
        ("inpainting_mask_weight", json!(1.0)),
        ("samples_format", json!("png")),
        ("samples_save", json!(false)),
        ("enable_pnginfo", json!(true)),
        ("add_model_hash_to_info", json!(true)),
        ("add_model_name_to_info", json!(true)),
        ("add_version_to_infotext", json!(true)),
        ("live_previews_enable", json!(true)),
        ("show_progress_every_n_steps", json!(1)),
        (
            "show_progress_type",
            json!(if preview_taesd {
                "TAESD"
            } else {
                "Approx cheap"
            }),
        ),
        ("sd_checkpoints_limit", json!(1)),
        ("sd_checkpoint_cache", json!(0)),
        ("sd_vae_checkpoint_cache", json!(0)),
    ];
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The settings a generation reads, from the options overlaid with a request's
/// `override_settings`.
#[derive(Debug, Clone, Copy)]
pub struct GenOptions {
    /// `CLIP_stop_at_last_layers`.
    pub clip_skip: usize,
    /// `randn_source`.
    pub rng: NoiseSource,
    /// `img2img_fix_steps`.
    pub exact_steps: bool,
    /// `inpainting_mask_weight`.
    pub inpainting_mask_weight: f64,
}

fn get<'a>(
    key: &str,
    over: Option<&'a Map<String, Value>>,
    opts: &'a Map<String, Value>,
) -> Option<&'a Value> {
    over.and_then(|o| o.get(key))
        .filter(|v| !v.is_null())
        .or_else(|| opts.get(key))
}

fn as_f64(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

impl GenOptions {
    /// Reads the settings; a value of the wrong kind is a 422 naming the setting.
    pub fn read(
        opts: &Map<String, Value>,
        over: Option<&Map<String, Value>>,
    ) -> Result<Self, ApiError> {
        let bad = |k: &str, v: &Value| ApiError::invalid(format!("setting {k}: bad value {v}"));
        let clip_skip = match get("CLIP_stop_at_last_layers", over, opts) {
            None => 1,
            Some(v) => match as_f64(v) {
                Some(f) if f.fract() == 0.0 && (1.0..=12.0).contains(&f) => f as usize,
                _ => {
                    return Err(ApiError::invalid(format!(
                        "setting CLIP_stop_at_last_layers: {v} is outside 1..=12"
                    )))
                }
            },
        };
        let rng = match get("randn_source", over, opts) {
            None => NoiseSource::Gpu,
            Some(v) => v
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("randn_source (GPU, CPU or NV)", v))?,
        };
        let exact_steps = match get("img2img_fix_steps", over, opts) {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| bad("img2img_fix_steps", v))?,
        };
        let inpainting_mask_weight = match get("inpainting_mask_weight", over, opts) {
            None => 1.0,
            Some(v) => match as_f64(v) {
                Some(f) if (0.0..=1.0).contains(&f) => f,
                _ => {
                    return Err(ApiError::invalid(format!(
                        "setting inpainting_mask_weight: {v} is outside 0..=1"
                    )))
                }
            },
        };
        Ok(Self {
            clip_skip,
            rng,
            exact_steps,
            inpainting_mask_weight,
        })
    }
}
