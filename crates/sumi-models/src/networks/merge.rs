//! The fold of several networks over one layer: the body of A1111 v1.10.1's
//! `networks.network_apply_weights` for a Linear, Conv2d, GroupNorm or LayerNorm.

use candle_core::{DType, Tensor};

use super::common::{broadcast_shape, err};
use super::NetworkModule;
use crate::error::{ModelError, Result};

/// One network that could not be merged into the layer, as A1111 logs and counts it
/// ("Networks with errors: name (count)").
#[derive(Debug)]
pub struct MergeFailure {
    /// The network's position in the list handed to [`merge_each`].
    pub index: usize,
    /// Why.
    pub error: ModelError,
}

/// What [`merge_each`] leaves in the layer.
#[derive(Debug)]
pub struct MergeOutcome {
    /// The merged weight.
    pub weight: Tensor,
    /// The merged bias: `Some` if the layer had one or a network brought one.
    pub bias: Option<Tensor>,
    /// The networks A1111 would have skipped on this layer, in order.
    pub failures: Vec<MergeFailure>,
}

/// A1111's merge of one layer, strict: each network in order, `calc_updown` on the weight
/// merged so far ([`NetworkModule::calc_updown`]); for an inpainting conv_in (a 4-d weight
/// with 9 input channels) `updown` is padded with 5 zero input channels after its own
/// (`F.pad(updown, (0, 0, 0, 0, 0, 5))`); `weight = weight + updown` (torch broadcasting, the
/// result must keep the weight's shape: `self.weight.copy_`); an `ex_bias` becomes the bias
/// where the layer has none, else `bias = bias + ex_bias`. Each network comes with its
/// multiplier and `dyn_dim`. Any network that fails fails the merge; [`merge_each`] is A1111's
/// tolerant fold.
pub fn merge(
    weight: &Tensor,
    bias: Option<&Tensor>,
    modules: &[(&NetworkModule, f64, Option<usize>)],
) -> Result<(Tensor, Option<Tensor>)> {
    let mut w = weight.to_dtype(DType::F32)?;
    let mut b = bias.map(|b| b.to_dtype(DType::F32)).transpose()?;
    for (module, multiplier, dyn_dim) in modules {
        let (new_w, ex_bias) = merge_weight(&w, module, *multiplier, *dyn_dim)?;
        b = merge_bias(module.kind().name(), &new_w, b.as_ref(), ex_bias)?;
        w = new_w;
    }
    Ok((w, b))
}

/// A1111's fold as `network_apply_weights` runs it: each network with its own multiplier and
/// `dyn_dim`; a network whose update fails (torch's `RuntimeError`) is skipped on this layer
/// and reported in [`MergeOutcome::failures`] while the others still apply — where only its
/// bias fails, its weight update stays (A1111 copies the weight first).
pub fn merge_each(
    weight: &Tensor,
    bias: Option<&Tensor>,
    modules: &[(&NetworkModule, f64, Option<usize>)],
) -> Result<MergeOutcome> {
    let mut w = weight.to_dtype(DType::F32)?;
    let mut b = bias.map(|b| b.to_dtype(DType::F32)).transpose()?;
    let mut failures = Vec::new();
    for (index, (module, multiplier, dyn_dim)) in modules.iter().enumerate() {
        let (new_w, ex_bias) = match merge_weight(&w, module, *multiplier, *dyn_dim) {
            Ok(x) => x,
            Err(error) => {
                failures.push(MergeFailure { index, error });
                continue;
            }
        };
        w = new_w;
        match merge_bias(module.kind().name(), &w, b.as_ref(), ex_bias) {
            Ok(nb) => b = nb,
            Err(error) => failures.push(MergeFailure { index, error }),
        }
    }
    Ok(MergeOutcome {
        weight: w,
        bias: b,
        failures,
    })
}

/// One network's `weight + updown` (with the inpainting pad) and its `ex_bias`.
fn merge_weight(
    weight: &Tensor,
    module: &NetworkModule,
    multiplier: f64,
    dyn_dim: Option<usize>,
) -> Result<(Tensor, Option<Tensor>)> {
    let name = module.kind().name();
    let (mut updown, ex_bias) = module.calc_updown(weight, multiplier, dyn_dim)?;
    if weight.rank() == 4 && weight.dims()[1] == 9 {
        if updown.rank() < 3 {
            return Err(err(
                name,
                "updown",
                format!(
                    "shape {:?} cannot take the inpainting pad (5 zero channels)",
                    updown.dims()
                ),
            ));
        }
        let dim = updown.rank() - 3;
        updown = updown.pad_with_zeros(dim, 0, 5)?;
    }
    if broadcast_shape(weight.dims(), updown.dims()).as_deref() != Some(weight.dims()) {
        return Err(err(
            name,
            "updown",
            format!(
                "shape {:?} does not add to the layer's weight {:?}",
                updown.dims(),
                weight.dims()
            ),
        ));
    }
    Ok((crate::kernels::elementwise::add(weight, &updown)?, ex_bias))
}

/// `bias + ex_bias`, or `ex_bias` as the new bias (it must then have one value per output
/// channel; A1111 takes any shape and fails later, in the layer's forward).
fn merge_bias(
    name: &'static str,
    weight: &Tensor,
    bias: Option<&Tensor>,
    ex_bias: Option<Tensor>,
) -> Result<Option<Tensor>> {
    let Some(ex) = ex_bias else {
        return Ok(bias.cloned());
    };
    match bias {
        None => {
            let out = weight.dims().first().copied().unwrap_or(0);
            if ex.dims() != [out] {
                return Err(err(
                    name,
                    "ex_bias",
                    format!(
                        "shape {:?} cannot be the bias of a layer with {} output channels",
                        ex.dims(),
                        out
                    ),
                ));
            }
            Ok(Some(ex))
        }
        Some(b) => {
            if broadcast_shape(b.dims(), ex.dims()).as_deref() != Some(b.dims()) {
                return Err(err(
                    name,
                    "ex_bias",
                    format!(
                        "shape {:?} does not add to the layer's bias {:?}",
                        ex.dims(),
                        b.dims()
                    ),
                ));
            }
            Ok(Some(b.broadcast_add(&ex)?))
        }
    }
}
