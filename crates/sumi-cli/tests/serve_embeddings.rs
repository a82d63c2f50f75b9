//! `sumi serve` with the real pipeline: `/sdapi/v1/embeddings` lists exactly the embeddings the
//! loaded model uses (the tiny SD1's text encoder is 64 wide), the 768-wide file under A1111's
//! `skipped`; `/sdapi/v1/sd-models` titles the checkpoint with its A1111 short hash.

mod serve_common;

use serde_json::{json, Value};
use serve_common::*;

#[test]
fn embeddings_are_those_of_the_loaded_model() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let emb =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/embeddings");
    let s = Server::start(&m, &["--embeddings", emb.to_str().unwrap()]);

    let (st, v) = get(&s, "/sdapi/v1/embeddings");
    assert_eq!(st, 200, "{v}");
    let item = |step: Value, shape: u64, vectors: u64| json!({"step": step, "sd_checkpoint": null, "sd_checkpoint_name": null, "shape": shape, "vectors": vectors});
    let want = json!({
        "loaded": {
            "tinyconcept": item(Value::Null, 64, 1),
            "tinydict": item(json!(7), 64, 2),
            "tinyemb": item(Value::Null, 64, 3),
            "tinypt": item(json!(1500), 64, 2),
        },
        "skipped": { "wide": item(Value::Null, 768, 2) },
    });
    assert_eq!(v, want);

    let (st, v) = get(&s, "/sdapi/v1/sd-models");
    assert_eq!(st, 200, "{v}");
    let sha = sumi_weights::sha256_file(&m).unwrap().sha256;
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v[0]["title"], format!("tiny.safetensors [{}]", &sha[..10]));
    assert_eq!(
        (v[0]["model_name"].as_str(), v[0]["sha256"].as_str()),
        (Some("tiny"), Some(sha.as_str()))
    );
    assert!(s.terminate().success());
}
