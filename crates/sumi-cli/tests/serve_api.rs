//! `sumi serve` on the tiny model, end to end: pixels identical to the CLI (also under
//! concurrency), img2img with and without a mask, every listed sampler generating, the real
//! infotext replayed, the pipeline's refusals as 422. The HTTP layer alone (shapes, defaults,
//! validation, queue, control) is tested in process in `sumi-server/tests/http`.

mod serve_common;

use serde_json::{json, Value};
use serve_common::*;

#[test]
fn txt2img_matches_the_cli_with_a1111_shapes() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let s = Server::start(&m, &[]);
    let prompt = "((emphasis)), (emphasis1:1.1), [to:1], [from::2], [from:to:0.3], [alt|alt1]";
    let body = json!({
        "prompt": prompt, "negative_prompt": "blurry", "seed": 7, "steps": 3,
        "width": 64, "height": 64, "sampler_name": "Euler a", "batch_size": 2, "n_iter": 2,
        "cfg_scale": 6.5, "restore_faces": null, "styles": null, "alwayson_scripts": {},
        "some_field_from_the_future": 1
    });
    let (st, v) = post(&s, "/sdapi/v1/txt2img", &body);
    assert_eq!(st, 200, "{v}");
    let imgs = v["images"].as_array().unwrap();
    assert_eq!(imgs.len(), 4);
    let info = info(&v);
    assert_eq!(info["all_seeds"], json!([7, 8, 9, 10]));
    assert_eq!(info["seed"], 7);
    assert_eq!(info["sampler_name"], "Euler a");
    assert_eq!(info["steps"], 3);
    assert_eq!(info["prompt"], prompt);
    // the loaded checkpoint's name and hash, as /sd-models lists it
    let hash = get(&s, "/sdapi/v1/sd-models").1[0]["hash"].clone();
    assert_eq!(hash.as_str().map(str::len), Some(10));
    assert_eq!(info["sd_model_hash"], hash);
    assert_eq!(info["sd_model_name"], "tiny");
    // parameters: the request as sent, the rest API defaults
    assert_eq!(v["parameters"]["seed"], 7);
    assert_eq!(v["parameters"]["sampler_index"], "Euler");
    assert_eq!(v["parameters"]["enable_hr"], false);
    assert!(v["parameters"].get("some_field_from_the_future").is_none());
    for (i, b64) in imgs.iter().enumerate() {
        let (img, text) = decode_image(b64);
        assert_eq!(img.dimensions(), (64, 64));
        assert_eq!(text.as_deref(), info["infotexts"][i].as_str());
        let t = text.unwrap();
        assert!(t.starts_with(prompt), "{t}");
        assert!(t.contains(&format!("Seed: {}", 7 + i)), "{t}");
        assert!(
            t.contains("Steps: 3, Sampler: Euler a") && t.contains("CFG scale: 6.5"),
            "{t}"
        );
        assert!(
            t.contains(&format!(
                "Model hash: {}, Model: tiny",
                hash.as_str().unwrap()
            )),
            "{t}"
        );
    }
    // the CLI gives the same pixels for the same seed (the 4th image: batch 2, item 2)
    cli_batch(
        d.path(),
        &[
            "txt2img",
            "--model",
            m.to_str().unwrap(),
            "--prompt",
            prompt,
            "--negative-prompt",
            "blurry",
            "--seed",
            "9",
            "--steps",
            "3",
            "--width",
            "64",
            "--height",
            "64",
            "--sampler",
            "Euler a",
            "--cfg-scale",
            "6.5",
            "--batch-size",
            "2",
        ],
        "cli.png",
    );
    let cli_second = image::open(d.path().join("cli-0002.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(decode_image(&imgs[3]).0.as_raw(), cli_second.as_raw());
}

#[test]
fn api_defaults_samplers_infotext_replay_embeddings_and_pipeline_refusals() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let emb =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/embeddings");
    let s = Server::start(&m, &["--embeddings", emb.to_str().unwrap()]);
    // the loaded model's embeddings: those of its text encoder's width, the others skipped
    let (st, e) = get(&s, "/sdapi/v1/embeddings");
    assert_eq!(st, 200, "{e}");
    let loaded: Vec<&String> = e["loaded"].as_object().unwrap().keys().collect();
    assert_eq!(
        loaded,
        ["tinyconcept", "tinydict", "tinyemb", "tinypt"],
        "{e}"
    );
    assert_eq!(e["skipped"]["wide"]["shape"], 768, "{e}");
    // a prompt the pipeline cannot read is the client's fault
    let (st, v) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({"prompt": "(abc:1.2.3)", "seed": 1, "steps": 2, "width": 64, "height": 64}),
    );
    assert_eq!(st, 422, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("1.2.3"), "{v}");
    // an infotext written by the pipeline gives the same request, hence the same pixels
    let (st, v) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({"prompt": "a [red|blue] boat", "negative_prompt": "fog", "seed": 31, "steps": 3,
                "width": 64, "height": 96, "sampler_name": "DPM++ 2M", "scheduler": "exponential",
                "cfg_scale": 5, "override_settings": {"CLIP_stop_at_last_layers": 2, "randn_source": "CPU"}}),
    );
    assert_eq!(st, 200, "{v}");
    let text = info(&v)["infotexts"][0].as_str().unwrap().to_string();
    let (st, again) = post(&s, "/sdapi/v1/txt2img", &json!({ "infotext": text }));
    assert_eq!(st, 200, "{again}");
    assert_eq!(info(&again)["infotexts"][0], text.as_str());
    assert_eq!(
        decode_image(&again["images"][0]).0.as_raw(),
        decode_image(&v["images"][0]).0.as_raw()
    );
    assert_eq!(again["parameters"]["seed"], "31");
    // fields given win over the infotext
    let (_, other) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({ "infotext": text, "seed": 32 }),
    );
    assert_eq!(info(&other)["seed"], 32);
    assert!(info(&other)["infotexts"][0]
        .as_str()
        .unwrap()
        .contains("Size: 64x96"));

    // no sampler given: A1111's API default is "Euler" (sampler_index)
    let (st, v) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({"seed": 1, "steps": 2, "width": 64, "height": 64}),
    );
    assert_eq!(st, 200, "{v}");
    let i = info(&v);
    assert_eq!(i["sampler_name"], "Euler");
    assert_eq!(i["cfg_scale"], 7.0);
    assert_eq!(v["parameters"]["steps"], 2);
    assert_eq!(v["parameters"]["cfg_scale"], 7.0);
    assert_eq!(v["parameters"]["n_iter"], 1);
    // seed -1 is echoed as -1, a real seed is reported
    let (_, v) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({"seed": -1, "steps": 1, "width": 64, "height": 64}),
    );
    assert_eq!(v["parameters"]["seed"], -1);
    assert!(info(&v)["seed"].as_u64().unwrap() < 4_294_967_294);
    // legacy combined name = sampler + scheduler
    let a = post(&s, "/sdapi/v1/txt2img", &json!({"seed": 3, "steps": 2, "width": 64, "height": 64, "sampler_name": "DPM++ SDE Karras"})).1;
    let b = post(&s, "/sdapi/v1/txt2img", &json!({"seed": 3, "steps": 2, "width": 64, "height": 64, "sampler_name": "DPM++ SDE", "scheduler": "karras"})).1;
    assert_eq!(
        decode_image(&a["images"][0]).0.as_raw(),
        decode_image(&b["images"][0]).0.as_raw()
    );
    assert!(info(&a)["infotexts"][0]
        .as_str()
        .unwrap()
        .contains("Sampler: DPM++ SDE, Schedule type: Karras"));
    // samplers listed can be used
    let (_, samplers) = get(&s, "/sdapi/v1/samplers");
    for smp in samplers.as_array().unwrap() {
        let name = smp["name"].as_str().unwrap();
        let (st, v) = post(
            &s,
            "/sdapi/v1/txt2img",
            &json!({"seed": 3, "steps": 4, "width": 64, "height": 64, "sampler_name": name}),
        );
        assert_eq!(st, 200, "{name}: {v}");
    }
}

#[test]
fn img2img_matches_the_cli_and_takes_masks_and_data_urls() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let s = Server::start(&m, &[]);
    let init = b64_file(&init_png());
    let body = json!({
        "init_images": [format!("data:image/png;base64,{init}")], "prompt": "a cat",
        "seed": 5, "steps": 4, "width": 64, "height": 64, "denoising_strength": 0.6,
        "sampler_name": "DPM++ 2M", "resize_mode": 1, "mask": null
    });
    let (st, v) = post(&s, "/sdapi/v1/img2img", &body);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["parameters"]["init_images"], serde_json::Value::Null);
    let (api, text) = decode_image(&v["images"][0]);
    assert!(text.unwrap().contains("Denoising strength: 0.6"));
    let cli_img = cli(
        d.path(),
        &[
            "img2img",
            "--model",
            m.to_str().unwrap(),
            "--init-image",
            init_png().to_str().unwrap(),
            "--prompt",
            "a cat",
            "--seed",
            "5",
            "--steps",
            "4",
            "--width",
            "64",
            "--height",
            "64",
            "--denoising-strength",
            "0.6",
            "--sampler",
            "DPM++ 2M",
            "--resize-mode",
            "crop-and-resize",
        ],
        "i2i.png",
    );
    assert_eq!(api.as_raw(), cli_img.as_raw(), "API and CLI img2img differ");
    // with a mask (white = change), sizes and counts hold
    let (iw, ih) = image::image_dimensions(init_png()).unwrap();
    let mask = image::RgbImage::from_fn(iw, ih, |x, _| {
        if x < iw / 2 {
            image::Rgb([255; 3])
        } else {
            image::Rgb([0; 3])
        }
    });
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(mask)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    use base64::Engine;
    let mask_b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let body = json!({
        "init_images": [init], "mask": mask_b64, "prompt": "a dog", "seed": 6, "steps": 3,
        "width": 64, "height": 64, "batch_size": 2, "mask_blur": 2, "inpainting_fill": 1
    });
    let (st, v) = post(&s, "/sdapi/v1/img2img", &body);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["images"].as_array().unwrap().len(), 2);
    assert_eq!(info(&v)["all_seeds"], json!([6, 7]));
    // inpainting the masked area only (A1111's API default) pastes it back into the source
    for b in v["images"].as_array().unwrap() {
        assert_eq!(decode_image(b).0.dimensions(), (iw, ih));
    }
    // the whole picture: the requested size
    let mut whole = body.clone();
    whole["inpaint_full_res"] = json!(false);
    let (st, v) = post(&s, "/sdapi/v1/img2img", &whole);
    assert_eq!(st, 200, "{v}");
    assert_eq!(decode_image(&v["images"][0]).0.dimensions(), (64, 64));
    // a mask of another size than the source is refused when only the masked area is inpainted
    let mut odd = body.clone();
    odd["mask"] = json!(b64_file(&d.path().join("i2i.png")));
    let (st, v) = post(&s, "/sdapi/v1/img2img", &odd);
    assert_eq!(st, 422, "{v}");
}

#[test]
fn four_concurrent_requests_give_the_sequential_pixels() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let s = Server::start(&m, &["--queue", "8"]);
    let body = |seed: u64| json!({"prompt": "a tree", "seed": seed, "steps": 3, "width": 64, "height": 64, "sampler_name": "Euler a"});
    let sequential: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            decode_image(&post(&s, "/sdapi/v1/txt2img", &body(100 + i)).1["images"][0])
                .0
                .into_raw()
        })
        .collect();
    let s = std::sync::Arc::new(s);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let (st, v) = post(&s, "/sdapi/v1/txt2img", &body(100 + i));
                assert_eq!(st, 200, "{v}");
                decode_image(&v["images"][0]).0.into_raw()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), sequential[i], "request {i}");
    }
    let cli_img = cli(
        d.path(),
        &[
            "txt2img",
            "--model",
            m.to_str().unwrap(),
            "--prompt",
            "a tree",
            "--seed",
            "102",
            "--steps",
            "3",
            "--width",
            "64",
            "--height",
            "64",
            "--sampler",
            "Euler a",
        ],
        "c.png",
    );
    assert_eq!(cli_img.into_raw(), sequential[2]);
}

/// POSTs `base` with `extra`'s fields over it; the answer must be 200.
fn post_over(s: &Server, endpoint: &str, base: &Value, extra: Value) -> Value {
    let mut b = base.clone();
    b.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (st, v) = post(s, endpoint, &b);
    assert_eq!(st, 200, "{v}");
    v
}

/// A1111's negative-prompt skips through both front ends: the request's `s_min_uncond`, the
/// settings `skip_early_cond` / `s_min_uncond_all` (override_settings), the infotext keys A1111
/// writes, an infotext replayed through the API and through the CLI's `--infotext` giving the
/// same pixels, and no "not applied" warning for any of them.
#[test]
fn negative_prompt_skips_apply_through_the_api_and_the_cli() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let s = Server::start(&m, &[]);
    let base = json!({"prompt": "a boat", "negative_prompt": "fog", "seed": 5, "steps": 6,
                      "width": 64, "height": 64, "sampler_name": "Euler"});
    let with = |extra: Value| post_over(&s, "/sdapi/v1/txt2img", &base, extra);
    let plain = with(json!({}));
    let ngms = with(json!({"s_min_uncond": 20}));
    let both = with(
        json!({"override_settings": {"skip_early_cond": 0.5, "s_min_uncond": 20,
                                                  "s_min_uncond_all": true}}),
    );
    let text = |v: &Value| info(v)["infotexts"][0].as_str().unwrap().to_string();
    let pixels = |v: &Value| decode_image(&v["images"][0]).0.into_raw();
    assert!(!text(&plain).contains("NGMS"), "{}", text(&plain));
    assert!(
        text(&ngms).contains(", NGMS: 20.0, Version:"),
        "{}",
        text(&ngms)
    );
    assert!(
        text(&both).contains(", Skip Early CFG: 0.5, NGMS: 20.0, NGMS all steps: True, Version:"),
        "{}",
        text(&both)
    );
    assert_ne!(pixels(&plain), pixels(&ngms));
    assert_ne!(pixels(&ngms), pixels(&both));
    for v in [&ngms, &both] {
        let warnings = info(v)["warnings"].to_string();
        assert!(
            !warnings.contains("s_min_uncond") && !warnings.contains("skip_early_cond"),
            "{warnings}"
        );
    }
    // the infotext replayed: through the API, and through the CLI
    let (st, again) = post(&s, "/sdapi/v1/txt2img", &json!({ "infotext": text(&both) }));
    assert_eq!(st, 200, "{again}");
    assert_eq!(text(&again), text(&both));
    assert_eq!(pixels(&again), pixels(&both));
    let out = cli(
        d.path(),
        &[
            "txt2img",
            "--model",
            m.to_str().unwrap(),
            "--infotext",
            &text(&both),
        ],
        "replayed.png",
    );
    assert_eq!(out.into_raw(), pixels(&both));
}

/// Token merging as A1111 picks its ratio: `token_merging_ratio` for txt2img (and, unless
/// `token_merging_ratio_hr` is set, for the hires pass), `token_merging_ratio_img2img` for
/// img2img unless the request overrides `token_merging_ratio`; the infotext keys, an infotext
/// replayed through the API and the CLI's `--infotext` giving the same pixels.
#[test]
fn token_merging_applies_as_a1111_picks_its_ratio() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let s = Server::start(&m, &[]);
    let base = json!({"prompt": "a boat", "seed": 9, "steps": 3, "width": 64, "height": 64,
                      "sampler_name": "Euler"});
    let post_with = |endpoint: &str, extra: Value| post_over(&s, endpoint, &base, extra);
    let t2i = "/sdapi/v1/txt2img";
    let text = |v: &Value| info(v)["infotexts"][0].as_str().unwrap().to_string();
    let pixels = |v: &Value| decode_image(&v["images"][0]).0.into_raw();
    let plain = post_with(t2i, json!({}));
    let merged = post_with(
        t2i,
        json!({"override_settings": {"token_merging_ratio": 0.5}}),
    );
    assert!(!text(&plain).contains("Token merging"), "{}", text(&plain));
    assert!(
        text(&merged).contains(", Token merging ratio: 0.5,"),
        "{}",
        text(&merged)
    );
    assert_ne!(pixels(&plain), pixels(&merged));
    // the img2img setting is for img2img only
    let only_img2img = post_with(
        t2i,
        json!({"override_settings": {"token_merging_ratio_img2img": 0.5}}),
    );
    assert_eq!(pixels(&only_img2img), pixels(&plain));
    // the hires pass takes the first pass's ratio unless its own is set
    let hr = json!({"enable_hr": true, "hr_scale": 1.5, "hr_second_pass_steps": 2,
                    "denoising_strength": 0.5, "override_settings": {"token_merging_ratio": 0.5}});
    let hires = post_with(t2i, hr);
    assert!(
        text(&hires).contains("Token merging ratio: 0.5, Token merging ratio hr: 0.5"),
        "{}",
        text(&hires)
    );
    // replayed: through the API, and through the CLI
    let (st, again) = post(&s, t2i, &json!({ "infotext": text(&merged) }));
    assert_eq!(st, 200, "{again}");
    assert_eq!(pixels(&again), pixels(&merged));
    let out = cli(
        d.path(),
        &[
            "txt2img",
            "--model",
            m.to_str().unwrap(),
            "--infotext",
            &text(&merged),
        ],
        "merged.png",
    );
    assert_eq!(out.into_raw(), pixels(&merged));
    for v in [&merged, &hires] {
        let warnings = info(v)["warnings"].to_string();
        assert!(!warnings.contains("token_merging"), "{warnings}");
    }
}
