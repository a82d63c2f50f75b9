//! LoRA and LyCORIS network files as A1111 v1.10.1 finds, names and reads them
//! (`extensions-builtin/Lora/`): the file side only; the weight arithmetic lives in
//! `sumi-models` (`networks`).
//!
//! * [`NetworkLibrary`]: the LoRA folders walked, each file named by its stem and aliased by
//!   its `ss_output_name`, with A1111's lookup of a prompt's `<lora:NAME:…>`;
//!   [`NetworkOnDisk::hash`] gives A1111's hash (`Lora hashes` in the infotext).
//! * [`TargetIndex`]: the model's layers under A1111's module names, built from the
//!   canonical tensor names, with A1111's key-matching rules ([`TargetIndex::resolve`]).
//! * [`read_network`]: one file read against a model: its tensors (f32, CPU) grouped by the
//!   layer they change, the keys that match nothing, its bundled embeddings.
//!
//! Everything read is untrusted: safetensors headers are validated before use, PyTorch files
//! go through the restricted pickle reader, and the number of tensors and the bytes handed
//! out are bounded ([`MAX_NETWORK_TENSORS`], [`MAX_NETWORK_F32_BYTES`]).

mod convert;
pub mod hash;
pub mod library;
pub mod read;
pub mod targets;

pub use hash::addnet_hash;
pub use library::{NetworkLibrary, NetworkOnDisk, SdVersion, MAX_WALK_DEPTH};
pub use read::{
    read_network, BundledEmbedding, InertModule, LoadedNetwork, NetworkTarget,
    MAX_NETWORK_F32_BYTES, MAX_NETWORK_TENSORS,
};
pub use targets::{AttentionPart, Inert, Resolved, Target, TargetIndex};
