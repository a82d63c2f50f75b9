//! `sumi-pipeline`: the one library API joining checkpoints, networks, prompts and sampling.
//!
//! [`Pipeline::load`] opens a checkpoint ([`Checkpoint`]) and builds its networks;
//! [`Pipeline::generate`] runs a [`Request`] along the data path: `request` (validation) →
//! `image` (init image, resize modes) → `conditioning` → initial latents → `denoise` (U-Net with
//! classifier-free guidance as a sampler's denoiser) → decode → `png` with `infotext`.

pub mod checkpoint;
pub mod composite;
pub mod conditioning;
pub mod denoise;
pub mod error;
pub mod generate;
pub mod image;
pub mod infotext;
pub mod inpaint;
pub mod mask;
pub mod png;
pub mod request;

pub use checkpoint::Checkpoint;
pub use error::{PipelineError, Result};
pub use generate::{Generated, LoadOptions, Pipeline, Progress, Stop};
pub use request::{Img2Img, Inpaint, MaskedContent, Request};
pub use sumi_models::Precision;
