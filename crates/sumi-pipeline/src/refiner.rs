//! Other checkpoints for part of a job, as A1111 v1.10.1 switches models mid-job: the refiner
//! (`refiner_checkpoint`, `refiner_switch_at`; `sd_samplers_common.apply_refiner`) and a
//! checkpoint of its own for the hires pass (`hr_checkpoint_name`).
//!
//! **The refiner.** On every denoiser call A1111 asks how far sampling has come: the U-Net
//! timestep nearest the call's sigma (the timestep samplers hand it the timestep, cut to an
//! integer) gives `completed = (999 − t) / 1000` (computed in f32); with the option
//! `refiner_switch_by_sample_steps`, `step / total_steps`. Once `completed ≥ switch_at` (at
//! once when no `switch_at` is given, as A1111's API does) the refiner takes over for the rest
//! of the run: its U-Net, its prediction type, and the prompts' conditioning recomputed with
//! its text encoders (`p.setup_conds()`: an SDXL refiner has only bigG, and the aesthetic
//! score, 6 for prompts and 2.5 for negative prompts, in place of the target size), on the same
//! schedule and step counter. The batch is decoded with the refiner's VAE (A1111 decodes with
//! whatever model is loaded) and the next batch starts on the base model again. The infotext
//! gets `Refiner: <name [hash]>` and `Refiner switch at` once the switch has happened. With
//! the hires fix the refiner runs in the passes `hires_fix_refiner_pass` names (default: the
//! second only; otherwise `Hires refiner` is written).
//!
//! **The hires checkpoint.** The hires pass runs on its own checkpoint (`Hires checkpoint` in
//! the infotext): the first pass's pictures are decoded with the first pass's model, encoded
//! and sampled with the hires model and decoded with it.
//!
//! **Memory.** The other checkpoints are loaded once per job, before its first step (so that a
//! bad file fails the job at once), and dropped with the job: two models are resident while a
//! job that asks for one runs, as for the server's per-request checkpoint override; none is
//! kept between jobs. A checkpoint that is the job's model itself is not loaded again.

use std::cell::Cell;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use sumi_models::{Hypernetworks, UNet};
use sumi_prompt::Timeline;
use sumi_sampling::Plan;

use crate::cfg_skip::Fired;
use crate::conditioning::{MultiCond, ScheduledCond};
use crate::denoise::CfgDenoiser;
use crate::error::{PipelineError, Result};
use crate::generate::{conditioning_steps, LoadOptions, Pipeline, Progress, Stop};
use crate::hires::{Hires, HiresRun};
use crate::infotext::py_float_repr;
use crate::networks::Active;
use crate::request::{bad, Request};

/// Which passes of a hires fix job the refiner runs in (A1111's `hires_fix_refiner_pass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HiresRefinerPass {
    /// The first pass only.
    First,
    /// The second pass only (A1111's default).
    #[default]
    Second,
    /// Both passes.
    Both,
}

impl HiresRefinerPass {
    /// A1111's option value and infotext label (`first pass`, `second pass`, `both passes`).
    pub fn label(self) -> &'static str {
        match self {
            Self::First => "first pass",
            Self::Second => "second pass",
            Self::Both => "both passes",
        }
    }

    /// The pass named by A1111's label (or `first`, `second`, `both`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "first pass" | "first" => Some(Self::First),
            "second pass" | "second" => Some(Self::Second),
            "both passes" | "both" => Some(Self::Both),
            _ => None,
        }
    }

    /// Whether the refiner runs in pass `pass` (0 the first, 1 the hires pass) of a job with
    /// the hires fix.
    fn runs_in(self, pass: u32) -> bool {
        match self {
            Self::First => pass == 0,
            Self::Second => pass == 1,
            Self::Both => true,
        }
    }
}

/// The refiner of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Refiner {
    /// The refiner checkpoint (a file or a diffusers folder), any architecture Sumi runs (an
    /// SDXL refiner, or any other checkpoint).
    pub checkpoint: PathBuf,
    /// `refiner_switch_at`: the fraction of sampling after which the refiner takes over, in
    /// (0, 1]; `None` switches at the first step (A1111's API without the field).
    pub switch_at: Option<f64>,
}

/// The checkpoints a request switches to mid-job, and A1111's options about it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stages {
    /// The refiner.
    pub refiner: Option<Refiner>,
    /// `hr_checkpoint_name`: the hires pass's own checkpoint (needs the hires fix).
    pub hires_checkpoint: Option<PathBuf>,
    /// `hires_fix_refiner_pass`: the passes of a hires fix job the refiner runs in.
    pub hires_refiner_pass: HiresRefinerPass,
    /// `refiner_switch_by_sample_steps`: switch by sampler steps, not by the model timestep
    /// (written in the infotext of every job, as A1111 writes it).
    pub refiner_by_sample_steps: bool,
}

impl Stages {
    /// Checks the settings against the request; the error names the field.
    pub(crate) fn validate(&self, req: &Request) -> Result<()> {
        if let Some(at) = self.refiner.as_ref().and_then(|r| r.switch_at) {
            if !at.is_finite() || at <= 0.0 || at > 1.0 {
                return Err(bad(
                    "refiner-switch-at",
                    format!("{at} is outside (0, 1] (the fraction of sampling done on the model)"),
                ));
            }
        }
        if self.refiner.is_some() && req.sd_upscale.is_some() {
            return Err(bad(
                "refiner",
                "the refiner with the SD upscale script is not supported yet",
            ));
        }
        if self.hires_checkpoint.is_some() && req.hires.is_none() {
            return Err(bad(
                "hr-checkpoint",
                "a checkpoint for the hires pass needs the hires fix (A1111 ignores it without)",
            ));
        }
        Ok(())
    }
}

/// A checkpoint loaded for part of a job.
pub(crate) struct StageModel {
    /// Its networks.
    pub pipe: Arc<Pipeline>,
    /// A1111's `short_title`: the file's stem and short hash, `name [0123456789]`.
    pub title: String,
}

/// The other checkpoints of one job.
#[derive(Default)]
pub(crate) struct LoadedStages {
    /// The refiner (`None` too when it is the job's model: A1111 does not switch then).
    pub refiner: Option<StageModel>,
    /// The refiner's part of the job.
    pub job: Option<Rc<RefinerJob>>,
    /// The hires checkpoint's title, and its networks unless it is the job's model.
    pub hires: Option<(String, Option<Arc<Pipeline>>)>,
}

/// The refiner's part of one job: what its infotext keys say, and when it first switched.
pub(crate) struct RefinerJob {
    title: String,
    switch_at: Option<f64>,
    by_steps: bool,
    /// `Hires refiner`, written at the switch in a hires fix job with another pass than A1111's
    /// default.
    hires_label: Option<&'static str>,
    /// The passes it runs in: `None` without the hires fix.
    hires_pass: Option<HiresRefinerPass>,
    /// The uncond skips that had happened when it first switched (`None`: not yet): A1111's
    /// infotext keys come in the order they were first set.
    first: Cell<Option<Fired>>,
}

impl RefinerJob {
    /// The infotext keys of the switch.
    fn keys(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(l) = self.hires_label {
            out.push(("Hires refiner".to_string(), l.to_string()));
        }
        out.push(("Refiner".to_string(), self.title.clone()));
        if let Some(at) = self.switch_at {
            out.push(("Refiner switch at".to_string(), py_float_repr(at)));
        }
        out
    }

    /// The infotext keys set while sampling (the uncond skips' and the refiner's), in the order
    /// A1111 first sets them; `all` is what has fired in the job.
    pub(crate) fn params(job: Option<&Self>, req: &Request, all: Fired) -> Vec<(String, String)> {
        let skip = &req.uncond_skip;
        let mut out = Vec::new();
        if req.stages.refiner_by_sample_steps {
            out.push((
                "Refiner switch by sampling steps".to_string(),
                "True".into(),
            ));
        }
        match job.and_then(|j| j.first.get().map(|f| (j, f))) {
            None => out.extend(skip.infotext(all)),
            Some((j, before)) => {
                let before = skip.infotext(before);
                let after: Vec<_> = skip
                    .infotext(all)
                    .into_iter()
                    .filter(|k| !before.contains(k))
                    .collect();
                out.extend(before);
                out.extend(j.keys());
                out.extend(after);
            }
        }
        out
    }
}

/// The refiner in one pass of a job: its networks and the pass's conditioning.
pub(crate) struct RefinerRun {
    /// The job's part.
    pub job: Rc<RefinerJob>,
    /// The refiner's networks (its VAE decodes a batch it took over).
    pub pipe: Arc<Pipeline>,
    /// Its U-Net with the pass's networks.
    pub unet: Arc<UNet>,
    /// Its hypernetworks.
    pub hypernetworks: Hypernetworks,
    /// The pass's prompt, encoded by its text encoders.
    pub cond: MultiCond,
    /// The pass's negative prompt.
    pub uncond: Vec<ScheduledCond>,
    /// Whether it runs in this pass.
    pub active: bool,
    /// Whether it took over in the current batch.
    pub switched: Cell<bool>,
}

/// How far a denoiser call is: the sigma it is asked at, or the U-Net timestep.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Level {
    /// A k-diffusion call (and DDIM/PLMS, which ask at the sigma of an integer timestep).
    Sigma(f64),
    /// UniPC's fractional U-Net timestep.
    Timestep(f64),
}

/// The refiner's state in one sampler run of a [`CfgDenoiser`].
pub(crate) struct Switch<'a> {
    /// The pass's refiner.
    pub run: &'a RefinerRun,
    /// The uncond skips that happened in the job before this run.
    pub prior: Fired,
}

/// The U-Net timestep whose sigma is nearest `sigma` (A1111's `argmin(|sigmas − sigma|)` over
/// the model's sigmas, in f32; the first of equals).
fn nearest_timestep(sigmas: &[f64], sigma: f64) -> i64 {
    let s = sigma as f32;
    let mut best = (0usize, f32::INFINITY);
    for (i, &x) in sigmas.iter().enumerate() {
        let d = (x as f32 - s).abs();
        if d < best.1 {
            best = (i, d);
        }
    }
    best.0 as i64
}

impl RefinerRun {
    /// Whether call `step` (of `total`) at `level` is past the switch point.
    fn due(&self, sigmas: &[f64], step: u32, total: usize, level: Level) -> bool {
        let Some(at) = self.job.switch_at else {
            return true;
        };
        if self.job.by_steps {
            return f64::from(step) / total.max(1) as f64 >= at;
        }
        let t = match level {
            Level::Sigma(s) => nearest_timestep(sigmas, s),
            Level::Timestep(t) => t.max(0.0) as i64,
        };
        (999 - t) as f32 / 1000.0 >= at as f32
    }
}

impl<'a> CfgDenoiser<'a> {
    /// A1111's `apply_refiner` at the start of a denoiser call: once the run is past the switch
    /// point the refiner's U-Net, prediction type and conditioning replace the model's for the
    /// rest of the run (inpainting's extra input is dropped for a refiner without it).
    pub(crate) fn apply_refiner(&mut self, level: Level) {
        let Some(sw) = &self.refiner else {
            return;
        };
        let run = sw.run;
        if !run.due(
            self.schedule.sigmas(),
            self.step,
            self.skip.total_steps,
            level,
        ) {
            return;
        }
        let prior = sw.prior.or(self.skip.fired);
        self.refiner = None;
        run.switched.set(true);
        if run.job.first.get().is_none() {
            run.job.first.set(Some(prior));
        }
        if run.unet.config().in_channels != self.unet.config().in_channels {
            self.image_cond = None;
        }
        self.unet = &*run.unet;
        self.hypernetworks = &run.hypernetworks;
        self.prediction = run.pipe.prediction();
        self.cond = &run.cond;
        self.uncond = run.uncond.as_slice();
    }
}

/// The pipeline that decodes a batch: the refiner's when it took over, else `base`.
pub(crate) fn decoder<'a>(base: &'a Pipeline, run: Option<&'a RefinerRun>) -> &'a Pipeline {
    match run {
        Some(r) if r.switched.get() => &r.pipe,
        _ => base,
    }
}

/// The same file or folder.
fn same_path(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(a) == canon(b)
}

impl Hires {
    /// The timeline the hires pass's prompts are read on (A1111's `calculate_hr_conds`).
    pub(crate) fn timeline(&self, req: &Request) -> Timeline {
        Timeline {
            steps: conditioning_steps(req.sampler, req.steps),
            hires_steps: Some(conditioning_steps(self.sampler(req), self.steps(req))),
            old_scheduling: false,
        }
    }
}

impl Pipeline {
    /// Loads `path` for part of a job, with this pipeline's load options (an SDXL refiner is
    /// accepted here).
    fn load_stage(&self, path: &Path, what: &'static str) -> Result<StageModel> {
        let opts = LoadOptions {
            prediction: None,
            first_prompt: None,
            ..self.load_opts.clone()
        };
        let pipe = Pipeline::load_checkpoint(path, &opts, true).map_err(|e| match e {
            PipelineError::Request { detail, .. } => bad(what, detail),
            other => other,
        })?;
        let title = pipe.load_title();
        Ok(StageModel {
            pipe: Arc::new(pipe),
            title,
        })
    }

    /// The refiner and the hires checkpoint of `req`, loaded (nothing for a checkpoint that is
    /// this model). An inpainting refiner for a model without inpainting's input is refused, as
    /// A1111 fails on it.
    pub(crate) fn load_stages(&self, req: &Request) -> Result<LoadedStages> {
        let mut out = LoadedStages::default();
        if let Some(r) = &req.stages.refiner {
            if !same_path(&r.checkpoint, &self.model.path) {
                let stage = self.load_stage(&r.checkpoint, "refiner")?;
                let (theirs, ours) = (
                    stage.pipe.checkpoint.unet_config()?.in_channels,
                    self.checkpoint.unet_config()?.in_channels,
                );
                if theirs > ours {
                    return Err(bad(
                        "refiner",
                        format!(
                            "{}: an inpainting model ({theirs} input channels) cannot refine a \
                             model of {ours} (A1111 fails on it)",
                            r.checkpoint.display()
                        ),
                    ));
                }
                let hires_pass = req.hires.as_ref().map(|_| req.stages.hires_refiner_pass);
                out.job = Some(Rc::new(RefinerJob {
                    title: stage.title.clone(),
                    switch_at: r.switch_at,
                    by_steps: req.stages.refiner_by_sample_steps,
                    hires_label: hires_pass
                        .filter(|p| *p != HiresRefinerPass::Second)
                        .map(HiresRefinerPass::label),
                    hires_pass,
                    first: Cell::new(None),
                }));
                out.refiner = Some(stage);
            }
        }
        if let Some(path) = &req.stages.hires_checkpoint {
            out.hires = Some(if same_path(path, &self.model.path) {
                let title = self.load_title();
                (title, None)
            } else {
                let stage = self.load_stage(path, "hr-checkpoint")?;
                (stage.title, Some(stage.pipe))
            });
        }
        Ok(out)
    }

    /// This model's A1111 `short_title`: the file's stem and short hash.
    fn load_title(&self) -> String {
        let path = &self.model.path;
        let stem = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        match crate::generated_infotext::cached_short_hash(&self.hash, path) {
            Some(h) => format!("{stem} [{h}]"),
            None => stem,
        }
    }
}

impl LoadedStages {
    /// The refiner's run in pass `pass` (0 the first, 1 the hires pass) of `req`: its networks
    /// for `prompts.0` and both prompts encoded on `timeline` with its text encoders (warnings
    /// added to `warnings` once). `Err(Interrupted)` when `on_step` interrupts the encoding.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn refiner_run(
        &self,
        req: &Request,
        prompts: (&str, &str),
        timeline: &Timeline,
        steps: usize,
        pass: u32,
        warnings: &mut Vec<String>,
        on_step: &mut dyn FnMut(&Progress<'_>) -> ControlFlow<Stop>,
    ) -> Result<Option<RefinerRun>> {
        let (Some(stage), Some(job)) = (&self.refiner, &self.job) else {
            return Ok(None);
        };
        let active = job.hires_pass.is_none_or(|p| p.runs_in(pass));
        let pipe = &stage.pipe;
        let own;
        let for_prompt = if prompts.0 == req.prompt {
            req
        } else {
            own = Request {
                prompt: prompts.0.to_string(),
                img2img: None,
                ..req.clone()
            };
            &own
        };
        let active_nets = pipe.activate_networks(for_prompt)?;
        for w in &active_nets.warnings {
            let w = format!("refiner: {w}");
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
        let Some((cond, uncond)) =
            pipe.encode_prompts(&active_nets, prompts, timeline, req, steps, on_step)?
        else {
            return Err(PipelineError::Interrupted);
        };
        Ok(Some(RefinerRun {
            job: job.clone(),
            pipe: pipe.clone(),
            unet: active_nets.unet.clone(),
            hypernetworks: active_nets.hypernetworks.clone(),
            cond,
            uncond,
            active,
            switched: Cell::new(false),
        }))
    }
}

impl Pipeline {
    /// The hires pass of a job with its stages: prepared on the hires checkpoint when it has
    /// one (its networks and conditioning; `Hires checkpoint` first among the pass's infotext
    /// keys, where A1111 puts it), and the refiner's run in the pass. `Err(Interrupted)` when
    /// `on_step` interrupts the encoding.
    pub(crate) fn prepare_stage_hires(
        &self,
        req: &Request,
        h: &Hires,
        first: &Active,
        stages: &LoadedStages,
        warnings: &mut Vec<String>,
        on_step: &mut dyn FnMut(&Progress<'_>) -> ControlFlow<Stop>,
    ) -> Result<HiresRun> {
        let model = stages.hires.as_ref().and_then(|(_, p)| p.clone());
        let run = match &model {
            Some(pipe) => {
                let own = pipe.activate_networks(req)?;
                for w in &own.warnings {
                    if !warnings.contains(w) {
                        warnings.push(w.clone());
                    }
                }
                pipe.prepare_hires(req, h, &own, warnings, on_step)?
            }
            None => self.prepare_hires(req, h, first, warnings, on_step)?,
        };
        let mut run = run.ok_or(PipelineError::Interrupted)?;
        if let Some((title, _)) = &stages.hires {
            run.params
                .insert(0, ("Hires checkpoint".to_string(), title.clone()));
        }
        run.model = model;
        let steps = run.plan.as_ref().map_or(0, Plan::steps);
        let prompts = (h.prompt(req), h.negative_prompt(req));
        let timeline = h.timeline(req);
        run.refiner = stages.refiner_run(req, prompts, &timeline, steps, 1, warnings, on_step)?;
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_timestep_is_the_first_of_equals() {
        let sigmas = [0.25, 0.5, 1.0, 2.0];
        assert_eq!(nearest_timestep(&sigmas, 0.05), 0);
        assert_eq!(nearest_timestep(&sigmas, 0.75), 1);
        assert_eq!(nearest_timestep(&sigmas, 0.76), 2);
        assert_eq!(nearest_timestep(&sigmas, 9.0), 3);
    }

    #[test]
    fn hires_passes_and_labels() {
        for p in [
            HiresRefinerPass::First,
            HiresRefinerPass::Second,
            HiresRefinerPass::Both,
        ] {
            assert_eq!(HiresRefinerPass::parse(p.label()), Some(p));
        }
        assert!(HiresRefinerPass::Second.runs_in(1) && !HiresRefinerPass::Second.runs_in(0));
        assert!(HiresRefinerPass::First.runs_in(0) && !HiresRefinerPass::First.runs_in(1));
        assert!(HiresRefinerPass::Both.runs_in(0) && HiresRefinerPass::Both.runs_in(1));
        assert_eq!(HiresRefinerPass::parse("third"), None);
    }

    #[test]
    fn switch_at_outside_0_1_is_refused() {
        for at in [0.0, -0.5, 1.01, f64::NAN] {
            let req = Request {
                stages: Stages {
                    refiner: Some(Refiner {
                        checkpoint: "r.safetensors".into(),
                        switch_at: Some(at),
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            match req.validate() {
                Err(PipelineError::Request { field, .. }) => {
                    assert_eq!(field, "refiner-switch-at")
                }
                other => panic!("{at}: {other:?}"),
            }
        }
        let ok = Stages {
            refiner: Some(Refiner {
                checkpoint: "r.safetensors".into(),
                switch_at: Some(1.0),
            }),
            ..Default::default()
        };
        let req = Request {
            stages: ok,
            ..Default::default()
        };
        assert!(req.validate().is_ok());
        let req = Request {
            stages: Stages {
                hires_checkpoint: Some("h.safetensors".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(matches!(
            req.validate(),
            Err(PipelineError::Request {
                field: "hr-checkpoint",
                ..
            })
        ));
    }
}
