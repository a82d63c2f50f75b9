//! SDXL textual-inversion embeddings: A1111's `create_embedding_from_data` for a dict with
//! `clip_l` and `clip_g` tensors (`.safetensors`, or a PyTorch file's dict). A1111 keeps both
//! parts and gives each text encoder its own (`EmbeddingsWithFixes.textual_inversion_key`:
//! `clip_l` for CLIP-L, `clip_g` for OpenCLIP bigG); its `shape` is the two widths summed, and
//! only an embedding of the model's summed width registers (`expected_shape`), so an SD1/SD2
//! embedding (one tensor, 768 or 1024 wide) is skipped on SDXL.
//!
//! Parts of different vector counts are read as A1111 reads them: the prompt reserves
//! `clip_g`'s count of positions (A1111's `vectors`) for both encoders, and each encoder's
//! `EmbeddingsWithFixes` writes its own part from the first of them on (`sd_hijack.py`): a
//! shorter `clip_l` part leaves the last positions to the token they hold (id 0), a longer one
//! runs on over the positions after them (the next words', up to the chunk's end token).

use std::path::Path;

use candle_core::Tensor;

use super::{as_matrix, dict_get, embedding_files, float_tensor, Embedding, EmbeddingError};
use crate::ckpt::TorchArchive;
use crate::pickle::Value;
use crate::safetensors::SafetensorsFile;

/// An SDXL embedding: one part per text encoder, both named by the file stem.
#[derive(Debug, Clone)]
pub struct SdxlEmbedding {
    /// The `clip_l` vectors, for CLIP-L.
    pub clip_l: Embedding,
    /// The `clip_g` vectors, for OpenCLIP bigG.
    pub clip_g: Embedding,
}

impl SdxlEmbedding {
    /// The name prompts use.
    pub fn name(&self) -> &str {
        &self.clip_l.name
    }

    /// A1111's `shape`: the widths of both parts summed.
    pub fn width(&self) -> usize {
        self.clip_l.width() + self.clip_g.width()
    }

    /// Reads an SDXL embedding file. A file A1111 reads as a one-encoder embedding is
    /// [`EmbeddingError::NotSdxl`]; anything else fails as [`Embedding::load`] does. Both parts
    /// take `clip_g`'s count of prompt positions ([`Embedding::positions`] on the `clip_l`
    /// part where its count differs).
    pub fn load(path: &Path) -> Result<Self, EmbeddingError> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_uppercase())
            .unwrap_or_default();
        let pair = match ext.as_str() {
            "SAFETENSORS" => read_safetensors_pair(path)?,
            "PT" | "BIN" => read_torch_pair(path)?,
            _ => None,
        };
        let Some((l, g)) = pair else {
            let one = Embedding::load(path)?;
            return Err(EmbeddingError::NotSdxl {
                path: path.to_path_buf(),
                width: one.width(),
            });
        };
        let (l, g) = (as_matrix(path, "clip_l", l)?, as_matrix(path, "clip_g", g)?);
        // A1111's `vectors = data['clip_g'].shape[0]`, the positions both encoders reserve
        let (nl, ng) = (l.dims()[0], g.dims()[0]);
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let part = |vectors: Tensor, positions: Option<usize>| Embedding {
            name: name.clone(),
            path: path.to_path_buf(),
            vectors,
            step: None,
            positions,
        };
        Ok(Self {
            clip_l: part(l, (nl != ng).then_some(ng)),
            clip_g: part(g, None),
        })
    }

    /// Checks both parts against the text encoders' widths (`clip_l`, `clip_g`).
    pub fn check_widths(&self, clip_l: usize, clip_g: usize) -> Result<(), EmbeddingError> {
        if self.clip_l.width() == clip_l && self.clip_g.width() == clip_g {
            return Ok(());
        }
        Err(EmbeddingError::Width {
            path: self.clip_l.path.clone(),
            found: self.width(),
            expected: clip_l + clip_g,
        })
    }
}

/// The `clip_l` and `clip_g` tensors of a safetensors file, `None` without both.
fn read_safetensors_pair(path: &Path) -> Result<Option<(Tensor, Tensor)>, EmbeddingError> {
    let f = SafetensorsFile::open(path)?;
    let get = |key: &str| f.entries().iter().find(|e| e.name == key);
    let (Some(l), Some(g)) = (get("clip_l"), get("clip_g")) else {
        return Ok(None);
    };
    let read = |e: &crate::safetensors::TensorEntry| {
        float_tensor(path, &e.name, f.bytes(e), e.dtype, &e.shape)
    };
    Ok(Some((read(l)?, read(g)?)))
}

/// The `clip_l` and `clip_g` tensors of a PyTorch file's dict, `None` without both.
fn read_torch_pair(path: &Path) -> Result<Option<(Tensor, Tensor)>, EmbeddingError> {
    let (archive, root) = TorchArchive::open(path)?;
    let Value::Dict(d) = &root else {
        return Ok(None);
    };
    let (Some(Value::Tensor(l)), Some(Value::Tensor(g))) =
        (dict_get(d, "clip_l"), dict_get(d, "clip_g"))
    else {
        return Ok(None);
    };
    let read = |key: &str, t: &crate::pickle::TensorRef| -> Result<Tensor, EmbeddingError> {
        let t = archive.tensor(key.to_string(), t.clone())?;
        float_tensor(path, &t.name, &archive.bytes(&t), t.dtype, &t.shape)
    };
    Ok(Some((read("clip_l", l)?, read("clip_g", g)?)))
}

/// The SDXL embeddings of a folder (and its subfolders, walked as [`super::EmbeddingDir`]).
#[derive(Debug, Default)]
pub struct SdxlEmbeddingDir {
    /// Usable embeddings, in file-path order; a later file of the same name replaces an
    /// earlier one.
    pub loaded: Vec<SdxlEmbedding>,
    /// One-encoder (SD1/SD2) embeddings, which A1111 skips on SDXL (another `shape`).
    pub other: Vec<Embedding>,
    /// Files that could not be used, with the reason: unreadable, or parts of other widths
    /// than the model's encoders.
    pub skipped: Vec<EmbeddingError>,
}

impl SdxlEmbeddingDir {
    /// Loads the embedding files under `dir` for text encoders `clip_l` and `clip_g` wide.
    pub fn load(dir: &Path, clip_l: usize, clip_g: usize) -> Result<Self, EmbeddingError> {
        let mut out = Self::default();
        for path in embedding_files(dir)? {
            match SdxlEmbedding::load(&path).and_then(|e| {
                e.check_widths(clip_l, clip_g)?;
                Ok(e)
            }) {
                Ok(e) => {
                    out.loaded.retain(|x| x.name() != e.name());
                    out.loaded.push(e);
                }
                Err(EmbeddingError::NotSdxl { path, .. }) => match Embedding::load(&path) {
                    Ok(one) => out.other.push(one),
                    Err(err) => out.skipped.push(err),
                },
                Err(err) => out.skipped.push(err),
            }
        }
        Ok(out)
    }
}
