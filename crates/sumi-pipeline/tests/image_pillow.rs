//! The image stage against Pillow as A1111 v1.10.1 uses it: every case of
//! `fixtures/pipeline/image_cases.json` (made by `tools/reference/make_pipeline_fixtures.py`) must
//! give Pillow's bytes exactly. Synthetic inputs are committed; the real photos come from
//! `../shared/data/images` and are skipped, saying so, where that is absent.

use std::path::PathBuf;

use image::RgbImage;
use sha2::{Digest, Sha256};
use sumi_pipeline::image::{
    effective_size, load_init_image, prepare_init_image, resize_box, resize_image, resize_lanczos,
    resize_lanczos_box, to_signed_chw, to_tensor, to_unit_chw, Filter, ResizeMode,
};
use sumi_pipeline::PipelineError;

fn root() -> PathBuf {
    sumi_testkit::repo_root()
}

fn fixtures() -> PathBuf {
    root().join("fixtures/pipeline")
}

fn photos() -> PathBuf {
    root().join("../shared/data/images")
}

const MAX_PIXELS: u64 = 4096 * 4096;

fn sha_hex(im: &RgbImage) -> String {
    let d = Sha256::digest(im.as_raw());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads a case's input; `None` when it is a shared photo that is absent.
fn input(name: &str) -> Option<RgbImage> {
    let path = match name.strip_prefix("shared:") {
        Some(f) => photos().join(f),
        None => fixtures().join(name),
    };
    if name.starts_with("shared:") && !path.exists() {
        return None;
    }
    Some(load_init_image(&path, MAX_PIXELS).expect("fixture input loads"))
}

fn arg_u32(args: &serde_json::Value, key: &str) -> u32 {
    args[key].as_u64().expect("integer argument") as u32
}

/// Runs every case whose input satisfies `which`; returns (checked, skipped, mismatches).
fn run_cases(which: impl Fn(&str) -> bool) -> (usize, usize, Vec<String>) {
    let cases =
        sumi_testkit::Cases::<serde_json::Value>::load(&fixtures().join("image_cases.json"), "")
            .expect("cases");
    let (mut checked, mut skipped, mut bad) = (0, 0, Vec::new());
    for case in &cases {
        let name = case["name"].as_str().expect("name");
        let inp = case["input"].as_str().expect("input");
        if !which(inp) {
            continue;
        }
        let Some(im) = input(inp) else {
            skipped += 1;
            continue;
        };
        let args = &case["args"];
        let out = match case["op"].as_str().expect("op") {
            "load" => im,
            "lanczos" => resize_lanczos(&im, arg_u32(args, "w"), arg_u32(args, "h")).expect("ok"),
            op @ ("lanczos_box" | "bicubic_box") => {
                let b: Vec<f32> = args["box"]
                    .as_array()
                    .expect("box")
                    .iter()
                    .map(|v| v.as_f64().expect("float") as f32)
                    .collect();
                let bx = [b[0], b[1], b[2], b[3]];
                let filter = if op == "lanczos_box" {
                    Filter::Lanczos
                } else {
                    Filter::Bicubic
                };
                resize_box(&im, arg_u32(args, "w"), arg_u32(args, "h"), bx, filter).expect("ok")
            }
            "resize_image" => {
                let mode = ResizeMode::from_index(args["mode"].as_u64().expect("mode") as u8)
                    .expect("mode 0-3");
                resize_image(mode, &im, arg_u32(args, "w"), arg_u32(args, "h")).expect("ok")
            }
            op => panic!("unknown op {op}"),
        };
        checked += 1;
        let want = (
            case["width"].as_u64().expect("w") as u32,
            case["height"].as_u64().expect("h") as u32,
        );
        let got_sha = sha_hex(&out);
        if out.dimensions() != want || got_sha != case["sha256"].as_str().expect("sha") {
            let dump = std::env::temp_dir().join(format!("sumi_image_{name}.png"));
            let saved = out.save(&dump).is_ok();
            let mut msg = format!("{name}: got {:?} {got_sha}", out.dimensions());
            if saved {
                msg += &format!(" (saved to {})", dump.display());
            }
            if let Some(exp) = case["expected"].as_str() {
                let e = image::open(fixtures().join(exp))
                    .expect("expected")
                    .to_rgb8();
                if e.dimensions() == out.dimensions() {
                    let diffs = e
                        .as_raw()
                        .iter()
                        .zip(out.as_raw())
                        .filter(|(a, b)| a != b)
                        .count();
                    let maxd = e
                        .as_raw()
                        .iter()
                        .zip(out.as_raw())
                        .map(|(a, b)| a.abs_diff(*b))
                        .max()
                        .unwrap_or(0);
                    msg += &format!(" ({diffs} bytes differ, max {maxd})");
                }
            }
            bad.push(msg);
        }
    }
    (checked, skipped, bad)
}

/// JPEG is not decoded as Pillow's libjpeg-turbo decodes it; those cases are measured below.
/// (Lossy WebP, through image-webp, does give libwebp's pixels and is among the exact cases.)
fn synthetic(inp: &str) -> bool {
    !inp.starts_with("shared:") && !inp.ends_with(".jpg")
}

#[test]
fn synthetic_cases_equal_pillow_byte_for_byte() {
    let (checked, _, bad) = run_cases(synthetic);
    assert_eq!(checked, 74, "the fixture's synthetic case count");
    assert!(
        bad.is_empty(),
        "{} of {checked} differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn real_photos_equal_pillow_byte_for_byte() {
    if !photos().join("astronaut.png").exists() {
        println!("skipped: {} is absent", photos().display());
        return;
    }
    let (checked, skipped, bad) = run_cases(|inp| inp.starts_with("shared:"));
    assert_eq!(
        (checked, skipped),
        (66, 0),
        "the fixture's photo case count"
    );
    assert!(
        bad.is_empty(),
        "{} of {checked} differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// (largest difference, samples that differ, samples) between our decode and Pillow's.
fn decode_distance(name: &str) -> (u8, usize, usize) {
    let ours = load_init_image(&fixtures().join(name), MAX_PIXELS).expect("jpeg loads");
    let exp = format!("expected/load_{}.png", name.replace('.', "_"));
    let pillow = image::open(fixtures().join(exp))
        .expect("expected")
        .to_rgb8();
    assert_eq!(ours.dimensions(), pillow.dimensions());
    let d: Vec<u8> = ours
        .as_raw()
        .iter()
        .zip(pillow.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .collect();
    let max = d.iter().copied().max().unwrap_or(0);
    let differing = d.iter().filter(|v| **v != 0).count();
    println!(
        "{name}: max difference {max}, {differing} of {} samples",
        d.len()
    );
    (max, differing, d.len())
}

/// JPEG goes through zune-jpeg, not Pillow's libjpeg-turbo: the pixels are not Pillow's. These
/// are the measured distances on 24x16 quality-90 images, pinned so that a change shows.
#[test]
fn jpeg_decodes_at_the_pinned_distance_from_libjpeg_turbo() {
    assert_eq!(decode_distance("synth.jpg"), (7, 297, 1152), "4:2:0");
    assert_eq!(decode_distance("synth444.jpg"), (2, 31, 1152), "4:4:4");
}

#[test]
fn exif_orientation_turns_the_image_upright() {
    let im = load_init_image(&fixtures().join("synth_exif6.png"), MAX_PIXELS).expect("loads");
    // Stored 13x9 with orientation 6: displayed 9x13.
    assert_eq!(im.dimensions(), (9, 13));
}

#[test]
fn latent_upscale_leaves_the_image_at_its_own_size() {
    let im = input("synth_rgb.png").expect("fixture");
    let out = prepare_init_image(&im, ResizeMode::LatentUpscale, 64, 64).expect("ok");
    assert_eq!(out, im);
    let just = prepare_init_image(&im, ResizeMode::JustResize, 64, 48).expect("ok");
    assert_eq!(just, resize_lanczos(&im, 64, 48).expect("ok"));
}

#[test]
fn unit_and_signed_floats_equal_numpy_and_torch_bits() {
    let text = std::fs::read_to_string(fixtures().join("unit_f32.txt")).expect("fixture");
    let mut bytes = Vec::new();
    let mut want = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        bytes.push(f[0].parse::<u8>().expect("byte"));
        let u = u32::from_str_radix(f[1], 16).expect("hex");
        let s = u32::from_str_radix(f[2], 16).expect("hex");
        want.push((u, s));
    }
    assert_eq!(bytes.len(), 256);
    // One row of 256 grey pixels: every channel sees every byte value.
    let im = RgbImage::from_fn(256, 1, |x, _| image::Rgb([x as u8; 3]));
    let unit = to_unit_chw(&im);
    let signed = to_signed_chw(&im);
    for c in 0..3 {
        for (i, &(u, s)) in want.iter().enumerate() {
            assert_eq!(unit[c * 256 + i].to_bits(), u, "unit {i}");
            assert_eq!(signed[c * 256 + i].to_bits(), s, "signed {i}");
        }
    }
    assert_eq!(signed[0], -1.0);
    assert_eq!(signed[255], 1.0);
}

#[test]
fn tensor_is_nchw_signed() {
    let im = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 50, y as u8 * 100, 255]));
    let t = to_tensor(&im, &candle_core::Device::Cpu).expect("tensor");
    assert_eq!(t.dims(), &[1, 3, 3, 5]);
    let v: Vec<f32> = t.flatten_all().expect("flat").to_vec1().expect("vec");
    assert_eq!(v, to_signed_chw(&im));
}

#[test]
fn chw_layout_is_channels_first() {
    let im = RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8, y as u8, 200]));
    let v = to_unit_chw(&im);
    assert_eq!(v.len(), 18);
    assert_eq!(v[2] * 255.0, 2.0); // R at (x=2, y=0)
    assert_eq!(v[6 + 3] * 255.0, 1.0); // G at (x=0, y=1)
    assert_eq!(v[12 + 5] * 255.0, 200.0); // B at (x=2, y=1)
}

#[test]
fn sizes_and_modes() {
    assert_eq!(effective_size(512, 768), (512, 768));
    assert_eq!(effective_size(500, 333), (496, 328));
    for m in ResizeMode::ALL {
        assert_eq!(m.cli_name().parse::<ResizeMode>().expect("cli"), m);
        assert_eq!(m.label().parse::<ResizeMode>().expect("label"), m);
        assert_eq!(ResizeMode::from_index(m.index()), Some(m));
    }
    let err = "stretch".parse::<ResizeMode>().expect_err("unknown");
    assert!(err.to_string().contains("stretch"));
}

#[test]
fn bad_inputs_are_named_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.png");
    let e = load_init_image(&missing, MAX_PIXELS).expect_err("missing");
    assert!(matches!(e, PipelineError::ImageRead { .. }), "{e}");
    assert!(e.to_string().contains("missing.png"));

    let text = dir.path().join("notes.png");
    std::fs::write(&text, b"just some text, not an image").expect("write");
    let e = load_init_image(&text, MAX_PIXELS).expect_err("not an image");
    assert!(matches!(e, PipelineError::ImageDecode { .. }), "{e}");

    let truncated = dir.path().join("cut.png");
    let full = std::fs::read(fixtures().join("synth_rgb.png")).expect("read");
    std::fs::write(&truncated, &full[..full.len() / 2]).expect("write");
    let e = load_init_image(&truncated, MAX_PIXELS).expect_err("truncated");
    assert!(matches!(e, PipelineError::ImageDecode { .. }), "{e}");

    let e = load_init_image(&fixtures().join("synth_rgb.png"), 37 * 23 - 1).expect_err("limit");
    assert!(
        matches!(
            e,
            PipelineError::ImageTooLarge {
                width: 37,
                height: 23,
                ..
            }
        ),
        "{e}"
    );

    let im = input("synth_rgb.png").expect("fixture");
    assert!(matches!(
        resize_image(ResizeMode::CropAndResize, &im, 0, 5),
        Err(PipelineError::InvalidSize { .. })
    ));
    assert!(matches!(
        resize_lanczos_box(&im, 5, 5, [0.0, 0.0, 38.0, 23.0]),
        Err(PipelineError::InvalidResizeBox { .. })
    ));
}
