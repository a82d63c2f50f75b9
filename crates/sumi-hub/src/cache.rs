//! The Hub cache layout, as `huggingface_hub` writes it, so that a file downloaded by Sumi is
//! found by diffusers and ComfyUI and the other way round:
//! ```text
//! <cache>/models--org--name/
//!     blobs/<etag>                      the file's bytes, named by its ETag (sha256 for LFS files)
//!     blobs/<etag>.incomplete           a download in progress (resumed from its length)
//!     snapshots/<commit>/<path>         relative symlink to ../../blobs/<etag> (deeper paths: more ../)
//!     refs/<revision>                   the commit a branch or tag pointed to when last asked
//! <cache>/.locks/models--org--name/<etag>.lock   held while the blob is written
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{io, Result};
use crate::id::{is_commit, HubId};

/// Largest `refs/<revision>` file read.
const MAX_REF: u64 = 256;

/// One repo's folder in the cache.
#[derive(Clone, Debug)]
pub struct RepoCache {
    root: PathBuf,
    locks: PathBuf,
}

impl RepoCache {
    /// `id`'s repo folder under the cache folder `cache_dir`.
    pub fn new(cache_dir: &Path, id: &HubId) -> Self {
        Self {
            root: cache_dir.join(id.cache_folder()),
            locks: cache_dir.join(".locks").join(id.cache_folder()),
        }
    }

    /// `models--org--name`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blob named `etag`.
    pub fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    /// The part of blob `etag` being downloaded.
    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{etag}.incomplete"))
    }

    /// The lock file of blob `etag`.
    pub fn lock(&self, etag: &str) -> PathBuf {
        self.locks.join(format!("{etag}.lock"))
    }

    /// The snapshot folder of `commit`.
    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    /// Where `file` of `commit` is (a validated `/`-separated repo path).
    pub fn pointer(&self, commit: &str, file: &str) -> PathBuf {
        file.split('/')
            .fold(self.snapshot(commit), |p, seg| p.join(seg))
    }

    /// The commit `revision` stands for in the cache: itself when it is a commit hash, else
    /// what `refs/<revision>` holds (none when absent or malformed).
    pub fn commit_of(&self, revision: &str) -> Option<String> {
        if is_commit(revision) {
            return Some(revision.to_string());
        }
        let path = self.root.join("refs").join(revision);
        let m = fs::metadata(&path).ok()?;
        if !m.is_file() || m.len() > MAX_REF {
            return None;
        }
        let text = fs::read_to_string(&path).ok()?;
        let commit = text.trim();
        is_commit(commit).then(|| commit.to_string())
    }

    /// Records that `revision` (a branch or tag) is at `commit`; a commit hash needs no ref.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if is_commit(revision) || self.commit_of(revision).as_deref() == Some(commit) {
            return Ok(());
        }
        let path = self.root.join("refs").join(revision);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        fs::write(&path, commit).map_err(io(&path))
    }

    /// Makes `file` of `commit` a relative symlink to blob `etag` (replacing what was there)
    /// and returns its path.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf> {
        let pointer = self.pointer(commit, file);
        let dir = pointer.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io(dir))?;
        // snapshots/<commit>/<file>: one `..` per path part, and one for the commit folder
        let mut target = PathBuf::new();
        for _ in 0..=file.split('/').count() {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        if fs::symlink_metadata(&pointer).is_ok() {
            fs::remove_file(&pointer).map_err(io(&pointer))?;
        }
        symlink(&target, &pointer).map_err(io(&pointer))?;
        Ok(pointer)
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    // where links need privileges, huggingface_hub copies the blob too
    let blob = link.parent().unwrap_or(Path::new(".")).join(target);
    fs::copy(blob, link).map(|_| ())
}
