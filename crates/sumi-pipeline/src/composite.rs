//! The Pillow 9.5 pixel operations of A1111's inpainting, in Pillow's integer arithmetic:
//! the source pasted through an inverted mask into a premultiplied (`RGBa`) image
//! ([`masked_premultiplied`]), Pillow's box-blur Gaussian ([`gaussian_blur_rgba`]),
//! `alpha_composite` ([`alpha_composite`]), A1111's "fill" of the masked area ([`fill`]), and the
//! final overlay of the original pixels outside the mask ([`overlay`], [`apply_overlay`]).

use image::{GrayImage, RgbImage, RgbaImage};

use crate::error::Result;
use crate::image::{resize_image, ResizeMode};

/// Pillow's `SHIFTFORDIV255(a + 128)`: `a / 255` rounded.
fn div255(a: u32) -> u32 {
    let t = a + 128;
    ((t >> 8) + t) >> 8
}

/// `Image.new('RGBa', size)` then `paste(image.convert("RGBA").convert("RGBa"),
/// mask=ImageOps.invert(mask))`: every band (alpha included) is `image · (255 − m) / 255`
/// rounded, the alpha of an opaque source being 255.
pub fn masked_premultiplied(image: &RgbImage, mask: &GrayImage) -> RgbaImage {
    RgbaImage::from_fn(image.width(), image.height(), |x, y| {
        let p = image.get_pixel(x, y).0;
        let a = 255 - u32::from(mask.get_pixel(x, y)[0]);
        image::Rgba([
            div255(u32::from(p[0]) * a) as u8,
            div255(u32::from(p[1]) * a) as u8,
            div255(u32::from(p[2]) * a) as u8,
            div255(255 * a) as u8,
        ])
    })
}

/// `convert("RGBA")` of an `RGBa` image: `255·c / a` (truncated, clipped) unless a is 0 or 255.
pub fn unpremultiply(im: &RgbaImage) -> RgbaImage {
    let mut out = im.clone();
    for p in out.pixels_mut() {
        let a = u32::from(p[3]);
        if a != 0 && a != 255 {
            for c in 0..3 {
                p[c] = ((255 * u32::from(p[c])) / a).min(255) as u8;
            }
        }
    }
    out
}

/// The box radius Pillow's `ImagingGaussianBlur` uses for `radius` over 3 passes (float
/// arithmetic as Pillow's C: the extended box of Gwosdek et al.).
fn box_radius(radius: f32) -> f32 {
    let sigma2 = radius * radius / 3.0;
    let big_l = (12.0 * f64::from(sigma2) + 1.0).sqrt() as f32;
    let l = ((f64::from(big_l) - 1.0) / 2.0).floor() as f32;
    let mut a = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2);
    a /= 6.0 * (sigma2 - (l + 1.0) * (l + 1.0));
    l + a
}

/// One pass of Pillow's `ImagingLineBoxBlur32` along a line, band by band.
#[allow(clippy::needless_range_loop)] // the band index addresses input and output alike
fn box_line(line: &[[u8; 4]], out: &mut [[u8; 4]], radius: f32) {
    let n = line.len();
    let lastx = n as i64 - 1;
    let r = radius as i64;
    let ww = ((1u32 << 24) as f32 / (radius * 2.0 + 1.0)) as u32;
    let fw = ((1u32 << 24) - (r as u32 * 2 + 1) * ww) / 2;
    let edge_a = (r + 1).min(n as i64);
    let edge_b = (n as i64 - r - 1).max(0);
    let px = |i: i64| line[i as usize];
    for c in 0..4 {
        let v = |i: i64| u32::from(px(i)[c]);
        let mut acc: u32 = v(0) * (r as u32 + 1);
        for x in 0..edge_a - 1 {
            acc = acc.wrapping_add(v(x));
        }
        acc = acc.wrapping_add(v(lastx).wrapping_mul((r - edge_a + 1) as u32));
        let save = |bulk: u32| ((bulk.wrapping_add(1 << 23)) >> 24) as u8;
        let mut step = |x: i64, sub: i64, add: i64, left: i64, right: i64, acc: &mut u32| {
            *acc = acc.wrapping_add(v(add)).wrapping_sub(v(sub));
            let bulk = acc
                .wrapping_mul(ww)
                .wrapping_add((v(left) + v(right)).wrapping_mul(fw));
            out[x as usize][c] = save(bulk);
        };
        if edge_a <= edge_b {
            for x in 0..edge_a {
                step(x, 0, x + r, 0, x + r + 1, &mut acc);
            }
            for x in edge_a..edge_b {
                step(x, x - r - 1, x + r, x - r - 1, x + r + 1, &mut acc);
            }
            for x in edge_b..=lastx {
                step(x, x - r - 1, lastx, x - r - 1, lastx, &mut acc);
            }
        } else {
            for x in 0..edge_b {
                step(x, 0, x + r, 0, x + r + 1, &mut acc);
            }
            for x in edge_b..edge_a {
                step(x, 0, lastx, 0, lastx, &mut acc);
            }
            for x in edge_a..=lastx {
                step(x, x - r - 1, lastx, x - r - 1, lastx, &mut acc);
            }
        }
    }
}

/// Pillow 9.5's `filter(ImageFilter.GaussianBlur(radius))` on a 4-band image: three box-blur
/// passes across, then three down, each rounded to 8 bits.
pub fn gaussian_blur_rgba(im: &RgbaImage, radius: f32) -> RgbaImage {
    let br = box_radius(radius);
    let (w, h) = (im.width() as usize, im.height() as usize);
    let mut px: Vec<[u8; 4]> = im.pixels().map(|p| p.0).collect();
    let mut line_out = vec![[0u8; 4]; w.max(h)];
    for y in 0..h {
        for _ in 0..3 {
            box_line(&px[y * w..(y + 1) * w], &mut line_out[..w], br);
            px[y * w..(y + 1) * w].copy_from_slice(&line_out[..w]);
        }
    }
    let mut col = vec![[0u8; 4]; h];
    for x in 0..w {
        for (y, c) in col.iter_mut().enumerate() {
            *c = px[y * w + x];
        }
        for _ in 0..3 {
            box_line(&col, &mut line_out[..h], br);
            col.copy_from_slice(&line_out[..h]);
        }
        for (y, c) in col.iter().enumerate() {
            px[y * w + x] = *c;
        }
    }
    RgbaImage::from_fn(im.width(), im.height(), |x, y| {
        image::Rgba(px[y as usize * w + x as usize])
    })
}

/// Pillow's `alpha_composite(src)` onto `dst` in place (7 extra bits of precision, rounded
/// divisions by 255).
pub fn alpha_composite(dst: &mut RgbaImage, src: &RgbaImage) {
    for (d, s) in dst.pixels_mut().zip(src.pixels()) {
        let sa = u32::from(s[3]);
        if sa == 0 {
            continue;
        }
        let blend = u32::from(d[3]) * (255 - sa);
        let outa255 = sa * 255 + blend;
        let coef1 = sa * 255 * 255 * (1 << 7) / outa255;
        let coef2 = 255 * (1 << 7) - coef1;
        let shift = |t: u32| (((t >> 8) + t) >> 8) >> 7;
        for c in 0..3 {
            let t = u32::from(s[c]) * coef1 + u32::from(d[c]) * coef2;
            d[c] = shift(t + (0x80 << 7)) as u8;
        }
        let t = outa255 + 0x80;
        d[3] = (((t >> 8) + t) >> 8) as u8;
    }
}

/// A1111's `masking.fill(image, mask)`: the unmasked source, blurred at radii 256, 64, 16, 4,
/// 2, 0 and composited (1, 1, 2, 4, 2, 1 times) so that the masked area takes the colours
/// around it.
pub fn fill(image: &RgbImage, mask: &GrayImage) -> RgbImage {
    let masked = masked_premultiplied(image, mask);
    let mut acc = RgbaImage::new(image.width(), image.height());
    for (radius, repeats) in [
        (256.0, 1),
        (64.0, 1),
        (16.0, 2),
        (4.0, 4),
        (2.0, 2),
        (0.0, 1),
    ] {
        let blurred = unpremultiply(&gaussian_blur_rgba(&masked, radius));
        for _ in 0..repeats {
            alpha_composite(&mut acc, &blurred);
        }
    }
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let p = acc.get_pixel(x, y).0;
        image::Rgb([p[0], p[1], p[2]])
    })
}

/// A1111's overlay image: the source where the mask is black, transparent where it is white
/// (`RGBa` paste through the inverted mask, then `convert('RGBA')`).
pub fn overlay(image: &RgbImage, mask_for_overlay: &GrayImage) -> RgbaImage {
    unpremultiply(&masked_premultiplied(image, mask_for_overlay))
}

/// A1111's `apply_overlay`: for "only masked", the generated picture is resized to its box
/// (`resize_image(1, …)`) and placed there on a transparent canvas the size of the overlay;
/// then the overlay is composited over it and alpha dropped.
pub fn apply_overlay(
    generated: &RgbImage,
    paste_to: Option<(u32, u32, u32, u32)>,
    overlay: &RgbaImage,
) -> Result<RgbImage> {
    let mut base = match paste_to {
        Some((x, y, w, h)) => {
            let resized = resize_image(ResizeMode::CropAndResize, generated, w, h)?;
            let mut base = RgbaImage::new(overlay.width(), overlay.height());
            for (px, py, p) in resized.enumerate_pixels() {
                let (bx, by) = (x + px, y + py);
                if bx < base.width() && by < base.height() {
                    base.put_pixel(bx, by, image::Rgba([p[0], p[1], p[2], 255]));
                }
            }
            base
        }
        None => RgbaImage::from_fn(generated.width(), generated.height(), |x, y| {
            let p = generated.get_pixel(x, y).0;
            image::Rgba([p[0], p[1], p[2], 255])
        }),
    };
    if base.dimensions() != overlay.dimensions() {
        return Err(crate::error::PipelineError::InvalidSize {
            width: overlay.width(),
            height: overlay.height(),
        });
    }
    alpha_composite(&mut base, overlay);
    Ok(RgbImage::from_fn(base.width(), base.height(), |x, y| {
        let p = base.get_pixel(x, y).0;
        image::Rgb([p[0], p[1], p[2]])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_radius_is_pillows() {
        // radius 0 is the identity box; radius 2: σ² = 4/3, l = 1, a = −6 / −16
        assert_eq!(box_radius(0.0), 0.0);
        assert_eq!(box_radius(2.0), 1.375);
    }

    #[test]
    fn composite_of_opaque_over_anything_is_the_source() {
        let mut dst = RgbaImage::from_pixel(2, 1, image::Rgba([10, 20, 30, 200]));
        let src = RgbaImage::from_pixel(2, 1, image::Rgba([200, 100, 50, 255]));
        alpha_composite(&mut dst, &src);
        assert_eq!(dst.get_pixel(0, 0).0, [200, 100, 50, 255]);
    }
}
