//! SDXL networks against PyTorch (diffusers/transformers) on the tiny SDXL base, inpainting
//! and refiner models: both checkpoint layouts (SGM single file, diffusers folder), f16 and
//! f32 storage, f32 compute. Fixtures: tools/reference/make_sdxl_fixtures.py.

use candle_core::{DType, Device, Tensor};
use sumi_models::{fourier_embedding, ClipConfig, ClipTextModel, UNet, UNetConfig, Vae, VaeConfig};
use sumi_testkit::{materialize, tiny_fixture, Storage};
use sumi_weights::{detect, Family, Weights};

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

/// Each opened layout of `arch`: (description, weights).
fn layouts(arch: &str, f: &mut dyn FnMut(&str, &Weights)) {
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
            f(&what, &Weights::open(&path).unwrap());
        }
    }
}

fn check_unet(arch: &str, family: Family, inpaint: bool, adm_in: usize, depth: &[usize]) {
    let r = reference(arch);
    let dev = Device::Cpu;
    layouts(arch, &mut |what, w| {
        let facts = detect(w, None).unwrap();
        assert_eq!((facts.family, facts.inpaint), (family, inpaint), "{what}");
        let ucfg =
            UNetConfig::infer(&shapes(w, "unet."), &|c, l| facts.unet_heads.heads(c, l)).unwrap();
        assert_eq!(ucfg.adm_in, Some(adm_in), "{what}");
        assert_eq!(ucfg.depth, depth, "{what}");
        let unet = UNet::new(w.var_builder(DType::F32, &dev).pp("unet"), ucfg).unwrap();
        for i in 0..2 {
            let g = |k: &str| &r[&format!("unet{i}_{k}")];
            let out = unet
                .forward_adm(g("x"), g("t"), g("context"), g("y"))
                .unwrap();
            let e = rel_err(&out, g("out"));
            assert!(e < TOL, "{what}: U-Net case {i} {e:e}");
        }
        // SDXL's U-Net refuses to run without its ADM vector
        let e = unet
            .forward(&r["unet0_x"], &r["unet0_t"], &r["unet0_context"])
            .unwrap_err();
        assert!(e.to_string().contains("ADM vector"), "{e}");
    });
}

#[test]
fn sdxl_base_unet_vae_and_text_encoders() {
    check_unet("sdxl", Family::Sdxl, false, 128 + 6 * 32, &[0, 1, 2]);
    let r = reference("sdxl");
    let dev = Device::Cpu;
    layouts("sdxl", &mut |what, w| {
        let facts = detect(w, None).unwrap();
        let vb = w.var_builder(DType::F32, &dev);
        let lcfg = ClipConfig::infer(&shapes(w, "text_encoder."), facts.clip_gelu).unwrap();
        assert_eq!(lcfg.projection, None);
        let l = ClipTextModel::new(vb.pp("text_encoder"), lcfg).unwrap();
        let ids = &r["clip_l_input_ids"];
        let h = l.hidden_state(&l.embed_tokens(ids).unwrap(), 2).unwrap();
        let el = rel_err(&h, &r["clip_l_hidden"]);
        let gcfg = ClipConfig::infer(&shapes(w, "text_encoder_2."), true).unwrap();
        assert_eq!((gcfg.hidden, gcfg.projection), (128, Some(128)));
        let g = ClipTextModel::new(vb.pp("text_encoder_2"), gcfg).unwrap();
        let ids = &r["clip_g_input_ids"];
        let eos = ClipTextModel::eos_positions(ids).unwrap();
        assert_eq!(eos, [10, 31]);
        let (hg, pooled) = g
            .hidden_and_pooled(&g.embed_tokens(ids).unwrap(), 2, &eos)
            .unwrap();
        let (eg, ep) = (
            rel_err(&hg, &r["clip_g_penultimate"]),
            rel_err(&pooled, &r["clip_g_pooled"]),
        );
        assert!(
            el < TOL && eg < TOL && ep < TOL,
            "{what}: CLIP-L hidden {el:e}, bigG penultimate {eg:e}, pooled {ep:e}"
        );
        let vae = Vae::new(vb.pp("vae"), VaeConfig::infer(&shapes(w, "vae.")).unwrap()).unwrap();
        let ed = rel_err(
            &vae.decode_unscaled(&r["vae_z"]).unwrap(),
            &r["vae_decoded"],
        );
        assert!(ed < TOL, "{what}: VAE decode {ed:e}");
    });
}

#[test]
fn sdxl_inpainting_unet() {
    check_unet("sdxl-inpaint", Family::Sdxl, true, 128 + 6 * 32, &[0, 1, 2]);
}

#[test]
fn sdxl_refiner_unet() {
    check_unet(
        "sdxl-refiner",
        Family::SdxlRefiner,
        false,
        128 + 5 * 32,
        &[0, 2, 2, 0],
    );
}

/// The ADM vector: the pooled embedding then the Fourier embeddings of the size conditions,
/// as diffusers' `add_time_proj` builds it.
#[test]
fn adm_vector_matches_diffusers() {
    for (arch, n) in [("sdxl", 6), ("sdxl-refiner", 5)] {
        let r = reference(arch);
        for i in 0..2 {
            let ids = &r[&format!("unet{i}_time_ids")];
            assert_eq!(ids.dims2().unwrap(), (2, n));
            let f = fourier_embedding(ids, 32).unwrap();
            let y = Tensor::cat(&[&r[&format!("unet{i}_pooled")], &f], 1).unwrap();
            let e = rel_err(&y, &r[&format!("unet{i}_y")]);
            assert!(e < 1e-6, "{arch} case {i}: {e:e}");
        }
    }
    let odd = fourier_embedding(&Tensor::zeros((1, 2), DType::F32, &Device::Cpu).unwrap(), 7);
    assert!(odd.is_err());
}

/// Hands out every tensor as a broadcast zero (no memory) and counts what was asked.
struct Counting(std::sync::Arc<std::sync::Mutex<(usize, usize)>>);

impl candle_nn::var_builder::SimpleBackend for Counting {
    fn get(
        &self,
        s: candle_core::Shape,
        _name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut c = self.0.lock().unwrap();
        c.0 += 1;
        c.1 += s.elem_count();
        Tensor::zeros(1, dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("unexpected unchecked get of {name}")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// The full-size SDXL U-Net (`UNetConfig::sdxl`, 9 input channels for inpainting) asks for
/// exactly diffusers' tensors: 1680 of them, 2,567,463,684 parameters (2,567,478,084 for
/// inpainting), counted by diffusers on the meta device; built without weights in memory.
#[test]
fn full_size_sdxl_unet_has_diffusers_parameter_count() {
    for (in_ch, params) in [(4, 2_567_463_684usize), (9, 2_567_478_084)] {
        let count = std::sync::Arc::new(std::sync::Mutex::new((0, 0)));
        let vb = candle_nn::VarBuilder::from_backend(
            Box::new(Counting(count.clone())),
            DType::F32,
            Device::Cpu,
        );
        let cfg = UNetConfig {
            in_channels: in_ch,
            ..UNetConfig::sdxl()
        };
        UNet::new(vb, cfg).unwrap();
        assert_eq!(*count.lock().unwrap(), (1680, params));
    }
}
