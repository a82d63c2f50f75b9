//! How the hires fix enlarges the first pass: one of A1111's six latent modes
//! (`torch.nn.functional.interpolate` of the latents) or an image upscaler over the decoded
//! pictures (`images.resize_image(0, …, upscaler_name)`).

use candle_core::Tensor;
use image::RgbImage;
use sumi_models::interpolate::{interpolate, LatentUpscaleMode};

use crate::error::{PipelineError, Result};
use std::ops::ControlFlow;

use crate::upscale::{resize_with_upscaler, TileOptions, TileProgress, UpscalerRegistry};

/// A1111's latent upscale modes (`shared.latent_upscale_modes`), in its listing order.
pub const LATENT_UPSCALE_MODES: [LatentUpscaleMode; 6] = LatentUpscaleMode::ALL;

/// What `hr_upscaler` names.
#[derive(Debug, Clone, PartialEq)]
pub enum HiresUpscaler {
    /// Resize the latents.
    Latent(LatentUpscaleMode),
    /// Decode, resize the pictures with this image upscaler, encode again.
    Image(String),
}

impl HiresUpscaler {
    /// A1111's lookup: a latent mode by name, else an image upscaler; no name is A1111's
    /// default mode, `Latent`.
    pub fn parse(name: Option<&str>) -> Self {
        match name {
            None => Self::Latent(LatentUpscaleMode::Bilinear),
            Some(n) => match LatentUpscaleMode::from_a1111_name(n) {
                Some(m) => Self::Latent(m),
                None => Self::Image(n.to_string()),
            },
        }
    }
}

/// The latents `[n, 4, h, w]` resized to `height × width` latent pixels as torch does.
pub(crate) fn resize_latents(
    x: &Tensor,
    height: usize,
    width: usize,
    mode: LatentUpscaleMode,
) -> Result<Tensor> {
    interpolate(x, height, width, mode).map_err(|source| PipelineError::Model {
        path: "<latent upscale>".into(),
        source,
    })
}

/// A1111's `images.resize_image(0, im, width, height, upscaler_name)`: the image upscaler
/// where the picture grows, then Lanczos to the exact size. `on_tile` is asked between a
/// model's tiles whether to interrupt (A1111's `state.interrupted`).
pub(crate) fn resize_pictures(
    upscalers: &UpscalerRegistry,
    im: &RgbImage,
    (width, height): (u32, u32),
    name: &str,
    on_tile: &mut dyn FnMut(TileProgress) -> ControlFlow<()>,
) -> Result<RgbImage> {
    let up = upscalers.get(name)?;
    resize_with_upscaler(im, width, height, up, TileOptions::default(), on_tile)
}
