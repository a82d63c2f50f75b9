//! The loaders refuse an emptied fixture: each real fixture the suites read is loaded as it is
//! committed, then emptied (zero bytes, no cases, no tensors, no files) or removed in a
//! temporary copy, and the loader must fail with the matching error instead of returning
//! nothing to test.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sumi_testkit::fixture::{read_json, tensors};
use sumi_testkit::{fixtures, materialize, repo_root, tiny_fixture, Cases, FixtureError, Storage};

fn sampling_fixture(name: &str) -> PathBuf {
    repo_root()
        .join("crates/sumi-sampling/tests/fixtures")
        .join(name)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn a_json_case_list_emptied_or_missing_is_refused() {
    let real = sampling_fixture("rng.json");
    let cases = Cases::<Value>::load(&real, "/torch_cpu")
        .unwrap()
        .at_least(70)
        .unwrap();
    assert!(cases.len() >= 70);

    let d = tempfile::tempdir().unwrap();
    // the same document with that list emptied
    let mut doc = read_json(&real).unwrap();
    doc["torch_cpu"] = Value::Array(Vec::new());
    let emptied = write(d.path(), "rng.json", doc.to_string().as_bytes());
    match Cases::<Value>::load(&emptied, "/torch_cpu") {
        Err(FixtureError::NoCases {
            pointer, detail, ..
        }) => assert_eq!(
            (pointer.as_str(), detail.as_str()),
            ("/torch_cpu", "an empty list")
        ),
        other => panic!("{other:?}"),
    }
    // other lists of the document still load; a list that is not there is refused
    Cases::<Value>::load(&emptied, "/philox").unwrap();
    assert!(matches!(
        Cases::<Value>::load(&emptied, "/torch_gpu"),
        Err(FixtureError::NoCases { .. })
    ));
    // a zero-byte file, an empty document, a missing file
    let zero = write(d.path(), "zero.json", b"");
    assert!(matches!(read_json(&zero), Err(FixtureError::Empty { .. })));
    let braces = write(d.path(), "braces.json", b"{}");
    let err = Cases::<Value>::load(&braces, "/torch_cpu").unwrap_err();
    assert!(matches!(err, FixtureError::Empty { .. }), "{err}");
    assert!(err.to_string().contains("braces.json"), "{err}");
    let gone = d.path().join("gone.json");
    assert!(matches!(
        Cases::<Value>::load(&gone, ""),
        Err(FixtureError::Missing { .. })
    ));
}

#[test]
fn count_guards_and_typed_cases() {
    let real = sampling_fixture("rng.json");
    let doc = read_json(&real).unwrap();
    let n = Cases::<Value>::from_document(&real, &doc, "/torch_cpu_default_kernel")
        .unwrap()
        .len();
    let err = Cases::<Value>::from_document(&real, &doc, "/torch_cpu_default_kernel")
        .unwrap()
        .exactly(n + 1)
        .unwrap_err();
    assert!(
        matches!(&err, FixtureError::Count { found, .. } if *found == n),
        "{err}"
    );
    // a case of the wrong type names its position
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Seeded {
        seed: u64,
    }
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "c.json",
        br#"{"cases": [{"seed": 1}, {"seed": "x"}]}"#,
    );
    match Cases::<Seeded>::load(&p, "/cases") {
        Err(FixtureError::BadCase { index: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_tensor_fixture_without_tensors_is_refused() {
    let real = sampling_fixture("samplers.safetensors");
    assert!(!tensors(&real).unwrap().is_empty());
    let d = tempfile::tempdir().unwrap();
    // a valid safetensors file holding nothing: header `{}` padded to 8 bytes
    let mut none = 8u64.to_le_bytes().to_vec();
    none.extend_from_slice(b"{}      ");
    let p = write(d.path(), "samplers.safetensors", &none);
    match tensors(&p) {
        Err(FixtureError::Empty { detail, .. }) => assert_eq!(detail, "no tensor in it"),
        other => panic!("{other:?}"),
    }
    let p = write(d.path(), "zero.safetensors", b"");
    assert!(matches!(tensors(&p), Err(FixtureError::Empty { .. })));
    assert!(matches!(
        tensors(&d.path().join("gone.safetensors")),
        Err(FixtureError::Missing { .. })
    ));
}

/// A copy of the tiny SD1 fixture's manifest with `edit` applied, in its own folder.
fn edited_manifest(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let mut m = read_json(&tiny_fixture("sd1").join("manifest.json")).unwrap();
    edit(&mut m);
    let fx = dir.join("fixture");
    std::fs::create_dir_all(&fx).unwrap();
    write(&fx, "manifest.json", m.to_string().as_bytes());
    fx
}

#[test]
fn the_materialiser_refuses_an_emptied_manifest() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let fx = edited_manifest(d.path(), |m| m["files"] = serde_json::json!({}));
    let err = materialize(&fx, &out, Storage::F16).unwrap_err();
    assert!(matches!(err, FixtureError::Empty { .. }), "{err}");

    let fx = edited_manifest(d.path(), |m| {
        m["files"]["tiny_sd1.safetensors"]["tensors"] = serde_json::json!([])
    });
    let err = materialize(&fx, &out, Storage::F16).unwrap_err();
    assert!(
        err.to_string()
            .contains("tiny_sd1.safetensors lists no tensor"),
        "{err}"
    );

    // one tensor's checksum changed: the weights would differ from the reference's
    let fx = edited_manifest(d.path(), |m| {
        m["files"]["tiny_sd1.safetensors"]["tensors"][0][3] = "0000000000000000".into()
    });
    let err = materialize(&fx, &out, Storage::F16).unwrap_err();
    assert!(
        err.to_string().contains("does not match its checksum"),
        "{err}"
    );

    let err = materialize(&d.path().join("nowhere"), &out, Storage::F16).unwrap_err();
    assert!(matches!(err, FixtureError::Missing { .. }), "{err}");
}

#[test]
fn the_committed_tiny_fixtures_materialise() {
    let d = tempfile::tempdir().unwrap();
    let p = sumi_testkit::tiny_model("sd1", d.path());
    let bytes = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    // every tensor of the manifest, as f16, plus the diffusers folder and its configs
    assert_eq!(header.as_object().unwrap().len(), 979);
    assert_eq!(
        header["model.diffusion_model.input_blocks.0.0.bias"]["dtype"],
        "F16"
    );
    assert!(d.path().join("diffusers/unet/config.json").is_file());
    assert!(d
        .path()
        .join("diffusers/text_encoder/model.safetensors")
        .is_file());
    assert!(fixtures().join("tiny/sd1/reference.safetensors").is_file());
}
