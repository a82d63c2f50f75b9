//! A checkpoint that fails or panics (loading, or becoming the current model) fails its own
//! request with the reason; the worker keeps serving, `/ready` and `/health` tell the truth,
//! and shutdown finishes.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::fake::Fake;

/// POSTs JSON with a short timeout: a job that hangs fails the test quickly.
fn post_quick(s: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut r = agent
        .post(&s.url(path))
        .send_json(body)
        .unwrap_or_else(|e| panic!("{path}: no answer ({e}): the worker is gone"));
    let text = r.body_mut().read_to_string().unwrap();
    (
        r.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn failing_checkpoints_fail_their_request_and_the_worker_serves_on() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("models");
    std::fs::create_dir_all(&dir).unwrap();
    let good = fake_model(&dir, "tiny_a");
    for (name, bytes) in [
        ("broken", "BROKEN"),
        ("panics", "PANIC_LOAD"),
        ("bad_embeddings", "PANIC_EMBEDDINGS"),
    ] {
        std::fs::write(dir.join(format!("{name}.safetensors")), bytes).unwrap();
    }
    let mut cfg = sumi_server::Config::new(good.clone());
    cfg.models_dir = Some(dir.clone());
    let s = TestServer::start(cfg, Fake::new(0));
    let small = json!({"seed": 1, "steps": 2, "width": 64, "height": 64});
    let fine = || {
        let (st, v) = post_quick(&s, "/sdapi/v1/txt2img", &small);
        assert_eq!(st, 200, "{v}");
        assert_eq!(info(&v)["sd_model_name"], "tiny_a");
    };
    for name in ["broken", "panics", "bad_embeddings"] {
        // switching for good
        let (st, v) = post_quick(
            &s,
            "/sdapi/v1/options",
            &json!({ "sd_model_checkpoint": name }),
        );
        assert_eq!(st, 500, "{name}: {v}");
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("cannot load {name}.safetensors")),
            "{name}: {v}"
        );
        fine();
        // for one request, kept afterwards or not
        for restore in [true, false] {
            let mut body = small.clone();
            body["override_settings"] = json!({ "sd_model_checkpoint": name });
            body["override_settings_restore_afterwards"] = json!(restore);
            let (st, v) = post_quick(&s, "/sdapi/v1/txt2img", &body);
            if name == "bad_embeddings" {
                // it runs; it cannot become the current model, which stays
                assert_eq!(st, 200, "{name} restore {restore}: {v}");
                assert_eq!(info(&v)["sd_model_name"], name);
            } else {
                assert_eq!(st, 500, "{name} restore {restore}: {v}");
                assert_eq!(v["error"], "GenerationError", "{v}");
                assert!(v["detail"].as_str().unwrap().contains("cannot load"), "{v}");
            }
            fine();
        }
        let (st, v) = get(&s, "/ready");
        assert_eq!((st, v), (200, json!({"ready": true})), "{name}");
        assert_eq!(get(&s, "/health").0, 200);
        assert_eq!(
            get(&s, "/sdapi/v1/options").1["sd_model_checkpoint"]
                .as_str()
                .unwrap()
                .split(' ')
                .next(),
            Some("tiny_a.safetensors")
        );
    }
    assert_eq!(get(&s, "/sdapi/v1/progress").1["state"]["job_count"], 0);
    assert_eq!(metric(&s, "sumi_ready"), 1.0);
    s.join().expect("a clean stop");
}

#[test]
fn a_dead_worker_is_reported_its_jobs_answered_and_shutdown_finishes() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    let job = |prompt: &str| {
        post_quick(
            &s,
            "/sdapi/v1/txt2img",
            &json!({"prompt": prompt, "steps": 2, "width": 64, "height": 64}),
        )
    };
    let (st, v) = job("ESCAPE");
    assert_eq!(st, 500, "{v}");
    wait_until("the worker is reported gone", || get(&s, "/ready").0 == 503);
    assert_eq!(
        get(&s, "/ready").1,
        json!({"ready": false, "detail": "the generation worker stopped"})
    );
    assert_eq!(get(&s, "/health").0, 503);
    assert_eq!(metric(&s, "sumi_ready"), 0.0);
    let (st, v) = job("fine");
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["detail"], "the generation worker stopped");
    assert!(s.join().is_err(), "the worker's end is the server's error");
}
