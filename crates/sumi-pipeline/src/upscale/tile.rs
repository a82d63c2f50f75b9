//! A1111's tiled model inference, restated from v1.10.1 `modules/upscaler_utils.py`
//! (`upscale_with_model`, `upscale_pil_patch`, the BGR conversions) and `modules/images.py`
//! (`split_grid`, `combine_grid`), with Pillow's `crop` (zero outside the image) and `paste`
//! with an `L` mask (`out = (dst·(255 − m) + src·m + 128) · 257 >> 16`, Pillow's `BLEND`).
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

/// `pil_image_to_torch_bgr`: `[1, 3, h, w]` f32, BGR, `u8 / 255` computed in f64 as numpy does.
fn to_bgr_tensor(img: &RgbImage, device: &Device) -> Result<Tensor> {
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
fn from_bgr_tensor(t: &Tensor) -> Result<RgbImage> {
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

/// Pillow's `crop((x, y, x + w, y + h))`: pixels outside the image are black.
fn crop(img: &RgbImage, x: i64, y: i64, w: u32, h: u32) -> RgbImage {
    let mut out = RgbImage::new(w, h);
    let (iw, ih) = (i64::from(img.width()), i64::from(img.height()));
    for oy in 0..h {
        let sy = y + i64::from(oy);
        if !(0..ih).contains(&sy) {
            continue;
        }
        for ox in 0..w {
            let sx = x + i64::from(ox);
            if (0..iw).contains(&sx) {
                out.put_pixel(ox, oy, *img.get_pixel(sx as u32, sy as u32));
            }
        }
    }
    out
}

/// Pillow's `paste(src, (x, y), mask)` clipped to `dst`; `mask(sx, sy)` is the `L` mask value
/// at a source pixel (255 everywhere without a mask).
fn paste(dst: &mut RgbImage, src: &RgbImage, x: i64, y: i64, mask: impl Fn(u32, u32) -> u8) {
    let (dw, dh) = (i64::from(dst.width()), i64::from(dst.height()));
    for sy in 0..src.height() {
        let dy = y + i64::from(sy);
        if !(0..dh).contains(&dy) {
            continue;
        }
        for sx in 0..src.width() {
            let dx = x + i64::from(sx);
            if !(0..dw).contains(&dx) {
                continue;
            }
            let m = u32::from(mask(sx, sy));
            let s = src.get_pixel(sx, sy).0;
            let d = dst.get_pixel_mut(dx as u32, dy as u32);
            for (d, s) in d.0.iter_mut().zip(s) {
                let t = u32::from(*d) * (255 - m) + u32::from(s) * m + 128;
                *d = (((t >> 8) + t) >> 8) as u8;
            }
        }
    }
}

/// `images.split_grid`'s tile origins along one side of `len` pixels (A1111 clamps the last
/// tile, or a tile longer than the side, to end at the side: a negative origin then).
fn origins(len: u32, tile: u32, overlap: u32) -> Vec<i64> {
    let (len, tile, overlap) = (i64::from(len), i64::from(tile), i64::from(overlap));
    // math.ceil((w - overlap) / non_overlap_width); at least one (A1111 fails on a side
    // shorter than the overlap)
    let n = ((len - overlap) as f64 / (tile - overlap) as f64)
        .ceil()
        .max(1.0) as i64;
    let d = if n > 1 {
        (len - tile) as f64 / (n - 1) as f64
    } else {
        0.0
    };
    (0..n)
        .map(|i| {
            let o = (i as f64 * d) as i64;
            if o + tile >= len {
                len - tile
            } else {
                o
            }
        })
        .collect()
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
    let (tile, overlap) = (opts.tile, opts.overlap);
    let (w, h) = img.dimensions();
    let xs = origins(w, tile, overlap);
    let ys = origins(h, tile, overlap);
    let total = xs.len() * ys.len();
    let mut rows = Vec::with_capacity(ys.len());
    let mut scale = 1i64;
    for &y in &ys {
        let mut row = Vec::with_capacity(xs.len());
        for &x in &xs {
            notify(on_tile, rows.len() * xs.len() + row.len(), total)?;
            let out = upscale_patch(net, &crop(img, x, y, tile, tile))?;
            // scale_factor = output.width // tile.width
            scale = i64::from(out.width() / tile);
            row.push((x, out));
        }
        rows.push((y, row));
    }
    let s = scale as u32;
    let (tile_s, ov) = (tile * s, overlap * s);
    // make_mask_image: (arange(overlap, f32) * 255 / overlap).astype(uint8)
    let ramp: Vec<u8> = (0..ov)
        .map(|i| ((i as f32 * 255.0) / ov as f32) as u8)
        .collect();
    let mut combined = RgbImage::new(w * s, h * s);
    for (y, row) in rows {
        let mut combined_row = RgbImage::new(w * s, tile_s);
        for (x, t) in row {
            let x = x * scale;
            if x == 0 {
                paste(&mut combined_row, &t, 0, 0, |_, _| 255);
                continue;
            }
            paste(
                &mut combined_row,
                &crop(&t, 0, 0, ov, tile_s),
                x,
                0,
                |mx, _| ramp[mx as usize],
            );
            let rest = crop(&t, i64::from(ov), 0, tile_s - ov, tile_s);
            paste(&mut combined_row, &rest, x + i64::from(ov), 0, |_, _| 255);
        }
        let y = y * scale;
        if y == 0 {
            paste(&mut combined, &combined_row, 0, 0, |_, _| 255);
            continue;
        }
        let top = crop(&combined_row, 0, 0, w * s, ov);
        paste(&mut combined, &top, 0, y, |_, my| ramp[my as usize]);
        let rest = crop(&combined_row, 0, i64::from(ov), w * s, tile_s - ov);
        paste(&mut combined, &rest, 0, y + i64::from(ov), |_, _| 255);
    }
    Ok(combined)
}

fn notify(
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
