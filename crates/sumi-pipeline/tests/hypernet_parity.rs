//! Hypernetworks against A1111 v1.10.1's restated in Python (`tools/reference/hypernet_ref.py`,
//! fixtures by `tools/reference/make_hypernet_fixtures.py`): the module math of every activation
//! A1111 accepts and a chain of three within 1e-6 relative; end-to-end images on the tiny SD1 and
//! SD2-v models (one, three with a tag in the negative prompt, img2img with a negative
//! multiplier) within one pixel level; listing, unknown names, unusable files and widths warned.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::Tensor;
use sumi_models::{Hypernetwork, Hypernetworks};
use sumi_pipeline::networks::hypernet::load_hypernetwork;
use sumi_pipeline::networks::list_hypernetworks;
use sumi_pipeline::{LoadOptions, Pipeline, Request};

mod common;
use common::{root, tiny_model};

fn load(rel: &str) -> Arc<Hypernetwork> {
    let path = root().join("hypernet").join(rel);
    Arc::new(load_hypernetwork(&path).unwrap_or_else(|e| panic!("{rel}: {e}")))
}

fn check(got: &Tensor, want: &Tensor, what: &str) -> f64 {
    let e = sumi_testkit::rel_err(got, want);
    assert!(e <= 1e-6, "{what}: relative error {e:e}");
    e
}

#[test]
fn module_math_matches_a1111() {
    let doc = sumi_testkit::fixture::read_json(&root().join("hypernet/cases.json")).unwrap();
    let math = doc["math"].as_object().unwrap();
    assert_eq!(math.len(), 24, "one file per activation");
    let want = common::reference("hypernet/math/math.safetensors");
    let mut worst = 0f64;
    for stem in math.keys() {
        let h = Hypernetworks::new(vec![(load(&format!("math/{stem}.pt")), 0.7)]);
        let x = &want[&format!("{stem}/x")];
        let (k, v) = h.apply(x).unwrap().expect("width 8 has modules");
        worst = worst.max(check(&k, &want[&format!("{stem}/k")], stem));
        worst = worst.max(check(&v, &want[&format!("{stem}/v")], stem));
        // the modules did something
        assert!(sumi_testkit::max_abs_diff(&k, x) > 1e-2, "{stem}");
    }
    // three in order, each with its multiplier; width 12 only in the first
    let chain = &doc["chain"];
    let list = chain["files"]
        .as_array()
        .unwrap()
        .iter()
        .zip(chain["multipliers"].as_array().unwrap())
        .map(|(f, m)| {
            (
                load(&format!("math/{}", f.as_str().unwrap())),
                m.as_f64().unwrap(),
            )
        })
        .collect();
    let h = Hypernetworks::new(list);
    for w in [8, 12] {
        let x = &want[&format!("chain/{w}/x")];
        let (k, v) = h.apply(x).unwrap().unwrap();
        worst = worst.max(check(&k, &want[&format!("chain/{w}/k")], "chain"));
        worst = worst.max(check(&v, &want[&format!("chain/{w}/v")], "chain"));
    }
    // a width no hypernetwork has: the context as it is
    let x = Tensor::zeros(
        (1, 2, 16),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(h.apply(&x).unwrap().is_none());
    println!("module math: worst relative error {worst:e}");
}

#[test]
fn refused_activations_and_bad_files_are_named() {
    let path = root().join("hypernet/math/refused/act_softmax.pt");
    let e = load_hypernetwork(&path).err().unwrap();
    assert!(
        e.contains("unsupported activation function: softmax"),
        "{e}"
    );
    assert!(e.contains("act_softmax.pt"), "{e}");
    let path = root().join("hypernet/sd1/bad.pt");
    let e = load_hypernetwork(&path).err().unwrap();
    assert!(e.contains("bad.pt"), "{e}");
    // a real file cut short at several places: an error naming it, never a panic
    let whole = std::fs::read(root().join("hypernet/sd1/sub/hn_relu_ln.pt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.pt");
    for n in [0, 100, whole.len() / 2, whole.len() - 30] {
        std::fs::write(&cut, &whole[..n]).unwrap();
        let e = load_hypernetwork(&cut).err().unwrap();
        assert!(e.contains("cut.pt"), "{n}: {e}");
    }
}

#[test]
fn listing_as_a1111() {
    let list = list_hypernetworks(&[root().join("hypernet/sd1")]).unwrap();
    let names: Vec<&str> = list.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bad",
            "hn_default",
            "hn_old",
            "hn_swish",
            "hn_w32",
            "hn_relu_ln"
        ]
    );
    assert!(list[5].path.ends_with("sub/hn_relu_ln.pt"));
}

fn pipeline(arch: &str, dir: &std::path::Path) -> Pipeline {
    let opts = LoadOptions {
        hypernetwork_dirs: vec![root().join("hypernet/sd1")],
        ..Default::default()
    };
    Pipeline::load(&tiny_model(arch, dir), &opts).unwrap()
}

#[test]
fn images_match_a1111() {
    let e2e = common::E2e::open("hypernet", 4);
    let dir = tempfile::tempdir().unwrap();
    let mut pipes: HashMap<String, Pipeline> = HashMap::new();
    for c in &e2e.cases {
        let name = c["name"].as_str().unwrap();
        let arch = c["arch"].as_str().unwrap();
        let pipe = pipes
            .entry(arch.to_string())
            .or_insert_with(|| pipeline(arch, dir.path()));
        let (req, out, warnings) = e2e.render(pipe, c);
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
        let (d, pd) = common::check_images(&e2e.reference, name, &out);
        assert!(pd.is_some(), "{name}: the fixture has no pixels");
        println!("{name}: latents max |diff| {d:.2e}, pixels max diff {pd:?}");
        // A1111 writes no hypernetwork key: the tag stays in the prompt
        let info = pipe.infotext(&req, &out[0]).unwrap().to_string();
        assert!(info.starts_with(&req.prompt), "{name}: {info}");
        assert!(!info.contains("Hypernet"), "{name}: {info}");
    }
}

#[test]
fn unknown_unusable_and_unmatched_are_warned_and_the_image_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = pipeline("sd1", dir.path());
    let plain = Request {
        prompt: "a photograph of an astronaut riding a horse".into(),
        seed: 5,
        steps: 3,
        width: 64,
        height: 64,
        ..Default::default()
    };
    let go = &mut |_: &sumi_pipeline::Progress<'_>| std::ops::ControlFlow::Continue(());
    let (base, w) = pipe.generate(&plain, go).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let asked = Request {
        prompt: format!(
            "{} <hypernet:nope:1> <hypernet:bad> <hypernet:hn_w32:2>",
            plain.prompt
        ),
        ..plain.clone()
    };
    let (out, warnings) = pipe.generate(&asked, go).unwrap();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[0].contains("<hypernet:nope:1>") && warnings[0].contains("not found"));
    assert!(
        warnings[1].starts_with("Error loading hypernetwork") && warnings[1].contains("bad.pt")
    );
    assert!(warnings[2].contains("hn_w32") && warnings[2].contains("[32]"));
    // none of them changes anything
    assert_eq!(out[0].image.as_raw(), base[0].image.as_raw());
    // one that applies does; the next job without it is as before
    let with = Request {
        prompt: format!("{} <hypernet:hn_default>", plain.prompt),
        ..plain.clone()
    };
    let changed = pipe.generate(&with, go).unwrap().0;
    assert_ne!(changed[0].image.as_raw(), base[0].image.as_raw());
    let after = pipe.generate(&plain, go).unwrap().0;
    assert_eq!(after[0].image.as_raw(), base[0].image.as_raw());
}

/// The hires fix's second pass runs with the hires prompt's hypernetworks (A1111 activates
/// `hr_extra_network_data` before it), the first pass with the prompt's.
#[test]
fn the_hires_pass_uses_the_hires_prompts_hypernetworks() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = pipeline("sd1", dir.path());
    let go = &mut |_: &sumi_pipeline::Progress<'_>| std::ops::ControlFlow::Continue(());
    let base = "a photograph of an astronaut riding a horse";
    let job = |prompt: &str, hr_prompt: &str| Request {
        prompt: prompt.into(),
        seed: 3,
        steps: 2,
        width: 64,
        height: 64,
        hires: Some(sumi_pipeline::Hires {
            scale: 1.5,
            prompt: hr_prompt.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let tagged = format!("{base}<hypernet:hn_swish:1.5>");
    let mut image = |req: &Request| {
        let (out, warnings) = pipe.generate(req, go).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        out[0].image.as_raw().clone()
    };
    let both = image(&job(&tagged, ""));
    let none = image(&job(base, ""));
    let first_only = image(&job(&tagged, base));
    let second_only = image(&job(base, &tagged));
    // every combination makes its own picture, and the same tags in both give the same
    let all = [&both, &none, &first_only, &second_only];
    for i in 0..4 {
        for j in i + 1..4 {
            assert_ne!(all[i], all[j], "{i} {j}");
        }
    }
    assert_eq!(image(&job(&tagged, &tagged)), both);
}
