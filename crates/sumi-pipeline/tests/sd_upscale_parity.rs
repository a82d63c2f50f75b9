//! The SD upscale script end to end against A1111 v1.10.1's `scripts/sd_upscale.py` with
//! `images.split_grid`/`combine_grid` restated over the tiny SD1 model
//! (tools/reference/make_sd_upscale_fixtures.py, fixtures/sd_upscale/): Lanczos, Nearest and
//! `None` upscales, 2×2 and 3×1 tiles, batches of 1, 2 and 3 tiles (a short last batch), two
//! iterations, CPU and NV noise, Euler, Euler a and DPM++ 2M Karras — every tile and every
//! combined picture within 1 level; `combine_grid` of the reference's own tiles exact.

use std::collections::HashMap;
use std::ops::ControlFlow;

use candle_core::Tensor;
use image::RgbImage;
use serde_json::Value;
use sumi_pipeline::sd_upscale::grid::{combine_grid, split_grid};
use sumi_pipeline::sd_upscale::{SdUpscale, SdUpscaler};
use sumi_pipeline::{LoadOptions, Pipeline, Request};

mod common;
use common::{case_request, cases, reference, root, tiny_model};

/// The cases the fixture holds.
const CASES: usize = 3;

fn source(c: &Value) -> RgbImage {
    image::open(root().join(c["source"].as_str().unwrap()))
        .unwrap()
        .to_rgb8()
}

fn settings(c: &Value) -> SdUpscale {
    SdUpscale {
        overlap: c["overlap"].as_u64().unwrap() as u32,
        upscaler: SdUpscaler::Name(c["upscaler"].as_str().unwrap().to_lowercase()),
        scale: c["scale"].as_f64().unwrap(),
    }
}

fn request(doc: &Value, c: &Value) -> Request {
    let prompts = (
        doc["prompt"].as_str().unwrap(),
        doc["negative_prompt"].as_str().unwrap(),
    );
    Request {
        batch_count: c["n_iter"].as_u64().unwrap() as u32,
        sd_upscale: Some(settings(c)),
        ..case_request(c, 128, prompts, &source(c))
    }
}

/// The `[n, h, w, 3]` uint8 pictures `key` of the reference.
fn pictures(want: &HashMap<String, Tensor>, key: &str) -> Vec<RgbImage> {
    let t = &want[key];
    let (n, h, w, _) = t.dims4().unwrap();
    let px = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    assert!(n > 0, "{key}: empty");
    px.chunks(h * w * 3)
        .map(|p| RgbImage::from_raw(w as u32, h as u32, p.to_vec()).unwrap())
        .collect()
}

fn max_level_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap()
}

#[test]
fn combine_grid_of_the_references_tiles_is_exact() {
    let (_, list) = cases("sd_upscale/cases.json", CASES);
    let want = reference("sd_upscale/reference.safetensors");
    for c in list.exactly(CASES).unwrap().into_vec() {
        let name = c["name"].as_str().unwrap();
        let s = settings(&c);
        let (w, h) = s.upscaled_size(source(&c).dimensions());
        let tile = c["width"].as_u64().unwrap() as u32;
        let blank = RgbImage::new(w, h);
        let mut grid = split_grid(&blank, tile, tile, s.overlap);
        let tiles = pictures(&want, &format!("{name}/tiles"));
        let images = pictures(&want, &format!("{name}/images"));
        let per = grid.tile_count();
        assert_eq!(tiles.len(), per * images.len(), "{name}: tiles");
        for (n, image) in images.iter().enumerate() {
            let mut made = tiles[n * per..(n + 1) * per].iter();
            for t in grid.tiles_mut() {
                t.image = made.next().unwrap().clone();
            }
            assert_eq!(
                max_level_diff(&combine_grid(&grid), image),
                0,
                "{name}[{n}]"
            );
        }
    }
}

#[test]
fn sd_upscale_matches_a1111() {
    let (doc, list) = cases("sd_upscale/cases.json", CASES);
    let want = reference("sd_upscale/reference.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let pipe = Pipeline::load(&tiny_model("sd1", dir.path()), &LoadOptions::default()).unwrap();
    let mut worst = 0u8;
    for c in list.exactly(CASES).unwrap().into_vec() {
        let name = c["name"].as_str().unwrap();
        let req = request(&doc, &c);
        let s = req.sd_upscale.clone().unwrap();
        let jobs = s.job_count(&req);
        let mut batches = Vec::new();
        let (out, warnings) = pipe
            .generate(&req, &mut |p| {
                if p.denoised.is_some() {
                    assert_eq!((p.batch_count, p.passes), (jobs, 1), "{name}");
                    if batches.last() != Some(&p.batch) {
                        batches.push(p.batch);
                    }
                }
                ControlFlow::Continue(())
            })
            .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(batches, (0..jobs).collect::<Vec<_>>(), "{name}: batches");
        let images = pictures(&want, &format!("{name}/images"));
        assert_eq!(out.len(), images.len(), "{name}: one picture per iteration");
        for (n, (g, r)) in out.iter().zip(&images).enumerate() {
            let d = max_level_diff(&g.image, r);
            println!(
                "{name}[{n}]: {}x{}, max diff {d} levels",
                r.width(),
                r.height()
            );
            worst = worst.max(d);
            assert!(d <= 1, "{name}[{n}]: a pixel {d} levels apart");
            // A1111's initial_info: the first batch's seed, the tile size, the script's keys
            assert_eq!(g.seed, c["seed"].as_u64().unwrap(), "{name}");
            let info = pipe.infotext(&req, g).unwrap().to_string();
            let upscaler = c["upscaler"].as_str().unwrap();
            let keys = format!(
                "SD upscale overlap: {}, SD upscale upscaler: {upscaler}",
                s.overlap
            );
            assert!(info.contains(&keys), "{info}");
            assert!(info.contains("Size: 128x128"), "{info}");
        }
    }
    println!("SD upscale: worst pixel {worst} levels");
}

#[test]
fn bad_settings_are_refused_naming_the_field() {
    let (doc, list) = cases("sd_upscale/cases.json", CASES);
    let c = &list.into_vec()[0];
    let dir = tempfile::tempdir().unwrap();
    let pipe = Pipeline::load(&tiny_model("sd1", dir.path()), &LoadOptions::default()).unwrap();
    let run = |f: &dyn Fn(&mut Request)| {
        let mut req = request(&doc, c);
        f(&mut req);
        pipe.generate(&req, &mut |_| ControlFlow::Continue(()))
            .unwrap_err()
            .to_string()
    };
    let e = run(&|r| r.sd_upscale.as_mut().unwrap().upscaler = SdUpscaler::Name("Bicubic".into()));
    assert!(
        e.contains("no upscaler `Bicubic`") && e.contains("None, Lanczos, Nearest"),
        "{e}"
    );
    let e = run(&|r| r.sd_upscale.as_mut().unwrap().upscaler = SdUpscaler::Index(9));
    assert!(e.contains("no upscaler number 9"), "{e}");
    let e = run(&|r| r.sd_upscale.as_mut().unwrap().overlap = 128);
    assert!(
        e.contains("overlap (128) must be smaller than the tile"),
        "{e}"
    );
    let e = run(&|r| r.sd_upscale.as_mut().unwrap().scale = 0.5);
    assert!(e.contains("smaller than a tile"), "{e}");
    let e = run(&|r| r.sd_upscale.as_mut().unwrap().scale = f64::NAN);
    assert!(e.contains("sd-upscale-scale"), "{e}");
    let e = run(&|r| r.width = 100);
    assert!(e.contains("multiples of 8"), "{e}");
    let e = run(&|r| r.img2img = None);
    assert!(e.contains("img2img script"), "{e}");
}
