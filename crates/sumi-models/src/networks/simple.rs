//! The module types whose update is one formula: IA3 (network_ia3.py), full/diff
//! (network_full.py), norm (network_norm.py) and GLoRA (network_glora.py) of A1111 v1.10.1.

use candle_core::Tensor;

use super::common::{broadcast_or_err, err, guard, size, Common, Parts};
use crate::error::Result;

/// IA3: a learned per-channel scale `weight`, on the output rows or (`on_input`) the input
/// columns.
#[derive(Debug, Clone)]
pub(crate) struct Ia3 {
    w: Tensor,
    on_input: bool,
}

impl Ia3 {
    const NAME: &'static str = "IA3";

    /// `ModuleTypeIa3.create_module`: a part `weight`; `on_input` is read with `.item()` (its
    /// absence fails the load in A1111) and is true when nonzero.
    pub(crate) fn detect(parts: &Parts) -> Result<Option<(Self, Common)>> {
        if !parts.has("weight") {
            return Ok(None);
        }
        let common = Common::read(parts)?;
        let on_input = parts.scalar("on_input")?.ok_or_else(|| {
            err(
                Self::NAME,
                "on_input",
                "is missing (A1111 reads weights.w[\"on_input\"])",
            )
        })?;
        Ok(Some((
            Self {
                w: parts.need("weight")?,
                on_input: on_input != 0.0,
            },
            common,
        )))
    }

    /// `NetworkModuleIa3.calc_updown`: `output_shape = [w.size(0), W.size(1)]`, reversed when
    /// `on_input`, else `w = w.reshape(-1, 1)`; `updown = W * w` (broadcasting, so an output
    /// scale on a conv weight only broadcasts where torch's right-aligned rule allows); then
    /// `finalize_updown`.
    pub(crate) fn calc_updown(
        &self,
        common: &Common,
        orig: &Tensor,
        multiplier: f64,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let name = Self::NAME;
        let mut output_shape = vec![
            size(name, "weight", &self.w, 0)?,
            size(name, "layer", orig, 1)?,
        ];
        let w = if self.on_input {
            output_shape.reverse();
            self.w.clone()
        } else {
            self.w.reshape((self.w.elem_count(), 1))?
        };
        let shape = broadcast_or_err(name, "weight", orig.dims(), w.dims())?;
        guard(name, "weight", &shape, orig.elem_count())?;
        let updown = orig.broadcast_mul(&w)?;
        common.finalize_updown(
            name,
            updown,
            orig,
            &output_shape,
            None,
            common.calc_scale(),
            multiplier,
        )
    }
}

/// Full (`diff`, `diff_b`) and norm (`w_norm`, `b_norm`): the update and bias difference are
/// stored whole.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    name: &'static str,
    updown: Tensor,
    ex_bias: Option<Tensor>,
}

impl Stored {
    /// Whether the module carries a bias difference (`diff_b`, `b_norm`).
    pub(crate) fn has_ex_bias(&self) -> bool {
        self.ex_bias.is_some()
    }

    /// `ModuleTypeFull.create_module`: a part `diff` (and optionally `diff_b`).
    pub(crate) fn detect_full(parts: &Parts) -> Result<Option<(Self, Common)>> {
        if !parts.has("diff") {
            return Ok(None);
        }
        let s = Self {
            name: "full",
            updown: parts.need("diff")?,
            ex_bias: parts.get("diff_b")?,
        };
        Ok(Some((s, Common::read(parts)?)))
    }

    /// `ModuleTypeNorm.create_module`: both `w_norm` and `b_norm`.
    pub(crate) fn detect_norm(parts: &Parts) -> Result<Option<(Self, Common)>> {
        if !(parts.has("w_norm") && parts.has("b_norm")) {
            return Ok(None);
        }
        let s = Self {
            name: "norm",
            updown: parts.need("w_norm")?,
            ex_bias: Some(parts.need("b_norm")?),
        };
        Ok(Some((s, Common::read(parts)?)))
    }

    /// `NetworkModuleFull.calc_updown` / `NetworkModuleNorm.calc_updown`: `updown = diff`
    /// (`w_norm`) with `output_shape = diff.shape`, `ex_bias = diff_b` (`b_norm`), then
    /// `finalize_updown` — which scales `updown` by `calc_scale()` (the `scale` part; these types
    /// have no `dim`) and the multiplier, but `ex_bias` by the multiplier only.
    pub(crate) fn calc_updown(
        &self,
        common: &Common,
        orig: &Tensor,
        multiplier: f64,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let part = if self.name == "full" {
            "diff"
        } else {
            "w_norm"
        };
        guard(self.name, part, self.updown.dims(), orig.elem_count())?;
        let shape = self.updown.dims().to_vec();
        common.finalize_updown(
            self.name,
            self.updown.clone(),
            orig,
            &shape,
            self.ex_bias.clone(),
            common.calc_scale(),
            multiplier,
        )
    }
}

/// GLoRA: `a1.weight`, `a2.weight`, `b1.weight`, `b2.weight` (and a required `alpha`).
#[derive(Debug, Clone)]
pub(crate) struct Glora {
    w1a: Tensor,
    w1b: Tensor,
    w2a: Tensor,
    w2b: Tensor,
}

impl Glora {
    const NAME: &'static str = "GLoRA";

    /// `ModuleTypeGLora.create_module`: all of `a1.weight`, `a2.weight`, `alpha`, `b1.weight`,
    /// `b2.weight`. GLoRA sets no `dim`, so its `alpha` never scales (scale 1 unless `scale`).
    pub(crate) fn detect(parts: &Parts) -> Result<Option<(Self, Common)>> {
        if !["a1.weight", "a2.weight", "alpha", "b1.weight", "b2.weight"]
            .iter()
            .all(|k| parts.has(k))
        {
            return Ok(None);
        }
        let g = Self {
            w1a: parts.need("a1.weight")?,
            w1b: parts.need("b1.weight")?,
            w2a: parts.need("a2.weight")?,
            w2b: parts.need("b2.weight")?,
        };
        Ok(Some((g, Common::read(parts)?)))
    }

    /// `NetworkModuleGLora.calc_updown`: `output_shape = [a1.size(0), b1.size(1)]`;
    /// `updown = (b2 @ b1) + ((W @ a2) @ a1)`; then `finalize_updown`.
    ///
    /// A1111's `@` is `torch.matmul`, which batches higher ranks; here the layer's weight and
    /// all four parts must be 2-d (a linear layer).
    pub(crate) fn calc_updown(
        &self,
        common: &Common,
        orig: &Tensor,
        multiplier: f64,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let name = Self::NAME;
        let mats = [
            (orig, "layer"),
            (&self.w1a, "a1.weight"),
            (&self.w1b, "b1.weight"),
            (&self.w2a, "a2.weight"),
            (&self.w2b, "b2.weight"),
        ];
        for (t, part) in mats {
            if t.rank() != 2 {
                return Err(err(
                    name,
                    part,
                    format!(
                        "has shape {:?}: GLoRA here applies to 2-d (linear) weights",
                        t.dims()
                    ),
                ));
            }
        }
        let d = |t: &Tensor| (t.dims()[0], t.dims()[1]);
        let ((o, i), (a1r, a1c), (b1r, b1c), (a2r, a2c), (b2r, b2c)) = (
            d(orig),
            d(&self.w1a),
            d(&self.w1b),
            d(&self.w2a),
            d(&self.w2b),
        );
        if b2c != b1r {
            return Err(err(
                name,
                "b2.weight",
                format!("b2.weight [{b2r}, {b2c}] @ b1.weight [{b1r}, {b1c}] do not multiply"),
            ));
        }
        if i != a2r || a2c != a1r {
            return Err(err(name, "a2.weight", format!("W [{o}, {i}] @ a2.weight [{a2r}, {a2c}] @ a1.weight [{a1r}, {a1c}] do not multiply")));
        }
        let limit = orig.elem_count();
        guard(name, "b2.weight", &[b2r, b1c], limit)?;
        guard(name, "a2.weight", &[o, a2c], limit)?;
        guard(name, "a1.weight", &[o, a1c], limit)?;
        let shape = broadcast_or_err(name, "b1.weight", &[b2r, b1c], &[o, a1c])?;
        guard(name, "b1.weight", &shape, limit)?;
        let b = self.w2b.contiguous()?.matmul(&self.w1b.contiguous()?)?;
        let a = orig
            .contiguous()?
            .matmul(&self.w2a.contiguous()?)?
            .matmul(&self.w1a.contiguous()?)?;
        let updown = b.broadcast_add(&a)?;
        let output_shape = [a1r, b1c];
        common.finalize_updown(
            name,
            updown,
            orig,
            &output_shape,
            None,
            common.calc_scale(),
            multiplier,
        )
    }
}
