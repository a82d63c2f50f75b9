//! Images in and out of JSON: base64 (with or without a `data:image/…;base64,` prefix) to
//! file bytes, an [`Upload`] checked by its header (format, declared size) before the job is
//! queued, its pixels decoded by the worker when the job's turn comes; PNG bytes to base64.
//!
//! Uploads stay in memory: an init image is handed to the pipeline's file loader as an
//! anonymous in-memory file (`memfd`), never written to a temporary folder.

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use image::{DynamicImage, ImageFormat, RgbImage};

use crate::error::ApiError;

/// Largest image accepted, in pixels (as the CLI's init image limit): 64 Mi (8192 × 8192).
pub const MAX_IMAGE_PIXELS: u64 = 64 * 1024 * 1024;

/// Most pixels a request's images (init image and mask) may declare together: 64 Mi. Decoding
/// them takes up to 8 bytes a pixel (16-bit RGBA) for a moment, 3 to 8 while the job runs.
pub const MAX_REQUEST_PIXELS: u64 = 64 * 1024 * 1024;

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

/// An uploaded image file whose header has been read (its format and declared size), its
/// pixels not decoded yet.
#[derive(Clone)]
pub struct Upload {
    field: String,
    bytes: Vec<u8>,
    width: u32,
    height: u32,
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Upload({}: {}x{}, {} bytes)",
            self.field,
            self.width,
            self.height,
            self.bytes.len()
        )
    }
}

impl Upload {
    /// Reads the header of the image file `bytes` sent as `field`, decoding no pixels: 400 when
    /// it is not a readable PNG, JPEG or WebP header or a JPEG is cut short (Pillow's "image
    /// file is truncated"; a scan of its markers), 422 when it declares no pixels or more than
    /// [`MAX_IMAGE_PIXELS`].
    pub fn inspect(field: &str, bytes: Vec<u8>) -> Result<Self, ApiError> {
        let unreadable = || ApiError::bad_request(format!("{field}: not a readable image"));
        let reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()
            .map_err(|_| unreadable())?;
        // the JPEG decoder fills a cut file with grey and reports success; refuse as Pillow does
        if reader.format() == Some(ImageFormat::Jpeg) {
            sumi_pipeline::image::check_jpeg_complete(&bytes)
                .map_err(|e| ApiError::bad_request(format!("{field}: {e}")))?;
        }
        let (width, height) = reader.into_dimensions().map_err(|_| unreadable())?;
        let pixels = u64::from(width) * u64::from(height);
        if pixels == 0 {
            return Err(ApiError::invalid(format!(
                "{field}: the image is empty ({width}x{height})"
            )));
        }
        if pixels > MAX_IMAGE_PIXELS {
            return Err(ApiError::invalid(format!(
                "{field}: {width}x{height} is over the limit of {MAX_IMAGE_PIXELS} pixels"
            )));
        }
        Ok(Self {
            field: field.to_string(),
            bytes,
            width,
            height,
        })
    }

    /// The field it was sent as (`init_images[0]`, `mask`).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The declared size, from the header.
    pub fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The declared number of pixels.
    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// Decodes it as an init image exactly as `sumi img2img --init-image` decodes a file (EXIF
    /// orientation, transparency flattened onto white): the pipeline's loader reads it from an
    /// anonymous in-memory file. 400 when the pixels cannot be decoded.
    pub fn decode_init_image(&self) -> Result<RgbImage, ApiError> {
        let file = MemFile::new(&self.bytes)
            .map_err(|e| ApiError::internal(format!("cannot hold the image in memory: {e}")))?;
        sumi_pipeline::image::load_init_image(&file.path(), MAX_IMAGE_PIXELS).map_err(|e| match e {
            sumi_pipeline::PipelineError::ImageTooLarge {
                width,
                height,
                max_pixels,
                ..
            } => ApiError::invalid(format!(
                "{}: {width}x{height} is over the limit of {max_pixels} pixels",
                self.field
            )),
            sumi_pipeline::PipelineError::ImageDecode { reason, .. } => {
                ApiError::bad_request(format!("{}: {reason}", self.field))
            }
            _ => ApiError::bad_request(format!(
                "{}: not a readable PNG, JPEG or WebP image",
                self.field
            )),
        })
    }

    /// Decodes it as A1111's Extras keep it (`run_postprocessing`: RGBA and RGB as they are,
    /// other modes converted to RGB): an RGBA PNG (colour type 6) or a WebP with alpha as
    /// RGBA, anything else as [`Self::decode_init_image`] decodes it. 400 when the pixels
    /// cannot be decoded.
    pub fn decode_picture(&self) -> Result<sumi_pipeline::upscale::Picture, ApiError> {
        let png_rgba =
            self.bytes.starts_with(b"\x89PNG\r\n\x1a\n") && self.bytes.get(25) == Some(&6);
        let webp = image::guess_format(&self.bytes).ok() == Some(ImageFormat::WebP);
        if png_rgba || webp {
            let img = self.decode_image()?;
            if img.color().has_alpha() {
                return Ok(sumi_pipeline::upscale::Picture::Rgba(img.to_rgba8()));
            }
        }
        self.decode_init_image()
            .map(sumi_pipeline::upscale::Picture::Rgb)
    }

    /// Decodes it as any image (a mask), as decoded (no orientation applied). 400 when the
    /// pixels cannot be decoded.
    pub fn decode_image(&self) -> Result<DynamicImage, ApiError> {
        let bad = |reason: String| ApiError::bad_request(format!("{}: {reason}", self.field));
        sumi_pipeline::image_check::check_container(&mut std::io::Cursor::new(&self.bytes[..]))
            .map_err(|e| bad(e.to_string()))?
            .map_err(bad)?;
        // a decoder that panics on crafted data fails this request, not the worker
        std::panic::catch_unwind(|| image::load_from_memory(&self.bytes))
            .map_err(|_| bad("the image decoder failed on this image (malformed data)".into()))?
            .map_err(|e| bad(decode_reason(&e)))
    }
}

/// Why pixels could not be decoded, in Pillow's words for data that ends early.
fn decode_reason(e: &image::ImageError) -> String {
    match e {
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("image file is truncated ({e})")
        }
        _ => format!("not a readable image ({e})"),
    }
}

/// An anonymous in-memory file holding an upload, for loaders that read files: a `memfd` on
/// Linux (it lives in memory and ends with its last descriptor: a killed server leaves nothing
/// behind); elsewhere a private temporary file, removed when dropped.
struct MemFile {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::OwnedFd,
    #[cfg(not(target_os = "linux"))]
    file: tempfile::NamedTempFile,
}

impl MemFile {
    fn new(bytes: &[u8]) -> std::io::Result<Self> {
        #[cfg(target_os = "linux")]
        {
            let fd = rustix::fs::memfd_create("sumi-upload", rustix::fs::MemfdFlags::CLOEXEC)?;
            let mut file = std::fs::File::from(fd);
            std::io::Write::write_all(&mut file, bytes)?;
            Ok(Self { fd: file.into() })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let mut file = tempfile::NamedTempFile::new()?;
            std::io::Write::write_all(&mut file, bytes)?;
            Ok(Self { file })
        }
    }

    /// A path that opens it (from its start, whatever was read before).
    fn path(&self) -> std::path::PathBuf {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            std::path::PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.file.path().to_path_buf()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), format)
            .unwrap();
        out
    }

    #[test]
    fn a_cut_jpeg_is_refused_by_its_header_check_and_a_whole_one_decodes() {
        let img = RgbImage::from_fn(48, 40, |x, y| image::Rgb([x as u8 * 5, y as u8 * 6, 90]));
        let jpeg = encode(DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
        let whole = Upload::inspect("mask", jpeg.clone()).unwrap();
        assert_eq!(whole.dimensions(), (48, 40));
        assert_eq!(whole.decode_image().unwrap().width(), 48);
        let err = Upload::inspect("mask", jpeg[..jpeg.len() / 2].to_vec()).unwrap_err();
        let text = format!("{err:?}");
        assert!(
            text.contains("mask") && text.contains("image file is truncated"),
            "{text}"
        );
    }

    #[test]
    fn an_init_image_decodes_in_memory_as_the_cli_decodes_its_file() {
        // transparency flattened onto white, as `load_init_image` does for a file
        let rgba = image::RgbaImage::from_fn(20, 12, |x, y| {
            image::Rgba([x as u8 * 12, y as u8 * 20, 200, (x * 12) as u8])
        });
        let png = encode(DynamicImage::ImageRgba8(rgba), ImageFormat::Png);
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("init.png");
        std::fs::write(&path, &png).unwrap();
        let from_file = sumi_pipeline::image::load_init_image(&path, MAX_IMAGE_PIXELS).unwrap();
        let up = Upload::inspect("init_images[0]", png).unwrap();
        let from_memory = up.decode_init_image().unwrap();
        assert_eq!(from_memory.as_raw(), from_file.as_raw());
        // alpha 0 is white; (12, 0, 200) at alpha 12 is (255·243 + c·12 + 128) / 255
        assert_eq!(from_memory.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(from_memory.get_pixel(1, 0).0, [244, 243, 252]);
    }
}
