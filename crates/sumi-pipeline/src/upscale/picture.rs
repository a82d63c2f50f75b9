//! A picture as A1111's upscalers and Extras see it: RGB, or RGBA kept as Pillow keeps it
//! (`run_postprocessing` keeps RGBA and RGB inputs as they are). Pillow resizes RGBA with
//! LANCZOS on premultiplied colour (`RGBA → RGBa`, `MULDIV255(c, a)`; back with
//! `255·c / a` clipped, colour kept where `a` is 0 or 255) and with NEAREST channel by
//! channel; a model upscaler sees `img.convert("RGB")` (alpha dropped, colour as stored).

use image::{RgbImage, RgbaImage};

use super::resize_nearest;
use crate::error::Result;
use crate::image::resize_lanczos;

/// An RGB or RGBA picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Picture {
    /// Pillow mode `RGB`.
    Rgb(RgbImage),
    /// Pillow mode `RGBA` (straight alpha).
    Rgba(RgbaImage),
}

/// Pillow's `MULDIV255(c, a)`.
fn premultiply(c: u8, a: u8) -> u8 {
    let t = u32::from(c) * u32::from(a) + 128;
    (((t >> 8) + t) >> 8) as u8
}

/// Pillow's `RGBa → RGBA` for one channel.
fn unpremultiply(c: u8, a: u8) -> u8 {
    if a == 0 || a == 255 {
        c
    } else {
        (255 * u32::from(c) / u32::from(a)).min(255) as u8
    }
}

/// The colour and the alpha (as a grey RGB picture) of an RGBA picture, the colour
/// premultiplied or not.
fn split(img: &RgbaImage, premultiplied: bool) -> (RgbImage, RgbImage) {
    let (w, h) = img.dimensions();
    let colour = RgbImage::from_fn(w, h, |x, y| {
        let [r, g, b, a] = img.get_pixel(x, y).0;
        if premultiplied {
            image::Rgb([premultiply(r, a), premultiply(g, a), premultiply(b, a)])
        } else {
            image::Rgb([r, g, b])
        }
    });
    let alpha = RgbImage::from_fn(w, h, |x, y| image::Rgb([img.get_pixel(x, y).0[3]; 3]));
    (colour, alpha)
}

/// [`split`]'s inverse.
fn join(colour: &RgbImage, alpha: &RgbImage, premultiplied: bool) -> RgbaImage {
    RgbaImage::from_fn(colour.width(), colour.height(), |x, y| {
        let [r, g, b] = colour.get_pixel(x, y).0;
        let a = alpha.get_pixel(x, y).0[0];
        if premultiplied {
            image::Rgba([
                unpremultiply(r, a),
                unpremultiply(g, a),
                unpremultiply(b, a),
                a,
            ])
        } else {
            image::Rgba([r, g, b, a])
        }
    })
}

impl Picture {
    /// Width and height.
    pub fn dimensions(&self) -> (u32, u32) {
        match self {
            Self::Rgb(i) => i.dimensions(),
            Self::Rgba(i) => i.dimensions(),
        }
    }

    /// Pillow's `convert("RGB")`: the alpha dropped, the colour as stored.
    pub fn to_rgb(&self) -> RgbImage {
        match self {
            Self::Rgb(i) => i.clone(),
            Self::Rgba(i) => split(i, false).0,
        }
    }

    /// [`Self::to_rgb`], taking the picture.
    pub fn into_rgb(self) -> RgbImage {
        match self {
            Self::Rgb(i) => i,
            Self::Rgba(i) => split(&i, false).0,
        }
    }

    /// `resize((w, h), LANCZOS)` (Pillow-exact; RGBA through premultiplied colour).
    pub fn lanczos(&self, w: u32, h: u32) -> Result<Self> {
        Ok(match self {
            Self::Rgb(i) => Self::Rgb(resize_lanczos(i, w, h)?),
            Self::Rgba(i) if i.dimensions() == (w, h) => self.clone(),
            Self::Rgba(i) => {
                let (colour, alpha) = split(i, true);
                let (c, a) = (
                    resize_lanczos(&colour, w, h)?,
                    resize_lanczos(&alpha, w, h)?,
                );
                Self::Rgba(join(&c, &a, true))
            }
        })
    }

    /// `resize((w, h), NEAREST)`, channel by channel.
    pub fn nearest(&self, w: u32, h: u32) -> Self {
        match self {
            Self::Rgb(i) => Self::Rgb(resize_nearest(i, w, h)),
            Self::Rgba(i) => {
                let (colour, alpha) = split(i, false);
                let (c, a) = (resize_nearest(&colour, w, h), resize_nearest(&alpha, w, h));
                Self::Rgba(join(&c, &a, false))
            }
        }
    }

    /// Pillow's `convert(mode of like)`: RGB → RGBA with alpha 255, RGBA → RGB dropping it.
    pub fn converted_like(&self, like: &Self) -> Self {
        match (self, like) {
            (Self::Rgb(i), Self::Rgba(_)) => {
                Self::Rgba(RgbaImage::from_fn(i.width(), i.height(), |x, y| {
                    let [r, g, b] = i.get_pixel(x, y).0;
                    image::Rgba([r, g, b, 255])
                }))
            }
            (Self::Rgba(_), Self::Rgb(_)) => Self::Rgb(self.to_rgb()),
            _ => self.clone(),
        }
    }

    /// The bytes, `RGB` or `RGBA` interleaved.
    pub fn as_raw(&self) -> &[u8] {
        match self {
            Self::Rgb(i) => i.as_raw(),
            Self::Rgba(i) => i.as_raw(),
        }
    }

    /// The same picture with its bytes replaced by `f` of the bytes (same mode and size).
    pub(crate) fn map_raw(&self, f: impl FnOnce(&[u8]) -> Vec<u8>) -> Self {
        let (w, h) = self.dimensions();
        let raw = f(self.as_raw());
        match self {
            Self::Rgb(_) => Self::Rgb(RgbImage::from_raw(w, h, raw).expect("same size")),
            Self::Rgba(_) => Self::Rgba(RgbaImage::from_raw(w, h, raw).expect("same size")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pillows_premultiplication() {
        // checked against Pillow 9.5.0's convert("RGBa") / convert("RGBA")
        assert_eq!(premultiply(200, 128), 100);
        assert_eq!(premultiply(255, 1), 1);
        assert_eq!(unpremultiply(100, 128), 199);
        assert_eq!(unpremultiply(90, 0), 90);
        assert_eq!(unpremultiply(200, 100), 255);
    }

    #[test]
    fn rgba_keeps_its_alpha_and_rgb_drops_it() {
        let img = RgbaImage::from_fn(5, 4, |x, y| {
            image::Rgba([x as u8 * 40, y as u8 * 50, 9, 100 + x as u8])
        });
        let p = Picture::Rgba(img.clone());
        assert_eq!(p.to_rgb().get_pixel(2, 1).0, [80, 50, 9]);
        let n = p.nearest(10, 8);
        let Picture::Rgba(n) = n else {
            panic!("RGBA stays RGBA")
        };
        assert_eq!(n.get_pixel(5, 3).0, img.get_pixel(2, 1).0);
        let opaque = Picture::Rgb(p.to_rgb()).converted_like(&p);
        let Picture::Rgba(o) = opaque else { panic!() };
        assert_eq!(o.get_pixel(2, 1).0, [80, 50, 9, 255]);
    }
}
