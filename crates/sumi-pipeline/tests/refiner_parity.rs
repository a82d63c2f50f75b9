//! The refiner and the hires checkpoint against A1111 v1.10.1's model switches restated over the
//! tiny models (tools/reference/make_refiner_fixtures.py): the tiny SDXL base refined by the
//! tiny SDXL refiner (bigG only, aesthetic scores; txt2img with a batch of 2 and an empty
//! negative prompt, img2img), the tiny SD1 refined by the tiny SD2-v model (another text encoder
//! and v prediction), and the hires fix on SD1 with the SD2-v model as its hires checkpoint or as
//! the refiner of its second pass. Final latents within 1e-4 of their largest value, pixels
//! within one level; the infotext keys as A1111 writes them.
//! Also: bad input (an unknown refiner file, an inpainting refiner for a plain model, the refiner
//! with SD upscale), a refiner that never takes over (switch at 1), the model itself as refiner.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use sumi_pipeline::{Hires, LoadOptions, Pipeline, PipelineError, Refiner, Request};

mod common;
use common::{max_abs, root, tiny_model};

fn model(arch: &str, dir: &Path) -> PathBuf {
    tiny_model(arch, &dir.join(arch))
}

fn run(pipe: &Pipeline, req: &Request) -> (Vec<sumi_pipeline::Generated>, Vec<String>) {
    pipe.generate(req, &mut |_| ControlFlow::Continue(()))
        .unwrap()
}

fn key<'a>(g: &'a sumi_pipeline::Generated, k: &str) -> Option<&'a str> {
    g.extra_params
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
}

#[test]
fn switches_match_a1111() {
    let (top, list) = common::cases("refiner/cases.json", 7);
    let reference = common::reference("refiner/reference.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let init = image::open(root().join("generate/init.png"))
        .unwrap()
        .to_rgb8();
    let opts = LoadOptions::default();
    let sdxl = Pipeline::load(&model("sdxl", dir.path()), &opts).unwrap();
    let sd1 = Pipeline::load(&model("sd1", dir.path()), &opts).unwrap();
    let (xl_refiner, sd2v) = (
        model("sdxl-refiner", dir.path()),
        model("sd2-v", dir.path()),
    );
    for c in &list {
        let name = c["name"].as_str().unwrap();
        let xl = c["family"] == "sdxl";
        let (pipe, other, prompts) = if xl {
            let p = (
                c["prompt"].as_str().unwrap(),
                c["negative"].as_str().unwrap(),
            );
            (&sdxl, &xl_refiner, p)
        } else {
            let p = (
                top["prompt"].as_str().unwrap(),
                top["negative"].as_str().unwrap(),
            );
            (&sd1, &sd2v, p)
        };
        let mut req = common::case_request(c, 128, prompts, &init);
        let refiner = Refiner {
            checkpoint: other.clone(),
            switch_at: c["switch_at"].as_f64(),
        };
        match c["hires"].as_str() {
            None => req.stages.refiner = Some(refiner),
            Some(kind) => {
                req.hires = Some(Hires {
                    scale: c["hr_scale"].as_f64().unwrap(),
                    denoising_strength: c["strength"].as_f64().unwrap(),
                    ..Default::default()
                });
                match kind {
                    "hr_checkpoint" => req.stages.hires_checkpoint = Some(other.clone()),
                    _ => req.stages.refiner = Some(refiner),
                }
            }
        }
        let (out, warnings) = run(pipe, &req);
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
        assert_eq!(out.len() as u64, c["batch"].as_u64().unwrap());
        let (d, pd) = common::check_images(&reference, name, &out);
        let m = max_abs(&reference[&format!("{name}/latents")]).max(1.0);
        println!("{name}: latents max |diff| {d:.2e} (max {m:.2}), pixels max diff {pd:?}");
        assert!(d / m < 1e-4, "{name}: latents {d} of {m}");
        assert!(pd.unwrap() <= 1.0, "{name}: pixels {pd:?}");
        let stem = other.file_stem().unwrap().to_string_lossy().into_owned();
        let title = |k: &str| {
            let v = key(&out[0], k).unwrap_or_else(|| panic!("{name}: no `{k}`"));
            assert!(
                v.starts_with(&format!("{stem} [")) && v.len() == stem.len() + 13,
                "{name}: {k}: {v}"
            );
        };
        if c["hires"] == "hr_checkpoint" {
            title("Hires checkpoint");
            assert_eq!(key(&out[0], "Refiner"), None);
        } else {
            title("Refiner");
            let at = c["switch_at"].as_f64().unwrap();
            assert_eq!(
                key(&out[0], "Refiner switch at"),
                Some(sumi_pipeline::infotext::py_float_repr(at).as_str())
            );
            // the default pass of a hires fix job is not written
            assert_eq!(key(&out[0], "Hires refiner"), None);
        }
    }
}

fn sd1_request() -> Request {
    Request {
        prompt: "a cat".into(),
        seed: 3,
        steps: 3,
        width: 64,
        height: 64,
        sampler: sumi_pipeline::SamplerKind::Euler,
        ..Default::default()
    }
}

fn refused(pipe: &Pipeline, req: &Request) -> (&'static str, String) {
    match pipe.generate(req, &mut |_| ControlFlow::Continue(())) {
        Err(PipelineError::Request { field, detail }) => (field, detail),
        Err(e) => ("", e.to_string()),
        Ok(_) => panic!("not refused"),
    }
}

#[test]
fn bad_refiners_are_refused_and_idle_ones_leave_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let base = model("sd1", dir.path());
    let pipe = Pipeline::load(&base, &LoadOptions::default()).unwrap();
    let with = |checkpoint: PathBuf, switch_at: Option<f64>| {
        let mut r = sd1_request();
        r.stages.refiner = Some(Refiner {
            checkpoint,
            switch_at,
        });
        r
    };
    // an unknown file: the error names it
    let missing = dir.path().join("no_such_refiner.safetensors");
    let (_, msg) = refused(&pipe, &with(missing, Some(0.8)));
    assert!(msg.contains("no_such_refiner.safetensors"), "{msg}");
    // an inpainting refiner for a model without inpainting's input
    let (field, msg) = refused(&pipe, &with(model("sd1-inpaint", dir.path()), Some(0.5)));
    assert_eq!(field, "refiner");
    assert!(msg.contains("inpainting model (9 input channels)"), "{msg}");
    // switch_at outside (0, 1]
    let (field, _) = refused(&pipe, &with(model("sd2-v", dir.path()), Some(0.0)));
    assert_eq!(field, "refiner-switch-at");
    // a hires checkpoint without the hires fix
    let mut r = sd1_request();
    r.stages.hires_checkpoint = Some(model("sd2-v", dir.path()));
    assert_eq!(refused(&pipe, &r).0, "hr-checkpoint");

    let (plain, _) = run(&pipe, &sd1_request());
    // the model itself as refiner: A1111 does not switch; nothing is written
    let (same, warnings) = run(&pipe, &with(base.clone(), Some(0.5)));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(same[0].image, plain[0].image);
    assert_eq!(key(&same[0], "Refiner"), None);
    // switch at 1: completed never reaches 1 ((999 − t)/1000 < 1), the refiner never runs
    let (never, _) = run(&pipe, &with(model("sd2-v", dir.path()), Some(1.0)));
    assert_eq!(never[0].image, plain[0].image);
    assert_eq!(key(&never[0], "Refiner"), None);
    // no switch point (A1111's API without refiner_switch_at): the refiner from the first step
    let (first, _) = run(&pipe, &with(model("sd2-v", dir.path()), None));
    assert_ne!(first[0].image, plain[0].image);
    assert!(key(&first[0], "Refiner").is_some_and(|v| v.starts_with("tiny_sd2-v [")));
    assert_eq!(key(&first[0], "Refiner switch at"), None);
}

#[test]
fn an_sdxl_refiner_is_no_model_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let err = Pipeline::load(&model("sdxl-refiner", dir.path()), &LoadOptions::default())
        .err()
        .expect("a refiner loaded as the model");
    let msg = err.to_string();
    assert!(
        msg.contains("an SDXL refiner (sdxl-refiner)")
            && msg.contains("a refiner checkpoint is used with --refiner"),
        "{msg}"
    );
}
