//! What a generation request asks for that Sumi does not apply, named in the job's `info`
//! warnings (A1111 clients ignore the extra key): fields A1111's model has but Sumi does not act
//! on, set to something other than the value that changes nothing; fields A1111's model does not
//! have; `override_settings` and stored options that change A1111's picture and that Sumi does not
//! apply, set away from A1111's default; and the keys of an `infotext` Sumi does not apply.

use serde_json::{Map, Value};

use crate::models::{defaults, Endpoint};

/// Settings Sumi applies (the others are kept and echoed only).
const APPLIED_SETTINGS: [&str; 13] = [
    "CLIP_stop_at_last_layers",
    "token_merging_ratio",
    "token_merging_ratio_hr",
    "token_merging_ratio_img2img",
    "s_min_uncond",
    "s_min_uncond_all",
    "skip_early_cond",
    "randn_source",
    "img2img_fix_steps",
    "inpainting_mask_weight",
    "sd_model_checkpoint",
    "hires_fix_refiner_pass",
    "refiner_switch_by_sample_steps",
];

/// Settings that change A1111's picture (or the image file the API returns) and that Sumi does not
/// apply: A1111 v1.10.1's `OptionInfo(..., infotext=...)` settings and a few more (the networks
/// A1111 adds to every prompt, `lora_functional`, the upscaler img2img enlarges its picture
/// with).
const PICTURE_SETTINGS: [&str; 37] = [
    "face_restoration",
    "emphasis",
    "tiling",
    "sd_vae_encode_method",
    "sd_vae_decode_method",
    "initial_noise_multiplier",
    "img2img_extra_noise",
    "pad_cond_uncond",
    "pad_cond_uncond_v0",
    "use_old_scheduling",
    "use_downcasted_alpha_bar",
    "eta_ddim",
    "eta_ancestral",
    "s_churn",
    "s_tmin",
    "s_tmax",
    "s_noise",
    "sigma_min",
    "sigma_max",
    "rho",
    "eta_noise_seed_delta",
    "always_discard_next_to_last_sigma",
    "sgm_noise_multiplier",
    "uni_pc_variant",
    "uni_pc_skip_type",
    "uni_pc_order",
    "uni_pc_lower_order_final",
    "sd_noise_schedule",
    "beta_dist_alpha",
    "beta_dist_beta",
    "img2img_color_correction",
    "img2img_background_color",
    "upscaler_for_img2img",
    "samples_format",
    "lora_functional",
    "sd_lora",
    "sd_hypernetwork",
];

/// Whether `v` is "nothing set" for a field whose neutral value is `neutral`: null, or equal
/// (numbers compared as numbers).
fn neutral(v: &Value, neutral: &Value) -> bool {
    match (v, neutral) {
        (Value::Null, _) => true,
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

/// `v` as short text for a warning.
fn shown(v: &Value) -> String {
    let t = v.to_string();
    let mut s: String = t.chars().take(80).collect();
    if s.len() < t.len() {
        s.push('…');
    }
    s
}

/// The request fields A1111's model has and Sumi does not act on, with the value that changes
/// nothing there.
fn inert_fields() -> Vec<(&'static str, Value)> {
    use serde_json::json;
    vec![
        ("styles", json!([])),
        ("tiling", json!(false)),
        ("restore_faces", json!(false)),
        ("eta", json!(1.0)),
        ("s_churn", json!(0.0)),
        ("s_tmin", json!(0.0)),
        ("s_tmax", json!(0.0)),
        ("s_noise", json!(1.0)),
        ("seed_resize_from_h", json!(-1)),
        ("seed_resize_from_w", json!(-1)),
        ("disable_extra_networks", json!(false)),
        ("firstpass_image", Value::Null),
        ("alwayson_scripts", json!({})),
        ("initial_noise_multiplier", json!(1.0)),
        ("latent_mask", Value::Null),
    ]
}

/// Most unknown fields (and most unapplied `override_settings`) named one by one; the rest are
/// counted, so that a body of many small keys does not become many more bytes of warnings.
const MAX_NAMED: usize = 16;

/// `lines` with those past [`MAX_NAMED`] replaced by one line counting them.
fn capped(mut lines: Vec<String>, what: &str) -> Vec<String> {
    if lines.len() > MAX_NAMED {
        let more = lines.len() - MAX_NAMED;
        lines.truncate(MAX_NAMED);
        lines.push(format!("and {more} more {what}"));
    }
    lines
}

/// The warnings for a request `sent` to `endpoint` with the stored `options`.
pub fn warnings(
    endpoint: Endpoint,
    sent: &Map<String, Value>,
    options: &Map<String, Value>,
) -> Vec<String> {
    let known = defaults(endpoint);
    let unknown = sent
        .keys()
        .filter(|k| !known.iter().any(|(f, _)| f == k))
        .map(|k| {
            let k: String = k.chars().take(80).collect();
            format!("{k}: not a field of A1111's API: ignored")
        })
        .collect();
    let mut out = capped(unknown, "fields that are not A1111's: ignored");
    for (field, quiet) in inert_fields() {
        let Some(v) = sent.get(field) else { continue };
        let quiet = neutral(v, &quiet)
            || (field == "seed_resize_from_h" || field == "seed_resize_from_w")
                && v.as_i64().is_some_and(|n| n <= 0)
            || (field == "s_tmax" && v.as_f64().is_some_and(f64::is_infinite));
        if !quiet {
            out.push(format!(
                "{field}: {} is not applied by Sumi: the picture may differ from A1111's",
                shown(v)
            ));
        }
    }
    let a1111 = crate::options::defaults_of_a1111();
    let over = sent.get("override_settings").and_then(Value::as_object);
    let overrides = over
        .into_iter()
        .flatten()
        .filter(|(k, v)| !APPLIED_SETTINGS.contains(&k.as_str()) && options.get(*k) != Some(*v))
        .map(|(k, v)| {
            let k: String = k.chars().take(80).collect();
            format!("override_settings.{k}: {} is not applied by Sumi", shown(v))
        })
        .collect();
    out.extend(capped(overrides, "override_settings not applied by Sumi"));
    for k in PICTURE_SETTINGS {
        if over.is_some_and(|o| o.contains_key(k)) {
            continue;
        }
        if let (Some(v), Some(d)) = (options.get(k), a1111.get(k)) {
            // `upscaler_for_img2img` "None" resizes as no upscaler does
            let none_upscaler = k == "upscaler_for_img2img" && v.as_str() == Some("None");
            if !neutral(v, d) && !none_upscaler {
                out.push(format!(
                    "setting {k}: {} is not applied by Sumi (A1111's default {} is what Sumi \
                     does): the picture may differ from A1111's",
                    shown(v),
                    shown(d)
                ));
            }
        }
    }
    out.extend(tile_warnings(sent, options));
    if let Some(text) = sent.get("infotext").and_then(Value::as_str) {
        let p = sumi_pipeline::infotext::parse_generation_parameters(text);
        out.extend(capped(
            sumi_pipeline::infotext_unapplied::unapplied_warnings(&p),
            "infotext keys not applied",
        ));
    }
    out
}

/// The model upscalers' tile settings (`ESRGAN_tile`, …) stored away from A1111's defaults:
/// Sumi applies them to Extras, while the hires fix and the SD upscale script (whose upscaler
/// A1111 tiles with them) tile with the defaults; named when the request has either.
fn tile_warnings(sent: &Map<String, Value>, options: &Map<String, Value>) -> Vec<String> {
    let hires = sent
        .get("enable_hr")
        .is_some_and(|v| v.as_bool() == Some(true));
    let script = sent
        .get("script_name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty() && n != "None");
    if !(hires || script) {
        return Vec::new();
    }
    let over = sent.get("override_settings").and_then(Value::as_object);
    let mut out = Vec::new();
    for k in sumi_pipeline::upscale::TILE_SETTINGS {
        let (Some(v), Some(d)) = (
            options.get(k),
            sumi_pipeline::upscale::tile_setting_default(k),
        ) else {
            continue;
        };
        if over.is_some_and(|o| o.contains_key(k)) || neutral(v, &Value::from(d)) {
            continue;
        }
        out.push(format!(
            "setting {k}: {} is applied to Extras only: the hires fix and SD upscale tile \
             with A1111's default {d}",
            shown(v)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn inert_fields_unknown_fields_settings_and_infotext_keys_are_named() {
        let opts = crate::options::defaults(false);
        // webuiapi's defaults change nothing
        let quiet = obj(
            json!({"prompt": "x", "styles": [], "tiling": false, "eta": 1.0,
            "s_churn": 0, "s_tmax": 0, "s_noise": 1, "seed_resize_from_h": 0,
            "restore_faces": false, "alwayson_scripts": {}, "refiner_checkpoint": null,
            "override_settings": {"CLIP_stop_at_last_layers": 2, "jpeg_quality": 80}}),
        );
        assert_eq!(
            warnings(Endpoint::Txt2Img, &quiet, &opts),
            Vec::<String>::new()
        );
        let loud = obj(
            json!({"prompt": "x", "styles": ["s"], "tiling": true, "eta": 0.5,
            "no_such_field": 1, "alwayson_scripts": {"ADetailer": {"args": []}},
            "override_settings": {"eta_noise_seed_delta": 31337},
            "infotext": "x\nSteps: 2, Seed: 1, Size: 64x64, Tiling: True"}),
        );
        assert_eq!(
            warnings(Endpoint::Txt2Img, &loud, &opts),
            [
                "no_such_field: not a field of A1111's API: ignored",
                "styles: [\"s\"] is not applied by Sumi: the picture may differ from A1111's",
                "tiling: true is not applied by Sumi: the picture may differ from A1111's",
                "eta: 0.5 is not applied by Sumi: the picture may differ from A1111's",
                "alwayson_scripts: {\"ADetailer\":{\"args\":[]}} is not applied by Sumi: the \
                 picture may differ from A1111's",
                "override_settings.eta_noise_seed_delta: 31337 is not applied by Sumi",
                "the infotext's `Tiling: True` is not applied: the picture may differ",
            ]
        );
        // a stored setting away from A1111's default
        let mut opts2 = opts.clone();
        opts2.insert("eta_noise_seed_delta".into(), json!(31337));
        assert_eq!(
            warnings(Endpoint::Img2Img, &obj(json!({"prompt": "x"})), &opts2),
            [
                "setting eta_noise_seed_delta: 31337 is not applied by Sumi (A1111's default 0 \
              is what Sumi does): the picture may differ from A1111's"
            ]
        );
        // a network A1111 adds to every prompt
        opts2.insert("sd_lora".into(), json!("add_detail"));
        let w = warnings(Endpoint::Txt2Img, &obj(json!({"prompt": "x"})), &opts2);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[1].starts_with("setting sd_lora: \"add_detail\" is not applied"),
            "{w:?}"
        );
        // many unknown keys: 16 named, the rest counted
        let many: Map<String, Value> = (0..1000).map(|i| (format!("k{i}"), json!(0))).collect();
        let w = warnings(Endpoint::Txt2Img, &many, &opts);
        assert_eq!(w.len(), 17);
        assert_eq!(w[16], "and 984 more fields that are not A1111's: ignored");
        // img2img fields are fields of img2img only
        let w = warnings(Endpoint::Txt2Img, &obj(json!({"mask_blur": 4})), &opts);
        assert_eq!(w, ["mask_blur: not a field of A1111's API: ignored"]);
    }

    #[test]
    fn tile_settings_are_named_for_the_hires_fix_and_sd_upscale() {
        let mut opts = crate::options::defaults(false);
        opts.insert("ESRGAN_tile".into(), json!(64));
        opts.insert("DAT_tile_overlap".into(), json!(8));
        let w = warnings(Endpoint::Txt2Img, &obj(json!({"prompt": "x"})), &opts);
        assert_eq!(w, Vec::<String>::new());
        let hires = obj(json!({"prompt": "x", "enable_hr": true}));
        assert_eq!(
            warnings(Endpoint::Txt2Img, &hires, &opts),
            [
                "setting ESRGAN_tile: 64 is applied to Extras only: the hires fix and SD upscale \
              tile with A1111's default 192"
            ]
        );
        let sd_upscale = obj(json!({"prompt": "x", "script_name": "SD upscale",
            "override_settings": {"ESRGAN_tile": 32}}));
        assert_eq!(
            warnings(Endpoint::Img2Img, &sd_upscale, &opts),
            ["override_settings.ESRGAN_tile: 32 is not applied by Sumi"]
        );
        // img2img's upscaler: "None" resizes as none does
        opts.insert("upscaler_for_img2img".into(), json!("None"));
        let plain = obj(json!({"prompt": "x"}));
        assert_eq!(
            warnings(Endpoint::Img2Img, &plain, &opts),
            Vec::<String>::new()
        );
        opts.insert("upscaler_for_img2img".into(), json!("Lanczos"));
        let w = warnings(Endpoint::Img2Img, &plain, &opts);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("setting upscaler_for_img2img: \"Lanczos\" is not applied"));
    }

    /// Sumi's server decodes with the VAE only: A1111's "VAE type for decode: TAESD" (and
    /// encode), stored, overridden or pasted as an infotext, is named.
    #[test]
    fn taesd_decode_and_encode_are_named() {
        let mut opts = crate::options::defaults(false);
        let over = obj(json!({"prompt": "x",
            "override_settings": {"sd_vae_decode_method": "TAESD"}}));
        assert_eq!(
            warnings(Endpoint::Txt2Img, &over, &opts),
            ["override_settings.sd_vae_decode_method: \"TAESD\" is not applied by Sumi"]
        );
        opts.insert("sd_vae_encode_method".into(), json!("TAESD"));
        let pasted = obj(json!({"prompt": "x",
            "infotext": "x\nSteps: 2, Seed: 1, Size: 64x64, VAE Decoder: TAESD, VAE Encoder: Full"}));
        assert_eq!(
            warnings(Endpoint::Img2Img, &pasted, &opts),
            [
                "setting sd_vae_encode_method: \"TAESD\" is not applied by Sumi (A1111's \
                 default \"Full\" is what Sumi does): the picture may differ from A1111's",
                "the infotext's `VAE Decoder: TAESD` is not applied: the picture may differ",
            ]
        );
    }

    #[test]
    fn the_picture_settings_are_a1111_options_and_not_applied_ones() {
        for k in PICTURE_SETTINGS {
            assert!(crate::options::is_a1111_option(k), "{k}");
            assert!(!APPLIED_SETTINGS.contains(&k), "{k}");
        }
    }
}
