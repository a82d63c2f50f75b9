//! Hypernetworks through the front ends (fixtures by `tools/reference/make_hypernet_fixtures.py`):
//! `sumi txt2img --hypernetwork-dir` applies `<hypernet:…>` tags, names the unknown ones on
//! stderr, keeps the tag in the infotext and reproduces its picture with `--from-png`, and an old
//! infotext's `Hypernet`/`Hypernet strength` keys are pasted as a tag (as A1111 pastes them);
//! `sumi serve --hypernetwork-dir` lists the files at `/sdapi/v1/hypernetworks`, applies tags and
//! names the unknown ones in `info.warnings`.

mod serve_common;

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;
use serve_common::*;

fn hypernet_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/hypernet/sd1")
}

const PROMPT: &str = "a photograph of an astronaut riding a horse";
const SIZE: [&str; 8] = [
    "--steps", "3", "--width", "64", "--height", "64", "--seed", "11",
];

#[test]
fn the_cli_applies_names_and_reproduces() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let dir = hypernet_dir();
    let (m, dir) = (m.to_str().unwrap(), dir.to_str().unwrap());
    let prompt = format!("{PROMPT}<hypernet:hn_default:0.8> <hypernet:nowhere:1>");
    let o = Command::new(env!("CARGO_BIN_EXE_sumi"))
        .current_dir(d.path())
        .args(["txt2img", "--model", m, "--hypernetwork-dir", dir])
        .args(["--prompt", &prompt])
        .args(SIZE)
        .args(["--quiet", "--output", "a.png"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: hypernetwork <hypernet:nowhere:1> not found"),
        "{stderr}"
    );
    let text = sumi_pipeline::png::read_parameters(&d.path().join("a.png"))
        .unwrap()
        .unwrap();
    assert!(text.starts_with(&prompt), "{text}");
    let first = image::open(d.path().join("a.png")).unwrap().to_rgb8();

    let plain = cli(
        d.path(),
        &[&["txt2img", "--model", m, "--prompt", PROMPT][..], &SIZE].concat(),
        "b.png",
    );
    assert_ne!(plain.as_raw(), first.as_raw());

    let again = cli(
        d.path(),
        &[
            "txt2img",
            "--model",
            m,
            "--hypernetwork-dir",
            dir,
            "--from-png",
            "a.png",
        ],
        "c.png",
    );
    assert_eq!(again.as_raw(), first.as_raw());

    // an infotext of 2022: `Hypernet: hn_default, Hypernet strength: 0.8` is the tag
    let old = format!(
        "{PROMPT}\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 11, \
         Size: 64x64, Hypernet: hn_default, Hypernet strength: 0.8"
    );
    let tagged = format!("{PROMPT}<hypernet:hn_default:0.8>");
    let from_old = cli(
        d.path(),
        &[
            "txt2img",
            "--model",
            m,
            "--hypernetwork-dir",
            dir,
            "--infotext",
            &old,
        ],
        "d.png",
    );
    let from_tag = cli(
        d.path(),
        &[
            &[
                "txt2img",
                "--model",
                m,
                "--hypernetwork-dir",
                dir,
                "--prompt",
                &tagged,
            ][..],
            &SIZE,
        ]
        .concat(),
        "e.png",
    );
    assert_eq!(from_old.as_raw(), from_tag.as_raw());
    assert_ne!(from_tag.as_raw(), plain.as_raw());
}

#[test]
fn the_server_lists_applies_and_warns() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let dir = hypernet_dir();
    let s = Server::start(&m, &["--hypernetwork-dir", dir.to_str().unwrap()]);
    let (st, v) = get(&s, "/sdapi/v1/hypernetworks");
    assert_eq!(st, 200, "{v}");
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "bad",
            "hn_default",
            "hn_old",
            "hn_swish",
            "hn_w32",
            "hn_relu_ln"
        ]
    );
    assert!(v[5]["path"]
        .as_str()
        .unwrap()
        .ends_with("sub/hn_relu_ln.pt"));

    let job = |prompt: &str| {
        json!({"prompt": prompt, "steps": 3, "width": 64, "height": 64, "seed": 11,
               "sampler_name": "Euler"})
    };
    let (st, v) = post(&s, "/sdapi/v1/txt2img", &job(PROMPT));
    assert_eq!(st, 200, "{v}");
    let plain = decode_image(&v["images"][0]).0;
    let with = format!("{PROMPT} <hypernet:hn_relu_ln:1.2> <hypernet:nowhere>");
    let (st, v) = post(&s, "/sdapi/v1/txt2img", &job(&with));
    assert_eq!(st, 200, "{v}");
    let i = info(&v);
    let warnings = i["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{i}");
    assert!(warnings[0]
        .as_str()
        .unwrap()
        .contains("<hypernet:nowhere:1>"));
    assert_ne!(decode_image(&v["images"][0]).0.as_raw(), plain.as_raw());
    assert!(s.terminate().success());
}
