//! A request's `infotext` field (A1111 ≥ 1.9's `apply_infotext`): the generation parameters of
//! an A1111 infotext fill the request's fields the client did not set; `Clip skip` and `RNG`
//! become `override_settings` unless already there. The checkpoint named in the infotext is not
//! switched to.

use serde_json::{json, Map, Value};
use sumi_pipeline::infotext::parse_generation_parameters;

use crate::models::Endpoint;

/// Infotext keys and the request fields they fill.
const FIELDS: [(&str, &str); 11] = [
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
];

/// Infotext keys that are settings.
const SETTINGS: [(&str, &str); 2] = [
    ("Clip skip", "CLIP_stop_at_last_layers"),
    ("RNG", "randn_source"),
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
    fill("prompt", json!(p.prompt));
    fill("negative_prompt", json!(p.negative_prompt));
    for (key, field) in FIELDS {
        if field == "denoising_strength" && endpoint == Endpoint::Txt2Img {
            continue;
        }
        if let Some(v) = p.get(key) {
            fill(field, json!(v.trim()));
        }
    }
    let mut over = match sent.get("override_settings") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    for (key, setting) in SETTINGS {
        if let Some(v) = p.get(key) {
            let v = v.trim();
            let value = v.parse::<i64>().map_or_else(|_| json!(v), |n| json!(n));
            over.entry(setting.to_string()).or_insert(value);
        }
    }
    if !over.is_empty() {
        sent.insert("override_settings".into(), Value::Object(over));
    }
}
