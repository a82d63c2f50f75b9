//! A1111's three tiling settings (`ESRGAN_tile`, `SWIN_tile`, `DAT_tile` and their overlaps),
//! each read by its family only, as A1111 v1.10.1's upscaler classes read them: the tiles a
//! 40×30 picture is cut into for `Upscaler.upscale` by 2 (the pass then Lanczos to 80×56),
//! pinned for each family and setting; the picture equal to that pass in those tiles (whose
//! agreement with A1111's tilings restated over spandrel `upscale.rs`, `upscale_swinir.rs`
//! and `upscale_dat.rs` test); bad settings refused, naming the setting.

use std::ops::ControlFlow;
use std::path::PathBuf;

use image::RgbImage;
use sumi_pipeline::image::resize_lanczos;
use sumi_pipeline::upscale::{
    upscale_weighted, upscale_with_model, TileOptions, UpscaleError, Upscaler, UpscalerTiles,
};
use sumi_pipeline::PipelineError;
use sumi_testkit::fixture::tensors;

mod common;

/// The 40×30 picture of the SwinIR fixtures (tools/reference/make_swinir_fixtures.py).
fn input() -> RgbImage {
    let io = tensors(&common::root().join("swinir/io.safetensors")).unwrap();
    let t = &io["tiled/input"];
    let (h, w, _) = t.dims3().unwrap();
    let v = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    assert!(!v.is_empty());
    RgbImage::from_raw(w as u32, h as u32, v).unwrap()
}

/// A 2× file of each family: SRVGGNetCompact (`ESRGAN_tile`), SwinIR, DAT.
fn files() -> [(&'static str, PathBuf); 3] {
    let root = common::root();
    [
        ("esrgan", root.join("upscalers/compact_x2.safetensors")),
        ("swin", root.join("swinir/swinir_pixelshuffle_x2.pth")),
        ("dat", root.join("dat/dat_pixelshuffle_x2.pth")),
    ]
}

fn t(tile: u32, overlap: u32) -> TileOptions {
    TileOptions { tile, overlap }
}

/// `Upscaler.upscale(input, 2)` with `tiles`: the picture and the tiles run.
fn upscale(up: &Upscaler, tiles: UpscalerTiles) -> Result<(RgbImage, usize), PipelineError> {
    let mut n = 0;
    let out = up.upscale(&input(), 2.0, tiles, &mut |_| {
        n += 1;
        ControlFlow::Continue(())
    })?;
    Ok((out, n))
}

/// `tiles` with `family`'s pair set to `pair`, the others left as given.
fn with(mut tiles: UpscalerTiles, family: &str, pair: TileOptions) -> UpscalerTiles {
    match family {
        "esrgan" => tiles.esrgan = pair,
        "swin" => tiles.swin = pair,
        _ => tiles.dat = pair,
    }
    tiles
}

#[test]
fn each_family_tiles_with_its_own_setting() {
    // tiles of a 40×30 picture: Pillow's grid (ESRGAN, DAT) has 1 tile of 192 and 3×3 of 16
    // overlapping 4; upscale_2 (SwinIR) cuts min(192, 30, 40) = 30 px tiles at columns 0 and
    // 10 (2 tiles), and 16 px ones at rows 0, 12, 14 and columns 0, 12, 24 (9)
    let pinned = [
        ("esrgan", [1, 9, 1]),
        ("swin", [2, 9, 1]),
        ("dat", [1, 9, 1]),
    ];
    let src = input();
    for ((family, file), (f2, counts)) in files().into_iter().zip(pinned) {
        assert_eq!(family, f2);
        let up = Upscaler::from_file(&file);
        let net = up.network().unwrap().unwrap();
        // the other families' settings change nothing
        let others = UpscalerTiles::from(t(16, 4));
        let (default_out, n) = upscale(&up, with(others, family, TileOptions::default())).unwrap();
        assert_eq!(n, counts[0], "{family} at 192/8");
        assert_eq!(
            default_out,
            upscale(&up, UpscalerTiles::default()).unwrap().0
        );
        for (pair, count) in [(t(16, 4), counts[1]), (t(0, 0), counts[2])] {
            let tiles = with(UpscalerTiles::default(), family, pair);
            let (out, n) = upscale(&up, tiles).unwrap();
            assert_eq!(n, count, "{family} at {pair:?}");
            let pass = if family == "swin" {
                let p = (pair.tile as usize, pair.overlap as usize);
                upscale_weighted(&net, &src, p, &mut |_| ControlFlow::Continue(())).unwrap()
            } else {
                upscale_with_model(&net, &src, pair, &mut |_| ControlFlow::Continue(())).unwrap()
            };
            assert_eq!(pass.dimensions(), (80, 60));
            assert_eq!(
                out,
                resize_lanczos(&pass, 80, 56).unwrap(),
                "{family} {pair:?}"
            );
        }
    }
}

#[test]
fn bad_tiles_are_refused_naming_the_family_setting() {
    for (family, file) in files() {
        let up = Upscaler::from_file(&file);
        for pair in [t(16, 16), t(8, 40), t(5000, 8)] {
            let e = upscale(&up, with(UpscalerTiles::default(), family, pair)).unwrap_err();
            let PipelineError::Upscale(u) = &e else {
                panic!("{family} {pair:?}: {e}")
            };
            assert!(matches!(**u, UpscaleError::Tile { .. }), "{family}: {e}");
        }
        // another family's bad pair is not this one's business
        let other = if family == "dat" { "esrgan" } else { "dat" };
        upscale(&up, with(UpscalerTiles::default(), other, t(16, 16))).unwrap();
    }
    let mut tiles = UpscalerTiles::default();
    let e = tiles.set("SWIN_tile", -16).unwrap_err();
    assert_eq!(
        e.to_string(),
        "setting SWIN_tile: -16: a tile setting is 0 to 4096 pixels"
    );
}
