//! `sumi-weights`: the only crate that knows file formats.
//!
//! [`Weights::open`] reads a checkpoint by content — a validated, memory-mapped safetensors
//! file, a PyTorch zip checkpoint through a pickle reader that executes nothing, or a diffusers
//! folder — and exposes its tensors under one canonical naming (see [`layout`]).
//! [`detect()`] tells the architecture from sentinel tensors; [`sha256_file`] gives A1111's
//! model hash (kept in a cache file as A1111 keeps it, once a front end names one).

pub mod ckpt;
pub mod config;
pub mod detect;
pub mod dtype;
pub mod embedding;
pub mod error;
pub mod hash;
pub mod hash_cache;
pub mod hypernetwork;
pub mod layout;
pub mod lora;
pub mod pickle;
pub mod safetensors;
pub mod store;

pub use detect::{detect, Family, Heads, ModelFacts, Prediction, PredictionSource};
pub use dtype::StorageDtype;
pub use error::{Result, WeightsError};
pub use hash::{sha256_file, ModelHash};
pub use hash_cache::use_hash_cache;
pub use store::{Format, TensorPatch, Weights};
