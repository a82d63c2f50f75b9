//! Where txt2img/img2img write their images: PNG, or JPEG/WebP when `--output` ends in
//! `.jpg`/`.jpeg`/`.webp` (A1111's `samples_format`); another extension is refused rather than
//! a PNG written under a wrong name. Each file is claimed atomically: the bytes go to a
//! private temporary file in the target folder, which is then hard-linked to its name (a link
//! never replaces an existing file). A default name (`outputs/00042.png`) taken meanwhile by
//! another run in the same folder moves on to the next free number instead of failing, so two
//! runs never lose images to each other. Files are created with mode 0666 less the umask, as
//! any other program's; a rename-based temporary file would have left them 0600.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use sumi_pipeline::image_file::OutputFormat;
use sumi_pipeline::output_files::{claim, create_dir, write_err, NumberedFolder};
use sumi_pipeline::PipelineError;

/// The files of one run: the paths given, or numbers in a folder.
pub struct Outputs {
    given: Vec<PathBuf>,
    numbered: NumberedFolder,
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
            // the folder is read only when numbers are used
            numbered: if given.is_empty() {
                NumberedFolder::new(&dir)
            } else {
                NumberedFolder::unread(&dir)
            },
            given,
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
        let p = self.numbered.write(bytes)?;
        self.written += 1;
        Ok(p)
    }
}
