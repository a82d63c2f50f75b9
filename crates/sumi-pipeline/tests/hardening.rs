//! Crafted input gets a clear error (issue 14): prompts past the length limit (finding 5),
//! non-finite latents or pixels (finding 9), truncated PNG and JPEG files (finding 10).

use std::ops::ControlFlow;

use candle_core::{Device, Tensor};
use sumi_pipeline::image::{check_jpeg_complete, load_image, load_init_image};
use sumi_pipeline::request::MAX_PROMPT_BYTES;
use sumi_pipeline::{to_image, LoadOptions, NanStage, Pipeline, PipelineError, Request};
use sumi_prompt::parse_prompt_attention;

mod common;

fn request_error(r: &Request) -> (&'static str, String) {
    match r.validate() {
        Err(PipelineError::Request { field, detail }) => (field, detail),
        other => panic!("expected a request error, got {other:?}"),
    }
}

#[test]
fn prompts_past_64_kib_are_refused_naming_the_limit() {
    assert_eq!(MAX_PROMPT_BYTES, 65_536);
    let at_limit = "a".repeat(MAX_PROMPT_BYTES);
    let over = "a".repeat(MAX_PROMPT_BYTES + 1);
    let ok = Request {
        prompt: at_limit.clone(),
        negative_prompt: at_limit,
        ..Request::default()
    };
    ok.validate().unwrap();
    let (field, detail) = request_error(&Request {
        prompt: over.clone(),
        ..Request::default()
    });
    assert_eq!(field, "prompt");
    assert_eq!(
        detail,
        "65537 bytes is longer than the limit of 65536 bytes (64 KiB)"
    );
    // bytes, not characters: 21,846 three-byte characters are 65,538 bytes
    let (field, _) = request_error(&Request {
        negative_prompt: "猫".repeat(21_846),
        ..Request::default()
    });
    assert_eq!(field, "negative-prompt");
}

/// A prompt weight written out in 400 digits is `inf` to Python's `float()` as to Rust's
/// `f64` parser; A1111's weight pattern `[+-]?[.\d]+` has no exponent, so `(x:1e400)` is
/// text with weight 1.1, not a weight.
#[test]
fn an_infinite_prompt_weight_parses_as_a1111_does() {
    let huge = format!("(cat:1{})", "0".repeat(400));
    let s = parse_prompt_attention(&huge).unwrap();
    assert_eq!((s[0].text.as_str(), s[0].weight), ("cat", f64::INFINITY));
    let s = parse_prompt_attention("(cat:1e400)").unwrap();
    assert_eq!((s[0].text.as_str(), s[0].weight), ("cat:1e400", 1.1));
}

/// An infinite prompt weight makes the conditioning non-finite, the U-Net's output NaN: the
/// request fails with A1111's message instead of giving a black picture.
#[test]
fn nan_latents_fail_with_a1111s_unet_message() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = Pipeline::load(
        &common::tiny_model("sd1", dir.path()),
        &LoadOptions::default(),
    )
    .unwrap();
    let req = |prompt: String| Request {
        prompt,
        seed: 1,
        steps: 2,
        width: 64,
        height: 64,
        ..Request::default()
    };
    let mut go = |_: &sumi_pipeline::Progress<'_>| ControlFlow::Continue(());
    // the same request with a finite weight makes a picture
    let (ok, _) = pipe.generate(&req("(cat:1.5)".into()), &mut go).unwrap();
    assert_eq!(ok.len(), 1);
    let e = pipe
        .generate(&req(format!("(cat:1{})", "0".repeat(400))), &mut go)
        .unwrap_err();
    match &e {
        PipelineError::NonFinite {
            stage: NanStage::Unet,
            non_finite,
            values,
        } => {
            // one 64×64 picture's latents: 4 × 8 × 8, every one NaN
            assert_eq!((*non_finite, *values), (256, 256));
        }
        other => panic!("expected NaN latents, got {other:?}"),
    }
    assert!(
        e.to_string().starts_with(
            "A tensor with NaNs was produced in Unet. 256 of 256 values are NaN or infinite; "
        ),
        "{e}"
    );
}

/// Decoded pixels with any NaN or infinite value are refused (A1111 tests the first value
/// only; Sumi every one), naming the VAE.
#[test]
fn non_finite_pixels_fail_with_a1111s_vae_message() {
    let mut v = vec![0.5f32; 3 * 4 * 4];
    v[17] = f32::NAN;
    v[40] = f32::INFINITY;
    let x = Tensor::from_slice(&v, (3, 4, 4), &Device::Cpu).unwrap();
    let e = to_image(&x).unwrap_err();
    assert!(
        matches!(
            e,
            PipelineError::NonFinite {
                stage: NanStage::Vae,
                non_finite: 2,
                values: 48
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with(
            "A tensor with NaNs was produced in VAE. 2 of 48 values are NaN or infinite; "
        ),
        "{e}"
    );
    v[17] = 0.25;
    v[40] = -0.25;
    let x = Tensor::from_slice(&v, (3, 4, 4), &Device::Cpu).unwrap();
    to_image(&x).unwrap();
}

/// A 96×80 picture with detail everywhere (so its encoded bytes are spread over all rows).
fn picture() -> image::RgbImage {
    image::RgbImage::from_fn(96, 80, |x, y| {
        let v = (x * 7 + y * 13) ^ (x * y);
        image::Rgb([v as u8, (v >> 3) as u8 ^ (x as u8), (y * 3) as u8])
    })
}

fn encoded(format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    picture().write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

/// A PNG or JPEG cut short is refused as Pillow refuses it ("image file is truncated"), naming
/// the file, whether read as an init image or as a mask (`load_image`); the whole file, and
/// a JPEG with bytes after its end marker, still read. (A JPEG lacking only its final `FF D9`
/// is refused too, where Pillow would decode it.)
#[test]
fn truncated_png_and_jpeg_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (format, name) in [
        (image::ImageFormat::Png, "cut.png"),
        (image::ImageFormat::Jpeg, "cut.jpg"),
    ] {
        let bytes = encoded(format);
        let whole = dir.path().join(format!("whole-{name}"));
        std::fs::write(&whole, &bytes).unwrap();
        let want = load_init_image(&whole, 1 << 20).unwrap();
        assert_eq!(want.dimensions(), (96, 80));
        let mut cuts = vec![bytes.len() / 2, bytes.len() * 9 / 10];
        if format == image::ImageFormat::Jpeg {
            cuts.push(bytes.len() - 2);
            let mut trailing = bytes.clone();
            trailing.extend_from_slice(b"trailing bytes");
            std::fs::write(&whole, &trailing).unwrap();
            assert_eq!(load_init_image(&whole, 1 << 20).unwrap(), want);
            check_jpeg_complete(&trailing).unwrap();
        }
        for keep in cuts {
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes[..keep]).unwrap();
            for e in [
                load_init_image(&path, 1 << 20).map(|_| ()).unwrap_err(),
                load_image(&path, 1 << 20).map(|_| ()).unwrap_err(),
            ] {
                let PipelineError::ImageDecode { path: p, reason } = &e else {
                    panic!("{name} cut to {keep} of {}: {e:?}", bytes.len());
                };
                assert_eq!(p, &path);
                assert!(
                    reason.starts_with("image file is truncated ("),
                    "{name}: {e}"
                );
                assert!(e.to_string().contains(name), "{e}");
            }
            if format == image::ImageFormat::Jpeg {
                let e = check_jpeg_complete(&bytes[..keep]).unwrap_err();
                assert!(e.starts_with("image file is truncated ("), "{e}");
            }
        }
    }
}

/// A long prompt (finding 5): the progress callback is asked between text-encoder chunks, so
/// an interrupt stops the job while the prompts are encoded, with no image made.
#[test]
fn an_interrupt_stops_a_long_prompt_while_it_is_encoded() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = Pipeline::load(
        &common::tiny_model("sd1", dir.path()),
        &LoadOptions::default(),
    )
    .unwrap();
    // 40 chunks of 75 tokens
    let req = Request {
        prompt: "cat ".repeat(40 * 75),
        seed: 1,
        steps: 2,
        width: 64,
        height: 64,
        ..Request::default()
    };
    let mut asked = 0;
    let (images, _) = pipe
        .generate(&req, &mut |p| {
            assert!(p.denoised.is_none(), "sampling began");
            asked += 1;
            if asked == 3 {
                ControlFlow::Break(sumi_pipeline::Stop::Interrupt)
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert!(images.is_empty());
    assert_eq!(asked, 3);
    // not interrupted: asked once per chunk (40 of the prompt, 1 of the empty negative), then
    // at every step
    let (mut encoding, mut steps) = (0, 0);
    let (images, _) = pipe
        .generate(&req, &mut |p| {
            match p.denoised {
                None => encoding += 1,
                Some(_) => steps += 1,
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!((images.len(), encoding, steps), (1, 41, 2));
}

/// Fuzzing findings (fuzz/findings/): a PNG whose palette is not whole RGB entries (png 0.18
/// panicked) and a WebP whose EXIF chunk declares 4 GiB (image-webp allocated it) are refused
/// with a decode error naming the file.
#[test]
fn fuzzed_png_and_webp_are_refused() {
    let findings = common::root().join("../fuzz/findings");
    for (file, says) in [
        ("png_short_palette_panic.png", "palette of 49 bytes"),
        ("webp_exif_chunk_4gib.webp", "past the end of the file"),
    ] {
        let path = findings.join(file);
        match load_image(&path, 1 << 26) {
            Err(PipelineError::ImageDecode { path: p, reason }) => {
                assert_eq!(p, path);
                assert!(reason.contains(says), "{file}: {reason}");
            }
            other => panic!("{file}: {other:?}"),
        }
    }
}
