//! The checkpoints `/sdapi/v1/sd-models` lists: the startup model and every `.safetensors` /
//! `.ckpt` file under `--models-dir`, titled as A1111 titles them
//! (`<file name> [<first 10 hex of sha256>]`). Hashes are computed on first need and cached by
//! path, size and modification time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{json, Value};

/// One checkpoint file.
#[derive(Debug, Clone)]
pub struct CheckpointEntry {
    /// Its path.
    pub path: PathBuf,
    /// Its name relative to the models folder (or its file name).
    pub name: String,
    /// A1111's `model_name`: the name without its extension, `/` turned into `_`.
    pub model_name: String,
    /// Its sha256 (lowercase hex), when it could be read.
    pub sha256: Option<String>,
}

impl CheckpointEntry {
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

    /// Whether `wanted` names this checkpoint (title, name, model name, file stem, path or hash).
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

    /// The `/sd-models` item.
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

type HashKey = (PathBuf, u64, Option<SystemTime>);

/// The listing and its hash cache.
#[derive(Debug)]
pub struct Checkpoints {
    models_dir: Option<PathBuf>,
    hashes: Mutex<HashMap<HashKey, String>>,
}

fn is_checkpoint(p: &Path) -> bool {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| e == "safetensors" || e == "ckpt")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 8 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out, depth + 1);
        } else if is_checkpoint(&p) {
            out.push(p);
        }
    }
}

impl Checkpoints {
    /// A listing of `models_dir` (none: only the models loaded).
    pub fn new(models_dir: Option<PathBuf>) -> Self {
        Self {
            models_dir,
            hashes: Mutex::new(HashMap::new()),
        }
    }

    /// The sha256 of `path`, cached.
    pub fn sha256(&self, path: &Path) -> Option<String> {
        let meta = std::fs::metadata(path).ok()?;
        if meta.is_dir() {
            return None;
        }
        let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
        if let Some(h) = self
            .hashes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Some(h.clone());
        }
        let h = sumi_weights::sha256_file(path).ok()?.sha256;
        self.hashes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, h.clone());
        Some(h)
    }

    /// The entry for one file.
    pub fn entry(&self, path: &Path) -> CheckpointEntry {
        let rel = self
            .models_dir
            .as_deref()
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
        CheckpointEntry {
            path: path.to_path_buf(),
            model_name: stem.replace('/', "_"),
            name,
            sha256: self.sha256(path),
        }
    }

    /// Every checkpoint: those under the models folder (sorted), then `extra` files not in it.
    pub fn list(&self, extra: &[&Path]) -> Vec<CheckpointEntry> {
        let mut files = Vec::new();
        if let Some(d) = &self.models_dir {
            walk(d, &mut files, 0);
        }
        files.sort();
        for e in extra {
            let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            if !files.iter().any(|f| canon(f) == canon(e)) {
                files.push(e.to_path_buf());
            }
        }
        files.iter().map(|p| self.entry(p)).collect()
    }
}
