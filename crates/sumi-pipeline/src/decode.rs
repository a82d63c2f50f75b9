//! The encode stage (pixels → latents, the VAE or TAESD's encoder) and the decode stage:
//! latents → pixels (the VAE, or TAESD when asked for), A1111's conversion to
//! 8-bit RGB, and inpainting's overlay of the original pixels outside the mask; NaN or
//! infinite latents or pixels are refused (A1111's `devices.test_for_nans`).

use candle_core::{DType, Tensor};
use image::RgbImage;

use crate::error::{NanStage, PipelineError, Result};
use crate::generate::Pipeline;
use crate::inpaint::MaskParts;

impl Pipeline {
    /// U-Net-scale latents of pictures `[b, 3, h, w]` in [-1, 1], as A1111's
    /// `images_tensor_to_samples` makes them: the VAE, or the TAESD encoder where one was given
    /// (A1111's `sd_vae_encode_method` "TAESD", which takes the pictures in [0, 1]).
    pub(crate) fn encode_first_stage(&self, x: &Tensor) -> Result<Tensor> {
        match &self.taesd_encoder {
            Some(t) => t
                .forward(&x.affine(0.5, 0.5)?)
                .map_err(|e| self.model_err(e)),
            None => self.vae.encode(x).map_err(|e| self.model_err(e)),
        }
    }

    /// Pictures `[b, 3, h, w]` in [-1, 1] of U-Net-scale latents, as A1111's
    /// `decode_first_stage` makes them: the VAE, or TAESD's decoder where one was given (A1111's
    /// `sd_vae_decode_method` "TAESD").
    pub(crate) fn decode_first_stage(&self, latents: &Tensor) -> Result<Tensor> {
        Ok(match &self.taesd {
            // TAESD decodes to [0, 1]; bring it to the VAE's [-1, 1]
            Some(t) => t
                .forward(latents)
                .map_err(|e| self.model_err(e))?
                .affine(2.0, -1.0)?,
            None => self.vae.decode(latents).map_err(|e| self.model_err(e))?,
        })
    }

    /// A1111's `VAE Decoder: TAESD` (its `sd_vae_decode_method` "TAESD"), added to the infotext
    /// as the pictures are decoded, after the keys of the sampling.
    pub(crate) fn vae_decoder_param(&self) -> Option<(String, String)> {
        self.taesd.is_some().then(|| taesd_param("VAE Decoder"))
    }

    /// The pictures of a batch of latents `[batch, 4, h/8, w/8]`, each with the original pixels
    /// outside `mask` put back over it.
    pub(crate) fn decode(
        &self,
        latents: &Tensor,
        mask: Option<&MaskParts>,
    ) -> Result<Vec<RgbImage>> {
        let pixels = self.decode_first_stage(latents)?;
        (0..pixels.dim(0)?)
            .map(|i| {
                let image = to_image(&pixels.get(i)?)?;
                match mask {
                    Some(m) => crate::composite::apply_overlay(&image, m.paste_to, &m.overlay),
                    None => Ok(image),
                }
            })
            .collect()
    }
}

/// The infotext key `key` (`VAE Encoder`, `VAE Decoder`) with A1111's value for TAESD.
pub(crate) fn taesd_param(key: &str) -> (String, String) {
    (key.to_string(), "TAESD".to_string())
}

/// Refuses `x` if any of its values is NaN or infinite ([`PipelineError::NonFinite`], naming
/// `stage`): A1111's `devices.test_for_nans(x, stage)`, but over every value (A1111 tests the
/// first one only, and only for NaN).
pub fn check_finite(x: &Tensor, stage: NanStage) -> Result<()> {
    let values = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let non_finite = values.iter().filter(|v| !v.is_finite()).count();
    if non_finite == 0 {
        return Ok(());
    }
    Err(PipelineError::NonFinite {
        stage,
        non_finite,
        values: values.len(),
    })
}

/// A1111's conversion of a decoded image: `(x + 1) / 2` clamped to [0, 1], × 255, truncated.
/// Pixels that are NaN or infinite are an error ([`PipelineError::NonFinite`] in the VAE)
/// where A1111 would clamp them to black or white.
pub fn to_image(x: &Tensor) -> Result<RgbImage> {
    let (c, h, w) = x.dims3()?;
    if c != 3 {
        return Err(PipelineError::Decode(format!(
            "decoded image has {c} channels"
        )));
    }
    check_finite(x, NanStage::Vae)?;
    let x = ((x.to_dtype(DType::F32)? + 1.0)? / 2.0)?.clamp(0f32, 1f32)?;
    let x = (x * 255.0)?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let bytes: Vec<u8> = x.into_iter().map(|v| v as u8).collect();
    RgbImage::from_raw(w as u32, h as u32, bytes)
        .ok_or_else(|| PipelineError::Decode("decoded image has the wrong size".into()))
}
