//! Textual-inversion embeddings as A1111 reads them (`modules/textual_inversion/
//! textual_inversion.py`, `create_embedding_from_data`): one file per embedding, used in
//! prompts by its file name without extension.
//!
//! Formats:
//! * `.safetensors`: a single tensor under any key (kohya's `emb_params`, a diffusers token);
//! * `.pt` / `.bin` (PyTorch zip archives, read by the checkpoints' own [`TorchArchive`]:
//!   restricted pickle, nothing executed, every tensor view checked against its storage):
//!   A1111's own `{"string_to_param": {"*": tensor}, …}` (the inner dict may be a
//!   `torch.nn.ParameterDict`), or a diffusers concept `{"<token>": tensor}`.
//!
//! A tensor of shape `[vectors, width]` (a 1-D diffusers-concept tensor is one vector) must have
//! the text encoder's width. As in A1111, a file holding several terms, SDXL's `clip_l`/`clip_g`
//! pair, or anything else is refused; [`EmbeddingDir::load`] records such files (and those of
//! another width, which A1111 lists as "skipped") instead of failing, so one stray file does not
//! stop a generation.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

mod sdxl;
pub use sdxl::{SdxlEmbedding, SdxlEmbeddingDir};

use crate::ckpt::TorchArchive;
use crate::dtype::{decode, StorageDtype};
use crate::error::WeightsError;
use crate::pickle::{TensorRef, Value};
use crate::safetensors::SafetensorsFile;

/// Why an embedding file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    /// The file could not be read as a safetensors file or a PyTorch archive.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The extension is none of `.safetensors`, `.pt`, `.bin`.
    #[error("{path}: not an embedding file (A1111 reads .safetensors, .pt and .bin)")]
    Extension {
        /// The file.
        path: PathBuf,
    },
    /// An image (`.png`, `.webp`, `.jxl`, `.avif`) that may carry an embedding, which A1111
    /// reads and Sumi does not yet.
    #[error(
        "{path}: embeddings stored in images are not read yet (use the .safetensors or .pt file)"
    )]
    Image {
        /// The file.
        path: PathBuf,
    },
    /// The content is no embedding format A1111 knows.
    #[error("{path}: neither a textual-inversion embedding nor a diffusers concept ({detail})")]
    Unrecognised {
        /// The file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The file holds several terms (A1111: "embedding file has multiple terms in it").
    #[error("{path}: the embedding file has {count} terms in it; A1111 reads files with one")]
    MultipleTerms {
        /// The file.
        path: PathBuf,
        /// How many.
        count: usize,
    },
    /// An SDXL embedding (`clip_l` and `clip_g` vectors).
    #[error("{path}: an SDXL embedding (clip_l + clip_g vectors); SD1/SD2 models cannot use it")]
    Sdxl {
        /// The file.
        path: PathBuf,
    },
    /// A one-encoder (SD1/SD2) embedding where an SDXL one is wanted (A1111 skips it on
    /// SDXL: its `shape` is not the two encoders' widths summed).
    #[error("{path}: a {width}-wide embedding for one text encoder (SD1/SD2); SDXL models use embeddings with clip_l and clip_g vectors, and A1111 skips it")]
    NotSdxl {
        /// The file.
        path: PathBuf,
        /// Its vectors' width.
        width: usize,
    },
    /// The tensor is not `[vectors, width]` (or a single `[width]` vector).
    #[error("{path}: embedding tensor `{key}` has shape {shape:?}, expected [vectors, width]")]
    Shape {
        /// The file.
        path: PathBuf,
        /// The tensor's key.
        key: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// The vectors do not have the text encoder's width.
    #[error("{path}: embedding vectors are {found} wide, the model's text encoder is {expected} wide (an embedding for another model family)")]
    Width {
        /// The file.
        path: PathBuf,
        /// The embedding's width.
        found: usize,
        /// The model's width.
        expected: usize,
    },
    /// The embeddings folder could not be listed.
    #[error("{path}: cannot read the embeddings folder: {source}")]
    Dir {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// One textual-inversion embedding.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// The name prompts use: the file name without its extension.
    pub name: String,
    /// The file it came from.
    pub path: PathBuf,
    /// The vectors, `[vectors, width]`, f32 on the CPU.
    pub vectors: Tensor,
    /// Training step recorded in A1111's `.pt` files, if any.
    pub step: Option<i64>,
    /// The prompt positions it takes where that is not its vector count: an SDXL embedding's
    /// CLIP-L part takes as many as its `clip_g` part has (A1111's `vectors`), and its vectors
    /// fill as many of them as they are, or run on over the positions after them.
    pub positions: Option<usize>,
}

impl Embedding {
    /// The prompt positions it takes (A1111's `vectors`): its vector count, unless
    /// [`Self::positions`] says otherwise.
    pub fn len(&self) -> usize {
        self.positions.unwrap_or_else(|| self.vectors.dims()[0])
    }

    /// Whether it has no vectors.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Width of each vector.
    pub fn width(&self) -> usize {
        self.vectors.dims()[1]
    }

    /// Reads one embedding file; its name is the file stem.
    pub fn load(path: &Path) -> Result<Self, EmbeddingError> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_uppercase())
            .unwrap_or_default();
        let (vectors, step) = match ext.as_str() {
            "SAFETENSORS" => (read_safetensors(path)?, None),
            "PT" | "BIN" => read_torch(path)?,
            "PNG" | "WEBP" | "JXL" | "AVIF" => {
                return Err(EmbeddingError::Image {
                    path: path.to_path_buf(),
                })
            }
            _ => {
                return Err(EmbeddingError::Extension {
                    path: path.to_path_buf(),
                })
            }
        };
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Embedding {
            name,
            path: path.to_path_buf(),
            vectors,
            step,
            positions: None,
        })
    }

    /// A1111's short hash of the file (`TI hashes` in infotext): the first 12 hex digits of
    /// its sha256.
    pub fn short_hash(&self) -> Result<String, EmbeddingError> {
        let h = crate::hash::sha256_file(&self.path)?;
        Ok(h.sha256[..12].to_string())
    }

    /// Checks the vectors against the text encoder's width.
    pub fn check_width(&self, expected: usize) -> Result<(), EmbeddingError> {
        if self.width() == expected {
            Ok(())
        } else {
            Err(EmbeddingError::Width {
                path: self.path.clone(),
                found: self.width(),
                expected,
            })
        }
    }
}

/// The embeddings of a folder (and its subfolders, as A1111's `os.walk`).
#[derive(Debug, Default)]
pub struct EmbeddingDir {
    /// Usable embeddings, in file-path order; a later file of the same name replaces an
    /// earlier one (A1111 keeps the last registered).
    pub loaded: Vec<Embedding>,
    /// Files that could not be used, with the reason (A1111 reports these and goes on).
    pub skipped: Vec<EmbeddingError>,
}

impl EmbeddingDir {
    /// Loads every `.safetensors`/`.pt`/`.bin` file under `dir`; other files, empty ones and
    /// `*.preview.png` images are ignored (as A1111), other images are listed as skipped
    /// (A1111 reads embeddings stored in images; Sumi does not yet). With `width`, embeddings
    /// of another width are skipped.
    pub fn load(dir: &Path, width: Option<usize>) -> Result<Self, EmbeddingError> {
        let mut out = EmbeddingDir::default();
        for path in embedding_files(dir)? {
            let loaded = Embedding::load(&path).and_then(|e| match width {
                Some(w) => e.check_width(w).map(|()| e),
                None => Ok(e),
            });
            match loaded {
                Ok(e) => {
                    out.loaded.retain(|x| x.name != e.name);
                    out.loaded.push(e);
                }
                Err(err) => out.skipped.push(err),
            }
        }
        Ok(out)
    }

    /// The embedding called `name`.
    pub fn get(&self, name: &str) -> Option<&Embedding> {
        self.loaded.iter().find(|e| e.name == name)
    }
}

/// The files under `dir` A1111 reads as embeddings, sorted: `.safetensors`, `.pt`, `.bin` and
/// images other than `*.preview.png`, empty files passed over.
fn embedding_files(dir: &Path) -> Result<Vec<PathBuf>, EmbeddingError> {
    let mut files = Vec::new();
    walk(dir, &mut files, 0)?;
    files.sort();
    files.retain(|path| {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_uppercase())
            .unwrap_or_default();
        let stem = path.file_stem().map(Path::new);
        let preview = stem
            .and_then(Path::extension)
            .is_some_and(|e| e.eq_ignore_ascii_case("preview"));
        let image = matches!(ext.as_str(), "PNG" | "WEBP" | "JXL" | "AVIF");
        // A1111 passes over `<name>.preview.png` images and files of other kinds
        (matches!(ext.as_str(), "SAFETENSORS" | "PT" | "BIN") || image && !preview)
            && !std::fs::metadata(path).is_ok_and(|m| m.len() == 0)
    });
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), EmbeddingError> {
    let err = |source| EmbeddingError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let path = entry.map_err(err)?.path();
        // `is_dir` follows links, as A1111's `os.walk(followlinks=True)`; the depth bound
        // stops link cycles
        if path.is_dir() {
            if depth < 16 {
                walk(&path, out, depth + 1)?;
            }
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn unrecognised(path: &Path, detail: impl Into<String>) -> EmbeddingError {
    EmbeddingError::Unrecognised {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// `[vectors, width]` from a stored tensor (a 1-D tensor is one vector).
fn as_matrix(path: &Path, key: &str, t: Tensor) -> Result<Tensor, EmbeddingError> {
    let shape = t.dims().to_vec();
    let tensor_err = |e: candle_core::Error| WeightsError::Tensor {
        path: path.to_path_buf(),
        name: key.to_string(),
        source: Box::new(e),
    };
    match shape.as_slice() {
        [w] if *w > 0 => Ok(t.unsqueeze(0).map_err(tensor_err)?),
        [n, w] if *n > 0 && *w > 0 => Ok(t),
        _ => Err(EmbeddingError::Shape {
            path: path.to_path_buf(),
            key: key.to_string(),
            shape,
        }),
    }
}

fn read_safetensors(path: &Path) -> Result<Tensor, EmbeddingError> {
    let f = SafetensorsFile::open(path)?;
    let entries = f.entries();
    if entries.iter().any(|e| e.name == "clip_l") && entries.iter().any(|e| e.name == "clip_g") {
        return Err(EmbeddingError::Sdxl {
            path: path.to_path_buf(),
        });
    }
    let e = match entries {
        [e] => e,
        [] => return Err(unrecognised(path, "the file holds no tensor")),
        _ => {
            return Err(EmbeddingError::MultipleTerms {
                path: path.to_path_buf(),
                count: entries.len(),
            })
        }
    };
    let t = float_tensor(path, &e.name, f.bytes(e), e.dtype, &e.shape)?;
    as_matrix(path, &e.name, t)
}

fn float_tensor(
    path: &Path,
    key: &str,
    bytes: &[u8],
    dtype: StorageDtype,
    shape: &[usize],
) -> Result<Tensor, EmbeddingError> {
    if !dtype.is_float() {
        return Err(WeightsError::BadDtype {
            path: path.to_path_buf(),
            name: key.to_string(),
            dtype: dtype.name().to_string(),
        }
        .into());
    }
    decode(bytes, dtype, shape, DType::F32, &Device::Cpu).map_err(|e| {
        WeightsError::Tensor {
            path: path.to_path_buf(),
            name: key.to_string(),
            source: Box::new(e),
        }
        .into()
    })
}

fn dict_get<'a>(d: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    d.iter()
        .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
        .map(|(_, v)| v)
}

/// Reads a `.pt`/`.bin` embedding through the checkpoints' archive reader: the vectors and
/// A1111's recorded training step.
fn read_torch(path: &Path) -> Result<(Tensor, Option<i64>), EmbeddingError> {
    let (archive, root) = TorchArchive::open(path)?;
    let (key, tref, step) = find_vectors(path, &root)?;
    let t = archive.tensor(key, tref)?;
    let vectors = float_tensor(path, &t.name, &archive.bytes(&t), t.dtype, &t.shape)?;
    Ok((as_matrix(path, &t.name, vectors)?, step))
}

/// A1111's `create_embedding_from_data` on the unpickled root.
fn find_vectors(
    path: &Path,
    root: &Value,
) -> Result<(String, TensorRef, Option<i64>), EmbeddingError> {
    let Value::Dict(d) = root else {
        return Err(unrecognised(
            path,
            "the pickle's root is not a dict (a bare tensor is not an A1111 embedding)",
        ));
    };
    let step = match dict_get(d, "step") {
        Some(Value::Int(s)) => Some(*s),
        _ => None,
    };
    let single = |items: &[(Value, Value)]| -> Result<(String, TensorRef), EmbeddingError> {
        match items {
            [(k, Value::Tensor(t))] => {
                let key = match k {
                    Value::Str(s) => s.clone(),
                    other => other.describe(),
                };
                Ok((key, (**t).clone()))
            }
            [(_, other)] => Err(unrecognised(
                path,
                format!("the term is not a tensor: {}", other.describe()),
            )),
            [] => Err(unrecognised(path, "no term in it")),
            _ => Err(EmbeddingError::MultipleTerms {
                path: path.to_path_buf(),
                count: items.len(),
            }),
        }
    };
    if let Some(params) = dict_get(d, "string_to_param") {
        let Value::Dict(items) = params else {
            return Err(unrecognised(path, "`string_to_param` is not a dict"));
        };
        let (key, t) = single(items)?;
        return Ok((key, t, step));
    }
    if dict_get(d, "clip_l").is_some() && dict_get(d, "clip_g").is_some() {
        return Err(EmbeddingError::Sdxl {
            path: path.to_path_buf(),
        });
    }
    // a diffusers concept: A1111 looks at the first value's type, then wants exactly one
    match d.first() {
        Some((_, Value::Tensor(_))) => {
            let (key, t) = single(d)?;
            Ok((key, t, step))
        }
        _ => Err(unrecognised(
            path,
            "no `string_to_param` entry and no single tensor",
        )),
    }
}
