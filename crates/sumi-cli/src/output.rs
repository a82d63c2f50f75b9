//! Where txt2img/img2img write their images: PNG, or JPEG/WebP when `--output` ends in
//! `.jpg`/`.jpeg`/`.webp` (A1111's `samples_format`); another extension is refused rather than
//! a PNG written under a wrong name. Each file is claimed atomically: the bytes go to a
//! private temporary file in the target folder, which is then hard-linked to its name (a link
//! never replaces an existing file). A default name (`outputs/00042.png`) taken meanwhile by
//! another run in the same folder moves on to the next free number instead of failing, so two
//! runs never lose images to each other. Files are created with mode 0666 less the umask, as
//! any other program's; a rename-based temporary file would have left them 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use sumi_pipeline::image_file::OutputFormat;
use sumi_pipeline::PipelineError;

/// Most numbers tried past the planned one before a write gives up.
const MAX_CLAIMS: u64 = 100_000;

/// The files of one run: the paths given, or numbers in a folder.
pub struct Outputs {
    given: Vec<PathBuf>,
    dir: PathBuf,
    next: u64,
    written: usize,
    format: OutputFormat,
}

impl Outputs {
    /// The files a run of `n` images writes: `--output` as given for one image,
    /// `stem-0001.png`… for several (none of which may exist yet); by default the numbers
    /// after the highest in ./outputs/, claimed as each image is written. The format follows
    /// `--output`'s extension (PNG by default); an unknown extension is an error. `--output`
    /// into a folder that does not exist is an error unless `mkdir` (a mistyped folder would
    /// otherwise be created silently); ./outputs/ is created when needed, as A1111 creates its.
    pub fn plan(output: Option<&Path>, n: usize, mkdir: bool) -> Result<Self> {
        let dir = PathBuf::from("outputs");
        let format = match output {
            None => OutputFormat::Png,
            Some(p) => OutputFormat::from_path(p).ok_or_else(|| {
                anyhow::anyhow!(
                    "--output {}: unknown image format; the name must end in .png, .jpg, .jpeg or .webp",
                    p.display()
                )
            })?,
        };
        let given: Vec<PathBuf> = match output {
            Some(p) if n == 1 => vec![p.to_path_buf()],
            Some(p) => {
                let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
                let ext = p.extension().and_then(|s| s.to_str()).unwrap_or("png");
                (1..=n)
                    .map(|i| p.with_file_name(format!("{stem}-{i:04}.{ext}")))
                    .collect()
            }
            None => Vec::new(),
        };
        if let Some(dir) = output
            .and_then(Path::parent)
            .filter(|d| !d.as_os_str().is_empty() && !mkdir)
        {
            if !dir.is_dir() {
                bail!(
                    "--output {}: the folder {} does not exist; add --mkdir to create it",
                    output
                        .map(Path::display)
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                    dir.display()
                );
            }
        }
        for p in &given {
            if p.symlink_metadata().is_ok() {
                bail!("{} already exists; choose another --output", p.display());
            }
        }
        Ok(Self {
            next: if given.is_empty() {
                next_number(&dir)
            } else {
                0
            },
            given,
            dir,
            written: 0,
            format,
        })
    }

    /// The format the files are written in.
    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// Writes the next image's `bytes` (encoded in [`Self::format`]) and returns its path.
    pub fn write(&mut self, bytes: &[u8]) -> sumi_pipeline::Result<PathBuf> {
        if let Some(p) = self.given.get(self.written) {
            create_dir(p)?;
            match claim(p, bytes) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(PipelineError::OutputExists { path: p.clone() })
                }
                Err(e) => return Err(write_err(p, e)),
            }
            self.written += 1;
            return Ok(p.clone());
        }
        let first = self.next;
        loop {
            let p = self.dir.join(format!("{:05}.png", self.next));
            create_dir(&p)?;
            self.next += 1;
            match claim(&p, bytes) {
                Ok(()) => {
                    self.written += 1;
                    return Ok(p);
                }
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

fn write_err(path: &Path, e: std::io::Error) -> PipelineError {
    PipelineError::PngWrite {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn create_dir(path: &Path) -> sumi_pipeline::Result<()> {
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
fn claim(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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
