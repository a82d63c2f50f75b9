//! The server's real [`Backend`]: each checkpoint loaded as a [`Pipeline`] with the server's
//! load options; step previews from the pipeline's [`Previewer`] (A1111's cheap approximation,
//! or the configured TAESD decoder), in the loaded model's latent space (SD or SDXL).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sumi_pipeline::preview::{PreviewLatents, Previewer};
use sumi_pipeline::{Generated, LoadOptions, Pipeline, PipelineError, Progress, Request, Stop};

use crate::backend::{
    Backend, EmbeddingEntry, Embeddings, Image, JobFailure, Model, Preview, Step,
};

/// Checkpoints as [`Pipeline`]s.
pub struct PipelineBackend {
    load: LoadOptions,
    previewer: Arc<Previewer>,
}

impl PipelineBackend {
    /// A backend loading with `load`, previewing with the TAESD decoder at `preview_decoder`
    /// (else A1111's cheap approximation); fails when the decoder cannot be read.
    pub fn new(load: LoadOptions, preview_decoder: Option<&Path>) -> Result<Self, String> {
        Ok(Self {
            load,
            previewer: Arc::new(Previewer::load(preview_decoder).map_err(|e| e.to_string())?),
        })
    }
}

impl Backend for PipelineBackend {
    fn load(&self, path: &Path) -> Result<Box<dyn Model>, String> {
        let pipe = Pipeline::load(path, &self.load).map_err(|e| e.to_string())?;
        if let Some(why) = self.previewer.missing(pipe.latent_space()) {
            eprintln!("sumi serve: {}: {why}", path.display());
        }
        Ok(Box::new(PipelineModel {
            pipe,
            previewer: self.previewer.clone(),
        }))
    }

    fn taesd_previews(&self) -> bool {
        self.previewer.is_taesd()
    }
}

/// One loaded checkpoint.
struct PipelineModel {
    pipe: Pipeline,
    previewer: Arc<Previewer>,
}

/// A pipeline error as a job failure: the request's fault (422) or the server's (500).
fn failure(e: PipelineError) -> JobFailure {
    JobFailure {
        invalid: matches!(
            e,
            PipelineError::Request { .. }
                | PipelineError::Prompt(_)
                | PipelineError::Embedding(_)
                | PipelineError::UnknownEmphasis(_)
        ),
        message: e.to_string(),
    }
}

impl Model for PipelineModel {
    fn generate(
        &self,
        req: &Request,
        on_step: &mut dyn FnMut(&Step) -> ControlFlow<Stop>,
        on_image: &mut dyn FnMut(Image) -> Result<(), String>,
    ) -> Result<Vec<String>, JobFailure> {
        let space = self.pipe.latent_space();
        let mut step = |p: &Progress<'_>| {
            let preview = PreviewLatents::first(p).map(|latent| {
                let previewer = self.previewer.clone();
                Preview::new(move || previewer.render(&latent, space).map_err(|e| e.to_string()))
            });
            on_step(&Step {
                batch: p.batch * p.passes + p.pass,
                step: p.step,
                steps: p.steps,
                preview,
                encoding: p.denoised.is_none(),
            })
        };
        let mut image = |g: Generated| -> sumi_pipeline::Result<()> {
            let infotext = self.pipe.infotext(req, &g)?;
            on_image(Image {
                pixels: g.image,
                infotext,
                seed: g.seed,
                subseed: g.subseed,
            })
            .map_err(|reason| PipelineError::PngWrite {
                path: PathBuf::from("<response>"),
                reason,
            })
        };
        self.pipe
            .generate_each(req, &mut step, &mut image)
            .map_err(failure)
    }

    fn name(&self) -> Option<String> {
        self.pipe
            .model
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
    }

    fn embeddings(&self) -> Embeddings {
        let r = self.pipe.embedding_report();
        let entry = |e: &sumi_pipeline::embedding_report::EmbeddingInfo| EmbeddingEntry {
            name: e.name.clone(),
            step: e.step,
            shape: e.shape,
            vectors: e.vectors,
        };
        Embeddings {
            loaded: r.loaded.iter().map(entry).collect(),
            skipped: r.skipped.iter().map(|s| entry(&s.embedding)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_requests_faults_are_invalid_the_servers_are_not() {
        let bad = failure(PipelineError::Request {
            field: "steps",
            detail: "0 is outside 1..=500".into(),
        });
        assert!(bad.invalid);
        assert_eq!(
            bad.message,
            PipelineError::Request {
                field: "steps",
                detail: "0 is outside 1..=500".into(),
            }
            .to_string()
        );
        assert!(failure(PipelineError::UnknownEmphasis("Odd".into())).invalid);
        let png = failure(PipelineError::PngWrite {
            path: PathBuf::from("<response>"),
            reason: "disk full".into(),
        });
        assert!(!png.invalid);
        assert!(png.message.contains("disk full"), "{}", png.message);
    }
}
