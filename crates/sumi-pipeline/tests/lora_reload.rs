//! Switching LoRA sets loads again only the layers the sets touch (issue 15: "between jobs
//! only the layers whose LoRA set changed are re-merged"), on the tiny SD1 model with the
//! LoRA fixtures of `tools/reference/make_lora_fixtures.py`: A → B → none reloads A's layers,
//! then A's and B's, then B's, nothing is built again whole, and the pixels after `none` are a
//! fresh pipeline's bit for bit; A after B equals A on a fresh pipeline bit for bit.

use std::collections::BTreeSet;

use sumi_pipeline::networks::NetworkUpdate;
use sumi_pipeline::{LoadOptions, Pipeline, Request};

mod common;
use common::{root, tiny_model};

fn pipeline(dir: &std::path::Path) -> Pipeline {
    pipeline_for(dir, None)
}

/// The tiny SD1 pipeline, built with the LoRAs of `first` merged.
fn pipeline_for(dir: &std::path::Path, first: Option<&str>) -> Pipeline {
    let opts = LoadOptions {
        lora_dirs: vec![root().join("lora").join("sd1")],
        first_prompt: first.map(|l| request(l).prompt),
        ..Default::default()
    };
    Pipeline::load(&tiny_model("sd1", dir), &opts).unwrap()
}

fn request(loras: &str) -> Request {
    Request {
        prompt: format!("a photograph of an astronaut riding a horse{loras}"),
        seed: 5,
        steps: 3,
        width: 64,
        height: 64,
        ..Default::default()
    }
}

/// The image and latents of one job, and how its networks were brought in.
fn run(pipe: &Pipeline, loras: &str) -> (Vec<u8>, Vec<f32>, NetworkUpdate) {
    let (image, latents, _, update) = run_warned(pipe, loras);
    (image, latents, update)
}

/// [`run`] with the job's warnings.
fn run_warned(pipe: &Pipeline, loras: &str) -> (Vec<u8>, Vec<f32>, Vec<String>, NetworkUpdate) {
    let go = &mut |_: &sumi_pipeline::Progress<'_>| std::ops::ControlFlow::Continue(());
    let (out, warnings) = pipe.generate(&request(loras), go).unwrap();
    let latents = out[0].latents.flatten_all().unwrap().to_vec1().unwrap();
    let image = out[0].image.as_raw().clone();
    (image, latents, warnings, pipe.last_network_update())
}

/// The layers (canonical module prefixes) the LoRAs of `loras` change.
fn touched(pipe: &Pipeline, loras: &str) -> BTreeSet<String> {
    let (merged, _) = pipe.merged_tensors(&request(loras).prompt).unwrap();
    merged
        .iter()
        .map(|(n, _)| n.rsplit_once('.').unwrap().0.to_string())
        .collect()
}

fn reloaded(u: &NetworkUpdate) -> BTreeSet<String> {
    assert!(u.rebuilt.is_empty(), "built again whole: {:?}", u.rebuilt);
    let set: BTreeSet<String> = u.reloaded.iter().cloned().collect();
    assert_eq!(set.len(), u.reloaded.len(), "a layer reloaded twice");
    set
}

#[test]
fn a_switch_reloads_only_the_layers_the_sets_touch() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = pipeline(dir.path());
    let (a, b) = (" <lora:lora_kohya:0.7>", " <lora:locon:0.5>");
    let (ta, tb) = (touched(&pipe, a), touched(&pipe, b));
    assert!(ta.len() >= 10 && tb.len() >= 5, "{} {}", ta.len(), tb.len());
    assert!(ta.iter().any(|m| m.starts_with("text_encoder.")));
    assert!(ta.iter().any(|m| m.starts_with("unet.")));
    assert_ne!(ta, tb);

    let (plain, _, u) = run(&pipe, "");
    assert_eq!(u, NetworkUpdate::default(), "nothing to change at first");
    let (with_a, _, u) = run(&pipe, a);
    assert_eq!(reloaded(&u), ta);
    let (_, _, u) = run(&pipe, a);
    assert_eq!(
        u,
        NetworkUpdate::default(),
        "the same set again changes nothing"
    );
    let (with_b, _, u) = run(&pipe, b);
    assert_eq!(reloaded(&u), ta.union(&tb).cloned().collect());
    let (none, none_latents, u) = run(&pipe, "");
    assert_eq!(reloaded(&u), tb);
    assert_ne!(with_a, plain);
    assert_ne!(with_b, plain);
    assert_ne!(with_a, with_b);

    let fresh = pipeline(dir.path());
    let (fresh_plain, fresh_latents, _) = run(&fresh, "");
    assert_eq!(none, fresh_plain, "restore after B: pixels");
    assert_eq!(none_latents, fresh_latents, "restore after B: latents");
    assert_eq!(plain, fresh_plain);
    // A after B (B's layers restored, A's merged) is A on a fresh pipeline
    run(&pipe, b);
    let (a_after_b, _, _) = run(&pipe, a);
    let (fresh_a, _, _) = run(&fresh, a);
    assert_eq!(a_after_b, fresh_a);
    assert_eq!(a_after_b, with_a);
    // a multiplier changed re-merges that network's layers only
    let (_, _, u) = run(&pipe, " <lora:lora_kohya:0.3>");
    assert_eq!(reloaded(&u), ta);
}

#[test]
fn a_layer_that_cannot_be_reloaded_builds_the_network_again_and_restores_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = pipeline(dir.path());
    // the `norm` network changes LayerNorms, which are not reloadable layers
    let norm = " <lora:norm:1>";
    let layers = touched(&pipe, norm);
    assert!(
        layers.iter().any(|m| m.contains("norm")),
        "norm LoRA touches {layers:?}"
    );
    let (plain, _, _) = run(&pipe, "");
    let (with, _, u) = run(&pipe, norm);
    assert!(!u.rebuilt.is_empty(), "{u:?}");
    let (after, _, _) = run(&pipe, "");
    assert_ne!(with, plain);
    assert_eq!(after, plain);
}

#[test]
fn a_pipeline_built_with_the_first_jobs_loras_merges_nothing_for_it() {
    let dir = tempfile::tempdir().unwrap();
    // two networks, one failing on 4 layers (A1111's "Networks with errors"), one unknown
    let loras = " <lora:lora_kohya:0.7> <lora:glora_lycoris4:0.5> <lora:no_such_lora:1>";
    let later = pipeline(dir.path());
    let (want, want_latents, want_warnings, u) = run_warned(&later, loras);
    assert!(!u.reloaded.is_empty());
    assert!(want_warnings.iter().any(|w| w.contains("no_such_lora")));
    let errors = "Networks with errors: glora_lycoris4 (4)";
    assert!(
        want_warnings.iter().any(|w| w == errors),
        "{want_warnings:?}"
    );
    let first = pipeline_for(dir.path(), Some(loras));
    let (got, got_latents, got_warnings, u) = run_warned(&first, loras);
    assert_eq!(
        u,
        NetworkUpdate::default(),
        "built with them: nothing to merge"
    );
    assert_eq!(got, want);
    assert_eq!(got_latents, want_latents);
    assert_eq!(got_warnings, want_warnings);
    // and the restore from there is exact
    let (none, _, u) = run(&first, "");
    assert_eq!(reloaded(&u), touched(&first, loras));
    assert_eq!(none, run(&pipeline(dir.path()), "").0);
}
