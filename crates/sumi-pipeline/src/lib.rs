//! `sumi-pipeline`: the one library API joining checkpoints, networks and (later) sampling.
//! For now: [`Checkpoint`], a checkpoint opened, identified and ready to build its networks.

pub mod checkpoint;
pub mod conditioning;
pub mod denoise;
pub mod error;
pub mod generate;
pub mod image;
pub mod infotext;
pub mod png;
pub mod request;

pub use checkpoint::Checkpoint;
pub use error::{PipelineError, Result};
pub use generate::{Generated, LoadOptions, Pipeline, Progress};
pub use request::{Img2Img, Request};
