//! The error type of this crate: every variant names the file, tensor or field at fault.

use std::path::PathBuf;

/// Everything that can go wrong while reading weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not in any format Sumi reads.
    #[error(
        "{path}: not a safetensors file, a PyTorch checkpoint or a diffusers folder ({detail})"
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// What was seen.
        detail: String,
    },
    /// A safetensors file whose header or layout is invalid.
    #[error("{path}: invalid safetensors file: {detail}")]
    BadSafetensors {
        /// The file.
        path: PathBuf,
        /// The problem.
        detail: String,
    },
    /// A PyTorch checkpoint (zip + pickle) that could not be read.
    #[error("{path}: invalid PyTorch checkpoint: {detail}")]
    BadCheckpoint {
        /// The file.
        path: PathBuf,
        /// The problem.
        detail: String,
    },
    /// A pickle asked for a global (a callable or class) outside the allow-list.
    #[error("{path}: refused to load: the pickle asks for `{module}.{name}`, which is not a tensor or a plain container (nothing was executed)")]
    ForbiddenGlobal {
        /// The file.
        path: PathBuf,
        /// The global's module.
        module: String,
        /// The global's name.
        name: String,
    },
    /// A diffusers folder that is incomplete or inconsistent.
    #[error("{path}: invalid diffusers folder: {detail}")]
    BadDiffusers {
        /// The folder or file.
        path: PathBuf,
        /// The problem.
        detail: String,
    },
    /// A model config (LDM `.yaml`, diffusers `config.json`) that could not be read.
    #[error("{path}: invalid model config: {detail}")]
    BadConfig {
        /// The file.
        path: PathBuf,
        /// The problem.
        detail: String,
    },
    /// The weights match no known architecture.
    #[error("{path}: unknown model architecture: {detail}")]
    UnknownArchitecture {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        detail: String,
    },
    /// A known architecture that Sumi does not run yet.
    #[error("{path}: {architecture} models are not supported yet")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The architecture's name.
        architecture: String,
    },
    /// A tensor the model needs is absent.
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The canonical tensor name.
        name: String,
    },
    /// A tensor has another shape than the model needs.
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The canonical tensor name.
        name: String,
        /// The shape in the file.
        found: Vec<usize>,
        /// The shape the model needs.
        expected: Vec<usize>,
    },
    /// A tensor's stored dtype cannot be used.
    #[error("{path}: tensor `{name}` has dtype {dtype}, which Sumi cannot use here")]
    BadDtype {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The stored dtype.
        dtype: String,
    },
    /// A LoRA/LyCORIS network file that cannot be used (see [`crate::lora`]).
    #[error("{path}: cannot use this network (LoRA/LyCORIS) file: {detail}")]
    BadNetwork {
        /// The file.
        path: PathBuf,
        /// The problem.
        detail: String,
    },
    /// A hypernetwork file that cannot be used (see [`crate::hypernetwork`]).
    #[error("{path}: cannot use this hypernetwork file: {detail}")]
    BadHypernetwork {
        /// The file.
        path: PathBuf,
        /// The problem.
        detail: String,
    },
    /// An error from the tensor library.
    #[error("{path}: tensor `{name}`: {source}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The underlying error.
        #[source]
        source: Box<candle_core::Error>,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, WeightsError>;

impl WeightsError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
