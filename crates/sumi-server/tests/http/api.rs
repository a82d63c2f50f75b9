//! A1111's request and response shapes: fields and their API defaults as the model receives
//! them, the `parameters` echo, `info`, seeds, legacy sampler names, `infotext` filling the
//! fields not given, img2img images (data URLs) and mask settings.

use base64::Engine;
use serde_json::{json, Value};

use crate::common::*;
use crate::fake::Fake;

#[test]
fn txt2img_response_shapes_and_what_the_model_receives() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    let prompt = "((emphasis)), (emphasis1:1.1), [to:1], [from::2], [from:to:0.3], [alt|alt1]";
    let body = json!({
        "prompt": prompt, "negative_prompt": "blurry", "seed": 7, "steps": 3,
        "width": 64, "height": 80, "sampler_name": "Euler a", "batch_size": 2, "n_iter": 2,
        "cfg_scale": 6.5, "restore_faces": null, "styles": null, "alwayson_scripts": {},
        "subseed": "12", "some_field_from_the_future": 1
    });
    let (st, v) = post(&s, "/sdapi/v1/txt2img", &body);
    assert_eq!(st, 200, "{v}");
    let r = s.fake.last();
    assert_eq!(
        (r.prompt.as_str(), r.negative_prompt.as_str()),
        (prompt, "blurry")
    );
    assert_eq!(
        (r.seed, r.subseed, r.steps, r.width, r.height),
        (7, 12, 3, 64, 80)
    );
    assert_eq!((r.batch_size, r.batch_count, r.cfg_scale), (2, 2, 6.5));
    assert_eq!(r.sampler.label(), "Euler a");
    assert!(r.img2img.is_none());
    let imgs = v["images"].as_array().unwrap();
    assert_eq!(imgs.len(), 4);
    let info = info(&v);
    assert_eq!(info["all_seeds"], json!([7, 8, 9, 10]));
    assert_eq!(info["all_subseeds"], json!([12, 13, 14, 15]));
    assert_eq!(info["all_prompts"].as_array().unwrap().len(), 4);
    assert_eq!(info["seed"], 7);
    assert_eq!(info["sampler_name"], "Euler a");
    assert_eq!(info["steps"], 3);
    assert_eq!(info["batch_size"], 2);
    assert_eq!(info["prompt"], prompt);
    assert_eq!(info["negative_prompt"], "blurry");
    assert_eq!(info["sd_model_name"], "tiny");
    assert_eq!(info["denoising_strength"], 0.75);
    assert_eq!(info["job_timestamp"].as_str().unwrap().len(), 14);
    assert!(info["version"].as_str().unwrap().starts_with("sumi-"));
    // parameters: the request as sent, the rest API defaults
    let p = &v["parameters"];
    assert_eq!(p["seed"], 7);
    assert_eq!(p["subseed"], "12");
    assert_eq!(p["sampler_index"], "Euler");
    assert_eq!(p["enable_hr"], false);
    assert_eq!(p["hr_scale"], 2.0);
    assert_eq!(p["send_images"], true);
    assert!(p.get("some_field_from_the_future").is_none());
    assert!(
        p.get("init_images").is_none(),
        "an img2img field in a txt2img echo"
    );
    for (i, b64) in imgs.iter().enumerate() {
        let (img, text) = decode_image(b64);
        assert_eq!(img.dimensions(), (64, 80));
        assert_eq!(text.as_deref(), info["infotexts"][i].as_str());
        let t = text.unwrap();
        assert!(t.starts_with(prompt), "{t}");
        assert!(t.contains(&format!("Seed: {}", 7 + i)), "{t}");
        assert!(
            t.contains("Steps: 3, Sampler: Euler a") && t.contains("CFG scale: 6.5"),
            "{t}"
        );
    }
    // send_images false: no images, the rest as before
    let mut no_images = body.clone();
    no_images["send_images"] = json!(false);
    let (st, v) = post(&s, "/sdapi/v1/txt2img", &no_images);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["images"], json!([]));
    assert_eq!(
        super::common::info(&v)["infotexts"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

#[test]
fn api_defaults_and_legacy_sampler_names() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    // nothing given: A1111's API defaults (50 steps, "Euler" via sampler_index, CFG 7, 512²)
    let (st, v) = post(&s, "/sdapi/v1/txt2img", &json!({}));
    assert_eq!(st, 200, "{v}");
    let r = s.fake.last();
    assert_eq!(
        (r.steps, r.width, r.height, r.cfg_scale),
        (50, 512, 512, 7.0)
    );
    assert_eq!((r.batch_size, r.batch_count), (1, 1));
    assert_eq!(r.sampler.label(), "Euler");
    assert_eq!(r.scheduler.label(), "Automatic");
    assert_eq!((r.prompt.as_str(), r.negative_prompt.as_str()), ("", ""));
    assert_eq!(r.subseed_strength, 0.0);
    let i = info(&v);
    assert_eq!(i["sampler_name"], "Euler");
    assert_eq!(i["cfg_scale"], 7.0);
    assert_eq!(v["parameters"]["steps"], 50);
    assert_eq!(v["parameters"]["n_iter"], 1);
    // nulls read as not given; numbers as strings and integral floats are accepted
    let (st, _) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({"steps": "3", "width": 64.0, "height": null, "cfg_scale": "5.5", "seed": 2, "sampler_name": null}),
    );
    assert_eq!(st, 200);
    let r = s.fake.last();
    assert_eq!((r.steps, r.width, r.height, r.cfg_scale), (3, 64, 512, 5.5));
    assert_eq!(r.sampler.label(), "Euler");
    // seed -1 is echoed as -1, a real seed is drawn, run and reported
    let (_, v) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({"seed": -1, "steps": 1, "width": 64, "height": 64}),
    );
    assert_eq!(v["parameters"]["seed"], -1);
    let drawn = info(&v)["seed"].as_i64().unwrap();
    assert!((0..4_294_967_294).contains(&drawn), "{drawn}");
    assert_eq!(s.fake.last().seed, drawn);
    // legacy combined name = sampler + scheduler; sampler_index when sampler_name is empty
    let body = |extra: Value| {
        let mut b = json!({"seed": 3, "subseed": 4, "steps": 2, "width": 64, "height": 64});
        for (k, x) in extra.as_object().unwrap() {
            b[k] = x.clone();
        }
        b
    };
    let (_, a) = post(
        &s,
        "/sdapi/v1/txt2img",
        &body(json!({"sampler_name": "DPM++ SDE Karras"})),
    );
    let ra = s.fake.last();
    let (_, b) = post(
        &s,
        "/sdapi/v1/txt2img",
        &body(json!({"sampler_name": "DPM++ SDE", "scheduler": "karras"})),
    );
    let rb = s.fake.last();
    assert_eq!(format!("{ra:?}"), format!("{rb:?}"));
    assert_eq!(ra.sampler.label(), "DPM++ SDE");
    assert_eq!(
        decode_image(&a["images"][0]).0.as_raw(),
        decode_image(&b["images"][0]).0.as_raw()
    );
    assert!(info(&a)["infotexts"][0]
        .as_str()
        .unwrap()
        .contains("Sampler: DPM++ SDE, Schedule type: Karras"));
    post(
        &s,
        "/sdapi/v1/txt2img",
        &body(json!({"sampler_name": "", "sampler_index": "k_dpmpp_2m"})),
    );
    assert_eq!(s.fake.last().sampler.label(), "DPM++ 2M");
    post(
        &s,
        "/sdapi/v1/txt2img",
        &body(json!({"sampler_name": "Euler a", "sampler_index": "DDIM"})),
    );
    assert_eq!(s.fake.last().sampler.label(), "Euler a");
}

#[test]
fn an_infotext_fills_the_fields_not_given() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    let (st, v) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({"prompt": "a [red|blue] boat", "negative_prompt": "fog", "seed": 31, "steps": 3,
                "width": 64, "height": 96, "sampler_name": "DPM++ 2M", "scheduler": "exponential",
                "cfg_scale": 5, "subseed": 4, "subseed_strength": 0.25,
                "override_settings": {"CLIP_stop_at_last_layers": 2, "randn_source": "CPU"}}),
    );
    assert_eq!(st, 200, "{v}");
    let first = s.fake.last();
    let text = info(&v)["infotexts"][0].as_str().unwrap().to_string();
    let (st, again) = post(&s, "/sdapi/v1/txt2img", &json!({ "infotext": text }));
    assert_eq!(st, 200, "{again}");
    // the same request, with the infotext's model hash to check against the checkpoint
    let mut replayed = s.fake.last();
    assert_eq!(replayed.model_hash.as_deref().map(str::len), Some(10));
    replayed.model_hash = None;
    assert_eq!(format!("{replayed:?}"), format!("{first:?}"));
    assert_eq!(info(&again)["infotexts"][0], text.as_str());
    assert_eq!(
        decode_image(&again["images"][0]).0.as_raw(),
        decode_image(&v["images"][0]).0.as_raw()
    );
    assert_eq!(again["parameters"]["seed"], "31");
    // fields given win over the infotext, settings given too
    let (_, other) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({ "infotext": text, "seed": 32, "override_settings": {"CLIP_stop_at_last_layers": 1} }),
    );
    assert_eq!(info(&other)["seed"], 32);
    let r = s.fake.last();
    assert_eq!((r.seed, r.clip_skip, r.height), (32, 1, 96));
    assert!(info(&other)["infotexts"][0]
        .as_str()
        .unwrap()
        .contains("Size: 64x96"));
    // img2img reads the infotext's denoising strength; txt2img does not
    let init = b64(&png(64, 64, [200, 100, 50]));
    let (st, v) = post(
        &s,
        "/sdapi/v1/img2img",
        &json!({"init_images": [init], "infotext": "cat\nSteps: 2, Denoising strength: 0.3, Size: 64x64"}),
    );
    assert_eq!(st, 200, "{v}");
    let r = s.fake.last();
    assert_eq!((r.prompt.as_str(), r.steps), ("cat", 2));
    assert_eq!(r.img2img.as_ref().unwrap().denoising_strength, 0.3);
    // a hires infotext turns the hires fix on, as A1111's paste fields do
    let (st, v) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({"infotext": "cat\nSteps: 2, Sampler: Euler a, Size: 64x64, Denoising strength: 0.45, \
                Hires sampler: DPM++ 2M, Hires upscale: 1.5, Hires steps: 3, Hires upscaler: Latent (nearest)"}),
    );
    assert_eq!(st, 200, "{v}");
    let h = s.fake.last().hires.expect("hires fix on");
    assert_eq!(
        (
            h.scale,
            h.second_pass_steps,
            h.denoising_strength,
            h.upscaler.as_deref()
        ),
        (1.5, 3, 0.45, Some("Latent (nearest)"))
    );
    assert_eq!(h.sampler.map(|k| k.label()), Some("DPM++ 2M"));
    // the API's own fields: firstphase size, resize, unknown checkpoints refused
    let (st, v) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({"enable_hr": true, "hr_resize_x": 128, "hr_resize_y": 96, "width": 64, "height": 64,
                "denoising_strength": 0.3, "hr_upscaler": "Lanczos", "hr_prompt": "dog", "steps": 2}),
    );
    assert_eq!(st, 200, "{v}");
    let r = s.fake.last();
    let h = r.hires.as_ref().unwrap();
    assert_eq!(
        (h.resize_x, h.resize_y, h.prompt.as_str()),
        (128, 96, "dog")
    );
    assert_eq!(h.denoising_strength, 0.3);
    assert_eq!(v["parameters"]["enable_hr"], true);
}

#[test]
fn img2img_takes_images_as_data_urls_and_mask_settings() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    let init = b64(&png(96, 80, [200, 100, 50]));
    let body = json!({
        "init_images": [format!("data:image/png;base64,{init}")], "prompt": "a cat",
        "seed": 5, "steps": 4, "width": 64, "height": 64, "denoising_strength": 0.6,
        "sampler_name": "DPM++ 2M", "resize_mode": 1, "mask": null
    });
    let (st, v) = post(&s, "/sdapi/v1/img2img", &body);
    assert_eq!(st, 200, "{v}");
    let r = s.fake.last();
    let i = r.img2img.as_ref().unwrap();
    assert_eq!(i.init_image.dimensions(), (96, 80));
    assert_eq!(i.init_image.get_pixel(3, 3).0, [200, 100, 50]);
    assert_eq!(i.denoising_strength, 0.6);
    assert_eq!(
        Some(i.resize_mode),
        sumi_pipeline::image::ResizeMode::from_index(1)
    );
    assert!(i.inpaint.is_none());
    assert_eq!(v["parameters"]["init_images"], Value::Null);
    assert_eq!(v["parameters"]["resize_mode"], 1);
    assert_eq!(v["parameters"]["mask_blur_x"], 4);
    assert!(v["parameters"].get("enable_hr").is_none());
    assert_eq!(info(&v)["denoising_strength"], 0.6);
    let (_, text) = decode_image(&v["images"][0]);
    assert!(text.unwrap().contains("Denoising strength: 0.6"));
    // with a mask: A1111's API defaults, then each setting given
    let mask = b64(&png(96, 80, [255, 255, 255]));
    let mut masked = json!({"init_images": [init], "mask": mask, "seed": 6, "steps": 3,
                            "width": 64, "height": 64, "batch_size": 2});
    let (st, v) = post(&s, "/sdapi/v1/img2img", &masked);
    assert_eq!(st, 200, "{v}");
    assert_eq!(info(&v)["all_seeds"], json!([6, 7]));
    let r = s.fake.last();
    let m = r.img2img.as_ref().unwrap().inpaint.as_ref().unwrap();
    assert_eq!(
        (
            m.blur_x,
            m.blur_y,
            m.invert,
            m.full_res,
            m.full_res_padding,
            m.round
        ),
        (4, 4, false, true, 0, true)
    );
    assert_eq!(Some(m.fill), sumi_pipeline::MaskedContent::from_index(0));
    assert_eq!((m.mask.width(), m.mask.height()), (96, 80));
    for (k, x) in [
        ("mask_blur", json!(2)),
        ("inpainting_fill", json!(1)),
        ("inpaint_full_res", json!(false)),
        ("inpaint_full_res_padding", json!(32)),
        ("inpainting_mask_invert", json!(1)),
        ("mask_round", json!(false)),
        ("include_init_images", json!(true)),
    ] {
        masked[k] = x;
    }
    let (st, v) = post(&s, "/sdapi/v1/img2img", &masked);
    assert_eq!(st, 200, "{v}");
    let r = s.fake.last();
    let m = r.img2img.as_ref().unwrap().inpaint.as_ref().unwrap();
    assert_eq!(
        (
            m.blur_x,
            m.blur_y,
            m.invert,
            m.full_res,
            m.full_res_padding,
            m.round
        ),
        (2, 2, true, false, 32, false)
    );
    assert_eq!(Some(m.fill), sumi_pipeline::MaskedContent::from_index(1));
    // include_init_images echoes the images back
    assert_eq!(v["parameters"]["init_images"], json!([init]));
    assert_eq!(v["parameters"]["mask"], json!(mask));
    // mask_blur_x/y apart, when mask_blur is not given
    let mut apart = json!({"init_images": [init], "mask": mask, "steps": 1, "width": 64, "height": 64,
                           "mask_blur_x": 1, "mask_blur_y": 9});
    post(&s, "/sdapi/v1/img2img", &apart);
    let r = s.fake.last();
    let m = r.img2img.as_ref().unwrap().inpaint.as_ref().unwrap();
    assert_eq!((m.blur_x, m.blur_y), (1, 9));
    // an empty mask string is no mask
    apart["mask"] = json!("");
    post(&s, "/sdapi/v1/img2img", &apart);
    assert!(s.fake.last().img2img.unwrap().inpaint.is_none());
}

#[test]
fn what_sumi_does_not_apply_is_named_in_the_info_warnings_before_the_models() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    let (st, v) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({"prompt": "WARN", "steps": 2, "width": 64, "height": 64, "tiling": true,
                "restore_faces": false, "not_a_field": 1,
                "override_settings": {"eta_noise_seed_delta": 31337}}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        info(&v)["warnings"],
        json!([
            "not_a_field: not a field of A1111's API: ignored",
            "tiling: true is not applied by Sumi: the picture may differ from A1111's",
            "override_settings.eta_noise_seed_delta: 31337 is not applied by Sumi",
            "the fake warns about \"WARN\"",
        ])
    );
    // nothing asked that Sumi does not do: no warning
    let (_, v) = post(&s, "/sdapi/v1/txt2img", &json!({"prompt": "x", "steps": 2}));
    assert_eq!(info(&v)["warnings"], json!([]));
}

#[test]
fn save_images_keeps_the_pictures_numbered_with_their_infotext() {
    let d = tempfile::tempdir().unwrap();
    let mut c = config(d.path());
    let out = d.path().join("saved");
    c.outdir = out.clone();
    let s = TestServer::start(c, Fake::new(0));
    // not asked: nothing kept
    let (st, _) = post(&s, "/sdapi/v1/txt2img", &json!({"prompt": "x", "steps": 2}));
    assert_eq!(st, 200);
    assert!(!out.exists());
    // asked: each image in the next number, the same PNG as the response's, and no warning
    let body = json!({"prompt": "x", "steps": 2, "width": 64, "height": 64, "batch_size": 2,
                      "save_images": true});
    let (st, v) = post(&s, "/sdapi/v1/txt2img", &body);
    assert_eq!(st, 200, "{v}");
    assert_eq!(info(&v)["warnings"], json!([]));
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["00000.png", "00001.png"]);
    for (i, n) in names.iter().enumerate() {
        let file = std::fs::read(out.join(n)).unwrap();
        let sent = base64::engine::general_purpose::STANDARD
            .decode(v["images"][i].as_str().unwrap())
            .unwrap();
        assert_eq!(file, sent, "{n}");
    }
    // the numbers go on; send_images false still keeps them
    let body = json!({"prompt": "y", "steps": 2, "save_images": true, "send_images": false});
    let (_, v) = post(&s, "/sdapi/v1/txt2img", &body);
    assert_eq!(v["images"], json!([]));
    assert!(out.join("00002.png").is_file());
}
