//! `--refiner MODEL --refiner-switch-at F`, `--hr-checkpoint MODEL` and `--hr-refiner-pass`:
//! other checkpoints for part of a job (A1111's refiner and hires checkpoint). A model is a
//! file, a diffusers folder or a Hub id, as `--model`; or a checkpoint's name (its file name or
//! stem, as A1111's infotext writes it, `name [hash]`) found beside `--model` (A1111's
//! `models/Stable-diffusion` folder, searched recursively). `Refiner`, `Refiner switch at`,
//! `Hires checkpoint`, `Hires refiner` and `Refiner switch by sampling steps` of an infotext
//! fill what the options leave unset; a checkpoint the infotext names that is not found is
//! named in a warning.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use sumi_pipeline::checkpoint_report::CheckpointInfo;
use sumi_pipeline::infotext::Parameters;
use sumi_pipeline::{HiresRefinerPass, Refiner, Request};

/// A1111's UI default for `refiner_switch_at`.
const DEFAULT_SWITCH_AT: f64 = 0.8;

/// Most files looked at beside the model.
const MAX_LISTED: usize = 10_000;

/// The options.
#[derive(clap::Args, Debug)]
pub struct StageArgs {
    /// A refiner checkpoint: sampling switches to it for the last part of every run (A1111's
    /// refiner; an SDXL refiner, or any checkpoint): a file, a diffusers folder, a Hub id, or
    /// the name of a checkpoint beside --model.
    #[arg(long, value_name = "MODEL")]
    refiner: Option<PathBuf>,
    /// The fraction of sampling after which the refiner takes over, in (0, 1] [0.8].
    #[arg(long, value_name = "F")]
    refiner_switch_at: Option<f64>,
    /// Hires fix: a checkpoint of its own for the second pass (as --refiner) [--model].
    #[arg(long, value_name = "MODEL")]
    hr_checkpoint: Option<PathBuf>,
    /// Hires fix: the passes the refiner runs in: first, second or both [second].
    #[arg(long, value_name = "PASS")]
    hr_refiner_pass: Option<String>,
}

/// Fills `req.stages` from the options, else the infotext `info`; `model` is the job's
/// checkpoint (names are looked up beside it).
pub fn apply(
    a: &StageArgs,
    info: Option<&Parameters>,
    model: &Path,
    req: &mut Request,
    quiet: bool,
) -> Result<()> {
    let key = |k: &str| info.and_then(|p| p.get(k)).map(str::trim);
    let refiner = match (&a.refiner, key("Refiner")) {
        (Some(r), _) => Some(find(r, "--refiner", model, quiet)?),
        (None, Some(name)) => found_or_warn(name, "Refiner", model, quiet)?,
        (None, None) => None,
    };
    let switch_at = match (a.refiner_switch_at, key("Refiner switch at")) {
        (Some(v), _) => v,
        (None, Some(v)) => v
            .parse()
            .map_err(|e| anyhow::anyhow!("infotext `Refiner switch at: {v}`: {e}"))?,
        (None, None) => DEFAULT_SWITCH_AT,
    };
    if refiner.is_none() && a.refiner_switch_at.is_some() {
        bail!("--refiner-switch-at: no --refiner given");
    }
    req.stages.refiner = refiner.map(|checkpoint| Refiner {
        checkpoint,
        switch_at: Some(switch_at),
    });
    let hires = req.hires.is_some();
    req.stages.hires_checkpoint = match (&a.hr_checkpoint, key("Hires checkpoint")) {
        (Some(c), _) => Some(find(c, "--hr-checkpoint", model, quiet)?),
        (None, Some(name)) if hires && name != "Use same checkpoint" => {
            found_or_warn(name, "Hires checkpoint", model, quiet)?
        }
        _ => None,
    };
    let pass = a.hr_refiner_pass.as_deref().or(key("Hires refiner"));
    if let Some(p) = pass {
        req.stages.hires_refiner_pass = HiresRefinerPass::parse(p).ok_or_else(|| {
            anyhow::anyhow!("--hr-refiner-pass: `{p}` is not first, second or both")
        })?;
    }
    req.stages.refiner_by_sample_steps = key("Refiner switch by sampling steps") == Some("True");
    Ok(())
}

/// The checkpoint an infotext names, or a warning that it is not applied.
fn found_or_warn(name: &str, key: &str, model: &Path, quiet: bool) -> Result<Option<PathBuf>> {
    match find(Path::new(name), key, model, quiet) {
        Ok(p) => Ok(Some(p)),
        Err(e) => {
            eprintln!(
                "warning: the infotext's `{key}: {}` is not applied: {}",
                crate::terminal::escape_controls(name),
                crate::terminal::escape_controls(&format!("{e:#}"))
            );
            Ok(None)
        }
    }
}

/// `arg` as a checkpoint path: an existing path, a Hub id, or a checkpoint beside `model`
/// whose name it is (an A1111 title's ` [hash]` ignored); else an error listing those found.
fn find(arg: &Path, what: &str, model: &Path, quiet: bool) -> Result<PathBuf> {
    if arg.exists() {
        crate::inputs::model(arg, what)?;
        return Ok(arg.to_path_buf());
    }
    let text = arg.to_string_lossy();
    let name = strip_hash(&text);
    let dir = model.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let mut files = Vec::new();
    walk(dir, &mut files, 0);
    files.sort();
    if let Some(p) = files.iter().find(|p| {
        let e = CheckpointInfo::new(p, Some(dir), None);
        e.matches(name) || p.file_stem().is_some_and(|s| s.to_string_lossy() == name)
    }) {
        return Ok(p.clone());
    }
    if text.contains('/') && !text.starts_with('/') && !text.starts_with('.') {
        let p = crate::hub_models::file(arg, what, quiet)?;
        crate::inputs::model(&p, what)?;
        return Ok(p);
    }
    let names: Vec<String> = files
        .iter()
        .map(|p| CheckpointInfo::new(p, Some(dir), None).name)
        .collect();
    bail!(
        "{what} {text}: no such file, and no checkpoint of that name in {} (found: {})",
        dir.display(),
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )
}

/// `name [0123456789]` without its hash.
fn strip_hash(s: &str) -> &str {
    match s.trim().rsplit_once(" [") {
        Some((n, h)) if h.ends_with(']') => n,
        _ => s.trim(),
    }
}

/// The `.safetensors`/`.ckpt` files under `dir` (regular files only, bounded).
fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 4 || out.len() >= MAX_LISTED {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            walk(&p, out, depth + 1);
        } else if m.is_file()
            && p.extension()
                .map(|x| x.to_string_lossy().to_ascii_lowercase())
                .is_some_and(|x| x == "safetensors" || x == "ckpt")
            && out.len() < MAX_LISTED
        {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_titles_lose_their_hash() {
        assert_eq!(strip_hash("refiner [0123456789]"), "refiner");
        assert_eq!(strip_hash(" refiner "), "refiner");
        assert_eq!(strip_hash("a [b"), "a [b");
    }
}
