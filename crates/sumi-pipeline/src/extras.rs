//! A1111 v1.10.1's Extras upscale (`scripts/postprocessing_upscale.py`
//! `ScriptPostprocessingUpscale.upscale/process`, `modules/postprocessing.py` `run_extras` /
//! `run_postprocessing`) restated: upscale by a factor ([`ExtrasResize::By`], with the UI's
//! `max_side_length`) or to a size ([`ExtrasResize::To`], with the centred crop), a first
//! upscaler and an optional second one blended in with Pillow's `Image.blend`, and the
//! `postprocessing` infotext and `html_info` A1111 writes.
//!
//! A1111's own behaviour is kept where it surprises: `upscaler_1` `"None"` leaves the picture
//! unchanged and writes no infotext (the second upscaler is then not even looked up); resizing
//! to a size without crop gives the upscaler's size (`⌊w·scale⌋₈ × ⌊h·scale⌋₈`, A1111's
//! `Upscaler.upscale`), not the size asked for; the second upscaler runs on the original image
//! with the same arguments as the first.

pub use crate::png::encode_png_with_texts;
use std::ops::ControlFlow;

use image::RgbImage;

use crate::error::{PipelineError, Result};
use crate::infotext::{py_float_repr, quote};
use crate::request::MAX_SIDE;
use crate::upscale::{Picture, TileProgress, UpscaleError, UpscalerRegistry, UpscalerTiles};

/// The `postprocessing` PNG text chunk A1111 writes the Extras infotext to.
pub const POSTPROCESSING_KEY: &str = "postprocessing";

/// How the picture is resized (A1111's `resize_mode` 0 and 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ExtrasResize {
    /// `resize_mode` 0: by `upscaling_resize`; `max_side_length` (0 = no limit, the UI's field;
    /// the API always sends 0) shrinks the target to fit, as A1111's
    /// `limit_size_by_one_dimention`.
    By {
        /// The factor (`upscaling_resize`).
        scale: f64,
        /// The longest side allowed, 0 for none.
        max_side_length: u32,
    },
    /// `resize_mode` 1: to `upscaling_resize_w × upscaling_resize_h`, centred on a black
    /// canvas of that size when `crop` (`upscaling_crop`).
    To {
        /// The width.
        width: u32,
        /// The height.
        height: u32,
        /// `upscaling_crop`.
        crop: bool,
    },
}

/// One Extras upscale, as `run_extras` takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtrasRequest {
    /// The resize.
    pub resize: ExtrasResize,
    /// `upscaler_1`: an upscaler name; `"None"` leaves the picture as it is.
    pub upscaler_1: String,
    /// `upscaler_2` (`"None"` for none).
    pub upscaler_2: String,
    /// `extras_upscaler_2_visibility`, in [0, 1]: the second upscaler's weight in the blend.
    pub upscaler_2_visibility: f64,
    /// Model tiling, each family with its A1111 settings (`ESRGAN_tile`, `SWIN_tile`,
    /// `DAT_tile` and their overlaps).
    pub tile: UpscalerTiles,
}

impl Default for ExtrasRequest {
    /// The API's defaults (`ExtrasBaseRequest`): by 2, `None`, `None`, visibility 0.
    fn default() -> Self {
        Self {
            resize: ExtrasResize::By {
                scale: 2.0,
                max_side_length: 0,
            },
            upscaler_1: "None".into(),
            upscaler_2: "None".into(),
            upscaler_2_visibility: 0.0,
            tile: UpscalerTiles::default(),
        }
    }
}

/// An upscaled picture and what A1111 writes of it.
#[derive(Debug, Clone)]
pub struct ExtrasOutput {
    /// The picture.
    pub image: RgbImage,
    /// `pp.info`: the infotext's keys and values, in A1111's order.
    pub info: Vec<(String, String)>,
}

impl ExtrasOutput {
    /// `run_postprocessing`'s infotext: `k: quote(v)` joined by `", "` (empty when nothing was
    /// done).
    pub fn infotext(&self) -> String {
        infotext(&self.info)
    }
}

/// `run_postprocessing`'s infotext of `pp.info`: `k: quote(v)` joined by `", "`.
pub fn infotext(info: &[(String, String)]) -> String {
    info.iter()
        .map(|(k, v)| {
            if k == v {
                k.clone()
            } else {
                format!("{k}: {}", quote(v))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `ui_common.plaintext_to_html(text)`: `<p>` + lines HTML-escaped (Python's `html.escape`)
/// joined by `<br>\n` + `</p>`.
pub fn html_info(text: &str) -> String {
    let lines: Vec<String> = text.split('\n').map(html_escape).collect();
    format!("<p>{}</p>", lines.join("<br>\n"))
}

/// Python's `html.escape(s, quote=True)`.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// Checks the request before any work: a finite positive factor, sizes within [`MAX_SIDE`],
/// a visibility in [0, 1], valid tiles.
pub fn check_request(req: &ExtrasRequest) -> Result<()> {
    let bad = |field: &'static str, detail: String| PipelineError::Request { field, detail };
    match req.resize {
        ExtrasResize::By { scale, .. } => {
            if !(scale.is_finite() && scale > 0.0) {
                return Err(bad(
                    "upscaling_resize",
                    format!("{scale} is not a positive number"),
                ));
            }
        }
        ExtrasResize::To { width, height, .. } => {
            for (field, v) in [
                ("upscaling_resize_w", width),
                ("upscaling_resize_h", height),
            ] {
                if !(1..=MAX_SIDE).contains(&v) {
                    return Err(bad(field, format!("{v} is not in 1 to {MAX_SIDE}")));
                }
            }
        }
    }
    let v = req.upscaler_2_visibility;
    if !(0.0..=1.0).contains(&v) {
        return Err(bad(
            "extras_upscaler_2_visibility",
            format!("{v} is not in 0 to 1"),
        ));
    }
    req.tile.check()
}

/// `limit_size_by_one_dimention(w, h, limit)` on floats (Python's `//` on floats).
fn limit_size(w: f64, h: f64, limit: f64) -> (u64, u64) {
    let (w, h) = if h > w && h > limit {
        (py_floordiv(limit * w, h), limit)
    } else if w > limit {
        (limit, py_floordiv(limit * h, w))
    } else {
        (w, h)
    };
    (w as u64, h as u64)
}

/// Python's float `a // b` (`float_floor_div`) for `b > 0`.
fn py_floordiv(a: f64, b: f64) -> f64 {
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    let f = div.floor();
    if div - f > 0.5 {
        f + 1.0
    } else {
        f
    }
}

/// What `ScriptPostprocessingUpscale.upscale` computes before it upscales: the factor, whether
/// the result is cropped to a size, and the infotext keys it writes.
struct Plan {
    scale: f64,
    crop_to: Option<(u32, u32)>,
    info: Vec<(String, String)>,
}

fn plan((w, h): (u32, u32), resize: ExtrasResize) -> Result<Plan> {
    let (iw, ih) = (f64::from(w), f64::from(h));
    let mut info = Vec::new();
    let plan = match resize {
        ExtrasResize::To {
            width,
            height,
            crop,
        } => {
            info.push((
                "Postprocess upscale to".to_string(),
                format!("{width}x{height}"),
            ));
            Plan {
                scale: (f64::from(width) / iw).max(f64::from(height) / ih),
                crop_to: crop.then_some((width, height)),
                info,
            }
        }
        ExtrasResize::By {
            scale,
            max_side_length,
        } => {
            info.push(("Postprocess upscale by".to_string(), py_float_repr(scale)));
            let limit = f64::from(max_side_length);
            let mut scale = scale;
            if max_side_length != 0 && iw.max(ih) * scale > limit {
                let (tw, th) = limit_size(iw * scale, ih * scale, limit);
                scale = (tw as f64 / iw).max(th as f64 / ih);
                info.push(("Max side length".to_string(), max_side_length.to_string()));
            }
            Plan {
                scale,
                crop_to: None,
                info,
            }
        }
    };
    if !(plan.scale.is_finite() && plan.scale > 0.0) {
        return Err(UpscaleError::Scale(plan.scale).into());
    }
    Ok(plan)
}

/// `Image.new("RGB", (w, h))` with `image` pasted at `(w//2 − iw//2, h//2 − ih//2)`.
fn crop_centre(image: &RgbImage, w: u32, h: u32) -> RgbImage {
    let mut out = RgbImage::new(w, h);
    let x0 = i64::from(w / 2) - i64::from(image.width() / 2);
    let y0 = i64::from(h / 2) - i64::from(image.height() / 2);
    for (x, y, p) in out.enumerate_pixels_mut() {
        let (sx, sy) = (i64::from(x) - x0, i64::from(y) - y0);
        if (0..i64::from(image.width())).contains(&sx)
            && (0..i64::from(image.height())).contains(&sy)
        {
            *p = *image.get_pixel(sx as u32, sy as u32);
        }
    }
    out
}

/// Pillow's `Image.blend(a, b, alpha)` for `alpha` in [0, 1]: a copy of `a` at 0, of `b` at
/// 1, else per byte `(u8)(a + alpha·(b − a))` in C `float` (alpha is passed as a float).
pub fn blend(a: &RgbImage, b: &RgbImage, alpha: f64) -> Result<RgbImage> {
    Ok(blend_pictures(&Picture::Rgb(a.clone()), &Picture::Rgb(b.clone()), alpha)?.into_rgb())
}

/// [`blend`] of pictures of one mode (RGB or RGBA; the alpha is blended as a channel).
fn blend_pictures(a: &Picture, b: &Picture, alpha: f64) -> Result<Picture> {
    if a.dimensions() != b.dimensions() {
        let (bw, bh) = b.dimensions();
        let (aw, ah) = a.dimensions();
        return Err(UpscaleError::Size {
            width: bw.into(),
            height: bh.into(),
            detail: format!("the second upscale is not the first's size {aw}x{ah}"),
        }
        .into());
    }
    let al = alpha as f32;
    if al == 0.0 {
        return Ok(a.clone());
    }
    if al == 1.0 {
        return Ok(b.clone());
    }
    Ok(a.map_raw(|raw| {
        raw.iter()
            .zip(b.as_raw())
            .map(|(&x, &y)| {
                let (x, y) = (i32::from(x), i32::from(y));
                (x as f32 + al * (y - x) as f32) as u8
            })
            .collect()
    }))
}

/// A1111's Extras upscale of one picture (`ScriptPostprocessingUpscale.process`), upscalers
/// found in `upscalers`. `on_tile` hears of each model tile (of both upscalers) and may
/// interrupt. Unknown names are [`UpscaleError::UnknownUpscaler`] (with the list), sizes over
/// the limits [`UpscaleError::Size`].
pub fn upscale_extras(
    img: &RgbImage,
    req: &ExtrasRequest,
    upscalers: &UpscalerRegistry,
    on_tile: &mut dyn FnMut(TileProgress) -> ControlFlow<()>,
) -> Result<ExtrasOutput> {
    let (image, info) =
        upscale_extras_picture(&Picture::Rgb(img.clone()), req, upscalers, on_tile)?;
    Ok(ExtrasOutput {
        image: image.into_rgb(),
        info,
    })
}

/// [`upscale_extras`] of an RGB or RGBA picture, as A1111 with Pillow treats RGBA
/// (`run_postprocessing` keeps it): `None` leaves it as it is, Lanczos and Nearest keep the
/// alpha (Lanczos over premultiplied colour), a model upscaler gives RGB (its input is
/// `convert("RGB")`: the alpha dropped, not flattened), the crop's canvas is RGB (the alpha
/// dropped), and the second upscale is converted to the first's mode before the blend.
/// Returns the picture and the infotext's keys.
pub fn upscale_extras_picture(
    img: &Picture,
    req: &ExtrasRequest,
    upscalers: &UpscalerRegistry,
    on_tile: &mut dyn FnMut(TileProgress) -> ControlFlow<()>,
) -> Result<(Picture, Vec<(String, String)>)> {
    check_request(req)?;
    let (w0, h0) = img.dimensions();
    crate::upscale::check_source((w0, h0))?;
    if req.upscaler_1 == "None" {
        return Ok((img.clone(), Vec::new()));
    }
    let first = upscalers.get(&req.upscaler_1)?;
    let second = match req.upscaler_2.as_str() {
        "None" => None,
        name => Some(upscalers.get(name)?),
    };
    let plan = plan((w0, h0), req.resize)?;
    let mut info = plan.info.clone();
    let run = |u: &crate::upscale::Upscaler,
               info: &mut Vec<(String, String)>,
               on_tile: &mut dyn FnMut(TileProgress) -> ControlFlow<()>|
     -> Result<Picture> {
        let mut out = u.upscale_picture(img, plan.scale, req.tile, on_tile)?;
        if let Some((w, h)) = plan.crop_to {
            out = Picture::Rgb(crop_centre(&out.to_rgb(), w, h));
            set(info, "Postprocess crop to", format!("{w}x{h}"));
        }
        Ok(out)
    };
    let mut image = run(first, &mut info, on_tile)?;
    set(&mut info, "Postprocess upscaler", first.name().to_string());
    if let Some(second) = second.filter(|_| req.upscaler_2_visibility > 0.0) {
        let other = run(second, &mut info, on_tile)?.converted_like(&image);
        image = blend_pictures(&image, &other, req.upscaler_2_visibility)?;
        set(
            &mut info,
            "Postprocess upscaler 2",
            second.name().to_string(),
        );
    }
    Ok((image, info))
}

/// A Python dict's `d[key] = value`: replaced in place when present, else appended.
fn set(info: &mut Vec<(String, String)>, key: &str, value: String) {
    match info.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => info.push((key.to_string(), value)),
    }
}

/// The text chunks A1111 writes on an Extras output (`run_postprocessing` with
/// `enable_pnginfo`, a dict): the input's text chunks but `parameters`, then `parameters` (when
/// the input had it), then `postprocessing` set (in place when the input had one).
pub fn output_texts(input_texts: &[(String, String)], infotext: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in input_texts.iter().filter(|(k, _)| k != "parameters") {
        set(&mut out, k, v.clone());
    }
    if let Some((_, p)) = input_texts.iter().rev().find(|(k, _)| k == "parameters") {
        set(&mut out, "parameters", p.clone());
    }
    set(&mut out, POSTPROCESSING_KEY, infotext.to_string());
    out
}
