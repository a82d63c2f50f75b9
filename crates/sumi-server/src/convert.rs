//! An A1111 request ([`GenerationFields`]) to a pipeline [`Request`]: API defaults applied,
//! sampler names parsed (legacy "DPM++ SDE Karras" included), images decoded, every limit
//! checked before the job is queued.

use sumi_pipeline::image::ResizeMode;
use sumi_pipeline::request::{MAX_BATCH_COUNT, MAX_BATCH_SIZE, MAX_SIDE, MAX_STEPS};
use sumi_pipeline::{
    fixed_seed, parse_sampler_and_scheduler, Img2Img, Inpaint, MaskedContent, PipelineError,
    Request,
};

use crate::error::ApiError;
use crate::images::{decode_base64, decode_image, decode_init_image};
use crate::models::{Endpoint, GenerationFields};
use crate::options::GenOptions;

/// Another checkpoint for one request (`override_settings.sd_model_checkpoint`).
#[derive(Debug, Clone)]
pub struct CheckpointSwitch {
    /// The checkpoint to run the request on.
    pub path: std::path::PathBuf,
    /// Go back to the current checkpoint afterwards (`override_settings_restore_afterwards`).
    pub restore: bool,
}

/// A checked request, ready for the queue.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// What the pipeline runs (seeds already fixed).
    pub request: Request,
    /// Whether the response carries the images (`send_images`).
    pub send_images: bool,
    /// The requested seed before a random one was drawn for -1.
    pub requested_seed: i64,
    /// `denoising_strength` as given (A1111 reports it for txt2img too; default 0.75).
    pub denoising_strength: f64,
    /// Another checkpoint for this request only (set by the handler).
    pub checkpoint: Option<CheckpointSwitch>,
}

/// `value` as a u32 in `lo..=hi`, else a 422 naming `field` and the limit.
fn ranged(field: &str, value: i64, lo: u32, hi: u32, unit: &str) -> Result<u32, ApiError> {
    if value < i64::from(lo) || value > i64::from(hi) {
        return Err(ApiError::invalid(format!(
            "{field}: {value} is outside {lo}..={hi}{unit}"
        )));
    }
    Ok(value as u32)
}

/// Builds the pipeline request for `endpoint` from the client's fields and the settings.
pub fn prepare(
    endpoint: Endpoint,
    f: &GenerationFields,
    opts: &GenOptions,
) -> Result<Prepared, ApiError> {
    if f.enable_hr == Some(true) {
        return Err(ApiError::invalid(
            "enable_hr: the hires fix is not supported by Sumi yet",
        ));
    }
    if let Some(s) = f.script_name.as_deref().filter(|s| !s.trim().is_empty()) {
        return Err(ApiError::not_found(format!(
            "script_name: script '{s}' not found"
        )));
    }
    let sampler_name = f
        .sampler_name
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .or(f.sampler_index.as_deref().filter(|s| !s.trim().is_empty()))
        .unwrap_or("Euler");
    let (sampler, scheduler) = parse_sampler_and_scheduler(sampler_name, f.scheduler.as_deref())
        .map_err(|e| ApiError::not_found(format!("Sampler not found: {e}")))?;
    let side =
        |field: &str, v: Option<i64>| ranged(field, v.unwrap_or(512), 64, MAX_SIDE, " pixels");
    let requested_seed = f.seed.unwrap_or(-1);
    if requested_seed < -1 || f.subseed.is_some_and(|s| s < -1) {
        return Err(ApiError::invalid(
            "seed: seeds are -1 (random) or non-negative",
        ));
    }
    if requested_seed > u32::MAX as i64 * 4 {
        return Err(ApiError::invalid(format!(
            "seed: {requested_seed} is over the limit of {}",
            u32::MAX as i64 * 4
        )));
    }
    let mut request = Request {
        prompt: f.prompt.clone().unwrap_or_default(),
        negative_prompt: f.negative_prompt.clone().unwrap_or_default(),
        seed: fixed_seed(requested_seed) as i64,
        subseed: fixed_seed(f.subseed.unwrap_or(-1)) as i64,
        subseed_strength: f.subseed_strength.unwrap_or(0.0) as f32,
        steps: ranged("steps", f.steps.unwrap_or(50), 1, MAX_STEPS, "")?,
        cfg_scale: f.cfg_scale.unwrap_or(7.0),
        sampler,
        scheduler,
        width: side("width", f.width)?,
        height: side("height", f.height)?,
        rng: opts.rng,
        clip_skip: opts.clip_skip,
        batch_size: ranged(
            "batch_size",
            f.batch_size.unwrap_or(1),
            1,
            MAX_BATCH_SIZE,
            "",
        )?,
        batch_count: ranged("n_iter", f.n_iter.unwrap_or(1), 1, MAX_BATCH_COUNT, "")?,
        exact_steps: opts.exact_steps,
        img2img: None,
        inpainting_mask_weight: opts.inpainting_mask_weight,
    };
    if endpoint == Endpoint::Img2Img {
        request.img2img = Some(img2img(f)?);
    }
    request.validate().map_err(|e| match e {
        PipelineError::Request { field, detail } => {
            ApiError::invalid(format!("{}: {detail}", field.replace('-', "_")))
        }
        other => ApiError::invalid(other.to_string()),
    })?;
    Ok(Prepared {
        request,
        send_images: f.send_images.unwrap_or(true),
        requested_seed,
        denoising_strength: f.denoising_strength.unwrap_or(0.75),
        checkpoint: None,
    })
}

/// The img2img part: init image, resize mode, strength and the optional mask.
fn img2img(f: &GenerationFields) -> Result<Img2Img, ApiError> {
    let first = f
        .init_images
        .as_ref()
        .and_then(|v| v.first())
        .ok_or_else(|| ApiError::bad_request("init_images: Init image not found"))?;
    let init_image = decode_init_image("init_images[0]", &decode_base64("init_images[0]", first)?)?;
    let mode = f.resize_mode.unwrap_or(0);
    let resize_mode = u8::try_from(mode)
        .ok()
        .and_then(ResizeMode::from_index)
        .ok_or_else(|| ApiError::invalid(format!("resize_mode: {mode} is outside 0..=3")))?;
    let inpaint = match f.mask.as_deref().filter(|m| !m.is_empty()) {
        None => None,
        Some(m) => Some(inpaint(
            f,
            decode_image("mask", &decode_base64("mask", m)?)?,
        )?),
    };
    Ok(Img2Img {
        init_image,
        resize_mode,
        denoising_strength: f.denoising_strength.unwrap_or(0.75),
        inpaint,
    })
}

/// A1111's mask settings (`mask_blur` sets both blurs when given).
fn inpaint(f: &GenerationFields, mask: image::DynamicImage) -> Result<Inpaint, ApiError> {
    let blur = |field: &str, v: Option<i64>| ranged(field, v.unwrap_or(4), 0, 256, " pixels");
    let (bx, by) = match f.mask_blur {
        Some(b) => (blur("mask_blur", Some(b))?, blur("mask_blur", Some(b))?),
        None => (
            blur("mask_blur_x", f.mask_blur_x)?,
            blur("mask_blur_y", f.mask_blur_y)?,
        ),
    };
    let fill_index = f.inpainting_fill.unwrap_or(0);
    let fill = MaskedContent::from_index(fill_index).ok_or_else(|| {
        ApiError::invalid(format!("inpainting_fill: {fill_index} is outside 0..=3"))
    })?;
    Ok(Inpaint {
        mask,
        blur_x: bx,
        blur_y: by,
        invert: f.inpainting_mask_invert.unwrap_or(0) != 0,
        fill,
        full_res: f.inpaint_full_res.unwrap_or(true),
        full_res_padding: ranged(
            "inpaint_full_res_padding",
            f.inpaint_full_res_padding.unwrap_or(0),
            0,
            MAX_SIDE,
            " pixels",
        )?,
        round: f.mask_round.unwrap_or(true),
    })
}
