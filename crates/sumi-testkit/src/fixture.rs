//! Fixture paths and loaders that refuse to hand a suite nothing to test.
//!
//! A loader that quietly returns no cases makes every assertion over them vacuous: the suite
//! passes on a truncated, emptied or missing fixture. Every loader here fails instead — on a
//! missing file, a file of zero bytes, a JSON document that is `null`, `{}` or `[]`, a case
//! list with no case in it, a tensor file with no tensor — and [`Cases`] carries count guards
//! ([`Cases::exactly`], [`Cases::at_least`]) for suites that know how many cases they test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a fixture cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The file is absent or unreadable.
    #[error("{path}: fixture cannot be read: {source}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file has no bytes, or its content holds nothing (`null`, `{}`, `[]`, no tensor).
    #[error("{path}: fixture is empty ({detail})")]
    Empty {
        /// The file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The content is not what the loader reads (invalid JSON, a bad safetensors header).
    #[error("{path}: fixture is malformed: {detail}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The problem.
        detail: String,
    },
    /// The case list at `pointer` is absent or has no case.
    #[error("{path}: no cases at `{pointer}` ({detail})")]
    NoCases {
        /// The file.
        path: PathBuf,
        /// The JSON pointer of the case list (`""` for the document itself).
        pointer: String,
        /// What was found there.
        detail: String,
    },
    /// A case does not have the type the suite reads it as.
    #[error("{path}: case {index} at `{pointer}`: {detail}")]
    BadCase {
        /// The file.
        path: PathBuf,
        /// The JSON pointer of the case list.
        pointer: String,
        /// The case's position in the list.
        index: usize,
        /// The deserialisation error.
        detail: String,
    },
    /// The number of cases is not what the suite expects.
    #[error("{path}: `{pointer}` holds {found} cases, expected {expected}")]
    Count {
        /// The file.
        path: PathBuf,
        /// The JSON pointer of the case list.
        pointer: String,
        /// How many there are.
        found: usize,
        /// How many the suite wants (`12`, `at least 70`).
        expected: String,
    },
    /// A materialised tensor differs from the reference's checksum, or an output could not be
    /// written.
    #[error("{path}: {detail}")]
    Materialize {
        /// The manifest or output file.
        path: PathBuf,
        /// The problem.
        detail: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, FixtureError>;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repository's `fixtures/` folder (reference outputs shared by the crates' suites).
pub fn fixtures() -> PathBuf {
    repo_root().join("fixtures")
}

/// The bytes of a fixture file, refusing a missing or zero-byte one.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|source| FixtureError::Missing {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.is_empty() {
        return Err(FixtureError::Empty {
            path: path.to_path_buf(),
            detail: "0 bytes".into(),
        });
    }
    Ok(bytes)
}

/// A JSON fixture, refusing a missing or zero-byte file, invalid JSON, and a document that
/// holds nothing (`null`, `{}`, `[]`).
pub fn read_json(path: &Path) -> Result<Value> {
    let bytes = read_bytes(path)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| FixtureError::Malformed {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    if let Some(detail) = emptiness(&v) {
        return Err(FixtureError::Empty {
            path: path.to_path_buf(),
            detail,
        });
    }
    Ok(v)
}

fn emptiness(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("null".into()),
        Value::Object(o) if o.is_empty() => Some("an empty object".into()),
        Value::Array(a) if a.is_empty() => Some("an empty list".into()),
        _ => None,
    }
}

/// The tensors of a safetensors fixture on the CPU, refusing a missing or zero-byte file and
/// a file without tensors.
pub fn tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes = read_bytes(path)?;
    let t = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
        FixtureError::Malformed {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    })?;
    if t.is_empty() {
        return Err(FixtureError::Empty {
            path: path.to_path_buf(),
            detail: "no tensor in it".into(),
        });
    }
    Ok(t)
}

/// A non-empty list of fixture cases, each read as a `T`, with the file it came from; it
/// dereferences to `[T]`.
#[derive(Debug, Clone)]
pub struct Cases<T> {
    path: PathBuf,
    pointer: String,
    items: Vec<T>,
}

impl<T: DeserializeOwned> Cases<T> {
    /// Reads the JSON file at `path` and the case list at JSON `pointer` in it (`""` for a
    /// document that is the list, `"/torch_cpu"` for a member).
    pub fn load(path: &Path, pointer: &str) -> Result<Self> {
        Self::from_document(path, &read_json(path)?, pointer)
    }

    /// The case list at `pointer` of a document already read from `path` (several lists from
    /// one file).
    pub fn from_document(path: &Path, doc: &Value, pointer: &str) -> Result<Self> {
        let no_cases = |detail: &str| FixtureError::NoCases {
            path: path.to_path_buf(),
            pointer: pointer.to_string(),
            detail: detail.to_string(),
        };
        let list = match doc.pointer(pointer) {
            None => return Err(no_cases("absent")),
            Some(Value::Array(a)) if a.is_empty() => return Err(no_cases("an empty list")),
            Some(Value::Array(a)) => a,
            Some(other) => return Err(no_cases(&format!("not a list: {}", kind(other)))),
        };
        let items = list
            .iter()
            .enumerate()
            .map(|(index, c)| {
                T::deserialize(c).map_err(|e| FixtureError::BadCase {
                    path: path.to_path_buf(),
                    pointer: pointer.to_string(),
                    index,
                    detail: e.to_string(),
                })
            })
            .collect::<Result<Vec<T>>>()?;
        Ok(Self {
            path: path.to_path_buf(),
            pointer: pointer.to_string(),
            items,
        })
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl<T> Cases<T> {
    /// Guards the count: exactly `n` cases.
    pub fn exactly(self, n: usize) -> Result<Self> {
        let ok = self.items.len() == n;
        self.guard(ok, n.to_string())
    }

    /// Guards the count: at least `n` cases.
    pub fn at_least(self, n: usize) -> Result<Self> {
        let ok = self.items.len() >= n;
        self.guard(ok, format!("at least {n}"))
    }

    fn guard(self, ok: bool, expected: String) -> Result<Self> {
        if ok {
            Ok(self)
        } else {
            Err(FixtureError::Count {
                path: self.path,
                pointer: self.pointer,
                found: self.items.len(),
                expected,
            })
        }
    }

    /// The file the cases came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cases, owned.
    pub fn into_vec(self) -> Vec<T> {
        self.items
    }
}

impl<'a, T> IntoIterator for &'a Cases<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl<T> IntoIterator for Cases<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

impl<T> std::ops::Deref for Cases<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.items
    }
}
