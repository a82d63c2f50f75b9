//! LoHa (Hadamard product): A1111 v1.10.1's network_hada.py (`NetworkModuleHada`).

use candle_core::Tensor;

use super::common::{broadcast_or_err, guard, size, Common, Parts};
use super::lyco::{make_weight_cp, rebuild_conventional, Named};
use crate::error::Result;

const NAME: &str = "LoHa";

/// `hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b` and the optional Tucker cores
/// `hada_t1`, `hada_t2`.
#[derive(Debug, Clone)]
pub(crate) struct Hada {
    w1a: Tensor,
    w1b: Tensor,
    w2a: Tensor,
    w2b: Tensor,
    t1: Option<Tensor>,
    t2: Option<Tensor>,
}

impl Hada {
    /// `ModuleTypeHada.create_module`: all four of `hada_w1_a`, `hada_w1_b`, `hada_w2_a`,
    /// `hada_w2_b`; `dim = hada_w1_b.shape[0]`.
    pub(crate) fn detect(parts: &Parts) -> Result<Option<(Self, Common)>> {
        if !["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"]
            .iter()
            .all(|k| parts.has(k))
        {
            return Ok(None);
        }
        let mut common = Common::read(parts)?;
        let h = Self {
            w1a: parts.need("hada_w1_a")?,
            w1b: parts.need("hada_w1_b")?,
            w2a: parts.need("hada_w2_a")?,
            w2b: parts.need("hada_w2_b")?,
            t1: parts.get("hada_t1")?,
            t2: parts.get("hada_t2")?,
        };
        common.dim = Some(size(NAME, "hada_w1_b", &h.w1b, 0)?);
        Ok(Some((h, common)))
    }

    /// `NetworkModuleHada.calc_updown`: `output_shape = [w1a.size(0), w1b.size(1)]`; with `t1`,
    /// `output_shape = [w1a.size(1), w1b.size(1)] + t1.shape[2:]` and
    /// `updown1 = make_weight_cp(t1, w1a, w1b)`, else (`+ w1b.shape[2:]` for a 4-d `w1b`)
    /// `updown1 = rebuild_conventional(w1a, w1b, output_shape)`; likewise `updown2` from `t2`
    /// or `rebuild_conventional(w2a, w2b, output_shape)`; `updown = updown1 * updown2`
    /// (broadcasting), then `finalize_updown`. LoHa takes no dyn_dim.
    pub(crate) fn calc_updown(
        &self,
        common: &Common,
        orig: &Tensor,
        multiplier: f64,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let limit = orig.elem_count();
        let n = |t, name| Named { t, name };
        let mut output_shape = vec![
            size(NAME, "hada_w1_a", &self.w1a, 0)?,
            size(NAME, "hada_w1_b", &self.w1b, 1)?,
        ];
        let updown1 = match &self.t1 {
            Some(t1) => {
                output_shape = vec![size(NAME, "hada_w1_a", &self.w1a, 1)?, output_shape[1]];
                output_shape.extend_from_slice(t1.dims().get(2..).unwrap_or(&[]));
                make_weight_cp(
                    NAME,
                    n(t1, "hada_t1"),
                    n(&self.w1a, "hada_w1_a"),
                    n(&self.w1b, "hada_w1_b"),
                    limit,
                )?
            }
            None => {
                if self.w1b.rank() == 4 {
                    output_shape.extend_from_slice(&self.w1b.dims()[2..]);
                }
                guard(NAME, "hada_w1_a", &output_shape, limit)?;
                rebuild_conventional(
                    NAME,
                    n(&self.w1a, "hada_w1_a"),
                    n(&self.w1b, "hada_w1_b"),
                    &output_shape,
                    None,
                    limit,
                )?
            }
        };
        let updown2 = match &self.t2 {
            Some(t2) => make_weight_cp(
                NAME,
                n(t2, "hada_t2"),
                n(&self.w2a, "hada_w2_a"),
                n(&self.w2b, "hada_w2_b"),
                limit,
            )?,
            None => rebuild_conventional(
                NAME,
                n(&self.w2a, "hada_w2_a"),
                n(&self.w2b, "hada_w2_b"),
                &output_shape,
                None,
                limit,
            )?,
        };
        let shape = broadcast_or_err(NAME, "hada_w2_a", updown1.dims(), updown2.dims())?;
        guard(NAME, "hada_w2_a", &shape, limit)?;
        let updown = updown1.broadcast_mul(&updown2)?;
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
