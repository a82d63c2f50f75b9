//! Every bad request gets its 4xx and a JSON `{"error", "detail"}` naming the field or limit,
//! never reaches the model, and the server keeps serving; 413 over the body limit; basic auth;
//! a failing or panicking model; a start without a loadable checkpoint; CORS as today (none).

use base64::Engine;
use serde_json::{json, Value};

use crate::common::*;
use crate::fake::Fake;

fn small(extra: Value) -> Value {
    let mut v = json!({"seed": 1, "steps": 2, "width": 64, "height": 64});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// `(path, body, status, a text the detail must contain)` for each bad request.
fn cases() -> Vec<(&'static str, Value, u16, &'static str)> {
    let init = b64(&png(64, 64, [10, 20, 30]));
    let not_image = b64(b"hello, not an image");
    let t2i = "/sdapi/v1/txt2img";
    let i2i = "/sdapi/v1/img2img";
    vec![
        (
            t2i,
            small(json!({"sampler_name": "Euler z"})),
            404,
            "Euler z",
        ),
        (
            t2i,
            small(json!({"scheduler": "sideways"})),
            404,
            "sideways",
        ),
        (
            t2i,
            small(json!({"width": 100000})),
            422,
            "width: 100000 is outside 64..=4096",
        ),
        (
            t2i,
            small(json!({"height": 8})),
            422,
            "height: 8 is outside 64..=4096",
        ),
        (
            t2i,
            small(json!({"steps": 100000})),
            422,
            "steps: 100000 is outside 1..=500",
        ),
        (t2i, small(json!({"steps": 0})), 422, "steps"),
        (
            t2i,
            small(json!({"batch_size": 1000})),
            422,
            "batch_size: 1000 is outside 1..=64",
        ),
        (
            t2i,
            small(json!({"n_iter": 5000})),
            422,
            "n_iter: 5000 is outside 1..=1000",
        ),
        (t2i, small(json!({"steps": "many"})), 422, "steps"),
        (
            t2i,
            small(json!({"steps": [2]})),
            422,
            "steps: expected an integer",
        ),
        (t2i, small(json!({"cfg_scale": 1000})), 422, "cfg_scale"),
        (t2i, small(json!({"seed": -5})), 422, "seed"),
        (
            t2i,
            small(json!({"seed": 99_999_999_999i64})),
            422,
            "over the limit",
        ),
        (
            t2i,
            small(json!({"subseed_strength": 3})),
            422,
            "subseed_strength",
        ),
        (
            t2i,
            small(json!({"enable_hr": true, "hr_checkpoint_name": "other.safetensors"})),
            404,
            "hr_checkpoint_name: Could not find checkpoint",
        ),
        (
            t2i,
            small(json!({"refiner_checkpoint": "no_such_refiner", "refiner_switch_at": 0.8})),
            404,
            "refiner_checkpoint: Could not find checkpoint with name no_such_refiner",
        ),
        (
            t2i,
            small(json!({"refiner_checkpoint": "model", "refiner_switch_at": 1.5})),
            422,
            "refiner_switch_at: 1.5 is outside (0, 1]",
        ),
        (
            t2i,
            small(json!({"enable_hr": true, "hr_scale": 100})),
            422,
            "hr_scale",
        ),
        (
            t2i,
            small(json!({"enable_hr": true, "hr_resize_x": 9000})),
            422,
            "hr_resize_x",
        ),
        (
            t2i,
            small(json!({"script_name": "x/y/z plot"})),
            422,
            "x/y/z plot",
        ),
        (
            t2i,
            small(json!({"override_settings": {"CLIP_stop_at_last_layers": 99}})),
            422,
            "CLIP_stop_at_last_layers",
        ),
        (
            t2i,
            small(json!({"override_settings": {"randn_source": "dice"}})),
            422,
            "randn_source",
        ),
        (
            t2i,
            small(json!({"override_settings": {"inpainting_mask_weight": 2}})),
            422,
            "inpainting_mask_weight",
        ),
        (t2i, json!([1, 2]), 422, "JSON object"),
        (i2i, small(json!({})), 400, "init_images"),
        (
            i2i,
            small(json!({"init_images": ["@@@not base64@@@"]})),
            400,
            "base64",
        ),
        (
            i2i,
            small(json!({"init_images": ["data:image/png;base64"]})),
            400,
            "comma",
        ),
        (
            i2i,
            small(json!({"init_images": [not_image]})),
            400,
            "init_images[0]",
        ),
        (
            i2i,
            small(json!({"init_images": [init], "resize_mode": 9})),
            422,
            "resize_mode",
        ),
        (
            i2i,
            small(json!({"init_images": [init], "denoising_strength": 2})),
            422,
            "denoising_strength",
        ),
        (
            i2i,
            small(json!({"init_images": [init], "mask": "%%%"})),
            400,
            "mask",
        ),
        (
            i2i,
            small(json!({"init_images": [init], "mask": init, "inpainting_fill": 7})),
            422,
            "inpainting_fill",
        ),
        (
            i2i,
            small(json!({"init_images": [init], "mask": init, "mask_blur": 1000})),
            422,
            "mask_blur: 1000 is outside 0..=256",
        ),
        ("/sdapi/v1/png-info", json!({"image": "%%%"}), 400, "image"),
        (
            "/sdapi/v1/png-info",
            json!({"image": not_image}),
            400,
            "not a readable image",
        ),
        ("/sdapi/v1/png-info", json!({}), 422, "image"),
        (
            "/sdapi/v1/options",
            json!({"sd_model_checkpoint": "nope.safetensors"}),
            404,
            "nope.safetensors",
        ),
        (
            "/sdapi/v1/options",
            json!({"sd_model_checkpoint": 5}),
            422,
            "expected a string",
        ),
        (
            "/sdapi/v1/options",
            json!({"CLIP_stop_at_last_layers": 0}),
            422,
            "CLIP_stop_at_last_layers",
        ),
        ("/sdapi/v1/no-such-endpoint", json!({}), 404, "Not Found"),
    ]
}

#[test]
fn bad_requests_get_their_4xx_and_the_server_keeps_serving() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    let cases = cases();
    for (path, body, status, needle) in cases {
        let (st, v) = post(&s, path, &body);
        assert_eq!(st, status, "{path} {body}: {v}");
        assert!(v["error"].is_string(), "{path} {body}: {v}");
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(needle),
            "{path} {body}: expected `{needle}` in {v}"
        );
    }
    for raw in [&b"{not json"[..], b"", b"{\"steps\": 2,}"] {
        let (st, v) = post_raw(&s, "/sdapi/v1/txt2img", raw);
        assert_eq!(st, 422, "{v}");
        assert!(
            v["detail"].as_str().unwrap().contains("malformed JSON"),
            "{v}"
        );
    }
    let (st, v) = get(&s, "/sdapi/v1/txt2img");
    assert_eq!((st, v["error"].as_str()), (405, Some("MethodNotAllowed")));
    assert!(
        s.fake.runs().is_empty(),
        "a refused request reached the model"
    );
    // a refused setting is not kept
    assert_eq!(
        get(&s, "/sdapi/v1/options").1["CLIP_stop_at_last_layers"],
        1
    );
    // 60 MB: over the default 50 MB limit
    let big = format!("{{\"prompt\": \"{}\"}}", "a".repeat(60 << 20));
    let (st, v) = post_raw(&s, "/sdapi/v1/txt2img", big.as_bytes());
    assert_eq!(st, 413, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("limit of 52428800 bytes"),
        "{v}"
    );
    // still serving, correctly
    let (st, v) = get(&s, "/health");
    assert_eq!((st, v["status"].as_str()), (200, Some("ok")));
    let (st, v) = post(&s, "/sdapi/v1/txt2img", &small(json!({})));
    assert_eq!(st, 200, "{v}");
    assert_eq!(info(&v)["seed"], 1);
    assert_eq!(s.fake.runs().len(), 1);
}

#[test]
fn the_body_limit_is_configurable_and_applies_to_every_body() {
    let d = tempfile::tempdir().unwrap();
    let mut c = config(d.path());
    c.body_limit = 1000;
    let s = TestServer::start(c, Fake::new(0));
    let body = |n: usize| format!("{{\"prompt\": \"{}\"}}", "a".repeat(n));
    for path in [
        "/sdapi/v1/txt2img",
        "/sdapi/v1/options",
        "/sdapi/v1/png-info",
    ] {
        // declared far over the limit: refused at once; a little over: read and refused
        for n in [990, 10_000] {
            let (st, v) = post_raw(&s, path, body(n).as_bytes());
            assert_eq!(st, 413, "{path} {n}: {v}");
            assert_eq!(v["error"], "PayloadTooLarge");
            assert!(v["detail"]
                .as_str()
                .unwrap()
                .contains("limit of 1000 bytes"));
        }
    }
    let (st, v) = post_raw(&s, "/sdapi/v1/txt2img", body(900).as_bytes());
    assert_eq!(st, 200, "{v}");
    assert_eq!(get(&s, "/sdapi/v1/cmd-flags").1["body_limit"], 1000);
}

#[test]
fn basic_auth_guards_everything_but_health_and_ready_and_never_shows_the_password() {
    let d = tempfile::tempdir().unwrap();
    let mut c = config(d.path());
    c.auth = Some(("alice".into(), "s3cr3t-pw".into()));
    let s = TestServer::start(c, Fake::new(0));
    let r = agent().get(&s.url("/sdapi/v1/samplers")).call().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        r.headers().get("www-authenticate").unwrap(),
        "Basic realm=\"sumi\""
    );
    assert_eq!(get(&s, "/health").0, 200);
    assert_eq!(get(&s, "/ready").0, 200);
    for path in ["/", "/metrics", "/sdapi/v1/progress", "/sdapi/v1/options"] {
        let (st, v) = get(&s, path);
        assert_eq!(st, 401, "{path}");
        assert_eq!(v["error"], "Unauthorized", "{path}");
    }
    let (st, _) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({"steps": 1, "width": 64, "height": 64}),
    );
    assert_eq!(st, 401);
    assert!(s.fake.runs().is_empty());
    let enc = |c: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(c)
        )
    };
    let call = |path: &str, a: &str| {
        let mut r = agent()
            .get(&s.url(path))
            .header("authorization", a)
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    for wrong in [
        enc("alice:guess"),
        enc("alice:s3cr3t-pw2"),
        enc("alice:s3cr3t-p"),
        enc("bob:s3cr3t-pw"),
        "Bearer s3cr3t-pw".into(),
        "Basic %%%".into(),
    ] {
        assert_eq!(call("/sdapi/v1/samplers", &wrong).0, 401, "{wrong}");
    }
    assert_eq!(call("/sdapi/v1/samplers", &enc("alice:s3cr3t-pw")).0, 200);
    // the scheme is case-insensitive (RFC 7235 §2.1), as FastAPI's HTTPBasic reads it
    for scheme in ["basic", "BASIC", "bAsIc"] {
        let a = format!("{scheme} YWxpY2U6czNjcjN0LXB3");
        assert_eq!(call("/sdapi/v1/samplers", &a).0, 200, "{a}");
    }
    let (st, flags) = call("/sdapi/v1/cmd-flags", &enc("alice:s3cr3t-pw"));
    assert_eq!(st, 200);
    assert!(!flags.contains("s3cr3t"), "{flags}");
    assert!(flags.contains("\"api_auth_enabled\":true"), "{flags}");
}

#[test]
fn model_failures_are_422_or_500_and_the_worker_lives_on() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    let job = |prompt: &str| {
        post(
            &s,
            "/sdapi/v1/txt2img",
            &json!({"prompt": prompt, "steps": 2, "width": 64, "height": 64}),
        )
    };
    let (st, v) = job("FAIL_INVALID");
    assert_eq!(
        (st, v["error"].as_str()),
        (422, Some("ValidationError")),
        "{v}"
    );
    assert!(
        v["detail"].as_str().unwrap().contains("FAIL_INVALID"),
        "{v}"
    );
    let (st, v) = job("FAIL_INTERNAL");
    assert_eq!(
        (st, v["error"].as_str()),
        (500, Some("GenerationError")),
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .starts_with("generation failed: "),
        "{v}"
    );
    let (st, v) = job("PANIC");
    assert_eq!(st, 500, "{v}");
    assert_eq!(
        v["detail"],
        "generation failed: internal error in the pipeline"
    );
    // idle again, and serving
    let p = get(&s, "/sdapi/v1/progress").1;
    assert_eq!(p["state"]["job_count"], 0, "{p}");
    let (st, v) = job("fine");
    assert_eq!(st, 200, "{v}");
    assert_eq!(metric(&s, "sumi_jobs_total{outcome=\"error\"}"), 3.0);
    assert_eq!(metric(&s, "sumi_jobs_total{outcome=\"ok\"}"), 1.0);
    assert_eq!(metric(&s, "sumi_job_seconds_count"), 4.0);
}

#[test]
fn a_checkpoint_that_cannot_load_stops_the_start_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("missing.safetensors");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = sumi_server::Config::new(missing.clone());
        sumi_server::serve_with(c, std::sync::Arc::new(Fake::new(0)), l, async {}).await
    });
    match r {
        Err(sumi_server::ServerError::Load { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected a load error, got {other:?}"),
    }
}

#[test]
fn no_cors_headers_and_preflight_is_not_allowed() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    let r = agent()
        .get(&s.url("/sdapi/v1/samplers"))
        .header("origin", "http://elsewhere.example")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = agent()
        .options(&s.url("/sdapi/v1/txt2img"))
        .header("origin", "http://elsewhere.example")
        .header("access-control-request-method", "POST")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert!(r.headers().get("access-control-allow-origin").is_none());
}
