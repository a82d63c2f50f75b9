//! A1111's upscale loop, `resize_image`'s resize with an upscaler and its tiled model
//! inference, against the restatement over spandrel in
//! `tools/reference/make_upscaler_fixtures.py` (fixtures in `fixtures/upscalers/`): tiled
//! outputs within one pixel level, the pass loop's and the final Lanczos's sizes, Pillow
//! NEAREST exactly; the registry's names and order; unknown names, files of unknown
//! architecture and sizes over the limits as typed errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;
use sumi_pipeline::error::PipelineError;
use sumi_pipeline::upscale::{
    keep_going, read_state_dict, resize_nearest, resize_with_upscaler, upscale_with_model,
    TileOptions, UpscaleError, Upscaler, UpscalerKind, UpscalerRegistry,
};
use sumi_testkit::fixture::tensors;
use sumi_testkit::measure::rel_err;

mod common;
use common::ImageFixture;

fn dir() -> PathBuf {
    common::root().join("upscalers")
}

fn fixture() -> ImageFixture {
    ImageFixture::open("upscalers")
}

fn model(file: &str) -> Upscaler {
    Upscaler::from_file(&dir().join(file))
}

/// The largest difference in pixel levels, and how many values differ at all.
fn level_diff(a: &RgbImage, b: &RgbImage) -> (u8, usize) {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .fold((0, 0), |(m, n), (x, y)| {
            (m.max(x.abs_diff(*y)), n + usize::from(x != y))
        })
}

fn tile(case: &serde_json::Value) -> TileOptions {
    TileOptions {
        tile: case["tile"].as_u64().unwrap() as u32,
        overlap: case["overlap"].as_u64().unwrap() as u32,
    }
}

#[test]
fn files_load_by_detection_as_spandrel_reads_them() {
    let f = fixture();
    let io = tensors(&dir().join("io.safetensors")).unwrap();
    for case in f.cases("models", 9) {
        let file = case["file"].as_str().unwrap();
        let u = model(file);
        let net = u.network().unwrap().expect("a model upscaler");
        assert_eq!(
            net.scale() as u64,
            case["scale"].as_u64().unwrap(),
            "{file}"
        );
        let stem = file.rsplit_once('.').unwrap().0;
        let y = net.forward(&io["input"]).unwrap();
        let err = rel_err(&y, &io[&format!("out.{stem}")]);
        assert!(err < 1e-4, "{file}: {err}");
        // the bf16 path: near, not equal
        let bf16 = model(file).with_precision(sumi_models::Precision::Bf16);
        let y = bf16
            .network()
            .unwrap()
            .unwrap()
            .forward(&io["input"])
            .unwrap();
        let err = rel_err(&y, &io[&format!("out.{stem}")]);
        assert!(err < 2e-2 && err > 1e-6, "{file} bf16: {err}");
    }
}

#[test]
fn tiling_matches_a1111_within_one_level() {
    let f = fixture();
    for case in f.cases("tiling", 5) {
        let u = model(case["model"].as_str().unwrap());
        let net = u.network().unwrap().unwrap();
        let src = f.image(case["image"].as_str().unwrap());
        let want = f.image(case["output"].as_str().unwrap());
        let got = upscale_with_model(&net, &src, tile(case), &mut keep_going).unwrap();
        let (max, n) = level_diff(&got, &want);
        eprintln!("{case}: max {max} levels, {n} values differ");
        assert!(max <= 1, "{case}: {max} levels");
    }
}

#[test]
fn upscale_loop_passes_and_final_lanczos() {
    let f = fixture();
    let small = f.image("small");
    for case in f.cases("loops", 5) {
        let name = case["upscaler"].as_str().unwrap();
        let u = match name {
            "Lanczos" => Upscaler::new("Lanczos", UpscalerKind::Lanczos, 4),
            "Nearest" => Upscaler::new("Nearest", UpscalerKind::Nearest, 4),
            file => model(file),
        };
        let scale = case["scale"].as_f64().unwrap();
        let want = f.image(case["output"].as_str().unwrap());
        let dest = |v: u32| ((f64::from(v) * scale) / 8.0).floor() as u32 * 8;
        assert_eq!(
            want.dimensions(),
            (dest(small.width()), dest(small.height()))
        );
        let got = u
            .upscale(&small, scale, tile(case), &mut keep_going)
            .unwrap();
        let (max, n) = level_diff(&got, &want);
        eprintln!("{case}: max {max} levels, {n} values differ");
        assert!(max <= 1, "{case}: {max} levels");
    }
    // the 2× model asked for 5×: 12×10 → 24×20 → 48×40 → 96×80 (three passes), then Lanczos
    // to 56×48; stopping after two passes would give a different picture
    let u = model("compact_x2.safetensors");
    let opts = TileOptions {
        tile: 16,
        overlap: 4,
    };
    let three = u.upscale(&small, 5.0, opts, &mut keep_going).unwrap();
    assert_eq!(three.dimensions(), (56, 48));
    let net = u.network().unwrap().unwrap();
    let mut two = small.clone();
    for _ in 0..2 {
        two = upscale_with_model(&net, &two, opts, &mut keep_going).unwrap();
    }
    let two = sumi_pipeline::image::resize_lanczos(&two, 56, 48).unwrap();
    assert!(level_diff(&two, &three).0 > 8);
}

#[test]
fn resize_with_upscaler_matches_resize_image() {
    let f = fixture();
    let small = f.image("small");
    for case in f.cases("resizes", 3) {
        let u = match case["upscaler"].as_str().unwrap() {
            "Lanczos" => Upscaler::new("Lanczos", UpscalerKind::Lanczos, 4),
            file => model(file),
        };
        let (w, h) = (
            case["width"].as_u64().unwrap() as u32,
            case["height"].as_u64().unwrap() as u32,
        );
        let want = f.image(case["output"].as_str().unwrap());
        let got = resize_with_upscaler(&small, w, h, &u, tile(case), &mut keep_going).unwrap();
        assert_eq!(got.dimensions(), (w, h));
        let (max, n) = level_diff(&got, &want);
        eprintln!("{case}: max {max} levels, {n} values differ");
        assert!(max <= 1, "{case}: {max} levels");
    }
    // None is a plain Lanczos resize
    let none = Upscaler::new("None", UpscalerKind::None, 4);
    let got = resize_with_upscaler(
        &small,
        30,
        17,
        &none,
        TileOptions::default(),
        &mut keep_going,
    )
    .unwrap();
    let want = sumi_pipeline::image::resize_lanczos(&small, 30, 17).unwrap();
    assert_eq!(got, want);
}

#[test]
fn nearest_is_pillow_exact() {
    let f = fixture();
    let small = f.image("small");
    for case in f.cases("nearest", 6) {
        let (w, h) = (
            case["width"].as_u64().unwrap() as u32,
            case["height"].as_u64().unwrap() as u32,
        );
        let want = f.image(case["output"].as_str().unwrap());
        assert_eq!(resize_nearest(&small, w, h), want, "{case}");
    }
}

/// The upscale error inside a pipeline error (panics on any other).
fn upscale_err(e: &PipelineError) -> &UpscaleError {
    match e {
        PipelineError::Upscale(u) => u,
        other => panic!("not an upscale error: {other}"),
    }
}

fn copy(name: &str, to: &Path) {
    std::fs::copy(dir().join(name), to).unwrap();
}

#[test]
fn registry_names_and_order() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    copy("esrgan_new_x4.pth", &d.join("RealESRGAN_x4plus.pth"));
    copy("esrgan_old_x4.pth", &d.join("4x-UltraSharp.pth"));
    std::fs::create_dir(d.join("sub")).unwrap();
    copy("compact_x2.safetensors", &d.join("sub/anime.safetensors"));
    copy("esrgan_new_x2.pth", &d.join("RealESRGAN_x2plus.pth"));
    std::fs::write(d.join("notes.txt"), "not a model").unwrap();
    std::fs::write(d.join("sd15.ckpt"), "not listed").unwrap();
    let r = UpscalerRegistry::scan(&[d.to_path_buf()]).unwrap();
    let names = r.names();
    assert_eq!(
        names,
        [
            "None",
            "Lanczos",
            "Nearest",
            "4x-UltraSharp",
            "anime",
            "R-ESRGAN 2x+",
            "R-ESRGAN 4x+"
        ]
    );
    let u = r.get("R-ESRGAN 4x+").unwrap();
    assert_eq!(u.scale(), 4);
    assert_eq!(u.path().unwrap(), d.join("RealESRGAN_x4plus.pth"));
    assert_eq!(r.get("R-ESRGAN 2x+").unwrap().scale(), 2);
    // the file's real scale, once loaded
    assert_eq!(
        r.get("R-ESRGAN 2x+")
            .unwrap()
            .network()
            .unwrap()
            .unwrap()
            .scale(),
        2
    );
    assert!(r.get("None").unwrap().network().unwrap().is_none());

    let e = r.get("R-ESRGAN 8x").unwrap_err();
    assert!(
        matches!(upscale_err(&e), UpscaleError::UnknownUpscaler { .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("`R-ESRGAN 8x`"), "{msg}");
    for n in &names {
        assert!(msg.contains(n.as_str()), "{msg}");
    }
    let e = UpscalerRegistry::scan(&[d.join("absent")]).unwrap_err();
    assert!(matches!(upscale_err(&e), UpscaleError::Io { .. }), "{e}");
}

#[test]
fn bad_files_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // a checkpoint that is no upscaler
    let vae = d.join("vae.safetensors");
    let t = Tensor::zeros((4, 3, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &HashMap::from([("decoder.conv_in.weight".to_string(), t)]),
        &vae,
    )
    .unwrap();
    let e = Upscaler::from_file(&vae).network().unwrap_err();
    assert!(
        matches!(upscale_err(&e), UpscaleError::Architecture { .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("unknown upscaler architecture"),
        "{e}"
    );
    assert!(e.to_string().contains("decoder.conv_in.weight"), "{e}");
    // a file over the size limit is refused before it is read (sparse: no disk used)
    let big = d.join("big.pth");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(sumi_pipeline::upscale::MAX_UPSCALER_FILE_BYTES + 1)
        .unwrap();
    let e = read_state_dict(&big).unwrap_err();
    assert!(
        matches!(upscale_err(&e), UpscaleError::FileTooLarge { .. }),
        "{e}"
    );
    // an empty file and a truncated archive
    let empty = d.join("empty.pth");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        read_state_dict(&empty).unwrap_err(),
        PipelineError::Weights(_)
    ));
    let bytes = std::fs::read(dir().join("compact_x4.pth")).unwrap();
    let cut = d.join("cut.pth");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        read_state_dict(&cut).unwrap_err(),
        PipelineError::Weights(_)
    ));
    let e = Upscaler::from_file(&d.join("missing.pth"))
        .network()
        .unwrap_err();
    assert!(matches!(upscale_err(&e), UpscaleError::Io { .. }), "{e}");
}

#[test]
fn sizes_over_the_limits_are_refused() {
    let small = RgbImage::new(12, 10);
    let lanczos = Upscaler::new("Lanczos", UpscalerKind::Lanczos, 4);
    let opts = TileOptions::default();
    for (w, h) in [(4097, 100), (100, 0), (0, 0)] {
        let e = resize_with_upscaler(&small, w, h, &lanczos, opts, &mut keep_going).unwrap_err();
        assert!(matches!(upscale_err(&e), UpscaleError::Size { .. }), "{e}");
    }
    // (12 · 0.5) // 8 · 8 = 0
    let e = lanczos
        .upscale(&small, 0.5, opts, &mut keep_going)
        .unwrap_err();
    assert!(matches!(upscale_err(&e), UpscaleError::Size { .. }), "{e}");
    for s in [f64::NAN, -1.0, 0.0, f64::INFINITY] {
        let e = lanczos
            .upscale(&small, s, opts, &mut keep_going)
            .unwrap_err();
        assert!(matches!(upscale_err(&e), UpscaleError::Scale(_)), "{e}");
    }
    let u = model("compact_x4.pth");
    let net = u.network().unwrap().unwrap();
    for bad in [
        TileOptions {
            tile: 16,
            overlap: 16,
        },
        TileOptions {
            tile: 8192,
            overlap: 8,
        },
    ] {
        let e = upscale_with_model(&net, &small, bad, &mut keep_going).unwrap_err();
        assert!(matches!(upscale_err(&e), UpscaleError::Tile { .. }), "{e}");
    }
    // a 4× pass past the intermediate pixel limit (4096² · 16 > 2^27)
    let huge = RgbImage::new(4096, 4096);
    let e = u.upscale(&huge, 1.0, opts, &mut keep_going).unwrap_err();
    assert!(e.to_string().contains("a pass may make at most"), "{e}");
}

#[test]
fn tiles_are_reported_and_can_interrupt() {
    let small = fixture().image("small");
    let u = model("compact_x2.safetensors");
    let opts = TileOptions {
        tile: 16,
        overlap: 4,
    };
    let mut seen = Vec::new();
    let out = u
        .upscale(&small, 5.0, opts, &mut |p| {
            seen.push((p.pass, p.done, p.total));
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(out.dimensions(), (56, 48));
    // 12×10: one tile; 24×20: 2×2 tiles; 48×40: 4 columns × 3 rows (split_grid's counts)
    let want: Vec<_> = [(0, 1), (1, 4), (2, 12)]
        .into_iter()
        .flat_map(|(pass, n)| (0..n).map(move |d| (pass, d, n)))
        .collect();
    assert_eq!(seen, want);
    // interrupted, the pass hands back its input as A1111's (tests/upscale_interrupt.rs)
    let out = u
        .upscale(&small, 5.0, opts, &mut |p| {
            if (p.pass, p.done) == (1, 2) {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(out.dimensions(), (56, 48));
}

#[test]
fn the_registry_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>(_: &T) {}
    let r = UpscalerRegistry::scan(&[dir()]).unwrap();
    shared(&r);
    // the fixtures folder: the three built-ins, the nine model files and the two tensor files
    // of the fixtures, listed by stem without being read
    assert_eq!(r.entries().len(), 14, "{:?}", r.names());
    let e = r.get("io").unwrap().network().unwrap_err();
    assert!(
        matches!(upscale_err(&e), UpscaleError::Architecture { .. }),
        "{e}"
    );
    let u = r.get("compact_x2").unwrap();
    let a = u.network().unwrap().unwrap();
    let b = std::thread::scope(|s| s.spawn(|| u.network().unwrap().unwrap()).join().unwrap());
    assert!(std::sync::Arc::ptr_eq(&a, &b), "the network is built once");
}
