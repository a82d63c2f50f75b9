//! DAT against spandrel 0.4.2 on tiny random-weight files (tools/reference/make_dat_fixtures.py,
//! fixtures/dat/): upsamplers pixelshuffle ×2 and pixelshuffledirect ×3/×4, 1conv and 3conv
//! residuals, split sizes 2×4, 4×8 and 2×2, expansion factors 2 and 1.5, depths and heads per
//! group (a depth-1 network whose heads come from `pos3.2`), with and without qkv bias; inputs
//! whose sides are not multiples of the split sizes, one the file's mask size, one under 16
//! pixels (the descriptor's padding). The sizes detected as spandrel reads them, outputs within
//! 1e-4 of spandrel's. Crafted sizes are typed errors.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};
use sumi_models::upscalers::{detect, DatUpsampler, UpscalerConfig, UpscalerError, UpscalerNet};
use sumi_models::Precision;
use sumi_testkit::fixture::{fixtures, read_json, tensors};
use sumi_testkit::measure::rel_err;

mod upscaler_files;

fn dir() -> std::path::PathBuf {
    fixtures().join("dat")
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
fn every_dat_fixture_matches_spandrel() {
    let doc = read_json(&dir().join("cases.json")).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3, "the three networks of the fixture script");
    let io = tensors(&dir().join("io.safetensors")).unwrap();
    let mut checked = 0;
    for c in cases {
        let file = c["file"].as_str().unwrap();
        let e = &c["expect"];
        let model = read_model(file);
        let UpscalerConfig::Dat(cfg) = detect(&shapes(&model)).unwrap() else {
            panic!("{file}: not detected as DAT")
        };
        let upsampler = match e["upsampler"].as_str().unwrap() {
            "pixelshuffle" => DatUpsampler::PixelShuffle,
            "pixelshuffledirect" => DatUpsampler::Direct,
            other => panic!("{other}"),
        };
        let list = |k: &str| -> Vec<usize> {
            e[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect()
        };
        let num = |k: &str| e[k].as_u64().unwrap() as usize;
        assert_eq!(cfg.upsampler, upsampler, "{file}");
        assert_eq!(cfg.scale as u64, c["scale"].as_u64().unwrap(), "{file}");
        assert_eq!(cfg.embed_dim, num("embed_dim"), "{file}");
        assert_eq!(cfg.depths, list("depths"), "{file}");
        assert_eq!(cfg.heads, list("heads"), "{file}");
        assert_eq!(cfg.split.to_vec(), list("split"), "{file}");
        assert_eq!(cfg.hidden, num("hidden"), "{file}");
        assert_eq!(cfg.img_size, num("img_size"), "{file}");
        assert_eq!(cfg.qkv_bias, e["qkv_bias"].as_bool().unwrap(), "{file}");
        assert_eq!(cfg.three_conv, e["three_conv"].as_bool().unwrap(), "{file}");
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
    assert_eq!(checked, 5, "inputs checked");
}

#[test]
fn split_order_comes_from_rpe_biases() {
    // the shapes of 2×4 and 4×2 windows are the same: the values decide, as in spandrel
    let mut model = read_model("dat_pixelshuffle_x2.pth");
    let key = "layers.0.blocks.0.attn.attns.0.rpe_biases";
    let UpscalerConfig::Dat(cfg) = detect(&shapes(&model)).unwrap() else {
        panic!("not DAT")
    };
    assert_eq!(cfg.split, [2, 4]);
    let swapped = Tensor::flip(&model[key], &[1]).unwrap();
    model.insert(key.to_string(), swapped);
    // 4×2: spandrel builds the transposed windows; the bias tables no longer fit the file's
    // pos3 widths only through the order, so the build must succeed and differ
    let a = UpscalerNet::new(
        read_model("dat_pixelshuffle_x2.pth"),
        Precision::F32,
        &Device::Cpu,
    )
    .unwrap();
    let b = UpscalerNet::new(model.clone(), Precision::F32, &Device::Cpu).unwrap();
    let x = Tensor::rand(0f32, 1f32, (1, 3, 16, 16), &Device::Cpu).unwrap();
    let d = (a.forward(&x).unwrap() - b.forward(&x).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d > 1e-4, "swapped split sizes changed nothing ({d})");
    let bogus = Tensor::new(&[[0f32, 0.], [6., 6.]], &Device::Cpu).unwrap();
    let n = model[key].dim(0).unwrap();
    let bad = Tensor::cat(&[&model[key].narrow(0, 0, n - 2).unwrap(), &bogus], 0).unwrap();
    model.insert(key.to_string(), bad);
    match UpscalerNet::new(model, Precision::F32, &Device::Cpu) {
        Err(UpscalerError::Invalid {
            arch: "DAT",
            detail,
        }) => println!("bogus rpe_biases: {detail}"),
        other => panic!("bogus rpe_biases: {other:?}"),
    }
}

#[test]
fn crafted_dat_sizes_are_typed_errors() {
    let base = shapes(&read_model("dat_pixelshuffle_x2.pth"));
    let rpe = "layers.0.blocks.0.attn.attns.0.rpe_biases";
    let idx = "layers.0.blocks.0.attn.attns.0.relative_position_index";
    for (what, key, shape) in [
        ("rpe_biases of no window", rpe, vec![16, 2]),
        (
            "a huge window",
            rpe,
            vec![(2 * 1000 - 1) * (2 * 1000 - 1), 2],
        ),
        ("a huge index", idx, vec![1 << 40, 1 << 40]),
        ("windows not dividing", rpe, vec![5 * 9, 2]),
        (
            "heads not dividing the channels",
            "layers.0.blocks.1.attn.temperature",
            vec![5, 1, 1],
        ),
        (
            "a single head",
            "layers.0.blocks.1.attn.temperature",
            vec![1, 1, 1],
        ),
        ("odd channels", "conv_first.weight", vec![33, 3, 3, 3]),
        (
            "an upsample of 5 channels per feature",
            "upsample.0.weight",
            vec![320, 64, 3, 3],
        ),
        (
            "an odd SGFN",
            "layers.0.blocks.0.ffn.fc1.weight",
            vec![63, 32],
        ),
        (
            "a huge mask",
            "layers.0.blocks.2.attn.attn_mask_0",
            vec![1 << 40, 1 << 40, 8],
        ),
    ] {
        let mut s = base.clone();
        s.insert(key.to_string(), shape);
        match detect(&s) {
            Err(UpscalerError::Invalid {
                arch: "DAT",
                detail,
            }) => println!("{what}: {detail}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    let mut s = base.clone();
    s.remove("norm.weight");
    assert!(matches!(
        detect(&s),
        Err(UpscalerError::Invalid { arch: "DAT", .. })
    ));
    // a tensor the network does not have is refused (spandrel's strict load)
    let mut model = read_model("dat_pixelshuffle_x2.pth");
    model.insert(
        "layers.0.blocks.0.attn.extra".into(),
        Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    assert!(matches!(
        UpscalerNet::new(model, Precision::F32, &Device::Cpu),
        Err(UpscalerError::Invalid { arch: "DAT", .. })
    ));
}
