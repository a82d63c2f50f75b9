//! The error type of this crate.

/// Errors while building or running a network.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation or a weight lookup failed (the message names the tensor).
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// The weights do not describe a network this crate builds.
    #[error("{component}: {detail}")]
    Config {
        /// Which network.
        component: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// An input of the wrong shape.
    #[error("{component}: {detail}")]
    Input {
        /// Which network.
        component: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// An extra network's parts do not fit each other or the layer they change (the shapes
    /// come from the network file).
    #[error("{module} network, {part}: {detail}")]
    Network {
        /// The module type (`LoRA`, `LoHa`, …) or `merge`.
        module: &'static str,
        /// The network part (`lora_up.weight`, `alpha`, …) or `layer`.
        part: String,
        /// What is wrong.
        detail: String,
    },
    /// A precision name that is not `f32`, `bf16` or `auto`.
    #[error("unknown precision `{0}` (expected f32, bf16 or auto)")]
    UnknownPrecision(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

/// Looks up canonical tensor shapes (names relative to the network, e.g. `conv_in.weight`).
pub type Shapes<'a> = &'a dyn Fn(&str) -> Option<Vec<usize>>;
