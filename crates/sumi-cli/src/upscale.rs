//! `sumi upscale`: A1111's Extras upscale of one picture ([`sumi_pipeline::extras`]): by a
//! factor or to a size (optionally cropped), a second upscaler blended in, written as a PNG
//! with A1111's `postprocessing` text chunk (and the input's `parameters`, kept as A1111 keeps
//! them). An unknown upscaler name fails (exit 2) with the list of known ones.

use std::path::PathBuf;

use anyhow::{Context, Result};
use sumi_pipeline::extras::{
    encode_png_with_texts, output_texts, upscale_extras, ExtrasRequest, ExtrasResize,
};
use sumi_pipeline::image::load_init_image;
use sumi_pipeline::upscale::{
    keep_going, TileOptions, UpscalerRegistry, DEFAULT_TILE, DEFAULT_TILE_OVERLAP, MAX_TILE,
};

/// Largest input picture, in pixels (as img2img's init image).
const MAX_INPUT_PIXELS: u64 = 64 * 1024 * 1024;

/// Arguments of `sumi upscale`.
#[derive(clap::Args)]
pub struct Args {
    /// The picture (PNG, JPEG or WebP).
    image: PathBuf,
    /// The upscaler: None, Lanczos, Nearest or a model file's name (see --upscaler-dir).
    #[arg(long, value_name = "NAME")]
    upscaler: String,
    /// Upscale by this factor (A1111's `upscaling_resize`; 4 when no size is given).
    #[arg(long, value_name = "F", conflicts_with_all = ["width", "height"])]
    scale: Option<f64>,
    /// With --scale: shrink the target so that no side is longer (A1111's "Max side length";
    /// 0 = no limit).
    #[arg(long, value_name = "PX", default_value_t = 0, conflicts_with = "width")]
    max_side_length: u32,
    /// Upscale to this width (A1111's "Scale to"; with --height).
    #[arg(long, value_name = "W", requires = "height")]
    width: Option<u32>,
    /// Upscale to this height (with --width).
    #[arg(long, value_name = "H", requires = "width")]
    height: Option<u32>,
    /// With --width/--height: centre the result on a canvas of exactly that size (A1111's
    /// "Crop to fit"); without it the size is the upscaler's, as in A1111.
    #[arg(long, requires = "width")]
    crop: bool,
    /// A second upscaler, blended in (with --upscaler-2-visibility).
    #[arg(
        long = "upscaler-2",
        value_name = "NAME",
        requires = "upscaler_2_visibility"
    )]
    upscaler_2: Option<String>,
    /// The second upscaler's weight in the blend, 0 to 1.
    #[arg(
        long = "upscaler-2-visibility",
        value_name = "F",
        requires = "upscaler_2"
    )]
    upscaler_2_visibility: Option<f64>,
    /// A folder of upscaler model files (ESRGAN/Real-ESRGAN .pth or .safetensors), searched
    /// recursively; repeatable.
    #[arg(long = "upscaler-dir", value_name = "DIR")]
    upscaler_dirs: Vec<PathBuf>,
    /// Model tile size in pixels, 0 to 4096 (0 = the whole picture at once): A1111's
    /// ESRGAN_tile for RRDBNet/SRVGGNetCompact files, SWIN_tile for SwinIR, DAT_tile for DAT.
    #[arg(long, value_name = "PX", default_value_t = i64::from(DEFAULT_TILE),
          allow_negative_numbers = true, value_parser = tile_px)]
    tile: i64,
    /// Overlap between model tiles in pixels, under --tile (A1111's ESRGAN_tile_overlap,
    /// SWIN_tile_overlap, DAT_tile_overlap).
    #[arg(long, value_name = "PX", default_value_t = i64::from(DEFAULT_TILE_OVERLAP),
          allow_negative_numbers = true, value_parser = tile_px)]
    tile_overlap: i64,
    /// The PNG to write (default: the next number in ./outputs/).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Create --output's folder when it does not exist (else that is an error).
    #[arg(long)]
    mkdir: bool,
}

/// A tile setting: 0 to [`MAX_TILE`] pixels.
fn tile_px(s: &str) -> std::result::Result<i64, String> {
    let v: i64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if !(0..=i64::from(MAX_TILE)).contains(&v) {
        return Err(format!("{v} pixels: a tile is 0 to {MAX_TILE} pixels"));
    }
    Ok(v)
}

impl Args {
    fn request(&self) -> ExtrasRequest {
        let resize = match (self.width, self.height) {
            (Some(width), Some(height)) => ExtrasResize::To {
                width,
                height,
                crop: self.crop,
            },
            _ => ExtrasResize::By {
                scale: self.scale.unwrap_or(4.0),
                max_side_length: self.max_side_length,
            },
        };
        ExtrasRequest {
            resize,
            upscaler_1: self.upscaler.clone(),
            upscaler_2: self.upscaler_2.clone().unwrap_or_else(|| "None".into()),
            upscaler_2_visibility: self.upscaler_2_visibility.unwrap_or(0.0),
            // checked by `tile_px`: 0 ..= MAX_TILE
            tile: TileOptions {
                tile: self.tile as u32,
                overlap: self.tile_overlap as u32,
            }
            .into(),
        }
    }
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    for d in &a.upscaler_dirs {
        crate::inputs::folder(d, "--upscaler-dir")?;
    }
    crate::inputs::bounded_file(&a.image, "upscale", crate::inputs::MAX_PNG_BYTES)?;
    let registry = UpscalerRegistry::scan(&a.upscaler_dirs).context("--upscaler-dir")?;
    let req = a.request();
    // names first: a typo fails before the picture is read
    registry.get(&req.upscaler_1).context("--upscaler")?;
    if req.upscaler_2 != "None" {
        registry.get(&req.upscaler_2).context("--upscaler-2")?;
    }
    let mut outputs = crate::output::Outputs::plan(a.output.as_deref(), 1, a.mkdir)?;
    if outputs.format() != sumi_pipeline::image_file::OutputFormat::Png {
        anyhow::bail!("--output: upscale writes PNG files only (its texts are PNG chunks)");
    }
    let img = load_init_image(&a.image, MAX_INPUT_PIXELS)
        .with_context(|| format!("cannot read {}", a.image.display()))?;
    let texts = std::fs::read(&a.image)
        .ok()
        .and_then(|b| sumi_pipeline::png::text_chunks(&b).ok())
        .unwrap_or_default();
    let out = upscale_extras(&img, &req, &registry, &mut keep_going)?;
    let infotext = out.infotext();
    let png = encode_png_with_texts(&out.image, &output_texts(&texts, &infotext))
        .map_err(|e| anyhow::anyhow!("cannot encode the PNG: {e}"))?;
    let path = outputs.write(&png)?;
    crate::terminal::println(&format!(
        "{} ({}x{}){}",
        path.display(),
        out.image.width(),
        out.image.height(),
        if infotext.is_empty() {
            String::new()
        } else {
            format!(": {infotext}")
        }
    ))?;
    Ok(())
}
