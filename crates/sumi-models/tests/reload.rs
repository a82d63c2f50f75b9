//! Layers loaded again in place ([`sumi_models::nn::Reload`]) on the tiny fixture models
//! (`tools/reference/make_tiny_models.py` manifests, materialised by sumi-testkit): the U-Net's
//! and the text encoder's reloadable layers cover every convolution and linear weight of the
//! checkpoint, each named as the checkpoint names it; loading every layer through a patch
//! changes the outputs, and loading them again without it gives outputs bit-identical to a
//! fresh build, in f32 and in bf16.

use std::collections::BTreeSet;

use candle_core::{Device, Tensor};
use sumi_models::{ClipConfig, ClipTextModel, Precision, UNet, UNetConfig};
use sumi_testkit::{max_abs_diff, tiny_fixture, tiny_model};
use sumi_weights::{detect, TensorPatch, Weights};

fn shapes<'a>(w: &'a Weights, prefix: &'a str) -> impl Fn(&str) -> Option<Vec<usize>> + 'a {
    move |n: &str| w.shape(&format!("{prefix}{n}")).map(|s| s.to_vec())
}

/// Every convolution and linear weight doubled (all of them reloadable layers', so a fresh
/// build through the patch equals every layer loaded again through it).
struct Double;

impl TensorPatch for Double {
    fn touches(&self, _: &str) -> bool {
        true
    }

    fn patch(&self, _: &str, original: Tensor) -> candle_core::Result<Tensor> {
        match original.rank() {
            0 | 1 => Ok(original),
            _ => original.affine(2.0, 0.0),
        }
    }
}

/// The modules under `prefix` with a weight of rank 2 or more (convolutions, linear layers),
/// the embeddings left out.
fn weighted_modules(w: &Weights, prefix: &str) -> BTreeSet<String> {
    w.names()
        .filter(|n| n.starts_with(prefix) && !n.contains("embeddings."))
        .filter(|n| w.shape(n).is_some_and(|s| s.len() >= 2))
        .filter_map(|n| n.strip_suffix(".weight").map(str::to_string))
        .collect()
}

fn check(arch: &str, precision: Precision) {
    let dev = Device::Cpu;
    let r =
        sumi_testkit::fixture::tensors(&tiny_fixture(arch).join("reference.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = Weights::open(&tiny_model(arch, dir.path())).unwrap();
    let facts = detect(&w, None).unwrap();
    let ucfg =
        UNetConfig::infer(&shapes(&w, "unet."), &|c, l| facts.unet_heads.heads(c, l)).unwrap();
    let ccfg = ClipConfig::infer(&shapes(&w, "text_encoder."), facts.clip_gelu).unwrap();
    let dtype = precision.weight_dtype();
    let vb = |patch: Option<&'static dyn TensorPatch>| w.var_builder_patched(dtype, &dev, patch);
    let unet = || UNet::new(vb(None).pp("unet"), ucfg.clone()).unwrap();
    let clip = || ClipTextModel::new(vb(None).pp("text_encoder"), ccfg.clone()).unwrap();
    let (x, t, ctx) = (&r["unet0_x"], &r["unet0_t"], &r["unet0_context"]);
    let ids = &r["clip_input_ids"];

    let mut u = unet();
    let mut c = clip();
    let fresh_u = u.forward(x, t, ctx).unwrap();
    let fresh_c = c.forward(ids, 1).unwrap();
    for (names, prefix, min) in [
        (name_set(u.layers_mut()), "unet.", 50),
        (name_set(c.layers_mut()), "text_encoder.", 6),
    ] {
        assert!(
            names.len() >= min,
            "{arch}: {prefix}: {} layers",
            names.len()
        );
        for n in &names {
            assert!(w.contains(&format!("{n}.weight")), "{arch}: {n}");
        }
        let missing: Vec<_> = weighted_modules(&w, prefix)
            .difference(&names)
            .cloned()
            .collect();
        assert!(missing.is_empty(), "{arch}: not reloadable: {missing:?}");
    }

    let reload_all = |u: &mut UNet, c: &mut ClipTextModel, patch| {
        let vb = vb(patch);
        for l in u.layers_mut().into_iter().chain(c.layers_mut()) {
            l.reload(&vb).unwrap();
        }
    };
    reload_all(&mut u, &mut c, Some(&Double));
    let du = max_abs_diff(&u.forward(x, t, ctx).unwrap(), &fresh_u);
    let dc = max_abs_diff(&c.forward(ids, 1).unwrap(), &fresh_c);
    assert!(du > 1e-3 && dc > 1e-3, "{arch}: patched {du:e} {dc:e}");
    reload_all(&mut u, &mut c, None);
    assert_eq!(max_abs_diff(&u.forward(x, t, ctx).unwrap(), &fresh_u), 0.0);
    assert_eq!(max_abs_diff(&c.forward(ids, 1).unwrap(), &fresh_c), 0.0);
    // and a fresh build from the patched weights equals the layers patched in place
    reload_all(&mut u, &mut c, Some(&Double));
    let patched = UNet::new(vb(Some(&Double)).pp("unet"), ucfg.clone()).unwrap();
    let a = patched.forward(x, t, ctx).unwrap();
    assert_eq!(max_abs_diff(&u.forward(x, t, ctx).unwrap(), &a), 0.0);
}

fn name_set(layers: Vec<&mut dyn sumi_models::nn::Reload>) -> BTreeSet<String> {
    let n = layers.len();
    let set: BTreeSet<String> = layers.iter().map(|l| l.name().to_string()).collect();
    assert_eq!(set.len(), n, "a layer is listed twice");
    set
}

#[test]
fn sd1_f32() {
    check("sd1", Precision::F32);
}

#[test]
fn sd1_bf16() {
    check("sd1", Precision::Bf16);
}

#[test]
fn sd2_v_f32() {
    check("sd2-v", Precision::F32);
}

#[test]
fn sd1_inpaint_bf16() {
    check("sd1-inpaint", Precision::Bf16);
}
