//! `sumi model-info` on the tiny fixture models and on bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

fn sumi() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sumi"))
}

fn fixture(arch: &str, dir: &Path) -> PathBuf {
    sumi_testkit::tiny_model(arch, dir)
}

fn info(path: &Path, extra: &[&str]) -> serde_json::Value {
    info_env(path, extra, &[])
}

/// [`info`] with environment variables set.
fn info_env(path: &Path, extra: &[&str], env: &[(&str, &Path)]) -> serde_json::Value {
    let out = sumi()
        .envs(env.iter().copied())
        .arg("model-info")
        .arg(path)
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn identifies_every_tiny_architecture() {
    for (arch, want, source) in [
        ("sd1", "sd1", "architecture rule"),
        ("sd1-inpaint", "sd1-inpaint", "architecture rule"),
        ("sd2", "sd2", "A1111 U-Net test"),
        ("sd2-v", "sd2-v", "modelspec.prediction_type"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let p = fixture(arch, d.path());
        let v = info(&p, &[]);
        assert_eq!(v["architecture"], want, "{v}");
        assert_eq!(v["prediction_source"], source, "{v}");
        let sha = v["sha256"].as_str().unwrap();
        assert_eq!(sha.len(), 64);
        assert_eq!(v["short_hash"].as_str().unwrap(), &sha[..10]);
        assert_eq!(v["storage_dtype"], "F16");
        let v = info(&d.path().join("diffusers"), &[]);
        assert_eq!(v["architecture"], want, "{v}");
    }
}

/// Acceptance 2 of the SDXL issue: base, inpainting and refiner SDXL single files (A1111/SGM
/// layout) and diffusers folders are named, with both text encoders' parameters.
#[test]
fn identifies_sdxl_base_inpaint_and_refiner() {
    for arch in ["sdxl", "sdxl-inpaint", "sdxl-refiner"] {
        let d = tempfile::tempdir().unwrap();
        let p = fixture(arch, d.path());
        for path in [p, d.path().join("diffusers")] {
            let v = info(&path, &[]);
            assert_eq!(v["architecture"], arch, "{v}");
            assert_eq!(v["prediction"], "epsilon", "{v}");
            assert_eq!(v["params"]["text_encoder_2"], 6_945_536, "{v}");
        }
        // the text form too
        let out = sumi()
            .arg("model-info")
            .arg(d.path().join("diffusers"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("architecture   {arch}\n")), "{text}");
    }
}

#[test]
fn prediction_override() {
    let d = tempfile::tempdir().unwrap();
    let p = fixture("sd2", d.path());
    let v = info(&p, &["--prediction", "v"]);
    assert_eq!(v["architecture"], "sd2-v");
    assert_eq!(v["prediction_source"], "override");
}

#[test]
fn bad_input_exits_non_zero_with_a_message() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("broken.safetensors");
    std::fs::write(&p, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();
    let out = sumi().arg("model-info").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.safetensors") && err.contains("invalid safetensors file"),
        "{err}"
    );
    let out = sumi()
        .arg("model-info")
        .arg(d.path().join("nope.safetensors"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.safetensors"));
    let out = sumi()
        .args(["model-info", "x", "--prediction", "sideways"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown prediction type"));
}

/// `path`'s safetensors file with a zero F16 tensor `pad` of 32 MiB added (a file large
/// enough for the hash cache), written to `out`.
fn padded(path: &Path, out: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let pad = 32 << 20;
    header.insert(
        "pad".into(),
        serde_json::json!({"dtype": "F16", "shape": [pad / 2], "data_offsets": [data.len(), data.len() + pad]}),
    );
    let header = serde_json::to_vec(&header).unwrap();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    file.extend_from_slice(data);
    file.resize(file.len() + pad, 0);
    std::fs::write(out, file).unwrap();
}

/// A1111's hash cache: a large checkpoint's sha256 is kept in `$SUMI_CACHE_DIR/hashes.json`
/// and taken from there while the file's size and mtime are unchanged (shown by changing a
/// byte and putting the mtime back: the recorded hash is reported); `SUMI_CACHE_DIR=""` keeps
/// none.
#[test]
fn a_large_checkpoints_hash_is_kept_in_the_cache() {
    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("big.safetensors");
    padded(&fixture("sd1", d.path()), &big);
    let cache_dir = d.path().join("cache");
    let run = |dir: &Path| {
        let v = info_env(&big, &[], &[("SUMI_CACHE_DIR", dir)]);
        v["sha256"].as_str().unwrap().to_string()
    };
    let sha = run(&cache_dir);
    assert_eq!(sha, sumi_weights::sha256_file(&big).unwrap().sha256);
    let cache = std::fs::read_to_string(cache_dir.join("hashes.json")).unwrap();
    assert!(cache.contains(&sha), "{cache}");
    // one byte changed (in the padding), the mtime put back: the recorded hash is taken
    let mtime = std::fs::metadata(&big).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&big).unwrap();
    *bytes.last_mut().unwrap() = 1;
    std::fs::write(&big, &bytes).unwrap();
    let f = std::fs::File::options().write(true).open(&big).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    assert_eq!(run(&cache_dir), sha);
    // no cache: the file is read through
    let no_cache = run(Path::new(""));
    assert_ne!(no_cache, sha);
    assert_eq!(no_cache, sumi_weights::sha256_file(&big).unwrap().sha256);
}
