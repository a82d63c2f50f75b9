//! Writing pictures to files without ever replacing one: each file is claimed atomically (the
//! bytes go to a private temporary file in the target folder, which is then hard-linked to its
//! name; a link never replaces an existing file), with mode 0666 less the umask as any other
//! program's files. Numbered names (`00042.png`) taken meanwhile by another writer in the same
//! folder move on to the next free number, so two writers never lose images to each other.
//! Used by the CLI's outputs and the server's saved images.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{PipelineError, Result};

/// Most numbers tried past the planned one before a write gives up.
const MAX_CLAIMS: u64 = 100_000;

/// A folder of numbered pictures (`00000.png`, `00001.png`, …), numbered on from the highest
/// number already there.
#[derive(Debug, Clone)]
pub struct NumberedFolder {
    dir: PathBuf,
    next: u64,
}

impl NumberedFolder {
    /// `dir`, numbered after the highest 5-digit number starting a name in it (0 when none, or
    /// when it does not exist yet).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            next: next_number(dir),
        }
    }

    /// `dir`, not read yet (for a run that writes named files only).
    pub fn unread(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            next: 0,
        }
    }

    /// Writes `bytes` as the next free `NNNNN.png` (the folder made when missing) and returns
    /// its path.
    pub fn write(&mut self, bytes: &[u8]) -> Result<PathBuf> {
        let first = self.next;
        loop {
            let p = self.dir.join(format!("{:05}.png", self.next));
            create_dir(&p)?;
            self.next += 1;
            match claim(&p, bytes) {
                Ok(()) => return Ok(p),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if self.next - first >= MAX_CLAIMS {
                        return Err(PipelineError::OutputExists { path: p });
                    }
                }
                Err(e) => return Err(write_err(&p, e)),
            }
        }
    }
}

/// One more than the highest 5-digit number starting a name in `dir` (0 when there is none).
fn next_number(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|s| s.get(..5)?.parse::<u64>().ok())
        })
        .max()
        .map_or(0, |m| m + 1)
}

/// A write error naming `path`.
pub fn write_err(path: &Path, e: std::io::Error) -> PipelineError {
    PipelineError::PngWrite {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Makes the folder of `path` when it is missing.
pub fn create_dir(path: &Path) -> Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| PipelineError::OutputDir {
            path: dir.to_path_buf(),
            source: e,
        }),
        None => Ok(()),
    }
}

/// Puts `bytes` at `path` whole or not at all, failing with `AlreadyExists` when the name is
/// taken: a temporary file beside it (created 0666 less the umask), synced, then hard-linked.
/// Where the file system has no hard links, the name itself is created exclusively.
pub fn claim(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if path.symlink_metadata().is_ok() {
        return Err(std::io::ErrorKind::AlreadyExists.into());
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = path.with_file_name(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let linked = write_exclusive(&tmp, bytes).and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists && tmp_dir_ok(path) => {
            write_exclusive(path, bytes)
        }
        r => r,
    }
}

/// Whether the folder of `path` exists (a failed hard link there is the file system's lack
/// of links, not a missing folder).
fn tmp_dir_ok(path: &Path) -> bool {
    path.parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .is_some_and(Path::is_dir)
}

/// Creates `path` (it must not exist) holding `bytes`, synced; removed again on failure.
fn write_exclusive(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let r = f.write_all(bytes).and_then(|()| f.sync_all());
    if r.is_err() {
        let _ = std::fs::remove_file(path);
    }
    r
}
