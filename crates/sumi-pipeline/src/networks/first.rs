//! The first build of the U-Net and the text encoder with the networks of the first job's
//! prompt merged as they are built, for a caller that knows that prompt before loading (a
//! one-job run such as the CLI's): each network is built once, not built and then re-merged.
//! The first job finds its set in place and reports what the merge reported.

use candle_core::DType;
use candle_core::Device;
use sumi_models::{ClipTextModel, UNet};
use sumi_weights::lora::TargetIndex;

use super::activation::activations;
use super::patch::MergePatch;
use super::state::{layers, Built, NetworkState, Resolved, TEXT_ENCODER, UNET};
use crate::checkpoint::Checkpoint;
use crate::error::Result;

/// Builds the U-Net and the text encoder of `ck` with the networks of `prompt` merged, and
/// records in `state` what they hold. Without networks to merge, or when the prediction type
/// still needs A1111's test on the checkpoint's own U-Net, they are built plain (the first job
/// merges them in place). Settles the prediction type either way.
pub(crate) fn first_build(
    ck: &mut Checkpoint,
    state: &NetworkState,
    prompt: Option<&str>,
    dtype: DType,
    dev: &Device,
) -> Result<(UNet, ClipTextModel)> {
    let asked = match prompt {
        Some(p) => activations(p)?.loras,
        None => Vec::new(),
    };
    if asked.is_empty() || ck.needs_unet_test() {
        let unet = ck.unet(dtype, dev)?;
        ck.resolve_with(&unet)?;
        return Ok((unet, ck.clip(dtype, dev)?));
    }
    let index = state.index(|| TargetIndex::new(ck.weights.names(), ck.facts.family));
    let width = ck.clip_config()?.hidden;
    // the first job resolves the same tags again and gives their warnings
    let mut again = Vec::new();
    let resolved = state.resolve(&asked, &ck.weights, index, width, &mut again)?;
    let clip = merged(ck, &state.clip_set, &resolved, TEXT_ENCODER, |ck, p| {
        ck.clip_patched(dtype, dev, p)
    })?;
    let unet = merged(ck, &state.unet_set, &resolved, UNET, |ck, p| {
        ck.unet_patched(dtype, dev, p)
    })?;
    Ok((unet, clip))
}

/// One network (canonical prefix `network`) built with its networks merged.
fn merged<T>(
    ck: &Checkpoint,
    built: &std::sync::Mutex<Built>,
    resolved: &[Resolved],
    network: &str,
    build: impl Fn(&Checkpoint, Option<&dyn sumi_weights::TensorPatch>) -> Result<T>,
) -> Result<T> {
    let (layers, want) = layers(resolved, network);
    let patch = MergePatch::new(&ck.weights, layers);
    let net = build(ck, Some(&patch))?;
    *built.lock().unwrap_or_else(|e| e.into_inner()) = Built {
        unreported: Some((patch.errors(), patch.dropped_bias())),
        ..want
    };
    Ok(net)
}
