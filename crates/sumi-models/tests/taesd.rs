//! TAESD with its real trained weights (`../shared/data/taesd/`) on a real photo: round-trip
//! quality, and parity with PyTorch's TAESD on the same weights (fixture from
//! tools/reference/make_taesd_fixture.py). Skips, saying why, where `../shared` is absent.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use sumi_models::{TaesdDecoder, TaesdEncoder};
use sumi_weights::Weights;

fn shared() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if p.join("taesd/taesd_decoder.safetensors").is_file() {
        Some(p)
    } else {
        eprintln!(
            "skipped: {} is absent (TAESD weights live in ../shared/data/taesd)",
            p.display()
        );
        None
    }
}

fn image(path: &std::path::Path) -> Tensor {
    let img = image::open(path).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let v: Vec<f32> = img
        .into_raw()
        .into_iter()
        .map(|b| b as f32 / 255.0)
        .collect();
    Tensor::from_vec(v, (h as usize, w as usize, 3), &Device::Cpu)
        .unwrap()
        .permute((2, 0, 1))
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

fn models(data: &std::path::Path) -> (TaesdEncoder, TaesdDecoder) {
    let enc = Weights::open_raw(&data.join("taesd/taesd_encoder.safetensors")).unwrap();
    let dec = Weights::open_raw(&data.join("taesd/taesd_decoder.safetensors")).unwrap();
    let e = TaesdEncoder::new(enc.var_builder(DType::F32, &Device::Cpu), 4).unwrap();
    let d = TaesdDecoder::new(dec.var_builder(DType::F32, &Device::Cpu), 4).unwrap();
    (e, d)
}

#[test]
fn round_trip_psnr_on_astronaut() {
    let Some(data) = shared() else { return };
    let (e, d) = models(&data);
    let x = image(&data.join("images/astronaut.png"));
    let y = d
        .forward(&e.forward(&x).unwrap())
        .unwrap()
        .clamp(0f32, 1f32)
        .unwrap();
    let mse = (x - y)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let psnr = -10.0 * (mse as f64).log10();
    println!("TAESD round trip on astronaut.png: {psnr:.2} dB");
    assert!(psnr >= 24.0, "PSNR {psnr:.2} dB");
}

#[test]
fn matches_pytorch_taesd() {
    let Some(data) = shared() else { return };
    let (e, d) = models(&data);
    let r = sumi_testkit::fixture::tensors(&sumi_testkit::fixtures().join("taesd.safetensors"))
        .unwrap();
    let lat = e.forward(&r["image"]).unwrap();
    let out = d.forward(&r["latents"]).unwrap();
    for (name, a, b) in [
        ("encoder", &lat, &r["latents"]),
        ("decoder", &out, &r["decoded"]),
    ] {
        let err = sumi_testkit::max_abs_diff(a, b);
        println!("TAESD {name}: max |Sumi - PyTorch| = {err:.2e}");
        assert!(err < 1e-3, "{name}: {err}");
    }
}
