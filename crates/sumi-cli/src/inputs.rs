//! Input paths checked before anything opens them: opening a FIFO blocks until someone writes
//! to it and reading a device such as `/dev/zero` never ends, so every file the CLI reads must
//! be a regular file (symlinks followed), and the folders it walks (a diffusers model, an
//! embeddings folder) may hold only regular files and folders. Paths that do not exist are
//! left to the reader, whose error names them.

use std::path::Path;

use anyhow::{bail, Result};

/// Largest file `png-info` and `--from-png` read whole (A1111's own PNGs are a few MiB).
pub const MAX_PNG_BYTES: u64 = 256 << 20;

/// Deepest folder walked by [`folder`] (a diffusers model is two levels deep).
const MAX_DEPTH: usize = 8;

/// Most entries [`folder`] looks at before it refuses the folder.
const MAX_ENTRIES: usize = 100_000;

/// What kind of non-regular file `m` is, for the message.
fn kind(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// `path` (given as `what`, e.g. `--vae`) must be a regular file if it exists.
pub fn file(path: &Path, what: &str) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => bail!(
            "{what} {}: {}, refused (only regular files are read)",
            path.display(),
            kind(&m)
        ),
        _ => Ok(()),
    }
}

/// [`file`], and at most `max` bytes long.
pub fn bounded_file(path: &Path, what: &str, max: u64) -> Result<()> {
    file(path, what)?;
    match std::fs::metadata(path) {
        Ok(m) if m.len() > max => bail!(
            "{what} {}: {} bytes, more than the {max}-byte limit",
            path.display(),
            m.len()
        ),
        _ => Ok(()),
    }
}

/// A checkpoint: a regular file (and its sibling `.yaml`, if any, too) or a folder of regular
/// files (a diffusers model).
pub fn model(path: &Path, what: &str) -> Result<()> {
    if path.is_dir() {
        return folder(path, what);
    }
    file(path, what)?;
    file(&path.with_extension("yaml"), &format!("{what}'s config"))
}

/// Every entry under folder `path` (symlinks followed, [`MAX_DEPTH`] levels, at most
/// [`MAX_ENTRIES`] entries) is a regular file or a folder.
pub fn folder(path: &Path, what: &str) -> Result<()> {
    let mut seen = 0usize;
    let mut stack = vec![(path.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue; // unreadable or absent: the reader reports it if it needs it
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                bail!(
                    "{what} {}: more than {MAX_ENTRIES} entries, refused",
                    path.display()
                );
            }
            let p = e.path();
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() && depth + 1 < MAX_DEPTH => stack.push((p, depth + 1)),
                Ok(m) if m.is_dir() || m.is_file() => {}
                Ok(m) => bail!(
                    "{what} {}: {} is {}, refused (only regular files are read)",
                    path.display(),
                    p.display(),
                    kind(&m)
                ),
                Err(_) => {} // a dangling link: nothing to open
            }
        }
    }
    Ok(())
}
