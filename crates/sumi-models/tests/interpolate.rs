//! `sumi_models::interpolate` against torch 2.15's CPU `F.interpolate` in float32, as A1111's
//! hires fix calls it for its six latent upscale modes (fixtures/interpolate, made by
//! tools/reference/make_interpolate_fixtures.py on an AVX-512 torch): 18 resizes of random
//! N(0, 1) inputs in every mode — up and down, non-integer and unequal factors, odd sizes, a
//! 1×1 output and input, the same size, both of torch's bilinear / nearest-exact kernels, 20
//! channels. Every output must be bit-identical to torch's (the contract is ≤ 1e-6 absolute;
//! the arithmetic replicates torch's operation by operation, so any difference is a defect).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sumi_models::interpolate::{interpolate, LatentUpscaleMode};
use sumi_models::ModelError;
use sumi_testkit::{fixture, max_abs_diff};

/// 18 sizes × 6 modes.
const CASES: usize = 108;
const TOL: f64 = 1e-6;

/// The fixture folder, found from this crate (not from sumi-testkit's build: in worktrees that
/// share one target folder, its compiled-in path may be another checkout's).
fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/interpolate")
}

/// (A1111 mode name, input key, out height, out width, output key).
type Case = (String, String, usize, usize, String);

#[test]
fn matches_torch_in_every_mode() {
    let dir = fixture_dir();
    let path = dir.join("cases.json");
    let doc = fixture::read_json(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        doc.pointer("/cpu_capability").and_then(|v| v.as_str()),
        Some("AVX512"),
        "the fixture's bits are those of an AVX-512 torch"
    );
    let cases = fixture::Cases::<Case>::from_document(&path, &doc, "/cases")
        .and_then(|c| c.exactly(CASES))
        .unwrap_or_else(|e| panic!("{e}"));
    let tensors =
        fixture::tensors(&dir.join("cases.safetensors")).unwrap_or_else(|e| panic!("{e}"));
    let get = |key: &str| {
        tensors
            .get(key)
            .unwrap_or_else(|| panic!("fixture lacks tensor `{key}`"))
    };
    let mut worst: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    let mut inexact = Vec::new();
    for (mode_name, input, oh, ow, key) in &cases {
        let mode = LatentUpscaleMode::from_a1111_name(mode_name)
            .unwrap_or_else(|| panic!("unknown mode `{mode_name}`"));
        let x = get(&format!("input/{input}"));
        let want = get(key);
        let got = interpolate(x, *oh, *ow, mode).unwrap();
        assert_eq!(got.dims(), want.dims(), "{mode_name} {input} → {oh}×{ow}");
        let d = max_abs_diff(&got, want);
        assert!(
            d <= TOL,
            "{mode_name}: {:?} → {oh}×{ow}: max |Δ| {d:e}",
            x.dims()
        );
        let bits_equal = got
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .zip(want.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        if !bits_equal {
            inexact.push(format!("{mode_name} {:?} → {oh}×{ow} ({d:e})", x.dims()));
        }
        let e = worst.entry(mode.a1111_name()).or_insert((0.0, 0));
        *e = (e.0.max(d), e.1 + 1);
    }
    for (mode, (d, n)) in &worst {
        eprintln!("{mode}: {n} cases, worst max |Δ| {d:e}");
    }
    assert_eq!(worst.len(), 6, "every mode is tested");
    assert!(inexact.is_empty(), "not bit-exact: {inexact:#?}");
}

#[test]
fn names_round_trip_in_a1111_order() {
    let names: Vec<&str> = LatentUpscaleMode::ALL
        .iter()
        .map(|m| m.a1111_name())
        .collect();
    assert_eq!(
        names,
        [
            "Latent",
            "Latent (antialiased)",
            "Latent (bicubic)",
            "Latent (bicubic antialiased)",
            "Latent (nearest)",
            "Latent (nearest-exact)",
        ]
    );
    for m in LatentUpscaleMode::ALL {
        assert_eq!(LatentUpscaleMode::from_a1111_name(m.a1111_name()), Some(m));
    }
    assert_eq!(LatentUpscaleMode::from_a1111_name("latent"), None);
    assert_eq!(LatentUpscaleMode::from_a1111_name("Lanczos"), None);
    let torch: Vec<(&str, bool)> = LatentUpscaleMode::ALL
        .iter()
        .map(|m| (m.torch_mode(), m.antialias()))
        .collect();
    assert_eq!(
        torch,
        [
            ("bilinear", false),
            ("bilinear", true),
            ("bicubic", false),
            ("bicubic", true),
            ("nearest", false),
            ("nearest-exact", false),
        ]
    );
}

#[test]
fn refuses_bad_shapes_and_zero_sizes() {
    let x = Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap();
    for (h, w) in [(0, 8), (8, 0)] {
        let e = interpolate(&x, h, w, LatentUpscaleMode::Bilinear).unwrap_err();
        assert!(matches!(e, ModelError::Input { .. }), "{e}");
    }
    let flat = Tensor::zeros((4, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let e = interpolate(&flat, 16, 16, LatentUpscaleMode::Nearest).unwrap_err();
    assert!(e.to_string().contains("NCHW"), "{e}");
    let empty = Tensor::zeros((1, 4, 0, 8), DType::F32, &Device::Cpu).unwrap();
    let e = interpolate(&empty, 16, 16, LatentUpscaleMode::Bicubic).unwrap_err();
    assert!(e.to_string().contains("zero size"), "{e}");
}

#[test]
fn other_dtypes_go_through_f32_and_back() {
    let dir = fixture_dir();
    let tensors =
        fixture::tensors(&dir.join("cases.safetensors")).unwrap_or_else(|e| panic!("{e}"));
    let x = &tensors["input/a"];
    let mode = LatentUpscaleMode::BicubicAntialiased;
    let want = interpolate(x, 12, 12, mode).unwrap();
    let half = x.to_dtype(DType::F16).unwrap();
    let got = interpolate(&half, 12, 12, mode).unwrap();
    assert_eq!(got.dtype(), DType::F16);
    let expect = interpolate(&half.to_dtype(DType::F32).unwrap(), 12, 12, mode)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap();
    assert_eq!(max_abs_diff(&got, &expect), 0.0);
    // f16 rounding of the input and output only.
    let d = max_abs_diff(&got.to_dtype(DType::F32).unwrap(), &want);
    assert!(d > 0.0 && d < 1e-2, "{d}");
}
