//! A1111 v1.10.1's request models for `/sdapi/v1/txt2img` and `/sdapi/v1/img2img`
//! (`StableDiffusionTxt2ImgProcessingAPI`, `StableDiffusionImg2ImgProcessingAPI`): every field
//! with its **API** default (steps 50, sampler "Euler" via `sampler_index`, CFG 7, …), `null`
//! accepted anywhere, fields Sumi does not use accepted and ignored, unknown fields ignored.
//!
//! [`GenerationFields`] holds the fields Sumi reads; [`echo`] builds the `parameters` object of
//! the response (the model's fields with their defaults, overlaid with what the client sent).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::lax;

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/sdapi/v1/txt2img`.
    Txt2Img,
    /// `/sdapi/v1/img2img`.
    Img2Img,
}

/// The fields of a txt2img or img2img request that Sumi reads (`None` = not given or `null`).
#[derive(Debug, Default, Deserialize)]
#[allow(missing_docs)]
pub struct GenerationFields {
    #[serde(default, deserialize_with = "lax::string")]
    pub prompt: Option<String>,
    #[serde(default, deserialize_with = "lax::string")]
    pub negative_prompt: Option<String>,
    #[serde(default, deserialize_with = "lax::strings")]
    pub styles: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lax::int")]
    pub seed: Option<i64>,
    #[serde(default, deserialize_with = "lax::int")]
    pub subseed: Option<i64>,
    #[serde(default, deserialize_with = "lax::float")]
    pub subseed_strength: Option<f64>,
    #[serde(default, deserialize_with = "lax::string")]
    pub sampler_name: Option<String>,
    #[serde(default, deserialize_with = "lax::string")]
    pub sampler_index: Option<String>,
    #[serde(default, deserialize_with = "lax::string")]
    pub scheduler: Option<String>,
    #[serde(default, deserialize_with = "lax::int")]
    pub batch_size: Option<i64>,
    #[serde(default, deserialize_with = "lax::int")]
    pub n_iter: Option<i64>,
    #[serde(default, deserialize_with = "lax::int")]
    pub steps: Option<i64>,
    #[serde(default, deserialize_with = "lax::float")]
    pub cfg_scale: Option<f64>,
    #[serde(default, deserialize_with = "lax::int")]
    pub width: Option<i64>,
    #[serde(default, deserialize_with = "lax::int")]
    pub height: Option<i64>,
    #[serde(default, deserialize_with = "lax::float")]
    pub denoising_strength: Option<f64>,
    #[serde(default, deserialize_with = "lax::float")]
    pub s_min_uncond: Option<f64>,
    #[serde(default)]
    pub override_settings: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "lax::boolean")]
    pub override_settings_restore_afterwards: Option<bool>,
    #[serde(default, deserialize_with = "lax::boolean")]
    pub send_images: Option<bool>,
    #[serde(default, deserialize_with = "lax::boolean")]
    pub save_images: Option<bool>,
    #[serde(default, deserialize_with = "lax::boolean")]
    pub enable_hr: Option<bool>,
    #[serde(default, deserialize_with = "lax::float")]
    pub hr_scale: Option<f64>,
    #[serde(default, deserialize_with = "lax::string")]
    pub hr_upscaler: Option<String>,
    #[serde(default, deserialize_with = "lax::int")]
    pub hr_second_pass_steps: Option<i64>,
    #[serde(default, deserialize_with = "lax::int")]
    pub hr_resize_x: Option<i64>,
    #[serde(default, deserialize_with = "lax::int")]
    pub hr_resize_y: Option<i64>,
    #[serde(default, deserialize_with = "lax::string")]
    pub hr_checkpoint_name: Option<String>,
    #[serde(default, deserialize_with = "lax::string")]
    pub refiner_checkpoint: Option<String>,
    #[serde(default, deserialize_with = "lax::float")]
    pub refiner_switch_at: Option<f64>,
    #[serde(default, deserialize_with = "lax::string")]
    pub hr_sampler_name: Option<String>,
    #[serde(default, deserialize_with = "lax::string")]
    pub hr_scheduler: Option<String>,
    #[serde(default, deserialize_with = "lax::string")]
    pub hr_prompt: Option<String>,
    #[serde(default, deserialize_with = "lax::string")]
    pub hr_negative_prompt: Option<String>,
    #[serde(default, deserialize_with = "lax::int")]
    pub firstphase_width: Option<i64>,
    #[serde(default, deserialize_with = "lax::int")]
    pub firstphase_height: Option<i64>,
    #[serde(default, deserialize_with = "lax::string")]
    pub script_name: Option<String>,
    #[serde(default)]
    pub script_args: Option<Vec<Value>>,
    // img2img
    #[serde(default, deserialize_with = "lax::strings")]
    pub init_images: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lax::int")]
    pub resize_mode: Option<i64>,
    #[serde(default, deserialize_with = "lax::string")]
    pub mask: Option<String>,
    #[serde(default, deserialize_with = "lax::int")]
    pub mask_blur: Option<i64>,
    #[serde(default, deserialize_with = "lax::int")]
    pub mask_blur_x: Option<i64>,
    #[serde(default, deserialize_with = "lax::int")]
    pub mask_blur_y: Option<i64>,
    #[serde(default, deserialize_with = "lax::boolean")]
    pub mask_round: Option<bool>,
    #[serde(default, deserialize_with = "lax::int")]
    pub inpainting_fill: Option<i64>,
    #[serde(default, deserialize_with = "lax::boolean")]
    pub inpaint_full_res: Option<bool>,
    #[serde(default, deserialize_with = "lax::int")]
    pub inpaint_full_res_padding: Option<i64>,
    #[serde(default, deserialize_with = "lax::int")]
    pub inpainting_mask_invert: Option<i64>,
    #[serde(default, deserialize_with = "lax::boolean")]
    pub include_init_images: Option<bool>,
}

/// Fields of A1111's `StableDiffusionProcessing` that both models have, with their defaults.
fn common_defaults() -> Vec<(&'static str, Value)> {
    vec![
        ("prompt", json!("")),
        ("negative_prompt", json!("")),
        ("styles", Value::Null),
        ("seed", json!(-1)),
        ("subseed", json!(-1)),
        ("subseed_strength", json!(0)),
        ("seed_resize_from_h", json!(-1)),
        ("seed_resize_from_w", json!(-1)),
        ("sampler_name", Value::Null),
        ("scheduler", Value::Null),
        ("batch_size", json!(1)),
        ("n_iter", json!(1)),
        ("steps", json!(50)),
        ("cfg_scale", json!(7.0)),
        ("width", json!(512)),
        ("height", json!(512)),
        ("restore_faces", Value::Null),
        ("tiling", Value::Null),
        ("do_not_save_samples", json!(false)),
        ("do_not_save_grid", json!(false)),
        ("eta", Value::Null),
        ("denoising_strength", json!(0.75)),
        ("s_min_uncond", Value::Null),
        ("s_churn", Value::Null),
        ("s_tmax", Value::Null),
        ("s_tmin", Value::Null),
        ("s_noise", Value::Null),
        ("override_settings", Value::Null),
        ("override_settings_restore_afterwards", json!(true)),
        ("refiner_checkpoint", Value::Null),
        ("refiner_switch_at", Value::Null),
        ("disable_extra_networks", json!(false)),
        ("firstpass_image", Value::Null),
        ("comments", Value::Null),
    ]
}

/// The API-only fields both models add.
fn api_defaults() -> Vec<(&'static str, Value)> {
    vec![
        ("sampler_index", json!("Euler")),
        ("script_name", Value::Null),
        ("script_args", json!([])),
        ("send_images", json!(true)),
        ("save_images", json!(false)),
        ("alwayson_scripts", json!({})),
        ("force_task_id", Value::Null),
        ("infotext", Value::Null),
    ]
}

/// Every field of the endpoint's model with its API default, in A1111's order.
pub fn defaults(endpoint: Endpoint) -> Vec<(&'static str, Value)> {
    let mut out = common_defaults();
    match endpoint {
        Endpoint::Txt2Img => out.extend([
            ("enable_hr", json!(false)),
            ("firstphase_width", json!(0)),
            ("firstphase_height", json!(0)),
            ("hr_scale", json!(2.0)),
            ("hr_upscaler", Value::Null),
            ("hr_second_pass_steps", json!(0)),
            ("hr_resize_x", json!(0)),
            ("hr_resize_y", json!(0)),
            ("hr_checkpoint_name", Value::Null),
            ("hr_sampler_name", Value::Null),
            ("hr_scheduler", Value::Null),
            ("hr_prompt", json!("")),
            ("hr_negative_prompt", json!("")),
        ]),
        Endpoint::Img2Img => out.extend([
            ("init_images", Value::Null),
            ("resize_mode", json!(0)),
            ("image_cfg_scale", Value::Null),
            ("mask", Value::Null),
            ("mask_blur_x", json!(4)),
            ("mask_blur_y", json!(4)),
            ("mask_blur", Value::Null),
            ("mask_round", json!(true)),
            ("inpainting_fill", json!(0)),
            ("inpaint_full_res", json!(true)),
            ("inpaint_full_res_padding", json!(0)),
            ("inpainting_mask_invert", json!(0)),
            ("initial_noise_multiplier", Value::Null),
            ("latent_mask", Value::Null),
        ]),
    }
    out.extend(api_defaults());
    if endpoint == Endpoint::Img2Img {
        // A1111 adds it to img2img after `sampler_index`; `vars(request)` echoes it
        out.insert(out.len() - 7, ("include_init_images", json!(false)));
    }
    out
}

/// The response's `parameters`: every field of the model, as the client sent it or else its
/// default (A1111's `vars(request)`); img2img's images are not echoed back (`init_images` and
/// `mask` are `null`, as A1111 does unless `include_init_images`).
pub fn echo(endpoint: Endpoint, sent: &Map<String, Value>) -> Map<String, Value> {
    let include_images = sent
        .get("include_init_images")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    defaults(endpoint)
        .into_iter()
        .map(|(k, d)| {
            let v = match (k, sent.get(k)) {
                ("init_images" | "mask", _) if !include_images => Value::Null,
                (_, Some(v)) => v.clone(),
                (_, None) => d,
            };
            (k.to_string(), v)
        })
        .collect()
}
