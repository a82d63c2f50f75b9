//! Interrupting a model upscale as A1111 does (`upscaler_utils.upscale_with_model` returns the
//! pass's input once `state.interrupted`; `Upscaler.upscale` then stops its passes and resizes
//! with Lanczos), on the upscaler fixtures of tools/reference/make_upscaler_fixtures.py.

use std::ops::ControlFlow;

use sumi_pipeline::image::resize_lanczos;
use sumi_pipeline::upscale::{keep_going, upscale_with_model, TileOptions, Upscaler};

mod common;
use common::ImageFixture;

#[test]
fn an_interrupted_pass_hands_back_its_input_then_lanczos() {
    let small = ImageFixture::open("upscalers").image("small");
    let u = Upscaler::from_file(&common::root().join("upscalers/compact_x2.safetensors"));
    let opts = TileOptions {
        tile: 16,
        overlap: 4,
    };
    // 12×10 by 5×: passes 24×20, 48×40, 96×80, then Lanczos to 56×48; interrupted at the
    // second pass's third tile, the first pass's 24×20 picture is resized to 56×48
    let mut seen = Vec::new();
    let mut on_tile = |p: sumi_pipeline::upscale::TileProgress| {
        seen.push((p.pass, p.done));
        if (p.pass, p.done) == (1, 2) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let got = u.upscale(&small, 5.0, opts, &mut on_tile).unwrap();
    let net = u.network().unwrap().unwrap();
    let first = upscale_with_model(&net, &small, opts, &mut keep_going).unwrap();
    assert_eq!(first.dimensions(), (24, 20));
    assert_eq!(got, resize_lanczos(&first, 56, 48).unwrap());
    // one tile of the first pass (12×10 in 16-pixel tiles), then three of the second
    assert_eq!(seen, [(0, 0), (1, 0), (1, 1), (1, 2)]);
    // the tile-level function itself reports the interrupt
    let e = upscale_with_model(&net, &small, opts, &mut |_| ControlFlow::Break(())).unwrap_err();
    assert!(e.to_string().contains("interrupted"), "{e}");
}
