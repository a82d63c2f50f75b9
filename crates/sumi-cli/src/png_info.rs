//! `sumi png-info`: the A1111 parameters a PNG carries.

use std::path::PathBuf;

use anyhow::{Context, Result};
use sumi_pipeline::infotext::parse_generation_parameters;

/// Arguments of `sumi png-info`.
#[derive(clap::Args)]
pub struct Args {
    /// A PNG written by Sumi, A1111 or another tool that stores A1111 infotext.
    path: PathBuf,
    /// Print the parsed key/value object instead of the text.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    let text = sumi_pipeline::png::read_parameters(&a.path)
        .with_context(|| format!("cannot read {}", a.path.display()))?
        .with_context(|| format!("{} carries no A1111 parameters", a.path.display()))?;
    if a.json {
        println!("{}", parse_generation_parameters(&text).to_json());
    } else {
        println!("{text}");
    }
    Ok(())
}
