//! Token merging for Stable Diffusion (ToMe), as the `tomesd` package 0.1.3 computes it with
//! `use_rand=False` (A1111's `token_merging_ratio`): before a transformer block's
//! self-attention, `r = ⌊N·ratio⌋` of the `N` tokens are merged into their most similar
//! "destination" token, and the attention's output is spread back to all `N` afterwards.
//!
//! Bipartite soft matching (`tomesd.merge.bipartite_soft_matching_random2d`, no randomness):
//! - the destinations are the top-left token of each `sx × sy` window of the `w × h` token grid
//!   (windows that do not fit at the right and bottom edges hold sources only); every other
//!   token is a source, in raster order after the destinations are taken out;
//! - each source's score is its best cosine similarity to a destination (computed on the
//!   metric, the block's input), and the `r` best-scoring sources are merged: each destination
//!   becomes the mean of itself and the sources merged into it;
//! - the merged sequence is `[unmerged sources (by descending score), destinations]`; unmerging
//!   gives each token the row it was merged into.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// The merge and unmerge of one batch, one index plan per image.
#[derive(Debug, Clone)]
pub struct TokenMerge {
    /// Per image: the token rows the merged sequence's unmerged part takes, in order.
    keep: Vec<Tensor>,
    /// Per image: for each destination, the rows merged into it (itself first).
    groups: Vec<Vec<Vec<u32>>>,
    /// Per image: for each of the `N` tokens, its row in the merged sequence.
    back: Vec<Tensor>,
    /// The destinations' token rows (the same for every image).
    dst: Vec<u32>,
}

/// The destination token rows: the top-left token of each whole `sx × sy` window of a `w × h`
/// grid, in raster order of the windows; and the sources, every other row in raster order.
fn partition(w: usize, h: usize, sx: usize, sy: usize) -> (Vec<u32>, Vec<u32>) {
    let (hsy, wsx) = (h / sy, w / sx);
    let mut is_dst = vec![false; w * h];
    let mut dst = Vec::with_capacity(hsy * wsx);
    for wy in 0..hsy {
        for wx in 0..wsx {
            let row = wy * sy * w + wx * sx;
            is_dst[row] = true;
            dst.push(row as u32);
        }
    }
    let src = (0..w * h)
        .filter(|&i| !is_dst[i])
        .map(|i| i as u32)
        .collect();
    (dst, src)
}

impl TokenMerge {
    /// Plans the merge of `r` tokens of `metric` (`[b, w·h, c]`, tokens in raster order of a
    /// `w × h` grid) with `sx × sy` windows; `None` when nothing is merged (`r = 0`).
    pub fn plan(
        metric: &Tensor,
        (w, h): (usize, usize),
        (sx, sy): (usize, usize),
        r: usize,
    ) -> Result<Option<Self>> {
        let (b, n, _) = metric.dims3()?;
        if r == 0 || n != w * h || sx == 0 || sy == 0 {
            return Ok(None);
        }
        let (dst, src) = partition(w, h, sx, sy);
        if dst.is_empty() || src.is_empty() {
            return Ok(None);
        }
        let r = r.min(src.len());
        let dev = metric.device();
        let dst_t = Tensor::new(dst.as_slice(), dev)?;
        let src_t = Tensor::new(src.as_slice(), dev)?;
        let metric = metric.to_dtype(DType::F32)?;
        let norm = metric.sqr()?.sum_keepdim(2)?.sqrt()?;
        let metric = metric.broadcast_div(&norm)?;
        let (mut keep, mut groups, mut back) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..b {
            let m = metric.get(i)?;
            let a = m.index_select(&src_t, 0)?;
            let bb = m.index_select(&dst_t, 0)?;
            let scores = a.matmul(&bb.t()?)?;
            let best: Vec<f32> = scores.max(1)?.to_vec1()?;
            let best_dst: Vec<u32> = scores.argmax(1)?.to_vec1()?;
            // sources by descending best score (ties: the earlier source first)
            let mut order: Vec<usize> = (0..src.len()).collect();
            order.sort_by(|&x, &y| best[y].total_cmp(&best[x]));
            let (merged, unmerged) = order.split_at(r);
            let unm_len = unmerged.len();
            let mut g: Vec<Vec<u32>> = dst.iter().map(|&d| vec![d]).collect();
            let mut rows = vec![0u32; n];
            for (j, &d) in dst.iter().enumerate() {
                rows[d as usize] = (unm_len + j) as u32;
            }
            for (k, &s) in unmerged.iter().enumerate() {
                rows[src[s] as usize] = k as u32;
            }
            for &s in merged {
                let j = best_dst[s] as usize;
                g[j].push(src[s]);
                rows[src[s] as usize] = (unm_len + j) as u32;
            }
            let kept: Vec<u32> = unmerged.iter().map(|&s| src[s]).collect();
            keep.push(Tensor::new(kept.as_slice(), dev)?);
            groups.push(g);
            back.push(Tensor::new(rows.as_slice(), dev)?);
        }
        Ok(Some(Self {
            keep,
            groups,
            back,
            dst,
        }))
    }

    /// `x` `[b, N, c]` merged to `[b, N − r, c]`: the unmerged sources, then each destination
    /// as the mean of itself and its merged sources.
    pub fn merge(&self, x: &Tensor) -> Result<Tensor> {
        let dev = x.device();
        let mut out = Vec::with_capacity(self.keep.len());
        for (i, (keep, groups)) in self.keep.iter().zip(&self.groups).enumerate() {
            let xi = x.get(i)?;
            let unm = xi.index_select(keep, 0)?;
            // a destination's row sums its group; the rows are then divided by the group sizes
            let members: Vec<u32> = groups.iter().flatten().copied().collect();
            let owner: Vec<u32> = groups
                .iter()
                .enumerate()
                .flat_map(|(j, g)| std::iter::repeat_n(j as u32, g.len()))
                .collect();
            let summed = Tensor::zeros((self.dst.len(), xi.dim(1)?), xi.dtype(), dev)?.index_add(
                &Tensor::new(owner.as_slice(), dev)?,
                &xi.index_select(&Tensor::new(members.as_slice(), dev)?, 0)?,
                0,
            )?;
            let sizes: Vec<f32> = groups.iter().map(|g| g.len() as f32).collect();
            let sizes = Tensor::new(sizes.as_slice(), dev)?
                .to_dtype(xi.dtype())?
                .unsqueeze(1)?;
            let dst = summed.broadcast_div(&sizes)?;
            out.push(Tensor::cat(&[&unm, &dst], 0)?);
        }
        Ok(Tensor::stack(&out, 0)?)
    }

    /// `x` `[b, N − r, c]` (a merged sequence after attention) back to `[b, N, c]`: each token
    /// takes the row it was merged into.
    pub fn unmerge(&self, x: &Tensor) -> Result<Tensor> {
        let rows = self
            .back
            .iter()
            .enumerate()
            .map(|(i, back)| x.get(i)?.index_select(back, 0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::stack(&rows, 0)?)
    }
}

/// The tokens tomesd merges in a block of `n` tokens at `ratio` (`int(n * ratio)`).
pub fn merged_tokens(n: usize, ratio: f64) -> usize {
    if ratio.is_finite() && ratio > 0.0 {
        ((n as f64) * ratio).floor() as usize
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_window_corners_and_edges_hold_sources() {
        // 5 × 3 grid, 2 × 2 windows: two whole windows on the first row pair only
        let (dst, src) = partition(5, 3, 2, 2);
        assert_eq!(dst, [0, 2]);
        assert_eq!(src.len(), 13);
        assert!(!src.contains(&0) && !src.contains(&2));
    }

    #[test]
    fn merging_nothing_plans_nothing() {
        let m = Tensor::ones((1, 16, 4), DType::F32, &candle_core::Device::Cpu).unwrap();
        assert!(TokenMerge::plan(&m, (4, 4), (2, 2), 0).unwrap().is_none());
        assert_eq!(merged_tokens(4096, 0.5), 2048);
        assert_eq!(merged_tokens(10, 0.0), 0);
        assert_eq!(merged_tokens(10, f64::NAN), 0);
    }
}
