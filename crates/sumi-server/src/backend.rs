//! What the worker needs of a model, as two small traits: a [`Backend`] loads checkpoints
//! (the one at start, a switch, a checkpoint for one request) and a loaded [`Model`] generates a
//! job with step progress, stop requests and previews, hands over each image with its infotext,
//! and lists its embeddings.
//!
//! The server runs [`crate::pipeline_backend::PipelineBackend`] (a `sumi_pipeline::Pipeline` per
//! checkpoint); tests run the HTTP layer against a fake one, without a model. Signatures use
//! only `sumi-pipeline`'s request vocabulary and plain data.

use std::fmt;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use image::RgbImage;
use sumi_pipeline::infotext::Infotext;
use sumi_pipeline::{Request, Stop};

/// A live preview of one sampler step, rendered only when a client asks for it
/// (`/sdapi/v1/progress` without `skip_current_image`).
#[derive(Clone)]
pub struct Preview(Arc<dyn Fn() -> Result<RgbImage, String> + Send + Sync>);

impl Preview {
    /// A preview made by `render` on demand.
    pub fn new(render: impl Fn() -> Result<RgbImage, String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(render))
    }

    /// The preview's pixels.
    pub fn render(&self) -> Result<RgbImage, String> {
        (self.0)()
    }
}

impl fmt::Debug for Preview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Preview")
    }
}

/// One finished sampler step of a running job.
#[derive(Debug, Clone)]
pub struct Step {
    /// Job index (0-based) in A1111's count: the batch, or with the hires fix
    /// `2 · batch + pass`.
    pub batch: u32,
    /// Sampler step (0-based).
    pub step: usize,
    /// Sampler steps in this batch's run.
    pub steps: usize,
    /// The preview of the batch's first image at this step, if one can be made.
    pub preview: Option<Preview>,
    /// Not a sampler step: the prompts are being encoded (only an interrupt is asked for).
    pub encoding: bool,
}

/// One generated image with what made it.
#[derive(Debug, Clone)]
pub struct Image {
    /// The pixels.
    pub pixels: RgbImage,
    /// A1111's infotext of this image (its seed, the model's name and hash, …).
    pub infotext: Infotext,
    /// Its seed.
    pub seed: u64,
    /// Its variation seed.
    pub subseed: u64,
}

/// Why a generation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    /// The request was at fault (a field or prompt the model refused): a 422, not a 500.
    pub invalid: bool,
    /// What went wrong.
    pub message: String,
}

/// One textual-inversion embedding, as `/sdapi/v1/embeddings` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingEntry {
    /// The name prompts use (the file stem).
    pub name: String,
    /// The training step recorded in the file.
    pub step: Option<i64>,
    /// The width of its vectors.
    pub shape: usize,
    /// How many vectors (tokens) it takes.
    pub vectors: usize,
}

/// The embeddings of a loaded model: those prompts can use and those it skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Embeddings {
    /// Usable in prompts.
    pub loaded: Vec<EmbeddingEntry>,
    /// Found but not usable with this model (another text encoder width).
    pub skipped: Vec<EmbeddingEntry>,
}

/// Loads checkpoints. Shared by the handlers' threads and the worker.
pub trait Backend: Send + Sync {
    /// Loads the checkpoint at `path` (a failure says why, for a 500 or a start-up error).
    fn load(&self, path: &Path) -> Result<Box<dyn Model>, String>;

    /// Whether previews are TAESD decodes (full size) rather than A1111's cheap approximation.
    fn taesd_previews(&self) -> bool;
}

/// A loaded checkpoint, owned by the worker thread.
pub trait Model: Send {
    /// Runs `req`: `on_step` sees every sampler step and may stop the run
    /// ([`Stop::Interrupt`]: the current batch is handed over, later ones are not run;
    /// [`Stop::Skip`]: the current batch is handed over, the next one starts); `on_image` gets
    /// each image as soon as its batch is done (an error from it ends the run). Returns the
    /// warnings: what the request asked for and was not applied.
    fn generate(
        &self,
        req: &Request,
        on_step: &mut dyn FnMut(&Step) -> ControlFlow<Stop>,
        on_image: &mut dyn FnMut(Image) -> Result<(), String>,
    ) -> Result<Vec<String>, JobFailure>;

    /// The checkpoint's name (its file stem), for `sd_model_name`.
    fn name(&self) -> Option<String>;

    /// The embeddings this model uses in prompts.
    fn embeddings(&self) -> Embeddings;
}
