//! Helpers the pipeline's integration tests share, over `sumi-testkit`: the fixtures folder,
//! tiny checkpoints built from their manifests, guarded case lists, and a max |x|.

#![allow(dead_code)] // each test crate uses its own subset

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde_json::Value;
use sumi_testkit::Cases;

/// The repository's `fixtures/` folder.
pub fn root() -> PathBuf {
    sumi_testkit::fixtures()
}

/// The tiny `arch` checkpoint (f16 storage), written into `dir` from its manifest.
pub fn tiny_model(arch: &str, dir: &Path) -> PathBuf {
    sumi_testkit::tiny_model(arch, dir)
}

/// max |x| over all elements (the testkit's measure, as f32 for these suites' tolerances).
pub fn max_abs(x: &Tensor) -> f32 {
    sumi_testkit::max_abs(x) as f32
}

/// The JSON fixture `fixtures/<rel>` and its `cases` list, refused when missing or empty and
/// guarded to hold at least `min` cases.
pub fn cases(rel: &str, min: usize) -> (Value, Cases<Value>) {
    let path = root().join(rel);
    let doc = sumi_testkit::fixture::read_json(&path).unwrap();
    let cases = Cases::from_document(&path, &doc, "/cases")
        .and_then(|c| c.at_least(min))
        .unwrap();
    (doc, cases)
}

/// The tensors of fixture `fixtures/<rel>`, refused when missing or empty.
pub fn reference(rel: &str) -> HashMap<String, Tensor> {
    sumi_testkit::fixture::tensors(&root().join(rel)).unwrap()
}
