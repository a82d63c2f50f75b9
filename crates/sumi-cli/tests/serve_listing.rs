//! `sumi serve`'s listing endpoints, options and model switching, png-info, the page, health.

mod serve_common;

use serde_json::{json, Value};
use serve_common::*;

#[test]
fn models_options_switching_and_listings() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("models");
    std::fs::create_dir_all(&dir).unwrap();
    let a = tiny_model(&dir, "tiny_a");
    // the same weights stored as f32: another file, another hash
    let f = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny/sd1");
    let tmp = d.path().join("f32");
    std::fs::create_dir_all(&tmp).unwrap();
    sumi_weights::synth::materialize(&f, &tmp, sumi_weights::StorageDtype::F32).unwrap();
    let b = dir.join("tiny_b.safetensors");
    std::fs::rename(tmp.join("tiny_sd1.safetensors"), &b).unwrap();
    let s = Server::start(&a, &["--models-dir", dir.to_str().unwrap()]);

    let (st, models) = get(&s, "/sdapi/v1/sd-models");
    assert_eq!(st, 200);
    let models = models.as_array().unwrap().clone();
    assert_eq!(models.len(), 2, "{models:?}");
    for (m, path) in models.iter().zip([&a, &b]) {
        let sha = sumi_weights::sha256_file(path).unwrap().sha256;
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(m["title"], format!("{name} [{}]", &sha[..10]));
        assert_eq!(m["hash"], sha[..10]);
        assert_eq!(m["sha256"], sha);
        assert_eq!(m["model_name"], path.file_stem().unwrap().to_str().unwrap());
        assert!(m["filename"].as_str().unwrap().ends_with(name));
    }
    let (_, opts) = get(&s, "/sdapi/v1/options");
    assert_eq!(opts["sd_model_checkpoint"], models[0]["title"]);
    // switch by title; unknown keys are kept and echoed
    let (st, v) = post(
        &s,
        "/sdapi/v1/options",
        &json!({"sd_model_checkpoint": models[1]["title"], "a_setting_sumi_lacks": 5}),
    );
    assert_eq!(st, 200, "{v}");
    let (_, opts) = get(&s, "/sdapi/v1/options");
    assert_eq!(opts["sd_model_checkpoint"], models[1]["title"]);
    assert_eq!(opts["a_setting_sumi_lacks"], 5);
    let (st, v) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({"seed": 1, "steps": 2, "width": 64, "height": 64}),
    );
    assert_eq!(st, 200, "{v}");
    let text = info(&v)["infotexts"][0].as_str().unwrap().to_string();
    assert!(
        text.contains(&format!(
            "Model hash: {}, Model: tiny_b",
            models[1]["hash"].as_str().unwrap()
        )),
        "{text}"
    );
    assert_eq!(info(&v)["sd_model_name"], "tiny_b");
    // png-info reads it back
    let (st, p) = post(&s, "/sdapi/v1/png-info", &json!({"image": v["images"][0]}));
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["info"], text);
    assert_eq!(p["parameters"]["Seed"], "1");
    assert_eq!(p["parameters"]["Steps"], "2");
    // and back by short name
    let (st, _) = post(
        &s,
        "/sdapi/v1/options",
        &json!({"sd_model_checkpoint": "tiny_a"}),
    );
    assert_eq!(st, 200);
    assert_eq!(
        get(&s, "/sdapi/v1/options").1["sd_model_checkpoint"],
        models[0]["title"]
    );
    // settings honoured: clip skip
    let (st, _) = post(
        &s,
        "/sdapi/v1/options",
        &json!({"CLIP_stop_at_last_layers": 2}),
    );
    assert_eq!(st, 200);
    let (_, v) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({"seed": 1, "steps": 2, "width": 64, "height": 64}),
    );
    assert!(info(&v)["infotexts"][0]
        .as_str()
        .unwrap()
        .contains("Clip skip: 2"));
    assert_eq!(post(&s, "/sdapi/v1/refresh-checkpoints", &json!({})).0, 200);
    // another checkpoint for one request, then back (A1111's override_settings)
    let one = |over: Value| {
        let (st, v) = post(
            &s,
            "/sdapi/v1/txt2img",
            &json!({"seed": 1, "steps": 2, "width": 64, "height": 64, "override_settings": over}),
        );
        assert_eq!(st, 200, "{v}");
        info(&v)["sd_model_name"].as_str().unwrap().to_string()
    };
    let current = || get(&s, "/sdapi/v1/options").1["sd_model_checkpoint"].clone();
    assert_eq!(one(json!({"sd_model_checkpoint": "tiny_b"})), "tiny_b");
    assert_eq!(current(), models[0]["title"]);
    assert_eq!(
        one(json!({"sd_model_checkpoint": "no such model"})),
        "tiny_a"
    );
    let (st, v) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({"seed": 1, "steps": 2, "width": 64, "height": 64,
                "override_settings": {"sd_model_checkpoint": models[1]["title"]},
                "override_settings_restore_afterwards": false}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(current(), models[1]["title"]);
    assert_eq!(one(json!({})), "tiny_b");

    // the listings
    let (_, samplers) = get(&s, "/sdapi/v1/samplers");
    let names: Vec<&str> = samplers
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"Euler a") && names.contains(&"DPM++ 2M"),
        "{names:?}"
    );
    let dpm = samplers
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "DPM++ 2M")
        .unwrap();
    assert_eq!(dpm["aliases"], json!(["k_dpmpp_2m"]));
    assert_eq!(dpm["options"]["scheduler"], "karras");
    let (_, sch) = get(&s, "/sdapi/v1/schedulers");
    assert!(sch
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["name"] == "karras" && x["label"] == "Karras"));
    for (path, check) in [
        ("/sdapi/v1/sd-vae", Value::is_array as fn(&Value) -> bool),
        ("/sdapi/v1/loras", Value::is_array),
        ("/sdapi/v1/upscalers", Value::is_array),
        ("/sdapi/v1/latent-upscale-modes", Value::is_array),
        ("/sdapi/v1/prompt-styles", Value::is_array),
        ("/sdapi/v1/scripts", Value::is_object),
        ("/sdapi/v1/embeddings", Value::is_object),
        ("/sdapi/v1/memory", Value::is_object),
        ("/sdapi/v1/cmd-flags", Value::is_object),
    ] {
        let (st, v) = get(&s, path);
        assert_eq!(st, 200, "{path}: {v}");
        assert!(check(&v), "{path}: {v}");
    }
    assert!(
        get(&s, "/sdapi/v1/memory").1["ram"]["total"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(get(&s, "/sdapi/v1/embeddings").1["loaded"], json!({}));
    assert_eq!(get(&s, "/ready").0, 200);
    let (st, page) = get(&s, "/");
    assert_eq!(st, 200);
    assert!(page.as_str().unwrap().contains("<html"), "{page}");
    let metrics = get(&s, "/metrics").1.as_str().unwrap().to_string();
    assert!(
        metrics.contains("sumi_queue_depth 0")
            && metrics.contains("sumi_jobs_total{outcome=\"ok\"} 6"),
        "{metrics}"
    );
}
