//! The networks against PyTorch (diffusers/transformers) on the tiny fixture models: every
//! architecture, both checkpoint layouts, f16 and f32 storage, f32 compute.
//! Fixtures: tools/reference/make_tiny_models.py.

use candle_core::{DType, Device, Tensor};
use sumi_models::{ClipConfig, ClipTextModel, UNet, UNetConfig, Vae, VaeConfig};
use sumi_testkit::{materialize, tiny_fixture, Storage};
use sumi_weights::{detect, Weights};

const TOL: f64 = 1e-4;

fn reference(arch: &str) -> std::collections::HashMap<String, Tensor> {
    sumi_testkit::fixture::tensors(&tiny_fixture(arch).join("reference.safetensors")).unwrap()
}

/// max |a - b| / max(1, max |b|)
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    sumi_testkit::rel_err_floor(a, b, 1.0)
}

fn shapes<'a>(w: &'a Weights, prefix: &'a str) -> impl Fn(&str) -> Option<Vec<usize>> + 'a {
    move |n: &str| w.shape(&format!("{prefix}{n}")).map(|s| s.to_vec())
}

fn check(arch: &str) {
    let r = reference(arch);
    let dev = Device::Cpu;
    for storage in [Storage::F16, Storage::F32] {
        let dir = tempfile::tempdir().unwrap();
        materialize(&tiny_fixture(arch), dir.path(), storage).unwrap();
        for path in [
            dir.path().join(format!("tiny_{arch}.safetensors")),
            dir.path().join("diffusers"),
        ] {
            let what = format!(
                "{arch} {storage} {}",
                path.file_name().unwrap().to_string_lossy()
            );
            let w = Weights::open(&path).unwrap();
            let facts = detect(&w, None).unwrap();
            let vb = w.var_builder(DType::F32, &dev);

            let ccfg = ClipConfig::infer(&shapes(&w, "text_encoder."), facts.clip_gelu).unwrap();
            let clip = ClipTextModel::new(vb.pp("text_encoder"), ccfg).unwrap();
            let ids = &r["clip_input_ids"];
            let e1 = rel_err(&clip.forward(ids, 1).unwrap(), &r["clip_last"]);
            let e2 = rel_err(&clip.forward(ids, 2).unwrap(), &r["clip_penultimate"]);
            assert!(
                e1 < TOL && e2 < TOL,
                "{what}: CLIP last {e1:e}, penultimate {e2:e}"
            );

            let vcfg = VaeConfig::infer(&shapes(&w, "vae.")).unwrap();
            let vae = Vae::new(vb.pp("vae"), vcfg).unwrap();
            let (mean, logvar) = vae.encode_moments(&r["vae_image"]).unwrap();
            let (em, el) = (
                rel_err(&mean, &r["vae_mean"]),
                rel_err(&logvar, &r["vae_logvar"]),
            );
            assert!(em < TOL && el < TOL, "{what}: VAE moments {em:e} {el:e}");
            let dec = vae.decode_unscaled(&r["vae_z"]).unwrap();
            let ed = rel_err(&dec, &r["vae_decoded"]);
            assert!(ed < TOL, "{what}: VAE decode {ed:e}");
            let ucfg =
                UNetConfig::infer(&shapes(&w, "unet."), &|c, l| facts.unet_heads.heads(c, l))
                    .unwrap();
            let unet = UNet::new(vb.pp("unet"), ucfg).unwrap();
            let score = unet.a1111_v_score().unwrap();
            let want = r["a1111_v_test"].to_vec1::<f32>().unwrap()[0];
            assert!(
                (score - want).abs() < 1e-4,
                "{what}: A1111 v-test {score} vs {want}"
            );
            let mut worst = 0f64;
            for i in 0..3 {
                let out = unet
                    .forward(
                        &r[&format!("unet{i}_x")],
                        &r[&format!("unet{i}_t")],
                        &r[&format!("unet{i}_context")],
                    )
                    .unwrap();
                let e = rel_err(&out, &r[&format!("unet{i}_out")]);
                assert!(e < TOL, "{what}: U-Net case {i}: {e:e}");
                worst = worst.max(e);
            }

            println!(
                "{what}: CLIP {e1:.1e}/{e2:.1e} VAE {em:.1e}/{el:.1e}/{ed:.1e} U-Net {worst:.1e}"
            );
        }
    }
}

#[test]
fn sd1() {
    check("sd1");
}

#[test]
fn sd1_inpaint() {
    check("sd1-inpaint");
}

#[test]
fn sd2() {
    check("sd2");
}

#[test]
fn sd2_v() {
    check("sd2-v");
}
