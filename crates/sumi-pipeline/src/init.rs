//! The init stage: what img2img starts from, prepared once for all batches — the source picture
//! (with its mask) at the processing size, its latents (A1111's `init_latent`, the VAE's
//! posterior mean at U-Net scale, with the masked content applied), inpainting's latent blend,
//! and the extra U-Net input of inpainting checkpoints.

use candle_core::Tensor;
use sumi_sampling::{ImageRng, ImageRngOptions};

use crate::error::Result;
use crate::generate::Pipeline;
use crate::image::{to_tensor, ResizeMode};
use crate::inpaint::{self, MaskParts};
use crate::request::{MaskedContent, Request};

/// The shape of one image's latents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LatentShape {
    /// Latent channels (4).
    pub channels: usize,
    /// Height in latent pixels (height / 8).
    pub height: usize,
    /// Width in latent pixels (width / 8).
    pub width: usize,
}

impl LatentShape {
    /// The latents of a `width × height` picture.
    pub fn of_pixels(width: u32, height: u32) -> Self {
        Self {
            channels: 4,
            height: height as usize / 8,
            width: width as usize / 8,
        }
    }

    /// `(channels, height, width)`, as the noise generators take it.
    pub fn dims(self) -> (usize, usize, usize) {
        (self.channels, self.height, self.width)
    }
}

/// A1111's latent mask blend, `[1, 4, h/8, w/8]` each.
#[derive(Clone, Debug)]
pub(crate) struct Blend {
    /// `mask`: 1 where the source stays.
    pub keep: Tensor,
    /// `nmask`: 1 where the picture changes.
    pub change: Tensor,
}

impl Blend {
    /// A1111's final blend of the sampler's result: `samples · nmask + init · mask`.
    pub fn apply(&self, latents: &Tensor, init: &Tensor) -> Result<Tensor> {
        Ok(latents
            .broadcast_mul(&self.change)?
            .broadcast_add(&init.broadcast_mul(&self.keep)?)?)
    }
}

/// What every batch of a request starts from.
pub(crate) struct Init {
    /// The source's latents (img2img), with the masked content applied.
    pub latents: Option<Tensor>,
    /// The mask's parts (inpainting).
    pub mask: Option<MaskParts>,
    /// The latent blend (inpainting).
    pub blend: Option<Blend>,
    /// The extra U-Net input of inpainting checkpoints, one row per image of a batch.
    pub image_cond: Option<Tensor>,
    /// Infotext keys the processing added, in A1111's order.
    pub params: Vec<(String, String)>,
    /// What was done otherwise than asked (a blank mask, a mask resized), for the warnings.
    pub notes: Vec<String>,
}

impl Pipeline {
    /// Prepares the source of `req` (nothing but the inpainting conditioning for txt2img).
    /// `seed` is the request's first seed (latent-noise fill draws from the first batch's).
    pub(crate) fn prepare_init(
        &self,
        req: &Request,
        shape: LatentShape,
        (width, height): (u32, u32),
        seed: u64,
    ) -> Result<Init> {
        let source = match &req.img2img {
            Some(i) => Some(inpaint::prepare(i, width, height)?),
            None => None,
        };
        let pixels = match &source {
            Some(s) => Some(to_tensor(&s.image, &self.device)?),
            None => None,
        };
        let latents = match (&req.img2img, &pixels) {
            (Some(i), Some(x)) => {
                let lat = self.encode_first_stage(x)?;
                Some(match i.resize_mode {
                    // A1111 encodes the image at its own size and resizes the latent
                    ResizeMode::LatentUpscale => {
                        lat.upsample_bilinear2d(shape.height, shape.width, false)?
                    }
                    _ => lat,
                })
            }
            _ => None,
        };
        let notes = req
            .img2img
            .as_ref()
            .map(|i| source_notes(i, source.as_ref()))
            .unwrap_or_default();
        let (mask, mut params) = match source {
            Some(s) => (s.mask, s.params),
            None => (None, Vec::new()),
        };
        if latents.is_some() && self.taesd_encoder.is_some() {
            let fill = req
                .img2img
                .as_ref()
                .and_then(|i| i.inpaint.as_ref())
                .map(|m| m.fill);
            vae_encoder_param(&mut params, fill);
        }
        let blend = match &mask {
            Some(m) => Some(self.latent_blend(m, shape)?),
            None => None,
        };
        let image_cond = self.inpainting_conditioning(
            shape,
            req.batch_size as usize,
            pixels.as_ref(),
            mask.as_ref(),
            req.inpainting_mask_weight,
        )?;
        let latents = match (latents, &mask, &blend) {
            (Some(init), Some(m), Some(b)) => {
                Some(self.fill_masked(req, init, m.fill, b, shape, seed)?)
            }
            (latents, _, _) => latents,
        };
        Ok(Init {
            latents,
            mask,
            blend,
            image_cond,
            params,
            notes,
        })
    }

    /// Masked content: A1111 puts noise (from the first batch's seeds) or zeros in the masked
    /// latents once, before any batch runs.
    fn fill_masked(
        &self,
        req: &Request,
        init: Tensor,
        fill: MaskedContent,
        blend: &Blend,
        shape: LatentShape,
        seed: u64,
    ) -> Result<Tensor> {
        Ok(match fill {
            MaskedContent::LatentNoise => {
                // A1111's all_seeds[0:batch_size]
                let step = u64::from(req.subseed_strength == 0.0);
                let seeds: Vec<u64> = (0..u64::from(req.batch_size))
                    .map(|k| seed + k * step)
                    .collect();
                let mut g = ImageRng::new(
                    req.rng,
                    shape.dims(),
                    seeds,
                    ImageRngOptions::default(),
                    &self.device,
                );
                let noise = g.next_noise()?;
                init.broadcast_mul(&blend.keep)?
                    .broadcast_add(&noise.broadcast_mul(&blend.change)?)?
            }
            MaskedContent::LatentNothing => init.broadcast_mul(&blend.keep)?,
            _ => init,
        })
    }

    /// A1111's latent blend from the mask's latent-size `nmask`.
    fn latent_blend(&self, m: &MaskParts, shape: LatentShape) -> Result<Blend> {
        let change = Tensor::from_vec(
            m.latent_mask.clone(),
            (1, 1, shape.height, shape.width),
            &self.device,
        )?
        .repeat((1, shape.channels, 1, 1))?;
        let keep = change.affine(-1.0, 1.0)?;
        Ok(Blend { keep, change })
    }
}

/// What an img2img source does otherwise than asked: a mask of another size than the image is
/// resized to it; "only masked" with a blank mask falls back to the whole picture (A1111 notes
/// the same in its comments).
fn source_notes(i: &crate::request::Img2Img, source: Option<&inpaint::Source>) -> Vec<String> {
    let Some(inp) = &i.inpaint else {
        return Vec::new();
    };
    let mut notes = Vec::new();
    let (mw, mh) = (inp.mask.width(), inp.mask.height());
    let (iw, ih) = i.init_image.dimensions();
    if (mw, mh) != (iw, ih) && !inp.full_res {
        notes.push(format!(
            "mask: {mw}x{mh} is not the init image's size {iw}x{ih}: it was resized to it"
        ));
    }
    if inp.full_res && source.is_some_and(|s| s.mask.is_none()) {
        notes.push(
            "mask: nothing is masked, so \"only masked\" inpainting was done as img2img of the \
             whole picture (as A1111 does)"
                .to_string(),
        );
    }
    notes
}

/// A1111 adds `VAE Encoder: TAESD` just before it encodes the source: after the keys of the
/// source's preparation, where "Masked content: fill" is one, and before the "Masked content"
/// of latent noise or latent nothing, which it adds after the encode (Sumi with the others).
fn vae_encoder_param(params: &mut Vec<(String, String)>, fill: Option<MaskedContent>) {
    let after_encode = matches!(
        fill,
        Some(MaskedContent::LatentNoise | MaskedContent::LatentNothing)
    );
    let at = params
        .iter()
        .position(|(k, _)| after_encode && k == "Masked content")
        .unwrap_or(params.len());
    params.insert(at, crate::decode::taesd_param("VAE Encoder"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(fill: Option<MaskedContent>, given: &[(&str, &str)]) -> Vec<String> {
        let mut p: Vec<(String, String)> = given
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        vae_encoder_param(&mut p, fill);
        p.into_iter().map(|(k, v)| format!("{k}: {v}")).collect()
    }

    #[test]
    fn the_vae_encoder_key_sits_where_a1111_adds_it() {
        assert_eq!(keys(None, &[]), ["VAE Encoder: TAESD"]);
        let fill = [("Mask blur", "4"), ("Masked content", "fill")];
        assert_eq!(
            keys(Some(MaskedContent::Fill), &fill),
            ["Mask blur: 4", "Masked content: fill", "VAE Encoder: TAESD"]
        );
        let noise = [("Mask blur", "4"), ("Masked content", "latent noise")];
        assert_eq!(
            keys(Some(MaskedContent::LatentNoise), &noise),
            [
                "Mask blur: 4",
                "VAE Encoder: TAESD",
                "Masked content: latent noise"
            ]
        );
        let nothing = [("Masked content", "latent nothing")];
        assert_eq!(
            keys(Some(MaskedContent::LatentNothing), &nothing),
            ["VAE Encoder: TAESD", "Masked content: latent nothing"]
        );
    }
}
