//! Hypernetworks on SDXL against A1111 v1.10.1 restated on the tiny SDXL base
//! (`tools/reference/make_sdxl_hypernet_fixtures.py`, fixtures/hypernet/sdxl/): A1111 picks a
//! hypernetwork's modules by the context width of each attention, on SDXL the text context
//! (CLIP-L ⊕ bigG, 192 on the tiny model) and the blocks' own widths in self-attention (64,
//! 128). A file with modules for all of them, one for the text context only beside an SD1 file
//! whose modules meet the self-attention only (applied as A1111 applies it, and warned), and a
//! negative multiplier in img2img: final latents within 1e-4 of max(1, max |reference|),
//! pixels within one level. A file with none of SDXL's widths changes nothing and is warned.

use std::ops::ControlFlow;

use sumi_pipeline::{LoadOptions, Pipeline, Request};

mod common;
use common::{root, tiny_model};

/// The tiny SDXL base with the SDXL and the SD1 hypernetwork fixture folders.
fn sdxl(dir: &std::path::Path) -> Pipeline {
    let opts = LoadOptions {
        hypernetwork_dirs: vec![
            root().join("hypernet/sdxl/nets"),
            root().join("hypernet/sd1"),
        ],
        ..Default::default()
    };
    Pipeline::load(&tiny_model("sdxl", dir), &opts).unwrap()
}

#[test]
fn images_match_a1111() {
    let e2e = common::E2e::open("hypernet/sdxl", 3);
    let dir = tempfile::tempdir().unwrap();
    let pipe = sdxl(dir.path());
    for c in &e2e.cases {
        let name = c["name"].as_str().unwrap();
        // the hypernetworks change the reference picture: the comparison can fail
        let change = c["image_mean_abs_change_vs_none"].as_f64().unwrap();
        assert!(change > 1.0, "{name}: the fixture's change {change}");
        let (_, out, warnings) = e2e.render(&pipe, c);
        let warned: Vec<&str> = c["warned"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        assert_eq!(warnings.len(), warned.len(), "{name}: {warnings:?}");
        for (w, hn) in warnings.iter().zip(&warned) {
            assert!(
                w.contains(&format!(
                    "hypernetwork {hn} has no modules for this model's text context width 192"
                )) && w.contains("only its modules for [64] apply, on the self-attention"),
                "{name}: {w}"
            );
        }
        let (d, pd) = common::check_images(&e2e.reference, name, &out);
        assert!(pd.is_some(), "{name}: the fixture has no pixels");
        println!("{name}: latents max |diff| {d:.2e}, pixels max diff {pd:?}");
    }
}

/// The picture and the warnings of a small job with `prompt`.
fn picture(pipe: &Pipeline, prompt: &str) -> (Vec<u8>, Vec<String>) {
    let req = Request {
        prompt: prompt.into(),
        seed: 3,
        steps: 2,
        width: 64,
        height: 64,
        ..Default::default()
    };
    let (out, warnings) = pipe
        .generate(&req, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    (out[0].image.as_raw().clone(), warnings)
}

#[test]
fn a_hypernetwork_without_sdxl_widths_changes_nothing_and_is_warned() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = sdxl(dir.path());
    let (base, w) = picture(&pipe, "a cat on a hill");
    assert!(w.is_empty(), "{w:?}");
    let (out, warnings) = picture(&pipe, "a cat on a hill <hypernet:hn_w32:1.5>");
    assert_eq!(
        warnings,
        [
            "hypernetwork hn_w32 has modules for context widths [32], and this model's attention \
          sees 192 (text) and [64, 128] (self-attention): it changes nothing (made for another \
          model family?)"
        ]
    );
    assert_eq!(out, base);
    // one that has SDXL's widths changes the picture; the next job without it is as before
    let (changed, w) = picture(&pipe, "a cat on a hill <hypernet:hn_xl>");
    assert!(w.is_empty(), "{w:?}");
    assert_ne!(changed, base);
    assert_eq!(picture(&pipe, "a cat on a hill").0, base);
}
