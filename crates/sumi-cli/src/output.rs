//! Writing result images: a new file only (never an overwrite), written to a temporary file
//! beside it and renamed into place, with A1111's `parameters` text chunk.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Writes `img` as a PNG at `path`, which must not exist yet; `parameters` becomes the PNG's
/// `parameters` text chunk.
pub fn write_new_png(path: &Path, img: &image::RgbImage, parameters: Option<&str>) -> Result<()> {
    if path.exists() {
        bail!("{} already exists", path.display());
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    {
        let mut enc = png::Encoder::new(
            std::io::BufWriter::new(tmp.as_file_mut()),
            img.width(),
            img.height(),
        );
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        if let Some(p) = parameters {
            enc.add_itxt_chunk("parameters".into(), p.into())?;
        }
        let mut w = enc.write_header()?;
        w.write_image_data(img.as_raw())?;
        w.finish()?;
    }
    tmp.as_file_mut().flush()?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
