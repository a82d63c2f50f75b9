//! A1111 v1.10.1's `images.split_grid` and `images.combine_grid`: a picture cut into
//! overlapping `tile_w × tile_h` tiles, and the tiles put back with the overlaps blended by
//! linear ramps — the model upscalers' tiling ([`crate::upscale::upscale_with_model`]) and the
//! SD upscale script share them, as in A1111. Pillow's `crop` (zero outside the image) and
//! `paste` with an `L` mask (`out = (dst·(255 − m) + src·m + 128) · 257 >> 16`, Pillow's
//! `BLEND`), integer-exact.

use image::RgbImage;

/// One tile of a [`Grid`] row.
#[derive(Debug, Clone)]
pub struct GridTile {
    /// Its left edge in the picture (negative where a tile is wider than the picture: A1111
    /// clamps the last tile to end at the edge).
    pub x: i64,
    /// Its pixels (`tile_w × tile_h`; black outside the picture).
    pub image: RgbImage,
}

/// One row of tiles.
#[derive(Debug, Clone)]
pub struct GridRow {
    /// Its top edge in the picture (negative as [`GridTile::x`]).
    pub y: i64,
    /// Its tiles, left to right.
    pub tiles: Vec<GridTile>,
}

/// A picture cut into tiles (A1111's `Grid`).
#[derive(Debug, Clone)]
pub struct Grid {
    /// The rows, top to bottom.
    pub rows: Vec<GridRow>,
    /// Tile width.
    pub tile_w: u32,
    /// Tile height.
    pub tile_h: u32,
    /// The picture's width.
    pub image_w: u32,
    /// The picture's height.
    pub image_h: u32,
    /// The overlap, in pixels, blended between neighbours (less than a tile side).
    pub overlap: u32,
}

impl Grid {
    /// How many tiles.
    pub fn tile_count(&self) -> usize {
        self.rows.iter().map(|r| r.tiles.len()).sum()
    }

    /// The tiles, row by row.
    pub fn tiles_mut(&mut self) -> impl Iterator<Item = &mut GridTile> {
        self.rows.iter_mut().flat_map(|r| r.tiles.iter_mut())
    }
}

/// `split_grid`'s tile origins along one side of `len` pixels: `n = ceil((len − overlap) /
/// (tile − overlap))` (at least one; A1111 fails on a side shorter than the overlap), spread
/// as `int(i · (len − tile) / (n − 1))`, one ending past the side moved to end at it.
/// `overlap < tile`.
pub fn origins(len: u32, tile: u32, overlap: u32) -> Vec<i64> {
    debug_assert!(overlap < tile);
    let (len, tile, overlap) = (i64::from(len), i64::from(tile), i64::from(overlap));
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

/// `split_grid(image, tile_w, tile_h, overlap)`; `overlap` below both tile sides.
pub fn split_grid(image: &RgbImage, tile_w: u32, tile_h: u32, overlap: u32) -> Grid {
    let (w, h) = image.dimensions();
    let xs = origins(w, tile_w, overlap);
    let rows = origins(h, tile_h, overlap)
        .into_iter()
        .map(|y| GridRow {
            y,
            tiles: xs
                .iter()
                .map(|&x| GridTile {
                    x,
                    image: crop(image, x, y, tile_w, tile_h),
                })
                .collect(),
        })
        .collect();
    Grid {
        rows,
        tile_w,
        tile_h,
        image_w: w,
        image_h: h,
        overlap,
    }
}

/// Pillow's `crop((x, y, x + w, y + h))`: pixels outside the image are black.
pub(crate) fn crop(img: &RgbImage, x: i64, y: i64, w: u32, h: u32) -> RgbImage {
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

/// `make_mask_image`'s ramp: `(arange(overlap, float32) · 255 / overlap).astype(uint8)`.
fn ramp(overlap: u32) -> Vec<u8> {
    (0..overlap)
        .map(|i| ((i as f32 * 255.0) / overlap as f32) as u8)
        .collect()
}

/// `combine_grid(grid)`: each row built left to right (a tile's first `overlap` columns
/// blended over its left neighbour by the column ramp, the rest pasted), then the rows top to
/// bottom (a row's first `overlap` lines blended over the row above by the line ramp).
pub fn combine_grid(grid: &Grid) -> RgbImage {
    let ramp = ramp(grid.overlap);
    let (w, tile_w, tile_h) = (grid.image_w, grid.tile_w, grid.tile_h);
    let ov = grid.overlap;
    let mut combined = RgbImage::new(w, grid.image_h);
    for row in &grid.rows {
        let mut combined_row = RgbImage::new(w, tile_h);
        for t in &row.tiles {
            if t.x == 0 {
                paste(&mut combined_row, &t.image, 0, 0, |_, _| 255);
                continue;
            }
            let left = crop(&t.image, 0, 0, ov, tile_h);
            paste(&mut combined_row, &left, t.x, 0, |mx, _| ramp[mx as usize]);
            let rest = crop(&t.image, i64::from(ov), 0, tile_w - ov, tile_h);
            paste(&mut combined_row, &rest, t.x + i64::from(ov), 0, |_, _| 255);
        }
        if row.y == 0 {
            paste(&mut combined, &combined_row, 0, 0, |_, _| 255);
            continue;
        }
        let top = crop(&combined_row, 0, 0, w, ov);
        paste(&mut combined, &top, 0, row.y, |_, my| ramp[my as usize]);
        let rest = crop(&combined_row, 0, i64::from(ov), w, tile_h - ov);
        paste(&mut combined, &rest, 0, row.y + i64::from(ov), |_, _| 255);
    }
    combined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111s_tile_origins() {
        // 1024 by 512 tiles with overlap 8: ceil(1016 / 504) = 3, dx = 256
        assert_eq!(origins(1024, 512, 8), [0, 256, 512]);
        // cols = ceil(960 / 448) = 3, dx = 256; rows = ceil(936 / 448) = 3, dy = 244
        let g = split_grid(&RgbImage::new(1024, 1000), 512, 512, 64);
        let xs: Vec<i64> = g.rows[0].tiles.iter().map(|t| t.x).collect();
        let ys: Vec<i64> = g.rows.iter().map(|r| r.y).collect();
        assert_eq!(
            (xs.as_slice(), ys.as_slice()),
            (&[0, 256, 512][..], &[0, 244, 488][..])
        );
        assert_eq!(g.tile_count(), 9);
        // one tile exactly; a tile wider than the side starts before it
        assert_eq!(origins(64, 64, 8), [0]);
        assert_eq!(origins(100, 192, 8), [-92]);
    }

    #[test]
    fn pillows_ramp() {
        assert_eq!(ramp(8), [0, 31, 63, 95, 127, 159, 191, 223]);
        assert_eq!(ramp(48)[47], 249);
    }

    #[test]
    fn an_unchanged_grid_gives_the_picture_back() {
        let img = RgbImage::from_fn(150, 90, |x, y| {
            image::Rgb([x as u8, y as u8, (x ^ y) as u8])
        });
        assert_eq!(combine_grid(&split_grid(&img, 64, 64, 16)), img);
    }
}
