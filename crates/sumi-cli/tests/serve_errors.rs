//! `sumi serve` refuses every bad request with its 4xx and a JSON `{"error", "detail"}` naming
//! the field or limit, keeps serving, and answers 413 to a body over the limit; basic auth.

mod serve_common;

use base64::Engine;
use serde_json::{json, Value};
use serve_common::*;

fn small(extra: Value) -> Value {
    let mut v = json!({"seed": 1, "steps": 2, "width": 64, "height": 64});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

#[test]
fn bad_requests_get_their_4xx_and_the_server_keeps_serving() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let s = Server::start(&m, &[]);
    let init = b64_file(&init_png());
    let not_image = base64::engine::general_purpose::STANDARD.encode(b"hello, not an image");
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/sdapi/v1/txt2img",
            small(json!({"sampler_name": "Euler z"})),
            404,
            "Euler z",
        ),
        (
            "/sdapi/v1/txt2img",
            small(json!({"scheduler": "sideways"})),
            404,
            "sideways",
        ),
        (
            "/sdapi/v1/txt2img",
            small(json!({"width": 100000})),
            422,
            "width: 100000 is outside 64..=4096",
        ),
        (
            "/sdapi/v1/txt2img",
            small(json!({"height": 8})),
            422,
            "height: 8 is outside 64..=4096",
        ),
        (
            "/sdapi/v1/txt2img",
            small(json!({"steps": 100000})),
            422,
            "steps: 100000 is outside 1..=500",
        ),
        (
            "/sdapi/v1/txt2img",
            small(json!({"steps": 0})),
            422,
            "steps",
        ),
        (
            "/sdapi/v1/txt2img",
            small(json!({"batch_size": 1000})),
            422,
            "batch_size: 1000 is outside 1..=64",
        ),
        (
            "/sdapi/v1/txt2img",
            small(json!({"n_iter": 5000})),
            422,
            "n_iter: 5000 is outside 1..=1000",
        ),
        (
            "/sdapi/v1/txt2img",
            small(json!({"steps": "many"})),
            422,
            "steps",
        ),
        (
            "/sdapi/v1/txt2img",
            small(json!({"cfg_scale": 1000})),
            422,
            "cfg_scale",
        ),
        ("/sdapi/v1/txt2img", small(json!({"seed": -5})), 422, "seed"),
        (
            "/sdapi/v1/txt2img",
            small(json!({"subseed_strength": 3})),
            422,
            "subseed_strength",
        ),
        (
            "/sdapi/v1/txt2img",
            small(json!({"prompt": "(abc:1.2.3)"})),
            422,
            "1.2.3",
        ),
        (
            "/sdapi/v1/txt2img",
            small(json!({"enable_hr": true})),
            422,
            "enable_hr",
        ),
        (
            "/sdapi/v1/txt2img",
            small(json!({"script_name": "x/y/z plot"})),
            404,
            "x/y/z plot",
        ),
        (
            "/sdapi/v1/txt2img",
            small(json!({"override_settings": {"CLIP_stop_at_last_layers": 99}})),
            422,
            "CLIP_stop_at_last_layers",
        ),
        (
            "/sdapi/v1/txt2img",
            small(json!({"override_settings": {"randn_source": "dice"}})),
            422,
            "randn_source",
        ),
        ("/sdapi/v1/txt2img", json!([1, 2]), 422, "JSON object"),
        ("/sdapi/v1/img2img", small(json!({})), 400, "init_images"),
        (
            "/sdapi/v1/img2img",
            small(json!({"init_images": ["@@@not base64@@@"]})),
            400,
            "base64",
        ),
        (
            "/sdapi/v1/img2img",
            small(json!({"init_images": [not_image]})),
            400,
            "init_images[0]",
        ),
        (
            "/sdapi/v1/img2img",
            small(json!({"init_images": [init], "resize_mode": 9})),
            422,
            "resize_mode",
        ),
        (
            "/sdapi/v1/img2img",
            small(json!({"init_images": [init], "denoising_strength": 2})),
            422,
            "denoising_strength",
        ),
        (
            "/sdapi/v1/img2img",
            small(json!({"init_images": [init], "mask": "%%%"})),
            400,
            "mask",
        ),
        (
            "/sdapi/v1/img2img",
            small(json!({"init_images": [init], "mask": init, "inpainting_fill": 7})),
            422,
            "inpainting_fill",
        ),
        ("/sdapi/v1/png-info", json!({"image": "%%%"}), 400, "image"),
        ("/sdapi/v1/png-info", json!({}), 422, "image"),
        (
            "/sdapi/v1/options",
            json!({"sd_model_checkpoint": "nope.safetensors"}),
            404,
            "nope.safetensors",
        ),
        (
            "/sdapi/v1/options",
            json!({"CLIP_stop_at_last_layers": 0}),
            422,
            "CLIP_stop_at_last_layers",
        ),
        ("/sdapi/v1/no-such-endpoint", json!({}), 404, "Not Found"),
    ];
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
    let (st, _) = get(&s, "/sdapi/v1/txt2img");
    assert_eq!(st, 405);
    // 60 MB: over the 50 MB limit
    let big = format!("{{\"prompt\": \"{}\"}}", "a".repeat(60 << 20));
    let (st, v) = post_raw(&s, "/sdapi/v1/txt2img", big.as_bytes());
    assert_eq!(st, 413, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("limit"));
    // still serving, correctly
    let (st, v) = get(&s, "/health");
    assert_eq!((st, v["status"].as_str()), (200, Some("ok")));
    let (st, v) = post(&s, "/sdapi/v1/txt2img", &small(json!({})));
    assert_eq!(st, 200, "{v}");
    assert_eq!(info(&v)["seed"], 1);
}

#[test]
fn basic_auth_guards_everything_but_health_and_never_shows_the_password() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let s = Server::start(&m, &["--api-auth", "alice:s3cr3t-pw"]);
    let (st, v) = get(&s, "/sdapi/v1/samplers");
    assert_eq!(st, 401, "{v}");
    assert_eq!(get(&s, "/health").0, 200);
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cr3t-pw")
    );
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:guess")
    );
    let call = |path: &str, a: &str| {
        let mut r = agent()
            .get(&s.url(path))
            .header("authorization", a)
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    assert_eq!(call("/sdapi/v1/samplers", &wrong).0, 401);
    assert_eq!(call("/sdapi/v1/samplers", &auth).0, 200);
    let (st, flags) = call("/sdapi/v1/cmd-flags", &auth);
    assert_eq!(st, 200);
    assert!(!flags.contains("s3cr3t"), "{flags}");
    assert!(flags.contains("\"api_auth_enabled\":true"), "{flags}");
}

#[test]
fn serve_help_exits_0_and_bad_flags_are_refused() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sumi"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--model",
        "--models-dir",
        "--host",
        "--port",
        "--queue",
        "--api-auth",
        "--embeddings",
        "--vae",
        "--preview-decoder",
        "--precision",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sumi"))
        .args(["serve", "--port", "0", "--api-auth", "nocolon", "--model"])
        .arg(&m)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--api-auth"));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sumi"))
        .args([
            "serve",
            "--port",
            "0",
            "--models-dir",
            "no/such/dir",
            "--model",
        ])
        .arg(&m)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--models-dir"));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sumi"))
        .args(["serve", "--port", "0", "--model", "missing.safetensors"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.safetensors"));
}
