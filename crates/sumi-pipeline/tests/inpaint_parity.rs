//! Inpainting against the A1111-following reference (tools/reference/make_inpaint_fixtures.py,
//! Pillow 9.5.0 + OpenCV): the pixel operations bit for bit, every case's intermediate images
//! (mask at the processing size, overlay, the picture the VAE encodes, latent mask) bit for bit,
//! final latents within 1e-4, pixels within one level, the infotext keys A1111 adds, and the
//! source's pixels kept exactly wherever A1111's composite keeps them.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use image::{GrayImage, RgbImage, RgbaImage};
use sha2::{Digest, Sha256};
use sumi_pipeline::composite::{
    alpha_composite, fill, gaussian_blur_rgba, masked_premultiplied, unpremultiply,
};
use sumi_pipeline::image::ResizeMode;
use sumi_pipeline::inpaint;
use sumi_pipeline::mask::{gaussian_blur, Axis};
use sumi_pipeline::{Img2Img, Inpaint, LoadOptions, MaskedContent, Pipeline, Request};
use sumi_sampling::names::parse_sampler_and_scheduler;

mod common;
use common::{max_abs, root, tiny_model as model};

fn fx(p: &str) -> PathBuf {
    root().join("inpaint").join(p)
}

fn sha(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn grey(p: &Path) -> GrayImage {
    image::open(p).unwrap().to_luma8()
}

fn rgb(p: &Path) -> RgbImage {
    image::open(p).unwrap().to_rgb8()
}

#[test]
fn pixel_operations_are_bit_exact() {
    let checks = sumi_testkit::Cases::<serde_json::Value>::load(&fx("ops.json"), "").unwrap();
    let mut n = 0;
    for c in &checks {
        let input = fx("ops").join(c["input"].as_str().unwrap());
        let got = match c["op"].as_str().unwrap() {
            "opencv_blur" => {
                let axis = if c["axis"] == "x" { Axis::X } else { Axis::Y };
                let s = c["sigma"].as_u64().unwrap() as u32;
                gaussian_blur(&grey(&input), s, axis).into_raw()
            }
            op => {
                let im = rgb(&input);
                let m = grey(&fx("ops").join(c["mask"].as_str().unwrap()));
                match op {
                    "pillow_blur" => {
                        let r = c["radius"].as_f64().unwrap() as f32;
                        unpremultiply(&gaussian_blur_rgba(&masked_premultiplied(&im, &m), r))
                            .into_raw()
                    }
                    "fill" => fill(&im, &m).into_raw(),
                    "overlay" => {
                        let base = rgb(&fx("ops").join(c["base"].as_str().unwrap()));
                        let mut b = RgbaImage::from_fn(base.width(), base.height(), |x, y| {
                            let p = base.get_pixel(x, y).0;
                            image::Rgba([p[0], p[1], p[2], 255])
                        });
                        alpha_composite(&mut b, &unpremultiply(&masked_premultiplied(&im, &m)));
                        b.pixels()
                            .flat_map(|p| [p[0], p[1], p[2]])
                            .collect::<Vec<u8>>()
                    }
                    other => panic!("unknown op {other}"),
                }
            }
        };
        assert_eq!(sha(&got), c["sha256"].as_str().unwrap(), "{c}");
        n += 1;
    }
    assert!(n > 50, "only {n} checks");
}

/// The request of a fixture case.
fn request(c: &serde_json::Value, init: &RgbImage) -> Request {
    let (sampler, scheduler) =
        parse_sampler_and_scheduler(c["sampler"].as_str().unwrap(), c["scheduler"].as_str())
            .unwrap();
    let mask = image::open(fx(&format!("mask_{}.png", c["mask"].as_str().unwrap()))).unwrap();
    let fill = MaskedContent::from_index(c["fill"].as_i64().unwrap()).unwrap();
    let resize_mode = ResizeMode::from_index(c["resize_mode"].as_u64().unwrap() as u8).unwrap();
    Request {
        prompt: "a photograph of an astronaut riding a horse".into(),
        negative_prompt: "blurry, low quality".into(),
        seed: c["seed"].as_i64().unwrap(),
        steps: c["steps"].as_u64().unwrap() as u32,
        cfg_scale: c["cfg"].as_f64().unwrap(),
        sampler,
        scheduler,
        width: 128,
        height: 128,
        rng: c["rng"].as_str().unwrap().parse().unwrap(),
        batch_size: c["batch"].as_u64().unwrap() as u32,
        inpainting_mask_weight: c["mask_weight"].as_f64().unwrap(),
        img2img: Some(Img2Img {
            init_image: init.clone(),
            resize_mode,
            denoising_strength: c["strength"].as_f64().unwrap(),
            inpaint: Some(Inpaint {
                mask,
                blur_x: c["blur_x"].as_u64().unwrap() as u32,
                blur_y: c["blur_y"].as_u64().unwrap() as u32,
                invert: c["invert"].as_bool().unwrap(),
                fill,
                full_res: c["full_res"].as_bool().unwrap(),
                full_res_padding: c["padding"].as_u64().unwrap() as u32,
                round: c["round"].as_bool().unwrap(),
            }),
        }),
        ..Default::default()
    }
}

#[test]
fn matches_the_reference() {
    let (_, cases) = common::cases("inpaint/cases.json", 79);
    let reference = common::reference("inpaint/reference.safetensors");
    let init = rgb(&fx("init.png"));
    let dir = tempfile::tempdir().unwrap();
    let mut loaded: std::collections::HashMap<String, Pipeline> = Default::default();
    let mut worst_px = 0u8;
    let mut total_kept = 0usize;
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let arch = c["arch"].as_str().unwrap();
        let req = request(c, &init);

        // the intermediate images, bit for bit
        let i2i = req.img2img.as_ref().unwrap();
        let src = inpaint::prepare(i2i, 128, 128).unwrap();
        let m = src.mask.as_ref().unwrap();
        let d = &c["digests"];
        assert_eq!(
            sha(src.image.as_raw()),
            d["image"],
            "{name}: encoded picture"
        );
        assert_eq!(sha(m.image_mask.as_raw()), d["image_mask"], "{name}: mask");
        assert_eq!(sha(m.overlay.as_raw()), d["overlay"], "{name}: overlay");
        let lm: Vec<u8> = m.latent_mask.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(sha(&lm), d["latent_mask"], "{name}: latent mask");

        if !loaded.contains_key(arch) {
            let p = Pipeline::load(&model(arch, dir.path()), &LoadOptions::default()).unwrap();
            loaded.insert(arch.to_string(), p);
        }
        let pipe = &loaded[arch];
        let out = pipe
            .generate(&req, &mut |_| std::ops::ControlFlow::Continue(()))
            .unwrap()
            .0;
        assert_eq!(out.len(), c["batch"].as_u64().unwrap() as usize);

        // latents
        let lat = Tensor::stack(
            &out.iter().map(|g| g.latents.clone()).collect::<Vec<_>>(),
            0,
        )
        .unwrap();
        let want = &reference[&format!("{name}/latents")];
        let dl = max_abs(&(&lat - want).unwrap());
        let ml = max_abs(want);
        assert!(dl / ml.max(1.0) < 1e-4, "{name}: latents {dl} vs max {ml}");

        let source_out = source_at_output(i2i, &m.overlay);
        for (i, g) in out.iter().enumerate() {
            // pixels within one level
            let want = rgb(&fx(&format!("out/{name}_{i}.png")));
            assert_eq!(g.image.dimensions(), want.dimensions(), "{name}: size");
            let pd = g
                .image
                .as_raw()
                .iter()
                .zip(want.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            worst_px = worst_px.max(pd);
            assert!(pd <= 1, "{name}: pixels differ by {pd} levels");

            // the source kept exactly where the overlay is opaque
            let mut kept = 0;
            for (x, y, o) in m.overlay.enumerate_pixels() {
                if o[3] == 255 {
                    let s = source_out.get_pixel(x, y).0;
                    assert_eq!(g.image.get_pixel(x, y).0, s, "{name}: ({x}, {y}) not kept");
                    kept += 1;
                }
            }
            total_kept += kept;

            // infotext keys
            let info = pipe.infotext(&req, g).unwrap();
            let extra: Vec<(String, String)> = c["extra_params"]
                .as_array()
                .unwrap()
                .iter()
                .map(|kv| {
                    (
                        kv[0].as_str().unwrap().to_string(),
                        kv[1].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            assert_eq!(info.other, extra, "{name}: infotext keys");
        }
        println!("{name}: latents {dl:.2e} (max {ml:.2})");
    }
    println!("worst pixel difference: {worst_px}; {total_kept} source pixels kept exactly");
    assert!(total_kept > 300_000, "only {total_kept} pixels kept in all");
}

/// The source at the output size (whole picture: resized to 128×128 by the request's mode;
/// only masked: the source itself).
fn source_at_output(i: &Img2Img, overlay: &RgbaImage) -> RgbImage {
    if overlay.dimensions() == i.init_image.dimensions() {
        return i.init_image.clone();
    }
    sumi_pipeline::image::resize_image(i.resize_mode, &i.init_image, 128, 128).unwrap()
}
