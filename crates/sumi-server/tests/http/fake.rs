//! A fake [`Backend`]: no model, a few milliseconds a step. Its "checkpoints" are any files;
//! its images are flat colours derived from their infotext (the same infotext, the same
//! pixels); it records every request it runs, on which checkpoint, so tests can check what
//! the HTTP layer asked for.
//!
//! Prompts steer it: `FAIL_INVALID` makes the job fail as a bad request, `FAIL_INTERNAL` as a
//! server fault, `PANIC` panics inside the model, `ESCAPE` panics with a payload whose drop panics
//! with one whose drop panics again (through two `catch_unwind`s: it ends the worker thread). Checkpoint files steer it too: one starting
//! with `BROKEN` fails to load, `PANIC_LOAD` panics while loading, `PANIC_EMBEDDINGS` loads a
//! model that panics when its embeddings are listed (as it becomes the current one).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use image::{Rgb, RgbImage};
use sha2::{Digest, Sha256};
use sumi_pipeline::infotext::{Infotext, Number};
use sumi_pipeline::{Request, Stop};
use sumi_server::backend::{
    Backend, EmbeddingEntry, Embeddings, Image, JobFailure, Model, Preview, Step,
};

/// What the fake and the test share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Microseconds each step takes.
    pub step_micros: AtomicU64,
    /// Every request run: (checkpoint, request).
    pub runs: Mutex<Vec<(PathBuf, Request)>>,
    /// Every checkpoint loaded, in order.
    pub loads: Mutex<Vec<PathBuf>>,
    /// Steps run in all.
    pub steps: AtomicU64,
}

/// The fake backend (clones share their state).
#[derive(Clone, Default)]
pub struct Fake {
    /// The shared state.
    pub shared: Arc<Shared>,
    /// Previews as TAESD would make them (full size) rather than latent-sized.
    pub taesd: bool,
    /// The embeddings every model lists.
    pub embeddings: Embeddings,
}

impl Fake {
    /// A fake taking `step_ms` milliseconds a step.
    pub fn new(step_ms: u64) -> Self {
        let f = Self::default();
        f.shared.step_micros.store(step_ms * 1000, Ordering::SeqCst);
        f
    }

    /// The requests run so far.
    pub fn runs(&self) -> Vec<(PathBuf, Request)> {
        self.shared.runs.lock().unwrap().clone()
    }

    /// The last request run.
    pub fn last(&self) -> Request {
        self.runs().last().expect("no request ran").1.clone()
    }

    /// The checkpoints loaded so far.
    pub fn loads(&self) -> Vec<PathBuf> {
        self.shared.loads.lock().unwrap().clone()
    }
}

/// One embedding entry.
pub fn embedding(name: &str, shape: usize, vectors: usize) -> EmbeddingEntry {
    EmbeddingEntry {
        name: name.into(),
        step: Some(100),
        shape,
        vectors,
    }
}

impl Backend for Fake {
    fn load(&self, path: &Path) -> Result<Box<dyn Model>, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if bytes.starts_with(b"BROKEN") {
            return Err("not a checkpoint".into());
        }
        assert!(!bytes.starts_with(b"PANIC_LOAD"), "the fake panics loading");
        self.shared.loads.lock().unwrap().push(path.to_path_buf());
        let sha = format!("{:x}", Sha256::digest(&bytes));
        Ok(Box::new(FakeModel {
            path: path.to_path_buf(),
            short_hash: sha[..10].to_string(),
            fake: self.clone(),
            panic_embeddings: bytes.starts_with(b"PANIC_EMBEDDINGS"),
        }))
    }

    fn taesd_previews(&self) -> bool {
        self.taesd
    }
}

/// A panic payload that, dropped, panics with `DropBomb(n - 1)` while `n > 0`.
struct DropBomb(u32);

impl Drop for DropBomb {
    fn drop(&mut self) {
        if self.0 > 0 {
            std::panic::panic_any(DropBomb(self.0 - 1));
        }
    }
}

struct FakeModel {
    path: PathBuf,
    short_hash: String,
    fake: Fake,
    panic_embeddings: bool,
}

impl FakeModel {
    /// The infotext the pipeline would write, from the request's fields.
    fn infotext(&self, req: &Request, seed: u64, subseed: u64) -> Infotext {
        let schedule_type = match req.sampler.default_scheduler() {
            Some(d) if req.scheduler.label() == "Automatic" => d.label(),
            _ => req.scheduler.label(),
        };
        let cfg = if req.cfg_scale.fract() == 0.0 {
            Number::Int(req.cfg_scale as i64)
        } else {
            Number::Float(req.cfg_scale)
        };
        Infotext {
            prompt: req.prompt.clone(),
            negative_prompt: req.negative_prompt.clone(),
            steps: req.steps,
            sampler: req.sampler.label().to_string(),
            schedule_type: schedule_type.to_string(),
            cfg_scale: cfg,
            seed: seed as i64,
            width: req.width,
            height: req.height,
            model_hash: Some(self.short_hash.clone()),
            model: self.name(),
            variation: (req.subseed_strength != 0.0)
                .then_some((subseed as i64, Number::Float(req.subseed_strength as f64))),
            denoising_strength: req
                .img2img
                .as_ref()
                .map(|i| Number::Float(i.denoising_strength)),
            clip_skip: req.clip_skip as u32,
            rng: format!("{:?}", req.rng).to_uppercase(),
            version: Some("sumi-fake".into()),
            ..Default::default()
        }
    }
}

/// A flat colour from a text's hash.
fn colour(text: &str) -> Rgb<u8> {
    let h = Sha256::digest(text.as_bytes());
    Rgb([h[0], h[1], h[2]])
}

impl Model for FakeModel {
    fn generate(
        &self,
        req: &Request,
        on_step: &mut dyn FnMut(&Step) -> ControlFlow<Stop>,
        on_image: &mut dyn FnMut(Image) -> Result<(), String>,
    ) -> Result<Vec<String>, JobFailure> {
        let shared = &self.fake.shared;
        shared
            .runs
            .lock()
            .unwrap()
            .push((self.path.clone(), req.clone()));
        let fail = |invalid: bool| JobFailure {
            invalid,
            message: format!("the fake refuses the prompt {:?}", req.prompt),
        };
        if req.prompt.contains("FAIL_INVALID") {
            return Err(fail(true));
        }
        if req.prompt.contains("FAIL_INTERNAL") {
            return Err(fail(false));
        }
        if req.prompt.contains("ESCAPE") {
            std::panic::panic_any(DropBomb(2));
        }
        assert!(!req.prompt.contains("PANIC"), "the fake panics on request");
        let (w, h) = (req.width, req.height);
        let preview_size = if self.fake.taesd {
            (w, h)
        } else {
            (w / 8, h / 8)
        };
        let n = u64::from(req.batch_size);
        for batch in 0..req.batch_count {
            let mut stopped = None;
            for step in 0..req.steps as usize {
                let micros = shared.step_micros.load(Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(micros));
                shared.steps.fetch_add(1, Ordering::SeqCst);
                let (pw, ph) = preview_size;
                let preview =
                    Preview::new(move || Ok(RgbImage::from_pixel(pw, ph, Rgb([step as u8, 0, 0]))));
                let s = Step {
                    batch,
                    step,
                    steps: req.steps as usize,
                    preview: Some(preview),
                    encoding: false,
                };
                if let ControlFlow::Break(stop) = on_step(&s) {
                    stopped = Some(stop);
                    break;
                }
            }
            for i in 0..n {
                let index = u64::from(batch) * n + i;
                let seed = req.seed as u64
                    + if req.subseed_strength == 0.0 {
                        index
                    } else {
                        0
                    };
                let subseed = req.subseed as u64 + index;
                let infotext = self.infotext(req, seed, subseed);
                let pixels = RgbImage::from_pixel(w, h, colour(&infotext.to_string()));
                on_image(Image {
                    pixels,
                    infotext,
                    seed,
                    subseed,
                })
                .map_err(|message| JobFailure {
                    invalid: false,
                    message,
                })?;
            }
            if stopped == Some(Stop::Interrupt) {
                break;
            }
        }
        // a prompt asking for a warning gets one (the `info` warnings channel)
        Ok(if req.prompt.contains("WARN") {
            vec![format!("the fake warns about {:?}", req.prompt)]
        } else {
            Vec::new()
        })
    }

    fn name(&self) -> Option<String> {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
    }

    fn embeddings(&self) -> Embeddings {
        assert!(!self.panic_embeddings, "the fake panics listing embeddings");
        self.fake.embeddings.clone()
    }
}
