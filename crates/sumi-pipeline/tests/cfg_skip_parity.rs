//! A1111's negative-prompt skips (NGMS `s_min_uncond` / `s_min_uncond_all`, and
//! `skip_early_cond`) end to end against A1111 v1.10.1's `CFGDenoiser` restated on the tiny
//! models (tools/reference/make_cfg_skip_fixtures.py, fixtures/cfg_skip/): final latents within
//! 1e-5 of max(1, max |reference|), the infotext keys exactly when A1111 adds them, and, where a
//! skip happens, latents more than ten times the tolerance away from the same request without
//! it (so the case tests the skip; DDIM's one skipped last call moves them 2.4e-4). Covers a second-order sampler (Heun: `total_steps` doubled), img2img (`t_enc + 1`),
//! both skips at once, and DDIM, whose denoiser compares the timestep rather than sigma.

use std::collections::HashMap;
use std::ops::ControlFlow;

use candle_core::Tensor;
use sumi_pipeline::{Generated, LoadOptions, Pipeline, Request, UncondSkip};

mod common;
use common::{case_request, root, tiny_model};
use sumi_testkit::{fixture, rel_err_floor, Cases};

/// The relative error bound of the other end-to-end sampler cases.
const TOLERANCE: f64 = 1e-5;

fn latents(out: &[Generated]) -> Tensor {
    Tensor::stack(
        &out.iter().map(|g| g.latents.clone()).collect::<Vec<_>>(),
        0,
    )
    .unwrap()
}

fn run(pipe: &Pipeline, req: &Request) -> Vec<Generated> {
    pipe.generate(req, &mut |_| ControlFlow::Continue(()))
        .unwrap()
        .0
}

#[test]
fn uncond_skips_match_a1111() {
    let dir = root().join("cfg_skip");
    let path = dir.join("cases.json");
    let json = fixture::read_json(&path).unwrap();
    let cases = Cases::<serde_json::Value>::from_document(&path, &json, "/cases")
        .and_then(|c| c.exactly(9))
        .unwrap()
        .into_vec();
    let reference = fixture::tensors(&dir.join("reference.safetensors")).unwrap();
    let init = image::open(root().join("generate/init.png"))
        .unwrap()
        .to_rgb8();
    let size = json["size"].as_u64().unwrap() as u32;
    let tmp = tempfile::tempdir().unwrap();
    let mut loaded: HashMap<String, Pipeline> = HashMap::new();
    let mut fired_cases = 0;
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let arch = c["arch"].as_str().unwrap();
        let pipe = loaded.entry(arch.to_string()).or_insert_with(|| {
            let sub = tmp.path().join(arch);
            std::fs::create_dir_all(&sub).unwrap();
            Pipeline::load(&tiny_model(arch, &sub), &LoadOptions::default()).unwrap()
        });
        let skip = UncondSkip {
            s_min_uncond: c["s_min_uncond"].as_f64().unwrap(),
            s_min_uncond_all: c["s_min_uncond_all"].as_bool().unwrap(),
            skip_early_cond: c["skip_early_cond"].as_f64().unwrap(),
        };
        let prompts = (
            json["prompt"].as_str().unwrap(),
            json["negative_prompt"].as_str().unwrap(),
        );
        let req = Request {
            uncond_skip: skip,
            ..case_request(c, size, prompts, &init)
        };
        let out = run(pipe, &req);
        let lat = latents(&out);
        let want = &reference[&format!("{name}/latents")];
        assert_eq!(lat.dims(), want.dims(), "{name}: shape");
        let rel = rel_err_floor(&lat, want, 1.0);
        println!("{name}: relative error {rel:.2e}");
        assert!(rel <= TOLERANCE, "{name}: {rel:.2e} relative");

        // the infotext keys A1111 adds, exactly when the skip happened
        let (early, ngms) = (
            c["fired_early"].as_bool().unwrap(),
            c["fired_ngms"].as_bool().unwrap(),
        );
        let mut keys = Vec::new();
        if early {
            keys.push("Skip Early CFG".to_string());
        }
        if ngms {
            keys.push("NGMS".to_string());
            if skip.s_min_uncond_all {
                keys.push("NGMS all steps".to_string());
            }
        }
        for g in &out {
            let have: Vec<String> = g
                .extra_params
                .iter()
                .map(|(k, _)| k.clone())
                .filter(|k| k.starts_with("NGMS") || k == "Skip Early CFG")
                .collect();
            assert_eq!(have, keys, "{name}: infotext keys");
        }

        // the skip changes the picture where it happens, and nothing where it does not
        let plain = latents(&run(
            pipe,
            &Request {
                uncond_skip: UncondSkip::default(),
                ..req.clone()
            },
        ));
        let moved = rel_err_floor(&plain, want, 1.0);
        if early || ngms {
            fired_cases += 1;
            assert!(
                moved > 10.0 * TOLERANCE,
                "{name}: the skip changed nothing ({moved:.2e})"
            );
        } else {
            assert!(moved <= TOLERANCE, "{name}: {moved:.2e} without a skip");
        }
    }
    assert_eq!(fired_cases, 7, "cases where a skip happens");
}
