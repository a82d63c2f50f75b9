//! `sumi-pipeline`: the one library API joining checkpoints, networks and (later) sampling.
//! For now: [`Checkpoint`], a checkpoint opened, identified and ready to build its networks.

pub mod checkpoint;
pub mod error;

pub use checkpoint::Checkpoint;
pub use error::{PipelineError, Result};
