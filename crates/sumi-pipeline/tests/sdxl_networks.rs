//! LoRA on SDXL against A1111 v1.10.1's Lora extension restated in Python
//! (`tools/reference/make_sdxl_lora_fixtures.py` over `lora_ref.py`), on the tiny SDXL base:
//! kohya `lora_te1_`/`lora_te2_`/`lora_unet_` keys (SGM and diffusers spellings, bigG's
//! attention merged only with all of q, k, v and out), a LoCon, and an SD1 LoRA on SDXL;
//! every merged tensor within 1e-6 relative of A1111's, exactly the tensors A1111 changes, its
//! error counts and unmatched keys named. Then a job: bigG's merge reaches the picture, and a
//! job without networks afterwards is the checkpoint's own, bit for bit. SDXL embeddings
//! (`clip_l`/`clip_g`) through the pipeline, an SD1 embedding skipped and warned; an external
//! VAE whose name does not say SDXL warned.

use std::collections::HashMap;
use std::ops::ControlFlow;

use sumi_pipeline::{LoadOptions, Pipeline, Request};

mod common;
use common::{root, tiny_model};

/// The tiny SDXL base with the SDXL and the SD1 LoRA fixture folders.
fn sdxl(dir: &std::path::Path) -> Pipeline {
    let opts = LoadOptions {
        lora_dirs: vec![root().join("lora/sdxl"), root().join("lora/sd1")],
        ..Default::default()
    };
    Pipeline::load(&tiny_model("sdxl", dir), &opts).unwrap()
}

#[test]
fn merged_weights_match_a1111() {
    let (_, cases) = common::cases("lora/sdxl_cases.json", 4);
    let expected = common::reference("lora/sdxl_expected.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let pipe = sdxl(dir.path());
    let mut worst = 0f64;
    let mut networks = HashMap::new();
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let (e, warnings) = common::lora::check_case(&pipe, c, &expected);
        worst = worst.max(e);
        // a network A1111 fails to load is named, and nothing of it applied
        for (file, why) in c["load_errors"].as_object().unwrap() {
            let stem = file.rsplit('/').next().unwrap();
            assert!(
                warnings
                    .iter()
                    .any(|w| w.starts_with("loading network") && w.contains(stem)),
                "{name}: {file} ({why}) not named: {warnings:?}"
            );
        }
        for (file, modules) in c["modules"].as_object().unwrap() {
            networks.insert(file.clone(), modules.as_array().unwrap().len());
        }
    }
    // all three encoders' parts are exercised (te1, te2's attention, the U-Net)
    assert!(
        networks["sdxl/sdxl_kohya.safetensors"] >= 15,
        "{networks:?}"
    );
    println!("{} cases, worst relative error {worst:.2e}", cases.len());
}

/// An SD1 LoRA on SDXL: its SD1 text-encoder keys match nothing and the warning says the file
/// looks like an SD1/SD2 LoRA, naming every group of unmatched keys.
#[test]
fn an_sd1_lora_on_sdxl_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = sdxl(dir.path());
    let (_, warnings) = pipe.merged_tensors("<lora:lora_kohya:1>").unwrap();
    let unmatched = warnings
        .iter()
        .find(|w| w.contains("keys match no layer"))
        .unwrap_or_else(|| panic!("{warnings:?}"));
    assert!(unmatched.contains("lora_te_* ("), "{unmatched}");
    assert!(
        unmatched.contains("looks like a LoRA for SD1/SD2, not for SDXL"),
        "{unmatched}"
    );
}

/// An SDXL LoRA on SD1: its `lora_te2_` keys are named and the file called an SDXL LoRA.
#[test]
fn an_sdxl_lora_on_sd1_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LoadOptions {
        lora_dirs: vec![root().join("lora/sdxl")],
        ..Default::default()
    };
    let pipe = Pipeline::load(&tiny_model("sd1", dir.path()), &opts).unwrap();
    let (_, warnings) = pipe.merged_tensors("<lora:sdxl_kohya:1>").unwrap();
    let unmatched = warnings
        .iter()
        .find(|w| w.contains("keys match no layer"))
        .unwrap_or_else(|| panic!("{warnings:?}"));
    assert!(unmatched.contains("lora_te2_* ("), "{unmatched}");
    assert!(unmatched.contains("looks like an SDXL LoRA"), "{unmatched}");
}

/// A LoRA whose only non-zero part is bigG's (`sdxl_locon` at U-Net multiplier 0) changes the
/// picture: the second text encoder is merged; a job without it is the checkpoint's again.
#[test]
fn big_g_merge_reaches_the_picture_and_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = sdxl(dir.path());
    let go = &mut |_: &sumi_pipeline::Progress<'_>| ControlFlow::Continue(());
    let plain = Request {
        prompt: "a cat on a hill".into(),
        seed: 3,
        steps: 2,
        width: 64,
        height: 64,
        ..Default::default()
    };
    let with_lora = Request {
        prompt: format!("{} <lora:sdxl_locon:1:0>", plain.prompt),
        ..plain.clone()
    };
    let (before, _) = pipe.generate(&plain, go).unwrap();
    let (with, warnings) = pipe.generate(&with_lora, go).unwrap();
    assert!(
        !warnings.iter().any(|w| w.contains("not supported")),
        "{warnings:?}"
    );
    let update = pipe.last_network_update();
    assert!(
        update
            .reloaded
            .iter()
            .any(|l| l.starts_with("text_encoder_2."))
            || update.rebuilt.contains(&"text_encoder_2"),
        "{update:?}"
    );
    assert_ne!(before[0].image.as_raw(), with[0].image.as_raw());
    let (after, _) = pipe.generate(&plain, go).unwrap();
    assert_eq!(before[0].image.as_raw(), after[0].image.as_raw());
    assert_eq!(
        sumi_testkit::max_abs_diff(&before[0].latents, &after[0].latents),
        0.0
    );
}

fn image(pipe: &Pipeline, prompt: &str) -> (Vec<u8>, Vec<String>) {
    let req = Request {
        prompt: prompt.into(),
        seed: 4,
        steps: 2,
        width: 64,
        height: 64,
        ..Default::default()
    };
    let go = &mut |_: &sumi_pipeline::Progress<'_>| ControlFlow::Continue(());
    let (out, warnings) = pipe.generate(&req, go).unwrap();
    (out[0].image.as_raw().clone(), warnings)
}

/// The embeddings folder on SDXL: the `clip_l`/`clip_g` pair is loaded (A1111's shape: both
/// widths summed) and changes the picture; the one-tensor SD1-style embedding is skipped as
/// A1111 skips it, and a prompt naming it is warned.
#[test]
fn embeddings_on_sdxl() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model("sdxl", dir.path());
    let opts = LoadOptions {
        embeddings: Some(root().join("sdxl_embeddings/emb")),
        ..Default::default()
    };
    let pipe = Pipeline::load(&model, &opts).unwrap();
    let r = pipe.embedding_report();
    let loaded: Vec<(&str, usize, usize)> = r
        .loaded
        .iter()
        .map(|e| (e.name.as_str(), e.shape, e.vectors))
        .collect();
    assert_eq!(loaded, [("tinyxl", 192, 2)]);
    assert_eq!(r.skipped.len(), 1, "{r:?}");
    assert_eq!(r.skipped[0].embedding.name, "tinysd");
    assert!(r.skipped[0].reason.contains("A1111 skips it"), "{r:?}");
    let plain = Pipeline::load(&model, &LoadOptions::default()).unwrap();
    let (with, warnings) = image(&pipe, "a photo of tinyxl");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_ne!(with, image(&plain, "a photo of tinyxl").0);
    let (_, warnings) = image(&pipe, "a tinysd dog");
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("embedding tinysd: not used")),
        "{warnings:?}"
    );
}

/// An external VAE on SDXL whose name does not say SDXL is warned (an SD1/SD2 VAE has the same
/// tensors and nothing in the file tells); one named for SDXL is not.
#[test]
fn a_vae_not_named_for_sdxl_is_warned() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model("sdxl", dir.path());
    for (name, warned) in [
        ("vae-ft-mse-840000-ema-pruned.safetensors", true),
        ("sdxl_vae.safetensors", false),
    ] {
        let vae = dir.path().join(name);
        std::fs::copy(&model, &vae).unwrap();
        let opts = LoadOptions {
            vae: Some(vae),
            ..Default::default()
        };
        let pipe = Pipeline::load(&model, &opts).unwrap();
        let (_, warnings) = image(&pipe, "a cat");
        let said = warnings
            .iter()
            .any(|w| w.starts_with("vae: ") && w.contains("does not say SDXL"));
        assert_eq!(said, warned, "{name}: {warnings:?}");
    }
}
