//! The pipeline and its data path, top to bottom: validate and plan the sampler run → image in
//! (the `init` stage) → conditioning → batch by batch (the `batch` stage): initial latents →
//! sampler over the U-Net with classifier-free guidance → decode (the `decode` stage) → pixels.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use sumi_models::{ClipTextModel, Precision, TaesdDecoder, TaesdEncoder, UNet, Vae};
use sumi_prompt::Timeline;
use sumi_sampling::noise::fixed_seed;
use sumi_sampling::{DiscreteSchedule, Plan, PlanRequest, SamplingError, Strength};
use sumi_weights::embedding::Embedding;
use sumi_weights::Prediction;

use crate::batch::{BatchInputs, BatchSeeds, Conds};
use crate::checkpoint::{Checkpoint, ModelIdentity};
use crate::conditioning::{ConditioningOptions, MultiCond, ScheduledCond, TextEncoder};
use crate::embedding_report::{load_embeddings, EmbeddingReport};
use crate::error::{PipelineError, Result};
use crate::image::effective_size;
use crate::init::LatentShape;
use crate::networks::{Active, HypernetState, NetworkState};
use crate::request::Request;

/// How to load a pipeline.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Overrides the detected prediction type.
    pub prediction: Option<Prediction>,
    /// A folder of textual-inversion embeddings, used by file name in prompts.
    pub embeddings: Option<PathBuf>,
    /// An external VAE file replacing the checkpoint's own.
    pub vae: Option<PathBuf>,
    /// A TAESD decoder file: decode with it instead of the VAE (fast, approximate). The
    /// model's kind picks TAESD's or TAESDXL's decoder from the file's folder where the file
    /// given is the other kind's (see [`crate::taesd_file::decoder_for`]).
    pub taesd_decoder: Option<PathBuf>,
    /// A TAESD encoder file: img2img encodes its source with it instead of the VAE (A1111's
    /// "VAE type for encode: TAESD", infotext `VAE Encoder: TAESD`; also the hires fix's
    /// re-encode and an inpainting model's txt2img conditioning, as A1111's option does).
    pub taesd_encoder: Option<PathBuf>,
    /// Compute precision of the U-Net, VAE and text encoder (default f32;
    /// [`Precision::auto`] picks bf16 where the CPU has bf16 dot products).
    pub precision: Precision,
    /// Folders of LoRA/LyCORIS files, used by name in `<lora:name:…>` tags (A1111's
    /// `--lora-dir`); searched recursively, in order.
    pub lora_dirs: Vec<PathBuf>,
    /// Folders of hypernetwork `.pt` files, used by name in `<hypernet:name:…>` tags (A1111's
    /// `--hypernetwork-dir`); searched recursively, in order.
    pub hypernetwork_dirs: Vec<PathBuf>,
    /// Folders of upscaler model files (ESRGAN, Real-ESRGAN, …) for the hires fix and
    /// [`Pipeline::upscale`], listed by file name (A1111's `--esrgan-models-path` and kin).
    pub upscaler_dirs: Vec<PathBuf>,
    /// The first job's prompt, when known before loading (a one-job run): its LoRAs are
    /// merged as the U-Net and the text encoder are built, so that they are built once.
    pub first_prompt: Option<String>,
}

/// What a progress callback may ask of a running job (A1111's Interrupt and Skip buttons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stop now: the current batch is decoded from its latest prediction and handed over,
    /// later batches are not run.
    Interrupt,
    /// Stop this batch: it is decoded from its latest prediction and handed over, and the
    /// next batch starts.
    Skip,
}

/// Where a run is, for progress reporting.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Batch index (0-based) of `batch_count`.
    pub batch: u32,
    /// Batches in the request.
    pub batch_count: u32,
    /// The pass of this batch (0-based; the hires fix's second pass is 1).
    pub pass: u32,
    /// Passes per batch: 2 with the hires fix, else 1.
    pub passes: u32,
    /// Sampler step (0-based).
    pub step: usize,
    /// Sampler steps in this run.
    pub steps: usize,
    /// The step's prediction of the clean latents `[batch, 4, h/8, w/8]` (for previews);
    /// `None` before sampling, while the prompts are encoded (a long prompt takes a while:
    /// the callback is asked between text-encoder chunks, so an interrupt stops the job
    /// there, with no image).
    pub denoised: Option<&'a Tensor>,
    /// Time from the start of this pass's sampler (A1111's progress bar starts there) to the
    /// end of this step: `step + 1` steps took it. Zero where there is no step (`denoised` is
    /// `None`).
    pub elapsed: std::time::Duration,
}

/// One output image and what made it.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The pixels.
    pub image: RgbImage,
    /// Its seed.
    pub seed: u64,
    /// Its variation seed.
    pub subseed: u64,
    /// The final latents `[4, h/8, w/8]` (U-Net scale).
    pub latents: Tensor,
    /// Infotext keys the processing added (inpainting's `Mask blur`, `Masked content`, …), in
    /// A1111's order.
    pub extra_params: Vec<(String, String)>,
}

/// A loaded checkpoint with its networks, ready to generate.
pub struct Pipeline {
    /// What is known about the checkpoint.
    pub model: ModelIdentity,
    /// The checkpoint, kept open (memory-mapped) to rebuild the U-Net and the text encoder
    /// with extra networks merged.
    pub(crate) checkpoint: Checkpoint,
    pub(crate) weight_dtype: DType,
    /// The U-Net as the last job's networks left it (`None` only while it is rebuilt).
    pub(crate) unet: Mutex<Option<Arc<UNet>>>,
    pub(crate) vae: Vae,
    /// The text encoder as the last job's networks left it.
    pub(crate) clip: Mutex<Option<Arc<ClipTextModel>>>,
    pub(crate) clip_width: usize,
    /// SDXL's second text encoder (OpenCLIP bigG) as the last job's networks left it; `None`
    /// for SD1/SD2.
    pub(crate) clip_g: Option<Mutex<Option<Arc<ClipTextModel>>>>,
    /// What loading doubts (an external VAE whose name says another model family), warned
    /// with every job.
    pub(crate) load_notes: Vec<String>,
    pub(crate) networks: NetworkState,
    pub(crate) hypernets: HypernetState,
    pub(crate) embeddings: Vec<Embedding>,
    /// SDXL: the bigG parts of the embeddings (the `clip_g` vectors; `embeddings` holds the
    /// `clip_l` ones, same names and order); empty for SD1/SD2.
    pub(crate) embeddings_g: Vec<Embedding>,
    pub(crate) embedding_report: EmbeddingReport,
    pub(crate) schedule: DiscreteSchedule,
    pub(crate) device: Device,
    pub(crate) hash: std::sync::OnceLock<Option<String>>,
    pub(crate) vae_path: Option<PathBuf>,
    pub(crate) taesd: Option<TaesdDecoder>,
    /// The TAESD encoder, when asked for ([`LoadOptions::taesd_encoder`]).
    pub(crate) taesd_encoder: Option<TaesdEncoder>,
    pub(crate) vae_hash: std::sync::OnceLock<Option<String>>,
    /// The image upscalers (built-in and the upscaler folders' model files).
    pub(crate) upscalers: crate::upscale::UpscalerRegistry,
    /// The options it was loaded with (a job's refiner and hires checkpoint load with them).
    pub(crate) load_opts: LoadOptions,
}

impl Pipeline {
    /// Opens `path` and builds its networks on the CPU, at `opts.precision`.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        Self::load_checkpoint(path, opts, false)
    }

    /// [`Self::load`]; with `stage`, an SDXL refiner is accepted (its bigG encoder stands in
    /// for the text encoder: it refines another model's latents, [`crate::refiner`]).
    pub(crate) fn load_checkpoint(path: &Path, opts: &LoadOptions, stage: bool) -> Result<Self> {
        let device = Device::Cpu;
        let mut checkpoint = if stage {
            Checkpoint::open_stage_unresolved(path)?
        } else {
            Checkpoint::open_unresolved(path, opts.prediction)?
        };
        let wdt = opts.precision.weight_dtype();
        let networks = NetworkState::new(opts.lora_dirs.clone());
        let prompt = opts.first_prompt.as_deref();
        let sdxl = checkpoint.is_sdxl();
        let (unet, clip, clip_g) = if checkpoint.facts.family == sumi_weights::Family::SdxlRefiner {
            let g = Arc::new(checkpoint.clip_g(wdt, &device)?);
            (checkpoint.unet(wdt, &device)?, g.clone(), Some(g))
        } else if sdxl {
            let (u, l, g) = crate::sdxl_run::build_sdxl(&checkpoint, wdt, &device)?;
            (u, Arc::new(l), Some(Arc::new(g)))
        } else {
            let (u, c) =
                crate::networks::first_build(&mut checkpoint, &networks, prompt, wdt, &device)?;
            (u, Arc::new(c), None)
        };
        let vae = match &opts.vae {
            Some(p) => Checkpoint::external_vae(p, checkpoint.vae_scale(), wdt, &device)?,
            None => checkpoint.vae(wdt, &device)?,
        };
        let clip_width = clip.config().hidden;
        let (embeddings, embeddings_g, embedding_report) = match (&opts.embeddings, &clip_g) {
            (Some(dir), None) => {
                let (e, report) = load_embeddings(dir, clip_width)?;
                (e, Vec::new(), report)
            }
            (Some(dir), Some(g)) => {
                crate::sdxl_run::load_sdxl_embeddings(dir, clip_width, g.config().hidden)?
            }
            (None, _) => (Vec::new(), Vec::new(), EmbeddingReport::default()),
        };
        Ok(Self {
            taesd: opts
                .taesd_decoder
                .as_ref()
                .map(|p| -> Result<TaesdDecoder> {
                    let bad = |detail: String| PipelineError::Request {
                        field: "taesd-decoder",
                        detail,
                    };
                    // the fitting kind beside the file given, where there is one
                    let p = &crate::taesd_file::decoder_for(p, sdxl);
                    let w = sumi_weights::Weights::open_raw(p).map_err(|e| bad(e.to_string()))?;
                    if let Some(why) = crate::taesd_file::wrong_taesd_decoder_for(&w, p, sdxl) {
                        return Err(bad(format!("{}: {why}", p.display())));
                    }
                    TaesdDecoder::new(w.var_builder(DType::F32, &device), 4)
                        .map_err(|e| bad(format!("{}: {e}", p.display())))
                })
                .transpose()?,
            taesd_encoder: opts
                .taesd_encoder
                .as_ref()
                .map(|p| crate::taesd_file::load_encoder(p, sdxl, &device))
                .transpose()?,
            model: checkpoint.identity(),
            checkpoint,
            weight_dtype: wdt,
            vae_path: opts.vae.clone(),
            unet: Mutex::new(Some(Arc::new(unet))),
            vae,
            clip: Mutex::new(Some(clip)),
            clip_width,
            clip_g: clip_g.map(|g| Mutex::new(Some(g))),
            load_notes: crate::sdxl_run::load_notes(sdxl, opts),
            networks,
            hypernets: HypernetState::new(opts.hypernetwork_dirs.clone()),
            embeddings,
            embeddings_g,
            embedding_report,
            schedule: DiscreteSchedule::sd(),
            device,
            hash: std::sync::OnceLock::new(),
            vae_hash: std::sync::OnceLock::new(),
            upscalers: crate::upscale::UpscalerRegistry::scan(&opts.upscaler_dirs)?,
            load_opts: opts.clone(),
        })
    }

    /// Runs a request; `on_step` sees every sampler step and may stop the run early
    /// ([`Stop`]); the images made until then are returned, with the warnings of
    /// [`Self::generate_each`].
    pub fn generate(
        &self,
        req: &Request,
        on_step: &mut dyn FnMut(&Progress<'_>) -> ControlFlow<Stop>,
    ) -> Result<(Vec<Generated>, Vec<String>)> {
        let mut out = Vec::new();
        let warnings = self.generate_each(req, on_step, &mut |g| {
            out.push(g);
            Ok(())
        })?;
        Ok((out, warnings))
    }

    /// [`Self::generate`], handing each image to `on_image` as soon as its batch is decoded
    /// (so a long run keeps what it has made if it stops later). Returns the warnings: one
    /// line for each thing the request asked for that was not applied (an unknown LoRA, an
    /// extra network kind Sumi does not read, network keys that match no layer).
    pub fn generate_each(
        &self,
        req: &Request,
        on_step: &mut dyn FnMut(&Progress<'_>) -> ControlFlow<Stop>,
        on_image: &mut dyn FnMut(Generated) -> Result<()>,
    ) -> Result<Vec<String>> {
        // 1. validate, and plan the sampler run as A1111 would
        req.validate()?;
        let sdxl_notes = self.sdxl_notes(req);
        if let Some(s) = &req.sd_upscale {
            let mut warnings = self.generate_sd_upscale(req, s, on_step, on_image)?;
            warnings.extend(sdxl_notes);
            return Ok(warnings);
        }
        // the refiner and the hires checkpoint, loaded for this job
        let stages = self.load_stages(req)?;
        let size = effective_size(req.width, req.height);
        let shape = LatentShape::of_pixels(size.0, size.1);
        let plan = Plan::new(&plan_request(req), &self.schedule).map_err(request_error)?;
        let seed = fixed_seed(req.seed);
        let subseed = fixed_seed(req.subseed);

        // 2. extra networks merged into the U-Net and the text encoder
        let active = self.activate_networks(req)?;

        // 3. image in (with its mask): the source's latents, inpainting's blend and conditioning
        let init = self.prepare_init(req, shape, size, seed)?;

        // 4. conditioning, asking `on_step` between chunks (an interrupt ends the job here)
        let timeline = Timeline::new(conditioning_steps(req.sampler, req.steps));
        let encoded = self.encode_prompts(
            &active,
            (&req.prompt, &req.negative_prompt),
            &timeline,
            req,
            plan.steps(),
            on_step,
        )?;
        let Some((cond, uncond)) = encoded else {
            return Ok(active.warnings);
        };

        // 5. the hires fix's second pass: its networks, plan and conditioning
        let passes = 1 + u32::from(req.hires.is_some());
        let mut warnings = active.warnings.clone();
        warnings.extend(sdxl_notes);
        warnings.extend(self.model_hash_note(req));
        warnings.extend(size_notes(req.width, req.height));
        warnings.extend(init.notes.iter().cloned());
        let first_refiner = stages.refiner_run(
            req,
            (&req.prompt, &req.negative_prompt),
            &timeline,
            plan.steps(),
            0,
            &mut warnings,
            on_step,
        );
        let first_refiner = match first_refiner {
            Err(PipelineError::Interrupted) => return Ok(warnings),
            r => r?,
        };
        let hires = match &req.hires {
            None => None,
            Some(h) => {
                match self.prepare_stage_hires(req, h, &active, &stages, &mut warnings, on_step) {
                    Err(PipelineError::Interrupted) => return Ok(warnings),
                    r => Some(r?),
                }
            }
        };

        // 6. batch by batch: noise → sampler → decode → images
        let fired = std::cell::Cell::new(crate::cfg_skip::Fired::default());
        let inputs = BatchInputs {
            unet: &active.unet,
            hypernetworks: &active.hypernetworks,
            extra_params: &active.extra_params,
            req,
            plan: &plan,
            init: &init,
            conds: Conds {
                cond: &cond,
                uncond: &uncond,
            },
            shape,
            pass: (0, passes),
            fired: &fired,
            refiner: first_refiner.as_ref(),
        };
        for n in 0..req.batch_count {
            let batch = BatchSeeds::of(req, n, seed, subseed);
            let outcome = match &hires {
                None => self.run_batch(&inputs, batch, on_step)?,
                Some(hr) => self.run_hires_batch(&inputs, hr, batch, on_step)?,
            };
            for g in outcome.images {
                on_image(g)?;
            }
            if outcome.stop == Some(Stop::Interrupt) {
                break;
            }
        }
        Ok(warnings)
    }

    /// The conditioning of a prompt and a negative prompt with the networks of `active`;
    /// `None` when `on_step` interrupts between text-encoder chunks.
    pub(crate) fn encode_prompts(
        &self,
        active: &Active,
        (prompt, negative): (&str, &str),
        timeline: &Timeline,
        req: &Request,
        steps: usize,
        on_step: &mut dyn FnMut(&Progress<'_>) -> ControlFlow<Stop>,
    ) -> Result<Option<(MultiCond, Vec<ScheduledCond>)>> {
        let opts = ConditioningOptions {
            clip_skip: req.clip_skip,
            ..Default::default()
        };
        let mut interrupted = || {
            let p = Progress {
                batch: 0,
                batch_count: req.batch_count,
                pass: 0,
                passes: 1 + u32::from(req.hires.is_some()),
                step: 0,
                steps,
                denoised: None,
                elapsed: Default::default(),
            };
            on_step(&p) == ControlFlow::Break(Stop::Interrupt)
        };
        if self.sdxl_clip_g().is_some() {
            let conds =
                self.encode_sdxl(active, (prompt, negative), timeline, req, &mut interrupted);
            return match conds {
                Err(PipelineError::Interrupted) => Ok(None),
                other => other.map(Some),
            };
        }
        let te = TextEncoder::new(
            &active.clip,
            &self.device,
            &self.model.facts,
            &active.embeddings,
            opts,
        )?
        .with_interrupt(&mut interrupted);
        let conds = te
            .prompt(prompt, timeline)
            .and_then(|c| Ok((c, te.negative(negative, timeline)?)));
        match conds {
            Err(PipelineError::Interrupted) => Ok(None),
            other => other.map(Some),
        }
    }

    /// The model's prediction type, in the sampler's terms.
    pub(crate) fn prediction(&self) -> sumi_sampling::Prediction {
        match self.model.prediction {
            Prediction::Epsilon => sumi_sampling::Prediction::Epsilon,
            Prediction::V => sumi_sampling::Prediction::V,
        }
    }

    pub(crate) fn model_err(&self, source: sumi_models::ModelError) -> PipelineError {
        PipelineError::Model {
            path: self.model.path.clone(),
            source,
        }
    }
}

/// The step count prompt schedules are read against: A1111's `sampler_config.total_steps`,
/// twice the steps for second-order samplers (their denoiser is called about twice a step,
/// and the conditioning's step counter counts calls).
pub(crate) fn conditioning_steps(sampler: sumi_sampling::SamplerKind, steps: u32) -> u32 {
    if sampler.options().second_order {
        steps.saturating_mul(2)
    } else {
        steps
    }
}

/// The sampler run a request asks for.
pub(crate) fn plan_request(req: &Request) -> PlanRequest {
    PlanRequest {
        sampler: req.sampler,
        scheduler: req.scheduler,
        steps: req.steps as usize,
        img2img: req.img2img.as_ref().map(|i| Strength {
            denoising: i.denoising_strength,
            exact_steps: req.exact_steps,
        }),
    }
}

/// A parameter the sampler plan refuses is a request error naming it.
pub(crate) fn request_error(e: SamplingError) -> PipelineError {
    match e {
        SamplingError::InvalidParameter { what, detail } => PipelineError::Request {
            field: what,
            detail,
        },
        other => PipelineError::Sampling(other),
    }
}

/// A size that is not a multiple of 8 is made at the multiple of 8 below, as A1111 makes it.
fn size_notes(width: u32, height: u32) -> Option<String> {
    let (w, h) = effective_size(width, height);
    ((w, h) != (width, height)).then(|| {
        format!(
            "size: {width}x{height} is not a multiple of 8: the picture is {w}x{h}, as A1111 \
             makes it"
        )
    })
}
