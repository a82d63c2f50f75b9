//! What every module type shares: A1111 v1.10.1's `NetworkModule` (network.py) — the network
//! parts read by its `__init__` (`bias`, `alpha`, `scale`, `dora_scale`), `calc_scale`,
//! `finalize_updown` and `apply_weight_decompose` (DoRA) — and the shape checks that stand
//! where torch would raise.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};
use crate::kernels::elementwise::affine_twice;

/// The error naming a module type, one of its network parts (or the layer) and the problem.
pub(crate) fn err(
    module: &'static str,
    part: impl Into<String>,
    detail: impl Into<String>,
) -> ModelError {
    ModelError::Network {
        module,
        part: part.into(),
        detail: detail.into(),
    }
}

/// The number of elements of `shape`, `None` on overflow.
pub(crate) fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// The shape torch broadcasts `a` and `b` to (right-aligned; a dimension of 1 stretches), or
/// `None` where torch raises.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        let pad = n - s.len();
        if i < pad {
            1
        } else {
            s[i - pad]
        }
    };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// `broadcast_shape` or an error naming both shapes.
pub(crate) fn broadcast_or_err(
    module: &'static str,
    part: &str,
    a: &[usize],
    b: &[usize],
) -> Result<Vec<usize>> {
    broadcast_shape(a, b).ok_or_else(|| {
        err(
            module,
            part,
            format!("shapes {a:?} and {b:?} do not broadcast together"),
        )
    })
}

/// Refuses an intermediate of `shape` larger than `limit` elements before it is allocated.
///
/// Every tensor on the way to an `updown` that A1111 can add to the layer has at most as many
/// elements as the layer's weight (broadcasting only grows a tensor, and the sum must fit the
/// weight); the callers pass that bound, so a file cannot ask for an allocation larger than the
/// layer it changes.
pub(crate) fn guard(module: &'static str, part: &str, shape: &[usize], limit: usize) -> Result<()> {
    match numel(shape) {
        Some(n) if n <= limit => Ok(()),
        _ => Err(err(
            module,
            part,
            format!(
                "would make a tensor of shape {shape:?}, larger than the layer's weight \
                 ({limit} elements)"
            ),
        )),
    }
}

/// Reshapes `t` to `shape`, or an error where the element counts differ (torch's `reshape`).
pub(crate) fn reshape(
    module: &'static str,
    part: &str,
    t: &Tensor,
    shape: &[usize],
) -> Result<Tensor> {
    if numel(shape) != Some(t.elem_count()) {
        return Err(err(
            module,
            part,
            format!("shape {:?} cannot be reshaped to {shape:?}", t.dims()),
        ));
    }
    Ok(t.contiguous()?.reshape(shape)?)
}

/// The network parts of one module: name -> tensor (f32 on the CPU).
pub(crate) struct Parts<'a> {
    module: &'static str,
    map: &'a BTreeMap<String, Tensor>,
}

impl<'a> Parts<'a> {
    pub(crate) fn new(module: &'static str, map: &'a BTreeMap<String, Tensor>) -> Self {
        Self { module, map }
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The part as an f32 CPU tensor, refusing one without elements.
    pub(crate) fn get(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(t) = self.map.get(name) else {
            return Ok(None);
        };
        if t.elem_count() == 0 {
            return Err(err(
                self.module,
                name,
                format!("is empty (shape {:?})", t.dims()),
            ));
        }
        Ok(Some(t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?))
    }

    /// A part the type's detection guarantees.
    pub(crate) fn need(&self, name: &str) -> Result<Tensor> {
        self.get(name)?
            .ok_or_else(|| err(self.module, name, "is missing"))
    }

    /// A part read with torch's `.item()`: exactly one element.
    pub(crate) fn scalar(&self, name: &str) -> Result<Option<f64>> {
        let Some(t) = self.get(name)? else {
            return Ok(None);
        };
        if t.elem_count() != 1 {
            return Err(err(
                self.module,
                name,
                format!(
                    "holds {} values where A1111 reads one (.item())",
                    t.elem_count()
                ),
            ));
        }
        Ok(Some(t.flatten_all()?.to_vec1::<f32>()?[0] as f64))
    }
}

/// The size of dimension `i` of `t` (torch's `t.size(i)`), or an error where `t` has fewer
/// dimensions.
pub(crate) fn size(module: &'static str, part: &str, t: &Tensor, i: usize) -> Result<usize> {
    t.dims().get(i).copied().ok_or_else(|| {
        err(
            module,
            part,
            format!("has shape {:?}, without a dimension {i}", t.dims()),
        )
    })
}

/// The fields of A1111's `NetworkModule.__init__` that every type has.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    /// Network part `bias`: added to `updown` in `finalize_updown` (not the layer's bias).
    pub bias: Option<Tensor>,
    /// Network part `alpha` (`.item()`).
    pub alpha: Option<f64>,
    /// Network part `scale` (`.item()`), which overrides `alpha / dim`.
    pub scale: Option<f64>,
    /// Network part `dora_scale`: DoRA's magnitude vector.
    pub dora_scale: Option<Tensor>,
    /// The type's `self.dim` (the rank), or `None` where the type sets none.
    pub dim: Option<usize>,
}

impl Common {
    /// `NetworkModule.__init__`'s reads (`dim` is set by the type afterwards).
    pub(crate) fn read(parts: &Parts) -> Result<Self> {
        Ok(Self {
            bias: parts.get("bias")?,
            alpha: parts.scalar("alpha")?,
            scale: parts.scalar("scale")?,
            dora_scale: parts.get("dora_scale")?,
            dim: None,
        })
    }

    /// `NetworkModule.calc_scale`: `scale` if given, else `alpha / dim` where both are known,
    /// else 1.
    pub(crate) fn calc_scale(&self) -> f64 {
        if let Some(s) = self.scale {
            return s;
        }
        match (self.dim, self.alpha) {
            (Some(dim), Some(alpha)) => alpha / dim as f64,
            _ => 1.0,
        }
    }

    /// `NetworkModule.finalize_updown` with the type's `calc_scale()` as `scale`:
    ///
    /// 1. with a network part `bias`: `updown = (updown.reshape(bias.shape) + bias).reshape(output_shape)`;
    /// 2. a 4-d `output_shape`: `updown = updown.reshape(output_shape)`;
    /// 3. as many elements as the layer's weight: `updown = updown.reshape(orig_weight.shape)`;
    /// 4. `ex_bias = ex_bias * multiplier` (no scale);
    /// 5. `updown = updown * scale`, then DoRA ([`Common::apply_weight_decompose`]) where a
    ///    `dora_scale` is given, then `updown * multiplier`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finalize_updown(
        &self,
        module: &'static str,
        updown: Tensor,
        orig: &Tensor,
        output_shape: &[usize],
        ex_bias: Option<Tensor>,
        scale: f64,
        multiplier: f64,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let mut updown = updown;
        if let Some(bias) = &self.bias {
            updown = reshape(module, "bias", &updown, bias.dims())?;
            updown = (updown + bias)?;
            updown = reshape(module, "bias", &updown, output_shape)?;
        }
        if output_shape.len() == 4 {
            updown = reshape(module, "updown", &updown, output_shape)?;
        }
        if orig.elem_count() == updown.elem_count() {
            updown = updown.reshape(orig.dims())?;
        }
        let ex_bias = ex_bias.map(|b| b.affine(multiplier, 0.0)).transpose()?;
        let Some(dora_scale) = &self.dora_scale else {
            // both affines in one pass (the same values)
            return Ok((affine_twice(&updown, scale, multiplier)?, ex_bias));
        };
        updown = updown.affine(scale, 0.0)?;
        updown = self.apply_weight_decompose(module, &updown, orig, dora_scale)?;
        Ok((updown.affine(multiplier, 0.0)?, ex_bias))
    }

    /// `NetworkModule.apply_weight_decompose` (DoRA), on the scaled `updown` before the
    /// multiplier: `merged = updown + W`; `norm[c] = ‖merged[:, c, …]‖₂` over every dimension
    /// but dim 1 (the input channels), shaped `[1, in, 1, …]` (as many trailing ones as the
    /// layer's weight has dimensions after the first); returns
    /// `merged · (dora_scale / norm) − W`.
    fn apply_weight_decompose(
        &self,
        module: &'static str,
        updown: &Tensor,
        orig: &Tensor,
        dora_scale: &Tensor,
    ) -> Result<Tensor> {
        let merged_shape = broadcast_or_err(module, "dora_scale", updown.dims(), orig.dims())?;
        guard(module, "dora_scale", &merged_shape, orig.elem_count())?;
        if merged_shape.len() < 2 || orig.rank() < 2 {
            return Err(err(
                module,
                "dora_scale",
                format!(
                    "DoRA needs a weight of at least 2 dimensions (layer weight {:?})",
                    orig.dims()
                ),
            ));
        }
        let merged = updown.broadcast_add(orig)?;
        let s1 = merged_shape[1];
        let mut norm_shape = vec![1, s1];
        norm_shape.extend(std::iter::repeat_n(1, orig.rank() - 2));
        let ratio_shape = broadcast_or_err(module, "dora_scale", dora_scale.dims(), &norm_shape)?;
        let out_shape = broadcast_or_err(module, "dora_scale", &merged_shape, &ratio_shape)?;
        let out_shape = broadcast_or_err(module, "dora_scale", &out_shape, orig.dims())?;
        guard(module, "dora_scale", &ratio_shape, orig.elem_count())?;
        guard(module, "dora_scale", &out_shape, orig.elem_count())?;
        let norm = merged
            .transpose(0, 1)?
            .contiguous()?
            .reshape((s1, ()))?
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .reshape(norm_shape)?;
        let ratio = dora_scale.broadcast_div(&norm)?;
        Ok(merged.broadcast_mul(&ratio)?.broadcast_sub(orig)?)
    }
}
