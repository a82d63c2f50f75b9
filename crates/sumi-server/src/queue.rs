//! The bounded job queue between the HTTP handlers and the one worker thread that owns the
//! pipeline. Pushing never blocks: a full queue is an error the handler turns into 429.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::oneshot;

pub use crate::backend::JobFailure;
use crate::convert::Prepared;

/// What a job asks the worker to do.
#[derive(Debug)]
pub enum Task {
    /// Generate images.
    Generate(Box<Prepared>),
    /// Load another checkpoint and make it current.
    Load(PathBuf),
    /// Other work that takes its turn in the queue as A1111 runs it under its queue lock (an
    /// Extras upscale): called with the job's cancel flag; it sends its own answer.
    Run(Work),
}

/// The work of a [`Task::Run`].
pub struct Work(pub Box<dyn FnOnce(&AtomicBool) + Send>);

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Work")
    }
}

/// One generated image set, ready to send.
#[derive(Debug, Clone, Default)]
pub struct GenOutput {
    /// Base64 PNGs, each with its infotext in the `parameters` chunk (empty when not sent).
    pub images: Vec<String>,
    /// One infotext per image.
    pub infotexts: Vec<String>,
    /// Each image's seed.
    pub seeds: Vec<u64>,
    /// Each image's variation seed.
    pub subseeds: Vec<u64>,
    /// Stopped by an interrupt.
    pub interrupted: bool,
    /// The checkpoint's name (file stem) and short hash, the VAE's likewise.
    pub model_name: Option<String>,
    /// The checkpoint's short hash.
    pub model_hash: Option<String>,
    /// The external VAE's name.
    pub vae_name: Option<String>,
    /// The external VAE's short hash.
    pub vae_hash: Option<String>,
    /// When the job started (A1111's `job_timestamp`, `YYYYmmddHHMMSS`).
    pub job_timestamp: String,
    /// The response's `info`: A1111's `Processed.js()` JSON text.
    pub info: String,
    /// What the request asked for and was not applied (an unknown LoRA, …): `info`'s
    /// `warnings`.
    pub warnings: Vec<String>,
}

/// What the worker answers.
#[derive(Debug)]
pub enum Outcome {
    /// A generation's result (an error message on failure).
    Generated(Result<Box<GenOutput>, JobFailure>),
    /// A model switch's result.
    Loaded(Result<(), String>),
    /// A [`Task::Run`] ran (its answer went its own way).
    Ran,
    /// The job was refused when its turn came (an uploaded image whose pixels cannot be
    /// decoded): the answer to send.
    Refused(crate::error::ApiError),
    /// The job never ran (its client went away, or the server is shutting down).
    Cancelled(&'static str),
}

/// A queued job.
#[derive(Debug)]
pub struct Job {
    /// A sequence number.
    pub id: u64,
    /// Set when the client has gone: skip it if queued, stop it if running.
    pub cancel: Arc<AtomicBool>,
    /// The work.
    pub task: Task,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Outcome>,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// `capacity` jobs are waiting already.
    Full,
    /// The server is shutting down.
    Closed,
}

#[derive(Debug, Default)]
struct Inner {
    waiting: VecDeque<Job>,
    closed: bool,
}

/// A bounded FIFO of jobs, `capacity` waiting at most (the running one not counted).
#[derive(Debug)]
pub struct Queue {
    inner: Mutex<Inner>,
    ready: Condvar,
    capacity: usize,
}

impl Queue {
    /// An empty queue holding up to `capacity` waiting jobs.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ready: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many jobs may wait.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues a job unless the queue is full or closed (the job comes back then). Jobs whose
    /// clients have left are dropped first, so they hold no place; their number is returned.
    pub fn push(&self, job: Job) -> Result<usize, (Box<Job>, PushError)> {
        let mut q = self.lock();
        if q.closed {
            return Err((Box::new(job), PushError::Closed));
        }
        let before = q.waiting.len();
        q.waiting.retain(|j| !j.cancel.load(Ordering::SeqCst));
        let dropped = before - q.waiting.len();
        if q.waiting.len() >= self.capacity {
            return Err((Box::new(job), PushError::Full));
        }
        q.waiting.push_back(job);
        self.ready.notify_one();
        Ok(dropped)
    }

    /// Queues a control job (a model switch) whatever the capacity.
    pub fn push_control(&self, job: Job) -> Result<usize, (Box<Job>, PushError)> {
        let mut q = self.lock();
        if q.closed {
            return Err((Box::new(job), PushError::Closed));
        }
        q.waiting.push_back(job);
        self.ready.notify_one();
        Ok(0)
    }

    /// The next job, waiting for one; `None` once the queue is closed and empty.
    pub fn pop(&self) -> Option<Job> {
        let mut q = self.lock();
        loop {
            if let Some(j) = q.waiting.pop_front() {
                return Some(j);
            }
            if q.closed {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Jobs waiting now (cancelled ones not counted).
    pub fn depth(&self) -> usize {
        self.lock()
            .waiting
            .iter()
            .filter(|j| !j.cancel.load(Ordering::SeqCst))
            .count()
    }

    /// Refuses new jobs from now on and hands back the waiting ones.
    pub fn close(&self) -> Vec<Job> {
        let mut q = self.lock();
        q.closed = true;
        self.ready.notify_all();
        q.waiting.drain(..).collect()
    }
}
