//! Every malformed input gets a clear error naming the file and the problem, never a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use sumi_weights::safetensors::serialize;
use sumi_weights::{detect, StorageDtype, Weights, WeightsError};

fn good_bytes() -> Vec<u8> {
    let t = |n: &str, shape: Vec<usize>| {
        let numel: usize = shape.iter().product();
        (
            n.to_string(),
            StorageDtype::F32,
            shape,
            vec![0u8; numel * 4],
        )
    };
    serialize(&[t("a", vec![2, 3]), t("b", vec![4])], &BTreeMap::new())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Header bytes with the given JSON, followed by `data` bytes.
fn with_header(json: &str, data: usize) -> Vec<u8> {
    let mut v = (json.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(json.as_bytes());
    v.extend(std::iter::repeat_n(0u8, data));
    v
}

fn open_err(p: &Path) -> String {
    let e = Weights::open(p).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&p.display().to_string()),
        "error does not name the file: {msg}"
    );
    msg
}

#[test]
fn good_file_opens() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "ok.safetensors", &good_bytes());
    let w = Weights::open_raw(&p).unwrap();
    assert_eq!(w.shape("a"), Some(&[2usize, 3][..]));
}

#[test]
fn truncated_file() {
    let d = tempfile::tempdir().unwrap();
    let b = good_bytes();
    let p = write(d.path(), "t.safetensors", &b[..b.len() - 5]);
    let m = open_err(&p);
    assert!(m.contains("truncated"), "{m}");
    let p = write(d.path(), "t2.safetensors", &b[..5]);
    assert!(open_err(&p).contains("too short"));
}

#[test]
fn garbage_header() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "g.safetensors",
        &with_header("{not json at all", 0),
    );
    assert!(open_err(&p).contains("not a valid JSON object"));
    let p = write(d.path(), "g2.safetensors", &with_header("[1, 2, 3]", 0));
    assert!(open_err(&p).contains("not a valid JSON object"));
    // random bytes under another name: not mistaken for any format
    let p = write(d.path(), "g3.bin", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR");
    assert!(open_err(&p).contains("neither a zip archive nor a safetensors header"));
}

#[test]
fn header_length_past_the_end() {
    let d = tempfile::tempdir().unwrap();
    let mut b = good_bytes();
    let n = b.len() as u64;
    b[..8].copy_from_slice(&n.to_le_bytes());
    let p = write(d.path(), "h.safetensors", &b);
    assert!(open_err(&p).contains("runs past the end of the file"));
    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let p = write(d.path(), "h2.safetensors", &b);
    assert!(open_err(&p).contains("exceeds the limit"));
}

#[test]
fn overlapping_offsets_gaps_and_duplicates() {
    let d = tempfile::tempdir().unwrap();
    let j = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let p = write(d.path(), "o.safetensors", &with_header(j, 12));
    let m = open_err(&p);
    assert!(m.contains("overlaps") && m.contains("`b`"), "{m}");
    let j = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}"#;
    let p = write(d.path(), "gap.safetensors", &with_header(j, 20));
    assert!(open_err(&p).contains("gap of 4 bytes"));
    let j = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#;
    let p = write(d.path(), "dup.safetensors", &with_header(j, 16));
    assert!(open_err(&p).contains("duplicate tensor name `a`"));
    let j = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let p = write(d.path(), "tail.safetensors", &with_header(j, 12));
    assert!(open_err(&p).contains("4 unused bytes"));
}

#[test]
fn wrong_dtype_or_shape() {
    let d = tempfile::tempdir().unwrap();
    let j = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    let p = write(d.path(), "s.safetensors", &with_header(j, 8));
    let m = open_err(&p);
    assert!(
        m.contains("tensor `a`") && m.contains("12 bytes") && m.contains("8 bytes"),
        "{m}"
    );
    let j = r#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#;
    let p = write(d.path(), "d.safetensors", &with_header(j, 8));
    assert!(open_err(&p).contains("unknown dtype `Q4`"));
    let j = r#"{"a":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}}"#;
    let p = write(d.path(), "n.safetensors", &with_header(j, 8));
    assert!(open_err(&p).contains("non-integer dimension"));
    // a model tensor of the wrong shape is named when the model asks for it
    let p = write(d.path(), "ok.safetensors", &good_bytes());
    let w = Weights::open_raw(&p).unwrap();
    let e = w
        .load_shaped("a", &[3, 2], DType::F32, &Device::Cpu)
        .unwrap_err();
    assert!(
        matches!(e, WeightsError::ShapeMismatch { .. }) && e.to_string().contains("`a`"),
        "{e}"
    );
}

#[test]
fn missing_tensor() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "ok.safetensors", &good_bytes());
    let w = Weights::open_raw(&p).unwrap();
    let e = w
        .load("unet.conv_in.weight", DType::F32, &Device::Cpu)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("missing tensor `unet.conv_in.weight`"),
        "{e}"
    );
    // an SD1 file without its VAE is refused at detection, naming what is missing
    let full = Weights::open(&sumi_testkit::tiny_model("sd1", d.path())).unwrap();
    let names: Vec<String> = full
        .raw_keys()
        .filter(|k| !k.starts_with("first_stage_model."))
        .map(String::from)
        .collect();
    let kept: Vec<_> = names
        .iter()
        .map(|k| (k.clone(), StorageDtype::F32, vec![1usize], vec![0u8; 4]))
        .collect();
    let p = write(
        d.path(),
        "novae.safetensors",
        &serialize(&kept, &BTreeMap::new()),
    );
    let e = detect(&Weights::open(&p).unwrap(), None).unwrap_err();
    assert!(
        e.to_string()
            .contains("missing tensor `vae.decoder.conv_in.weight`"),
        "{e}"
    );
}

#[test]
fn unknown_and_unsupported_architectures() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "ok.safetensors", &good_bytes());
    let e = detect(&Weights::open(&p).unwrap(), None).unwrap_err();
    assert!(matches!(e, WeightsError::UnknownArchitecture { .. }), "{e}");
    assert!(e.to_string().contains("ok.safetensors"));
    let t = |n: &str| (n.to_string(), StorageDtype::F16, vec![2usize], vec![0u8; 4]);
    let xl = serialize(
        &[
            t("conditioner.embedders.1.model.ln_final.weight"),
            t("model.diffusion_model.input_blocks.0.0.weight"),
        ],
        &BTreeMap::new(),
    );
    let p = write(d.path(), "xl.safetensors", &xl);
    // recognised as SDXL by A1111's sentinel, then refused for what it lacks
    let e = detect(&Weights::open(&p).unwrap(), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: missing tensor `vae.decoder.conv_in.weight`",
            p.display()
        )
    );
    let sd3 = serialize(
        &[t("model.diffusion_model.x_embedder.proj.weight")],
        &BTreeMap::new(),
    );
    let p = write(d.path(), "sd3.safetensors", &sd3);
    let e = detect(&Weights::open(&p).unwrap(), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: SD3 models are not supported yet", p.display())
    );
}

#[test]
fn integer_weights_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let b = serialize(
        &[(
            "model.diffusion_model.out.2.weight".into(),
            StorageDtype::I32,
            vec![1],
            vec![0u8; 4],
        )],
        &BTreeMap::new(),
    );
    let p = write(d.path(), "i.safetensors", &b);
    let m = open_err(&p);
    assert!(m.contains("dtype I32"), "{m}");
}

#[test]
fn legacy_pickle_and_corrupt_zip() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "old.ckpt", b"\x80\x02}q\x00.");
    assert!(open_err(&p).contains("legacy (pre-zip) PyTorch pickle"));
    let p = write(d.path(), "z.ckpt", b"PK\x03\x04garbage");
    assert!(open_err(&p).contains("not a readable zip archive"));
}
