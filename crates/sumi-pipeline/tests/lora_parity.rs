//! LoRA/LyCORIS against A1111 v1.10.1's Lora extension restated in Python
//! (`tools/reference/lora_ref.py`, fixtures by `make_lora_fixtures.py`), on the tiny SD1 and
//! SD2-v models: every merged tensor within 1e-6 relative of A1111's, exactly the tensors A1111
//! changes, its error counts; end-to-end latents within 1e-4 and pixels within one level; and
//! the restore: a job without networks after jobs with them is bit-identical to a fresh load.

use std::collections::HashMap;

use serde_json::Value;
use sumi_pipeline::{LoadOptions, Pipeline, Request};

mod common;
use common::{root, tiny_model};

/// The tiny `arch` model with the LoRA folder `fixtures/lora/<folder>`.
fn pipeline_with(arch: &str, folder: &str, dir: &std::path::Path) -> Pipeline {
    let opts = LoadOptions {
        lora_dirs: vec![root().join("lora").join(folder)],
        ..Default::default()
    };
    Pipeline::load(&tiny_model(arch, dir), &opts).unwrap()
}

/// The tiny `arch` model with its own LoRA folder.
fn pipeline(arch: &str, dir: &std::path::Path) -> Pipeline {
    pipeline_with(arch, arch, dir)
}

#[test]
fn merged_weights_match_a1111() {
    let (_, cases) = common::cases("lora/cases.json", 27);
    let expected = common::reference("lora/expected.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let mut pipes: HashMap<String, Pipeline> = HashMap::new();
    let mut worst = 0f64;
    for c in &cases {
        let arch = c["arch"].as_str().unwrap();
        let file = c["files"][0].as_str().unwrap();
        let folder = file.split('/').next().unwrap();
        let pipe = pipes
            .entry(arch.to_string())
            .or_insert_with(|| pipeline_with(arch, folder, dir.path()));
        worst = worst.max(common::lora::check_case(pipe, c, &expected).0);
    }
    println!("{} cases, worst relative error {worst:.2e}", cases.len());
}

#[test]
fn images_match_a1111_and_the_restore_is_exact() {
    let path = root().join("lora/cases.json");
    let doc = sumi_testkit::fixture::read_json(&path).unwrap();
    let cases = sumi_testkit::Cases::<Value>::from_document(&path, &doc, "/e2e")
        .and_then(|c| c.exactly(4))
        .unwrap();
    let reference = common::reference("lora/e2e.safetensors");
    let init = image::open(root().join("generate/init.png"))
        .unwrap()
        .to_rgb8();
    let dir = tempfile::tempdir().unwrap();
    let mut pipes: HashMap<String, Pipeline> = HashMap::new();
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let arch = c["arch"].as_str().unwrap();
        let pipe = pipes
            .entry(arch.to_string())
            .or_insert_with(|| pipeline(arch, dir.path()));
        let size = doc["size"].as_u64().unwrap() as u32;
        let prompts = (
            c["prompt"].as_str().unwrap(),
            c["negative_prompt"].as_str().unwrap(),
        );
        let req = common::case_request(c, size, prompts, &init);
        let (out, warnings) = pipe
            .generate(&req, &mut |_| std::ops::ControlFlow::Continue(()))
            .unwrap();
        assert!(
            !warnings.iter().any(|w| w.contains("not found")),
            "{name}: {warnings:?}"
        );
        let (d, pd) = common::check_images(&reference, name, &out);
        assert!(pd.is_some(), "{name}: the fixture has no pixels");
        println!("{name}: latents max |diff| {d:.2e}, pixels max diff {pd:?}");
        // the infotext names each network with its short hash
        let info = pipe.infotext(&req, &out[0]).unwrap().to_string();
        assert!(info.contains("Lora hashes: \""), "{name}: {info}");
    }
    // restore: after the networks, a job without them is the checkpoint's own, bit for bit
    let sd1 = pipes.get("sd1").unwrap();
    let plain = Request {
        prompt: "a photograph of an astronaut riding a horse".into(),
        seed: 5,
        steps: 3,
        width: 64,
        height: 64,
        ..Default::default()
    };
    let go = &mut |_: &sumi_pipeline::Progress<'_>| std::ops::ControlFlow::Continue(());
    let three = Request {
        prompt: format!(
            "{} <lora:lora_kohya:0.7> <lora:loha:1> <lora:locon:0.5>",
            plain.prompt
        ),
        ..plain.clone()
    };
    let with = sd1.generate(&three, go).unwrap().0;
    let after = sd1.generate(&plain, go).unwrap().0;
    let fresh = pipeline("sd1", dir.path()).generate(&plain, go).unwrap().0;
    assert_ne!(with[0].image.as_raw(), fresh[0].image.as_raw());
    assert_eq!(after[0].image.as_raw(), fresh[0].image.as_raw());
    assert_eq!(
        sumi_testkit::max_abs_diff(&after[0].latents, &fresh[0].latents),
        0.0
    );
}

#[test]
fn unknown_names_and_kinds_are_warned_and_the_image_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = pipeline("sd1", dir.path());
    let req = Request {
        prompt: "a cat <lora:nowhere:1> <hypernet:h:1> <lyco:lokr:0.5>".into(),
        negative_prompt: "<lora:lora_kohya:1>".into(),
        seed: 1,
        steps: 2,
        width: 64,
        height: 64,
        ..Default::default()
    };
    let go = &mut |_: &sumi_pipeline::Progress<'_>| std::ops::ControlFlow::Continue(());
    let (out, warnings) = pipe.generate(&req, go).unwrap();
    assert_eq!(out.len(), 1);
    assert!(
        warnings.contains(&"Lora not found: nowhere".to_string()),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("hypernetwork <hypernet:h:1>")),
        "{warnings:?}"
    );
    // the LyCORIS alias applies, the negative prompt's tag does not
    let info = pipe.infotext(&req, &out[0]).unwrap().to_string();
    assert!(info.contains("Lora hashes: \"lokr: "), "{info}");
    assert!(!info.contains("lora_kohya: "), "{info}");
    // a recorded hash that differs is named
    let pasted = Request {
        lora_hashes: Some("lokr: 000000000000".into()),
        ..req
    };
    let (_, warnings) = pipe.generate(&pasted, go).unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("Lora lokr:") && w.contains("000000000000")),
        "{warnings:?}"
    );
}

/// A network file that cannot be read (garbage, cut short) is named in a warning and the image
/// is made without it, as A1111 reports the load error and goes on; the other networks apply.
#[test]
fn a_bad_file_is_named_and_the_others_apply() {
    let dir = tempfile::tempdir().unwrap();
    let loras = dir.path().join("loras");
    std::fs::create_dir(&loras).unwrap();
    std::fs::write(
        loras.join("garbage.safetensors"),
        b"\xff\xff\xff\xff not a header",
    )
    .unwrap();
    let good = std::fs::read(root().join("lora/sd1/lora_kohya.safetensors")).unwrap();
    std::fs::write(loras.join("cut.safetensors"), &good[..good.len() / 2]).unwrap();
    std::fs::write(loras.join("lora_kohya.safetensors"), &good).unwrap();
    let opts = LoadOptions {
        lora_dirs: vec![loras.clone()],
        ..Default::default()
    };
    let pipe = Pipeline::load(&tiny_model("sd1", dir.path()), &opts).unwrap();
    let (merged, warnings) = pipe
        .merged_tensors("<lora:garbage:1> <lora:cut:1> <lora:lora_kohya:1>")
        .unwrap();
    for bad in ["garbage.safetensors", "cut.safetensors"] {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("loading network") && w.contains(bad)),
            "{bad}: {warnings:?}"
        );
    }
    let (alone, _) = pipe.merged_tensors("<lora:lora_kohya:1>").unwrap();
    assert_eq!(merged.len(), alone.len());
    assert!(!merged.is_empty());
}

/// A network's bundled embedding is used in the prompt while the network is named (A1111
/// registers it with the network): at multiplier 0 the weights are the checkpoint's, so a
/// prompt without the embedding's name gives the plain picture and one with it another.
#[test]
fn a_bundled_embedding_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = pipeline("sd1", dir.path());
    let go = &mut |_: &sumi_pipeline::Progress<'_>| std::ops::ControlFlow::Continue(());
    let mut image = |prompt: &str| {
        let req = Request {
            prompt: prompt.into(),
            seed: 3,
            steps: 2,
            width: 64,
            height: 64,
            ..Default::default()
        };
        let (out, warnings) = pipe.generate(&req, go).unwrap();
        assert!(
            !warnings.iter().any(|w| w.contains("bundled embedding")),
            "{warnings:?}"
        );
        out[0].image.clone()
    };
    assert_eq!(image("a cat <lora:lora_bundle:0>"), image("a cat"));
    assert_ne!(
        image("a tinybundle cat <lora:lora_bundle:0>"),
        image("a tinybundle cat")
    );
}
