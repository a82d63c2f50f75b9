//! The bf16 path on the full-size random SD1.5 (`tools/bench/work/sd15/sd15_random.safetensors`,
//! written by tools/reference/make_full_sd15.py; 2.1 GB, so not a fixture). Ignored by default:
//! `cargo test --release -p sumi-models --test full_size_bf16 -- --ignored --nocapture`.
//! Prints bf16-vs-f32 differences and single-run timings of both paths.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use sumi_models::{Precision, UNet, UNetConfig, Vae, VaeConfig};
use sumi_testkit::rel_err as rel;
use sumi_weights::{detect, Weights};

fn checkpoint() -> Option<Weights> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/bench/work/sd15/sd15_random.safetensors");
    if !p.exists() {
        println!("skipped: {} missing", p.display());
        return None;
    }
    Some(Weights::open(&p).unwrap())
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    println!("{what}: {:.2} s", t.elapsed().as_secs_f64());
    r
}

#[test]
#[ignore]
fn unet_bf16_vs_f32() {
    let Some(w) = checkpoint() else { return };
    let facts = detect(&w, None).unwrap();
    let shapes = |n: &str| w.shape(&format!("unet.{n}")).map(<[usize]>::to_vec);
    let cfg = UNetConfig::infer(&shapes, &|c, l| facts.unet_heads.heads(c, l)).unwrap();
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 4, 64, 64), &dev).unwrap();
    let t = Tensor::new(&[500f32, 500.0], &dev).unwrap();
    let ctx = Tensor::randn(0f32, 1.0, (2, 77, 768), &dev).unwrap();
    let mut outs = Vec::new();
    let only_bf16 = std::env::var("SUMI_ONLY_BF16").is_ok();
    for p in [Precision::F32, Precision::Bf16] {
        if only_bf16 && p == Precision::F32 {
            continue;
        }
        let vb = w.var_builder(p.weight_dtype(), &dev);
        let unet = timed(&format!("U-Net {p} load"), || {
            UNet::new(vb.pp("unet"), cfg.clone()).unwrap()
        });
        let mut out = None;
        for i in 0..2 {
            out = Some(timed(&format!("U-Net {p} forward {i}"), || {
                unet.forward(&x, &t, &ctx).unwrap()
            }));
        }
        outs.extend(out);
    }
    if only_bf16 {
        return;
    }
    let e = rel(&outs[1], &outs[0]);
    println!("U-Net bf16 vs f32: {e:.3e}");
    assert!(e < 2e-2, "U-Net bf16 vs f32 {e:e}");
}

#[test]
#[ignore]
fn vae_decode_bf16_vs_f32() {
    let Some(w) = checkpoint() else { return };
    let shapes = |n: &str| w.shape(&format!("vae.{n}")).map(<[usize]>::to_vec);
    let cfg = VaeConfig::infer(&shapes).unwrap();
    let dev = Device::Cpu;
    let z = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &dev).unwrap();
    let mut outs = Vec::new();
    for p in [Precision::F32, Precision::Bf16] {
        let vae = Vae::new(w.var_builder(p.weight_dtype(), &dev).pp("vae"), cfg.clone()).unwrap();
        let mut out = None;
        for i in 0..2 {
            out = Some(timed(&format!("VAE {p} decode {i}"), || {
                vae.decode(&z).unwrap()
            }));
        }
        outs.extend(out);
    }
    assert_eq!(outs[0].dtype(), DType::F32);
    let e = rel(&outs[1], &outs[0]);
    println!("VAE decode bf16 vs f32: {e:.3e}");
    assert!(e < 2e-2, "VAE decode bf16 vs f32 {e:e}");
}
