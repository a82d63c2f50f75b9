//! A1111's second tiling (`modules/upscaler_utils.py` `upscale_2` / `tiled_upscale_2`, what
//! its SwinIR upscaler runs, with `SWIN_tile` 192 and `SWIN_tile_overlap` 8): square tiles of
//! `min(tile, h, w)` pixels at rows `0, stride, 2·stride, … < h − tile` plus `h − tile` (columns
//! alike), each through the network on the float BGR picture; the outputs summed and divided
//! by how many tiles cover each output pixel; then one conversion to uint8. No blending ramp and
//! no uint8 tiles, unlike [`super::upscale_with_model`].

use std::ops::ControlFlow;

use candle_core::{Device, Tensor};
use image::RgbImage;
use sumi_models::upscalers::UpscalerNet;

use super::tile::{from_bgr_tensor, notify, to_bgr_tensor};
use super::{TileProgress, UpscaleError};
use crate::error::Result;

/// A1111's `SWIN_tile` default.
pub const SWIN_TILE: usize = 192;
/// A1111's `SWIN_tile_overlap` default.
pub const SWIN_TILE_OVERLAP: usize = 8;

/// Tile starts along a side of `len` pixels: `range(0, len − tile, stride) + [len − tile]`. A
/// stride under 1 (an overlap as large as a tile on a tiny picture, where A1111 leaves pixels
/// uncovered and divides by zero) is taken as 1.
fn starts(len: usize, tile: usize, stride: usize) -> Vec<usize> {
    let last = len - tile;
    (0..last)
        .step_by(stride.max(1))
        .chain(std::iter::once(last))
        .collect()
}

/// `upscale_2(img, model, tile_size, tile_overlap, scale)`: `img` through `net` in
/// overlapping tiles averaged where they overlap (the whole picture at once when `tile` is
/// 0). `on_tile` hears of each tile before it runs and stops the upscale by breaking.
pub fn upscale_weighted(
    net: &UpscalerNet,
    img: &RgbImage,
    (tile, overlap): (usize, usize),
    on_tile: &mut dyn FnMut(TileProgress) -> ControlFlow<()>,
) -> Result<RgbImage> {
    let x = to_bgr_tensor(img, &Device::Cpu)?;
    let (h, w) = (img.height() as usize, img.width() as usize);
    let tile = tile.min(h).min(w);
    let run = |x: &Tensor| net.forward(x).map_err(UpscaleError::Network);
    if tile == 0 {
        notify(on_tile, 0, 1)?;
        return from_bgr_tensor(&run(&x)?);
    }
    let s = net.scale();
    let stride = tile.saturating_sub(overlap);
    let (rows, cols) = (starts(h, tile, stride), starts(w, tile, stride));
    let (oh, ow) = (h * s, w * s);
    let mut sum = vec![0f32; 3 * oh * ow];
    let mut count = vec![0f32; 3 * oh * ow];
    let total = rows.len() * cols.len();
    for (r, &y0) in rows.iter().enumerate() {
        for (c, &x0) in cols.iter().enumerate() {
            notify(on_tile, r * cols.len() + c, total)?;
            // contiguous: the network pads a tile that is no multiple of its window by
            // index-select, which needs it so
            let patch = x.narrow(2, y0, tile)?.narrow(3, x0, tile)?.contiguous()?;
            let out = run(&patch)?.flatten_all()?.to_vec1::<f32>()?;
            let ts = tile * s;
            for ch in 0..3 {
                for i in 0..ts {
                    let src = &out[(ch * ts + i) * ts..][..ts];
                    let at = (ch * oh + y0 * s + i) * ow + x0 * s;
                    for (j, v) in src.iter().enumerate() {
                        sum[at + j] += v;
                        count[at + j] += 1.0;
                    }
                }
            }
        }
    }
    let avg: Vec<f32> = sum.iter().zip(&count).map(|(a, n)| a / n).collect();
    from_bgr_tensor(&Tensor::from_vec(avg, (1, 3, oh, ow), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::starts;

    #[test]
    fn tile_starts_as_a1111_ranges_them() {
        assert_eq!(starts(40, 16, 8), [0, 8, 16, 24]);
        assert_eq!(starts(30, 16, 8), [0, 8, 14]);
        assert_eq!(starts(16, 16, 8), [0]);
        assert_eq!(
            starts(20, 5, 0),
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
        );
    }
}
