//! Winograd's F(2×2, 3×3) (see [`super::winograd`]) for small pictures with many channels:
//! the U-Net's 1280-channel layers at 16² and 8², whose 128 or 32 tiles would make a single
//! task of [`super::winograd::conv3x3`]'s tile blocks (one thread), and whose weight transform
//! (26 M values at 1280 channels) would run before any product. The dispatch (`conv.rs`) sends
//! them here with AVX2 only.
//!
//! Here all tiles' input transforms come first (`V[ξ][panel][ci][lane]` for each depth block
//! of input channels, a task per block), then tasks take blocks of output channels:
//! each transforms its own channels' weights one depth block at a time, runs the 16 products
//! over all tiles for that block (adding to the earlier blocks' sums) and at the end writes
//! its channels' outputs. So the weight transform is spread over the tasks and interleaved
//! with their products, and no transformed weights outlive a task.

use rayon::prelude::*;

use super::winograd::{inputs_scalar, outputs_scalar, tile_coords, transform_channel};
use super::{gemm_f32, Unfilled};

/// Output channels per task (a multiple of the GEMM's 6-row register block).
const TASK_CHANNELS: usize = 96;
/// Input channels per block of the depth: a task transforms its channels' weights for one
/// block (`16 · TASK_CHANNELS · DEPTH · 4` bytes) and runs the 16 products over it, adding to
/// the earlier blocks' sums. Against 48 channels and a depth of 128 (whose block would stay
/// in L2), interleaved medians of 18, 2 threads, direct-equivalent GFLOP/s: 1280→1280 at 16²
/// 147.5 vs 138, at 8² 112 vs 106; 2560→1280 at 16² 173.5 vs 172.5, at 8² 112.5 vs 92.5.
const DEPTH: usize = 256;

/// As [`super::winograd::conv3x3`]: `x` (`[b, cin, h, w]`) with `w` (`[cout, cin, 3, 3]`) and
/// `bias`, stride 1, padding 1, into `[b, cout, h, w]`; `None` where the GEMM does not run.
pub fn conv3x3(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    (b, cin, h, wd): (usize, usize, usize, usize),
    cout: usize,
) -> Option<Vec<f32>> {
    const NR: usize = gemm_f32::NR;
    if !gemm_f32::available() {
        return None;
    }
    let (th, tw) = (h.div_ceil(2), wd.div_ceil(2));
    let tiles = b * th * tw;
    let panels = tiles.div_ceil(NR);
    let mut coords = Vec::new();
    tile_coords(&mut coords, (0, tiles), (th, tw), (h, wd));
    let coords = &coords;
    // V for every tile, by depth blocks: block `blk` (depth `kc`, the last one maybe short)
    // holds `[ξ][panel][kc][lane]` and starts after the whole blocks before it; a task
    // transforms one block's input channels straight into it
    let block_len = 16 * panels * DEPTH * NR;
    let mut v = vec![0f32; 16 * panels * cin * NR];
    v.par_chunks_mut(block_len)
        .enumerate()
        .for_each(|(blk, block)| {
            let ci0 = blk * DEPTH;
            let kc = DEPTH.min(cin - ci0);
            inputs_scalar(x, block, coords, (cin, h, wd), (ci0, kc), panels);
        });
    let hw = h * wd;
    let v = &v;
    let mut out = Unfilled::new(b * cout * hw);
    let out_ptr = out.ptr();
    let out_ref = &out_ptr;
    (0..cout.div_ceil(TASK_CHANNELS))
        .into_par_iter()
        .for_each_init(
            || (Vec::<f32>::new(), Vec::<f32>::new()),
            |(u, m), task| {
                let c0 = task * TASK_CHANNELS;
                let nc = TASK_CHANNELS.min(cout - c0);
                m.resize(16 * panels * nc * NR, 0.0);
                for blk in 0..cin.div_ceil(DEPTH) {
                    let (ci0, kc) = (blk * DEPTH, DEPTH.min(cin - blk * DEPTH));
                    // U for this block: `[ξ][co][kc]`, the positions `xs` apart (16 floats more
                    // than their rows: a power-of-two distance would put the transform's 16
                    // store streams in one cache set)
                    let xs = nc * kc + 16;
                    u.resize(16 * xs, 0.0);
                    for co in 0..nc {
                        let g = &w[((c0 + co) * cin + ci0) * 9..][..9 * kc];
                        transform_channel(g, &mut u[co * kc..], kc, xs);
                    }
                    let init = match blk {
                        0 => gemm_f32::Init::Zero,
                        _ => gemm_f32::Init::Accumulate,
                    };
                    for xi in 0..16 {
                        let d = gemm_f32::Dims {
                            m: nc,
                            n: tiles,
                            k: kc,
                            lda: kc,
                            ldc: NR,
                            cps: nc * NR,
                        };
                        // SAFETY: the GEMM runs here (`available`); U_ξ is nc rows of kc, V_ξ of
                        // this block `panels` panels of kc×NR, M_ξ `panels`×nc×NR (from zero in
                        // the first block), all sized above.
                        #[cfg(target_arch = "x86_64")]
                        unsafe {
                            gemm_f32::gemm_packed(
                                d,
                                u[xi * xs..].as_ptr(),
                                v[blk * block_len + xi * panels * kc * NR..].as_ptr(),
                                m[xi * panels * nc * NR..].as_mut_ptr(),
                                init,
                            );
                        }
                        #[cfg(not(target_arch = "x86_64"))]
                        let _ = (d, init);
                    }
                }
                let bias = &bias[c0..c0 + nc];
                outputs_scalar(m, out_ref, bias, coords, (nc, h, wd), (c0, cout), panels);
            },
        );
    // SAFETY: the tasks cover every output channel of every item at every pixel.
    Some(unsafe { out.filled() })
}

#[cfg(test)]
mod tests {
    fn check(b: usize, cin: usize, cout: usize, h: usize, w: usize) {
        super::super::winograd::tests::check_conv(super::conv3x3, (b, cin, cout), (h, w));
    }

    #[test]
    fn matches_candle_conv2d() {
        check(2, 5, 7, 9, 11); // odd sizes: partial tiles; one task each way
        check(2, 300, 200, 8, 8); // two depth blocks (the last partial),
                                  // three channel tasks (the last partial)
        check(1, 600, 20, 4, 6); // three depth blocks
        check(1, 64, 49, 16, 16); // 64 tiles: one whole panel; one channel task, its last row tile of 1
        check(3, 70, 13, 11, 14); // 126 tiles: two panels, the second partial
    }
}
