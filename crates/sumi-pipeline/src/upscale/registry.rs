//! The list of upscalers, as A1111's `modelloader.load_upscalers` builds `shared.sd_upscalers`:
//! `None`, `Lanczos`, `Nearest` first, then the model files sorted by lower-cased name. A
//! file is named by its stem (`modelloader.friendly_name`), except the Real-ESRGAN releases,
//! which A1111 lists under its own names (`realesrgan_model.get_realesrgan_models`).

use std::path::{Path, PathBuf};

use super::{UpscaleError, Upscaler, UpscalerKind};
use crate::error::Result;

/// The file extensions listed as upscaler models: A1111's (`.pt`, `.pth`) and `.safetensors`,
/// which spandrel reads and newer upscalers ship as.
pub const UPSCALER_EXTENSIONS: &[&str] = &["pth", "pt", "safetensors"];
/// Deepest sub-folder walked (A1111's `walk_files` has no bound).
pub const MAX_SCAN_DEPTH: usize = 8;
/// Most model files listed.
pub const MAX_SCAN_FILES: usize = 10_000;

/// One of A1111's Real-ESRGAN entries (`realesrgan_model.get_realesrgan_models`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealEsrganModel {
    /// The name A1111 lists it under.
    pub name: &'static str,
    /// The release's file stem, by which a local file is recognised.
    pub stem: &'static str,
    /// Where A1111 downloads it from (its `data_path`, which its API lists as the path).
    pub url: &'static str,
    /// The scale A1111 lists.
    pub scale: u32,
}

const fn real_esrgan(
    name: &'static str,
    stem: &'static str,
    url: &'static str,
    scale: u32,
) -> RealEsrganModel {
    RealEsrganModel {
        name,
        stem,
        url,
        scale,
    }
}

/// A1111 v1.10.1's Real-ESRGAN entries, in its order.
pub static REAL_ESRGAN_MODELS: [RealEsrganModel; 6] = [
    real_esrgan("R-ESRGAN General 4xV3", "realesr-general-x4v3",
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-general-x4v3.pth", 4),
    real_esrgan("R-ESRGAN General WDN 4xV3", "realesr-general-wdn-x4v3",
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-general-wdn-x4v3.pth", 4),
    real_esrgan("R-ESRGAN AnimeVideo", "realesr-animevideov3",
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-animevideov3.pth", 4),
    real_esrgan("R-ESRGAN 4x+", "RealESRGAN_x4plus",
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth", 4),
    real_esrgan("R-ESRGAN 4x+ Anime6B", "RealESRGAN_x4plus_anime_6B",
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth", 4),
    real_esrgan("R-ESRGAN 2x+", "RealESRGAN_x2plus",
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth", 2),
];

/// The Real-ESRGAN entry listed under `name`.
pub fn real_esrgan_model(name: &str) -> Option<&'static RealEsrganModel> {
    REAL_ESRGAN_MODELS.iter().find(|m| m.name == name)
}

/// The upscalers a request may name.
#[derive(Debug)]
pub struct UpscalerRegistry {
    entries: Vec<Upscaler>,
}

impl Default for UpscalerRegistry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl UpscalerRegistry {
    /// `None`, `Lanczos` and `Nearest` only.
    pub fn builtin() -> Self {
        Self {
            entries: vec![
                Upscaler::new("None", UpscalerKind::None, 4),
                Upscaler::new("Lanczos", UpscalerKind::Lanczos, 4),
                Upscaler::new("Nearest", UpscalerKind::Nearest, 4),
            ],
        }
    }

    /// The built-ins plus every model file under `dirs` (sub-folders included, down to
    /// [`MAX_SCAN_DEPTH`]). Files are listed, not read: a bad file fails when it is used.
    pub fn scan(dirs: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        for d in dirs {
            walk(d, 0, &mut files)?;
        }
        let mut models: Vec<Upscaler> = files.iter().map(|p| model_entry(p)).collect();
        models.sort_by_key(|u| u.name().to_lowercase());
        let mut r = Self::builtin();
        r.entries.extend(models);
        Ok(r)
    }

    /// Every upscaler, in A1111's order.
    pub fn entries(&self) -> &[Upscaler] {
        &self.entries
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|u| u.name().to_string()).collect()
    }

    /// The first upscaler named `name` (A1111 compares names exactly); an unknown name is an
    /// error that lists the known ones.
    pub fn get(&self, name: &str) -> Result<&Upscaler> {
        self.entries
            .iter()
            .find(|u| u.name() == name)
            .ok_or_else(|| {
                UpscaleError::UnknownUpscaler {
                    name: name.to_string(),
                    known: self.names(),
                }
                .into()
            })
    }
}

fn model_entry(path: &Path) -> Upscaler {
    let u = Upscaler::from_file(path);
    match REAL_ESRGAN_MODELS.iter().find(|m| m.stem == u.name()) {
        Some(m) => Upscaler::new(m.name, u.kind().clone(), m.scale),
        None => u,
    }
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    let io = |source| UpscaleError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut items: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(io)?;
    items.sort();
    for p in items {
        if p.is_dir() {
            if depth < MAX_SCAN_DEPTH {
                walk(&p, depth + 1, out)?;
            }
            continue;
        }
        let is_model = p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            UPSCALER_EXTENSIONS
                .iter()
                .any(|x| x.eq_ignore_ascii_case(e))
        });
        if is_model && p.is_file() {
            if out.len() >= MAX_SCAN_FILES {
                return Err(UpscaleError::BadFile {
                    path: dir.to_path_buf(),
                    detail: format!("more than {MAX_SCAN_FILES} upscaler files"),
                }
                .into());
            }
            out.push(p);
        }
    }
    Ok(())
}
