//! A request's other checkpoints, as A1111's API takes them: `refiner_checkpoint` with
//! `refiner_switch_at`, and the hires fix's `hr_checkpoint_name`, each named as
//! `/sdapi/v1/sd-models` names checkpoints (title, name, file name or stem, hash; A1111's
//! `get_closet_checkpoint_match`); an unknown name is a 404 listing the known titles. The
//! settings `hires_fix_refiner_pass` and `refiner_switch_by_sample_steps` (stored, or in
//! `override_settings`) apply too. The pipeline loads the checkpoints for the job and drops
//! them after it.

use sumi_pipeline::{HiresRefinerPass, Refiner, Request};

use crate::error::ApiError;
use crate::models::GenerationFields;
use crate::AppState;

/// `v` unless empty or A1111's "none" values.
fn named<'a>(v: &'a Option<String>, none: &[&str]) -> Option<&'a str> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty() && !none.contains(s))
}

/// The path of the checkpoint `wanted` names (`field` for the error).
fn checkpoint(s: &AppState, field: &str, wanted: &str) -> Result<std::path::PathBuf, ApiError> {
    let current = s.current_model();
    let list = s.checkpoints.list(&[&s.config.model, &current]);
    match list.iter().find(|e| e.matches(wanted)) {
        Some(e) => Ok(e.path.clone()),
        None => {
            let titles: Vec<String> = list.iter().map(|e| e.title()).collect();
            Err(ApiError::not_found(format!(
                "{field}: Could not find checkpoint with name {wanted} (known: {})",
                titles.join(", ")
            )))
        }
    }
}

/// Fills `request.stages` from the fields and settings; `warnings` gets what is not applied
/// (a hires checkpoint without the hires fix, as A1111 ignores it).
pub fn resolve(
    s: &AppState,
    f: &GenerationFields,
    request: &mut Request,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    if let Some(name) = named(&f.refiner_checkpoint, &["None", "none"]) {
        if let Some(at) = f
            .refiner_switch_at
            .filter(|a| !(a.is_finite() && *a > 0.0 && *a <= 1.0))
        {
            return Err(ApiError::invalid(format!(
                "refiner_switch_at: {at} is outside (0, 1] (the fraction of sampling done on the \
                 model)"
            )));
        }
        request.stages.refiner = Some(Refiner {
            checkpoint: checkpoint(s, "refiner_checkpoint", name)?,
            switch_at: f.refiner_switch_at,
        });
        if f.refiner_switch_at.is_none() {
            warnings.push(
                "refiner_switch_at: not given: the refiner takes over at the first step, as \
                 A1111's API does (its UI's default is 0.8)"
                    .into(),
            );
        }
    } else if let Some(at) = f.refiner_switch_at {
        warnings.push(format!(
            "refiner_switch_at: {at} is not applied: no refiner_checkpoint"
        ));
    }
    if let Some(name) = named(&f.hr_checkpoint_name, &["Use same checkpoint"]) {
        if request.hires.is_some() {
            request.stages.hires_checkpoint = Some(checkpoint(s, "hr_checkpoint_name", name)?);
        } else {
            warnings.push(format!(
                "hr_checkpoint_name: '{name}' is not applied: the hires fix is off"
            ));
        }
    }
    let opts = s.options_lock().clone();
    let over = f.override_settings.as_ref();
    if let Some(v) = crate::options::setting("hires_fix_refiner_pass", over, &opts) {
        request.stages.hires_refiner_pass = v
            .as_str()
            .and_then(HiresRefinerPass::parse)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "setting hires_fix_refiner_pass: bad value {v} (first pass, second pass or \
                     both passes)"
                ))
            })?;
    }
    if let Some(v) = crate::options::setting("refiner_switch_by_sample_steps", over, &opts) {
        request.stages.refiner_by_sample_steps = v.as_bool().ok_or_else(|| {
            ApiError::invalid(format!(
                "setting refiner_switch_by_sample_steps: bad value {v}"
            ))
        })?;
    }
    request.validate().map_err(|e| match e {
        sumi_pipeline::PipelineError::Request { field, detail } => {
            ApiError::invalid(format!("{}: {detail}", field.replace('-', "_")))
        }
        other => ApiError::invalid(other.to_string()),
    })
}
