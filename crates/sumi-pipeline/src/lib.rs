//! `sumi-pipeline`: the one library API joining checkpoints, networks, prompts and sampling.
//!
//! [`Pipeline::load`] opens a checkpoint ([`Checkpoint`]) and builds its networks;
//! [`Pipeline::generate`] runs a [`Request`] along the data path, one stage file each:
//! `request` (validation) → the sampler plan (`sumi_sampling::Plan`) → `init` (the img2img
//! source through `image` and `inpaint`, its latents, the inpainting blend and conditioning) →
//! `conditioning` → `batch` (seeds, noise, the sampler over `denoise`, the U-Net with
//! classifier-free guidance) → `decode` → `png` with `infotext`.
//!
//! It is also the front ends' only door: the request vocabulary ([`vocab`]), the
//! [`checkpoint_report`], the [`prompt_report`], step [`preview`]s and the loaded model's
//! [`embedding_report`].

mod batch;
pub mod cfg_skip;
pub mod checkpoint;
pub mod checkpoint_report;
pub mod composite;
pub mod conditioning;
mod decode;
pub mod denoise;
pub mod embedding_report;
pub mod error;
pub mod exif;
pub mod extras;
pub mod generate;
mod generated_infotext;
pub mod hires;
pub mod image;
pub mod image_check;
pub mod image_file;
pub mod infotext;
pub mod infotext_unapplied;
mod init;
pub mod inpaint;
mod inpaint_cond;
pub mod mask;
pub mod model_source;
pub mod networks;
pub mod output_files;
pub mod photo_size;
pub mod png;
pub mod preview;
pub mod prompt_report;
pub mod refiner;
pub mod request;
pub mod sd_upscale;
pub mod sdxl;
mod sdxl_run;
pub mod taesd_file;
pub mod upscale;
pub mod vocab;

pub use cfg_skip::UncondSkip;
pub use checkpoint::Checkpoint;
pub use decode::{check_finite, to_image};
pub use error::{NanStage, PipelineError, Result};
pub use generate::{Generated, LoadOptions, Pipeline, Progress, Stop};
pub use refiner::{HiresRefinerPass, Refiner, Stages};
pub use request::{Hires, Img2Img, Inpaint, MaskedContent, Request, SdUpscale};
pub use sumi_models::Precision;
pub use sumi_weights::use_hash_cache;
pub use vocab::*;
