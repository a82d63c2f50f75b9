//! Extras as A1111 v1.10.1 runs them beside generations and settings: the model tiles from the
//! stored `ESRGAN_tile`/`SWIN_tile`/`DAT_tile` settings (bad values refused 422 naming the
//! setting, nothing kept); an Extras request waiting behind a running generation (A1111's
//! queue lock), an interrupt of that generation not reaching it (`state.begin`); `/progress`
//! showing an Extras job's tiles and `/interrupt` stopping its model pass (the pass hands back
//! its input, then Lanczos, as `upscale_with_model` on `state.interrupted`).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};
use sumi_pipeline::extras::{upscale_extras, ExtrasRequest};
use sumi_pipeline::upscale::{keep_going, TileOptions, UpscalerRegistry, UpscalerTiles};

use crate::common::*;
use crate::fake::Fake;

/// A folder with the 2× SRVGGNetCompact and the 2× DAT fixture files.
fn server(root: &Path, fake: Fake) -> TestServer {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let d = root.join("upscalers");
    std::fs::create_dir_all(&d).unwrap();
    for (from, to) in [
        ("upscalers/compact_x2.safetensors", "compact_x2.safetensors"),
        ("dat/dat_pixelshuffle_x2.pth", "dat_x2.pth"),
    ] {
        std::fs::copy(fixtures.join(from), d.join(to)).unwrap();
    }
    let mut c = config(root);
    c.load.upscaler_dirs = vec![d];
    TestServer::start(c, fake)
}

/// A `w`×`h` gradient as a PNG.
fn picture(w: u32, h: u32) -> (image::RgbImage, Vec<u8>) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x + y) % 256) as u8,
        ])
    });
    (
        img.clone(),
        sumi_pipeline::png::encode_png(&img, None).unwrap(),
    )
}

fn pipeline(img: &image::RgbImage, req: &ExtrasRequest, root: &Path) -> image::RgbImage {
    let reg = UpscalerRegistry::scan(&[root.join("upscalers")]).unwrap();
    upscale_extras(img, req, &reg, &mut keep_going)
        .unwrap()
        .image
}

fn extras(s: &TestServer, png: &[u8], upscaler: &str) -> (u16, Value) {
    post(
        s,
        "/sdapi/v1/extra-single-image",
        &json!({"image": b64(png), "upscaler_1": upscaler, "upscaling_resize": 2}),
    )
}

#[test]
fn tiles_come_from_the_settings() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path(), Fake::new(0));
    let (_, o) = get(&s, "/sdapi/v1/options");
    for (k, v) in [
        ("ESRGAN_tile", 192),
        ("ESRGAN_tile_overlap", 8),
        ("SWIN_tile", 192),
        ("SWIN_tile_overlap", 8),
        ("DAT_tile", 192),
        ("DAT_tile_overlap", 8),
    ] {
        assert_eq!(o[k], v, "{k}");
    }
    let (img, png) = picture(40, 30);
    let req = |upscaler: &str, tiles: UpscalerTiles| ExtrasRequest {
        upscaler_1: upscaler.into(),
        tile: tiles,
        ..Default::default()
    };
    let small = TileOptions {
        tile: 16,
        overlap: 4,
    };
    // ESRGAN_tile reaches SRVGGNetCompact, DAT_tile DAT; each family its own setting
    let (st, v) = post(
        &s,
        "/sdapi/v1/options",
        &json!({"ESRGAN_tile": 16, "ESRGAN_tile_overlap": 4}),
    );
    assert_eq!(st, 200, "{v}");
    let esrgan = UpscalerTiles {
        esrgan: small,
        ..Default::default()
    };
    for name in ["compact_x2", "dat_x2"] {
        let (st, v) = extras(&s, &png, name);
        assert_eq!(st, 200, "{v}");
        let got = decode_image(&v["image"]).0;
        assert_eq!(got, pipeline(&img, &req(name, esrgan), d.path()), "{name}");
    }
    let tiled = decode_image(&extras(&s, &png, "compact_x2").1["image"]).0;
    let whole = pipeline(&img, &req("compact_x2", UpscalerTiles::default()), d.path());
    assert_ne!(tiled, whole, "16 px tiles are not one 192 px tile");
    post(
        &s,
        "/sdapi/v1/options",
        &json!({"DAT_tile": "16", "DAT_tile_overlap": 4.0}),
    );
    let (_, v) = extras(&s, &png, "dat_x2");
    let both = UpscalerTiles {
        dat: small,
        ..esrgan
    };
    let got = decode_image(&v["image"]).0;
    assert_eq!(got, pipeline(&img, &req("dat_x2", both), d.path()));
    // bad values: 422 naming the setting, nothing kept
    for (body, says) in [
        (
            json!({"ESRGAN_tile": -16}),
            "setting ESRGAN_tile: -16: a tile setting is 0 to 4096",
        ),
        (
            json!({"SWIN_tile": 100000}),
            "setting SWIN_tile: 100000: a tile setting is 0 to 4096",
        ),
        (
            json!({"DAT_tile": "big"}),
            "setting DAT_tile: \"big\" is not a whole number",
        ),
        (
            json!({"DAT_tile": 4, "ESRGAN_tile": 64}),
            "settings DAT_tile, DAT_tile_overlap: tile size 4 with overlap 4",
        ),
    ] {
        let (st, v) = post(&s, "/sdapi/v1/options", &body);
        assert_eq!(st, 422, "{body}: {v}");
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.starts_with(says), "{detail}");
    }
    let (_, o) = get(&s, "/sdapi/v1/options");
    assert_eq!(
        (&o["ESRGAN_tile"], &o["DAT_tile"]),
        (&json!(16), &json!("16"))
    );
}

#[test]
fn extras_wait_behind_a_generation_and_keep_their_own_state() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(server(d.path(), Fake::new(0)));
    let (img, png) = picture(40, 30);
    // a generation of 200 ms steps
    s.fake.shared.step_micros.store(200_000, Ordering::SeqCst);
    let s2 = s.clone();
    let gen = std::thread::spawn(move || {
        let body = json!({"prompt": "slow", "steps": 20, "width": 64, "height": 64});
        post(&s2, "/sdapi/v1/txt2img", &body)
    });
    wait_progress(&s, |p| p["state"]["sampling_step"].as_u64() >= Some(1));
    let s3 = s.clone();
    let png2 = png.clone();
    let up = std::thread::spawn(move || extras(&s3, &png2, "compact_x2"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!up.is_finished(), "the Extras job waits for the generation");
    let (_, p) = get(&s, "/sdapi/v1/progress");
    assert_eq!(p["state"]["job"], "txt2img", "{p}");
    // the interrupt stops the generation, not the Extras job queued behind it
    assert_eq!(post(&s, "/sdapi/v1/interrupt", &json!({})).0, 200);
    s.fake.shared.step_micros.store(0, Ordering::SeqCst);
    let (gen_st, gen_v) = gen.join().unwrap();
    assert_eq!(gen_st, 200, "{gen_v}");
    assert_eq!(info(&gen_v)["infotexts"].as_array().unwrap().len(), 1);
    let (st, v) = up.join().unwrap();
    assert_eq!(st, 200, "{v}");
    let req = ExtrasRequest {
        upscaler_1: "compact_x2".into(),
        ..Default::default()
    };
    assert_eq!(decode_image(&v["image"]).0, pipeline(&img, &req, d.path()));
}

#[test]
fn interrupt_stops_an_extras_model_pass() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(server(d.path(), Fake::new(0)));
    // DAT in 16 px tiles overlapping 8 over 256×256: 31×31 tiles, long enough to interrupt
    let (st, v) = post(
        &s,
        "/sdapi/v1/options",
        &json!({"DAT_tile": 16, "DAT_tile_overlap": 8}),
    );
    assert_eq!(st, 200, "{v}");
    let (img, png) = picture(256, 256);
    let s2 = s.clone();
    let job = std::thread::spawn(move || extras(&s2, &png, "dat_x2"));
    let p = wait_progress(&s, |p| {
        p["state"]["job"] == "extras" && p["state"]["sampling_step"].as_u64() >= Some(2)
    });
    assert_eq!(p["state"]["sampling_steps"], 961, "{p}");
    assert_eq!(p["state"]["job_count"], 1, "{p}");
    assert_eq!(post(&s, "/sdapi/v1/interrupt", &json!({})).0, 200);
    let (st, v) = job.join().unwrap();
    assert_eq!(st, 200, "{v}");
    // the pass handed back its input: Lanczos to 512×512, as A1111's
    let want = sumi_pipeline::image::resize_lanczos(&img, 512, 512).unwrap();
    assert_eq!(decode_image(&v["image"]).0, want);
    let p = wait_progress(&s, |p| p["state"]["job_count"] == 0);
    assert_eq!(p["state"]["interrupted"], false, "{p}");
    // the next Extras job runs whole
    let (_, png) = picture(24, 24);
    assert_eq!(extras(&s, &png, "dat_x2").0, 200);
}
