//! The checkpoints `/sdapi/v1/sd-models` lists: the startup model and every `.safetensors` /
//! `.ckpt` file under `--models-dir`, titled as A1111 titles them
//! (`<file name> [<first 10 hex of sha256>]`, the pipeline's
//! [`CheckpointInfo`](sumi_pipeline::checkpoint_report::CheckpointInfo)). Hashes are computed on
//! first need and cached by path, size and modification time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

pub use sumi_pipeline::checkpoint_report::CheckpointInfo as CheckpointEntry;

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
        } else if is_checkpoint(&p) && p.is_file() {
            // a FIFO, device or socket named like a checkpoint is no checkpoint (reading it
            // would block the listing)
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
        if !meta.is_file() {
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
        let h = sumi_pipeline::checkpoint_report::model_hash(path)
            .ok()?
            .sha256;
        self.hashes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, h.clone());
        Some(h)
    }

    /// The entry for one file.
    pub fn entry(&self, path: &Path) -> CheckpointEntry {
        CheckpointEntry::new(path, self.models_dir.as_deref(), self.sha256(path))
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
