//! The error type of this crate.

/// Errors of the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A request field with a value Sumi cannot use.
    #[error("{field}: {detail}")]
    Request {
        /// The field, as the user names it.
        field: &'static str,
        /// What is wrong and what is allowed.
        detail: String,
    },
    /// Sampling failed (schedule, noise, sampler).
    #[error(transparent)]
    Sampling(#[from] sumi_sampling::SamplingError),
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
    /// The caller's progress callback asked to stop while the prompts were encoded.
    #[error("interrupted while the prompts were encoded")]
    Interrupted,
    /// An extra-network file that cannot be applied to this model.
    #[error("{path}: {detail}")]
    Network {
        /// The network file.
        path: std::path::PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A prompt A1111 refuses.
    #[error(transparent)]
    Prompt(#[from] sumi_prompt::PromptError),
    /// A textual-inversion embedding that cannot be used.
    #[error(transparent)]
    Embedding(#[from] sumi_weights::embedding::EmbeddingError),
    /// The text encoder failed on a prompt.
    #[error("text encoder: {0}")]
    TextEncoder(#[source] sumi_models::ModelError),
    /// Building the conditioning failed (prompt encoding, embeddings, the schedule's cond).
    #[error("conditioning: {0}")]
    Conditioning(String),
    /// An upscaler cannot be used: an unknown name, a file of unknown architecture, a size
    /// over the limits (boxed: it is large, and rare).
    #[error(transparent)]
    Upscale(Box<crate::upscale::UpscaleError>),
    /// A tensor operation failed, in whichever stage (conditioning, init latents, sampling
    /// glue, decode).
    #[error("tensor operation: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The decoder's output is not an image (wrong channel count or size).
    #[error("decode: {0}")]
    Decode(String),
    /// Sampling or decoding produced NaN or infinite values (A1111's `NansException` from
    /// `devices.test_for_nans`, whose first sentence this message keeps): the picture would
    /// be black or noise. A1111 looks at the first value only (NaN spreads through the
    /// networks, so a NaN there means all NaN) and lets infinities through to be clamped;
    /// Sumi refuses any non-finite value, so a partly NaN picture is an error too, never
    /// black patches.
    #[error(
        "A tensor with NaNs was produced in {stage}. {non_finite} of {values} values are NaN or \
         infinite; {}",
        stage.hint()
    )]
    NonFinite {
        /// The network whose output it is.
        stage: NanStage,
        /// How many values are NaN or ±∞.
        non_finite: usize,
        /// How many values the output has.
        values: usize,
    },
    /// An emphasis mode A1111 does not have.
    #[error("unknown emphasis mode `{0}` (A1111's are Original, No norm, Ignore, None)")]
    UnknownEmphasis(String),
    /// An input image file could not be read.
    #[error("{path}: cannot read the image: {source}")]
    ImageRead {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not an image Sumi can decode.
    #[error("{path}: not a readable image: {reason}")]
    ImageDecode {
        /// The file.
        path: std::path::PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// An image has more pixels than allowed.
    #[error("{path}: the image is {width}x{height}, more than the limit of {max_pixels} pixels")]
    ImageTooLarge {
        /// The file.
        path: std::path::PathBuf,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// The limit on width × height.
        max_pixels: u64,
    },
    /// A width or height that cannot be used.
    #[error("invalid image size {width}x{height}: both sides must be positive")]
    InvalidSize {
        /// The width asked for.
        width: u32,
        /// The height asked for.
        height: u32,
    },
    /// A resize box outside its image (Pillow's rules).
    #[error("resize box {bx:?} does not lie within the {width}x{height} image")]
    InvalidResizeBox {
        /// The box `(x0, y0, x1, y1)`.
        bx: [f32; 4],
        /// The image's width.
        width: u32,
        /// The image's height.
        height: u32,
    },
    /// An unknown resize mode name.
    #[error(
        "unknown resize mode `{0}` (expected just-resize, crop-and-resize, resize-and-fill or latent-upscale)"
    )]
    UnknownResizeMode(String),
    /// An infotext field whose value cannot be read.
    #[error("infotext field `{key}`: cannot read {value:?} as {expected}")]
    InfotextField {
        /// The key.
        key: String,
        /// The raw value.
        value: String,
        /// What was expected (an integer, a number, `WxH`, …).
        expected: &'static str,
    },
    /// The output file exists already; Sumi never overwrites.
    #[error("{path}: the file exists already; refusing to overwrite it")]
    OutputExists {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The folder an output goes to could not be created.
    #[error("{path}: cannot create the output folder: {source}")]
    OutputDir {
        /// The folder.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding or writing a PNG failed.
    #[error("{path}: cannot write the PNG: {reason}")]
    PngWrite {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Encoding an output image (PNG, JPEG or WebP) failed.
    #[error("{path}: cannot encode the image: {reason}")]
    ImageEncode {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Reading the parameters an image file carries failed.
    #[error("{path}: cannot read the image's parameters: {reason}")]
    ParametersRead {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Reading a PNG's text failed.
    #[error("{path}: cannot read the PNG: {reason}")]
    PngRead {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Where non-finite values were found ([`PipelineError::NonFinite`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NanStage {
    /// The latents after sampling (A1111's `"unet"` check).
    Unet,
    /// The decoded pixels (A1111's `"vae"` check), VAE or TAESD.
    Vae,
}

impl NanStage {
    /// What usually causes it.
    fn hint(self) -> &'static str {
        match self {
            NanStage::Unet => {
                "the checkpoint, an embedding or the conditioning holds non-finite values \
                 (e.g. a prompt weight too large for a float, such as `(x:1e400)` written out \
                 in digits), or the precision is too low for this model"
            }
            NanStage::Vae => {
                "the VAE's weights hold non-finite values, or its precision is too low for \
                 these latents (try the VAE in 32-bit floats)"
            }
        }
    }
}

impl std::fmt::Display for NanStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NanStage::Unet => "Unet",
            NanStage::Vae => "VAE",
        })
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, PipelineError>;
