//! Both layouts of every tiny fixture model load to identical canonical tensors, in f16 and
//! f32 storage, and are detected as what they are.

use std::path::PathBuf;

use candle_core::{DType, Device};
use sumi_testkit::{materialize, tiny_fixture, Storage};
use sumi_weights::{detect, Family, Prediction, PredictionSource, StorageDtype, Weights};

fn build(arch: &str, storage: StorageDtype) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let as_stored = match storage {
        StorageDtype::F32 => Storage::F32,
        _ => Storage::F16,
    };
    materialize(&tiny_fixture(arch), dir.path(), as_stored).unwrap();
    let single = dir.path().join(format!("tiny_{arch}.safetensors"));
    let folder = dir.path().join("diffusers");
    (dir, single, folder)
}

fn same_tensors(a: &Weights, b: &Weights) {
    let na: Vec<&str> = a.names().collect();
    let nb: Vec<&str> = b.names().collect();
    assert_eq!(
        na,
        nb,
        "canonical names differ between {:?} and {:?}",
        a.path(),
        b.path()
    );
    for n in na {
        let x = a.load(n, DType::F32, &Device::Cpu).unwrap();
        let y = b.load(n, DType::F32, &Device::Cpu).unwrap();
        let y = y.reshape(x.shape()).unwrap();
        let d = (x - y)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{n}");
    }
}

fn check(arch: &str, family: Family, inpaint: bool, pred: Option<Prediction>) {
    for storage in [StorageDtype::F16, StorageDtype::F32] {
        let (_d, single, folder) = build(arch, storage);
        let s = Weights::open(&single).unwrap();
        let f = Weights::open(&folder).unwrap();
        same_tensors(&s, &f);
        assert!(s.names().all(|n| s.storage_dtype(n) == Some(storage)));
        for w in [&s, &f] {
            let facts = detect(w, None).unwrap();
            assert_eq!(facts.family, family, "{arch}");
            assert_eq!(facts.inpaint, inpaint, "{arch}");
            if w.path() == folder.as_path() {
                // diffusers folders carry their scheduler's prediction type
                let want = pred.unwrap_or(Prediction::Epsilon);
                assert_eq!(facts.prediction.as_ref().map(|p| p.0), Some(want), "{arch}");
            } else {
                assert_eq!(facts.prediction.as_ref().map(|p| p.0), pred, "{arch}");
            }
        }
    }
}

#[test]
fn sd1() {
    check("sd1", Family::Sd1, false, Some(Prediction::Epsilon));
}

#[test]
fn sd1_inpaint() {
    check("sd1-inpaint", Family::Sd1, true, Some(Prediction::Epsilon));
}

#[test]
fn sd2_eps_needs_the_unet_test() {
    check("sd2", Family::Sd2, false, None);
}

#[test]
fn sd2_v_from_modelspec_metadata() {
    check("sd2-v", Family::Sd2, false, Some(Prediction::V));
    let (_d, single, _) = build("sd2-v", StorageDtype::F16);
    let facts = detect(&Weights::open(&single).unwrap(), None).unwrap();
    assert_eq!(
        facts.prediction,
        Some((Prediction::V, PredictionSource::Metadata))
    );
    assert_eq!(facts.architecture(Prediction::V), "sd2-v");
}

#[test]
fn sibling_yaml_and_explicit_override_win() {
    let (_d, single, _) = build("sd2", StorageDtype::F16);
    let yaml = single.with_extension("yaml");
    std::fs::write(
        &yaml,
        "model:\n  params:\n    parameterization: \"v\"\n    unet_config:\n      params:\n        num_head_channels: 32\n        context_dim: 64\n",
    )
    .unwrap();
    let w = Weights::open(&single).unwrap();
    let facts = detect(&w, None).unwrap();
    assert_eq!(
        facts.prediction,
        Some((Prediction::V, PredictionSource::Yaml(yaml.clone())))
    );
    assert_eq!(facts.unet_heads, sumi_weights::Heads::Channels(32));
    assert_eq!(facts.context_dim, Some(64));
    let facts = detect(&w, Some(Prediction::Epsilon)).unwrap();
    assert_eq!(
        facts.prediction,
        Some((Prediction::Epsilon, PredictionSource::Override))
    );
}

#[test]
fn rules_for_heads_and_padding() {
    let (_d, single, _) = build("sd1", StorageDtype::F16);
    let f = detect(&Weights::open(&single).unwrap(), None).unwrap();
    assert_eq!(f.unet_heads.heads(64, 0), 8);
    assert_eq!((f.clip_gelu, f.clip_pad_token), (false, 49407));
    let (_d, single, _) = build("sd2", StorageDtype::F16);
    let f = detect(&Weights::open(&single).unwrap(), None).unwrap();
    assert_eq!(f.unet_heads.heads(640, 1), 10);
    assert_eq!((f.clip_gelu, f.clip_pad_token), (true, 0));
}

/// SDXL: A1111's sentinels (bigG as embedder 1 for the base, as embedder 0 for the refiner),
/// the 9-channel inpainting U-Net, diffusers folders with `text_encoder_2` (the refiner without
/// `text_encoder`); the SGM files' open_clip bigG (fused q/k/v, transposed `text_projection`)
/// gives the same tensors as transformers' layout.
#[test]
fn sdxl_base_inpaint_and_refiner() {
    let eps = Some(Prediction::Epsilon);
    check("sdxl", Family::Sdxl, false, eps);
    check("sdxl-inpaint", Family::Sdxl, true, eps);
    check("sdxl-refiner", Family::SdxlRefiner, false, eps);
    for (arch, name, encoders) in [
        ("sdxl", "sdxl", 2),
        ("sdxl-inpaint", "sdxl-inpaint", 2),
        ("sdxl-refiner", "sdxl-refiner", 1),
    ] {
        let (_d, single, folder) = build(arch, StorageDtype::F16);
        for p in [&single, &folder] {
            let w = Weights::open(p).unwrap();
            let f = detect(&w, None).unwrap();
            assert_eq!(f.architecture(Prediction::Epsilon), name, "{arch}");
            // 64-channel heads: by rule in the single file, as counts in diffusers' config
            assert_eq!(f.unet_heads.heads(64, 1), 1, "{arch}");
            if p == &single {
                assert_eq!(f.unet_heads, sumi_weights::Heads::Channels(64));
            }
            let n = [sumi_weights::layout::TEXT_ENCODER, "text_encoder_2."]
                .iter()
                .filter(|p| w.param_count(p) > 0)
                .count();
            assert_eq!(n, encoders, "{arch}");
            assert_eq!(
                w.shape("text_encoder_2.text_projection.weight"),
                Some(&[128usize, 128][..])
            );
            assert_eq!(
                w.shape("unet.add_embedding.linear_1.weight").map(|s| s[1]),
                Some(if arch == "sdxl-refiner" { 288 } else { 320 })
            );
        }
        // every used tensor of the single file is mapped: what is left are the extras
        let w = Weights::open(&single).unwrap();
        let unused = w.raw_keys().count() + 4 * 3 - w.names().count(); // 2 fused → 6 per layer
        assert_eq!(unused, 2, "{arch}: alphas_cumprod and logit_scale");
    }
}
