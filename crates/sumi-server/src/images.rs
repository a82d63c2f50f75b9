//! Images in and out of JSON: base64 (with or without a `data:image/…;base64,` prefix) to
//! decoded pixels, and PNG bytes to base64.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use image::{DynamicImage, RgbImage};

use crate::error::ApiError;

/// Largest image accepted, in pixels (as the CLI's init image limit).
pub const MAX_IMAGE_PIXELS: u64 = 64 * 1024 * 1024;

/// Standard alphabet, padding optional (Python's `b64decode` is as lenient).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes base64 text, dropping a `data:…;base64,` prefix and whitespace; `field` names the
/// field in the error.
pub fn decode_base64(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    let body = match text.strip_prefix("data:") {
        Some(rest) => match rest.split_once(',') {
            Some((_, b)) => b,
            None => {
                return Err(ApiError::bad_request(format!(
                    "{field}: a data URL without a comma"
                )))
            }
        },
        None => text,
    };
    let clean: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if clean.is_empty() {
        return Err(ApiError::bad_request(format!("{field}: empty image")));
    }
    LENIENT
        .decode(clean.as_bytes())
        .map_err(|e| ApiError::bad_request(format!("{field}: invalid base64 ({e})")))
}

/// Base64 of `bytes` (standard alphabet, padded).
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// An init image from its file bytes, decoded exactly as `sumi img2img --init-image` decodes a
/// file (EXIF orientation, transparency flattened onto white).
pub fn decode_init_image(field: &str, bytes: &[u8]) -> Result<RgbImage, ApiError> {
    // The pipeline's loader reads files; a private temporary file keeps API and CLI pixels the
    // same by construction.
    let tmp = tempfile::NamedTempFile::new()
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, bytes)?;
            Ok(f)
        })
        .map_err(|e| ApiError::internal(format!("cannot buffer the image: {e}")))?;
    sumi_pipeline::image::load_init_image(tmp.path(), MAX_IMAGE_PIXELS).map_err(|e| match e {
        sumi_pipeline::PipelineError::ImageTooLarge {
            width,
            height,
            max_pixels,
            ..
        } => ApiError::invalid(format!(
            "{field}: {width}x{height} is over the limit of {max_pixels} pixels"
        )),
        _ => ApiError::bad_request(format!("{field}: not a readable PNG, JPEG or WebP image")),
    })
}

/// Any image (a mask), within [`MAX_IMAGE_PIXELS`].
pub fn decode_image(field: &str, bytes: &[u8]) -> Result<DynamicImage, ApiError> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| ApiError::bad_request(format!("{field}: not a readable image")))?;
    // the JPEG decoder fills a cut file with grey and reports success; refuse as Pillow does
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        sumi_pipeline::image::check_jpeg_complete(bytes)
            .map_err(|e| ApiError::bad_request(format!("{field}: {e}")))?;
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|_| ApiError::bad_request(format!("{field}: not a readable image")))?;
    if u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS {
        return Err(ApiError::invalid(format!(
            "{field}: {w}x{h} is over the limit of {MAX_IMAGE_PIXELS} pixels"
        )));
    }
    image::load_from_memory(bytes)
        .map_err(|_| ApiError::bad_request(format!("{field}: not a readable image")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_jpeg_is_refused_and_a_whole_one_decodes() {
        let img = RgbImage::from_fn(48, 40, |x, y| image::Rgb([x as u8 * 5, y as u8 * 6, 90]));
        let mut jpeg = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        assert!(decode_image("mask", &jpeg).is_ok());
        let err = decode_image("mask", &jpeg[..jpeg.len() / 2]).unwrap_err();
        let text = format!("{err:?}");
        assert!(
            text.contains("mask") && text.contains("image file is truncated"),
            "{text}"
        );
    }
}
