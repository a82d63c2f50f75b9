//! SwinIR against spandrel 0.4.2 on tiny random-weight files (tools/reference/
//! make_swinir_fixtures.py, fixtures/swinir/): each of the four upsamplers, 1conv and 3conv
//! residuals, depths and heads per layer, windows 4 and 7 (image range 255), inputs whose sides
//! are not multiples of the window; the architecture and sizes detected as spandrel reads them,
//! outputs within 1e-4 of spandrel's. A crafted window or head count is a typed error.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};
use sumi_models::upscalers::{detect, SwinUpsampler, UpscalerConfig, UpscalerError, UpscalerNet};
use sumi_models::Precision;
use sumi_testkit::fixture::{fixtures, read_json, tensors};
use sumi_testkit::measure::rel_err;

mod upscaler_files;

fn dir() -> std::path::PathBuf {
    fixtures().join("swinir")
}

fn read_model(file: &str) -> HashMap<String, Tensor> {
    upscaler_files::read_model(&dir(), file)
}

fn shapes(t: &HashMap<String, Tensor>) -> BTreeMap<String, Vec<usize>> {
    t.iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect()
}

#[test]
fn every_upsampler_matches_spandrel() {
    let doc = read_json(&dir().join("cases.json")).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4, "the four upsamplers of the fixture script");
    let io = tensors(&dir().join("io.safetensors")).unwrap();
    let mut checked = 0;
    for c in cases {
        let file = c["file"].as_str().unwrap();
        let e = &c["expect"];
        let model = read_model(file);
        let UpscalerConfig::SwinIr(cfg) = detect(&shapes(&model)).unwrap() else {
            panic!("{file}: not detected as SwinIR")
        };
        let upsampler = match e["upsampler"].as_str().unwrap() {
            "pixelshuffle" => SwinUpsampler::PixelShuffle,
            "pixelshuffledirect" => SwinUpsampler::Direct,
            "nearest+conv" => SwinUpsampler::NearestConv,
            "" => SwinUpsampler::None,
            other => panic!("{other}"),
        };
        let list = |k: &str| -> Vec<usize> {
            e[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect()
        };
        assert_eq!(cfg.upsampler, upsampler, "{file}");
        assert_eq!(cfg.scale as u64, c["scale"].as_u64().unwrap(), "{file}");
        assert_eq!(
            cfg.embed_dim as u64,
            e["embed_dim"].as_u64().unwrap(),
            "{file}"
        );
        assert_eq!(cfg.depths, list("depths"), "{file}");
        assert_eq!(cfg.heads, list("heads"), "{file}");
        assert_eq!(cfg.window as u64, e["window"].as_u64().unwrap(), "{file}");
        let net = UpscalerNet::new(model, Precision::F32, &Device::Cpu).unwrap();
        let stem = c["stem"].as_str().unwrap();
        for size in c["inputs"].as_array().unwrap() {
            let size = size.as_str().unwrap();
            let x = &io[&format!("{stem}/in_{size}")];
            let want = &io[&format!("{stem}/out_{size}")];
            let y = net.forward(x).unwrap();
            assert_eq!(y.dims(), want.dims(), "{file} {size}");
            let err = rel_err(&y, want);
            println!("{file} {size}: relative error {err:.2e}");
            assert!(err < 1e-4, "{file} {size}: {err:e}");
            checked += 1;
        }
    }
    assert_eq!(checked, 7, "inputs checked");
}

#[test]
fn crafted_swinir_sizes_are_typed_errors() {
    let base = shapes(&read_model("swinir_pixelshuffle_x2.pth"));
    let window_key = "layers.0.residual_group.blocks.0.attn.relative_position_index";
    for (what, key, shape) in [
        ("not a square window", window_key, vec![15, 15]),
        ("a huge window", window_key, vec![100 * 100, 100 * 100]),
        (
            "heads not dividing the channels",
            "layers.1.residual_group.blocks.0.attn.relative_position_bias_table",
            vec![49, 5],
        ),
        (
            "an upsample of 5 channels per feature",
            "upsample.0.weight",
            vec![320, 64, 3, 3],
        ),
    ] {
        let mut s = base.clone();
        s.insert(key.to_string(), shape);
        match detect(&s) {
            Err(UpscalerError::Invalid {
                arch: "SwinIR",
                detail,
            }) => {
                println!("{what}: {detail}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}
