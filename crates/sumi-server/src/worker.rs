//! The worker: one thread owning the loaded [`Model`], taking jobs from the queue one at a time,
//! reporting progress, honouring interrupt/skip and cancelled clients at every sampler step.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sumi_pipeline::Stop;

use crate::backend::{Backend, Image, Model, Step};
use crate::convert::Prepared;
use crate::images::encode_base64;
use crate::metrics::JobOutcome;
use crate::queue::{GenOutput, Job, JobFailure, Outcome, Task};
use crate::AppState;

/// No stop asked.
pub const RUN: u8 = 0;
/// Skip the current batch.
pub const SKIP: u8 = 1;
/// Interrupt the job.
pub const INTERRUPT: u8 = 2;

/// Starts the worker thread with the model loaded at start; it ends when the queue is closed
/// and empty. A panic in a job (a checkpoint that cannot load, a model that fails) fails that
/// job only; should the thread end otherwise, `AppState::worker_alive` turns false and the
/// waiting jobs are answered.
pub fn spawn(
    state: Arc<AppState>,
    backend: Arc<dyn Backend>,
    model: Box<dyn Model>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sumi-worker".into())
        .spawn(move || run(&state, &*backend, model))
}

/// Marks the worker gone when its thread ends, however it ends: `/ready` turns false, the
/// running flag drops (so a shutdown does not wait on it), and the queue is closed with every
/// waiting job answered.
struct Alive<'a>(&'a AppState);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        let state = self.0;
        state.worker_alive.store(false, Ordering::SeqCst);
        state.running.store(false, Ordering::SeqCst);
        for job in state.queue.close() {
            state.metrics.job(JobOutcome::Cancelled, 0.0);
            let _ = job
                .reply
                .send(Outcome::Cancelled("the generation worker stopped"));
        }
    }
}

fn run(state: &AppState, backend: &dyn Backend, mut model: Box<dyn Model>) {
    let _alive = Alive(state);
    while let Some(job) = state.queue.pop() {
        let Job {
            cancel,
            task,
            reply,
            ..
        } = job;
        if cancel.load(Ordering::SeqCst) {
            state.metrics.job(JobOutcome::Cancelled, 0.0);
            let _ = reply.send(Outcome::Cancelled("the client went away"));
            continue;
        }
        state.running.store(true, Ordering::SeqCst);
        let load = matches!(task, Task::Load(_));
        // whatever panics in a job fails that job only; the model in hand stays current
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            execute(state, backend, &mut model, task, &cancel)
        }))
        .unwrap_or_else(|_| {
            state.progress_lock().end();
            state.control.store(RUN, Ordering::SeqCst);
            let message = "internal error in the worker".to_string();
            if load {
                Outcome::Loaded(Err(message))
            } else {
                state.metrics.job(JobOutcome::Error, 0.0);
                Outcome::Generated(Err(JobFailure {
                    invalid: false,
                    message,
                }))
            }
        });
        state.running.store(false, Ordering::SeqCst);
        let _ = reply.send(outcome);
    }
}

/// Runs one job.
fn execute(
    state: &AppState,
    backend: &dyn Backend,
    model: &mut Box<dyn Model>,
    task: Task,
    cancel: &AtomicBool,
) -> Outcome {
    match task {
        // the images are decoded now, the job admitted: one job's pixels at a time
        Task::Generate(mut p) => match p.decode_uploads() {
            Ok(()) => Outcome::Generated(generate_job(state, backend, model, &p, cancel)),
            Err(e) => {
                state.metrics.rejected("bad_image");
                Outcome::Refused(e)
            }
        },
        Task::Run(work) => {
            (work.0)(cancel);
            Outcome::Ran
        }
        Task::Load(path) => Outcome::Loaded(
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let m = backend.load(&path)?;
                make_current(state, model, m, path);
                Ok(())
            }))
            .unwrap_or_else(|_| Err("internal error while loading".into())),
        ),
    }
}

/// Makes `new` the current model (loaded from `path`): its embeddings are listed from now on.
/// Nothing changes when listing them panics (the panic goes on to the caller).
fn make_current(state: &AppState, model: &mut Box<dyn Model>, new: Box<dyn Model>, path: PathBuf) {
    let embeddings = new.embeddings();
    *state.embeddings_lock() = embeddings;
    *model = new;
    *state.current.lock().unwrap_or_else(|e| e.into_inner()) = path;
}

/// A generation job on the current model, or on the checkpoint it names (then kept current
/// unless it asks to restore), with its metrics.
fn generate_job(
    state: &AppState,
    backend: &dyn Backend,
    model: &mut Box<dyn Model>,
    p: &Prepared,
    cancel: &AtomicBool,
) -> Result<Box<GenOutput>, JobFailure> {
    let t0 = Instant::now();
    let r = match &p.checkpoint {
        None => guarded(state, || generate(state, &**model, p, cancel)),
        Some(sw) => {
            let loaded =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| backend.load(&sw.path)))
                    .unwrap_or_else(|_| Err("internal error while loading".into()));
            match loaded {
                Err(e) => Err(JobFailure {
                    invalid: false,
                    message: format!("cannot load {}: {e}", sw.path.display()),
                }),
                Ok(other) => {
                    let r = guarded(state, || generate(state, &*other, p, cancel));
                    if !sw.restore {
                        // the images are made; a checkpoint that cannot become current is
                        // left, and the current one stays
                        let kept = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            make_current(state, model, other, sw.path.clone());
                        }));
                        if kept.is_err() {
                            eprintln!(
                                "sumi serve: {} cannot stay loaded; the current checkpoint stays",
                                sw.path.display()
                            );
                        }
                    }
                    r
                }
            }
        }
    };
    let kind = match &r {
        Ok(_) if cancel.load(Ordering::SeqCst) => JobOutcome::Cancelled,
        Ok(o) if o.interrupted => JobOutcome::Interrupted,
        Ok(_) => JobOutcome::Ok,
        Err(_) => JobOutcome::Error,
    };
    state.metrics.job(kind, t0.elapsed().as_secs_f64());
    r.map(Box::new)
}

/// Runs a generation, turning a panic inside the model into a failed job, so the worker
/// (and every later job) lives on.
fn guarded(
    state: &AppState,
    f: impl FnOnce() -> Result<GenOutput, JobFailure>,
) -> Result<GenOutput, JobFailure> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        state.progress_lock().end();
        state.control.store(RUN, Ordering::SeqCst);
        Err(JobFailure {
            invalid: false,
            message: "internal error in the pipeline".into(),
        })
    })
}

/// What a sampler step asks of the run: the client gone or an interrupt stop it, a skip stops
/// the batch (once).
fn stop_request(
    state: &AppState,
    cancel: &AtomicBool,
    interrupted: &mut bool,
) -> ControlFlow<Stop> {
    if cancel.load(Ordering::SeqCst) {
        return ControlFlow::Break(Stop::Interrupt);
    }
    match state.control.load(Ordering::SeqCst) {
        INTERRUPT => {
            *interrupted = true;
            ControlFlow::Break(Stop::Interrupt)
        }
        SKIP => {
            state.control.store(RUN, Ordering::SeqCst);
            ControlFlow::Break(Stop::Skip)
        }
        _ => ControlFlow::Continue(()),
    }
}

fn generate(
    state: &AppState,
    model: &dyn Model,
    job: &Prepared,
    cancel: &AtomicBool,
) -> Result<GenOutput, JobFailure> {
    let req = &job.request;
    let name = if req.img2img.is_some() {
        "img2img"
    } else {
        "txt2img"
    };
    state.control.store(RUN, Ordering::SeqCst);
    let mut out = GenOutput::default();
    {
        let mut p = state.progress_lock();
        // A1111 counts the hires fix's second pass as a job of its own, and SD upscale's
        // batches of tiles
        let jobs = match &req.sd_upscale {
            Some(s) => s.job_count(req),
            None => req.batch_count * (1 + u32::from(req.hires.is_some())),
        };
        p.begin(name, jobs);
        out.job_timestamp = p.job_timestamp.clone();
    }
    let mut last = Instant::now();
    let mut interrupted = false;
    let mut on_step = |s: &Step| {
        if s.encoding {
            // the prompts are being encoded or an upscaler runs: no step to count or show, an
            // interrupt stops here; a skip is left for the sampler's next step
            if state.control.load(Ordering::SeqCst) == SKIP && !cancel.load(Ordering::SeqCst) {
                return ControlFlow::Continue(());
            }
            return stop_request(state, cancel, &mut interrupted);
        }
        let now = Instant::now();
        state.metrics.step(now.duration_since(last).as_secs_f64());
        last = now;
        state
            .progress_lock()
            .step(s.batch, s.step + 1, s.steps, s.preview.clone());
        stop_request(state, cancel, &mut interrupted)
    };
    let mut saved = job
        .save_images
        .then(|| sumi_pipeline::output_files::NumberedFolder::new(&state.config.outdir));
    let mut on_image = |g: Image| -> Result<(), String> {
        let info = &g.infotext;
        if out.infotexts.is_empty() {
            out.model_name = info.model.clone();
            out.model_hash = info.model_hash.clone();
            out.vae_name = info.vae.clone();
            out.vae_hash = info.vae_hash.clone();
        }
        let text = info.to_string();
        if job.send_images || saved.is_some() {
            let png = sumi_pipeline::png::encode_png(&g.pixels, Some(&text))?;
            if let Some(folder) = &mut saved {
                folder.write(&png).map_err(|e| e.to_string())?;
            }
            if job.send_images {
                out.images.push(encode_base64(&png));
            }
        }
        out.infotexts.push(text);
        out.seeds.push(g.seed);
        out.subseeds.push(g.subseed);
        Ok(())
    };
    let r = model.generate(req, &mut on_step, &mut on_image);
    state.progress_lock().end();
    state.control.store(RUN, Ordering::SeqCst);
    out.warnings = job.warnings.clone();
    out.warnings.extend(r?);
    if out.model_name.is_none() {
        out.model_name = model.name();
    }
    out.interrupted = interrupted;
    out.info = crate::info::processed_js(job, &out);
    Ok(out)
}
