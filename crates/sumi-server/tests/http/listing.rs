//! The listing endpoints, options and model switching (for good, for one request, refused),
//! png-info, embeddings of the loaded model, the page, health, readiness and metrics.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sumi_server::backend::Embeddings;

use crate::common::*;
use crate::fake::{embedding, Fake};

fn sha256(p: &std::path::Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(p).unwrap()))
}

#[test]
fn sd_models_and_switching_through_the_options() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("models");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let a = fake_model(&dir, "tiny_a");
    let b = fake_model(&dir, "tiny_b");
    let c = fake_model(&dir.join("sub"), "tiny_c");
    std::fs::write(dir.join("notes.txt"), "not a checkpoint").unwrap();
    // a FIFO named like a checkpoint is not listed (reading it would block the listing)
    let fifo = dir.join("trap.safetensors");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()));
    let mut cfg = sumi_server::Config::new(a.clone());
    cfg.models_dir = Some(dir.clone());
    let s = TestServer::start(cfg, Fake::new(0));

    let (st, models) = get(&s, "/sdapi/v1/sd-models");
    assert_eq!(st, 200);
    let models = models.as_array().unwrap().clone();
    assert_eq!(models.len(), 3, "{models:?}");
    // sorted by path: the sub-folder first
    for (m, (path, name)) in models.iter().zip([
        (&c, "sub/tiny_c.safetensors"),
        (&a, "tiny_a.safetensors"),
        (&b, "tiny_b.safetensors"),
    ]) {
        let sha = sha256(path);
        assert_eq!(m["title"], format!("{name} [{}]", &sha[..10]));
        assert_eq!(m["hash"], sha[..10]);
        assert_eq!(m["sha256"], sha);
        assert_eq!(
            m["model_name"],
            name.trim_end_matches(".safetensors").replace('/', "_")
        );
        assert_eq!(m["filename"], path.to_str().unwrap());
        assert_eq!(m["config"], Value::Null);
        // no checkpoint header to read the latent space from
        assert_eq!(m["latent_space"], Value::Null);
    }
    let (ta, tb) = (models[1]["title"].clone(), models[2]["title"].clone());
    let (_, opts) = get(&s, "/sdapi/v1/options");
    assert_eq!(opts["sd_model_checkpoint"], ta);
    assert_eq!(opts["sd_checkpoint_hash"], sha256(&a));
    // switch by title; A1111's options that Sumi does not read are kept and echoed
    let (st, v) = post(
        &s,
        "/sdapi/v1/options",
        &json!({"sd_model_checkpoint": tb, "jpeg_quality": 5}),
    );
    assert_eq!((st, &v), (200, &Value::Null));
    assert_eq!(s.fake.loads(), [a.clone(), b.clone()]);
    let (_, opts) = get(&s, "/sdapi/v1/options");
    assert_eq!(opts["sd_model_checkpoint"], tb);
    assert_eq!(opts["jpeg_quality"], 5);
    let small = json!({"seed": 1, "steps": 2, "width": 64, "height": 64});
    let (st, v) = post(&s, "/sdapi/v1/txt2img", &small);
    assert_eq!(st, 200, "{v}");
    assert_eq!(s.fake.runs().last().unwrap().0, b);
    let text = info(&v)["infotexts"][0].as_str().unwrap().to_string();
    let hash_b = models[2]["hash"].as_str().unwrap();
    assert!(
        text.contains(&format!("Model hash: {hash_b}, Model: tiny_b")),
        "{text}"
    );
    assert_eq!(info(&v)["sd_model_name"], "tiny_b");
    assert_eq!(info(&v)["sd_model_hash"], hash_b);
    // png-info reads it back
    let (st, p) = post(&s, "/sdapi/v1/png-info", &json!({"image": v["images"][0]}));
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["info"], text);
    assert_eq!(p["items"], json!({}));
    assert_eq!(p["parameters"]["Seed"], "1");
    assert_eq!(p["parameters"]["Steps"], "2");
    assert_eq!(p["parameters"]["Model"], "tiny_b");
    // the same switch again loads nothing; back by short name, and by a sub-folder's name
    assert_eq!(
        post(
            &s,
            "/sdapi/v1/options",
            &json!({"sd_model_checkpoint": "tiny_b"})
        )
        .0,
        200
    );
    assert_eq!(s.fake.loads().len(), 2);
    for (name, i) in [("tiny_a", 1), ("sub_tiny_c", 0), (&sha256(&a)[..10], 1)] {
        let (st, v) = post(
            &s,
            "/sdapi/v1/options",
            &json!({"sd_model_checkpoint": name}),
        );
        assert_eq!(st, 200, "{name}: {v}");
        assert_eq!(
            get(&s, "/sdapi/v1/options").1["sd_model_checkpoint"],
            models[i]["title"],
            "{name}"
        );
    }
    assert_eq!(
        post(&s, "/sdapi/v1/refresh-checkpoints", &json!({})),
        (200, Value::Null)
    );
    assert_eq!(metric(&s, "sumi_jobs_total{outcome=\"ok\"}"), 1.0);
}

#[test]
fn a_checkpoint_for_one_request_and_one_that_cannot_load() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("models");
    std::fs::create_dir_all(&dir).unwrap();
    let a = fake_model(&dir, "tiny_a");
    fake_model(&dir, "tiny_b");
    let mut cfg = sumi_server::Config::new(a);
    cfg.models_dir = Some(dir.clone());
    let s = TestServer::start(cfg, Fake::new(0));
    let models = get(&s, "/sdapi/v1/sd-models").1;
    let (ta, tb) = (models[0]["title"].clone(), models[1]["title"].clone());
    let small = json!({"seed": 1, "steps": 2, "width": 64, "height": 64});
    // another checkpoint for one request, then back (A1111's override_settings)
    let one = |over: Value| {
        let mut body = small.clone();
        body["override_settings"] = over;
        let (st, v) = post(&s, "/sdapi/v1/txt2img", &body);
        assert_eq!(st, 200, "{v}");
        info(&v)["sd_model_name"].as_str().unwrap().to_string()
    };
    let current = || get(&s, "/sdapi/v1/options").1["sd_model_checkpoint"].clone();
    assert_eq!(one(json!({"sd_model_checkpoint": "tiny_b"})), "tiny_b");
    assert_eq!(current(), ta);
    assert_eq!(
        one(json!({"sd_model_checkpoint": "no such model"})),
        "tiny_a"
    );
    assert_eq!(one(json!({})), "tiny_a");
    let mut keep = small.clone();
    keep["override_settings"] = json!({"sd_model_checkpoint": tb});
    keep["override_settings_restore_afterwards"] = json!(false);
    let (st, v) = post(&s, "/sdapi/v1/txt2img", &keep);
    assert_eq!(st, 200, "{v}");
    assert_eq!(current(), tb);
    assert_eq!(one(json!({})), "tiny_b");
    // a checkpoint that cannot load: 500, the current one stays
    let broken = dir.join("tiny_x.safetensors");
    std::fs::write(&broken, "BROKEN").unwrap();
    let (st, v) = post(
        &s,
        "/sdapi/v1/options",
        &json!({"sd_model_checkpoint": "tiny_x"}),
    );
    assert_eq!(st, 500, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("cannot load tiny_x.safetensors"),
        "{v}"
    );
    let mut over = small.clone();
    over["override_settings"] = json!({"sd_model_checkpoint": "tiny_x"});
    let (st, v) = post(&s, "/sdapi/v1/txt2img", &over);
    assert_eq!(st, 500, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("cannot load"), "{v}");
    assert_eq!(current(), tb);
    assert_eq!(one(json!({})), "tiny_b");
    assert_eq!(metric(&s, "sumi_jobs_total{outcome=\"ok\"}"), 6.0);
    assert_eq!(metric(&s, "sumi_jobs_total{outcome=\"error\"}"), 1.0);
}

#[test]
fn settings_reach_the_request_and_the_infotext() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    let small = json!({"seed": 1, "steps": 2, "width": 64, "height": 64});
    let (st, v) = post(&s, "/sdapi/v1/txt2img", &small);
    assert_eq!(st, 200, "{v}");
    let r = s.fake.last();
    assert_eq!(
        (
            r.clip_skip,
            format!("{:?}", r.rng),
            r.exact_steps,
            r.inpainting_mask_weight
        ),
        (1, "Gpu".to_string(), false, 1.0)
    );
    let (st, _) = post(
        &s,
        "/sdapi/v1/options",
        &json!({"CLIP_stop_at_last_layers": 2, "randn_source": "CPU", "img2img_fix_steps": true,
                "inpainting_mask_weight": 0.5}),
    );
    assert_eq!(st, 200);
    let (_, v) = post(&s, "/sdapi/v1/txt2img", &small);
    let text = info(&v)["infotexts"][0].as_str().unwrap().to_string();
    assert!(
        text.contains("Clip skip: 2") && text.contains("RNG: CPU"),
        "{text}"
    );
    assert_eq!(info(&v)["clip_skip"], 2);
    let r = s.fake.last();
    assert_eq!(
        (
            r.clip_skip,
            format!("{:?}", r.rng),
            r.exact_steps,
            r.inpainting_mask_weight
        ),
        (2, "Cpu".to_string(), true, 0.5)
    );
    // a request's override_settings win for that request only
    let mut body = small.clone();
    body["override_settings"] = json!({"CLIP_stop_at_last_layers": "3", "randn_source": "NV"});
    post(&s, "/sdapi/v1/txt2img", &body);
    let r = s.fake.last();
    assert_eq!((r.clip_skip, format!("{:?}", r.rng)), (3, "Nv".to_string()));
    post(&s, "/sdapi/v1/txt2img", &small);
    assert_eq!(s.fake.last().clip_skip, 2);
    let opts = get(&s, "/sdapi/v1/options").1;
    assert_eq!(opts["CLIP_stop_at_last_layers"], 2);
    assert_eq!(opts["randn_source"], "CPU");
}

#[test]
fn listings_page_health_and_metrics() {
    let d = tempfile::tempdir().unwrap();
    let mut c = config(d.path());
    let vae = d.path().join("my.vae.safetensors");
    c.load.vae = Some(vae.clone());
    c.load.embeddings = Some(d.path().join("emb"));
    c.queue = 7;
    let fake = Fake {
        embeddings: Embeddings {
            loaded: vec![embedding("style", 768, 2)],
            skipped: vec![embedding("wide", 1024, 1)],
        },
        ..Fake::new(0)
    };
    let s = TestServer::start(c, fake);
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
    assert_eq!(get(&s, "/sdapi/v1/loras").1, json!([]));
    assert_eq!(get(&s, "/sdapi/v1/hypernetworks"), (200, json!([])));
    assert_eq!(get(&s, "/sdapi/v1/face-restorers"), (200, json!([])));
    assert_eq!(get(&s, "/sdapi/v1/script-info"), (200, json!([])));
    assert_eq!(get(&s, "/sdapi/v1/extensions"), (200, json!([])));
    assert_eq!(
        get(&s, "/sdapi/v1/scripts").1,
        json!({"txt2img": [], "img2img": ["sd upscale"]})
    );
    assert_eq!(get(&s, "/sdapi/v1/upscalers").1[1]["name"], "Lanczos");
    assert_eq!(
        get(&s, "/sdapi/v1/latent-upscale-modes")
            .1
            .as_array()
            .unwrap()
            .len(),
        6
    );
    assert_eq!(
        get(&s, "/sdapi/v1/sd-vae").1,
        json!([{"model_name": "my.vae.safetensors", "filename": vae.to_str().unwrap()}])
    );
    assert!(
        get(&s, "/sdapi/v1/memory").1["ram"]["total"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(
        get(&s, "/sdapi/v1/embeddings").1,
        json!({
            "loaded": {"style": {"step": 100, "sd_checkpoint": null, "sd_checkpoint_name": null, "shape": 768, "vectors": 2}},
            "skipped": {"wide": {"step": 100, "sd_checkpoint": null, "sd_checkpoint_name": null, "shape": 1024, "vectors": 1}},
        })
    );
    let flags = get(&s, "/sdapi/v1/cmd-flags").1;
    assert_eq!(flags["queue"], 7);
    assert_eq!(flags["host"], "127.0.0.1");
    assert_eq!(flags["listen"], false);
    assert_eq!(flags["api_auth_enabled"], false);
    assert_eq!(flags["vae_path"], vae.to_str().unwrap());
    assert!(flags["ckpt"]
        .as_str()
        .unwrap()
        .ends_with("tiny.safetensors"));
    assert_eq!(get(&s, "/ready").1, json!({"ready": true}));
    let (st, page) = get(&s, "/");
    assert_eq!(st, 200);
    assert!(page.as_str().unwrap().contains("<html"), "{page}");
    let r = agent().get(&s.url("/metrics")).call().unwrap();
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        "text/plain; version=0.0.4"
    );
    let metrics = get(&s, "/metrics").1.as_str().unwrap().to_string();
    assert!(metrics.contains("sumi_queue_depth 0"), "{metrics}");
    assert!(
        metrics.contains("# TYPE sumi_step_seconds summary"),
        "{metrics}"
    );
}

#[test]
fn every_listed_sampler_reaches_the_model_under_its_name() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    let (_, samplers) = get(&s, "/sdapi/v1/samplers");
    let names: Vec<&str> = samplers
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    // A1111 v1.10.1's 20, in its order
    assert_eq!(names.len(), 20, "{names:?}");
    assert_eq!(names[0], "DPM++ 2M");
    assert_eq!(
        names[12..17],
        ["DPM fast", "DPM adaptive", "Restart", "DDIM", "DDIM CFG++"]
    );
    assert_eq!(names[19], "LCM");
    let dpm = samplers
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "DPM++ 2M")
        .unwrap();
    assert_eq!(dpm["aliases"], json!(["k_dpmpp_2m"]));
    assert_eq!(dpm["options"]["scheduler"], "karras");
    // every sampler listed is accepted and reaches the model under its name
    for name in &names {
        let (st, v) = post(
            &s,
            "/sdapi/v1/txt2img",
            &json!({"seed": 3, "steps": 4, "width": 64, "height": 64, "sampler_name": name}),
        );
        assert_eq!(st, 200, "{name}: {v}");
        assert_eq!(s.fake.last().sampler.label(), *name);
        assert_eq!(info(&v)["sampler_name"], *name);
    }
    let ok = format!("sumi_jobs_total{{outcome=\"ok\"}} {}", names.len());
    assert!(get(&s, "/metrics").1.as_str().unwrap().contains(&ok));
    assert_eq!(
        metric(&s, "sumi_step_seconds_count"),
        4.0 * names.len() as f64
    );
}

#[test]
fn an_embeddings_list_is_empty_without_embeddings() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    assert_eq!(
        get(&s, "/sdapi/v1/embeddings").1,
        json!({"loaded": {}, "skipped": {}})
    );
}

#[test]
fn hypernetworks_are_listed_as_a1111_lists_them() {
    let d = tempfile::tempdir().unwrap();
    let folder = d.path().join("hn");
    for f in [
        "b.pt",
        "sub/a.pt",
        "sub/b.pt",
        ".hidden/c.pt",
        "None.pt",
        "e.ckpt",
    ] {
        let p = folder.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"x").unwrap();
    }
    let mut c = config(d.path());
    c.load.hypernetwork_dirs = vec![folder.clone()];
    let s = TestServer::start(c, Fake::new(0));
    let path = |f: &str| folder.join(f).to_string_lossy().into_owned();
    // A1111's dict: the later `b` (sorted by path) replaces the first in its place
    assert_eq!(
        get(&s, "/sdapi/v1/hypernetworks"),
        (
            200,
            json!([
                {"name": "b", "path": path("sub/b.pt")},
                {"name": "a", "path": path("sub/a.pt")},
            ])
        )
    );
}
