//! The init image of img2img, prepared exactly as AUTOMATIC1111 v1.10.1 prepares it.
//!
//! The path through A1111 (`modules/img2img.py`, `StableDiffusionProcessingImg2Img.init` in
//! `modules/processing.py`, `modules/images.py`):
//!
//! 1. The image is opened and turned upright by its EXIF orientation (`images.fix_image`,
//!    `ImageOps.exif_transpose`). The web UI's image box hands it over as RGBA.
//! 2. `images.flatten(img, opts.img2img_background_color)`: transparency is composited onto white
//!    (`#ffffff`, the option's default) with Pillow's `paste(img, mask=img)` arithmetic, then
//!    converted to RGB ([`flatten_on_white`]).
//! 3. Unless the resize mode is 3 ("Just resize (latent upscale)"), `images.resize_image(mode, image,
//!    width, height)` ([`resize_image`]), which resizes with Pillow's LANCZOS filter
//!    ([`resize_lanczos`], a port of Pillow's `ImagingResample`: same coefficients, same 8-bit
//!    fixed-point rounding, same two-pass order, so the pixels are identical).
//!    With mode 3 A1111 does not resize the image at all: it encodes the image at its own size and
//!    afterwards resizes the *latent* bilinearly to `(height / 8, width / 8)`
//!    (`torch.nn.functional.interpolate(..., mode="bilinear")`). [`prepare_init_image`] therefore
//!    returns the image unresized for mode 3; the latent step belongs to the pipeline.
//! 4. `np.array(image).astype(np.float32) / 255.0`, channels first, then `image * 2 - 1` in
//!    `images_tensor_to_samples` ([`to_unit_chw`], [`to_signed_chw`], [`to_tensor`]).
//!
//! Width and height: A1111 does not round them. The UI's sliders move in steps of 8, the API takes
//! any size; the latent is `height // 8 × width // 8` (the VAE encoder's three stride-2
//! convolutions floor too), so the output image is [`effective_size`] while the infotext keeps the
//! requested size.

use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage, RgbaImage};

use crate::error::{PipelineError, Result};

/// A1111's img2img resize modes (`resize_mode` 0–3 in the API, the radio buttons in the UI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResizeMode {
    /// 0, "Just resize": stretch to the target size.
    JustResize,
    /// 1, "Crop and resize": scale to cover the target, centre, crop the excess.
    CropAndResize,
    /// 2, "Resize and fill": scale to fit inside the target, centre, fill the bands from the
    /// image's edges.
    ResizeAndFill,
    /// 3, "Just resize (latent upscale)": the image is encoded at its own size and the latent is
    /// resized instead.
    LatentUpscale,
}

impl ResizeMode {
    /// Every mode, in A1111's numbering.
    pub const ALL: [ResizeMode; 4] = [
        ResizeMode::JustResize,
        ResizeMode::CropAndResize,
        ResizeMode::ResizeAndFill,
        ResizeMode::LatentUpscale,
    ];

    /// A1111's number for the mode (the API's `resize_mode`).
    pub fn index(self) -> u8 {
        match self {
            ResizeMode::JustResize => 0,
            ResizeMode::CropAndResize => 1,
            ResizeMode::ResizeAndFill => 2,
            ResizeMode::LatentUpscale => 3,
        }
    }

    /// The mode with A1111's number `index`.
    pub fn from_index(index: u8) -> Option<ResizeMode> {
        Self::ALL.get(usize::from(index)).copied()
    }

    /// The command-line spelling (`just-resize`, `crop-and-resize`, `resize-and-fill`,
    /// `latent-upscale`).
    pub fn cli_name(self) -> &'static str {
        match self {
            ResizeMode::JustResize => "just-resize",
            ResizeMode::CropAndResize => "crop-and-resize",
            ResizeMode::ResizeAndFill => "resize-and-fill",
            ResizeMode::LatentUpscale => "latent-upscale",
        }
    }

    /// A1111's UI label ("Just resize", …).
    pub fn label(self) -> &'static str {
        match self {
            ResizeMode::JustResize => "Just resize",
            ResizeMode::CropAndResize => "Crop and resize",
            ResizeMode::ResizeAndFill => "Resize and fill",
            ResizeMode::LatentUpscale => "Just resize (latent upscale)",
        }
    }
}

impl std::str::FromStr for ResizeMode {
    type Err = PipelineError;

    /// Accepts the command-line spelling, A1111's label (any case) or its number.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        Self::ALL
            .into_iter()
            .find(|m| {
                t == m.cli_name() || t.eq_ignore_ascii_case(m.label()) || t == m.index().to_string()
            })
            .ok_or_else(|| PipelineError::UnknownResizeMode(s.to_string()))
    }
}

impl std::fmt::Display for ResizeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.cli_name())
    }
}

/// The size of the image A1111 produces for a requested `width × height`: each side floored to a
/// multiple of 8 (the latent is `height // 8 × width // 8`).
pub fn effective_size(width: u32, height: u32) -> (u32, u32) {
    (width / 8 * 8, height / 8 * 8)
}

/// Opens an init image (PNG, JPEG or WebP), turns it upright by its EXIF orientation and flattens
/// any transparency onto white, as A1111's UI does. `max_pixels` bounds `width × height`; the
/// dimensions are checked before the pixels are decoded.
///
/// PNG and lossless WebP decode to the same pixels as Pillow; a JPEG is decoded by a different
/// IDCT than Pillow's libjpeg-turbo and may differ by a level or so.
pub fn load_init_image(path: &Path, max_pixels: u64) -> Result<RgbImage> {
    Ok(flatten_on_white(&to_pillow_rgba(load_image(
        path, max_pixels,
    )?)))
}

/// Opens an image file (PNG, JPEG or WebP) as decoded, turned upright by its EXIF orientation;
/// `max_pixels` bounds `width × height`, checked before the pixels are decoded.
pub fn load_image(path: &Path, max_pixels: u64) -> Result<DynamicImage> {
    let read_err = |source| PipelineError::ImageRead {
        path: path.to_path_buf(),
        source,
    };
    let decode_err = |e: image::ImageError| PipelineError::ImageDecode {
        path: path.to_path_buf(),
        reason: match &e {
            // a PNG (or WebP) whose data stops early: Pillow's words for it
            image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                format!("{TRUNCATED} ({e})")
            }
            _ => e.to_string(),
        },
    };
    let reader = ImageReader::open(path)
        .map_err(read_err)?
        .with_guessed_format()
        .map_err(read_err)?;
    let Some(format) = reader.format() else {
        return Err(PipelineError::ImageDecode {
            path: path.to_path_buf(),
            reason: "not a PNG, JPEG or WebP image".into(),
        });
    };
    if matches!(format, ImageFormat::Png | ImageFormat::WebP) {
        let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(read_err)?);
        crate::image_check::check_container(&mut file)
            .map_err(read_err)?
            .map_err(|reason| PipelineError::ImageDecode {
                path: path.to_path_buf(),
                reason,
            })?;
    }
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(PipelineError::ImageTooLarge {
            path: path.to_path_buf(),
            width,
            height,
            max_pixels,
        });
    }
    if format == ImageFormat::Jpeg {
        let file = std::fs::File::open(path).map_err(read_err)?;
        jpeg_reaches_eoi(&mut std::io::BufReader::new(file))
            .map_err(read_err)?
            .map_err(|reason| PipelineError::ImageDecode {
                path: path.to_path_buf(),
                reason,
            })?;
    }
    let orientation = decoder.orientation().map_err(decode_err)?;
    // a decoder that panics on crafted data fails this image, not the process
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        DynamicImage::from_decoder(decoder)
    }))
    .map_err(|_| PipelineError::ImageDecode {
        path: path.to_path_buf(),
        reason: "the image decoder failed on this file (malformed data)".into(),
    })?;
    let mut img = decoded.map_err(decode_err)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Pillow's refusal of a file whose data ends early (`ImageFile.load`).
const TRUNCATED: &str = "image file is truncated";

/// Refuses JPEG bytes that stop before their end-of-image marker, with Pillow's words ("image
/// file is truncated (…)"); for callers that decode JPEG data held in memory themselves.
pub fn check_jpeg_complete(bytes: &[u8]) -> std::result::Result<(), String> {
    jpeg_reaches_eoi(&mut std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?
}

/// Whether a JPEG stream runs on to its end-of-image marker (`FF D9`); `Err` says why not.
///
/// image's JPEG decoder (zune-jpeg) fills whatever a cut file lacks with grey and reports
/// success; Pillow's libjpeg suspends at the end of the data and Pillow refuses the file
/// ("image file is truncated"). The walk follows ITU T.81's syntax: a marker segment's length
/// skips its payload, and entropy-coded data after SOS runs to the next `FF xx` that is not a
/// stuffed `FF 00`, a fill `FF FF` or a restart `FF D0`–`FF D7`. One difference with Pillow:
/// a file missing only its final two-byte EOI, after complete scan data, Pillow decodes and
/// this refuses.
fn jpeg_reaches_eoi(
    r: &mut impl std::io::BufRead,
) -> std::io::Result<std::result::Result<(), String>> {
    let truncated = |what: &str| Ok(Err(format!("{TRUNCATED} ({what})")));
    let Some(0xD8) = next_jpeg_marker(r)? else {
        return truncated("no start-of-image marker");
    };
    loop {
        match next_jpeg_marker(r)? {
            None => return truncated("no end-of-image marker"),
            Some(0xD9) => return Ok(Ok(())),
            // standalone markers: SOI, TEM
            Some(0xD8 | 0x01) => {}
            Some(m) => {
                let (Some(hi), Some(lo)) = (next_byte(r)?, next_byte(r)?) else {
                    return truncated("a marker segment's length is missing");
                };
                let len = u16::from_be_bytes([hi, lo]);
                if len < 2 {
                    return Ok(Err(format!("JPEG marker {m:#04x} has length {len}")));
                }
                if !skip(r, usize::from(len) - 2)? {
                    return truncated("a marker segment ends early");
                }
            }
        }
    }
}

/// The code of the next JPEG marker, skipping entropy-coded data, stuffed bytes, fill bytes
/// and restart markers; `None` at the end of the data.
fn next_jpeg_marker(r: &mut impl std::io::BufRead) -> std::io::Result<Option<u8>> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(None);
        }
        let Some(at) = buf.iter().position(|&b| b == 0xFF) else {
            let n = buf.len();
            r.consume(n);
            continue;
        };
        r.consume(at + 1);
        loop {
            match next_byte(r)? {
                None => return Ok(None),
                Some(0xFF) => {}
                Some(0x00 | 0xD0..=0xD7) => break,
                Some(m) => return Ok(Some(m)),
            }
        }
    }
}

fn next_byte(r: &mut impl std::io::BufRead) -> std::io::Result<Option<u8>> {
    let Some(&b) = r.fill_buf()?.first() else {
        return Ok(None);
    };
    r.consume(1);
    Ok(Some(b))
}

/// Skips `n` bytes; `false` if the data ends first.
fn skip(r: &mut impl std::io::BufRead, mut n: usize) -> std::io::Result<bool> {
    while n > 0 {
        let have = r.fill_buf()?.len();
        if have == 0 {
            return Ok(false);
        }
        let step = have.min(n);
        r.consume(step);
        n -= step;
    }
    Ok(true)
}

/// The image as Pillow 9.5 would hold it after `convert("RGBA")`. 16-bit RGB, RGBA and grey+alpha
/// keep their high byte (Pillow's `RGB;16B`, `RGBA;16B`, `LA;16B` unpackers); 16-bit grey opens
/// as mode `I` and converts by clipping to 255 (so most of it turns white, as in A1111).
fn to_pillow_rgba(img: DynamicImage) -> RgbaImage {
    match img {
        DynamicImage::ImageRgba8(i) => i,
        DynamicImage::ImageLuma16(g) => {
            let (w, h) = g.dimensions();
            let mut out = RgbaImage::new(w, h);
            for (o, p) in out.pixels_mut().zip(g.pixels()) {
                let v = p[0].min(255) as u8;
                *o = image::Rgba([v, v, v, 255]);
            }
            out
        }
        DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_)
        | DynamicImage::ImageLumaA16(_) => {
            let src = img.into_rgba16();
            let (w, h) = src.dimensions();
            let data = src.into_raw().into_iter().map(|v| (v >> 8) as u8).collect();
            // The buffer has exactly w*h*4 samples, so this cannot fail.
            RgbaImage::from_raw(w, h, data).unwrap_or_else(|| RgbaImage::new(w, h))
        }
        other => other.into_rgba8(),
    }
}

/// A1111's `images.flatten(img, "#ffffff")`: composites an RGBA image onto white with Pillow's
/// `paste(img, mask=img)` rounding (`(bg·(255−a) + c·a + 128) / 255` by shifts) and drops alpha.
pub fn flatten_on_white(img: &RgbaImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for px in img.pixels() {
        let a = u32::from(px[3]);
        for &c in &px.0[..3] {
            let t = 255 * (255 - a) + u32::from(c) * a + 128;
            out.push((((t >> 8) + t) >> 8) as u8);
        }
    }
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

/// Checks a requested size.
fn check_size(width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(PipelineError::InvalidSize { width, height });
    }
    Ok(())
}

/// Pillow's `Image.paste(src, box=(x, y))` onto `dst`: offsets may be negative or run past the
/// edge; what falls outside is clipped.
fn paste(dst: &mut RgbImage, src: &RgbImage, x: i64, y: i64) {
    let (dw, dh) = (i64::from(dst.width()), i64::from(dst.height()));
    let (sw, sh) = (i64::from(src.width()), i64::from(src.height()));
    let x0 = x.max(0);
    let x1 = (x + sw).min(dw);
    let y0 = y.max(0);
    let y1 = (y + sh).min(dh);
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    let n = ((x1 - x0) * 3) as usize;
    for yy in y0..y1 {
        let s = (((yy - y) * sw + (x0 - x)) * 3) as usize;
        let d = ((yy * dw + x0) * 3) as usize;
        let dst_raw: &mut [u8] = dst;
        dst_raw[d..d + n].copy_from_slice(&src.as_raw()[s..s + n]);
    }
}

/// A1111's `images.resize_image(resize_mode, im, width, height)` with no upscaler configured
/// (`opts.upscaler_for_img2img` "None", the default), for an RGB image.
///
/// "Resize and fill" stretches the image's first and last rows (or columns) into the bands with
/// `resized.resize((w, h), box=...)` and a zero-height (or zero-width) box: Pillow then blends the
/// 2 (or 3) rows nearest the edge, and since A1111 passes no filter there, with Pillow's default,
/// BICUBIC, not LANCZOS.
///
/// Mode 3 is not special here: A1111's function sends every mode other than 0 and 1 down the
/// "resize and fill" branch (img2img never calls it with mode 3; see [`prepare_init_image`]).
pub fn resize_image(mode: ResizeMode, im: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    check_size(width, height)?;
    check_size(im.width(), im.height())?;
    let (w, h) = (u64::from(width), u64::from(height));
    let (iw, ih) = (u64::from(im.width()), u64::from(im.height()));
    let ratio = width as f64 / height as f64;
    let src_ratio = im.width() as f64 / im.height() as f64;
    let centre = |src_w: u64, src_h: u64| {
        (
            (w / 2) as i64 - (src_w / 2) as i64,
            (h / 2) as i64 - (src_h / 2) as i64,
        )
    };
    let to_u32 =
        |v: u64| u32::try_from(v).map_err(|_| PipelineError::InvalidSize { width, height });
    match mode {
        ResizeMode::JustResize => resize_lanczos(im, width, height),
        ResizeMode::CropAndResize => {
            let src_w = if ratio > src_ratio { w } else { iw * h / ih };
            let src_h = if ratio <= src_ratio { h } else { ih * w / iw };
            let resized = resize_lanczos(im, to_u32(src_w)?, to_u32(src_h)?)?;
            let mut res = RgbImage::new(width, height);
            let (x, y) = centre(src_w, src_h);
            paste(&mut res, &resized, x, y);
            Ok(res)
        }
        ResizeMode::ResizeAndFill | ResizeMode::LatentUpscale => {
            let src_w = if ratio < src_ratio { w } else { iw * h / ih };
            let src_h = if ratio >= src_ratio { h } else { ih * w / iw };
            let resized = resize_lanczos(im, to_u32(src_w)?, to_u32(src_h)?)?;
            let mut res = RgbImage::new(width, height);
            let (x, y) = centre(src_w, src_h);
            paste(&mut res, &resized, x, y);
            let (rw, rh) = (resized.width() as f32, resized.height() as f32);
            if ratio < src_ratio {
                // Bands above and below, stretched from the top and bottom rows.
                let fill_height = (h / 2) as i64 - (src_h / 2) as i64;
                if fill_height > 0 {
                    let fh = fill_height as u32;
                    let wf = width as f32;
                    let top =
                        resize_box(&resized, width, fh, [0.0, 0.0, wf, 0.0], Filter::Bicubic)?;
                    paste(&mut res, &top, 0, 0);
                    let bottom =
                        resize_box(&resized, width, fh, [0.0, rh, wf, rh], Filter::Bicubic)?;
                    paste(&mut res, &bottom, 0, fill_height + src_h as i64);
                }
            } else if ratio > src_ratio {
                // Bands left and right, stretched from the first and last columns.
                let fill_width = (w / 2) as i64 - (src_w / 2) as i64;
                if fill_width > 0 {
                    let fw = fill_width as u32;
                    let hf = height as f32;
                    let left =
                        resize_box(&resized, fw, height, [0.0, 0.0, 0.0, hf], Filter::Bicubic)?;
                    paste(&mut res, &left, 0, 0);
                    let right =
                        resize_box(&resized, fw, height, [rw, 0.0, rw, hf], Filter::Bicubic)?;
                    paste(&mut res, &right, fill_width + src_w as i64, 0);
                }
            }
            Ok(res)
        }
    }
}

/// The init image as A1111's img2img feeds it to the VAE: [`resize_image`] for modes 0–2; for
/// mode 3 the image unchanged (A1111 skips `resize_image` and resizes the latent instead).
pub fn prepare_init_image(
    im: &RgbImage,
    mode: ResizeMode,
    width: u32,
    height: u32,
) -> Result<RgbImage> {
    match mode {
        ResizeMode::LatentUpscale => {
            check_size(width, height)?;
            Ok(im.clone())
        }
        _ => resize_image(mode, im, width, height),
    }
}

/// `np.array(image).astype(np.float32) / 255.0`, channels first: `3 × H × W` values in [0, 1].
pub fn to_unit_chw(im: &RgbImage) -> Vec<f32> {
    let (w, h) = (im.width() as usize, im.height() as usize);
    let mut out = vec![0f32; 3 * w * h];
    for (i, px) in im.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * w * h + i] = f32::from(px[c]) / 255.0;
        }
    }
    out
}

/// [`to_unit_chw`] followed by A1111's `image * 2 - 1` (float32): `3 × H × W` values in [−1, 1].
pub fn to_signed_chw(im: &RgbImage) -> Vec<f32> {
    let mut v = to_unit_chw(im);
    for x in &mut v {
        *x = *x * 2.0 - 1.0;
    }
    v
}

/// The image as a `(1, 3, H, W)` float32 tensor in [−1, 1], ready for the VAE encoder.
pub fn to_tensor(im: &RgbImage, device: &candle_core::Device) -> Result<candle_core::Tensor> {
    let (w, h) = (im.width() as usize, im.height() as usize);
    Ok(candle_core::Tensor::from_vec(
        to_signed_chw(im),
        (1, 3, h, w),
        device,
    )?)
}

/// The resampling filters of Pillow's `ImagingResample` that A1111's image stage uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `Image.Resampling.LANCZOS`: Lanczos-3, support 3. A1111's resize.
    Lanczos,
    /// `Image.Resampling.BICUBIC`: cubic convolution with a = −0.5, support 2. Pillow's default
    /// when `resize` is called without a filter, as A1111's fill bands are.
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Lanczos => 3.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Lanczos => lanczos(x),
            Filter::Bicubic => bicubic(x),
        }
    }
}

/// Pillow's `Image.resize((width, height), Image.Resampling.LANCZOS)` for an RGB image.
pub fn resize_lanczos(im: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    check_size(width, height)?;
    if im.dimensions() == (width, height) {
        // `Image.resize` returns a copy when the size and the box are unchanged.
        return Ok(im.clone());
    }
    let b = [0.0, 0.0, im.width() as f32, im.height() as f32];
    resize_box(im, width, height, b, Filter::Lanczos)
}

/// Pillow's `Image.resize((width, height), LANCZOS, box=(x0, y0, x1, y1))` for an RGB image.
pub fn resize_lanczos_box(
    im: &RgbImage,
    width: u32,
    height: u32,
    bx: [f32; 4],
) -> Result<RgbImage> {
    resize_box(im, width, height, bx, Filter::Lanczos)
}

/// Pillow 9.5's `Image.resize((width, height), filter, box=(x0, y0, x1, y1))` for an RGB image:
/// the source region `box` (floats, possibly of zero width or height) scaled to
/// `width × height`.
///
/// A port of Pillow's `_resize` (`src/_imaging.c`) and `ImagingResample` (`src/libImaging/
/// Resample.c`): per output pixel, filter weights over the support (widened by the scale when
/// shrinking), normalised, turned into 22-bit fixed point with Pillow's rounding, applied to 8-bit
/// samples with a rounding bias and clipped; a horizontal pass into an 8-bit intermediate, then a
/// vertical pass, each skipped when Pillow skips it. (Pillow 13 sometimes runs the vertical pass
/// first, which changes pixels; A1111 v1.10.1 pins Pillow 9.5.0.)
pub fn resize_box(
    im: &RgbImage,
    width: u32,
    height: u32,
    bx: [f32; 4],
    filter: Filter,
) -> Result<RgbImage> {
    check_size(width, height)?;
    let (iw, ih) = im.dimensions();
    let bad = bx[0] < 0.0
        || bx[1] < 0.0
        || bx[2] > iw as f32
        || bx[3] > ih as f32
        || bx[2] - bx[0] < 0.0
        || bx[3] - bx[1] < 0.0
        || bx.iter().any(|v| !v.is_finite());
    if bad {
        return Err(PipelineError::InvalidResizeBox {
            bx,
            width: iw,
            height: ih,
        });
    }
    // `_resize`: an integer box of exactly the output size is a crop.
    if bx[0].fract() == 0.0
        && bx[1].fract() == 0.0
        && bx[2] - bx[0] == width as f32
        && bx[3] - bx[1] == height as f32
    {
        return Ok(
            image::imageops::crop_imm(im, bx[0] as u32, bx[1] as u32, width, height).to_image(),
        );
    }
    let need_h = width != iw || bx[0] != 0.0 || bx[2] != width as f32;
    let need_v = height != ih || bx[1] != 0.0 || bx[3] != height as f32;
    let vert = Coeffs::new(ih, bx[1], bx[3], height, filter);
    let mut cur: std::borrow::Cow<'_, RgbImage> = std::borrow::Cow::Borrowed(im);
    let mut vbounds = vert.bounds.clone();
    if need_h {
        let horiz = Coeffs::new(iw, bx[0], bx[2], width, filter);
        // Only the source rows the vertical pass reads.
        let first = vert.bounds[0].0;
        let last = vert.bounds[vert.bounds.len() - 1].0 + vert.bounds[vert.bounds.len() - 1].1;
        for b in &mut vbounds {
            b.0 -= first;
        }
        cur = std::borrow::Cow::Owned(horizontal(im, &horiz, first, last - first));
    }
    if need_v {
        return Ok(vertical(&cur, &vert, &vbounds));
    }
    Ok(cur.into_owned())
}

/// Pillow's `PRECISION_BITS`: 32 − 8 − 2.
const PRECISION_BITS: u32 = 22;

/// `sin(πx)/(πx)`, Pillow's `sinc_filter`.
fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

/// Pillow's `lanczos_filter`: a sinc truncated to [−3, 3) and windowed by `sinc(x/3)`.
fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Pillow's `bicubic_filter`: cubic convolution with a = −0.5 on [−2, 2].
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The fixed-point weights of one pass (`precompute_coeffs` + `normalize_coeffs_8bpc`).
struct Coeffs {
    /// Per output sample: first input index and count.
    bounds: Vec<(usize, usize)>,
    /// Weights, `ksize` per output sample.
    k: Vec<i32>,
    ksize: usize,
}

impl Coeffs {
    fn new(in_size: u32, in0: f32, in1: f32, out_size: u32, filter: Filter) -> Coeffs {
        let scale = f64::from(in1 - in0) / f64::from(out_size);
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let inv_filterscale = 1.0 / filterscale;
        let mut bounds = Vec::with_capacity(out_size as usize);
        let mut k = vec![0i32; out_size as usize * ksize];
        let mut w = vec![0f64; ksize];
        for xx in 0..out_size as usize {
            let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) - xmin;
            let n = xmax.max(0) as usize;
            let mut ww = 0.0;
            for (x, wx) in w.iter_mut().enumerate().take(n) {
                let v = filter.eval(((x as i64 + xmin) as f64 - center + 0.5) * inv_filterscale);
                *wx = v;
                ww += v;
            }
            let kk = &mut k[xx * ksize..xx * ksize + ksize];
            for x in 0..n {
                let v = if ww != 0.0 { w[x] / ww } else { w[x] };
                let f = v * f64::from(1u32 << PRECISION_BITS);
                kk[x] = if v < 0.0 {
                    (-0.5 + f) as i32
                } else {
                    (0.5 + f) as i32
                };
            }
            bounds.push((xmin as usize, n));
        }
        Coeffs { bounds, k, ksize }
    }
}

/// Pillow's `clip8`: drop the fraction bits and clamp to a byte.
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The horizontal pass over source rows `offset .. offset + rows`.
fn horizontal(im: &RgbImage, c: &Coeffs, offset: usize, rows: usize) -> RgbImage {
    let out_w = c.bounds.len();
    let in_w = im.width() as usize;
    let src = im.as_raw();
    let mut out = vec![0u8; out_w * rows * 3];
    for y in 0..rows {
        let line = &src[(y + offset) * in_w * 3..(y + offset + 1) * in_w * 3];
        for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
            let k = &c.k[xx * c.ksize..xx * c.ksize + n];
            let mut ss = [1i32 << (PRECISION_BITS - 1); 3];
            for (x, &kx) in k.iter().enumerate() {
                let p = &line[(x + xmin) * 3..(x + xmin) * 3 + 3];
                for ch in 0..3 {
                    ss[ch] = ss[ch].wrapping_add(i32::from(p[ch]).wrapping_mul(kx));
                }
            }
            let o = (y * out_w + xx) * 3;
            for ch in 0..3 {
                out[o + ch] = clip8(ss[ch]);
            }
        }
    }
    RgbImage::from_raw(out_w as u32, rows as u32, out).unwrap_or_else(|| RgbImage::new(0, 0))
}

/// The vertical pass; `bounds` are relative to the first row of `im`.
fn vertical(im: &RgbImage, c: &Coeffs, bounds: &[(usize, usize)]) -> RgbImage {
    let w = im.width() as usize;
    let out_h = bounds.len();
    let src = im.as_raw();
    let mut out = vec![0u8; w * out_h * 3];
    for (yy, &(ymin, n)) in bounds.iter().enumerate() {
        let k = &c.k[yy * c.ksize..yy * c.ksize + n];
        for xx in 0..w {
            let mut ss = [1i32 << (PRECISION_BITS - 1); 3];
            for (y, &ky) in k.iter().enumerate() {
                let p = &src[((y + ymin) * w + xx) * 3..((y + ymin) * w + xx) * 3 + 3];
                for ch in 0..3 {
                    ss[ch] = ss[ch].wrapping_add(i32::from(p[ch]).wrapping_mul(ky));
                }
            }
            let o = (yy * w + xx) * 3;
            for ch in 0..3 {
                out[o + ch] = clip8(ss[ch]);
            }
        }
    }
    RgbImage::from_raw(w as u32, out_h as u32, out).unwrap_or_else(|| RgbImage::new(0, 0))
}
