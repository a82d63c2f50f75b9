//! SDXL conditioning (context and ADM vector) against A1111 v1.10.1's, restated on the tiny SDXL
//! base and refiner: emphasis, BREAK, > 75 tokens, two texts encoded together, an empty
//! negative prompt (zero embeddings), non-square sizes, a crop, the refiner's aesthetic score.
//! Fixtures: tools/reference/make_sdxl_conditioning_fixtures.py.

use candle_core::{DType, Device};
use sumi_models::{ClipConfig, ClipTextModel};
use sumi_pipeline::conditioning::{ConditioningOptions, TextEncoder};
use sumi_pipeline::sdxl::{force_zero, fourier_width, sdxl_conditioning, AdmConditions};
use sumi_prompt::ClipPad;
use sumi_testkit::fixture::fixtures;
use sumi_weights::Weights;

fn encoder(w: &Weights, prefix: &str, gelu: bool) -> Option<ClipTextModel> {
    let shapes = |n: &str| w.shape(&format!("{prefix}.{n}")).map(<[usize]>::to_vec);
    shapes("final_layer_norm.weight")?;
    let cfg = ClipConfig::infer(&shapes, gelu).unwrap();
    Some(ClipTextModel::new(w.var_builder(DType::F32, &Device::Cpu).pp(prefix), cfg).unwrap())
}

#[test]
fn matches_a1111() {
    let dir = fixtures().join("sdxl_conditioning");
    let cases = sumi_testkit::fixture::read_json(&dir.join("cases.json")).unwrap();
    let want = sumi_testkit::fixture::tensors(&dir.join("conditioning.safetensors")).unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    let tmp = tempfile::tempdir().unwrap();
    let mut worst = 0f64;
    for arch in ["sdxl", "sdxl-refiner"] {
        let d = tmp.path().join(arch);
        let w = Weights::open(&sumi_testkit::tiny_model(arch, &d)).unwrap();
        let l = encoder(&w, "text_encoder", false);
        let g = encoder(&w, "text_encoder_2", true).unwrap();
        let dev = Device::Cpu;
        let opts = ConditioningOptions::default();
        let le = l
            .as_ref()
            .map(|l| TextEncoder::new_sdxl(l, &dev, ClipPad::EndOfText, &[], opts.clone()))
            .transpose()
            .unwrap();
        let ge = TextEncoder::new_sdxl(&g, &dev, ClipPad::Zero, &[], opts.clone()).unwrap();
        let adm_in = w.shape("unet.add_embedding.linear_1.weight").unwrap()[1];
        for (i, c) in cases.iter().enumerate().filter(|(_, c)| c["arch"] == arch) {
            let texts: Vec<&str> = c["texts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            let negative = c["negative"].as_bool().unwrap();
            let n = |k: &str| c[k].as_u64().unwrap() as u32;
            let (wd, ht, top, left) = (n("width"), n("height"), n("crop_top"), n("crop_left"));
            let cond = if arch == "sdxl" {
                AdmConditions::base(wd, ht, top, left)
            } else {
                let score = if negative { 2.5 } else { 6.0 };
                AdmConditions::refiner(wd, ht, top, left, score)
            };
            let zero = force_zero(negative, &texts);
            assert_eq!(zero, c["zero"].as_bool().unwrap(), "case {i}");
            let fourier = fourier_width(adm_in, 128, &cond).unwrap();
            assert_eq!(fourier, 32);
            let got = sdxl_conditioning(le.as_ref(), &ge, &texts, &cond, fourier, zero).unwrap();
            for (part, t) in [("context", &got.context), ("vector", &got.vector)] {
                let r = &want[&format!("c{i}_{part}")];
                assert_eq!(t.dims(), r.dims(), "case {i} {part}");
                let e = sumi_testkit::rel_err_floor(t, r, 1.0);
                worst = worst.max(e);
                assert!(e < 1e-4, "case {i} ({arch}) {part}: {e:e}");
            }
        }
    }
    println!("worst relative error {worst:e}");
}

#[test]
fn bad_adm_widths_are_refused() {
    let base = AdmConditions::base(1024, 1024, 0, 0);
    assert_eq!(fourier_width(2816, 1280, &base).unwrap(), 256);
    let refiner = AdmConditions::refiner(1024, 1024, 0, 0, 6.0);
    assert_eq!(fourier_width(2560, 1280, &refiner).unwrap(), 256);
    for (adm, pooled) in [(2816, 2816), (1280, 2816), (2819, 1280)] {
        let e = fourier_width(adm, pooled, &base).unwrap_err().to_string();
        assert!(e.contains("does not hold a pooled embedding"), "{e}");
    }
    assert!(!force_zero(true, &["", "x"]));
    assert!(!force_zero(false, &[""]));
}
