//! `sumi-models`: the networks of Stable Diffusion 1.x/2.x and SDXL — CLIP text encoders, U-Net,
//! VAE, TAESD — and the upscaler networks, built from a name-scoped `VarBuilder` whose names
//! are the canonical (diffusers/transformers) module paths. Knows nothing of files, prompts or
//! samplers.

pub mod clip;
pub mod error;
pub mod hypernetwork;
pub mod interpolate;
mod kernels;
pub mod networks;
pub mod nn;
pub mod precision;
pub mod profile;
pub mod taesd;
pub mod tome;
pub mod unet;
pub mod unet_blocks;
pub mod upscalers;
pub mod vae;

pub use clip::{ClipConfig, ClipTextModel};
pub use error::{ModelError, Result};
pub use hypernetwork::{Hypernetwork, Hypernetworks};
pub use interpolate::{interpolate, LatentUpscaleMode};
pub use networks::NetworkModule;
pub use precision::Precision;
pub use taesd::{TaesdDecoder, TaesdEncoder};
pub use unet::{fourier_embedding, Extras, UNet, UNetConfig};
pub use vae::{Vae, VaeConfig};
