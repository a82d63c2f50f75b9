//! OFT and BOFT: A1111 v1.10.1's network_oft.py (`NetworkModuleOFT`) — kohya-ss' COFT
//! (`oft_blocks` 3-d, `alpha` the norm constraint), LyCORIS' BOFT (`oft_blocks` 4-d) and old
//! LyCORIS OFT (`oft_diag`, the rotations stored directly), with the optional `rescale`.

use candle_core::{Device, Tensor};

use super::common::{broadcast_or_err, err, Common, Parts};
use crate::error::Result;

const NAME: &str = "OFT";

/// The blocks and how A1111 reads them.
#[derive(Debug, Clone)]
pub(crate) struct Oft {
    /// `oft_blocks` or `oft_diag`.
    blocks: Tensor,
    /// `oft_diag`: the blocks are the rotations (A1111's `is_R`).
    is_r: bool,
    /// kohya's `alpha` (the constraint is `alpha · out_dim`), `None` without one.
    alpha: Option<f32>,
    /// `rescale`, one factor per output row.
    rescale: Option<Tensor>,
}

impl Oft {
    /// `ModuleTypeOFT.create_module`: `oft_blocks`, else `oft_diag`. `NetworkModuleOFT` sets
    /// `self.scale = 1.0`, so neither a `scale` part nor `alpha / dim` scales an OFT update.
    pub(crate) fn detect(parts: &Parts) -> Result<Option<(Self, Common)>> {
        let (blocks, is_r) = if parts.has("oft_blocks") {
            (parts.need("oft_blocks")?, false)
        } else if parts.has("oft_diag") {
            (parts.need("oft_diag")?, true)
        } else {
            return Ok(None);
        };
        let mut common = Common::read(parts)?;
        common.scale = Some(1.0);
        let o = Self {
            blocks,
            is_r,
            alpha: if is_r {
                None
            } else {
                common.alpha.map(|a| a as f32)
            },
            rescale: parts.get("rescale")?,
        };
        Ok(Some((o, common)))
    }

    /// `NetworkModuleOFT.__init__`'s reads of the layer: `out_dim` of a Linear or Conv2d (any
    /// other layer fails A1111's load).
    pub(crate) fn check_layer(&self, w: &[usize]) -> Result<()> {
        match w.len() {
            2 | 4 => Ok(()),
            _ => Err(err(
                NAME,
                "layer",
                format!(
                    "OFT applies to Linear and Conv2d layers only, not a weight of shape {w:?}"
                ),
            )),
        }
    }

    /// `NetworkModuleOFT.calc_updown`. Not `oft_diag`: `Q = B − Bᵀ` per block; with a nonzero
    /// constraint `c = alpha · out_dim`, `Q ← Q · (min(‖Q‖, c) + 1e-8) / (‖Q‖ + 1e-8)` (‖·‖ over
    /// all blocks); `R = (I + Q)(I − Q)⁻¹` (Cayley). OFT: the weight's rows in blocks,
    /// `merged[k] = R[k]ᵀ · W[k]` (`einsum('k n m, k n ... -> k m ...')`; one stored block serves
    /// all). BOFT: `m` butterfly stages, stage `i` permuting rows `(c g k) -> (c k g)` with
    /// `g = 2`, `k = 2^i · (b/2)`, multiplying each `b`-row block by `R[i]` (not transposed),
    /// and permuting back. Then `merged *= rescale`, `updown = merged − W`, `finalize_updown`
    /// (scale 1: the multiplier scales the difference, not the rotation).
    pub(crate) fn calc_updown(
        &self,
        common: &Common,
        orig: &Tensor,
        multiplier: f64,
    ) -> Result<(Tensor, Option<Tensor>)> {
        self.check_layer(orig.dims())?;
        let out = orig.dims()[0];
        let rest = orig.elem_count() / out;
        let part = if self.is_r { "oft_diag" } else { "oft_blocks" };
        let dims = self.blocks.dims().to_vec();
        let b = *dims.get(dims.len().wrapping_sub(2)).unwrap_or(&0);
        if !(dims.len() == 3 || (dims.len() == 4 && !self.is_r)) || dims[dims.len() - 1] != b {
            return Err(err(
                NAME,
                part,
                format!(
                    "has shape {dims:?}: expected square blocks [n, b, b] (or BOFT's [m, n, b, b])"
                ),
            ));
        }
        let w = orig.contiguous()?.reshape((out, rest))?;
        let merged = if dims.len() == 3 {
            let (stored, blocks_in_w) = (dims[0], out / b);
            let fits = out.is_multiple_of(b)
                && if self.is_r {
                    stored == 1 || stored == blocks_in_w
                } else {
                    stored == blocks_in_w
                };
            if !fits {
                return Err(err(
                    NAME,
                    part,
                    format!(
                        "{stored} blocks of {b}x{b} do not cover the layer's {out} output rows"
                    ),
                ));
            }
            let r = self.rotations(out)?;
            let rt = r
                .transpose(1, 2)?
                .broadcast_as((blocks_in_w, b, b))?
                .contiguous()?;
            rt.matmul(&w.reshape((blocks_in_w, b, rest))?)?
                .reshape((out, rest))?
        } else {
            self.butterfly(&w, out, rest)?
        };
        let merged = match &self.rescale {
            Some(s) => {
                let s = s.reshape((s.elem_count(), 1))?;
                let shape = broadcast_or_err(NAME, "rescale", s.dims(), &[out, rest])?;
                if shape != [out, rest] {
                    return Err(err(
                        NAME,
                        "rescale",
                        format!("{} values do not scale {out} output rows", s.elem_count()),
                    ));
                }
                merged.broadcast_mul(&s)?
            }
            None => merged,
        };
        let updown = (merged - w)?.reshape(orig.dims())?;
        let shape = orig.dims().to_vec();
        common.finalize_updown(NAME, updown, orig, &shape, None, 1.0, multiplier)
    }

    /// BOFT's stages over the rows of `w` (`[out, rest]`).
    fn butterfly(&self, w: &Tensor, out: usize, rest: usize) -> Result<Tensor> {
        let dims = self.blocks.dims();
        let (m, nb, b) = (dims[0], dims[1], dims[2]);
        let r_b = b / 2;
        let d = out / b;
        if r_b == 0 || !out.is_multiple_of(b) || !(nb == 1 || nb == d) {
            return Err(err(
                NAME,
                "oft_blocks",
                format!("BOFT blocks {dims:?} do not fit the layer's {out} output rows"),
            ));
        }
        let r = self.rotations(out)?;
        let mut inp = w.clone();
        for i in 0..m {
            let k = 1usize
                .checked_shl(i as u32)
                .and_then(|p| p.checked_mul(r_b));
            let Some(k) = k.filter(|k| k.checked_mul(2).is_some_and(|k2| out.is_multiple_of(k2)))
            else {
                return Err(err(
                    NAME,
                    "oft_blocks",
                    format!("BOFT stage {i} of {m} does not divide the layer's {out} output rows"),
                ));
            };
            let c = out / (2 * k);
            inp = inp
                .reshape((c, 2, k, rest))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((d, b, rest))?;
            let bi = r.get(i)?.broadcast_as((d, b, b))?.contiguous()?;
            inp = bi.matmul(&inp)?;
            inp = inp
                .reshape((c, k, 2, rest))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((out, rest))?;
        }
        Ok(inp)
    }

    /// The rotations: `oft_diag` as stored; otherwise the Cayley transform of the skew part,
    /// after the norm constraint.
    fn rotations(&self, out: usize) -> Result<Tensor> {
        if self.is_r {
            return Ok(self.blocks.clone());
        }
        let dims = self.blocks.dims().to_vec();
        let b = dims[dims.len() - 1];
        let v = self.blocks.flatten_all()?.to_vec1::<f32>()?;
        let mut q = vec![0f32; v.len()];
        for (blk, qb) in v.chunks_exact(b * b).zip(q.chunks_exact_mut(b * b)) {
            for i in 0..b {
                for j in 0..b {
                    qb[i * b + j] = blk[i * b + j] - blk[j * b + i];
                }
            }
        }
        let constraint = self.alpha.unwrap_or(0.0) * out as f32;
        if constraint != 0.0 {
            let norm = q
                .iter()
                .map(|&x| (x as f64) * (x as f64))
                .sum::<f64>()
                .sqrt() as f32;
            let ratio = (norm.min(constraint) + 1e-8f32) / (norm + 1e-8f32);
            q.iter_mut().for_each(|x| *x *= ratio);
        }
        let mut r = Vec::with_capacity(q.len());
        for qb in q.chunks_exact(b * b) {
            r.extend(cayley(qb, b).ok_or_else(|| err(NAME, "oft_blocks", "I - Q is singular"))?);
        }
        Ok(Tensor::from_vec(r, dims, &Device::Cpu)?)
    }
}

/// `(I + Q) · (I − Q)⁻¹` for one `b`×`b` block (row-major), in f64 (torch inverts in f32),
/// `None` where `I − Q` is singular.
fn cayley(q: &[f32], b: usize) -> Option<Vec<f32>> {
    let eye = |i: usize, j: usize| if i == j { 1.0 } else { 0.0 };
    // Gauss-Jordan with partial pivoting on [I - Q | I].
    let mut a: Vec<f64> = (0..b * b)
        .map(|x| eye(x / b, x % b) - q[x] as f64)
        .collect();
    let mut inv: Vec<f64> = (0..b * b).map(|x| eye(x / b, x % b)).collect();
    for col in 0..b {
        let piv =
            (col..b).max_by(|&x, &y| a[x * b + col].abs().total_cmp(&a[y * b + col].abs()))?;
        if a[piv * b + col] == 0.0 || !a[piv * b + col].is_finite() {
            return None;
        }
        for j in 0..b {
            a.swap(col * b + j, piv * b + j);
            inv.swap(col * b + j, piv * b + j);
        }
        let p = a[col * b + col];
        for j in 0..b {
            a[col * b + j] /= p;
            inv[col * b + j] /= p;
        }
        for row in (0..b).filter(|&r| r != col) {
            let f = a[row * b + col];
            if f != 0.0 {
                for j in 0..b {
                    a[row * b + j] -= f * a[col * b + j];
                    inv[row * b + j] -= f * inv[col * b + j];
                }
            }
        }
    }
    let plus = |i: usize, k: usize| eye(i, k) + q[i * b + k] as f64;
    Some(
        (0..b * b)
            .map(|x| {
                let (i, j) = (x / b, x % b);
                (0..b).map(|k| plus(i, k) * inv[k * b + j]).sum::<f64>() as f32
            })
            .collect(),
    )
}
