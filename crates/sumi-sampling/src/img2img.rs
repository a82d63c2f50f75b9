//! A1111's img2img strength: which part of the schedule runs
//! (`sd_samplers_common.setup_img2img_steps`, `KDiffusionSampler.sample_img2img`).
//!
//! Default: the schedule is built for `steps`, `t_enc = int(min(strength, 0.999) · steps)`
//! and sampling runs on `sigmas[steps − t_enc − 1 ..]` — the last `t_enc + 2`
//! sigmas including the final 0, i.e. `t_enc + 1` steps. "Do exact steps"
//! (`img2img_fix_steps`): the schedule is built for
//! `int(steps / min(strength, 0.999))` and `t_enc = steps − 1`, so exactly
//! `steps` steps run. The starting latent is `init + noise · sigmas[0]` of the slice.

/// `(schedule steps, t_enc)` for a request of `steps` at `strength`
/// (`setup_img2img_steps`). With `exact_steps` and strength 0, A1111 builds a
/// 0-step schedule; here that is reported as `(0, steps − 1)` too.
pub fn img2img_steps(steps: usize, strength: f64, exact_steps: bool) -> (usize, usize) {
    let s = strength.min(0.999);
    if exact_steps {
        let total = if strength > 0.0 {
            (steps as f64 / s) as usize
        } else {
            0
        };
        (total, steps.saturating_sub(1))
    } else {
        (steps, (s * steps as f64) as usize)
    }
}

/// The slice of a full schedule (`steps` steps, `steps + 1` sigmas) that img2img
/// runs: `sigmas[steps − t_enc − 1 ..]`.
pub fn img2img_sigmas(sigmas: &[f64], steps: usize, strength: f64) -> &[f64] {
    let (_, t_enc) = img2img_steps(steps, strength, false);
    slice_for_t_enc(sigmas, steps, t_enc)
}

/// `sigmas[steps − t_enc − 1 ..]`, clamped to the schedule.
pub fn slice_for_t_enc(sigmas: &[f64], steps: usize, t_enc: usize) -> &[f64] {
    let start = steps
        .saturating_sub(t_enc + 1)
        .min(sigmas.len().saturating_sub(2));
    &sigmas[start..]
}
