//! An A1111 request ([`GenerationFields`]) to a pipeline [`Request`]: API defaults applied,
//! sampler names parsed (legacy "DPM++ SDE Karras" included), every limit checked before the
//! job is queued. Images are checked by their headers only (format, declared size, the
//! request's pixel budget [`MAX_REQUEST_PIXELS`]); their pixels are decoded by the worker
//! ([`Prepared::decode_uploads`]), once the job has been admitted, one job at a time.

use sumi_pipeline::image::ResizeMode;
use sumi_pipeline::request::{MAX_BATCH_COUNT, MAX_BATCH_SIZE, MAX_SIDE, MAX_STEPS};
use sumi_pipeline::{
    fixed_seed, parse_sampler_and_scheduler, Hires, Img2Img, Inpaint, MaskedContent, PipelineError,
    Request,
};

use crate::error::ApiError;
use crate::images::{decode_base64, Upload, MAX_REQUEST_PIXELS};
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
    /// Whether the images are kept in the server's output folder (`save_images`).
    pub save_images: bool,
    /// The requested seed before a random one was drawn for -1.
    pub requested_seed: i64,
    /// `denoising_strength` as given (A1111 reports it for txt2img too; default 0.75).
    pub denoising_strength: f64,
    /// Another checkpoint for this request only (set by the handler).
    pub checkpoint: Option<CheckpointSwitch>,
    /// An img2img request's image files, not decoded yet: until [`Self::decode_uploads`], the
    /// request's init image is empty and its mask a 1×1 stand-in.
    pub uploads: Option<Uploads>,
    /// What the request asks for that Sumi does not apply (set by the handler), first in the
    /// job's `info` warnings.
    pub warnings: Vec<String>,
}

/// An img2img request's image files, checked by their headers.
#[derive(Debug, Clone)]
pub struct Uploads {
    /// `init_images[0]`.
    pub init: Upload,
    /// `mask`, when inpainting.
    pub mask: Option<Upload>,
}

impl Prepared {
    /// Decodes the uploaded images into the request (the worker does, at the job's turn) and
    /// checks it again with them; 400 naming the field when an image's pixels cannot be
    /// decoded. Nothing to do for txt2img or once done.
    pub fn decode_uploads(&mut self) -> Result<(), ApiError> {
        let Some(uploads) = self.uploads.take() else {
            return Ok(());
        };
        let i = self
            .request
            .img2img
            .as_mut()
            .ok_or_else(|| ApiError::internal("images sent without an img2img request"))?;
        i.init_image = uploads.init.decode_init_image()?;
        match (uploads.mask, i.inpaint.as_mut()) {
            (Some(m), Some(inpaint)) => inpaint.mask = m.decode_image()?,
            (None, None) => {}
            _ => return Err(ApiError::internal("a mask without its inpaint settings")),
        }
        validate(&self.request)
    }
}

/// The pipeline's own checks of a request, as 422 naming the field.
fn validate(request: &Request) -> Result<(), ApiError> {
    request.validate().map_err(|e| match e {
        PipelineError::Request { field, detail } => {
            ApiError::invalid(format!("{}: {detail}", field.replace('-', "_")))
        }
        other => ApiError::invalid(other.to_string()),
    })
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
    let sd_upscale = crate::scripts::selectable_script(endpoint, f)?;
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
        lora_hashes: None,
        model_hash: None,
        hires: None,
        sd_upscale,
        // A1111's `fill_fields_from_opts`: the request's own `s_min_uncond`, else the setting
        uncond_skip: sumi_pipeline::UncondSkip {
            s_min_uncond: f.s_min_uncond.unwrap_or(opts.uncond_skip.s_min_uncond),
            ..opts.uncond_skip
        },
        token_merging_ratio: match endpoint {
            Endpoint::Img2Img => opts.token_merging.1,
            _ => opts.token_merging.0,
        },
        token_merging_ratio_hr: opts.token_merging.2,
        // the refiner and the hires checkpoint: named checkpoints, [`crate::stages`]
        stages: Default::default(),
    };
    if endpoint == Endpoint::Txt2Img && f.enable_hr == Some(true) {
        hires(f, &mut request)?;
    }
    let mut uploads = None;
    if endpoint == Endpoint::Img2Img {
        let (i, u) = img2img(f)?;
        request.img2img = Some(i);
        uploads = Some(u);
    }
    validate(&request)?;
    Ok(Prepared {
        request,
        send_images: f.send_images.unwrap_or(true),
        save_images: f.save_images.unwrap_or(false),
        requested_seed,
        denoising_strength: f.denoising_strength.unwrap_or(0.75),
        checkpoint: None,
        uploads,
        warnings: Vec::new(),
    })
}

/// A1111's hires fix fields: `firstphase_width/height` (the old API's first pass size), the
/// scale or resize, steps, strength, upscaler, sampler, schedule and prompts (a checkpoint of
/// its own for the second pass: [`crate::stages`]).
fn hires(f: &GenerationFields, request: &mut Request) -> Result<(), ApiError> {
    let given = |s: &Option<String>, same: &str| {
        s.clone()
            .filter(|v| !v.trim().is_empty() && v.as_str() != same)
    };
    let (fw, fh) = (
        f.firstphase_width.unwrap_or(0),
        f.firstphase_height.unwrap_or(0),
    );
    if fw != 0 || fh != 0 {
        request.width = ranged("firstphase_width", fw, 64, MAX_SIDE, " pixels")?;
        request.height = ranged("firstphase_height", fh, 64, MAX_SIDE, " pixels")?;
    }
    let sampler_name = given(&f.hr_sampler_name, "Use same sampler");
    let scheduler_name = given(&f.hr_scheduler, "Use same scheduler");
    let (sampler, scheduler) = match (&sampler_name, &scheduler_name) {
        (None, None) => (None, None),
        (Some(s), sch) => {
            let (k, sch2) = parse_sampler_and_scheduler(s, sch.as_deref())
                .map_err(|e| ApiError::not_found(format!("hr_sampler_name: {e}")))?;
            let explicit = sch.is_some() || sch2 != sumi_pipeline::Scheduler::Automatic;
            (Some(k), explicit.then_some(sch2))
        }
        (None, Some(sch)) => {
            let (_, k) = parse_sampler_and_scheduler(request.sampler.label(), Some(sch))
                .map_err(|e| ApiError::not_found(format!("hr_scheduler: {e}")))?;
            (None, Some(k))
        }
    };
    let size = |field: &str, v: Option<i64>| ranged(field, v.unwrap_or(0), 0, MAX_SIDE, " pixels");
    request.hires = Some(Hires {
        scale: f.hr_scale.unwrap_or(2.0),
        resize_x: size("hr_resize_x", f.hr_resize_x)?,
        resize_y: size("hr_resize_y", f.hr_resize_y)?,
        second_pass_steps: ranged(
            "hr_second_pass_steps",
            f.hr_second_pass_steps.unwrap_or(0),
            0,
            MAX_STEPS,
            "",
        )?,
        denoising_strength: f.denoising_strength.unwrap_or(0.75),
        upscaler: f.hr_upscaler.clone().filter(|u| !u.is_empty()),
        sampler,
        scheduler,
        prompt: f.hr_prompt.clone().unwrap_or_default(),
        negative_prompt: f.hr_negative_prompt.clone().unwrap_or_default(),
    });
    Ok(())
}

/// The img2img part: resize mode, strength and the optional mask settings, with the image
/// files checked by their headers (the images themselves stand-ins until decoded).
fn img2img(f: &GenerationFields) -> Result<(Img2Img, Uploads), ApiError> {
    let first = f
        .init_images
        .as_ref()
        .and_then(|v| v.first())
        .ok_or_else(|| ApiError::bad_request("init_images: Init image not found"))?;
    let field = "init_images[0]";
    let init = Upload::inspect(field, decode_base64(field, first)?)?;
    let mode = f.resize_mode.unwrap_or(0);
    let resize_mode = u8::try_from(mode)
        .ok()
        .and_then(ResizeMode::from_index)
        .ok_or_else(|| ApiError::invalid(format!("resize_mode: {mode} is outside 0..=3")))?;
    let mask = match f.mask.as_deref().filter(|m| !m.is_empty()) {
        None => None,
        Some(m) => Some(Upload::inspect("mask", decode_base64("mask", m)?)?),
    };
    if let Some(m) = &mask {
        let total = init.pixels() + m.pixels();
        if total > MAX_REQUEST_PIXELS {
            let ((iw, ih), (mw, mh)) = (init.dimensions(), m.dimensions());
            return Err(ApiError::invalid(format!(
                "mask: {mw}x{mh} with the {iw}x{ih} init image makes {total} pixels, over the \
                 limit of {MAX_REQUEST_PIXELS} pixels a request"
            )));
        }
    }
    let inpaint = match &mask {
        None => None,
        // the mask is decoded with the init image, once the job is admitted
        Some(_) => Some(inpaint(f, image::DynamicImage::new_luma8(1, 1))?),
    };
    let i = Img2Img {
        init_image: image::RgbImage::new(0, 0),
        resize_mode,
        denoising_strength: f.denoising_strength.unwrap_or(0.75),
        inpaint,
    };
    Ok((i, Uploads { init, mask }))
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
