//! The extra U-Net input of inpainting checkpoints (A1111's `txt2img_image_conditioning` and
//! `inpainting_image_conditioning`): a mask channel and the latents of the masked source.

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::generate::Pipeline;
use crate::init::LatentShape;
use crate::inpaint::MaskParts;

impl Pipeline {
    /// The extra U-Net input of inpainting checkpoints: a mask channel, then the latents of the
    /// masked source (the posterior mean, where A1111 samples it).
    ///
    /// txt2img (A1111's `txt2img_image_conditioning`): a mask of ones and a blank (zero) image.
    /// img2img (`inpainting_image_conditioning`): the mask (rounded when A1111 rounds; ones
    /// without a mask), the source as `torch.lerp(source, source · (1 − mask), weight)`, and the
    /// mask sampled to the latent size by nearest neighbour.
    pub(crate) fn inpainting_conditioning(
        &self,
        shape: LatentShape,
        batch: usize,
        source: Option<&Tensor>,
        mask: Option<&MaskParts>,
        weight: f64,
    ) -> Result<Option<Tensor>> {
        if !self.model.facts.inpaint {
            return Ok(None);
        }
        let (h, w) = (shape.height, shape.width);
        let (mask_px, lat) = match source {
            None => {
                let blank = Tensor::zeros((1, 3, h * 8, w * 8), DType::F32, &self.device)?;
                // A1111's `txt2img_image_conditioning` encodes with `sd_vae_encode_method`,
                // its `inpainting_image_conditioning` (below) always with the VAE
                let lat = self.encode_first_stage(&blank)?;
                (None, lat)
            }
            Some(src) => {
                let (_, _, ph, pw) = src.dims4()?;
                // SDXL inpainting models reach A1111's `inpainting_image_conditioning` through
                // `img2img_image_conditioning`'s `is_sdxl_inpaint` branch, which leaves
                // `round_image_mask` at its default: their mask is rounded whatever the request's
                let always_round = self.clip_g.is_some();
                let m = match mask {
                    Some(m) => {
                        let v: Vec<f32> = m
                            .image_mask
                            .pixels()
                            .map(|p| {
                                let f = f32::from(p[0]) / 255.0;
                                if m.round || always_round {
                                    f.round_ties_even()
                                } else {
                                    f
                                }
                            })
                            .collect();
                        Tensor::from_vec(v, (1, 1, ph, pw), &self.device)?
                    }
                    None => Tensor::ones((1, 1, ph, pw), DType::F32, &self.device)?,
                };
                // torch.lerp(start, end, w): start + w·(end − start) below 0.5, else
                // end − (end − start)·(1 − w)
                let end = src.broadcast_mul(&m.affine(-1.0, 1.0)?)?;
                let diff = (&end - src)?;
                let img = if weight < 0.5 {
                    (src + diff.affine(weight, 0.0)?)?
                } else {
                    (&end - diff.affine(1.0 - weight, 0.0)?)?
                };
                let lat = self.vae.encode(&img).map_err(|e| self.model_err(e))?;
                (Some(m), lat)
            }
        };
        let mask_lat = match mask_px {
            // nearest: latent pixel (i, j) reads mask pixel (8i, 8j)
            Some(m) => {
                let (_, _, ph, pw) = m.dims4()?;
                let rows: Vec<u32> = (0..h).map(|i| ((i * ph) / h) as u32).collect();
                let cols: Vec<u32> = (0..w).map(|j| ((j * pw) / w) as u32).collect();
                let rows = Tensor::new(rows.as_slice(), &self.device)?;
                let cols = Tensor::new(cols.as_slice(), &self.device)?;
                m.index_select(&rows, 2)?.index_select(&cols, 3)?
            }
            None => Tensor::ones((1, 1, h, w), DType::F32, &self.device)?,
        };
        Ok(Some(
            Tensor::cat(&[&mask_lat, &lat], 1)?.repeat((batch, 1, 1, 1))?,
        ))
    }
}
