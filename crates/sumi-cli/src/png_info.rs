//! `sumi png-info`: the A1111 parameters a PNG, JPEG or WebP carries.

use std::path::PathBuf;

use anyhow::{Context, Result};
use sumi_pipeline::infotext::parse_generation_parameters;

/// Arguments of `sumi png-info`.
#[derive(clap::Args)]
pub struct Args {
    /// A PNG, JPEG or WebP written by Sumi, A1111 or another tool that stores A1111 infotext
    /// (PNG `parameters` text, EXIF UserComment).
    path: PathBuf,
    /// Print the parsed key/value object instead of the text.
    #[arg(long)]
    json: bool,
}

/// Runs the command: a regular file of at most [`crate::inputs::MAX_PNG_BYTES`] is read,
/// and its text printed with control characters escaped.
pub fn run(a: Args) -> Result<()> {
    crate::inputs::bounded_file(&a.path, "png-info", crate::inputs::MAX_PNG_BYTES)?;
    let text = sumi_pipeline::image_file::read_parameters(&a.path)
        .with_context(|| format!("cannot read {}", a.path.display()))?
        .with_context(|| format!("{} carries no A1111 parameters", a.path.display()))?;
    if a.json {
        crate::terminal::println(&parse_generation_parameters(&text).to_json().to_string())?;
    } else {
        crate::terminal::println(&text)?;
    }
    Ok(())
}
