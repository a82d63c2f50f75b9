//! A1111 parameters in JPEG and WebP EXIF (and a PNG's `eXIf`): files written by Pillow + piexif
//! 1.1.3 as A1111 v1.10.1 writes them, with what A1111's `read_info_from_image` reads from each
//! (`fixtures/exif/`, made by `tools/reference/make_exif_fixtures.py`); Sumi's own JPEG/WebP
//! outputs (`fixtures/exif_sumi/`, checked with `make_exif_fixtures.py --check`: Pillow + piexif
//! read the same text back); crafted files that must fail cleanly.

use std::path::PathBuf;

use image::RgbImage;
use sumi_pipeline::image_file::{encode, parameters_from_bytes, read_parameters, OutputFormat};

fn dir() -> PathBuf {
    sumi_testkit::fixtures().join("exif")
}

fn expected() -> serde_json::Map<String, serde_json::Value> {
    let v = sumi_testkit::fixture::read_json(&dir().join("expected.json")).expect("expected");
    v.as_object().expect("an object").clone()
}

#[test]
fn a1111_files_read_as_a1111_reads_them() {
    let want = expected();
    assert_eq!(want.len(), 9, "fixture count");
    for (name, text) in &want {
        let bytes = sumi_testkit::fixture::read_bytes(&dir().join(name)).expect("fixture");
        let got = parameters_from_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.as_deref(), text.as_str(), "{name}");
    }
    // the numbers the fixtures pin: UTF-16 text with non-BMP characters, a ~25k-character text
    let short = want["a1111_short.jpg"].as_str().expect("text");
    assert_eq!(short.chars().count(), 240);
    assert!(short.starts_with("a photo of a cat, (masterpiece:1.2), 猫 café — 🎨\n"));
    assert_eq!(
        want["a1111_long.webp"]
            .as_str()
            .expect("text")
            .chars()
            .count(),
        24841
    );
    assert_eq!(want["undefined_prefix.jpg"], "\0\0\0\0\0\0\0\0Steps: 9 é");
    assert!(want["no_parameters.jpg"].is_null());
    // read from a path too
    let p = read_parameters(&dir().join("a1111_short.webp")).expect("read");
    assert_eq!(p.as_deref(), Some(short));
}

/// A deterministic picture for the pinned outputs.
fn picture() -> RgbImage {
    RgbImage::from_fn(40, 24, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 10) as u8, ((x * y) % 256) as u8])
    })
}

fn short_text() -> String {
    expected()["a1111_short.jpg"]
        .as_str()
        .expect("text")
        .to_string()
}

/// Sumi's outputs equal the committed files that Pillow + piexif were checked on; set
/// `SUMI_BLESS_EXIF=1` to rewrite them (then run `make_exif_fixtures.py --check` on the folder).
#[test]
fn sumi_outputs_are_pinned_and_read_back() {
    let out = sumi_testkit::fixtures().join("exif_sumi");
    let text = short_text();
    for (name, format) in [
        ("sumi.jpg", OutputFormat::Jpeg),
        ("sumi.webp", OutputFormat::Webp),
        ("sumi.png", OutputFormat::Png),
    ] {
        let bytes = encode(&picture(), format, Some(&text)).expect("encode");
        if std::env::var_os("SUMI_BLESS_EXIF").is_some() {
            std::fs::create_dir_all(&out).expect("mkdir");
            std::fs::write(out.join(name), &bytes).expect("write");
        }
        let pinned = sumi_testkit::fixture::read_bytes(&out.join(name)).expect("fixture");
        assert_eq!(bytes, pinned, "{name}: the bytes Pillow + piexif read back");
        assert_eq!(
            parameters_from_bytes(&bytes).expect("read").as_deref(),
            Some(text.as_str())
        );
        let im = image::load_from_memory(&bytes).expect("decodes");
        assert_eq!((im.width(), im.height()), (40, 24), "{name}");
    }
    let exif = sumi_pipeline::exif::dump_user_comment(&text);
    let jpeg = encode(&picture(), OutputFormat::Jpeg, Some(&text)).expect("jpeg");
    // SOI, then APP1 holding piexif.dump's bytes in place of the JFIF APP0, then the encoder's
    // next segment
    assert_eq!(jpeg[..4], [0xff, 0xd8, 0xff, 0xe1]);
    assert_eq!(
        usize::from(u16::from_be_bytes([jpeg[4], jpeg[5]])),
        exif.len() + 2
    );
    assert_eq!(&jpeg[6..6 + exif.len()], exif.as_slice());
    assert_eq!(jpeg[6 + exif.len()], 0xff);
    assert!(
        !jpeg.windows(5).any(|w| w == b"JFIF\0"),
        "the APP0 is replaced"
    );
    // WebP: VP8X (EXIF flag, 40x24 canvas), the lossy VP8 data, then EXIF (the bare TIFF block)
    let webp = encode(&picture(), OutputFormat::Webp, Some(&text)).expect("webp");
    assert_eq!(&webp[12..16], b"VP8X");
    assert_eq!(webp[20..30], [0x08, 0, 0, 0, 39, 0, 0, 23, 0, 0]);
    assert_eq!(&webp[30..34], b"VP8 ");
    assert!(webp.ends_with(&exif[6..]));
    assert_eq!(exif.len(), 54 + 2 * text.encode_utf16().count());
}

#[test]
fn no_parameters_and_jpeg_limit() {
    for format in [OutputFormat::Jpeg, OutputFormat::Webp] {
        let bytes = encode(&picture(), format, None).expect("encode");
        assert_eq!(parameters_from_bytes(&bytes).expect("read"), None);
    }
    // a JPEG segment holds 65,533 bytes: 54 + 2·n ≤ 65,533 → 32,739 UTF-16 units at most
    let fits = "x".repeat(32_739);
    let bytes = encode(&picture(), OutputFormat::Jpeg, Some(&fits)).expect("fits");
    assert_eq!(parameters_from_bytes(&bytes).expect("read"), Some(fits));
    let err = encode(&picture(), OutputFormat::Jpeg, Some(&"x".repeat(32_740))).unwrap_err();
    assert!(err.contains("65534 bytes of EXIF"), "{err}");
    // WebP has no such limit
    let long = "é".repeat(40_000);
    let bytes = encode(&picture(), OutputFormat::Webp, Some(&long)).expect("webp");
    assert_eq!(parameters_from_bytes(&bytes).expect("read"), Some(long));
}

#[test]
fn output_format_from_extension() {
    let f = |p: &str| OutputFormat::from_path(std::path::Path::new(p));
    assert_eq!(f("a.png"), Some(OutputFormat::Png));
    assert_eq!(f("a.JPG"), Some(OutputFormat::Jpeg));
    assert_eq!(f("dir.x/a.jpeg"), Some(OutputFormat::Jpeg));
    assert_eq!(f("a.webp"), Some(OutputFormat::Webp));
    assert_eq!(f("a.gif"), None);
    assert_eq!(f("a"), None);
}

#[test]
fn crafted_files_fail_cleanly() {
    for name in ["a1111_short.jpg", "a1111_short.webp", "exif_over_text.png"] {
        let bytes = sumi_testkit::fixture::read_bytes(&dir().join(name)).expect("fixture");
        // every truncation and single-byte corruption in the header region: no panic
        for n in 0..bytes.len().min(700) {
            let _ = parameters_from_bytes(&bytes[..n]);
            let mut b = bytes.clone();
            b[n] ^= 0xff;
            let _ = parameters_from_bytes(&b);
        }
    }
    let jpeg = sumi_testkit::fixture::read_bytes(&dir().join("a1111_short.jpg")).expect("jpg");
    // APP1's length past the file's end
    let mut b = jpeg.clone();
    b[4..6].copy_from_slice(&[0xff, 0xff]);
    assert!(parameters_from_bytes(&b[..2000.min(b.len())]).is_err());
    // the UserComment count huge (u32::MAX): an error, not an allocation
    let mut b = jpeg.clone();
    let at = 6 + 6 + 32; // SOI+APP1 header, Exif\0\0, the Exif IFD's count field
    b[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(parameters_from_bytes(&b)
        .unwrap_err()
        .contains("past the block's end"));
    // a WebP chunk claiming 4 GiB
    let webp = sumi_testkit::fixture::read_bytes(&dir().join("a1111_short.webp")).expect("webp");
    let mut b = webp.clone();
    b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(parameters_from_bytes(&b).is_err());
    assert!(parameters_from_bytes(b"GIF89a....").is_err());
}
