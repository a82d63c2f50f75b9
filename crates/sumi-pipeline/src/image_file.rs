//! Image files that carry A1111's parameters, in the three formats A1111's `samples_format`
//! offers and reads back: PNG (a `parameters` text chunk, [`crate::png`]), JPEG and WebP (EXIF
//! `UserComment`, [`crate::exif`]).
//!
//! Writing follows A1111 v1.10.1's `save_image_with_geninfo`: Pillow saves the JPEG at
//! `opts.jpeg_quality` (default 80, [`JPEG_QUALITY`]) or the WebP lossy at the same quality
//! (`opts.webp_lossless` default False), then `piexif.insert(exif, file)` adds the EXIF block:
//! in a JPEG it replaces the leading JFIF `APP0` segment by an `APP1` one (piexif's
//! `merge_segments`), in a WebP it becomes an `EXIF` chunk (the TIFF block without `Exif\0\0`)
//! appended after the image data, with a `VP8X` header chunk first (piexif's `_webp.insert`).
//! A JPEG segment holds at most 65,533 bytes, so a JPEG cannot carry a longer EXIF block (piexif
//! fails there too): [`encode`] refuses it.
//!
//! Reading follows `read_info_from_image` on what Pillow puts in `image.info`: a PNG's
//! `parameters` text; then, when the file has EXIF (a JPEG's first `APP1 Exif` segment, a WebP's
//! `EXIF` chunk, a PNG's `eXIf` chunk), its decoded `UserComment` wins when not empty; else a
//! JPEG's comment (`COM` segment, the last one) as UTF-8. Every length is checked against the
//! file's size.

use std::path::Path;

use image::RgbImage;

use crate::error::{PipelineError, Result};

/// A1111's `jpeg_quality` default, also its WebP quality.
pub const JPEG_QUALITY: u8 = 80;

/// Largest EXIF block a JPEG `APP1` segment holds (a 16-bit length that counts itself).
const MAX_APP1: usize = 65_533;

/// The formats an output can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// `.png`: the infotext in a `parameters` text chunk.
    Png,
    /// `.jpg`/`.jpeg`: quality 80, the infotext in EXIF.
    Jpeg,
    /// `.webp`: lossy, quality 80, the infotext in EXIF.
    Webp,
}

impl OutputFormat {
    /// The format a file name asks for by its extension (any case), `None` for another or no
    /// extension.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "png" => Some(Self::Png),
            "jpg" | "jpeg" => Some(Self::Jpeg),
            "webp" => Some(Self::Webp),
            _ => None,
        }
    }
}

/// `image` encoded in `format` with `parameters` where A1111 puts them.
pub fn encode(
    image: &RgbImage,
    format: OutputFormat,
    parameters: Option<&str>,
) -> std::result::Result<Vec<u8>, String> {
    match format {
        OutputFormat::Png => crate::png::encode_png(image, parameters),
        OutputFormat::Jpeg => {
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
                .encode_image(image)
                .map_err(|e| e.to_string())?;
            match parameters {
                Some(text) => jpeg_insert_exif(&out, &crate::exif::dump_user_comment(text)),
                None => Ok(out),
            }
        }
        OutputFormat::Webp => {
            let webp = webp::Encoder::from_rgb(image.as_raw(), image.width(), image.height())
                .encode_simple(false, f32::from(JPEG_QUALITY))
                .map_err(|e| format!("WebP encoding failed: {e:?}"))?;
            match parameters {
                Some(text) => webp_insert_exif(
                    &webp,
                    &crate::exif::dump_user_comment(text)[crate::exif::EXIF_HEADER.len()..],
                    (image.width(), image.height()),
                ),
                None => Ok(webp.to_vec()),
            }
        }
    }
}

/// piexif's `insert` into a JPEG: an `APP1` segment holding `exif` (with its `Exif\0\0`) replaces
/// the first segment when that is `APP0` or `APP1 Exif`, else goes right after `SOI`.
fn jpeg_insert_exif(jpeg: &[u8], exif: &[u8]) -> std::result::Result<Vec<u8>, String> {
    if exif.len() > MAX_APP1 {
        return Err(format!(
            "the parameters take {} bytes of EXIF, more than a JPEG segment holds ({MAX_APP1}); \
             write a PNG or WebP",
            exif.len()
        ));
    }
    if !jpeg.starts_with(&[0xff, 0xd8]) {
        return Err("the JPEG encoder wrote no SOI".into());
    }
    let mut rest = &jpeg[2..];
    if let [0xff, m, hi, lo, ..] = *rest {
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let seg = rest.get(2..2 + len).unwrap_or_default();
        if m == 0xe0 || (m == 0xe1 && seg.get(2..8) == Some(crate::exif::EXIF_HEADER.as_slice())) {
            rest = rest.get(2 + len..).ok_or("a truncated JPEG segment")?;
        }
    }
    let mut out = Vec::with_capacity(jpeg.len() + exif.len() + 4);
    out.extend_from_slice(&[0xff, 0xd8, 0xff, 0xe1]);
    out.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(exif);
    out.extend_from_slice(rest);
    Ok(out)
}

/// A RIFF chunk: its FourCC and its data.
type Chunk<'a> = ([u8; 4], &'a [u8]);

/// The chunks of a RIFF WebP after its 12-byte header: `(fourcc, data)`, bounded by the file.
fn webp_chunks(webp: &[u8]) -> std::result::Result<Vec<Chunk<'_>>, String> {
    if webp.len() < 12 || &webp[..4] != b"RIFF" || &webp[8..12] != b"WEBP" {
        return Err("not a WebP file".into());
    }
    let riff = u32::from_le_bytes([webp[4], webp[5], webp[6], webp[7]]) as usize;
    let end = riff.saturating_add(8).min(webp.len());
    let mut out = Vec::new();
    let mut pos = 12usize;
    while pos + 8 <= end {
        let fourcc = [webp[pos], webp[pos + 1], webp[pos + 2], webp[pos + 3]];
        let b = &webp[pos + 4..pos + 8];
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let data = webp
            .get(pos + 8..(pos + 8).saturating_add(len))
            .ok_or_else(|| format!("a truncated {} chunk", String::from_utf8_lossy(&fourcc)))?;
        out.push((fourcc, data));
        pos = pos + 8 + len + len % 2;
    }
    Ok(out)
}

/// piexif's `_webp.insert` for a still image: an `EXIF` chunk appended (replacing any), and a
/// `VP8X` chunk first with the EXIF flag (alpha and ICC flags kept) and the canvas size.
fn webp_insert_exif(
    webp: &[u8],
    tiff: &[u8],
    (width, height): (u32, u32),
) -> std::result::Result<Vec<u8>, String> {
    let mut chunks: Vec<Chunk<'_>> = webp_chunks(webp)?
        .into_iter()
        .filter(|(c, _)| c != b"EXIF" && c != b"VP8X")
        .collect();
    chunks.push((*b"EXIF", tiff));
    let mut flags = 0x08u8;
    for (c, _) in &chunks {
        match c {
            b"ICCP" => flags |= 0x20,
            b"ALPH" => flags |= 0x10,
            b"XMP " => flags |= 0x04,
            _ => {}
        }
    }
    let mut vp8x = vec![flags, 0, 0, 0];
    vp8x.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(height - 1).to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    for (c, d) in std::iter::once((*b"VP8X", vp8x.as_slice())).chain(chunks) {
        let len = u32::try_from(d.len()).map_err(|_| "a WebP chunk over 4 GiB")?;
        body.extend_from_slice(&c);
        body.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(d);
        if d.len() % 2 == 1 {
            body.push(0);
        }
    }
    let len = u32::try_from(body.len()).map_err(|_| "a WebP file over 4 GiB")?;
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// What Pillow's `image.info` gives `read_info_from_image` from a JPEG: the first `APP1 Exif`
/// segment (with `Exif\0\0`) and the last `COM` segment, up to the first `SOS`.
fn jpeg_exif_and_comment(jpeg: &[u8]) -> std::result::Result<[Option<&[u8]>; 2], String> {
    let (mut exif, mut comment) = (None, None);
    let mut pos = 2usize;
    loop {
        let Some(&[ff, m]) = jpeg
            .get(pos..pos + 2)
            .and_then(|s| <&[u8; 2]>::try_from(s).ok())
        else {
            return Ok([exif, comment]); // the file ends: what was found so far
        };
        if ff != 0xff {
            return Err(format!("JPEG: no marker at byte {pos}"));
        }
        match m {
            0xff => pos += 1, // fill byte
            0x01 | 0xd0..=0xd7 => pos += 2,
            0xd9 | 0xda => return Ok([exif, comment]),
            _ => {
                let len = jpeg
                    .get(pos + 2..pos + 4)
                    .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                    .ok_or("JPEG: a truncated segment header")?;
                let seg = len
                    .checked_sub(2)
                    .and_then(|n| jpeg.get(pos + 4..pos + 4 + n))
                    .ok_or_else(|| format!("JPEG: a segment at byte {pos} runs past the file"))?;
                if m == 0xe1 && exif.is_none() && seg.starts_with(crate::exif::EXIF_HEADER) {
                    exif = Some(seg);
                } else if m == 0xfe {
                    comment = Some(seg);
                }
                pos += 2 + len;
            }
        }
    }
}

/// The A1111 parameters in a PNG, JPEG or WebP held in memory, as `read_info_from_image` finds
/// them; `None` when it carries none. Another format, or a malformed file, is an error.
pub fn parameters_from_bytes(bytes: &[u8]) -> std::result::Result<Option<String>, String> {
    let (text, exif, comment) = if bytes.starts_with(b"\x89PNG") {
        let text = crate::png::parameters_from_bytes(bytes)?;
        (text, crate::png::exif_chunk(bytes)?, None)
    } else if bytes.starts_with(&[0xff, 0xd8]) {
        let [exif, comment] = jpeg_exif_and_comment(bytes)?;
        (None, exif.map(<[u8]>::to_vec), comment)
    } else if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP".as_slice()) {
        let exif = webp_chunks(bytes)?
            .into_iter()
            .find(|(c, _)| c == b"EXIF")
            .map(|(_, d)| d.to_vec());
        (None, exif, None)
    } else {
        return Err("not a PNG, JPEG or WebP file".into());
    };
    match (exif, comment) {
        (Some(exif), _) => Ok(crate::exif::parameters(&exif)?.or(text)),
        (None, Some(c)) => Ok(Some(c.utf8_chunks().map(|c| c.valid()).collect())),
        (None, None) => Ok(text),
    }
}

/// [`parameters_from_bytes`] of the file at `path` (A1111's `read_info_from_image`).
pub fn read_parameters(path: &Path) -> Result<Option<String>> {
    let err = |reason: String| PipelineError::ParametersRead {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    parameters_from_bytes(&bytes).map_err(err)
}
