//! SDXL txt2img end to end against A1111 v1.10.1's SDXL processing restated on the tiny SDXL
//! base (tools/reference/make_sdxl_generate_fixtures.py): both encoders with emphasis, a prompt
//! over 75 tokens (cond and uncond then run as separate U-Net calls), an empty negative prompt
//! (zero embeddings), non-square sizes, batch 2, Euler a / Euler / DPM++ 2M Karras, CPU and NV
//! noise; img2img (Euler a, strength 0.6); the 9-channel SDXL inpainting U-Net in txt2img (mask
//! of ones, grey picture's latents). Final latents within 1e-5 of their largest value, pixels within one level.
//! Also: a refiner given as the model is refused by name.

use std::ops::ControlFlow;

use sumi_pipeline::{LoadOptions, Pipeline};

mod common;
use common::{max_abs, root, tiny_model};

fn request(c: &serde_json::Value) -> sumi_pipeline::Request {
    let init = image::open(root().join("generate/init.png"))
        .unwrap()
        .to_rgb8();
    let prompts = (
        c["prompt"].as_str().unwrap(),
        c["negative"].as_str().unwrap(),
    );
    common::case_request(c, 64, prompts, &init)
}

#[test]
fn generation_matches_a1111() {
    let (_, list) = common::cases("sdxl_generate/cases.json", 5);
    let reference = common::reference("sdxl_generate/reference.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let mut loaded: std::collections::HashMap<String, Pipeline> = Default::default();
    for c in &list {
        let name = c["name"].as_str().unwrap();
        let arch = c["arch"].as_str().unwrap_or("sdxl");
        let pipe = loaded.entry(arch.to_string()).or_insert_with(|| {
            let d = dir.path().join(arch);
            Pipeline::load(&tiny_model(arch, &d), &LoadOptions::default()).unwrap()
        });
        assert_eq!(pipe.model.architecture, arch);
        let (out, warnings) = pipe
            .generate(&request(c), &mut |_| ControlFlow::Continue(()))
            .unwrap();
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
        assert_eq!(out.len() as u64, c["batch"].as_u64().unwrap());
        let (d, pd) = common::check_images(&reference, name, &out);
        let m = max_abs(&reference[&format!("{name}/latents")]);
        println!("{name}: latents max |diff| {d:.2e} (max {m:.2}), pixels max diff {pd:?}");
        assert!(d / m < 1e-5, "{name}: latents {d} of {m}");
        assert!(pd.unwrap() <= 1.0, "{name}: pixels {pd:?}");
    }
}

#[test]
fn a_refiner_as_the_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Pipeline::load(
        &tiny_model("sdxl-refiner", dir.path()),
        &LoadOptions::default(),
    )
    .err()
    .expect("a refiner loaded as the model");
    let msg = err.to_string();
    assert!(
        msg.contains("a refiner checkpoint is used with --refiner, not as the model"),
        "{msg}"
    );
}

/// The embeddings folder is read on SDXL (tests/sdxl_networks.rs checks what it gives): a
/// folder without SDXL embeddings gives no warning, its unreadable files are reported.
#[test]
fn an_embeddings_folder_without_sdxl_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LoadOptions {
        embeddings: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let pipe = Pipeline::load(&tiny_model("sdxl", dir.path()), &opts).unwrap();
    let (_, list) = common::cases("sdxl_generate/cases.json", 3);
    let mut req = request(&list[0]);
    req.steps = 1;
    req.batch_size = 1;
    let (out, warnings) = pipe
        .generate(&req, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(out.len(), 1);
    assert!(warnings.is_empty(), "{warnings:?}");
    let report = pipe.embedding_report();
    assert!(report.loaded.is_empty() && report.skipped.is_empty());
    // the checkpoint written into the folder is no embedding
    assert!(
        report
            .unreadable
            .iter()
            .any(|u| u.contains("tiny_sdxl.safetensors") && u.contains("terms")),
        "{report:?}"
    );
}

#[test]
fn an_sd_taesd_decoder_is_refused_on_sdxl() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LoadOptions {
        taesd_decoder: Some(root().join("taesd.safetensors")),
        ..Default::default()
    };
    let e = Pipeline::load(&tiny_model("sdxl", dir.path()), &opts)
        .err()
        .expect("TAESD's SD decoder taken for SDXL")
        .to_string();
    assert!(e.contains("SDXL models need TAESDXL's"), "{e}");
}

/// The timestep samplers (DDIM, PLMS, UniPC) reach the U-Net through another path than the
/// k-diffusion ones: the ADM vector must travel there too (the U-Net refuses a call without it).
#[test]
fn timestep_samplers_run_on_sdxl() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = Pipeline::load(&tiny_model("sdxl", dir.path()), &LoadOptions::default()).unwrap();
    let (_, list) = common::cases("sdxl_generate/cases.json", 3);
    for sampler in ["DDIM", "PLMS", "UniPC"] {
        let mut req = request(&list[1]);
        req.steps = 3;
        (req.sampler, req.scheduler) =
            sumi_sampling::names::parse_sampler_and_scheduler(sampler, None).unwrap();
        let (out, _) = pipe
            .generate(&req, &mut |_| ControlFlow::Continue(()))
            .unwrap_or_else(|e| panic!("{sampler}: {e}"));
        assert_eq!(out.len(), 1);
        let m = max_abs(&out[0].latents);
        assert!(m.is_finite() && m > 1.0, "{sampler}: {m}");
    }
}
