//! One entry that runs every A1111 sampler: a [`Plan`] is built from a request's sampler,
//! scheduler, steps and img2img strength, and knows what A1111 does with them — the schedule
//! (sigmas for k-diffusion samplers, DDIM timesteps for the timestep samplers, a sigma range
//! for DPM fast/adaptive), where img2img starts on it (`t_enc`), how the start latent is formed,
//! the minimum step count, and which noise the sampler draws (the image RNG or a Brownian tree).
//!
//! ```text
//! Plan::new(request, model schedule)     validate, build the schedule and its img2img part
//! plan.start(noise, init)                txt2img: noise · σ₀ (or the noise itself, VP scale);
//!                                        img2img: init + noise · σ_start (VP: √ᾱ·init + √(1−ᾱ)·noise)
//! plan.run(denoiser, x, noise, on_step)  the sampler, with its own noise source
//! ```

use candle_core::Tensor;

use crate::brownian::BrownianTreeNoiseSampler;
use crate::denoiser::{Denoiser, DiscreteSchedule};
use crate::error::{Result, SamplingError};
use crate::img2img::{img2img_steps, slice_for_t_enc};
use crate::names::{effective_scheduler, sampler_sigmas, SamplerKind};
use crate::noise::{NoiseSampler, NoiseSource};
use crate::samplers::{self, OnStep, SamplerParams};
use crate::schedules::{ScheduleOptions, Scheduler};

/// The longest schedule a plan builds. "Do exact steps" builds one for `steps / strength`, so a
/// tiny strength from a request would otherwise ask for billions of sigmas.
pub const MAX_SCHEDULE_STEPS: usize = 100_000;

/// A1111's UniPC order (`uni_pc_order`, default 3); it asserts at least that many steps.
const UNIPC_ORDER: usize = 3;

/// img2img's part of a request: how much of the picture changes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Strength {
    /// Denoising strength in `[0, 1]`.
    pub denoising: f64,
    /// A1111's "do exact steps" (`img2img_fix_steps`): run exactly `steps` steps.
    pub exact_steps: bool,
}

/// What a plan is built from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlanRequest {
    /// The sampler.
    pub sampler: SamplerKind,
    /// The schedule type ("Automatic" resolves to the sampler's default).
    pub scheduler: Scheduler,
    /// Requested steps.
    pub steps: usize,
    /// img2img's strength; `None` for txt2img.
    pub img2img: Option<Strength>,
}

/// The noise a sampler run draws from, besides the initial latent noise.
pub struct SamplerNoise<'a> {
    /// The batch's image generators (A1111's `ImageRNG`), already past the initial noise.
    pub rng: &'a mut dyn NoiseSampler,
    /// One seed per image of the batch (seeds the Brownian trees of the SDE samplers).
    pub seeds: &'a [u64],
    /// The generator kind, for the Brownian trees.
    pub source: NoiseSource,
}

/// What the infotext says of a sampler run (`Sampler`, `Schedule type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InfotextLabels {
    /// The sampler's A1111 label.
    pub sampler: &'static str,
    /// The schedule type: "Automatic" is written as the sampler's default where it has one.
    pub schedule_type: &'static str,
}

impl InfotextLabels {
    /// The labels of `sampler` with `scheduler`.
    pub fn of(sampler: SamplerKind, scheduler: Scheduler) -> Self {
        let schedule_type = match (scheduler, sampler.default_scheduler()) {
            (Scheduler::Automatic, Some(default)) => default.label(),
            (other, _) => other.label(),
        };
        Self {
            sampler: sampler.label(),
            schedule_type,
        }
    }
}

/// A sampler run, as A1111 would make it for a request.
#[derive(Clone, Debug)]
pub struct Plan {
    sampler: SamplerKind,
    scheduler: Scheduler,
    route: Route,
    /// The steps A1111 launches the sampler with (txt2img: the steps; img2img: `t_enc + 1`).
    launch_steps: usize,
}

/// How the sampler walks the noise levels.
#[derive(Clone, Debug)]
enum Route {
    /// k-diffusion over a sigma schedule: the full schedule (the Brownian tree spans it even in
    /// img2img) and the index where this run starts.
    Sigmas { full: Vec<f64>, start: usize },
    /// DPM fast / adaptive: k-diffusion's DPM-Solver between two sigmas; the schedule only
    /// scales the start latent.
    SigmaRange {
        /// The schedule the start latent is scaled by (its img2img part).
        sigmas: Vec<f64>,
        /// Lowest and highest sigma of the solve.
        sigma_min: f64,
        /// The highest sigma.
        sigma_max: f64,
        /// Steps of DPM fast (`n`).
        n: usize,
    },
    /// A1111's timestep samplers in the variance-preserving scale.
    Timesteps(TimestepRun),
}

/// DDIM timesteps and the part of them this run takes.
#[derive(Clone, Debug)]
struct TimestepRun {
    /// The timesteps this run walks (img2img: the first `t_enc`).
    run: Vec<usize>,
    /// img2img: `(√ᾱ, √(1 − ᾱ))` at `timesteps[t_enc]`, the start's scales.
    vp_start: Option<(f64, f64)>,
    /// UniPC img2img: its own start time.
    unipc_t_start: Option<f64>,
    /// The model's noise levels (the timestep samplers read `ᾱ` from them).
    model: DiscreteSchedule,
}

impl Plan {
    /// The run A1111 makes for `req` on a model with noise levels `model`.
    pub fn new(req: &PlanRequest, model: &DiscreteSchedule) -> Result<Self> {
        let sampler = req.sampler;
        // the schedule is built for `sched_steps`; img2img runs its last `t_enc + 1` steps
        let (sched_steps, t_enc) = match req.img2img {
            Some(s) => img2img_steps(req.steps, s.denoising, s.exact_steps),
            None => (req.steps, 0),
        };
        if sched_steps > MAX_SCHEDULE_STEPS {
            return Err(SamplingError::InvalidParameter {
                what: "denoising-strength",
                detail: format!(
                    "{} steps at this strength make a schedule of {sched_steps} steps (exact \
                     steps runs steps / strength), over the limit of {MAX_SCHEDULE_STEPS}",
                    req.steps
                ),
            });
        }
        let route = if is_timestep_sampler(sampler) {
            Route::Timesteps(TimestepRun::new(
                sampler,
                sched_steps,
                req.img2img.map(|_| t_enc),
                model,
            )?)
        } else {
            let opts = ScheduleOptions::for_model(model);
            let full = sampler_sigmas(sampler, req.scheduler, sched_steps, model, &opts, false)?;
            let start = match req.img2img {
                Some(_) => full.len() - slice_for_t_enc(&full, sched_steps, t_enc).len(),
                None => 0,
            };
            match sampler {
                SamplerKind::DpmFast | SamplerKind::DpmAdaptive => {
                    sigma_range(full, start, req.img2img.is_some(), req.steps, model)
                }
                _ => Route::Sigmas { full, start },
            }
        };
        Ok(Self {
            sampler,
            scheduler: req.scheduler,
            route,
            launch_steps: match req.img2img {
                Some(_) => t_enc + 1,
                None => req.steps,
            },
        })
    }

    /// The sampler.
    pub fn sampler(&self) -> SamplerKind {
        self.sampler
    }

    /// What the infotext says of this run.
    pub fn infotext_labels(&self) -> InfotextLabels {
        InfotextLabels::of(self.sampler, self.scheduler)
    }

    /// The schedule type that runs ("Automatic" resolved; timestep samplers have none and
    /// report the requested one).
    pub fn scheduler(&self) -> Scheduler {
        match self.route {
            Route::Sigmas { .. } | Route::SigmaRange { .. } => {
                effective_scheduler(self.sampler, self.scheduler)
            }
            Route::Timesteps(_) => self.scheduler,
        }
    }

    /// The sigmas this run walks (k-diffusion samplers; empty for timestep samplers).
    pub fn sigmas(&self) -> &[f64] {
        match &self.route {
            Route::Sigmas { full, start } => &full[*start..],
            Route::SigmaRange { sigmas, .. } => sigmas,
            Route::Timesteps(_) => &[],
        }
    }

    /// Sampler steps this run reports through `on_step`.
    pub fn steps(&self) -> usize {
        match &self.route {
            Route::Sigmas { .. } => self.sigmas().len() - 1,
            // DPM adaptive picks its own steps; its count is known once it has run
            Route::SigmaRange { n, .. } => *n,
            Route::Timesteps(ts) => match self.sampler {
                SamplerKind::UniPc => ts.run.len(),
                _ => ts.run.len().saturating_sub(1),
            },
        }
    }

    /// A1111's `sampler_config.total_steps` of the steps it launches the sampler with
    /// (txt2img: the steps; img2img and the hires pass: `t_enc + 1`), doubled for second-order
    /// samplers: the denominator of the CFG denoiser's sampling progress.
    pub fn total_steps(&self) -> usize {
        if self.sampler.options().second_order {
            self.launch_steps.saturating_mul(2)
        } else {
            self.launch_steps
        }
    }

    /// Whether the sampler hands its denoiser U-Net timesteps rather than sigmas (A1111's
    /// timestep samplers: DDIM, DDIM CFG++, PLMS, UniPC).
    pub fn sees_timesteps(&self) -> bool {
        matches!(self.route, Route::Timesteps(_))
    }

    /// Whether an inpainting mask blends the sampler's *input* (A1111's `mask_before_denoising`,
    /// set by its timestep samplers) rather than the prediction.
    pub fn blends_input(&self) -> bool {
        matches!(self.route, Route::Timesteps(_))
    }

    /// The start latent from the batch's initial noise and, for img2img, the source latents.
    pub fn start(&self, noise: &Tensor, init: Option<&Tensor>) -> Result<Tensor> {
        Ok(match (&self.route, init) {
            (Route::Sigmas { .. } | Route::SigmaRange { .. }, None) => {
                noise.affine(self.sigmas()[0], 0.0)?
            }
            (Route::Sigmas { .. } | Route::SigmaRange { .. }, Some(init)) => {
                init.broadcast_add(&noise.affine(self.sigmas()[0], 0.0)?)?
            }
            (Route::Timesteps(ts), Some(init)) => match ts.vp_start {
                Some((a, b)) => init.affine(a, 0.0)?.broadcast_add(&noise.affine(b, 0.0)?)?,
                None => noise.clone(),
            },
            (Route::Timesteps(_), None) => noise.clone(),
        })
    }

    /// Runs the sampler from `x` (made by [`Self::start`]) and returns the final latents;
    /// `on_step` sees every step and may stop the run (the step's prediction is returned).
    pub fn run(
        &self,
        denoiser: &mut dyn Denoiser,
        x: Tensor,
        noise: SamplerNoise<'_>,
        on_step: &mut OnStep<'_>,
    ) -> Result<Tensor> {
        match &self.route {
            Route::Sigmas { full, .. } => {
                let mut brownian;
                let sampler_noise: &mut dyn NoiseSampler = if self.sampler.options().brownian_noise
                {
                    let (lo, hi) = BrownianTreeNoiseSampler::sigma_range(full);
                    brownian = BrownianTreeNoiseSampler::new(
                        lo,
                        hi,
                        noise.seeds,
                        x.dims(),
                        noise.source,
                        x.device(),
                    )?;
                    &mut brownian
                } else {
                    noise.rng
                };
                samplers::sample(
                    self.sampler,
                    denoiser,
                    x,
                    self.sigmas(),
                    sampler_noise,
                    &SamplerParams::default(),
                    on_step,
                )
            }
            Route::SigmaRange {
                sigma_min,
                sigma_max,
                n,
                ..
            } => {
                let params = SamplerParams::default();
                if self.sampler == SamplerKind::DpmFast {
                    samplers::sample_dpm_fast(
                        denoiser, x, *sigma_min, *sigma_max, *n, noise.rng, &params, on_step,
                    )
                } else {
                    let adaptive = samplers::AdaptiveParams::default();
                    let (x, _) = samplers::sample_dpm_adaptive(
                        denoiser, x, *sigma_min, *sigma_max, noise.rng, &params, &adaptive, on_step,
                    )?;
                    Ok(x)
                }
            }
            Route::Timesteps(ts) => ts.run(self.sampler, denoiser, x, noise.rng, on_step),
        }
    }
}

/// A1111's DPM fast / adaptive call: txt2img solves between the model's own lowest and highest
/// sigma in `steps` (the schedule only scales the start); img2img between the next-to-last and
/// the first sigma of its part of the schedule, in as many steps as that part has.
fn sigma_range(
    full: Vec<f64>,
    start: usize,
    img2img: bool,
    steps: usize,
    model: &DiscreteSchedule,
) -> Route {
    let sigmas = full[start..].to_vec();
    let (sigma_min, sigma_max, n) = if img2img {
        (sigmas[sigmas.len() - 2], sigmas[0], sigmas.len() - 1)
    } else {
        (model.sigma_min(), model.sigma_max(), steps)
    };
    Route::SigmaRange {
        sigmas,
        sigma_min,
        sigma_max,
        n,
    }
}

impl TimestepRun {
    /// DDIM timesteps for `sched_steps` and, for img2img, the first `t_enc` of them.
    fn new(
        sampler: SamplerKind,
        sched_steps: usize,
        t_enc: Option<usize>,
        model: &DiscreteSchedule,
    ) -> Result<Self> {
        let timesteps = samplers::ddim_timesteps(sched_steps, model.alphas_cumprod().len())?;
        let (run, vp_start, unipc_t_start) = match t_enc {
            Some(t_enc) => {
                let (run, a, b) = samplers::ddim_img2img(&timesteps, t_enc, model)?;
                let t_start = match sampler {
                    SamplerKind::UniPc => Some(samplers::unipc_img2img_t_start(&timesteps, t_enc)?),
                    _ => None,
                };
                (run, Some((a, b)), t_start)
            }
            None => (timesteps, None, None),
        };
        if sampler == SamplerKind::UniPc && run.len() < UNIPC_ORDER {
            return Err(SamplingError::InvalidParameter {
                what: "steps",
                detail: format!(
                    "UniPC is order {UNIPC_ORDER} and needs at least {UNIPC_ORDER} sampling steps; \
                     this request runs {}",
                    run.len()
                ),
            });
        }
        Ok(Self {
            run,
            vp_start,
            unipc_t_start,
            model: model.clone(),
        })
    }

    fn run(
        &self,
        sampler: SamplerKind,
        denoiser: &mut dyn Denoiser,
        x: Tensor,
        rng: &mut dyn NoiseSampler,
        on_step: &mut OnStep<'_>,
    ) -> Result<Tensor> {
        let model = &self.model;
        match sampler {
            // A1111's default eta for DDIM is 0
            SamplerKind::Ddim => {
                samplers::sample_ddim(denoiser, x, model, &self.run, rng, 0.0, on_step)
            }
            // A1111's CFG++ also runs at eta_ddim (0)
            SamplerKind::DdimCfgPp => {
                samplers::sample_ddim_cfgpp(denoiser, x, model, &self.run, rng, 0.0, on_step)
            }
            SamplerKind::Plms => samplers::sample_plms(denoiser, x, model, &self.run, on_step),
            SamplerKind::UniPc => samplers::sample_unipc(
                denoiser,
                x,
                model,
                self.run.len(),
                self.unipc_t_start,
                UNIPC_ORDER,
                on_step,
            ),
            other => Err(SamplingError::InvalidParameter {
                what: "sampler",
                detail: format!("'{}' is not a timestep sampler", other.label()),
            }),
        }
    }
}

/// Whether A1111 runs `sampler` on DDIM timesteps in the variance-preserving scale.
fn is_timestep_sampler(sampler: SamplerKind) -> bool {
    matches!(
        sampler,
        SamplerKind::Ddim | SamplerKind::DdimCfgPp | SamplerKind::Plms | SamplerKind::UniPc
    )
}
