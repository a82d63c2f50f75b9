//! Typed errors of the sampling crate.

use thiserror::Error;

/// Everything that can go wrong in `sumi-sampling`.
#[derive(Debug, Error)]
pub enum SamplingError {
    /// A tensor operation failed inside candle.
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),

    /// A sampler name that is neither an A1111 label nor an alias.
    #[error("unknown sampler '{name}'; valid samplers: {valid}")]
    UnknownSampler {
        /// The name as given.
        name: String,
        /// Comma-separated list of the accepted labels.
        valid: String,
    },

    /// A scheduler (schedule type) name that A1111 does not know.
    #[error("unknown scheduler '{name}'; valid schedulers: {valid}")]
    UnknownScheduler {
        /// The name as given.
        name: String,
        /// Comma-separated list of the accepted labels.
        valid: String,
    },

    /// A noise source name other than GPU, CPU or NV.
    #[error("unknown noise source '{name}'; valid sources: GPU, CPU, NV")]
    UnknownNoiseSource {
        /// The name as given.
        name: String,
    },

    /// A numeric parameter outside its valid range.
    #[error("invalid {what}: {detail}")]
    InvalidParameter {
        /// Which parameter (e.g. "steps", "strength").
        what: &'static str,
        /// Why it is invalid.
        detail: String,
    },

    /// A sigma schedule that a sampler cannot run on.
    #[error("invalid sigma schedule: {0}")]
    InvalidSigmas(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, SamplingError>;
