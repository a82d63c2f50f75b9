//! LoRA and LoCon: A1111 v1.10.1's network_lora.py (`ModuleTypeLora`, `NetworkModuleLora`).

use candle_core::Tensor;

use super::common::{err, guard, reshape, size, Common, Parts};
use super::lyco::{rebuild_conventional, rebuild_cp_decomposition, Named};
use crate::error::Result;

const NAME: &str = "LoRA";

/// `lora_up`, `lora_down` and the optional Tucker core `lora_mid`, as stored in the file.
#[derive(Debug, Clone)]
pub(crate) struct Lora {
    up: Tensor,
    down: Tensor,
    mid: Option<Tensor>,
}

impl Lora {
    /// `ModuleTypeLora.create_module`: `lora_up.weight` + `lora_down.weight`, else PEFT's
    /// `lora_B.weight` + `lora_A.weight` — for which A1111 *clears* the parts before building the
    /// module, so a PEFT module's `alpha`, `scale`, `dora_scale`, `bias` and `lora_mid` are
    /// dropped (scale 1, no DoRA). `dim` is `lora_down.shape[0]`.
    pub(crate) fn detect(parts: &Parts) -> Result<Option<(Self, Common)>> {
        let (up, down, mid, mut common) =
            if parts.has("lora_up.weight") && parts.has("lora_down.weight") {
                (
                    parts.need("lora_up.weight")?,
                    parts.need("lora_down.weight")?,
                    parts.get("lora_mid.weight")?,
                    Common::read(parts)?,
                )
            } else if parts.has("lora_A.weight") && parts.has("lora_B.weight") {
                let common = Common {
                    bias: None,
                    alpha: None,
                    scale: None,
                    dora_scale: None,
                    dim: None,
                };
                (
                    parts.need("lora_B.weight")?,
                    parts.need("lora_A.weight")?,
                    None,
                    common,
                )
            } else {
                return Ok(None);
            };
        common.dim = Some(size(NAME, "lora_down.weight", &down, 0)?);
        Ok(Some((Self { up, down, mid }, common)))
    }

    /// The shapes `NetworkModuleLora.create_module` gives the parts for a layer whose weight has
    /// shape `w` (its `torch.nn.Linear`/`Conv2d` stand-ins): a linear layer (2-d weight) flattens
    /// each part to `[shape[0], -1]`; a conv layer (4-d) makes `lora_down` `[r, in, kh, kw]` (a 2-d
    /// one `[r, in, 1, 1]`; a kernel other than 1x1 takes the layer's kernel size), `lora_mid`
    /// `[r, r, kh, kw]` of the layer and `lora_up` `[out, r, 1, 1]`. Any other layer is refused
    /// (A1111: "matched a layer with unsupported type", the whole network fails to load).
    fn layer_shapes(&self, w: &[usize]) -> Result<[Option<Vec<usize>>; 3]> {
        let parts = [
            ("lora_up.weight", Some(&self.up)),
            ("lora_down.weight", Some(&self.down)),
            ("lora_mid.weight", self.mid.as_ref()),
        ];
        let mut out: [Option<Vec<usize>>; 3] = [None, None, None];
        for (slot, (name, t)) in out.iter_mut().zip(parts) {
            let Some(t) = t else { continue };
            let d = t.dims();
            let target = match w.len() {
                2 => vec![size(NAME, name, t, 0)?, t.elem_count() / d[0]],
                4 if name == "lora_down.weight" => {
                    let d = if d.len() == 2 { vec![d[0], d[1], 1, 1] } else { d.to_vec() };
                    if d.len() != 4 {
                        return Err(err(NAME, name, format!("has shape {d:?}: a conv layer needs 2 or 4 dimensions")));
                    }
                    if d[2] != 1 || d[3] != 1 {
                        vec![d[0], d[1], w[2], w[3]]
                    } else {
                        vec![d[0], d[1], 1, 1]
                    }
                }
                4 if name == "lora_mid.weight" => {
                    vec![size(NAME, name, t, 0)?, size(NAME, name, t, 1)?, w[2], w[3]]
                }
                4 => vec![size(NAME, name, t, 0)?, size(NAME, name, t, 1)?, 1, 1],
                _ => {
                    return Err(err(
                        NAME,
                        "layer",
                        format!("LoRA applies to Linear and Conv2d layers only, not a weight of shape {w:?}"),
                    ))
                }
            };
            if super::common::numel(&target) != Some(t.elem_count()) {
                return Err(err(
                    NAME,
                    name,
                    format!("shape {d:?} does not fit the layer (as {target:?})"),
                ));
            }
            *slot = Some(target);
        }
        Ok(out)
    }

    /// The checks `create_module` makes against the layer (see [`Lora::layer_shapes`]).
    pub(crate) fn check_layer(&self, w: &[usize]) -> Result<()> {
        self.layer_shapes(w).map(|_| ())
    }

    /// `NetworkModuleLora.calc_updown`: `output_shape = [up.size(0), down.size(1)]`; with
    /// `lora_mid`, `rebuild_cp_decomposition(up, down, mid)` and `output_shape += mid.shape[2:]`
    /// (no dyn_dim); else `output_shape += down.shape[2:]` for a 4-d down and
    /// `rebuild_conventional(up, down, output_shape, dyn_dim)`; then `finalize_updown`.
    pub(crate) fn calc_updown(
        &self,
        common: &Common,
        orig: &Tensor,
        multiplier: f64,
        dyn_dim: Option<usize>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let [up_s, down_s, mid_s] = self.layer_shapes(orig.dims())?;
        let limit = orig.elem_count();
        let shaped = |t: &Tensor, s: Option<Vec<usize>>, name| -> Result<Tensor> {
            reshape(NAME, name, t, &s.unwrap_or_else(|| t.dims().to_vec()))
        };
        let up = shaped(&self.up, up_s, "lora_up.weight")?;
        let down = shaped(&self.down, down_s, "lora_down.weight")?;
        let mut output_shape = vec![up.dims()[0], size(NAME, "lora_down.weight", &down, 1)?];
        let up_n = Named {
            t: &up,
            name: "lora_up.weight",
        };
        let down_n = Named {
            t: &down,
            name: "lora_down.weight",
        };
        let updown = match (&self.mid, mid_s) {
            (Some(mid), s) => {
                let mid = shaped(mid, s, "lora_mid.weight")?;
                let mid_n = Named {
                    t: &mid,
                    name: "lora_mid.weight",
                };
                let u = rebuild_cp_decomposition(NAME, up_n, down_n, mid_n, limit)?;
                output_shape.extend_from_slice(&mid.dims()[2..]);
                u
            }
            (None, _) => {
                if down.rank() == 4 {
                    output_shape.extend_from_slice(&down.dims()[2..]);
                }
                guard(NAME, "lora_up.weight", &output_shape, limit)?;
                rebuild_conventional(NAME, up_n, down_n, &output_shape, dyn_dim, limit)?
            }
        };
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
