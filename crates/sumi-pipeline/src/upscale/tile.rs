//! A1111's tiled model inference, restated from v1.10.1 `modules/upscaler_utils.py`
//! (`upscale_with_model`, `upscale_pil_patch`, the BGR conversions) and `modules/images.py`
//! (`split_grid`, `combine_grid`, shared with the SD upscale script in
//! [`crate::sd_upscale::grid`]).
//!
//! Tiles overlap by `overlap` pixels; in the output each tile after the first of its row is
//! blended into the row over the (scaled) overlap with a linear ramp `i·255 / overlap`
//! (uint8), rows likewise into the image. Tiles are converted to uint8 one by one (clamp to
//! [0, 1], ×255, round half to even), as A1111 does, before any blending.

use std::ops::ControlFlow;

use candle_core::{Device, Tensor};
use image::RgbImage;
use sumi_models::upscalers::UpscalerNet;

use super::{TileOptions, TileProgress, UpscaleError};
use crate::error::Result;
use crate::sd_upscale::grid::{combine_grid, split_grid, Grid, GridRow, GridTile};

/// `pil_image_to_torch_bgr`: `[1, 3, h, w]` f32, BGR, `u8 / 255` computed in f64 as numpy does.
pub(super) fn to_bgr_tensor(img: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    let n = (w * h) as usize;
    let mut v = vec![0f32; 3 * n];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            v[c * n + i] = (f64::from(p.0[2 - c]) / 255.0) as f32;
        }
    }
    Ok(Tensor::from_vec(v, (1, 3, h as usize, w as usize), device)?)
}

/// `torch_bgr_to_pil_image`: clamp to [0, 1], ×255 in f32, round half to even, BGR → RGB.
pub(super) fn from_bgr_tensor(t: &Tensor) -> Result<RgbImage> {
    let (_, c, h, w) = t.dims4()?;
    if c != 3 {
        return Err(UpscaleError::Channels { found: c }.into());
    }
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    let n = h * w;
    let px = |x: f32| (x.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8;
    let mut out = RgbImage::new(w as u32, h as u32);
    for (i, p) in out.pixels_mut().enumerate() {
        p.0 = [px(v[2 * n + i]), px(v[n + i]), px(v[i])];
    }
    Ok(out)
}

/// `upscale_pil_patch`: one image through the network.
fn upscale_patch(net: &UpscalerNet, img: &RgbImage) -> Result<RgbImage> {
    let x = to_bgr_tensor(img, &Device::Cpu)?;
    let y = net.forward(&x).map_err(UpscaleError::Network)?;
    from_bgr_tensor(&y)
}

/// `upscaler_utils.upscale_with_model`: `img` through `net`, in overlapping tiles of
/// `opts.tile` pixels (the whole image at once when `opts.tile` is 0). `on_tile` hears of each
/// tile before it runs (`done` tiles of `total` finished; `pass` is left 0) and stops the
/// upscale with [`UpscaleError::Interrupted`] by breaking (A1111 checks `state.interrupted`
/// there).
pub fn upscale_with_model(
    net: &UpscalerNet,
    img: &RgbImage,
    opts: TileOptions,
    on_tile: &mut dyn FnMut(TileProgress) -> ControlFlow<()>,
) -> Result<RgbImage> {
    opts.check()?;
    if opts.tile == 0 {
        notify(on_tile, 0, 1)?;
        return upscale_patch(net, img);
    }
    let grid = split_grid(img, opts.tile, opts.tile, opts.overlap);
    let total = grid.tile_count();
    let mut rows = Vec::with_capacity(grid.rows.len());
    let mut scale = 1u32;
    for (r, row) in grid.rows.iter().enumerate() {
        let mut tiles = Vec::with_capacity(row.tiles.len());
        for t in &row.tiles {
            notify(on_tile, r * row.tiles.len() + tiles.len(), total)?;
            let out = upscale_patch(net, &t.image)?;
            // scale_factor = output.width // tile.width
            scale = out.width() / opts.tile;
            tiles.push(GridTile {
                x: t.x * i64::from(scale),
                image: out,
            });
        }
        rows.push(GridRow {
            y: row.y * i64::from(scale),
            tiles,
        });
    }
    Ok(combine_grid(&Grid {
        rows,
        tile_w: grid.tile_w * scale,
        tile_h: grid.tile_h * scale,
        image_w: grid.image_w * scale,
        image_h: grid.image_h * scale,
        overlap: grid.overlap * scale,
    }))
}

pub(super) fn notify(
    on_tile: &mut dyn FnMut(TileProgress) -> ControlFlow<()>,
    done: usize,
    total: usize,
) -> Result<()> {
    let p = TileProgress {
        pass: 0,
        done,
        total,
    };
    match on_tile(p) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(UpscaleError::Interrupted.into()),
    }
}

/// Pillow's `Image.resize((width, height), NEAREST)`: `ImagingScaleAffine`, the source
/// coordinate of output pixel `i` accumulated as `scale/2 + scale + … ` (in f64, as Pillow
/// adds it up) and truncated.
pub fn resize_nearest(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    let table = |len_in: u32, len_out: u32| -> Vec<u32> {
        let a = f64::from(len_in) / f64::from(len_out);
        let mut o = a * 0.5;
        (0..len_out)
            .map(|_| {
                let i = (o as u32).min(len_in - 1);
                o += a;
                i
            })
            .collect()
    };
    let xs = table(img.width(), width);
    let ys = table(img.height(), height);
    RgbImage::from_fn(width, height, |x, y| {
        *img.get_pixel(xs[x as usize], ys[y as usize])
    })
}
