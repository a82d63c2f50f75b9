//! The error type of this crate.

/// Errors of the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading or identifying the weights failed.
    #[error(transparent)]
    Weights(#[from] sumi_weights::WeightsError),
    /// Building or running a network failed.
    #[error("{path}: {source}")]
    Model {
        /// The checkpoint.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: sumi_models::ModelError,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, PipelineError>;
