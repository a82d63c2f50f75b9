//! End to end against the A1111-following reference (tools/reference/make_generate_fixtures.py)
//! on the tiny SD1 and SD2-v models: final latents within 1e-4, pixels within one level.

use candle_core::{DType, Device, Tensor};
use sumi_pipeline::image::ResizeMode;
use sumi_pipeline::{Img2Img, LoadOptions, Pipeline, Request};
use sumi_sampling::names::parse_sampler_and_scheduler;

mod common;
use common::{max_abs, root, tiny_model as model};

#[test]
fn matches_the_reference() {
    let (cases, list) = common::cases("generate/cases.json", 75);
    let reference = common::reference("generate/reference.safetensors");
    let init = image::open(root().join("generate/init.png"))
        .unwrap()
        .to_rgb8();
    let size = cases["size"].as_u64().unwrap() as u32;
    let dir = tempfile::tempdir().unwrap();
    let mut loaded: std::collections::HashMap<String, Pipeline> = Default::default();
    for c in &list {
        let name = c["name"].as_str().unwrap();
        let arch = c["arch"].as_str().unwrap();
        if !loaded.contains_key(arch) {
            let p = Pipeline::load(&model(arch, dir.path()), &LoadOptions::default()).unwrap();
            loaded.insert(arch.to_string(), p);
        }
        let pipe = &loaded[arch];
        let (sampler, scheduler) =
            parse_sampler_and_scheduler(c["sampler"].as_str().unwrap(), c["scheduler"].as_str())
                .unwrap();
        let (w, h) = (
            c["width"].as_u64().map_or(size, |v| v as u32),
            c["height"].as_u64().map_or(size, |v| v as u32),
        );
        let resize_mode =
            ResizeMode::from_index(c["resize_mode"].as_u64().unwrap_or(0) as u8).unwrap();
        let req = Request {
            prompt: cases["prompt"].as_str().unwrap().into(),
            negative_prompt: cases["negative_prompt"].as_str().unwrap().into(),
            seed: c["seed"].as_i64().unwrap(),
            subseed: 0,
            steps: c["steps"].as_u64().unwrap() as u32,
            cfg_scale: c["cfg"].as_f64().unwrap(),
            sampler,
            scheduler,
            width: w,
            height: h,
            rng: c["rng"].as_str().unwrap().parse().unwrap(),
            batch_size: c["batch"].as_u64().unwrap() as u32,
            img2img: (c["mode"] == "img2img").then(|| Img2Img {
                init_image: init.clone(),
                resize_mode,
                denoising_strength: c["strength"].as_f64().unwrap(),
                inpaint: None,
            }),
            ..Default::default()
        };
        let out = pipe
            .generate(&req, &mut |_| std::ops::ControlFlow::Continue(()))
            .unwrap()
            .0;
        let lat = Tensor::stack(
            &out.iter().map(|g| g.latents.clone()).collect::<Vec<_>>(),
            0,
        )
        .unwrap();
        let want = &reference[&format!("{name}/latents")];
        let d = max_abs(&(&lat - want).unwrap());
        let m = max_abs(want);
        assert!(d / m.max(1.0) < 1e-4, "{name}: latents {d} vs max {m}");
        let Some(img_want) = reference.get(&format!("{name}/image")) else {
            println!("{name}: latents max |diff| {d:.2e} (max |ref| {m:.2})");
            continue;
        };
        let img_want = img_want.to_dtype(DType::F32).unwrap();
        let px: Vec<Tensor> = out
            .iter()
            .map(|g| {
                Tensor::from_vec(
                    g.image.as_raw().clone(),
                    (h as usize, w as usize, 3),
                    &Device::Cpu,
                )
                .unwrap()
            })
            .collect();
        let px = Tensor::stack(&px, 0).unwrap().to_dtype(DType::F32).unwrap();
        let pd = max_abs(&(&px - &img_want).unwrap());
        println!("{name}: latents max |diff| {d:.2e} (max |ref| {m:.2}), pixels max diff {pd}");
        assert!(pd <= 1.0, "{name}: pixels differ by {pd} levels");
    }
}

/// An SD2 checkpoint with nothing saying ε or v: the pipeline settles it with A1111's U-Net
/// test on the U-Net it builds anyway.
#[test]
fn sd2_prediction_from_the_unet_test() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = Pipeline::load(&model("sd2", dir.path()), &LoadOptions::default()).unwrap();
    assert_eq!(pipe.model.architecture, "sd2");
    assert_eq!(pipe.model.prediction, sumi_weights::Prediction::Epsilon);
    let forced = LoadOptions {
        prediction: Some(sumi_weights::Prediction::V),
        ..Default::default()
    };
    let pipe = Pipeline::load(&model("sd2", dir.path()), &forced).unwrap();
    assert_eq!(pipe.model.architecture, "sd2-v");
}
