//! DAT files through the pipeline's upscaler, as A1111 v1.10.1's DAT upscaler runs them
//! (`modules/dat_model.py`): read from `.pth` (f16 weights, integer buffers) and
//! `.safetensors`, detected, and run in `upscaler_utils.upscale_with_model`'s Pillow grid with
//! `DAT_tile` / `DAT_tile_overlap` through spandrel's descriptor (padding to 16, clamp); against
//! that restated over spandrel (tools/reference/make_dat_fixtures.py, fixtures/dat/): small
//! tiles on a 40×30 picture and untiled.

use std::ops::ControlFlow;

use image::RgbImage;
use sumi_pipeline::upscale::{
    upscale_with_model, TileOptions, Upscaler, UpscalerTiles, DAT_TILE, DAT_TILE_OVERLAP,
};
use sumi_testkit::fixture::{read_json, tensors};

mod common;

fn image(t: &candle_core::Tensor) -> RgbImage {
    let (h, w, _) = t.dims3().unwrap();
    let v = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    RgbImage::from_raw(w as u32, h as u32, v).unwrap()
}

#[test]
fn dat_tiles_as_a1111_upscale_with_model() {
    assert_eq!(
        (DAT_TILE, DAT_TILE_OVERLAP),
        (192, 8),
        "A1111's DAT_tile defaults"
    );
    let dir = common::root().join("dat");
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
        let opts = TileOptions {
            tile: c["tile"].as_u64().unwrap() as u32,
            overlap: c["overlap"].as_u64().unwrap() as u32,
        };
        let mut tiles = 0;
        let out = upscale_with_model(&net, &input, opts, &mut |_| {
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

#[test]
fn dat_upscaler_uses_dat_tiles_not_esrgan_ones() {
    // Upscaler.upscale by 2: the pass in DAT_tile/DAT_tile_overlap tiles (192/8) whatever
    // ESRGAN tiles are asked for (16/4 here), then the Lanczos resize to 80x56
    let dir = common::root().join("dat");
    let doc = read_json(&dir.join("cases.json")).unwrap();
    let c = &doc["upscale"];
    let io = tensors(&dir.join("io.safetensors")).unwrap();
    let input = image(&io["tiled/input"]);
    let up = Upscaler::from_file(&dir.join(c["file"].as_str().unwrap()));
    let esrgan = UpscalerTiles {
        esrgan: TileOptions {
            tile: 16,
            overlap: 4,
        },
        ..Default::default()
    };
    let mut tiles = 0;
    let out = up
        .upscale(&input, c["scale"].as_f64().unwrap(), esrgan, &mut |_| {
            tiles += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
    let want = image(&io[c["output"].as_str().unwrap()]);
    assert_eq!(out.dimensions(), want.dimensions());
    assert_eq!(c["passes"].as_u64(), Some(1));
    let (most, n) = out
        .as_raw()
        .iter()
        .zip(want.as_raw())
        .fold((0u8, 0usize), |(m, n), (a, b)| {
            (m.max(a.abs_diff(*b)), n + usize::from(a != b))
        });
    println!("Upscaler.upscale x2: {tiles} tiles, {n} values differ, by at most {most}");
    assert_eq!(tiles, 1, "one 192 px tile for a 40x30 picture");
    assert!(most <= 1, "{most} levels");
}
