//! A1111 v1.10.1's tiling settings, one pair per family of model upscaler, as its upscaler
//! classes read them: `ESRGAN_tile` / `ESRGAN_tile_overlap` for RRDBNet and SRVGGNetCompact
//! (`modules/esrgan_model.py` and `modules/realesrgan_model.py` both pass them to
//! `upscale_with_model`), `SWIN_tile` / `SWIN_tile_overlap` for SwinIR (the SwinIR extension,
//! through `upscale_2`'s averaged tiles) and `DAT_tile` / `DAT_tile_overlap` for DAT
//! (`modules/dat_model.py`, `upscale_with_model`). All default to 192 / 8; a tile of 0 runs the
//! whole picture at once (`tile_size <= 0` in both tilings).
//!
//! A1111 checks none of them (its sliders stop at 512 and 48, its API takes any number); Sumi
//! refuses a negative value, a tile over [`MAX_TILE`] and an overlap not under its tile, naming
//! the setting.

use super::{TileOptions, UpscaleError, MAX_TILE};
use crate::error::Result;

/// A1111's tiling settings, in the order its settings page lists them.
pub const TILE_SETTINGS: [&str; 6] = [
    "ESRGAN_tile",
    "ESRGAN_tile_overlap",
    "SWIN_tile",
    "SWIN_tile_overlap",
    "DAT_tile",
    "DAT_tile_overlap",
];

/// The tiles of each model family (A1111's three pairs of settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpscalerTiles {
    /// `ESRGAN_tile`, `ESRGAN_tile_overlap`: RRDBNet (ESRGAN, Real-ESRGAN 4x+, 4x-UltraSharp…)
    /// and SRVGGNetCompact (realesr-general, realesr-animevideo).
    pub esrgan: TileOptions,
    /// `SWIN_tile`, `SWIN_tile_overlap`: SwinIR, in `upscale_2`'s averaged tiles.
    pub swin: TileOptions,
    /// `DAT_tile`, `DAT_tile_overlap`: DAT.
    pub dat: TileOptions,
}

impl Default for UpscalerTiles {
    /// A1111's defaults: 192 / 8 for each family.
    fn default() -> Self {
        Self::from(TileOptions::default())
    }
}

impl From<TileOptions> for UpscalerTiles {
    /// The same tiles for every family (the CLI's `--tile` / `--tile-overlap`).
    fn from(t: TileOptions) -> Self {
        Self {
            esrgan: t,
            swin: t,
            dat: t,
        }
    }
}

impl UpscalerTiles {
    /// Checks each family's pair ([`TileOptions::check`]).
    pub fn check(self) -> Result<()> {
        self.esrgan.check()?;
        self.swin.check()?;
        self.dat.check()
    }

    /// The value of one of [`TILE_SETTINGS`] (`None` for another key).
    pub fn get(&self, key: &str) -> Option<u32> {
        Some(match key {
            "ESRGAN_tile" => self.esrgan.tile,
            "ESRGAN_tile_overlap" => self.esrgan.overlap,
            "SWIN_tile" => self.swin.tile,
            "SWIN_tile_overlap" => self.swin.overlap,
            "DAT_tile" => self.dat.tile,
            "DAT_tile_overlap" => self.dat.overlap,
            _ => return None,
        })
    }

    /// Sets one of [`TILE_SETTINGS`] to `value`: [`UpscaleError::Setting`] for a negative
    /// value, one over [`MAX_TILE`] or a key that is none of them. Whether the overlap is under
    /// its tile is [`Self::check`]'s, once both are set.
    pub fn set(&mut self, key: &str, value: i64) -> Result<()> {
        let bad = |detail: String| UpscaleError::Setting {
            key: key.chars().take(80).collect(),
            value: value.to_string(),
            detail,
        };
        let v = u32::try_from(value)
            .ok()
            .filter(|v| *v <= MAX_TILE)
            .ok_or_else(|| bad(format!("a tile setting is 0 to {MAX_TILE} pixels")))?;
        let slot = match key {
            "ESRGAN_tile" => &mut self.esrgan.tile,
            "ESRGAN_tile_overlap" => &mut self.esrgan.overlap,
            "SWIN_tile" => &mut self.swin.tile,
            "SWIN_tile_overlap" => &mut self.swin.overlap,
            "DAT_tile" => &mut self.dat.tile,
            "DAT_tile_overlap" => &mut self.dat.overlap,
            _ => {
                return Err(
                    bad(format!("not a tile setting ({})", TILE_SETTINGS.join(", "))).into(),
                )
            }
        };
        *slot = v;
        Ok(())
    }

    /// Whether every setting has A1111's default.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// A1111's default of each of [`TILE_SETTINGS`].
pub fn tile_setting_default(key: &str) -> Option<u32> {
    UpscalerTiles::default().get(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_set_their_family_only() {
        let mut t = UpscalerTiles::default();
        assert!(t.is_default());
        for k in TILE_SETTINGS {
            assert_eq!(t.get(k), tile_setting_default(k), "{k}");
        }
        t.set("SWIN_tile", 64).unwrap();
        t.set("DAT_tile_overlap", 0).unwrap();
        assert_eq!(
            t.swin,
            TileOptions {
                tile: 64,
                overlap: 8
            }
        );
        assert_eq!(
            t.dat,
            TileOptions {
                tile: 192,
                overlap: 0
            }
        );
        assert_eq!(t.esrgan, TileOptions::default());
        t.set("ESRGAN_tile", 0).unwrap();
        t.check().unwrap();
        for (k, v) in [
            ("ESRGAN_tile", -1),
            ("SWIN_tile", 4097),
            ("DAT_tile", 1 << 40),
        ] {
            let e = t.set(k, v).unwrap_err().to_string();
            assert!(e.starts_with(&format!("setting {k}: {v}")), "{e}");
        }
        assert!(t.set("SCUNET_tile", 8).is_err());
        t.set("SWIN_tile_overlap", 64).unwrap();
        let e = t.check().unwrap_err().to_string();
        assert!(e.contains("smaller than the tile"), "{e}");
        assert_eq!(tile_setting_default("ldsr_steps"), None);
    }
}
