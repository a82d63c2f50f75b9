//! LoRAs through the front ends: `sumi txt2img --lora-dir` applies `<lora:…>` tags, names
//! the unknown ones on stderr, writes `Lora hashes` and reproduces its picture with
//! `--from-png`; `sumi serve --lora-dir` lists the files at `/sdapi/v1/loras`, applies tags,
//! names the unknown ones in `info.warnings`, and a job without networks after one with three
//! gives the pixels of a fresh server.

mod serve_common;

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;
use serve_common::*;

fn lora_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/lora/sd1")
}

const PROMPT: &str = "a photograph of an astronaut riding a horse";

#[test]
fn the_cli_applies_names_and_reproduces() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let dir = lora_dir();
    let prompt = format!("{PROMPT} <lora:lora_kohya:0.8> <lora:nowhere:1>");
    let args = [
        "txt2img",
        "--model",
        m.to_str().unwrap(),
        "--lora-dir",
        dir.to_str().unwrap(),
        "--prompt",
        &prompt,
        "--steps",
        "3",
        "--width",
        "64",
        "--height",
        "64",
        "--seed",
        "11",
        "--quiet",
        "--output",
        "a.png",
    ];
    let o = Command::new(env!("CARGO_BIN_EXE_sumi"))
        .current_dir(d.path())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: Lora not found: nowhere"),
        "{stderr}"
    );
    let text = sumi_pipeline::png::read_parameters(&d.path().join("a.png"))
        .unwrap()
        .unwrap();
    assert!(text.contains("Lora hashes: \"lora_kohya: "), "{text}");
    let first = image::open(d.path().join("a.png")).unwrap().to_rgb8();

    // the same prompt without the LoRA makes another picture
    let plain = cli(
        d.path(),
        &[
            "txt2img",
            "--model",
            m.to_str().unwrap(),
            "--prompt",
            PROMPT,
            "--steps",
            "3",
            "--width",
            "64",
            "--height",
            "64",
            "--seed",
            "11",
        ],
        "b.png",
    );
    assert_ne!(plain.as_raw(), first.as_raw());

    // --from-png re-applies it by name
    let again = cli(
        d.path(),
        &[
            "txt2img",
            "--model",
            m.to_str().unwrap(),
            "--lora-dir",
            dir.to_str().unwrap(),
            "--from-png",
            "a.png",
        ],
        "c.png",
    );
    assert_eq!(again.as_raw(), first.as_raw());
}

#[test]
fn the_server_lists_applies_warns_and_restores() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let dir = lora_dir();
    let s = Server::start(&m, &["--lora-dir", dir.to_str().unwrap()]);

    let (st, v) = get(&s, "/sdapi/v1/loras");
    assert_eq!(st, 200, "{v}");
    let list = v.as_array().unwrap();
    assert!(list.len() >= 20, "{v}");
    let sub = list
        .iter()
        .find(|e| e["name"] == "lora_compvis")
        .expect("the subfolder's LoRA is listed");
    assert_eq!(sub["alias"], "compvis_alias", "{sub}");
    assert!(sub["path"]
        .as_str()
        .unwrap()
        .ends_with("sub/lora_compvis.safetensors"));
    assert!(sub["metadata"].is_object());
    let (st, v) = post(&s, "/sdapi/v1/refresh-loras", &json!({}));
    assert_eq!((st, v), (200, serde_json::Value::Null));

    let job = |prompt: &str| {
        json!({"prompt": prompt, "steps": 3, "width": 64, "height": 64, "seed": 11,
               "sampler_name": "Euler"})
    };
    let plain = |s: &Server| {
        let (st, v) = post(s, "/sdapi/v1/txt2img", &job(PROMPT));
        assert_eq!(st, 200, "{v}");
        decode_image(&v["images"][0]).0
    };
    let three =
        format!("{PROMPT} <lora:lora_kohya:0.7> <lora:loha:1> <lora:nowhere:1> <lora:locon:0.5>");
    let (st, v) = post(&s, "/sdapi/v1/txt2img", &job(&three));
    assert_eq!(st, 200, "{v}");
    let i = info(&v);
    assert_eq!(i["warnings"], json!(["Lora not found: nowhere"]), "{i}");
    assert!(i["infotexts"][0]
        .as_str()
        .unwrap()
        .contains("Lora hashes: \"lora_kohya: "));
    let with = decode_image(&v["images"][0]).0;
    let after = plain(&s);
    assert!(s.terminate().success());
    let fresh_server = Server::start(&m, &[]);
    let fresh = plain(&fresh_server);
    assert!(fresh_server.terminate().success());
    assert_ne!(with.as_raw(), fresh.as_raw());
    assert_eq!(after.as_raw(), fresh.as_raw());
}
