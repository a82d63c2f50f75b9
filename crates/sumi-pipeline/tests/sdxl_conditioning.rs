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

/// SDXL textual-inversion embeddings (`clip_l`/`clip_g` pairs, each encoder its own part)
/// against A1111's EmbeddingsWithFixes on both encoders; a one-tensor (SD1-style) embedding is
/// not registered, as A1111 skips it by its shape. Fixtures:
/// tools/reference/make_sdxl_embedding_fixtures.py.
#[test]
fn embeddings_match_a1111() {
    let dir = fixtures().join("sdxl_embeddings");
    let found = sumi_weights::embedding::SdxlEmbeddingDir::load(&dir.join("emb"), 64, 128).unwrap();
    let names: Vec<&str> = found.loaded.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["tinyxl"]);
    assert_eq!(found.loaded[0].width(), 192);
    let other: Vec<&str> = found.other.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(other, ["tinysd"]);
    assert!(found.skipped.is_empty(), "{:?}", found.skipped);
    compare_embedding_cases(&dir, &found);
}

/// Embeddings whose parts differ in vector count, read as A1111 reads them: both encoders
/// reserve `clip_g`'s count of positions (A1111's `vectors`) and write their own part from the
/// first on; a shorter `clip_l` part leaves the rest to token 0, a longer one runs on over
/// the next positions (in case 1 over the chunk's end token). Fixtures:
/// tools/reference/make_sdxl_embedding_fixtures.py (`sdxl_embeddings_uneven`).
#[test]
fn uneven_parts_match_a1111() {
    let dir = fixtures().join("sdxl_embeddings_uneven");
    let found = sumi_weights::embedding::SdxlEmbeddingDir::load(&dir.join("emb"), 64, 128).unwrap();
    assert!(found.skipped.is_empty(), "{:?}", found.skipped);
    let parts: Vec<(&str, usize, usize, usize)> = found
        .loaded
        .iter()
        .map(|e| {
            let rows = |p: &sumi_weights::embedding::Embedding| p.vectors.dims()[0];
            (e.name(), e.clip_l.len(), rows(&e.clip_l), rows(&e.clip_g))
        })
        .collect();
    // (name, positions, clip_l vectors, clip_g vectors)
    assert_eq!(parts, [("tinylong", 2, 4, 2), ("tinyshort", 3, 1, 3)]);
    assert!(found
        .loaded
        .iter()
        .all(|e| e.clip_g.len() == e.clip_l.len()));
    compare_embedding_cases(&dir, &found);
}

/// Every case of `dir/cases.json` encoded with `found`'s embeddings against A1111's
/// conditioning (`dir/conditioning.safetensors`), and changed by them.
fn compare_embedding_cases(
    dir: &std::path::Path,
    found: &sumi_weights::embedding::SdxlEmbeddingDir,
) {
    let cases = sumi_testkit::fixture::read_json(&dir.join("cases.json")).unwrap();
    let want = sumi_testkit::fixture::tensors(&dir.join("conditioning.safetensors")).unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    let l_parts: Vec<_> = found.loaded.iter().map(|e| e.clip_l.clone()).collect();
    let g_parts: Vec<_> = found.loaded.iter().map(|e| e.clip_g.clone()).collect();
    let tmp = tempfile::tempdir().unwrap();
    let w = Weights::open(&sumi_testkit::tiny_model("sdxl", tmp.path())).unwrap();
    let l = encoder(&w, "text_encoder", false).unwrap();
    let g = encoder(&w, "text_encoder_2", true).unwrap();
    let dev = Device::Cpu;
    let opts = ConditioningOptions::default();
    let le = TextEncoder::new_sdxl(&l, &dev, ClipPad::EndOfText, &l_parts, opts.clone()).unwrap();
    let ge = TextEncoder::new_sdxl(&g, &dev, ClipPad::Zero, &g_parts, opts).unwrap();
    let plain =
        TextEncoder::new_sdxl(&l, &dev, ClipPad::EndOfText, &[], Default::default()).unwrap();
    let adm_in = w.shape("unet.add_embedding.linear_1.weight").unwrap()[1];
    for (i, c) in cases.iter().enumerate() {
        let texts: Vec<&str> = c["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        let n = |k: &str| c[k].as_u64().unwrap() as u32;
        let cond = AdmConditions::base(n("width"), n("height"), 0, 0);
        let fourier = fourier_width(adm_in, 128, &cond).unwrap();
        let got = sdxl_conditioning(Some(&le), &ge, &texts, &cond, fourier, false).unwrap();
        for (part, t) in [("context", &got.context), ("vector", &got.vector)] {
            let r = &want[&format!("c{i}_{part}")];
            assert_eq!(t.dims(), r.dims(), "case {i} {part}");
            let e = sumi_testkit::rel_err_floor(t, r, 1.0);
            let name = dir.file_name().unwrap().to_string_lossy();
            println!("{name}: case {i} {part}: {e:.2e}");
            assert!(e < 1e-4, "case {i} {part}: {e:e}");
        }
        // the embedding changes the context (the test can fail)
        let without = sdxl_conditioning(Some(&plain), &ge, &texts, &cond, fourier, false).unwrap();
        let d = sumi_testkit::max_abs_diff(&without.context, &got.context);
        assert!(d > 1e-3, "case {i}: the embedding changed nothing ({d})");
    }
}
