//! The U-Net and VAE at sizes that are not multiples of 64 pixels (600×400: latent 50×75;
//! 200×136: latent 17×25), as A1111 v1.10.1 runs them: ×2 upsampling, then the map resized to its
//! skip's size by nearest neighbour before the concatenation (`TorchHijackForUnet.cat`).
//! Fixtures: tools/reference/make_unet_sizes_fixtures.py (the tiny diffusers models run A1111's
//! way); the diffusers way is kept for one case to show the test tells the two apart.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use sumi_models::{UNet, UNetConfig, Vae, VaeConfig};
use sumi_testkit::{materialize, tiny_fixture, Storage};
use sumi_weights::{detect, Weights};

const TOL: f64 = 1e-4;

/// `16 · synth(name, [n])` (values in [-1, 1]) shaped `shape`.
fn s16(name: &str, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = sumi_testkit::synth(name, &[n])
        .iter()
        .map(|x| x.to_f32() * 16.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    sumi_testkit::rel_err_floor(a, b, 1.0)
}

fn reference(arch: &str) -> HashMap<String, Tensor> {
    let p = sumi_testkit::fixtures().join(format!("unet_sizes/{arch}.safetensors"));
    sumi_testkit::fixture::tensors(&p).unwrap()
}

fn check(arch: &str) {
    let r = reference(arch);
    let dir = tempfile::tempdir().unwrap();
    materialize(&tiny_fixture(arch), dir.path(), Storage::F32).unwrap();
    let w = Weights::open(&dir.path().join(format!("tiny_{arch}.safetensors"))).unwrap();
    let facts = detect(&w, None).unwrap();
    let vb = w.var_builder(DType::F32, &Device::Cpu);
    let shapes = |p: &'static str| {
        let w = &w;
        move |n: &str| w.shape(&format!("{p}{n}")).map(|s| s.to_vec())
    };
    let ucfg = UNetConfig::infer(&shapes("unet."), &|c, l| facts.unet_heads.heads(c, l)).unwrap();
    let unet = UNet::new(vb.pp("unet"), ucfg).unwrap();
    let ctx = s16("sizes.context", &[1, 5, 64]);
    let t = Tensor::new(&[500f32], &Device::Cpu).unwrap();
    for (case, (h, w)) in [("600x400", (50, 75)), ("200x136", (17, 25))] {
        let x = s16(&format!("sizes.x.{h}x{w}"), &[1, 4, h, w]);
        let out = unet.forward(&x, &t, &ctx).unwrap();
        let e = rel_err(&out, &r[&format!("unet_{case}")]);
        println!("{arch} {case}: U-Net vs A1111's way {e:.1e}");
        assert!(e < TOL, "{arch} {case}: {e:e}");
        if case == "200x136" {
            // the diffusers way (upsample straight to the skip's size) is far from it
            let d = rel_err(&out, &r["unet_200x136_diffusers_way"]);
            assert!(d > 1e-2, "{arch}: as far from the diffusers way as {d:e}");
        }
    }
    if arch == "sd1" {
        let vcfg = VaeConfig::infer(&shapes("vae.")).unwrap();
        let vae = Vae::new(vb.pp("vae"), vcfg).unwrap();
        let img = (s16("sizes.image", &[1, 3, 136, 200]) / 16.0).unwrap();
        let (mean, logvar) = vae.encode_moments(&img).unwrap();
        let (em, el) = (
            rel_err(&mean, &r["vae_mean"]),
            rel_err(&logvar, &r["vae_logvar"]),
        );
        let dec = vae
            .decode_unscaled(&s16("sizes.z", &[1, 4, 17, 25]))
            .unwrap();
        assert_eq!(dec.dims(), [1, 3, 136, 200]);
        let every4 = |n: u32| Tensor::arange_step(0u32, n, 4, &Device::Cpu).unwrap();
        let dec = dec
            .index_select(&every4(136), 2)
            .unwrap()
            .index_select(&every4(200), 3)
            .unwrap();
        let ed = rel_err(&dec, &r["vae_decoded_every4"]);
        println!("VAE 136x200: moments {em:.1e}/{el:.1e}, decode {ed:.1e}");
        assert!(em < TOL && el < TOL && ed < TOL, "VAE {em:e} {el:e} {ed:e}");
    }
}

#[test]
fn sd1_unet_and_vae_at_600x400_and_200x136() {
    check("sd1");
}

#[test]
fn sd2_unet_at_600x400_and_200x136() {
    check("sd2");
}
