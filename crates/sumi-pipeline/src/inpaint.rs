//! The img2img source with a mask, prepared as A1111 v1.10.1's
//! `StableDiffusionProcessingImg2Img.init` does: binary mask → invert → blur across, then down
//! → "only masked" crop (or the whole picture resized) → the overlay of the original pixels →
//! the picture the VAE encodes (filled for every masked-content mode but "original") → the
//! latent mask. The infotext keys A1111 adds on the way are recorded in order.

use image::{GrayImage, RgbImage, RgbaImage};

use crate::composite::{fill, overlay};
use crate::error::{PipelineError, Result};
use crate::image::{prepare_init_image, resize_image, ResizeMode};
use crate::mask::{
    binary_mask, crop_region, expand_crop_region, gaussian_blur, invert, latent_mask, resize_mask,
    Axis,
};
use crate::request::{Img2Img, Inpaint, MaskedContent};

/// The mask's parts the sampler and the final composite use.
#[derive(Debug, Clone)]
pub struct MaskParts {
    /// A1111's `image_mask` at the processing size (blurred; for "only masked", the box's part):
    /// the inpainting models' conditioning mask.
    pub image_mask: GrayImage,
    /// `nmask`: 1 where the picture changes, one value per latent pixel (row-major).
    pub latent_mask: Vec<f32>,
    /// The original pixels, transparent where they are replaced (the size of the output).
    pub overlay: RgbaImage,
    /// "Only masked": where the generated box goes, `(x, y, w, h)`.
    pub paste_to: Option<(u32, u32, u32, u32)>,
    /// The masked content chosen.
    pub fill: MaskedContent,
    /// A1111's `mask_round`.
    pub round: bool,
}

/// An img2img source ready for the VAE.
#[derive(Debug, Clone)]
pub struct Source {
    /// The picture to encode, at the processing size (except for latent upscale).
    pub image: RgbImage,
    /// The mask, when there is one to apply (an "only masked" request with a blank mask has
    /// none: A1111 falls back to plain img2img).
    pub mask: Option<MaskParts>,
    /// Infotext keys in A1111's order (`Mask mode`, `Mask blur`, `Inpaint area`, …).
    pub params: Vec<(String, String)>,
}

/// Prepares the source of an img2img request at `width × height`.
pub fn prepare(i: &Img2Img, width: u32, height: u32) -> Result<Source> {
    let Some(inp) = &i.inpaint else {
        return Ok(Source {
            image: prepare_init_image(&i.init_image, i.resize_mode, width, height)?,
            mask: None,
            params: Vec::new(),
        });
    };
    let mut params = Vec::new();
    let mut m = binary_mask(&inp.mask, inp.round);
    if inp.invert {
        invert(&mut m);
        params.push(("Mask mode".into(), "Inpaint not masked".into()));
    }
    m = gaussian_blur(&m, inp.blur_x, Axis::X);
    m = gaussian_blur(&m, inp.blur_y, Axis::Y);
    if (inp.blur_x > 0 || inp.blur_y > 0) && inp.blur_x == inp.blur_y {
        params.push(("Mask blur".into(), inp.blur_x.to_string()));
    }

    // the mask at the processing size, what is composited back, and the box
    let (image_mask, mask_for_overlay, crop) = if inp.full_res {
        full_res_mask(i, inp, &m, width, height, &mut params)?
    } else {
        let resized = resize_mask(i.resize_mode, &m, width, height)?;
        let mut doubled = resized.clone();
        for p in doubled.pixels_mut() {
            p[0] = p[0].saturating_mul(2);
        }
        (Some(resized), Some(doubled), None)
    };
    let (Some(image_mask), Some(mask_for_overlay)) = (image_mask, mask_for_overlay) else {
        return Ok(Source {
            image: prepare_init_image(&i.init_image, i.resize_mode, width, height)?,
            mask: None,
            params,
        });
    };

    let mut image = match crop {
        Some(_) => i.init_image.clone(),
        None => resize_image(i.resize_mode, &i.init_image, width, height)?,
    };
    let ov = overlay(&image, &mask_for_overlay);
    let paste_to = crop.map(|(x1, y1, x2, y2)| (x1, y1, x2 - x1, y2 - y1));
    if let Some((x1, y1, x2, y2)) = crop {
        let part = image::imageops::crop_imm(&image, x1, y1, x2 - x1, y2 - y1).to_image();
        image = resize_image(ResizeMode::ResizeAndFill, &part, width, height)?;
    }
    // A1111 fills the pixels for every masked content but "original"
    if inp.fill != MaskedContent::Original {
        image = fill(&image, &image_mask);
        params.push(("Masked content".into(), inp.fill.label().into()));
    }
    let latent_mask = latent_mask(&image_mask, width / 8, height / 8, inp.round)?;
    Ok(Source {
        image,
        mask: Some(MaskParts {
            image_mask,
            latent_mask,
            overlay: ov,
            paste_to,
            fill: inp.fill,
            round: inp.round,
        }),
        params,
    })
}

/// The box of the mask plus padding, grown to the processing aspect; the mask's part of it at
/// the processing size; the blurred mask itself for the overlay. All `None` for a blank mask.
#[allow(clippy::type_complexity)]
fn full_res_mask(
    i: &Img2Img,
    inp: &Inpaint,
    m: &GrayImage,
    width: u32,
    height: u32,
    params: &mut Vec<(String, String)>,
) -> Result<(
    Option<GrayImage>,
    Option<GrayImage>,
    Option<(u32, u32, u32, u32)>,
)> {
    if m.dimensions() != i.init_image.dimensions() {
        return Err(PipelineError::Request {
            field: "mask",
            detail: format!(
                "the mask is {}x{} but the image is {}x{}; inpainting only the masked area needs \
                 them the same size",
                m.width(),
                m.height(),
                i.init_image.width(),
                i.init_image.height()
            ),
        });
    }
    let Some(region) = crop_region(m, inp.full_res_padding) else {
        return Ok((None, None, None));
    };
    let (x1, y1, x2, y2) = expand_crop_region(region, width, height, m.width(), m.height());
    // the box lies within the image after expand_crop_region's shifts
    let b = |v: i64| v.clamp(0, i64::from(u32::MAX)) as u32;
    let (x1, y1, x2, y2) = (b(x1), b(y1), b(x2), b(y2));
    let part = image::imageops::crop_imm(m, x1, y1, x2 - x1, y2 - y1).to_image();
    let image_mask = resize_mask(ResizeMode::ResizeAndFill, &part, width, height)?;
    params.push(("Inpaint area".into(), "Only masked".into()));
    params.push((
        "Masked area padding".into(),
        inp.full_res_padding.to_string(),
    ));
    Ok((Some(image_mask), Some(m.clone()), Some((x1, y1, x2, y2))))
}
