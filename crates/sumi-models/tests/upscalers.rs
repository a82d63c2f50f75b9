//! Upscaler networks against spandrel 0.4.2 on tiny random-weight files in every key layout
//! Sumi reads (fixtures from `tools/reference/make_upscaler_fixtures.py`): the architecture and
//! sizes detected as spandrel detects them, outputs within 1e-4 of spandrel's; crafted state
//! dicts get typed errors, never a panic.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use sumi_models::upscalers::{detect, EsrganLayout, UpscalerConfig, UpscalerError, UpscalerNet};
use sumi_models::Precision;
use sumi_testkit::fixture::{fixtures, read_json, tensors};
use sumi_testkit::measure::rel_err;

mod upscaler_files;

fn dir() -> std::path::PathBuf {
    fixtures().join("upscalers")
}

fn read_model(file: &str) -> HashMap<String, Tensor> {
    upscaler_files::read_model(&dir(), file)
}

fn layout(name: &str) -> EsrganLayout {
    match name {
        "Old" => EsrganLayout::Old,
        "New" => EsrganLayout::New,
        "Bsrgan" => EsrganLayout::Bsrgan,
        "Plus" => EsrganLayout::Plus,
        other => panic!("unknown layout {other}"),
    }
}

#[test]
fn every_layout_matches_spandrel() {
    let doc = read_json(&dir().join("cases.json")).unwrap();
    let cases = doc["models"].as_array().unwrap();
    assert_eq!(
        cases.len(),
        9,
        "the nine layouts/scales of the fixture script"
    );
    let io = tensors(&dir().join("io.safetensors")).unwrap();
    let x = &io["input"];
    let mut seen_layouts = std::collections::BTreeSet::new();
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let net = UpscalerNet::new(read_model(file), Precision::F32, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let cfg = net.config();
        assert_eq!(
            cfg.architecture(),
            case["architecture"].as_str().unwrap(),
            "{file}"
        );
        assert_eq!(
            cfg.scale() as u64,
            case["scale"].as_u64().unwrap(),
            "{file}"
        );
        let (cin, cout) = cfg.channels();
        assert_eq!(
            cin as u64,
            case["input_channels"].as_u64().unwrap(),
            "{file}"
        );
        assert_eq!(
            cout as u64,
            case["output_channels"].as_u64().unwrap(),
            "{file}"
        );
        let e = &case["expect"];
        let n = |k: &str| e[k].as_u64().unwrap() as usize;
        match cfg {
            UpscalerConfig::Esrgan(c) => {
                assert_eq!(c.layout, layout(e["layout"].as_str().unwrap()), "{file}");
                seen_layouts.insert(format!("{:?}", c.layout));
                assert_eq!(c.in_channels, n("in_channels"), "{file}");
                assert_eq!(c.num_feat, n("num_feat"), "{file}");
                assert_eq!(c.num_block, n("num_block"), "{file}");
                assert_eq!(c.upsamples, n("upsamples"), "{file}");
                assert_eq!(
                    c.shuffle_factor,
                    e["shuffle"].as_u64().map(|v| v as usize),
                    "{file}"
                );
                assert_eq!(
                    c.num_grow_ch as u64,
                    doc["growth_channels"].as_u64().unwrap()
                );
                assert_eq!(c.plus, c.layout == EsrganLayout::Plus);
            }
            UpscalerConfig::Compact(c) => {
                seen_layouts.insert("Compact".into());
                assert_eq!(c.num_feat, n("num_feat"), "{file}");
                assert_eq!(c.num_conv, n("num_conv"), "{file}");
                assert_eq!(c.scale, n("scale"), "{file}");
            }
            UpscalerConfig::SwinIr(_) | UpscalerConfig::Dat(_) => {
                panic!("{file}: no SwinIR or DAT file here (tests/swinir.rs, tests/dat.rs)")
            }
        }
        let stem = file.rsplit_once('.').unwrap().0;
        let want = &io[&format!("out.{stem}")];
        let got = net.forward(x).unwrap();
        assert_eq!(got.dims(), want.dims(), "{file}");
        let err = rel_err(&got, want);
        eprintln!("{file}: relative error {err:.2e}");
        assert!(err < 1e-4, "{file}: relative error {err}");
    }
    assert_eq!(seen_layouts.len(), 5, "{seen_layouts:?}");
}

fn shapes(pairs: &[(&str, &[usize])]) -> BTreeMap<String, Vec<usize>> {
    pairs
        .iter()
        .map(|(k, s)| (k.to_string(), s.to_vec()))
        .collect()
}

#[test]
fn unknown_architecture_names_the_keys_looked_for() {
    let s = shapes(&[
        ("encoder.conv_in.weight", &[4, 3, 3, 3]),
        ("decoder.x", &[1]),
    ]);
    let e = detect(&s).unwrap_err();
    let UpscalerError::UnknownArchitecture { count, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(*count, 2);
    let msg = e.to_string();
    for k in [
        "body.0.weight",
        "conv_first.weight",
        "model.1.sub.0.RDB1.conv1.0.weight",
    ] {
        assert!(msg.contains(k), "{msg}");
    }
    assert!(msg.contains("encoder.conv_in.weight"), "{msg}");
    let e = UpscalerNet::new(HashMap::new(), Precision::F32, &Device::Cpu).unwrap_err();
    assert!(
        matches!(e, UpscalerError::UnknownArchitecture { count: 0, .. }),
        "{e}"
    );
}

#[test]
fn architectures_not_built_are_named() {
    let swinir = [
        ("conv_first.weight", &[180usize, 3, 3, 3][..]),
        ("layers.0.residual_group.blocks.0.norm1.weight", &[180]),
        ("layers.0.residual_group.blocks.0.mlp.fc1.bias", &[360]),
        (
            "layers.0.residual_group.blocks.0.attn.relative_position_index",
            &[64, 64],
        ),
    ];
    let mut swin2sr = swinir.to_vec();
    swin2sr.push(("patch_embed.proj.weight", &[180, 3, 1, 1]));
    let hat = [
        ("conv_first.weight", &[180usize, 3, 3, 3][..]),
        ("relative_position_index_SA", &[256, 256]),
        ("layers.0.residual_group.blocks.0.norm1.weight", &[180]),
        (
            "layers.0.residual_group.overlap_attn.qkv.weight",
            &[540, 180],
        ),
    ];
    for (s, arch) in [(&swin2sr[..], "Swin2SR"), (&hat[..], "HAT")] {
        let e = detect(&shapes(s)).unwrap_err();
        assert!(
            matches!(e, UpscalerError::NotBuilt { arch: a } if a == arch),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("{arch} upscalers are not supported yet")),
            "{e}"
        );
    }
}

#[test]
fn crafted_sizes_are_refused() {
    let rdb = "model.1.sub.0.RDB1.conv1.0.weight";
    let cases: Vec<(BTreeMap<String, Vec<usize>>, &str)> = vec![
        // a huge feature count
        (
            shapes(&[
                ("model.0.weight", &[1 << 40, 3, 3, 3]),
                (rdb, &[32, 64, 3, 3]),
                ("model.1.sub.1.weight", &[64, 64, 3, 3]),
                ("model.4.weight", &[3, 64, 3, 3]),
            ]),
            "num_feat",
        ),
        // an index far beyond any real network
        (
            shapes(&[
                ("model.0.weight", &[64, 3, 3, 3]),
                (rdb, &[32, 64, 3, 3]),
                ("model.99999999999.weight", &[3, 64, 3, 3]),
            ]),
            "top-level layers",
        ),
        // a block index overflowing usize
        (
            shapes(&[
                ("model.0.weight", &[64, 3, 3, 3]),
                (rdb, &[32, 64, 3, 3]),
                (
                    "model.1.sub.99999999999999999999999.weight",
                    &[64, 64, 3, 3],
                ),
                ("model.4.weight", &[3, 64, 3, 3]),
            ]),
            "not an index",
        ),
        // a kernel of the wrong rank
        (
            shapes(&[
                ("model.0.weight", &[64]),
                (rdb, &[32, 64, 3, 3]),
                ("model.1.sub.1.weight", &[64, 64, 3, 3]),
                ("model.4.weight", &[3, 64, 3, 3]),
            ]),
            "dimensions",
        ),
        // Compact with a pixel-shuffle width no scale explains
        (
            shapes(&[
                ("body.0.weight", &[8, 3, 3, 3]),
                ("body.1.weight", &[8]),
                ("body.2.weight", &[7, 8, 3, 3]),
                ("body.2.bias", &[7]),
            ]),
            "scale",
        ),
        // Compact scale 64
        (
            shapes(&[
                ("body.0.weight", &[8, 3, 3, 3]),
                ("body.1.weight", &[8]),
                ("body.2.bias", &[3 * 64 * 64]),
            ]),
            "scale is 64",
        ),
    ];
    for (s, want) in cases {
        let e = detect(&s).unwrap_err();
        assert!(matches!(e, UpscalerError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains(want), "{e} (expected {want:?})");
    }
}

#[test]
fn missing_and_misshaped_tensors_are_named() {
    let mut t = read_model("esrgan_old_x4.pth");
    t.remove("model.1.sub.0.RDB2.conv3.0.bias");
    let e = UpscalerNet::new(t, Precision::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(e, UpscalerError::Model { .. }), "{e}");
    assert!(e.to_string().contains("RDB2.conv3.0.bias"), "{e}");
    let mut t = read_model("compact_x4.pth");
    t.insert(
        "body.4.weight".into(),
        Tensor::zeros((6, 5, 3, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let e = UpscalerNet::new(t, Precision::F32, &Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("body.4.weight"), "{e}");
    // a tensor the network does not have (spandrel loads strictly)
    for file in [
        "compact_x4.pth",
        "esrgan_old_x4.pth",
        "esrgan_plus_x4.safetensors",
    ] {
        let mut t = read_model(file);
        let n = t.len();
        t.insert(
            "model.7.noise.weight".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
        let e = UpscalerNet::new(t, Precision::F32, &Device::Cpu).unwrap_err();
        assert!(matches!(e, UpscalerError::Invalid { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("1 tensors the network does not have, e.g. model.7.noise.weight"),
            "{e}"
        );
        // and every tensor of the real file is one it has
        let cfg = UpscalerNet::new(read_model(file), Precision::F32, &Device::Cpu)
            .unwrap()
            .config()
            .clone();
        assert_eq!(
            sumi_models::upscalers::expected_keys(&cfg).len(),
            n,
            "{file}"
        );
    }
}

#[test]
fn wrong_input_channels_are_refused() {
    let net = UpscalerNet::new(
        read_model("compact_x2.safetensors"),
        Precision::F32,
        &Device::Cpu,
    )
    .unwrap();
    let x = Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let e = net.forward(&x).unwrap_err();
    assert!(e.to_string().contains("3 channels"), "{e}");
}

/// The shapes of a Real-ESRGAN-layout RRDBNet (`RealESRGAN_x4plus.pth`'s `params_ema`).
fn real_esrgan_shapes(in_ch: usize, blocks: usize) -> BTreeMap<String, Vec<usize>> {
    let mut s = BTreeMap::new();
    let mut conv = |name: String, cout: usize, cin: usize| {
        s.insert(format!("{name}.weight"), vec![cout, cin, 3, 3]);
        s.insert(format!("{name}.bias"), vec![cout]);
    };
    conv("conv_first".into(), 64, in_ch);
    for b in 0..blocks {
        for r in 1..=3 {
            for c in 1..=5 {
                let cout = if c == 5 { 64 } else { 32 };
                conv(format!("body.{b}.rdb{r}.conv{c}"), cout, 64 + 32 * (c - 1));
            }
        }
    }
    for n in ["conv_body", "conv_up1", "conv_up2", "conv_hr"] {
        conv(n.into(), 64, 64);
    }
    conv("conv_last".into(), 3, 64);
    s
}

/// The shapes of an SRVGGNetCompact with `num_conv` body convolutions, 4×.
fn compact_shapes(num_conv: usize) -> BTreeMap<String, Vec<usize>> {
    let mut s = BTreeMap::new();
    for i in 0..=num_conv {
        s.insert(
            format!("body.{}.weight", 2 * i),
            vec![64, if i == 0 { 3 } else { 64 }, 3, 3],
        );
        s.insert(format!("body.{}.bias", 2 * i), vec![64]);
        s.insert(format!("body.{}.weight", 2 * i + 1), vec![64]);
    }
    let last = 2 * num_conv + 2;
    s.insert(format!("body.{last}.weight"), vec![48, 64, 3, 3]);
    s.insert(format!("body.{last}.bias"), vec![48]);
    s
}

#[test]
fn real_file_layouts_are_detected_at_full_size() {
    // RealESRGAN_x4plus, RealESRGAN_x4plus_anime_6B, RealESRGAN_x2plus
    for (in_ch, blocks, scale, shuffle) in [(3, 23, 4, None), (3, 6, 4, None), (12, 23, 2, Some(2))]
    {
        let cfg = detect(&real_esrgan_shapes(in_ch, blocks)).unwrap();
        let UpscalerConfig::Esrgan(c) = &cfg else {
            panic!("{cfg:?}")
        };
        assert_eq!(
            (
                c.layout,
                c.num_feat,
                c.num_block,
                c.num_grow_ch,
                c.shuffle_factor
            ),
            (EsrganLayout::New, 64, blocks, 32, shuffle)
        );
        assert_eq!((cfg.scale(), cfg.channels()), (scale, (3, 3)));
    }
    // 4x-UltraSharp and other old-arch ESRGAN files: the same tensors under old names
    let new: HashMap<_, _> = real_esrgan_shapes(3, 23).into_iter().collect();
    let old: BTreeMap<String, Vec<usize>> =
        sumi_models::upscalers::to_old_arch(new, EsrganLayout::New)
            .into_iter()
            .collect();
    assert!(old.contains_key("model.1.sub.22.RDB3.conv5.0.weight"));
    assert_eq!(old["model.10.weight"], [3, 64, 3, 3]);
    let cfg = detect(&old).unwrap();
    let UpscalerConfig::Esrgan(c) = &cfg else {
        panic!("{cfg:?}")
    };
    assert_eq!(
        (c.layout, c.num_block, cfg.scale()),
        (EsrganLayout::Old, 23, 4)
    );
    // realesr-general-x4v3 (32 body convs) and realesr-animevideov3 (16)
    for n in [32, 16] {
        let cfg = detect(&compact_shapes(n)).unwrap();
        assert_eq!(
            cfg,
            UpscalerConfig::Compact(sumi_models::upscalers::CompactConfig {
                in_channels: 3,
                out_channels: 3,
                num_feat: 64,
                num_conv: n,
                scale: 4,
            })
        );
    }
}

#[test]
fn bf16_path_stays_near_spandrel() {
    let io = tensors(&dir().join("io.safetensors")).unwrap();
    for (file, stem) in [
        ("esrgan_new_x4.pth", "esrgan_new_x4"),
        ("esrgan_new_x2.pth", "esrgan_new_x2"),
        ("compact_x4.pth", "compact_x4"),
    ] {
        let net = UpscalerNet::new(read_model(file), Precision::Bf16, &Device::Cpu).unwrap();
        let got = net.forward(&io["input"]).unwrap();
        let want = &io[&format!("out.{stem}")];
        let err = rel_err(&got, want);
        eprintln!("{file} bf16: relative error {err:.2e}");
        // bf16 weights (8 significant bits) but not an f32 result
        assert!(err < 2e-2 && err > 1e-6, "{file}: {err}");
    }
}
