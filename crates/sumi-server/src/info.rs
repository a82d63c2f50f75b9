//! The `info` of a txt2img/img2img response: A1111's `Processed.js()` object, as a JSON string.

use serde_json::{json, Value};

use crate::convert::Prepared;
use crate::queue::GenOutput;

/// A1111's `Processed.js()` for a finished (or interrupted) job.
pub fn processed_js(p: &Prepared, out: &GenOutput) -> String {
    let req = &p.request;
    let n = (req.batch_size * req.batch_count) as u64;
    let seed = req.seed as u64;
    let subseed = req.subseed as u64;
    let all_seeds: Vec<u64> = (0..n)
        .map(|i| seed + if req.subseed_strength == 0.0 { i } else { 0 })
        .collect();
    let all_subseeds: Vec<u64> = (0..n).map(|i| subseed + i).collect();
    let all_prompts = vec![req.prompt.clone(); n as usize];
    let all_negative = vec![req.negative_prompt.clone(); n as usize];
    let denoising = req
        .img2img
        .as_ref()
        .map(|i| i.denoising_strength)
        .or(req.hires.as_ref().map(|h| h.denoising_strength))
        .unwrap_or(0.75);
    let obj = json!({
        "prompt": req.prompt,
        "all_prompts": all_prompts,
        "negative_prompt": req.negative_prompt,
        "all_negative_prompts": all_negative,
        "seed": seed,
        "all_seeds": all_seeds,
        "subseed": subseed,
        "all_subseeds": all_subseeds,
        "subseed_strength": req.subseed_strength,
        "width": req.width,
        "height": req.height,
        "sampler_name": req.sampler.label(),
        "cfg_scale": req.cfg_scale,
        "steps": req.steps,
        "batch_size": req.batch_size,
        "restore_faces": false,
        "face_restoration_model": Value::Null,
        "sd_model_name": out.model_name,
        "sd_model_hash": out.model_hash,
        "sd_vae_name": out.vae_name,
        "sd_vae_hash": out.vae_hash,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": denoising,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": out.infotexts,
        "styles": [],
        "job_timestamp": out.job_timestamp,
        "clip_skip": req.clip_skip,
        "is_using_inpainting_conditioning": false,
        "version": format!("sumi-{}", env!("CARGO_PKG_VERSION")),
        // Sumi's: what the request asked for and was not applied
        "warnings": out.warnings,
    });
    obj.to_string()
}
