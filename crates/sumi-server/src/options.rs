//! `/sdapi/v1/options`: every option of A1111 v1.10.1 with its default (as a fresh A1111 answers,
//! so clients that read settings at start-up find every key), where Sumi honours one (clip skip,
//! noise source, exact steps, inpainting mask weight) or reports what it does (previews, saving)
//! its own value. The other options are accepted, kept and echoed back (so clients that set them,
//! as webuiapi's `set_options`, work), each value at most [`MAX_VALUE_BYTES`] of JSON; a key A1111
//! does not define is refused 422 naming it (A1111 fails on it too), so the store is bounded
//! (324 keys × 4 KiB). The three options A1111's API may not set (`restrict_api`) are ignored, as
//! A1111 does.
//! `sd_model_checkpoint` is the loaded checkpoint's title (setting it switches the model; see
//! `routes`).

use serde_json::{json, Map, Value};
use sumi_pipeline::upscale::{UpscalerTiles, TILE_SETTINGS};
use sumi_pipeline::NoiseSource;

use crate::error::ApiError;

/// The largest value one setting may hold, as JSON text.
pub const MAX_VALUE_BYTES: usize = 4096;

/// A1111 v1.10.1's options and their defaults on a fresh install, as a JSON object (written by
/// `tools/reference/a1111_options.py` from A1111's source).
const A1111_OPTIONS: &str = include_str!("../assets/a1111_options.json");

/// [`A1111_OPTIONS`] read.
fn a1111_options() -> &'static Map<String, Value> {
    static OPTIONS: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    OPTIONS.get_or_init(|| {
        serde_json::from_str(A1111_OPTIONS).expect("assets/a1111_options.json is a JSON object")
    })
}

/// A1111's options that its API may not set (`restrict_api=True`): accepted and ignored.
const API_RESTRICTED: [&str; 3] = [
    "api_enable_requests",
    "api_forbid_local_requests",
    "api_useragent",
];

/// A1111 v1.10.1's options with the defaults of a fresh install.
pub fn defaults_of_a1111() -> &'static Map<String, Value> {
    a1111_options()
}

/// Whether `key` is one of A1111 v1.10.1's options.
pub fn is_a1111_option(key: &str) -> bool {
    a1111_options().contains_key(key)
}

/// Checks the settings of a `POST /options` before any is kept: each key must be an A1111
/// option (422 naming it otherwise) and each value at most [`MAX_VALUE_BYTES`] of JSON (422);
/// returns them without those A1111's API may not set.
pub fn check_new(sent: Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    for (k, v) in &sent {
        if !is_a1111_option(k) {
            let shown: String = k.chars().take(80).collect();
            return Err(ApiError::invalid(format!(
                "setting {shown}: not an option of A1111 v1.10.1"
            )));
        }
        let size = serde_json::to_string(v).map_or(usize::MAX, |t| t.len());
        if size > MAX_VALUE_BYTES {
            return Err(ApiError::invalid(format!(
                "setting {k}: value of {size} bytes is over the limit of {MAX_VALUE_BYTES}"
            )));
        }
    }
    Ok(sent
        .into_iter()
        .filter(|(k, _)| !API_RESTRICTED.contains(&k.as_str()))
        .collect())
}

/// Every A1111 option with its default, the ones Sumi reads or reports with Sumi's value.
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
    let mut all = a1111_options().clone();
    all.extend(pairs.into_iter().map(|(k, v)| (k.to_string(), v)));
    all
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
    /// `s_min_uncond`, `s_min_uncond_all` and `skip_early_cond`.
    pub uncond_skip: sumi_pipeline::UncondSkip,
    /// Token merging ratios for (txt2img, img2img, the hires pass), as A1111's
    /// `get_token_merging_ratio` picks them from the settings.
    pub token_merging: (f64, f64, f64),
}

/// A setting from `override_settings` (a null there counts as absent), else the stored
/// options.
pub(crate) fn setting<'a>(
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
        let clip_skip = match setting("CLIP_stop_at_last_layers", over, opts) {
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
        let rng = match setting("randn_source", over, opts) {
            None => NoiseSource::Gpu,
            Some(v) => v
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("randn_source (GPU, CPU or NV)", v))?,
        };
        let exact_steps = match setting("img2img_fix_steps", over, opts) {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| bad("img2img_fix_steps", v))?,
        };
        let inpainting_mask_weight = match setting("inpainting_mask_weight", over, opts) {
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
        let number = |k: &str| match setting(k, over, opts) {
            None => Ok(0.0),
            Some(v) => as_f64(v).filter(|f| f.is_finite()).ok_or_else(|| bad(k, v)),
        };
        // a pasted infotext's `NGMS all steps: True` arrives as text
        let s_min_uncond_all = match setting("s_min_uncond_all", over, opts) {
            None => false,
            Some(v) => v
                .as_bool()
                .or(match v.as_str() {
                    Some("True") => Some(true),
                    Some("False") => Some(false),
                    _ => None,
                })
                .ok_or_else(|| bad("s_min_uncond_all", v))?,
        };
        let base = number("token_merging_ratio")?;
        let nonzero = |a: f64, b: f64| if a != 0.0 { a } else { b };
        // img2img: the setting when the request overrides it, else the img2img one, else it
        let overridden = over.is_some_and(|o| o.contains_key("token_merging_ratio"));
        let img2img = nonzero(
            if overridden { base } else { 0.0 },
            nonzero(number("token_merging_ratio_img2img")?, base),
        );
        let token_merging = (
            base,
            img2img,
            nonzero(number("token_merging_ratio_hr")?, base),
        );
        Ok(Self {
            clip_skip,
            rng,
            exact_steps,
            inpainting_mask_weight,
            token_merging,
            uncond_skip: sumi_pipeline::UncondSkip {
                s_min_uncond: number("s_min_uncond")?,
                s_min_uncond_all,
                skip_early_cond: number("skip_early_cond")?,
            },
        })
    }
}

/// The model upscalers' tiles from the settings (overlaid with `over`): A1111's
/// `ESRGAN_tile`, `SWIN_tile`, `DAT_tile` and their overlaps, each whole pixels from 0 to
/// 4096 and each overlap under its tile; anything else is a 422 naming the setting.
pub fn upscaler_tiles(
    opts: &Map<String, Value>,
    over: Option<&Map<String, Value>>,
) -> Result<UpscalerTiles, ApiError> {
    let mut tiles = UpscalerTiles::default();
    for k in TILE_SETTINGS {
        let Some(v) = setting(k, over, opts) else {
            continue;
        };
        let n = as_f64(v)
            .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
            .ok_or_else(|| {
                ApiError::invalid(format!("setting {k}: {v} is not a whole number of pixels"))
            })?;
        tiles
            .set(k, n as i64)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
    }
    tiles
        .check()
        .map_err(|e| ApiError::invalid(format!("settings {}: {e}", tile_pair_names(tiles))))?;
    Ok(tiles)
}

/// The names of the first pair of tile settings that [`UpscalerTiles::check`] refuses.
fn tile_pair_names(tiles: UpscalerTiles) -> &'static str {
    if tiles.esrgan.check().is_err() {
        "ESRGAN_tile, ESRGAN_tile_overlap"
    } else if tiles.swin.check().is_err() {
        "SWIN_tile, SWIN_tile_overlap"
    } else {
        "DAT_tile, DAT_tile_overlap"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_and_the_checkpoint_are_a1111_options() {
        for k in defaults(false).keys() {
            assert!(is_a1111_option(k), "{k}");
        }
        for k in [
            "sd_model_checkpoint",
            "sd_checkpoint_hash",
            "jpeg_quality",
            "sd_lora",
        ] {
            assert!(is_a1111_option(k), "{k}");
        }
        for k in ["", "#", "no_such_option", "SD_VAE"] {
            assert!(!is_a1111_option(k), "{k}");
        }
        for k in API_RESTRICTED {
            assert!(is_a1111_option(k), "{k}");
        }
        assert_eq!(a1111_options().len(), 324);
    }

    #[test]
    fn every_option_has_a1111s_default_unless_sumi_reports_its_own() {
        let d = defaults(false);
        assert_eq!(d.len(), 324);
        // the options the built-in extensions add with `shared.opts.add_option`
        assert_eq!(d["SWIN_tile"], json!(192));
        assert_eq!(d["SWIN_tile_overlap"], json!(8));
        assert_eq!(d["SCUNET_tile"], json!(256));
        assert_eq!(d["ldsr_steps"], json!(100));
        // A1111's defaults, of several kinds
        assert_eq!(d["send_seed"], json!(true));
        assert_eq!(d["jpeg_quality"], json!(80));
        assert_eq!(d["img_downscale_threshold"], json!(4.0));
        assert_eq!(d["enable_prompt_comments"], json!(true));
        assert_eq!(d["quicksettings_list"], json!(["sd_model_checkpoint"]));
        assert_eq!(d["outdir_txt2img_samples"], json!("outputs/txt2img-images"));
        assert_eq!(d["sd_model_checkpoint"], Value::Null);
        // what Sumi does instead of A1111's default
        assert_eq!(d["samples_save"], json!(false));
        assert_eq!(d["show_progress_type"], json!("Approx cheap"));
        assert_eq!(defaults(true)["show_progress_type"], json!("TAESD"));
    }

    #[test]
    fn tile_settings_are_read_and_checked() {
        let d = defaults(false);
        let t = upscaler_tiles(&d, None).unwrap();
        assert!(t.is_default());
        let mut opts = d.clone();
        opts.insert("SWIN_tile".into(), json!(64));
        opts.insert("DAT_tile_overlap".into(), json!("0"));
        let over = json!({"ESRGAN_tile": 32.0, "ESRGAN_tile_overlap": null});
        let t = upscaler_tiles(&opts, over.as_object()).unwrap();
        assert_eq!((t.esrgan.tile, t.esrgan.overlap), (32, 8));
        assert_eq!((t.swin.tile, t.swin.overlap), (64, 8));
        assert_eq!((t.dat.tile, t.dat.overlap), (192, 0));
        for (k, v, says) in [
            (
                "ESRGAN_tile",
                json!(-16),
                "setting ESRGAN_tile: -16: a tile setting is 0 to 4096",
            ),
            (
                "SWIN_tile",
                json!(1e9),
                "setting SWIN_tile: 1000000000: a tile setting is 0 to",
            ),
            (
                "DAT_tile",
                json!(16.5),
                "setting DAT_tile: 16.5 is not a whole number",
            ),
            (
                "DAT_tile",
                json!(true),
                "setting DAT_tile: true is not a whole number",
            ),
            (
                "SWIN_tile",
                json!(8),
                "settings SWIN_tile, SWIN_tile_overlap: tile size 8 with overlap 8",
            ),
        ] {
            let mut o = d.clone();
            o.insert(k.into(), v);
            let e = upscaler_tiles(&o, None).unwrap_err();
            assert_eq!(e.status.as_u16(), 422);
            assert!(e.detail.starts_with(says), "{}", e.detail);
        }
    }
}
