//! Token merging against tomesd 0.1.3 from PyPI (tools/reference/make_tome_fixtures.py,
//! fixtures/tome/): the merge plan's round trip `unmerge(merge(x))` on random tokens, with grids
//! whose 2 × 2 windows do not fit at the edges and a merge count over the sources (capped),
//! equal to tomesd's within 1e-6; the merged length exactly.

use candle_core::Tensor;
use sumi_models::tome::TokenMerge;
use sumi_testkit::{fixture, Cases};

#[test]
fn merge_round_trip_matches_tomesd() {
    let dir = sumi_testkit::fixtures().join("tome");
    let path = dir.join("cases.json");
    let json = fixture::read_json(&path).unwrap();
    let cases = Cases::<serde_json::Value>::from_document(&path, &json, "/merge")
        .and_then(|c| c.exactly(4))
        .unwrap()
        .into_vec();
    let r = fixture::tensors(&dir.join("reference.safetensors")).unwrap();
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let get = |k: &str| -> &Tensor { &r[&format!("merge/{name}/{k}")] };
        let (w, h) = (
            c["w"].as_u64().unwrap() as usize,
            c["h"].as_u64().unwrap() as usize,
        );
        let plan = TokenMerge::plan(
            get("metric"),
            (w, h),
            (2, 2),
            c["r"].as_u64().unwrap() as usize,
        )
        .unwrap()
        .unwrap();
        let merged = plan.merge(get("x")).unwrap();
        assert_eq!(
            merged.dim(1).unwrap() as u64,
            c["merged_len"].as_u64().unwrap(),
            "{name}: merged length"
        );
        let back = plan.unmerge(&merged).unwrap();
        let e = sumi_testkit::rel_err_floor(&back, get("roundtrip"), 1.0);
        println!("{name}: round trip vs tomesd {e:.1e}");
        assert!(e < 1e-6, "{name}: {e:e}");
    }
}

/// The tiny U-Net of `arch` (make_tiny_models.py's weights, as the other parity tests build it).
fn tiny_unet(arch: &str, dir: &std::path::Path) -> sumi_models::UNet {
    use candle_core::{DType, Device};
    use sumi_testkit::{materialize, tiny_fixture, Storage};
    use sumi_weights::{detect, Weights};
    materialize(&tiny_fixture(arch), dir, Storage::F32).unwrap();
    let w = Weights::open(&dir.join(format!("tiny_{arch}.safetensors"))).unwrap();
    let facts = detect(&w, None).unwrap();
    let vb = w.var_builder(DType::F32, &Device::Cpu);
    let shapes = |n: &str| w.shape(&format!("unet.{n}")).map(|s| s.to_vec());
    let cfg =
        sumi_models::UNetConfig::infer(&shapes, &|c, l| facts.unet_heads.heads(c, l)).unwrap();
    sumi_models::UNet::new(vb.pp("unet"), cfg).unwrap()
}

/// The U-Net with token merging against the tiny diffusers U-Nets running tomesd's ToMe block
/// (tomesd's own `compute_merge` at the input's latent size): SD1 and SD2-v, ratios 0.5 and
/// 0.3, a non-square latent; within 1e-4 relative, and far from the U-Net without merging.
#[test]
fn unet_with_token_merging_matches_tomesd() {
    let dir = sumi_testkit::fixtures().join("tome");
    let path = dir.join("cases.json");
    let json = fixture::read_json(&path).unwrap();
    let cases = Cases::<serde_json::Value>::from_document(&path, &json, "/unet")
        .and_then(|c| c.exactly(3))
        .unwrap()
        .into_vec();
    let r = fixture::tensors(&dir.join("reference.safetensors")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let arch = c["arch"].as_str().unwrap();
        let sub = tmp.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let unet = tiny_unet(arch, &sub);
        let get = |k: &str| -> &Tensor { &r[&format!("unet/{name}/{k}")] };
        let extras = sumi_models::Extras {
            y: None,
            residuals: None,
            hyper: &sumi_models::hypernetwork::NO_HYPERNETWORKS,
            token_merging: c["ratio"].as_f64().unwrap(),
        };
        let out = unet
            .forward_extras(get("x"), get("t"), get("ctx"), &extras)
            .unwrap();
        let e = sumi_testkit::rel_err_floor(&out, get("out"), 1.0);
        let plain = unet.forward(get("x"), get("t"), get("ctx")).unwrap();
        let moved = sumi_testkit::rel_err_floor(&plain, get("out"), 1.0);
        println!("{name}: vs tomesd {e:.1e} (without merging {moved:.1e})");
        assert!(e < 1e-4, "{name}: {e:e}");
        assert!(moved > 1e-2, "{name}: merging changed little ({moved:e})");
    }
}
