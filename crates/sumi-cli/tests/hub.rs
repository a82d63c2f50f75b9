//! Models named by Hugging Face Hub id on the command line, against the mock Hub of
//! `sumi_testkit::mock_hub` (`HF_ENDPOINT` pointing at it, `HF_HUB_CACHE` a temporary folder):
//! `model-info` downloads and identifies a tiny checkpoint and a tiny diffusers repo, offline
//! mode reuses the cache, `txt2img` without `--model` takes `$SUMI_MODEL` or else the default
//! model from the Hub, and errors name the option and the id.

use std::path::Path;
use std::process::{Command, Output};

use sumi_testkit::mock_hub::{sha256_hex, MockHub, MockRepo};

const C1: &str = "abcdefabcdefabcdefabcdefabcdefabcdefabcd";
const DEFAULT_REPO: &str = "stable-diffusion-v1-5/stable-diffusion-v1-5";

fn sumi(mock: &MockHub, cache: &Path, cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sumi"));
    c.current_dir(cwd)
        .env("HF_ENDPOINT", &mock.url)
        .env("HF_HUB_CACHE", cache)
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .env_remove("SUMI_MODEL");
    c
}

fn ok(o: Output) -> (String, String) {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "stderr: {err}");
    (String::from_utf8_lossy(&o.stdout).into_owned(), err)
}

fn fails(o: Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The files under `dir` as repo paths and bytes.
fn files_of(dir: &Path, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = format!("{prefix}{}", e.file_name().to_str().unwrap());
        if e.path().is_dir() {
            files_of(&e.path(), &format!("{name}/"), out);
        } else {
            out.push((name, std::fs::read(e.path()).unwrap()));
        }
    }
}

#[test]
fn model_info_downloads_a_hub_checkpoint_then_works_offline() {
    let mock = MockHub::start();
    let d = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(sumi_testkit::tiny_model("sd1", d.path())).unwrap();
    let readme = b"# tiny".to_vec();
    mock.add(
        "org/tiny",
        MockRepo::new(
            C1,
            &[
                ("tiny_sd1.safetensors", bytes.clone()),
                ("README.md", readme),
            ],
        ),
    );
    let cache = d.path().join("hub");
    let (out, err) = ok(sumi(&mock, &cache, d.path())
        .args(["model-info", "org/tiny", "--json"])
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["architecture"], "sd1");
    assert_eq!(v["sha256"], sha256_hex(&bytes));
    assert!(
        err.starts_with(&format!(
            "org/tiny/tiny_sd1.safetensors: downloading {:.2} MB from {} into {}\n",
            bytes.len() as f64 / 1e6,
            mock.url,
            cache.display()
        )),
        "{err}"
    );
    assert!(err.contains("downloaded and checked in"), "{err}");
    let blob = cache
        .join("models--org--tiny/blobs")
        .join(sha256_hex(&bytes));
    assert_eq!(std::fs::metadata(blob).unwrap().len(), bytes.len() as u64);
    // offline: from the cache, the Hub not asked
    let asked = mock.seen().len();
    let (out, err) = ok(sumi(&mock, &cache, d.path())
        .env("HF_HUB_OFFLINE", "1")
        .args(["model-info", "org/tiny"])
        .output()
        .unwrap());
    assert!(out.contains("sd1"), "{out}");
    assert!(err.starts_with("org/tiny/tiny_sd1.safetensors ("), "{err}");
    assert!(err.contains(", in the Hub cache: "), "{err}");
    assert_eq!(mock.seen().len(), asked);
    let err = fails(
        sumi(&mock, &cache, d.path())
            .env("HF_HUB_OFFLINE", "1")
            .args(["model-info", "org/other"])
            .output()
            .unwrap(),
    );
    assert!(
        err.starts_with(&format!(
            "error: model-info org/other: no such file or folder, so taken as a Hub id: \
             org/other: not in the Hub cache {} and HF_HUB_OFFLINE is set",
            cache.display()
        )),
        "{err}"
    );
}

#[test]
fn model_info_fetches_a_diffusers_repo() {
    let mock = MockHub::start();
    let d = tempfile::tempdir().unwrap();
    sumi_testkit::tiny_model("sd1", d.path());
    let mut files = Vec::new();
    files_of(&d.path().join("diffusers"), "", &mut files);
    assert!(files.len() >= 7, "{files:?}");
    files.push((
        "unet/diffusion_pytorch_model.fp16.safetensors".into(),
        vec![0; 10],
    ));
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    mock.add("org/tiny-diffusers", MockRepo::new(C1, &files));
    let cache = d.path().join("hub");
    let (out, err) = ok(sumi(&mock, &cache, d.path())
        .args(["model-info", "org/tiny-diffusers", "--json"])
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["architecture"], "sd1", "{v}");
    let snapshot = cache.join("models--org--tiny-diffusers/snapshots").join(C1);
    assert!(err.contains("org/tiny-diffusers: 8 files, "), "{err}");
    assert!(
        err.trim_end().ends_with(&snapshot.display().to_string()),
        "{err}"
    );
    assert!(!snapshot
        .join("unet/diffusion_pytorch_model.fp16.safetensors")
        .exists());
}

#[test]
fn txt2img_without_model_takes_sumi_model_else_the_default_from_the_hub() {
    let mock = MockHub::start();
    let d = tempfile::tempdir().unwrap();
    let local = sumi_testkit::tiny_model("sd1", d.path());
    let bytes = std::fs::read(&local).unwrap();
    mock.add(
        DEFAULT_REPO,
        MockRepo::new(C1, &[("v1-5-pruned-emaonly.safetensors", bytes.clone())]),
    );
    let cache = d.path().join("hub");
    let args = [
        "txt2img", "--prompt", "a fox", "--steps", "1", "--width", "64", "--height", "64",
    ];
    let (out, err) = ok(sumi(&mock, &cache, d.path()).args(args).output().unwrap());
    assert!(out.contains("outputs/00000.png"), "{out}");
    let first = err.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "no --model given (nor SUMI_MODEL): the default model \
             {DEFAULT_REPO}/v1-5-pruned-emaonly.safetensors: downloading {:.2} MB from {} into {}",
            bytes.len() as f64 / 1e6,
            mock.url,
            cache.display()
        )
    );
    let info = ok(sumi(&mock, &cache, d.path())
        .args(["png-info", "outputs/00000.png"])
        .output()
        .unwrap())
    .0;
    assert!(info.contains("Model: v1-5-pruned-emaonly,"), "{info}");
    // once downloaded, the cache answers
    let (_, err) = ok(sumi(&mock, &cache, d.path()).args(args).output().unwrap());
    assert!(
        err.starts_with(&format!(
            "no --model given (nor SUMI_MODEL): the default model \
             {DEFAULT_REPO}/v1-5-pruned-emaonly.safetensors ({:.2} MB, in the Hub cache: ",
            bytes.len() as f64 / 1e6
        )),
        "{err}"
    );
    // SUMI_MODEL names a local file: the Hub is not asked
    let asked = mock.seen().len();
    let (_, err) = ok(sumi(&mock, &cache, d.path())
        .env("SUMI_MODEL", &local)
        .args(args)
        .output()
        .unwrap());
    assert!(!err.contains("Hub"), "{err}");
    assert_eq!(mock.seen().len(), asked);
}

#[test]
fn bad_and_missing_ids_are_named_with_the_option() {
    let mock = MockHub::start();
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("hub");
    let err = fails(
        sumi(&mock, &cache, d.path())
            .args(["txt2img", "--model", "org/name/../x", "--prompt", "a"])
            .output()
            .unwrap(),
    );
    assert!(
        err.starts_with("error: --model org/name/../x: `org/name/../x` is not a Hub id: `../x`: empty, `.` and `..` parts are not allowed"),
        "{err}"
    );
    // no Hub to be reached (a closed port): the default model's error says where it came from
    let err = fails(
        sumi(&mock, &cache, d.path())
            .env("HF_ENDPOINT", "http://127.0.0.1:1")
            .args(["txt2img", "--prompt", "a"])
            .output()
            .unwrap(),
    );
    assert!(
        err.starts_with(&format!(
            "error: no --model given (nor SUMI_MODEL), so the default model from the Hub: \
             {DEFAULT_REPO}/v1-5-pruned-emaonly.safetensors: cannot reach \
             http://127.0.0.1:1/{DEFAULT_REPO}/resolve/main/v1-5-pruned-emaonly.safetensors: "
        )),
        "{err}"
    );
    let err = fails(
        sumi(&mock, &cache, d.path())
            .args(["model-info", "org/missing"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        err.trim_end(),
        format!(
            "error: model-info org/missing: no such file or folder, so taken as a Hub id: \
             org/missing: not found on the Hub at {} (RepoNotFound)",
            mock.url
        )
    );
}
