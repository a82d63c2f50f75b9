//! A request's `infotext` field (A1111 ≥ 1.9's `apply_infotext`): the generation parameters of
//! an A1111 infotext fill the request's fields the client did not set; `Clip skip` and `RNG`
//! become `override_settings` unless already there. The checkpoint named in the infotext is not
//! switched to.

use serde_json::{json, Map, Value};
use sumi_pipeline::infotext::parse_generation_parameters;

use crate::models::Endpoint;

/// Infotext keys and the request fields they fill.
const FIELDS: [(&str, &str); 13] = [
    ("Steps", "steps"),
    ("Sampler", "sampler_name"),
    ("Schedule type", "scheduler"),
    ("CFG scale", "cfg_scale"),
    ("Seed", "seed"),
    ("Size-1", "width"),
    ("Size-2", "height"),
    ("Variation seed", "subseed"),
    ("Variation seed strength", "subseed_strength"),
    ("Denoising strength", "denoising_strength"),
    ("Image CFG scale", "image_cfg_scale"),
    ("Refiner", "refiner_checkpoint"),
    ("Refiner switch at", "refiner_switch_at"),
];

/// Infotext keys of the hires fix and the txt2img fields they fill (A1111's paste fields).
const HIRES_FIELDS: [(&str, &str); 10] = [
    ("Hires upscale", "hr_scale"),
    ("Hires upscaler", "hr_upscaler"),
    ("Hires steps", "hr_second_pass_steps"),
    ("Hires resize-1", "hr_resize_x"),
    ("Hires resize-2", "hr_resize_y"),
    ("Hires sampler", "hr_sampler_name"),
    ("Hires schedule type", "hr_scheduler"),
    ("Hires prompt", "hr_prompt"),
    ("Hires negative prompt", "hr_negative_prompt"),
    ("Hires checkpoint", "hr_checkpoint_name"),
];

/// Infotext keys that are settings.
const SETTINGS: [(&str, &str); 9] = [
    ("Clip skip", "CLIP_stop_at_last_layers"),
    ("RNG", "randn_source"),
    ("NGMS", "s_min_uncond"),
    ("NGMS all steps", "s_min_uncond_all"),
    ("Skip Early CFG", "skip_early_cond"),
    ("Token merging ratio", "token_merging_ratio"),
    ("Token merging ratio hr", "token_merging_ratio_hr"),
    ("Hires refiner", "hires_fix_refiner_pass"),
    (
        "Refiner switch by sampling steps",
        "refiner_switch_by_sample_steps",
    ),
];

/// Fills `sent` from its `infotext` (a no-op without one).
pub fn apply(endpoint: Endpoint, sent: &mut Map<String, Value>) {
    let Some(text) = sent
        .get("infotext")
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())
        .map(str::to_string)
    else {
        return;
    };
    let p = parse_generation_parameters(&text);
    let mut fill = |field: &str, value: Value| {
        if !sent.contains_key(field) {
            sent.insert(field.to_string(), value);
        }
    };
    // with an old infotext's `Hypernet` appended as a tag, as A1111's parser does
    fill("prompt", json!(p.with_a1111_defaults().prompt));
    fill("negative_prompt", json!(p.negative_prompt));
    // A1111's paste rule for txt2img: the hires fix is on when the infotext has a denoising
    // strength and any hires size or upscaler
    let hires = endpoint == Endpoint::Txt2Img
        && p.get("Denoising strength").is_some()
        && ["Hires upscale", "Hires upscaler", "Hires resize-1"]
            .iter()
            .any(|k| p.get(k).is_some());
    for (key, field) in FIELDS {
        if field == "denoising_strength" && endpoint == Endpoint::Txt2Img && !hires {
            continue;
        }
        if let Some(v) = p.get(key) {
            fill(field, json!(v.trim()));
        }
    }
    if hires {
        fill("enable_hr", json!(true));
        for (key, field) in HIRES_FIELDS {
            if let Some(v) = p.get(key) {
                // prompts as written, numbers and names trimmed
                let prompt = field.ends_with("prompt");
                fill(field, json!(if prompt { v } else { v.trim() }));
            }
        }
    }
    let mut over = match sent.get("override_settings") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    for (key, setting) in SETTINGS {
        if let Some(v) = p.get(key) {
            let v = v.trim();
            // as A1111's `Options.cast_value`: numbers as numbers, True/False as booleans
            let value = match (v.parse::<i64>(), v.parse::<f64>(), v) {
                (Ok(n), _, _) => json!(n),
                (_, Ok(f), _) if f.is_finite() => json!(f),
                (_, _, "True") => json!(true),
                (_, _, "False") => json!(false),
                _ => json!(v),
            };
            over.entry(setting.to_string()).or_insert(value);
        }
    }
    if !over.is_empty() {
        sent.insert("override_settings".into(), Value::Object(over));
    }
}
