//! End to end against the A1111-following reference (tools/reference/make_generate_fixtures.py)
//! on the tiny SD1 and SD2-v models: final latents within 1e-4, pixels within one level.

use sumi_pipeline::{LoadOptions, Pipeline};

mod common;
use common::{root, tiny_model as model};

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
        let req = common::case_request(
            c,
            size,
            (
                cases["prompt"].as_str().unwrap(),
                cases["negative_prompt"].as_str().unwrap(),
            ),
            &init,
        );
        let out = pipe
            .generate(&req, &mut |_| std::ops::ControlFlow::Continue(()))
            .unwrap()
            .0;
        let (d, pd) = common::check_images(&reference, name, &out);
        println!("{name}: latents max |diff| {d:.2e}, pixels max diff {pd:?}");
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
