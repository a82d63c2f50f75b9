//! Masks at the edges, as A1111 treats them: all black (nothing changes), all white (the same
//! as no mask), blank with "only masked" (plain img2img), another size (resized like the
//! image; refused for "only masked"), empty (refused), and files that are not images.

use std::path::Path;

use image::{DynamicImage, GrayImage, RgbImage};
use sumi_pipeline::image::{load_image, resize_image, ResizeMode};
use sumi_pipeline::{Img2Img, Inpaint, LoadOptions, Pipeline, PipelineError, Request};

mod common;
use common::{root, tiny_model};

fn pipeline(dir: &Path) -> Pipeline {
    Pipeline::load(&tiny_model("sd1", dir), &LoadOptions::default()).unwrap()
}

fn source() -> RgbImage {
    image::open(root().join("inpaint/init.png"))
        .unwrap()
        .to_rgb8()
}

fn request(mask: Option<DynamicImage>, full_res: bool) -> Request {
    Request {
        prompt: "a red hat".into(),
        seed: 3,
        steps: 4,
        width: 64,
        height: 64,
        sampler: sumi_sampling::SamplerKind::Euler,
        img2img: Some(Img2Img {
            init_image: source(),
            resize_mode: ResizeMode::JustResize,
            denoising_strength: 0.75,
            inpaint: mask.map(|mask| Inpaint {
                mask,
                full_res,
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

fn run(p: &Pipeline, req: &Request) -> sumi_pipeline::Result<Vec<sumi_pipeline::Generated>> {
    run_warned(p, req).map(|(images, _)| images)
}

fn run_warned(
    p: &Pipeline,
    req: &Request,
) -> sumi_pipeline::Result<(Vec<sumi_pipeline::Generated>, Vec<String>)> {
    p.generate(req, &mut |_| std::ops::ControlFlow::Continue(()))
}

fn flat(v: u8, w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageLuma8(GrayImage::from_pixel(w, h, image::Luma([v])))
}

#[test]
fn edge_masks_behave_as_in_a1111() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path());
    let plain = run(&p, &request(None, false)).unwrap();
    let (w, h) = source().dimensions();

    // all black, whole picture: the source, resized, pixel for pixel
    let black = run(&p, &request(Some(flat(0, w, h)), false)).unwrap();
    let resized = resize_image(ResizeMode::JustResize, &source(), 64, 64).unwrap();
    assert_eq!(black[0].image, resized);

    // all white: every latent changes and nothing of the source is composited back, so the
    // result is plain img2img's, bit for bit
    let white = run(&p, &request(Some(flat(255, w, h)), false)).unwrap();
    assert_eq!(white[0].image, plain[0].image);
    assert_ne!(white[0].image, black[0].image);

    // all black with "only masked": A1111 falls back to plain img2img (no crop, no overlay),
    // and the user is told
    let (blank, warned) = run_warned(&p, &request(Some(flat(0, w, h)), true)).unwrap();
    assert_eq!(blank[0].image, plain[0].image);
    assert_eq!(
        warned,
        [
            "mask: nothing is masked, so \"only masked\" inpainting was done as img2img of the \
          whole picture (as A1111 does)"
        ]
    );
    let keys: Vec<&str> = blank[0]
        .extra_params
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(keys, ["Mask blur"]);

    // another size, whole picture: resized like the image (a half-size white mask = all white)
    let (half, warned) = run_warned(&p, &request(Some(flat(255, w / 2, h / 2)), false)).unwrap();
    assert_eq!(half[0].image, plain[0].image);
    assert_eq!(
        warned,
        ["mask: 72x64 is not the init image's size 144x128: it was resized to it"]
    );
    // a size that is not a multiple of 8
    let mut odd = request(None, false);
    odd.width = 70;
    let (pics, warned) = run_warned(&p, &odd).unwrap();
    assert_eq!(pics[0].image.width(), 64);
    assert_eq!(
        warned,
        ["size: 70x64 is not a multiple of 8: the picture is 64x64, as A1111 makes it"]
    );

    // another size with "only masked": refused, naming the mask
    let e = run(&p, &request(Some(flat(255, w / 2, h / 2)), true)).unwrap_err();
    assert!(
        matches!(e, PipelineError::Request { field: "mask", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("72x64"), "{e}");

    // empty: refused before any work
    let e = run(&p, &request(Some(flat(0, 0, 0)), false)).unwrap_err();
    assert!(
        matches!(e, PipelineError::Request { field: "mask", .. }),
        "{e}"
    );
}

#[test]
fn alpha_masks_use_the_alpha_and_greys_are_rounded_later() {
    // an RGBA mask whose alpha is not all 255 is its alpha, thresholded above 128
    let mut rgba = image::RgbaImage::from_pixel(4, 1, image::Rgba([0, 0, 0, 0]));
    rgba.put_pixel(1, 0, image::Rgba([0, 0, 0, 128]));
    rgba.put_pixel(2, 0, image::Rgba([0, 0, 0, 129]));
    rgba.put_pixel(3, 0, image::Rgba([0, 0, 0, 255]));
    let m = sumi_pipeline::mask::binary_mask(&DynamicImage::ImageRgba8(rgba.clone()), true);
    assert_eq!(m.as_raw(), &[0, 0, 255, 255]);
    let m = sumi_pipeline::mask::binary_mask(&DynamicImage::ImageRgba8(rgba), false);
    assert_eq!(m.as_raw(), &[0, 128, 129, 255]);
    // an opaque RGBA mask is read by its colour (Pillow's luma), greys are kept as they are
    let opaque = image::RgbaImage::from_pixel(1, 1, image::Rgba([255, 0, 0, 255]));
    let m = sumi_pipeline::mask::binary_mask(&DynamicImage::ImageRgba8(opaque), true);
    assert_eq!(m.as_raw(), &[76]);
}

#[test]
fn a_mask_file_that_is_not_an_image_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mask.png");
    std::fs::write(&p, b"this is not a picture").unwrap();
    let e = load_image(&p, 1 << 26).unwrap_err();
    assert!(e.to_string().contains("mask.png"), "{e}");
    let e = load_image(&dir.path().join("missing.png"), 1 << 26).unwrap_err();
    assert!(e.to_string().contains("missing.png"), "{e}");
}
