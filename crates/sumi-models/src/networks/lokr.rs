//! LoKr (Kronecker product): A1111 v1.10.1's network_lokr.py (`NetworkModuleLokr`).

use candle_core::Tensor;

use super::common::{err, guard, size, Common, Parts};
use super::lyco::{make_kron, make_weight_cp, Named};
use crate::error::Result;

const NAME: &str = "LoKr";

/// The Kronecker factors: `lokr_w1` or `lokr_w1_a @ lokr_w1_b`; `lokr_w2`, or
/// `lokr_w2_a @ lokr_w2_b`, or with `lokr_t2` the Tucker `make_weight_cp(t2, w2_a, w2_b)`.
#[derive(Debug, Clone)]
pub(crate) struct Lokr {
    w1: Option<Tensor>,
    w1a: Option<Tensor>,
    w1b: Option<Tensor>,
    w2: Option<Tensor>,
    w2a: Option<Tensor>,
    w2b: Option<Tensor>,
    t2: Option<Tensor>,
}

impl Lokr {
    /// `ModuleTypeLokr.create_module`: (`lokr_w1` or both `lokr_w1_a`, `lokr_w1_b`) and
    /// (`lokr_w2` or both `lokr_w2_a`, `lokr_w2_b`). `dim` is `lokr_w2_b.shape[0]`, else
    /// `lokr_w1_b.shape[0]`, else none (scale 1 unless `scale` is given) — taken from the
    /// factored parts even where a full `lokr_w1`/`lokr_w2` is the one used.
    pub(crate) fn detect(parts: &Parts) -> Result<Option<(Self, Common)>> {
        let has1 = parts.has("lokr_w1") || (parts.has("lokr_w1_a") && parts.has("lokr_w1_b"));
        let has2 = parts.has("lokr_w2") || (parts.has("lokr_w2_a") && parts.has("lokr_w2_b"));
        if !(has1 && has2) {
            return Ok(None);
        }
        let mut common = Common::read(parts)?;
        let l = Self {
            w1: parts.get("lokr_w1")?,
            w1a: parts.get("lokr_w1_a")?,
            w1b: parts.get("lokr_w1_b")?,
            w2: parts.get("lokr_w2")?,
            w2a: parts.get("lokr_w2_a")?,
            w2b: parts.get("lokr_w2_b")?,
            t2: parts.get("lokr_t2")?,
        };
        if let Some(w1b) = &l.w1b {
            common.dim = Some(size(NAME, "lokr_w1_b", w1b, 0)?);
        }
        if let Some(w2b) = &l.w2b {
            common.dim = Some(size(NAME, "lokr_w2_b", w2b, 0)?);
        }
        Ok(Some((l, common)))
    }

    /// `NetworkModuleLokr.calc_updown`: `w1`, `w2` as above; `output_shape =
    /// [w1.size(0)·w2.size(0), w1.size(1)·w2.size(1)]`, or the layer's shape for a conv layer;
    /// `updown = make_kron(output_shape, w1, w2)`; then `finalize_updown`. LoKr takes no dyn_dim.
    ///
    /// A1111 multiplies the factored parts with `@` (`torch.matmul`, which batches higher
    /// ranks); here they must be 2-d.
    pub(crate) fn calc_updown(
        &self,
        common: &Common,
        orig: &Tensor,
        multiplier: f64,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let limit = orig.elem_count();
        let w1 = match &self.w1 {
            Some(w1) => w1.clone(),
            None => matmul2(
                pair(&self.w1a, &self.w1b)?,
                ["lokr_w1_a", "lokr_w1_b"],
                limit,
            )?,
        };
        let w2 = match (&self.w2, &self.t2) {
            (Some(w2), _) => w2.clone(),
            (None, None) => matmul2(
                pair(&self.w2a, &self.w2b)?,
                ["lokr_w2_a", "lokr_w2_b"],
                limit,
            )?,
            (None, Some(t2)) => {
                let (a, b) = pair(&self.w2a, &self.w2b)?;
                let n = |t, name| Named { t, name };
                make_weight_cp(
                    NAME,
                    n(t2, "lokr_t2"),
                    n(a, "lokr_w2_a"),
                    n(b, "lokr_w2_b"),
                    limit,
                )?
            }
        };
        let output_shape = if orig.rank() == 4 {
            orig.dims().to_vec()
        } else {
            let (a0, a1) = (
                size(NAME, "lokr_w1", &w1, 0)?,
                size(NAME, "lokr_w1", &w1, 1)?,
            );
            let (b0, b1) = (
                size(NAME, "lokr_w2", &w2, 0)?,
                size(NAME, "lokr_w2", &w2, 1)?,
            );
            vec![a0.saturating_mul(b0), a1.saturating_mul(b1)]
        };
        guard(NAME, "lokr_w2", &output_shape, limit)?;
        let updown = make_kron(NAME, &output_shape, &w1, &w2, limit)?;
        common.finalize_updown(
            NAME,
            updown,
            orig,
            &output_shape,
            None,
            common.calc_scale(),
            multiplier,
        )
    }
}

fn pair<'a>(a: &'a Option<Tensor>, b: &'a Option<Tensor>) -> Result<(&'a Tensor, &'a Tensor)> {
    match (a, b) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(err(
            NAME,
            "lokr_w*_a/lokr_w*_b",
            "a factored part is missing",
        )),
    }
}

/// `a @ b` for two 2-d parts, bounded by the layer.
fn matmul2((a, b): (&Tensor, &Tensor), names: [&str; 2], limit: usize) -> Result<Tensor> {
    match (a.dims(), b.dims()) {
        (&[m, k], &[k2, n]) if k == k2 => {
            guard(NAME, names[0], &[m, n], limit)?;
            Ok(a.contiguous()?.matmul(&b.contiguous()?)?)
        }
        (da, db) => Err(err(
            NAME,
            names[0],
            format!(
                "{} {da:?} @ {} {db:?} is not a product of two matrices",
                names[0], names[1]
            ),
        )),
    }
}
