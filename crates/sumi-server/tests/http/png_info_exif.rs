//! `/sdapi/v1/png-info` on JPEG and WebP files: A1111's parameters from EXIF UserComment, as
//! A1111's `read_info_from_image` reads them (`fixtures/exif/`, written by Pillow + piexif as
//! A1111 v1.10.1 writes them; `tools/reference/make_exif_fixtures.py`), and Sumi's own outputs.

use serde_json::{json, Value};
use sumi_pipeline::image_file::{encode, OutputFormat};

use crate::common::*;
use crate::fake::Fake;

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/exif")
        .join(name);
    let b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(!b.is_empty(), "{}: empty fixture", p.display());
    b
}

#[test]
fn png_info_reads_exif_parameters() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    let expected: Value = serde_json::from_slice(&fixture("expected.json")).unwrap();
    for name in [
        "a1111_short.jpg",
        "a1111_short.webp",
        "a1111_long.webp",
        "exif_over_text.png",
    ] {
        let (st, v) = post(
            &s,
            "/sdapi/v1/png-info",
            &json!({"image": b64(&fixture(name))}),
        );
        assert_eq!(st, 200, "{name}: {v}");
        assert_eq!(v["info"], expected[name], "{name}");
    }
    let (_, v) = post(
        &s,
        "/sdapi/v1/png-info",
        &json!({"image": b64(&fixture("a1111_short.jpg"))}),
    );
    assert_eq!(v["parameters"]["Seed"], "1234");
    assert_eq!(v["parameters"]["Negative prompt"], "blurry, ugly");
    assert_eq!(v["items"], json!({}));
    // no parameters: an empty info, as A1111
    let (st, v) = post(
        &s,
        "/sdapi/v1/png-info",
        &json!({"image": b64(&fixture("no_parameters.jpg"))}),
    );
    assert_eq!((st, v["info"].as_str()), (200, Some("")));
    // Sumi's own JPEG and WebP outputs
    let im = image::RgbImage::from_pixel(16, 8, image::Rgb([9, 99, 199]));
    for f in [OutputFormat::Jpeg, OutputFormat::Webp] {
        let text = "a 猫\nSteps: 4, Sampler: Euler, Seed: 5, Size: 16x8";
        let bytes = encode(&im, f, Some(text)).unwrap();
        let (st, v) = post(&s, "/sdapi/v1/png-info", &json!({"image": b64(&bytes)}));
        assert_eq!((st, v["info"].as_str()), (200, Some(text)), "{f:?}");
        assert_eq!(v["parameters"]["Steps"], "4");
    }
    // a JPEG whose EXIF claims more than it holds: 400 naming the image, not a crash
    let mut bad = fixture("a1111_short.jpg");
    bad[6 + 6 + 32..6 + 6 + 36].copy_from_slice(&u32::MAX.to_be_bytes());
    let (st, v) = post(&s, "/sdapi/v1/png-info", &json!({"image": b64(&bad)}));
    assert_eq!(st, 400, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("image: EXIF"), "{v}");
}
