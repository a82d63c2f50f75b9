//! What a checkpoint is, for front ends: [`CheckpointReport`] (what `sumi model-info` prints:
//! architecture, prediction type and its source, storage dtype, parameter counts per network,
//! A1111's model hash) and [`CheckpointInfo`] (a checkpoint file as A1111's checkpoint list
//! names it: `<name> [<short hash>]`, for `/sdapi/v1/sd-models`), with [`model_hash`], A1111's
//! sha256 of a checkpoint file.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sumi_weights::layout::{TEXT_ENCODER, TEXT_ENCODER_2, UNET, VAE};
use sumi_weights::{Format, ModelHash, Prediction, PredictionSource};

use crate::checkpoint::Checkpoint;
use crate::error::Result;

/// The latent space of a `.safetensors` checkpoint read from its header alone (no tensor read,
/// no U-Net test), for listings (the web page's default size follows it); `None` for other
/// files, unreadable or unrecognised ones, and SDXL refiners (no model of their own).
pub fn latent_space_of(path: &Path) -> Option<crate::preview::LatentSpace> {
    let ext = path.extension()?.to_string_lossy().to_ascii_lowercase();
    if ext != "safetensors" {
        return None;
    }
    let ck = Checkpoint::open_unresolved(path, None).ok()?;
    Some(if ck.is_sdxl() {
        crate::preview::LatentSpace::Sdxl
    } else {
        crate::preview::LatentSpace::Sd
    })
}

/// A1111's model hash of a file: its sha256 and the 10-digit short form.
pub fn model_hash(path: &Path) -> Result<ModelHash> {
    Ok(sumi_weights::sha256_file(path)?)
}

/// The name of a container format as `model-info` shows it.
pub fn format_name(f: Format) -> &'static str {
    match f {
        Format::Safetensors => "safetensors",
        Format::Checkpoint => "pytorch-zip",
        Format::Diffusers => "diffusers",
    }
}

/// The name of a prediction type as `model-info` shows it (`epsilon`, `v`).
pub fn prediction_name(p: Prediction) -> &'static str {
    match p {
        Prediction::Epsilon => "epsilon",
        Prediction::V => "v",
    }
}

/// Where a prediction type came from, as `model-info` shows it.
pub fn prediction_source_name(s: &PredictionSource) -> String {
    match s {
        PredictionSource::Override => "override".into(),
        PredictionSource::Yaml(p) => format!("yaml:{}", p.display()),
        PredictionSource::Metadata => "modelspec.prediction_type".into(),
        PredictionSource::DiffusersConfig => "scheduler_config.json".into(),
        PredictionSource::Rule => "architecture rule".into(),
        PredictionSource::UnetTest => "A1111 U-Net test".into(),
    }
}

/// Parameters per network (elements of the tensors under each network's canonical prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkParams {
    /// The U-Net's.
    pub unet: usize,
    /// The VAE's.
    pub vae: usize,
    /// The text encoder's (SDXL: CLIP-L's; 0 for the SDXL refiner).
    pub text_encoder: usize,
    /// The second text encoder's (SDXL's OpenCLIP bigG; 0 for SD1/SD2).
    pub text_encoder_2: usize,
}

/// What a checkpoint is: `sumi model-info`'s report.
#[derive(Debug, Clone)]
pub struct CheckpointReport {
    /// The path as given.
    pub path: PathBuf,
    /// Its container format.
    pub format: Format,
    /// The architecture (`sd1`, `sd1-inpaint`, `sd2`, `sd2-v`, `sd2-inpaint`, `sdxl`,
    /// `sdxl-inpaint`, `sdxl-refiner`).
    pub architecture: &'static str,
    /// The prediction type in force.
    pub prediction: Prediction,
    /// Where it came from.
    pub prediction_source: PredictionSource,
    /// Elements per storage dtype (`F16`, `F32`, …), in dtype order.
    pub dtypes: Vec<(String, usize)>,
    /// The canonical tensors a model uses.
    pub tensors: usize,
    /// The tensors in the file (EMA copies and other extras included).
    pub file_tensors: usize,
    /// Parameters per network.
    pub params: NetworkParams,
    /// A1111's model hash (none for a diffusers folder).
    pub hash: Option<ModelHash>,
}

impl CheckpointReport {
    /// Opens and identifies `path` ([`Checkpoint::identify`], `prediction` overriding
    /// detection) and reports it.
    pub fn read(path: &Path, prediction: Option<Prediction>) -> Result<Self> {
        Self::of(&Checkpoint::identify(path, prediction)?)
    }

    /// The report of an opened checkpoint; hashes its file (not a diffusers folder).
    pub fn of(ck: &Checkpoint) -> Result<Self> {
        let w = &ck.weights;
        let hash = match w.format() {
            Format::Diffusers => None,
            _ => Some(model_hash(w.path())?),
        };
        let params = |p: &str| w.param_count(p);
        Ok(Self {
            path: w.path().to_path_buf(),
            format: w.format(),
            architecture: ck.architecture(),
            prediction: ck.prediction,
            prediction_source: ck.prediction_source.clone(),
            dtypes: w
                .dtype_histogram()
                .iter()
                .map(|(d, n)| (d.to_string(), *n))
                .collect(),
            tensors: w.names().count(),
            file_tensors: w.raw_keys().count(),
            params: NetworkParams {
                unet: params(UNET),
                vae: params(VAE),
                text_encoder: params(TEXT_ENCODER),
                text_encoder_2: params(TEXT_ENCODER_2),
            },
            hash,
        })
    }

    /// The dtype most elements are stored in (the last of equals, in dtype order).
    pub fn storage_dtype(&self) -> &str {
        self.dtypes
            .iter()
            .max_by_key(|(_, n)| *n)
            .map_or("", |(d, _)| d.as_str())
    }

    /// `sumi model-info --json`'s object.
    pub fn to_json(&self) -> Value {
        let dtypes: serde_json::Map<String, Value> = self
            .dtypes
            .iter()
            .map(|(d, n)| (d.clone(), json!(n)))
            .collect();
        json!({
            "path": self.path.display().to_string(),
            "format": format_name(self.format),
            "architecture": self.architecture,
            "prediction": prediction_name(self.prediction),
            "prediction_source": prediction_source_name(&self.prediction_source),
            "storage_dtype": self.storage_dtype(),
            "dtypes": dtypes,
            "tensors": self.tensors,
            "file_tensors": self.file_tensors,
            "params": {
                "unet": self.params.unet,
                "vae": self.params.vae,
                "text_encoder": self.params.text_encoder,
                "text_encoder_2": self.params.text_encoder_2,
            },
            "sha256": self.hash.as_ref().map(|h| h.sha256.clone()),
            "short_hash": self.hash.as_ref().map(|h| h.short().to_string()),
        })
    }
}

/// `sumi model-info`'s text, one line per fact.
impl fmt::Display for CheckpointReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.path.display())?;
        writeln!(f, "  architecture   {}", self.architecture)?;
        writeln!(
            f,
            "  prediction     {} ({})",
            prediction_name(self.prediction),
            prediction_source_name(&self.prediction_source)
        )?;
        writeln!(
            f,
            "  format         {}, stored as {}",
            format_name(self.format),
            self.storage_dtype()
        )?;
        writeln!(
            f,
            "  tensors        {} used of {} in the file",
            self.tensors, self.file_tensors
        )?;
        write!(
            f,
            "  parameters     U-Net {}, VAE {}, text encoder {}",
            self.params.unet, self.params.vae, self.params.text_encoder
        )?;
        if self.params.text_encoder_2 > 0 {
            write!(f, ", text encoder 2 {}", self.params.text_encoder_2)?;
        }
        writeln!(f)?;
        if let Some(h) = &self.hash {
            writeln!(f, "  sha256         {}", h.sha256)?;
            writeln!(f, "  short hash     {}", h.short())?;
        }
        Ok(())
    }
}

/// A checkpoint file as A1111's checkpoint list names it (`modules/sd_models.py`,
/// `CheckpointInfo`): its name relative to the models folder, `model_name`, and the title
/// `<name> [<first 10 hex of sha256>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Its path.
    pub path: PathBuf,
    /// Its name relative to the models folder (or its file name), with `/` separators.
    pub name: String,
    /// A1111's `model_name`: the name without its extension, `/` turned into `_`.
    pub model_name: String,
    /// Its sha256 (lowercase hex), when it could be read.
    pub sha256: Option<String>,
}

impl CheckpointInfo {
    /// Names `path`, relative to `models_dir` when it lies inside it; `sha256` is the file's
    /// hash when known ([`model_hash`]).
    pub fn new(path: &Path, models_dir: Option<&Path>, sha256: Option<String>) -> Self {
        let rel = models_dir
            .and_then(|d| path.strip_prefix(d).ok())
            .filter(|r| !r.as_os_str().is_empty());
        let name = match rel {
            Some(r) => r.to_string_lossy().replace('\\', "/"),
            None => path.file_name().map_or_else(
                || path.to_string_lossy().into_owned(),
                |f| f.to_string_lossy().into_owned(),
            ),
        };
        let stem = match name.rsplit_once('.') {
            Some((s, _)) if !s.is_empty() => s.to_string(),
            _ => name.clone(),
        };
        Self {
            path: path.to_path_buf(),
            model_name: stem.replace('/', "_"),
            name,
            sha256,
        }
    }

    /// A1111's short hash.
    pub fn short_hash(&self) -> Option<&str> {
        self.sha256.as_deref().and_then(|h| h.get(..10))
    }

    /// A1111's title.
    pub fn title(&self) -> String {
        match self.short_hash() {
            Some(h) => format!("{} [{h}]", self.name),
            None => self.name.clone(),
        }
    }

    /// Whether `wanted` names this checkpoint (title, name, model name, file name, file stem,
    /// path, short hash or sha256), as A1111's `get_closet_checkpoint_match` accepts them.
    pub fn matches(&self, wanted: &str) -> bool {
        let w = wanted.trim();
        w == self.title()
            || w == self.name
            || w == self.model_name
            || self.path.to_string_lossy() == w
            || self
                .path
                .file_name()
                .is_some_and(|f| f.to_string_lossy() == w)
            || self
                .path
                .file_stem()
                .is_some_and(|f| f.to_string_lossy() == w)
            || self.short_hash() == Some(w)
            || self.sha256.as_deref() == Some(w)
    }

    /// The `/sdapi/v1/sd-models` item.
    pub fn to_json(&self) -> Value {
        json!({
            "title": self.title(),
            "model_name": self.model_name,
            "hash": self.short_hash(),
            "sha256": self.sha256,
            "filename": self.path.to_string_lossy(),
            "config": Value::Null,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_titles_and_names() {
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let c = CheckpointInfo::new(
            Path::new("/m/sub/model.v1.safetensors"),
            Some(Path::new("/m")),
            Some(sha.into()),
        );
        assert_eq!(c.name, "sub/model.v1.safetensors");
        assert_eq!(c.model_name, "sub_model.v1");
        assert_eq!(c.title(), "sub/model.v1.safetensors [ba7816bf8f]");
        for w in [
            "sub/model.v1.safetensors [ba7816bf8f]",
            "sub_model.v1",
            "model.v1",
            "model.v1.safetensors",
            " ba7816bf8f ",
            sha,
        ] {
            assert!(c.matches(w), "{w}");
        }
        assert!(!c.matches("model"));
        let outside = CheckpointInfo::new(Path::new("/x/other.ckpt"), Some(Path::new("/m")), None);
        assert_eq!(outside.title(), "other.ckpt");
        assert_eq!(outside.to_json()["hash"], Value::Null);
        assert_eq!(c.to_json()["filename"], "/m/sub/model.v1.safetensors");
    }

    #[test]
    fn model_hash_is_the_files_sha256() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.safetensors");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(model_hash(&p).unwrap().short(), "ba7816bf8f");
        assert!(model_hash(&d.path().join("missing")).is_err());
    }
}
