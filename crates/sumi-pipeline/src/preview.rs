//! Live previews of a running job from a sampler step's prediction of the clean latents:
//! A1111's "Approx cheap" (`sd_vae_approx.cheap_approximation`, a linear projection of the four
//! latent channels to RGB, latent-sized, with SDXL's own coefficients on SDXL models) or a TAESD
//! decoder (full-sized): TAESD's for SD1/SD2 models, TAESDXL's for SDXL ones, as A1111's
//! `sd_vae_taesd.decoder_model` picks them by the model, both fed the raw (U-Net scale)
//! latents. Front ends keep a [`PreviewLatents`] per step (cheap to clone) and render it only
//! when a client asks, so they never handle a tensor.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use sumi_models::TaesdDecoder;

use crate::generate::Progress;

/// A1111's `sd_vae_approx.cheap_approximation` coefficients for SD 1.x/2.x latents:
/// RGB = latentsᵀ · C, then ×0.5 + 0.5.
const CHEAP: [[f32; 3]; 4] = [
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
];

/// The same for SDXL latents (A1111's `is_sdxl` branch).
const CHEAP_SDXL: [[f32; 3]; 4] = [
    [0.3448, 0.4168, 0.4395],
    [-0.1953, -0.0290, 0.0250],
    [0.1074, 0.0886, -0.0163],
    [-0.3730, -0.2499, -0.2088],
];

/// The latent space a model works in: previews project and decode each with its own weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatentSpace {
    /// SD 1.x and 2.x (TAESD's SD decoder).
    Sd,
    /// SDXL (TAESDXL's decoder).
    Sdxl,
}

impl LatentSpace {
    /// `sd` or `sdxl`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sd => "sd",
            Self::Sdxl => "sdxl",
        }
    }
}

/// Why a previewer could not be loaded or a preview made.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// The TAESD decoder file could not be read.
    #[error(transparent)]
    Weights(#[from] sumi_weights::WeightsError),
    /// The TAESD decoder could not be built or run.
    #[error(transparent)]
    Model(#[from] sumi_models::ModelError),
    /// A tensor operation on the latents failed.
    #[error("preview: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The latents are not `[4, h, w]`.
    #[error("{0} latent channels")]
    Channels(usize),
    /// The file is not a TAESD decoder (an encoder).
    #[error("{0}")]
    NotADecoder(String),
    /// The rendered pixels do not fill an image of the rendered size.
    #[error("bad size")]
    Size,
}

/// One image's prediction of the clean latents at a sampler step, `[4, h/8, w/8]` (U-Net
/// scale): what a preview is made from.
#[derive(Debug, Clone)]
pub struct PreviewLatents(Tensor);

impl PreviewLatents {
    /// Image `index` of the batch a step predicted (none when the batch has no such image).
    pub fn of(progress: &Progress<'_>, index: usize) -> Option<Self> {
        Self::from_batch(progress.denoised?, index)
    }

    /// The batch's first image, the one A1111 previews.
    pub fn first(progress: &Progress<'_>) -> Option<Self> {
        Self::of(progress, 0)
    }

    /// Image `index` of batch latents `[batch, 4, h, w]`.
    pub(crate) fn from_batch(batch: &Tensor, index: usize) -> Option<Self> {
        let n = batch.dims().first().copied()?;
        if index < n {
            batch.get(index).ok().map(Self)
        } else {
            None
        }
    }

    /// `(channels, height, width)` of the latents.
    pub fn dims(&self) -> Option<(usize, usize, usize)> {
        self.0.dims3().ok()
    }
}

/// How previews are made.
pub enum Previewer {
    /// A1111's "Approx cheap" linear projection.
    Cheap,
    /// TAESD decoders (A1111's "TAESD"): SD1/SD2's and SDXL's, each where one was found.
    Taesd {
        /// TAESD's SD decoder (`taesd_decoder.safetensors`).
        sd: Option<TaesdDecoder>,
        /// TAESDXL's decoder (`taesdxl_decoder.safetensors`).
        sdxl: Option<TaesdDecoder>,
        /// The file given, for messages.
        path: PathBuf,
    },
}

impl Previewer {
    /// Loads a TAESD decoder file (a raw safetensors file of TAESD's own names), or the cheap
    /// projection when `path` is `None`. The file's name tells TAESD's SD decoder from
    /// TAESDXL's; the other kind is taken from the same folder too where it is there under
    /// its published name (A1111 keeps both in one folder and picks by the model), so a
    /// server switching between SD1 and SDXL checkpoints previews both.
    pub fn load(path: Option<&Path>) -> Result<Self, PreviewError> {
        let Some(p) = path else {
            return Ok(Self::Cheap);
        };
        let xl = crate::taesd_file::named_xl(p);
        let given = Some(decoder(p)?);
        let other = match crate::taesd_file::sibling(p, !xl) {
            Some(q) => Some(decoder(&q)?),
            None => None,
        };
        let (sd, sdxl) = if xl { (other, given) } else { (given, other) };
        Ok(Self::Taesd {
            sd,
            sdxl,
            path: p.to_path_buf(),
        })
    }

    /// Whether this is a TAESD decoder.
    pub fn is_taesd(&self) -> bool {
        matches!(self, Self::Taesd { .. })
    }

    /// Why TAESD previews of `space` fall back to the cheap projection (no decoder of that
    /// kind was found beside the file given), or `None`: for the front ends to say once.
    pub fn missing(&self, space: LatentSpace) -> Option<String> {
        let Self::Taesd { sd, sdxl, path } = self else {
            return None;
        };
        let (found, kind, name) = match space {
            LatentSpace::Sd => (sd.is_some(), "SD1/SD2", crate::taesd_file::SD_DECODER),
            LatentSpace::Sdxl => (sdxl.is_some(), "SDXL", crate::taesd_file::SDXL_DECODER),
        };
        (!found).then(|| {
            format!(
                "previews: no {name} beside {}: {kind} models are previewed with A1111's cheap \
                 approximation",
                path.display()
            )
        })
    }

    /// The preview of one image's predicted clean latents in `space`: latent-sized for the
    /// cheap projection, 8× that for TAESD. With TAESD, a model kind whose decoder was not found
    /// ([`Self::missing`]) gets the cheap projection.
    pub fn render(
        &self,
        latents: &PreviewLatents,
        space: LatentSpace,
    ) -> Result<RgbImage, PreviewError> {
        let latent = &latents.0;
        let t = match (self, space) {
            (Self::Taesd { sd: Some(t), .. }, LatentSpace::Sd)
            | (Self::Taesd { sdxl: Some(t), .. }, LatentSpace::Sdxl) => t,
            _ => return cheap(latent, space),
        };
        let x = latent.to_dtype(DType::F32)?.unsqueeze(0)?;
        let y = t.forward(&x)?;
        let y = (y.get(0)?.clamp(0f32, 1f32)? * 255.0)?.permute((1, 2, 0))?;
        let (h, w, _) = y.dims3()?;
        let bytes: Vec<u8> = y
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|v| v as u8)
            .collect();
        RgbImage::from_raw(w as u32, h as u32, bytes).ok_or(PreviewError::Size)
    }
}

/// A TAESD decoder from `p`, an encoder refused.
fn decoder(p: &Path) -> Result<TaesdDecoder, PreviewError> {
    let w = sumi_weights::Weights::open_raw(p)?;
    if let Some(why) = crate::taesd_file::not_a_decoder(&w) {
        return Err(PreviewError::NotADecoder(format!("{}: {why}", p.display())));
    }
    Ok(TaesdDecoder::new(
        w.var_builder(DType::F32, &Device::Cpu),
        4,
    )?)
}

/// A1111's `cheap_approximation` (its SDXL coefficients for SDXL latents), with its
/// `×0.5 + 0.5`, clamp and truncation to bytes.
fn cheap(latent: &Tensor, space: LatentSpace) -> Result<RgbImage, PreviewError> {
    let coeffs = match space {
        LatentSpace::Sd => &CHEAP,
        LatentSpace::Sdxl => &CHEAP_SDXL,
    };
    let (c, h, w) = latent.dims3()?;
    if c != 4 {
        return Err(PreviewError::Channels(c));
    }
    let v = latent
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let n = h * w;
    let mut out = Vec::with_capacity(n * 3);
    for i in 0..n {
        for ch in 0..3 {
            let x: f32 = coeffs
                .iter()
                .enumerate()
                .map(|(l, c)| v[l * n + i] * c[ch])
                .sum();
            out.push(((x * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0) as u8);
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out).ok_or(PreviewError::Size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latents(v: Vec<f32>, shape: (usize, usize, usize, usize)) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn cheap_preview_is_a1111s_projection() {
        // two images of 1×2 latents (RGB = 0.5 + 0.5·Cᵀl, clamped, ×255 truncated). First:
        // pixel 0 zero, pixel 1 channel 3 at 5 (G and B clamp at 0). Second: pixel 0 channel 0
        // at 1, pixel 1 channel 3 at 2.
        let mut v = vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0];
        v.extend([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]);
        let batch = latents(v, (2, 4, 1, 2));
        let l = PreviewLatents::from_batch(&batch, 1).unwrap();
        assert_eq!(l.dims(), Some((4, 1, 2)));
        let im = Previewer::Cheap.render(&l, LatentSpace::Sd).unwrap();
        assert_eq!(im.dimensions(), (2, 1));
        assert_eq!(im.into_raw(), vec![165, 153, 154, 80, 58, 6]);
        let first = PreviewLatents::from_batch(&batch, 0).unwrap();
        let raw = Previewer::Cheap
            .render(&first, LatentSpace::Sd)
            .unwrap()
            .into_raw();
        assert_eq!(raw, vec![127, 127, 127, 10, 0, 0]);
        assert!(PreviewLatents::from_batch(&batch, 2).is_none());
    }

    #[test]
    fn cheap_preview_refuses_other_channel_counts() {
        let batch = latents(vec![0.0; 6], (1, 3, 1, 2));
        let l = PreviewLatents::from_batch(&batch, 0).unwrap();
        let e = Previewer::Cheap.render(&l, LatentSpace::Sd).unwrap_err();
        assert_eq!(e.to_string(), "3 latent channels");
    }

    #[test]
    fn a_missing_decoder_is_an_error_naming_the_file() {
        let e = Previewer::load(Some(Path::new("/nonexistent/taesd.safetensors")))
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("/nonexistent/taesd.safetensors"),
            "{e}"
        );
        assert!(!Previewer::load(None).unwrap().is_taesd());
    }
}
