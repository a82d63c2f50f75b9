//! SwinIR files through the pipeline's upscaler, as A1111 v1.10.1's SwinIR upscaler runs them:
//! read from `.pth` (f16 weights, integer buffers) and `.safetensors`, detected, and run in
//! `upscaler_utils.upscale_2`'s averaged tiles; against that tiling restated over spandrel
//! (tools/reference/make_swinir_fixtures.py, fixtures/swinir/): within one pixel level, with
//! small tiles on a 40×30 picture and untiled.

use std::ops::ControlFlow;

use image::RgbImage;
use sumi_pipeline::upscale::{upscale_weighted, Upscaler};
use sumi_testkit::fixture::{read_json, tensors};

mod common;

fn image(t: &candle_core::Tensor) -> RgbImage {
    let (h, w, _) = t.dims3().unwrap();
    let v = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    RgbImage::from_raw(w as u32, h as u32, v).unwrap()
}

#[test]
fn swinir_tiles_as_a1111_upscale_2() {
    let dir = common::root().join("swinir");
    let doc = read_json(&dir.join("cases.json")).unwrap();
    let cases = doc["tiling"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    let io = tensors(&dir.join("io.safetensors")).unwrap();
    let input = image(&io["tiled/input"]);
    for c in cases {
        let file = c["file"].as_str().unwrap();
        let net = Upscaler::from_file(&dir.join(file))
            .network()
            .unwrap()
            .unwrap();
        let opts = (
            c["tile"].as_u64().unwrap() as usize,
            c["overlap"].as_u64().unwrap() as usize,
        );
        let mut tiles = 0;
        let out = upscale_weighted(&net, &input, opts, &mut |_| {
            tiles += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        let want = image(&io[c["output"].as_str().unwrap()]);
        assert_eq!(out.dimensions(), want.dimensions(), "{file} {opts:?}");
        let (most, n) = out
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .fold((0u8, 0usize), |(m, n), (a, b)| {
                (m.max(a.abs_diff(*b)), n + usize::from(a != b))
            });
        println!("{file} {opts:?}: {tiles} tiles, {n} values differ, by at most {most}");
        assert!(most <= 1, "{file} {opts:?}: {most} levels");
    }
}
