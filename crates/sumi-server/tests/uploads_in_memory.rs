//! Uploaded images never touch a temporary folder: an init image decodes with `TMPDIR` pointing
//! nowhere (its own test binary, since the variable is the process's).

use image::{DynamicImage, ImageFormat, RgbImage};
use sumi_server::images::Upload;

#[test]
fn an_init_image_decodes_without_a_temporary_folder() {
    let img = RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 77]));
    let mut png = Vec::new();
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
        .unwrap();
    std::env::set_var("TMPDIR", "/nonexistent/sumi-no-temporary-folder");
    assert!(
        tempfile::NamedTempFile::new().is_err(),
        "TMPDIR is not read"
    );
    let up = Upload::inspect("init_images[0]", png).unwrap();
    let decoded = up.decode_init_image().unwrap();
    assert_eq!(decoded.as_raw(), img.as_raw());
}
