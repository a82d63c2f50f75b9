//! `sumi img2img --sd-upscale SCALE`: A1111's "SD upscale" img2img script (the init image
//! upscaled, cut into --width × --height tiles overlapping by --sd-upscale-overlap, each tile
//! through img2img, recombined with A1111's blending).

use anyhow::{bail, Result};
use sumi_pipeline::sd_upscale::{SdUpscale, SdUpscaler};

/// The SD upscale script (on when --sd-upscale is given).
#[derive(clap::Args, Debug)]
pub struct SdUpscaleArgs {
    /// Run A1111's SD upscale script: upscale the init image by this factor, then img2img it
    /// tile by tile (tiles of --width × --height; A1111's slider: 1 to 4).
    #[arg(long, value_name = "SCALE")]
    sd_upscale: Option<f64>,
    /// SD upscale: tile overlap in pixels [64].
    #[arg(long, value_name = "PIXELS")]
    sd_upscale_overlap: Option<u32>,
    /// SD upscale: the upscaler, by name (any case; None, Lanczos, Nearest or a file of
    /// --upscaler-dir) [None].
    #[arg(long, value_name = "NAME")]
    sd_upscale_upscaler: Option<String>,
}

impl SdUpscaleArgs {
    /// The script's settings; a setting without --sd-upscale is refused naming it.
    pub fn to_sd_upscale(&self) -> Result<Option<SdUpscale>> {
        let Some(scale) = self.sd_upscale else {
            if self.sd_upscale_overlap.is_some() {
                bail!("--sd-upscale-overlap: SD upscale is off; turn it on with --sd-upscale");
            }
            if self.sd_upscale_upscaler.is_some() {
                bail!("--sd-upscale-upscaler: SD upscale is off; turn it on with --sd-upscale");
            }
            return Ok(None);
        };
        let d = SdUpscale::default();
        Ok(Some(SdUpscale {
            overlap: self.sd_upscale_overlap.unwrap_or(d.overlap),
            upscaler: match &self.sd_upscale_upscaler {
                Some(n) => SdUpscaler::Name(n.clone()),
                None => d.upscaler,
            },
            scale,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_their_defaults() {
        let a = SdUpscaleArgs {
            sd_upscale: Some(2.5),
            sd_upscale_overlap: None,
            sd_upscale_upscaler: Some("lanczos".into()),
        };
        let s = a.to_sd_upscale().unwrap().unwrap();
        assert_eq!(
            (s.overlap, s.upscaler, s.scale),
            (64, SdUpscaler::Name("lanczos".into()), 2.5)
        );
        let off = SdUpscaleArgs {
            sd_upscale: None,
            sd_upscale_overlap: Some(32),
            sd_upscale_upscaler: None,
        };
        let e = off.to_sd_upscale().unwrap_err().to_string();
        assert!(e.starts_with("--sd-upscale-overlap"), "{e}");
    }
}
