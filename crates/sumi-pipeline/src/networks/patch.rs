//! The merge of the active networks into a network's weights as it is built: A1111's
//! `network_apply_weights` for every layer a network touches, computed from the checkpoint's
//! own tensors (so a build without networks is the checkpoint exactly: the restore is exact).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};
use sumi_models::networks::{merge_each, NetworkModule};
use sumi_weights::{TensorPatch, Weights};

/// One network's module on one layer, with the multiplier and rank limit in force.
#[derive(Clone)]
pub(crate) struct LayerNetwork {
    /// The network's name as the prompt gives it (for A1111's "Networks with errors").
    pub name: String,
    /// The module.
    pub module: Arc<NetworkModule>,
    /// Whether its `ex_bias` is added (A1111 drops it for OpenCLIP's q, k and v).
    pub keeps_bias: bool,
    /// The network's text encoder or U-Net multiplier, as the layer belongs to either.
    pub multiplier: f64,
    /// The network's `dyn` rank limit.
    pub dyn_dim: Option<usize>,
}

/// Error counts per network name (A1111's `extra_network_lora.errors`), in first-seen order.
pub(crate) type ErrorCounts = Vec<(String, usize)>;

/// The layers the active networks change (canonical module prefix → its networks in prompt
/// order), as a [`TensorPatch`] over the checkpoint's weights.
pub(crate) struct MergePatch<'a> {
    weights: &'a Weights,
    layers: HashMap<String, Vec<LayerNetwork>>,
    /// A tensor merged with its layer's other tensor, until the builder asks for it.
    pending: Mutex<HashMap<String, Tensor>>,
    /// Layers whose networks add a bias the layer does not have (not applied).
    dropped_bias: Mutex<Vec<String>>,
    /// Per network name, the layers it failed on.
    errors: Mutex<ErrorCounts>,
}

impl<'a> MergePatch<'a> {
    /// The patch of `layers` over `weights`.
    pub fn new(weights: &'a Weights, layers: HashMap<String, Vec<LayerNetwork>>) -> Self {
        Self {
            weights,
            layers,
            pending: Mutex::new(HashMap::new()),
            dropped_bias: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
        }
    }

    /// Layers whose networks produced a bias for a layer without one (the network's bias
    /// part is not applied there).
    pub fn dropped_bias(&self) -> Vec<String> {
        let mut v = self
            .dropped_bias
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        v.sort();
        v.dedup();
        v
    }

    /// Per network name, the layers it failed on.
    pub fn errors(&self) -> ErrorCounts {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn split(name: &str) -> Option<(&str, bool)> {
        if let Some(m) = name.strip_suffix(".weight") {
            Some((m, true))
        } else {
            name.strip_suffix(".bias").map(|m| (m, false))
        }
    }

    /// The layer `module` merged; `original` is its weight (`is_weight`) or its bias, and the
    /// other of the two waits in `pending` for the builder.
    fn merged(
        &self,
        module: &str,
        is_weight: bool,
        original: Tensor,
    ) -> candle_core::Result<Tensor> {
        let nets = &self.layers[module];
        let dtype = original.dtype();
        let device = original.device().clone();
        let wname = format!("{module}.weight");
        let bname = format!("{module}.bias");
        let wrap = candle_core::Error::wrap;
        let load = |n: &str| self.weights.load(n, DType::F32, &device).map_err(wrap);
        let (weight, bias) = if is_weight {
            // a bias no network changes is not loaded (nor merged, nor kept for the builder)
            let b = match self.changes_bias(module) && self.weights.contains(&bname) {
                true => Some(load(&bname)?),
                false => None,
            };
            (original.to_dtype(DType::F32)?, b)
        } else {
            (load(&wname)?, Some(original.to_dtype(DType::F32)?))
        };
        let had_bias = bias.is_some();
        let (w, b) = self.fold(weight, bias, nets)?;
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match (is_weight, b) {
            (true, Some(b)) if had_bias => {
                pending.insert(bname, b.to_dtype(dtype)?);
            }
            (true, Some(_)) => self
                .dropped_bias
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(module.to_string()),
            (false, Some(b)) => {
                pending.insert(wname, w.to_dtype(dtype)?);
                return b.to_dtype(dtype);
            }
            _ => {}
        }
        w.to_dtype(dtype)
    }

    /// Whether a network on `module` changes its bias (its `ex_bias`, which A1111 drops for
    /// OpenCLIP's q, k and v): else the bias is the checkpoint's, and a bias asked for before
    /// its weight needs no merge (nor a load of the weight).
    fn changes_bias(&self, module: &str) -> bool {
        self.layers[module]
            .iter()
            .any(|n| n.keeps_bias && n.module.changes_bias())
    }

    /// A1111's `network_apply_weights`: each network in order merges into the weight the
    /// previous ones left; a network that fails on this layer is left out of it and counted
    /// ("Networks with errors").
    fn fold(
        &self,
        mut weight: Tensor,
        mut bias: Option<Tensor>,
        nets: &[LayerNetwork],
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let mut failed = Vec::new();
        for n in nets {
            let one = [(n.module.as_ref(), n.multiplier, n.dyn_dim)];
            let given = if n.keeps_bias { bias.as_ref() } else { None };
            let out = merge_each(&weight, given, &one).map_err(candle_core::Error::wrap)?;
            if !out.failures.is_empty() {
                failed.push((n.name.clone(), out.failures.len()));
            }
            weight = out.weight;
            if n.keeps_bias {
                bias = out.bias;
            }
        }
        add_errors(
            &mut self.errors.lock().unwrap_or_else(|e| e.into_inner()),
            failed,
        );
        Ok((weight, bias))
    }
}

/// Adds `more` error counts into `into`, keeping first-seen order.
pub(crate) fn add_errors(into: &mut ErrorCounts, more: ErrorCounts) {
    for (name, n) in more {
        match into.iter_mut().find(|(k, _)| *k == name) {
            Some((_, c)) => *c += n,
            None => into.push((name, n)),
        }
    }
}

/// A1111's `Networks with errors: name (count), …` line, when any layer failed.
pub(crate) fn errors_line(errors: &[(String, usize)]) -> Option<String> {
    (!errors.is_empty()).then(|| {
        let list: Vec<String> = errors.iter().map(|(k, v)| format!("{k} ({v})")).collect();
        format!("Networks with errors: {}", list.join(", "))
    })
}

impl TensorPatch for MergePatch<'_> {
    fn touches(&self, name: &str) -> bool {
        Self::split(name).is_some_and(|(m, _)| self.layers.contains_key(m))
    }

    fn patch(&self, name: &str, original: Tensor) -> candle_core::Result<Tensor> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(t) = pending {
            return into_original(original, t);
        }
        match Self::split(name) {
            Some((module, false)) if !self.changes_bias(module) => Ok(original),
            Some((module, is_weight)) => {
                let target = original.clone();
                into_original(target, self.merged(module, is_weight, original)?)
            }
            None => Ok(original),
        }
    }
}

/// `merged` written into `original`'s storage, which the builder made for this tensor (so
/// that a network built on worker threads keeps their memory and the merge's temporaries
/// stay on this thread, where the allocator reuses them for the next layer); `merged` itself
/// when it is `original`'s storage already (no network changed the tensor).
fn into_original(original: Tensor, merged: Tensor) -> candle_core::Result<Tensor> {
    let fits = merged.shape() == original.shape()
        && merged.dtype() == original.dtype()
        && original.is_contiguous()
        && merged.is_contiguous();
    if !fits {
        return Ok(merged);
    }
    // slice_set refuses only a source that shares the destination's storage: then `merged`
    // is `original` already
    match original.slice_set(&merged, 0, 0) {
        Ok(()) => Ok(original),
        Err(_) => Ok(merged),
    }
}
