//! The worker: one thread owning the [`Pipeline`], taking jobs from the queue one at a time,
//! reporting progress, honouring interrupt/skip and cancelled clients at every sampler step.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use sumi_pipeline::{Generated, Pipeline, PipelineError, Stop};

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

/// Starts the worker thread; it ends when the queue is closed and empty.
pub fn spawn(state: Arc<AppState>, pipe: Pipeline) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sumi-worker".into())
        .spawn(move || run(&state, pipe))
}

fn run(state: &AppState, mut pipe: Pipeline) {
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
        let outcome = match task {
            Task::Generate(p) => {
                let t0 = Instant::now();
                let r = match &p.checkpoint {
                    None => guarded(state, || generate(state, &pipe, &p, &cancel)),
                    Some(sw) => match Pipeline::load(&sw.path, &state.config.load) {
                        Err(e) => Err(JobFailure {
                            invalid: false,
                            message: format!("cannot load {}: {e}", sw.path.display()),
                        }),
                        Ok(other) => {
                            let r = guarded(state, || generate(state, &other, &p, &cancel));
                            if !sw.restore {
                                pipe = other;
                                *state.current.lock().unwrap_or_else(|e| e.into_inner()) =
                                    sw.path.clone();
                            }
                            r
                        }
                    },
                };
                let kind = match &r {
                    Ok(_) if cancel.load(Ordering::SeqCst) => JobOutcome::Cancelled,
                    Ok(o) if o.interrupted => JobOutcome::Interrupted,
                    Ok(_) => JobOutcome::Ok,
                    Err(_) => JobOutcome::Error,
                };
                state.metrics.job(kind, t0.elapsed().as_secs_f64());
                Outcome::Generated(r.map(Box::new))
            }
            Task::Load(path) => Outcome::Loaded(
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    load(state, &mut pipe, path)
                }))
                .unwrap_or_else(|_| Err("internal error while loading".into())),
            ),
        };
        state.running.store(false, Ordering::SeqCst);
        let _ = reply.send(outcome);
    }
}

/// Runs a generation, turning a panic inside the pipeline into a failed job, so the worker
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

fn load(state: &AppState, pipe: &mut Pipeline, path: PathBuf) -> Result<(), String> {
    let p = Pipeline::load(&path, &state.config.load).map_err(|e| e.to_string())?;
    *pipe = p;
    *state.current.lock().unwrap_or_else(|e| e.into_inner()) = path;
    Ok(())
}

fn generate(
    state: &AppState,
    pipe: &Pipeline,
    job: &Prepared,
    cancel: &std::sync::atomic::AtomicBool,
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
        p.begin(name, req.batch_count);
        out.job_timestamp = p.job_timestamp.clone();
    }
    let mut last = Instant::now();
    let mut interrupted = false;
    let mut on_step = |p: &sumi_pipeline::Progress<'_>| {
        let now = Instant::now();
        state.metrics.step(now.duration_since(last).as_secs_f64());
        last = now;
        let latent = p.denoised.get(0).ok();
        state
            .progress_lock()
            .step(p.batch, p.step + 1, p.steps, latent);
        if cancel.load(Ordering::SeqCst) {
            return ControlFlow::Break(Stop::Interrupt);
        }
        match state.control.load(Ordering::SeqCst) {
            INTERRUPT => {
                interrupted = true;
                ControlFlow::Break(Stop::Interrupt)
            }
            SKIP => {
                state.control.store(RUN, Ordering::SeqCst);
                ControlFlow::Break(Stop::Skip)
            }
            _ => ControlFlow::Continue(()),
        }
    };
    let mut on_image = |g: Generated| -> sumi_pipeline::Result<()> {
        let info = pipe.infotext(req, &g)?;
        if out.infotexts.is_empty() {
            out.model_name = info.model.clone();
            out.model_hash = info.model_hash.clone();
            out.vae_name = info.vae.clone();
            out.vae_hash = info.vae_hash.clone();
        }
        let text = info.to_string();
        if job.send_images {
            let png = sumi_pipeline::png::encode_png(&g.image, Some(&text)).map_err(|reason| {
                PipelineError::PngWrite {
                    path: PathBuf::from("<response>"),
                    reason,
                }
            })?;
            out.images.push(encode_base64(&png));
        }
        out.infotexts.push(text);
        out.seeds.push(g.seed);
        out.subseeds.push(g.subseed);
        Ok(())
    };
    let r = pipe.generate_each(req, &mut on_step, &mut on_image);
    state.progress_lock().end();
    state.control.store(RUN, Ordering::SeqCst);
    r.map_err(|e| JobFailure {
        invalid: matches!(
            e,
            PipelineError::Request { .. }
                | PipelineError::Prompt(_)
                | PipelineError::Embedding(_)
                | PipelineError::UnknownEmphasis(_)
        ),
        message: e.to_string(),
    })?;
    if out.model_name.is_none() {
        out.model_name = pipe
            .model
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
    }
    out.interrupted = interrupted;
    out.info = crate::info::processed_js(job, &out);
    Ok(out)
}
