//! Window attention shared by SwinIR and DAT (spandrel's `WindowAttention` and DAT's spatial
//! branches): scaled `q·kᵀ` plus a relative position bias, for shifted windows plus the mask of
//! spandrel's `calculate_mask` (−100 between tokens of different regions), softmax, `·v`. The
//! windows go in groups of at most [`ATTN_BUDGET`] attention weights, each group with its own
//! mask, so that a file's window size and head count cannot make one huge allocation.

use std::ops::Range;

use candle_core::{Device, Tensor};

use crate::error::Result;

/// The mask value between tokens of different regions in a shifted window.
const MASKED: f32 = -100.0;
/// Most attention weights held at once (64 MiB of f32).
pub(super) const ATTN_BUDGET: usize = 1 << 24;

/// The region of position `i` of a side `len` under windows `s` shifted by `sh` (spandrel's
/// slices `[0, −s)`, `[−s, −sh)`, `[−sh, ∞)`; with `sh = 0` the last takes everything).
fn band(i: usize, len: usize, s: usize, sh: usize) -> usize {
    if sh == 0 || i >= len - sh {
        2
    } else if i >= len - s {
        1
    } else {
        0
    }
}

/// `calculate_mask` on an `h × w` map of `hs × ws` windows shifted by half a window, for the
/// windows `windows` (counted over the batch: window `i` is the `i mod (windows per image)`-th
/// of its image, in raster order): `[len, N, N]`.
pub(super) fn shifted_mask(
    (h, w): (usize, usize),
    (hs, ws): (usize, usize),
    windows: Range<usize>,
    dev: &Device,
) -> Result<Tensor> {
    let (nh, nw, n) = (h / hs, w / ws, hs * ws);
    let mut out = Vec::with_capacity(windows.len() * n * n);
    for i in windows.clone() {
        let (wy, wx) = ((i % (nh * nw)) / nw, i % nw);
        let ids: Vec<usize> = (0..n)
            .map(|t| {
                band(wy * hs + t / ws, h, hs, hs / 2) * 3 + band(wx * ws + t % ws, w, ws, ws / 2)
            })
            .collect();
        for &i in &ids {
            out.extend(ids.iter().map(|&j| if i == j { 0.0 } else { MASKED }));
        }
    }
    Ok(Tensor::from_vec(out, (windows.len(), n, n), dev)?)
}

/// Attention of `q` (already scaled), `k`, `v` `[windows, heads, N, d]` with `bias`
/// `[heads, N, N]`; `shifted`: the `(map, window)` sizes whose shifted-window mask applies.
/// Returns `[windows, heads, N, d]`.
pub(super) fn window_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: &Tensor,
    shifted: Option<((usize, usize), (usize, usize))>,
) -> Result<Tensor> {
    in_groups(q, k, v, bias, shifted, ATTN_BUDGET)
}

/// [`window_attention`] with at most `budget` attention weights at once.
fn in_groups(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: &Tensor,
    shifted: Option<((usize, usize), (usize, usize))>,
    budget: usize,
) -> Result<Tensor> {
    let (total, heads, n, _) = q.dims4()?;
    let group = (budget / (heads * n * n).max(1)).max(1);
    let bias = bias.unsqueeze(0)?;
    let mut ys = Vec::with_capacity(total.div_ceil(group));
    for start in (0..total).step_by(group) {
        let len = group.min(total - start);
        let att = q
            .narrow(0, start, len)?
            .matmul(&k.narrow(0, start, len)?.t()?)?
            .broadcast_add(&bias)?;
        let att = match shifted {
            Some((map, win)) => {
                let m = shifted_mask(map, win, start..start + len, q.device())?;
                att.broadcast_add(&m.unsqueeze(1)?)?
            }
            None => att,
        };
        ys.push(candle_nn::ops::softmax_last_dim(&att)?.matmul(&v.narrow(0, start, len)?)?);
    }
    Ok(Tensor::cat(&ys, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_of_windows_give_what_all_windows_at_once_give() {
        let dev = Device::Cpu;
        // 2 images of a 8×12 map in 4×4 windows: 12 windows, 2 heads, N = 16
        let r = |seed: u64, shape: (usize, usize, usize, usize)| {
            let n = shape.0 * shape.1 * shape.2 * shape.3;
            let v: Vec<f32> = (0..n)
                .map(|i| (((i as u64 + 1) * (seed * 2654435761 + 7)) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            Tensor::from_vec(v, shape, &dev).unwrap()
        };
        let (q, k, v) = (
            r(1, (12, 2, 16, 3)),
            r(2, (12, 2, 16, 3)),
            r(3, (12, 2, 16, 3)),
        );
        let bias = r(4, (1, 2, 16, 16)).squeeze(0).unwrap();
        let shifted = Some(((8, 12), (4, 4)));
        let all = in_groups(&q, &k, &v, &bias, shifted, usize::MAX).unwrap();
        // one window per group: each group's own mask
        let one = in_groups(&q, &k, &v, &bias, shifted, 2 * 16 * 16).unwrap();
        let d = (all - one).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        // the mask makes a difference
        let plain = in_groups(&q, &k, &v, &bias, None, usize::MAX).unwrap();
        let d = (plain - in_groups(&q, &k, &v, &bias, shifted, usize::MAX).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(d.to_scalar::<f32>().unwrap() > 1e-3);
    }
}
