//! Image reading: PNG text chunks (`sumi_pipeline::png::text_chunks`, `parameters_from_bytes`),
//! the JPEG end-of-image walk (`image::check_jpeg_complete`) and the PNG/JPEG/WebP loader with
//! its EXIF orientation (`image::load_init_image`, from a tmpfs file, at most 2^20 pixels here
//! so that each run stays fast).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sumi_pipeline::{image, png};

#[path = "scratch.rs"]
mod scratch;

fuzz_target!(|data: &[u8]| {
    let _ = png::text_chunks(data);
    if let Ok(Some(text)) = png::parameters_from_bytes(data) {
        let _ = sumi_pipeline::infotext::parse_generation_parameters(&text);
    }
    let _ = image::check_jpeg_complete(data);
    let path = scratch::write("init", "img", data);
    if let Ok(img) = image::load_init_image(&path, 1 << 20) {
        assert!(u64::from(img.width()) * u64::from(img.height()) <= 1 << 20);
    }
});
