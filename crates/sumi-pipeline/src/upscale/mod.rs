//! Upscalers as A1111 v1.10.1 runs them (`modules/upscaler.py`, `modules/images.py`
//! `resize_image`, `modules/upscaler_utils.py`): the built-ins `None`, `Lanczos` and `Nearest`
//! (Pillow-exact) and model files (RRDBNet/ESRGAN, SRVGGNetCompact, SwinIR, DAT, see
//! [`sumi_models::upscalers`]) found in upscaler folders, listed by an [`UpscalerRegistry`].
//!
//! [`resize_with_upscaler`] is `resize_image`'s `resize(im, w, h)` for the hires fix, extras
//! and img2img: when the target is larger, [`Upscaler::upscale`] runs up to three passes of
//! the upscaler until the size is reached, then a Lanczos resize to the exact size. Models run
//! in A1111's overlapping tiles ([`TileOptions`], [`upscale_with_model`]), each family with the
//! tiles of its own A1111 settings ([`UpscalerTiles`]): RRDBNet and SRVGGNetCompact with
//! `ESRGAN_tile`/`ESRGAN_tile_overlap`, SwinIR in `upscale_2`'s averaged tiles
//! ([`upscale_weighted`]) with `SWIN_tile`/`SWIN_tile_overlap`, DAT with
//! `DAT_tile`/`DAT_tile_overlap` (all 192/8 by default).

mod load;
mod picture;
mod registry;
mod tile;
mod tile_weighted;
mod tiles;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use candle_core::Device;
use image::RgbImage;
use sumi_models::upscalers::{UpscalerConfig, UpscalerError, UpscalerNet};
use sumi_models::Precision;

pub use load::{read_state_dict, MAX_UPSCALER_FILE_BYTES};
pub use picture::Picture;
pub use registry::{
    real_esrgan_model, RealEsrganModel, UpscalerRegistry, MAX_SCAN_DEPTH, MAX_SCAN_FILES,
    REAL_ESRGAN_MODELS, UPSCALER_EXTENSIONS,
};
pub use tile::{resize_nearest, upscale_with_model};
pub use tile_weighted::{upscale_weighted, SWIN_TILE, SWIN_TILE_OVERLAP};
pub use tiles::{tile_setting_default, UpscalerTiles, TILE_SETTINGS};

use crate::error::Result;
use crate::image::resize_lanczos;
use crate::request::MAX_SIDE;

/// A1111's `ESRGAN_tile` default.
pub const DEFAULT_TILE: u32 = 192;
/// A1111's `ESRGAN_tile_overlap` default.
pub const DEFAULT_TILE_OVERLAP: u32 = 8;
/// A1111's `DAT_tile` default (`modules/dat_model.py` tiles with it, not `ESRGAN_tile`; see
/// [`UpscalerTiles`]).
pub const DAT_TILE: u32 = 192;
/// A1111's `DAT_tile_overlap` default.
pub const DAT_TILE_OVERLAP: u32 = 8;
/// Largest tile accepted (A1111's slider: 512).
pub const MAX_TILE: u32 = 4096;
/// Most pixels an intermediate pass may produce (a 4× model on a 2896² image).
pub const MAX_INTERMEDIATE_PIXELS: u64 = 1 << 27;

/// Why an upscale cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum UpscaleError {
    /// No upscaler has that name.
    #[error("unknown upscaler `{name}`; the upscalers are: {}", known.join(", "))]
    UnknownUpscaler {
        /// The name asked for.
        name: String,
        /// The names there are, in A1111's order.
        known: Vec<String>,
    },
    /// An upscaler file that cannot be read.
    #[error("{path}: cannot read the upscaler file: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An upscaler file larger than [`MAX_UPSCALER_FILE_BYTES`].
    #[error("{path}: the upscaler file has {size} bytes, more than the limit of {max}")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A file whose content is not an upscaler state dict.
    #[error("{path}: {detail}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The weights are of no architecture Sumi builds, or do not fit theirs.
    #[error("{path}: {source}")]
    Architecture {
        /// The file.
        path: PathBuf,
        /// The detection or build error.
        #[source]
        source: UpscalerError,
    },
    /// The network failed on an image.
    #[error("upscaler network: {0}")]
    Network(#[source] UpscalerError),
    /// A model whose output is not an RGB image.
    #[error("the upscaler's output has {found} channels, not 3")]
    Channels {
        /// The channel count.
        found: usize,
    },
    /// Tile options that cannot be used.
    #[error("tile size {tile} with overlap {overlap}: {detail}")]
    Tile {
        /// The tile size.
        tile: u32,
        /// The overlap.
        overlap: u32,
        /// What is allowed.
        detail: String,
    },
    /// A target size outside the limits.
    #[error("cannot upscale to {width}x{height}: {detail}")]
    Size {
        /// The width.
        width: u64,
        /// The height.
        height: u64,
        /// The limit it breaks.
        detail: String,
    },
    /// A tiling setting (`ESRGAN_tile`, …) with a value Sumi cannot use.
    #[error("setting {key}: {value}: {detail}")]
    Setting {
        /// The setting.
        key: String,
        /// The value given.
        value: String,
        /// What is allowed.
        detail: String,
    },
    /// The caller's `on_tile` callback asked to stop.
    #[error("the upscale was interrupted")]
    Interrupted,
    /// A scale that is not a positive finite number.
    #[error("upscale factor {0} is not a positive number")]
    Scale(f64),
}

impl From<UpscaleError> for crate::error::PipelineError {
    fn from(e: UpscaleError) -> Self {
        Self::Upscale(Box::new(e))
    }
}

/// Where a model upscale is, for progress reports and interruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileProgress {
    /// The upscaler pass (0 to 2) of [`Upscaler::upscale`].
    pub pass: usize,
    /// Tiles of this pass finished.
    pub done: usize,
    /// Tiles of this pass.
    pub total: usize,
}

/// An `on_tile` callback that never stops the upscale.
pub fn keep_going(_: TileProgress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

/// One pair of A1111's tiling options (`ESRGAN_tile`, `ESRGAN_tile_overlap`, or SwinIR's or
/// DAT's: [`UpscalerTiles`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileOptions {
    /// Tile size in input pixels; 0 runs the whole image at once.
    pub tile: u32,
    /// Overlap between tiles in input pixels (less than `tile`).
    pub overlap: u32,
}

impl Default for TileOptions {
    fn default() -> Self {
        Self {
            tile: DEFAULT_TILE,
            overlap: DEFAULT_TILE_OVERLAP,
        }
    }
}

impl TileOptions {
    /// Checks `overlap < tile ≤ MAX_TILE` (any overlap with tile 0).
    pub fn check(self) -> Result<()> {
        let detail = if self.tile > MAX_TILE {
            format!("the tile size is at most {MAX_TILE}")
        } else if self.tile > 0 && self.overlap >= self.tile {
            "the overlap must be smaller than the tile".to_string()
        } else {
            return Ok(());
        };
        Err(UpscaleError::Tile {
            tile: self.tile,
            overlap: self.overlap,
            detail,
        }
        .into())
    }
}

/// What an upscaler does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpscalerKind {
    /// `UpscalerNone`: the image unchanged (`resize_image` then resizes with Lanczos).
    None,
    /// `UpscalerLanczos`: Pillow LANCZOS to `int(w·scale) × int(h·scale)`.
    Lanczos,
    /// `UpscalerNearest`: Pillow NEAREST likewise.
    Nearest,
    /// A model file, loaded on first use.
    Model {
        /// The file.
        path: PathBuf,
    },
}

/// One upscaler as A1111's `UpscalerData` lists it.
#[derive(Debug)]
pub struct Upscaler {
    name: String,
    kind: UpscalerKind,
    scale: u32,
    precision: Precision,
    net: OnceLock<Arc<UpscalerNet>>,
}

impl Upscaler {
    /// A built-in or model upscaler named `name`; `scale` is the scale A1111 lists it with.
    pub fn new(name: impl Into<String>, kind: UpscalerKind, scale: u32) -> Self {
        Self {
            name: name.into(),
            kind,
            scale,
            precision: Precision::F32,
            net: OnceLock::new(),
        }
    }

    /// The same upscaler computing in `precision` (f32 by default, as A1111 on the CPU; bf16
    /// stays within 2e-2 of it). Set before the network is first used.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self.net = OnceLock::new();
        self
    }

    /// A model upscaler from a file, named by its stem as A1111 names ESRGAN-folder files.
    pub fn from_file(path: &Path) -> Self {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::new(
            name,
            UpscalerKind::Model {
                path: path.to_path_buf(),
            },
            4,
        )
    }

    /// The name (`None`, `Lanczos`, `R-ESRGAN 4x+`, `4x-UltraSharp`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it does.
    pub fn kind(&self) -> &UpscalerKind {
        &self.kind
    }

    /// The scale A1111 lists (`UpscalerData.scale`: 4 for model files, 2 for `R-ESRGAN 2x+`).
    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// The model file, for model upscalers.
    pub fn path(&self) -> Option<&Path> {
        match &self.kind {
            UpscalerKind::Model { path } => Some(path),
            _ => None,
        }
    }

    /// The network of a model upscaler, read and built on first use (then kept); `None` for
    /// the built-ins.
    pub fn network(&self) -> Result<Option<Arc<UpscalerNet>>> {
        let UpscalerKind::Model { path } = &self.kind else {
            return Ok(None);
        };
        if let Some(n) = self.net.get() {
            return Ok(Some(n.clone()));
        }
        let tensors = read_state_dict(path)?;
        let net = UpscalerNet::new(tensors, self.precision, &Device::Cpu).map_err(|source| {
            UpscaleError::Architecture {
                path: path.clone(),
                source,
            }
        })?;
        let (cin, cout) = net.config().channels();
        if (cin, cout) != (3, 3) {
            return Err(UpscaleError::BadFile {
                path: path.clone(),
                detail: format!(
                    "the network maps {cin} channels to {cout}; upscalers map RGB to RGB"
                ),
            }
            .into());
        }
        Ok(Some(self.net.get_or_init(|| Arc::new(net)).clone()))
    }

    /// `do_upscale`: one pass (a model's own scale, on the picture as RGB; `int(w·scale)` for
    /// Lanczos/Nearest, RGBA kept).
    fn do_upscale(
        &self,
        img: &Picture,
        scale: f64,
        tiles: UpscalerTiles,
        pass: usize,
        on_tile: &mut dyn FnMut(TileProgress) -> ControlFlow<()>,
    ) -> Result<Picture> {
        let (iw, ih) = img.dimensions();
        let scaled = |v: u32| (f64::from(v) * scale) as u64;
        let (w, h) = (scaled(iw), scaled(ih));
        match &self.kind {
            UpscalerKind::None => Ok(img.clone()),
            UpscalerKind::Lanczos => {
                let (w, h) = check_size(w, h, MAX_SIDE)?;
                img.lanczos(w, h)
            }
            UpscalerKind::Nearest => {
                let (w, h) = check_size(w, h, MAX_SIDE)?;
                Ok(img.nearest(w, h))
            }
            UpscalerKind::Model { .. } => {
                let net = self.network()?.expect("a model upscaler has a network");
                let s = net.scale() as u64;
                let (ow, oh) = (u64::from(iw) * s, u64::from(ih) * s);
                if ow * oh > MAX_INTERMEDIATE_PIXELS {
                    return Err(UpscaleError::Size {
                        width: ow,
                        height: oh,
                        detail: format!("a pass may make at most {MAX_INTERMEDIATE_PIXELS} pixels"),
                    }
                    .into());
                }
                let mut on_tile = |p| on_tile(TileProgress { pass, ..p });
                let out = match net.config() {
                    UpscalerConfig::SwinIr(_) => {
                        let t = tiles.swin;
                        t.check()?;
                        let pair = (t.tile as usize, t.overlap as usize);
                        upscale_weighted(&net, &img.to_rgb(), pair, &mut on_tile)?
                    }
                    UpscalerConfig::Dat(_) => {
                        upscale_with_model(&net, &img.to_rgb(), tiles.dat, &mut on_tile)?
                    }
                    UpscalerConfig::Esrgan(_) | UpscalerConfig::Compact(_) => {
                        upscale_with_model(&net, &img.to_rgb(), tiles.esrgan, &mut on_tile)?
                    }
                };
                Ok(Picture::Rgb(out))
            }
        }
    }

    /// `Upscaler.upscale(img, scale)`: passes of the upscaler (at most three, at least one, and
    /// none once a pass leaves the size unchanged) until the image is at least
    /// `(w·scale)//8·8 × (h·scale)//8·8`, then Pillow LANCZOS to exactly that size.
    /// `on_tile` hears of each model tile and may interrupt (see [`upscale_with_model`]): as
    /// A1111's, the interrupted pass hands back its input and the passes end there (the
    /// Lanczos resize to the size still follows). `tiles`: each model family's tiles
    /// ([`UpscalerTiles`]; a [`TileOptions`] sets all three).
    pub fn upscale(
        &self,
        img: &RgbImage,
        scale: f64,
        tiles: impl Into<UpscalerTiles>,
        on_tile: &mut dyn FnMut(TileProgress) -> ControlFlow<()>,
    ) -> Result<RgbImage> {
        let out = self.upscale_picture(&Picture::Rgb(img.clone()), scale, tiles, on_tile)?;
        Ok(out.into_rgb())
    }

    /// [`Self::upscale`] of an RGB or RGBA picture: RGBA stays RGBA through `None`, Lanczos and
    /// Nearest (and the final Lanczos), a model's pass gives RGB, as A1111 with Pillow.
    pub fn upscale_picture(
        &self,
        img: &Picture,
        scale: f64,
        tiles: impl Into<UpscalerTiles>,
        on_tile: &mut dyn FnMut(TileProgress) -> ControlFlow<()>,
    ) -> Result<Picture> {
        let tiles = tiles.into();
        if !(scale.is_finite() && scale > 0.0) {
            return Err(UpscaleError::Scale(scale).into());
        }
        let (w0, h0) = img.dimensions();
        let dest = |v: u32| ((f64::from(v) * scale) / 8.0).floor() as u64 * 8;
        let (dest_w, dest_h) = check_size(dest(w0), dest(h0), MAX_SIDE)?;
        let mut img = img.clone();
        for i in 0..3 {
            let (w, h) = img.dimensions();
            if w >= dest_w && h >= dest_h && (i > 0 || scale != 1.0) {
                break;
            }
            img = match self.do_upscale(&img, scale, tiles, i, on_tile) {
                Ok(next) => next,
                // A1111's `upscale_with_model` returns the pass's input once `state.interrupted`:
                // the size is unchanged, so the passes end and the Lanczos resize follows
                Err(crate::error::PipelineError::Upscale(e))
                    if matches!(*e, UpscaleError::Interrupted) =>
                {
                    break
                }
                Err(e) => return Err(e),
            };
            if (w, h) == img.dimensions() {
                break;
            }
        }
        if img.dimensions() != (dest_w, dest_h) {
            img = img.lanczos(dest_w, dest_h)?;
        }
        Ok(img)
    }
}

/// Refuses an empty source picture.
pub(crate) fn check_source((width, height): (u32, u32)) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(UpscaleError::Size {
            width: width.into(),
            height: height.into(),
            detail: "the source image is empty".into(),
        }
        .into());
    }
    Ok(())
}

/// Checks `1 ≤ width, height ≤ max_side`.
fn check_size(width: u64, height: u64, max_side: u32) -> Result<(u32, u32)> {
    let ok = |v: u64| (1..=u64::from(max_side)).contains(&v);
    if ok(width) && ok(height) {
        return Ok((width as u32, height as u32));
    }
    Err(UpscaleError::Size {
        width,
        height,
        detail: format!("each side must be 1 to {max_side} pixels"),
    }
    .into())
}

/// `images.resize_image`'s `resize(im, w, h)` with an upscaler: `None` resizes with Lanczos;
/// any other upscaler runs [`Upscaler::upscale`] by `max(w / im.w, h / im.h)` when that is
/// above 1, then Lanczos to exactly `w × h` if the size differs. The one door for the hires
/// fix, extras and img2img resizing; `on_tile` as for [`Upscaler::upscale`] (pass
/// `&mut keep_going` for none).
pub fn resize_with_upscaler(
    img: &RgbImage,
    width: u32,
    height: u32,
    upscaler: &Upscaler,
    tiles: impl Into<UpscalerTiles>,
    on_tile: &mut dyn FnMut(TileProgress) -> ControlFlow<()>,
) -> Result<RgbImage> {
    let (width, height) = check_size(width.into(), height.into(), MAX_SIDE)?;
    check_source(img.dimensions())?;
    if upscaler.kind == UpscalerKind::None {
        return resize_lanczos(img, width, height);
    }
    let scale = (f64::from(width) / f64::from(img.width()))
        .max(f64::from(height) / f64::from(img.height()));
    let mut im = if scale > 1.0 {
        upscaler.upscale(img, scale, tiles, on_tile)?
    } else {
        img.clone()
    };
    if im.dimensions() != (width, height) {
        im = resize_lanczos(&im, width, height)?;
    }
    Ok(im)
}
