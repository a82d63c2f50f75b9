//! Helpers the pipeline's integration tests share: the fixtures folder, tiny checkpoints built
//! from their manifests, and a max |x|.

#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};

use candle_core::Tensor;

/// The repository's `fixtures/` folder.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The tiny `arch` checkpoint (f16 storage), written into `dir` from its manifest.
pub fn tiny_model(arch: &str, dir: &Path) -> PathBuf {
    sumi_weights::synth::materialize(
        &root().join("tiny").join(arch),
        dir,
        sumi_weights::StorageDtype::F16,
    )
    .unwrap();
    dir.join(format!("tiny_{arch}.safetensors"))
}

/// max |x| over all elements.
pub fn max_abs(x: &Tensor) -> f32 {
    let m = x.abs().and_then(|a| a.flatten_all()).and_then(|a| a.max(0));
    m.and_then(|m| m.to_scalar::<f32>()).unwrap()
}
