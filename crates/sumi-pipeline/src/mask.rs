//! The inpainting mask as A1111 v1.10.1 prepares it (`StableDiffusionProcessingImg2Img.init`):
//! the binary mask from the image given ([`binary_mask`]), inversion, OpenCV's Gaussian blur
//! across and down ([`gaussian_blur`]), and the masked area's box for "only masked"
//! ([`crop_region`], [`expand_crop_region`]).
//!
//! Masks are 8-bit grey images (Pillow mode `L`); white marks what changes.

use image::{DynamicImage, GrayImage, RgbImage};

use crate::error::Result;
use crate::image::{resize_box, resize_image, Filter, ResizeMode};

/// A1111's `create_binary_mask`: an RGBA image whose alpha is not all 255 gives its alpha
/// (thresholded, `> 128` → 255 else 0, when `round`); anything else its grey value (Pillow's
/// `convert("L")`: ITU-R 601 luma in 16-bit fixed point; grey + alpha keeps the grey).
pub fn binary_mask(img: &DynamicImage, round: bool) -> GrayImage {
    if let DynamicImage::ImageRgba8(rgba) = img {
        if rgba.pixels().any(|p| p[3] != 255) {
            let mut out = GrayImage::new(rgba.width(), rgba.height());
            for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
                let a = p[3];
                o[0] = if !round {
                    a
                } else if a > 128 {
                    255
                } else {
                    0
                };
            }
            return out;
        }
    }
    match img {
        DynamicImage::ImageLuma8(g) => g.clone(),
        DynamicImage::ImageLumaA8(g) => GrayImage::from_fn(g.width(), g.height(), |x, y| {
            image::Luma([g.get_pixel(x, y)[0]])
        }),
        DynamicImage::ImageLuma16(g) => {
            // Pillow opens 16-bit grey as mode `I` and converts to `L` by clipping
            GrayImage::from_fn(g.width(), g.height(), |x, y| {
                image::Luma([g.get_pixel(x, y)[0].min(255) as u8])
            })
        }
        other => {
            let rgb = high_byte_rgb(other);
            GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
                image::Luma([luma(rgb.get_pixel(x, y).0)])
            })
        }
    }
}

/// RGB samples of any image, 16-bit ones by their high byte (Pillow's unpackers).
fn high_byte_rgb(img: &DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(i) => i.clone(),
        DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_)
        | DynamicImage::ImageLumaA16(_) => {
            let src = img.to_rgb16();
            RgbImage::from_fn(src.width(), src.height(), |x, y| {
                let p = src.get_pixel(x, y).0;
                image::Rgb([(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
            })
        }
        other => other.to_rgb8(),
    }
}

/// Pillow's `L24`: `(r·19595 + g·38470 + b·7471 + 0x8000) >> 16`.
pub fn luma(p: [u8; 3]) -> u8 {
    let v = u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471 + 0x8000;
    (v >> 16) as u8
}

/// `ImageOps.invert`: 255 − v.
pub fn invert(mask: &mut GrayImage) {
    for p in mask.pixels_mut() {
        p[0] = 255 - p[0];
    }
}

/// OpenCV's fixed-point Gaussian kernel for 8-bit images (`getGaussianKernelBitExact` then
/// `getGaussianKernelFixedPoint_ED` with 8 fraction bits): doubles normalised to sum 1, scaled
/// by 256 and rounded half to even with the error carried from the outside in; the centre takes
/// what is left of 256.
pub fn opencv_kernel(n: usize, sigma: f64) -> Vec<i64> {
    let half = (n - 1) / 2;
    let sigma_x = if sigma > 0.0 {
        sigma
    } else {
        n as f64 * 0.15 + 0.35
    };
    let scale2x = -0.125 / (sigma_x * sigma_x);
    let mut values = Vec::with_capacity(half);
    let mut sum = 0.0f64;
    let mut x = 1 - n as i64;
    for _ in 0..half {
        let t = ((x * x) as f64 * scale2x).exp();
        values.push(t);
        sum += t;
        x += 2;
    }
    sum *= 2.0;
    sum += 1.0;
    let mul = 1.0 / sum;
    let mut out = vec![0i64; n];
    let mut err = 0.0f64;
    let mut total = 0i64;
    for i in 0..half {
        let adj = values[i] * mul * 256.0 + err;
        let v = adj.round_ties_even() as i64;
        err = adj - v as f64;
        out[i] = v;
        out[n - 1 - i] = v;
        total += v;
    }
    out[half] = 256 - 2 * total;
    out
}

/// OpenCV's `BORDER_REFLECT_101` index (`gfedcb|abcdefgh|gfedcba`), reflecting again when the
/// kernel is wider than the line.
fn reflect101(mut p: i64, len: i64) -> usize {
    if len == 1 {
        return 0;
    }
    while p < 0 || p >= len {
        p = if p < 0 { -p } else { 2 * len - 2 - p };
    }
    p as usize
}

/// Which way [`gaussian_blur`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Across (`cv2.GaussianBlur(m, (k, 1), sigma)`).
    X,
    /// Down (`cv2.GaussianBlur(m, (1, k), sigma)`).
    Y,
}

/// A1111's mask blur along one axis: `cv2.GaussianBlur` with a `2·int(2.5·σ + 0.5) + 1` kernel,
/// OpenCV's bit-exact 8-bit path (`(Σ kᵢ·vᵢ + 128) >> 8` with the fixed-point kernel of
/// [`opencv_kernel`]) and reflect-101 borders. σ = 0 leaves the mask as it is.
pub fn gaussian_blur(mask: &GrayImage, sigma: u32, axis: Axis) -> GrayImage {
    if sigma == 0 {
        return mask.clone();
    }
    let n = 2 * ((2.5 * f64::from(sigma) + 0.5) as usize) + 1;
    let k = opencv_kernel(n, f64::from(sigma));
    let r = (n / 2) as i64;
    let (w, h) = mask.dimensions();
    let src = mask.as_raw();
    let (len, lines) = match axis {
        Axis::X => (w as i64, h as usize),
        Axis::Y => (h as i64, w as usize),
    };
    let at = |line: usize, i: usize| -> usize {
        match axis {
            Axis::X => line * w as usize + i,
            Axis::Y => i * w as usize + line,
        }
    };
    let mut out = vec![0u8; src.len()];
    for line in 0..lines {
        for i in 0..len {
            let mut s = 0i64;
            for (j, &kj) in k.iter().enumerate() {
                let p = reflect101(i + j as i64 - r, len);
                s += kj * i64::from(src[at(line, p)]);
            }
            out[at(line, i as usize)] = ((s + 128) >> 8).clamp(0, 255) as u8;
        }
    }
    GrayImage::from_raw(w, h, out).unwrap_or_else(|| GrayImage::new(w, h))
}

/// Pillow's `getbbox()` of a mask: the smallest box `(x1, y1, x2, y2)` (exclusive ends) holding
/// every non-zero pixel; `None` for an all-black mask.
pub fn bbox(mask: &GrayImage) -> Option<(u32, u32, u32, u32)> {
    let (mut x1, mut y1, mut x2, mut y2) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in mask.enumerate_pixels() {
        if p[0] != 0 {
            x1 = x1.min(x);
            y1 = y1.min(y);
            x2 = x2.max(x + 1);
            y2 = y2.max(y + 1);
        }
    }
    (x2 > 0).then_some((x1, y1, x2, y2))
}

/// A1111's `masking.get_crop_region_v2`: the mask's box grown by `pad` on every side, within
/// the image; `None` for an all-black mask.
pub fn crop_region(mask: &GrayImage, pad: u32) -> Option<(i64, i64, i64, i64)> {
    let (x1, y1, x2, y2) = bbox(mask)?;
    let (w, h) = (i64::from(mask.width()), i64::from(mask.height()));
    let p = i64::from(pad);
    Some((
        (i64::from(x1) - p).max(0),
        (i64::from(y1) - p).max(0),
        (i64::from(x2) + p).min(w),
        (i64::from(y2) + p).min(h),
    ))
}

/// A1111's `masking.expand_crop_region`: grows the box to the processing size's aspect ratio,
/// shifting it back inside the image where it runs over (Python's integer arithmetic:
/// `int()` truncates, `//` floors).
pub fn expand_crop_region(
    region: (i64, i64, i64, i64),
    processing_width: u32,
    processing_height: u32,
    image_width: u32,
    image_height: u32,
) -> (i64, i64, i64, i64) {
    let (mut x1, mut y1, mut x2, mut y2) = region;
    let (iw, ih) = (i64::from(image_width), i64::from(image_height));
    let ratio_crop = (x2 - x1) as f64 / (y2 - y1) as f64;
    let ratio_proc = f64::from(processing_width) / f64::from(processing_height);
    // one axis at a time: (lo, hi, size of the image along it)
    let grow = |lo: &mut i64, hi: &mut i64, diff: i64, size: i64| {
        *lo -= diff.div_euclid(2);
        *hi += diff - diff.div_euclid(2);
        if *hi >= size {
            let d = *hi - size;
            *hi -= d;
            *lo -= d;
        }
        if *lo < 0 {
            *hi -= *lo;
            *lo = 0;
        }
        if *hi >= size {
            *hi = size;
        }
    };
    if ratio_crop > ratio_proc {
        let desired_h = (x2 - x1) as f64 / ratio_proc;
        let diff = (desired_h - (y2 - y1) as f64) as i64;
        grow(&mut y1, &mut y2, diff, ih);
    } else {
        let desired_w = (y2 - y1) as f64 * ratio_proc;
        let diff = (desired_w - (x2 - x1) as f64) as i64;
        grow(&mut x1, &mut x2, diff, iw);
    }
    (x1, y1, x2, y2)
}

/// A grey image as the RGB image Pillow makes of it (`convert("RGB")` copies the grey).
pub fn grey_to_rgb(mask: &GrayImage) -> RgbImage {
    RgbImage::from_fn(mask.width(), mask.height(), |x, y| {
        let v = mask.get_pixel(x, y)[0];
        image::Rgb([v, v, v])
    })
}

/// The first channel of an RGB image holding grey (what `convert("L")` gives back for grey).
pub fn rgb_to_grey(im: &RgbImage) -> GrayImage {
    GrayImage::from_fn(im.width(), im.height(), |x, y| {
        image::Luma([luma(im.get_pixel(x, y).0)])
    })
}

/// A1111's `images.resize_image(mode, mask, width, height)` for a mask (Pillow resamples each
/// band alike, so the grey is resized as RGB and read back).
pub fn resize_mask(
    mode: ResizeMode,
    mask: &GrayImage,
    width: u32,
    height: u32,
) -> Result<GrayImage> {
    Ok(rgb_to_grey(&resize_image(
        mode,
        &grey_to_rgb(mask),
        width,
        height,
    )?))
}

/// The latent mask A1111 blends with (`nmask`): the mask resized to the latent size with Pillow's
/// default filter (bicubic), divided by 255 and, when `round`, rounded half to even; one value
/// per latent pixel, row-major, 1 where the picture changes.
pub fn latent_mask(mask: &GrayImage, lw: u32, lh: u32, round: bool) -> Result<Vec<f32>> {
    let rgb = grey_to_rgb(mask);
    let b = [0.0, 0.0, rgb.width() as f32, rgb.height() as f32];
    let small = if rgb.dimensions() == (lw, lh) {
        rgb
    } else {
        resize_box(&rgb, lw, lh, b, Filter::Bicubic)?
    };
    Ok(small
        .pixels()
        .map(|p| {
            let v = f32::from(p[0]) / 255.0;
            if round {
                v.round_ties_even()
            } else {
                v
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opencv_kernels_sum_to_one_and_match_known_values() {
        for s in 1..40u32 {
            let n = 2 * ((2.5 * f64::from(s) + 0.5) as usize) + 1;
            let k = opencv_kernel(n, f64::from(s));
            assert_eq!(k.iter().sum::<i64>(), 256, "sigma {s}");
            assert!(k.iter().eq(k.iter().rev()), "sigma {s}: not symmetric");
        }
        // sigma 1, 7 taps: 256 · [0.0044, 0.054, 0.242, 0.399, …] with error diffusion
        assert_eq!(opencv_kernel(7, 1.0), vec![1, 14, 62, 102, 62, 14, 1]);
    }

    #[test]
    fn expand_crop_region_follows_python() {
        // a 128×32 box in a 512×512 image processed at 512×512 grows to 128×128
        assert_eq!(
            expand_crop_region((100, 200, 228, 232), 512, 512, 512, 512),
            (100, 152, 228, 280)
        );
        // running over the bottom edge shifts the box up
        assert_eq!(
            expand_crop_region((0, 500, 64, 510), 64, 64, 512, 512),
            (0, 448, 64, 512)
        );
    }

    #[test]
    fn blank_mask_has_no_crop_region() {
        assert_eq!(crop_region(&GrayImage::new(8, 8), 4), None);
        let mut m = GrayImage::new(8, 8);
        m.put_pixel(3, 4, image::Luma([1]));
        assert_eq!(crop_region(&m, 2), Some((1, 2, 6, 7)));
        assert_eq!(crop_region(&m, 0), Some((3, 4, 4, 5)));
    }
}
