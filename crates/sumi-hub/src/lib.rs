//! `sumi-hub`: models fetched by Hugging Face Hub id (`org/name`, `org/name/file.safetensors`,
//! `…@revision`) into the Hub's own cache layout ([`cache`]), so that files are shared with
//! diffusers and ComfyUI users; downloads resume ([`Range`]) and are checked against the Hub's
//! sha256 before they are kept; `HF_HUB_OFFLINE` answers from the cache alone ([`config`]).
//!
//! Built on `ureq` rather than the `hf-hub` crate: hf-hub 1.0 neither resumes a download nor
//! checks the sha256, and brings an async stack (tokio, reqwest, the Xet client) Sumi's CLI
//! does not otherwise need.
//!
//! [`Range`]: transfer

pub mod cache;
pub mod choose;
pub mod client;
pub mod config;
pub mod error;
pub mod id;
mod transfer;

use std::path::{Path, PathBuf};

pub use choose::Plan;
pub use config::HubConfig;
pub use error::{HubError, Result};
pub use id::HubId;

use cache::RepoCache;
use client::Client;
use error::io;

/// What a fetch is doing, for a progress display. `id` is the file's Hub id as text.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The file is in the cache already.
    Cached {
        /// The file's id.
        id: &'a str,
        /// Its path in a snapshot.
        path: &'a Path,
        /// Its size in bytes.
        size: u64,
    },
    /// A transfer begins (`from > 0`: resuming a part already on disk).
    Download {
        /// The file's id.
        id: &'a str,
        /// Where from.
        url: &'a str,
        /// The file's size in bytes.
        size: u64,
        /// Bytes already on disk.
        from: u64,
    },
    /// Bytes on disk so far.
    Progress {
        /// The file's id.
        id: &'a str,
        /// Bytes on disk.
        done: u64,
        /// The file's size.
        size: u64,
    },
    /// The transfer stopped and is resumed at `done`.
    Retry {
        /// The file's id.
        id: &'a str,
        /// Bytes on disk.
        done: u64,
        /// Why it stopped.
        reason: &'a str,
    },
    /// Another process holds the file's lock (downloading it); waiting.
    Waiting {
        /// The file's id.
        id: &'a str,
        /// The lock file.
        lock: &'a Path,
    },
    /// The file arrived whole and checked.
    Done {
        /// The file's id.
        id: &'a str,
        /// Its path in a snapshot.
        path: &'a Path,
        /// Its size in bytes.
        size: u64,
    },
}

/// A fetched model.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The file, or the snapshot folder of a diffusers repo.
    pub path: PathBuf,
    /// The commit the files come from.
    pub commit: String,
    /// The repo files it consists of.
    pub files: Vec<String>,
    /// Their size in bytes (the files found in the cache included).
    pub bytes: u64,
}

/// A Hub and its cache.
pub struct Hub {
    client: Client,
}

impl Hub {
    /// The Hub `config` describes.
    pub fn new(config: HubConfig) -> Self {
        Self {
            client: Client::new(config),
        }
    }

    /// The Hub the environment describes ([`HubConfig::from_env`]).
    pub fn from_env() -> Result<Self> {
        Ok(Self::new(HubConfig::from_env()?))
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        self.client.config()
    }

    /// The model `id` names, from the cache or downloaded into it.
    pub fn fetch(&self, id: &HubId, on_event: &mut dyn FnMut(Event<'_>)) -> Result<Fetched> {
        let cache = RepoCache::new(&self.config().cache_dir, id);
        if self.config().offline {
            return offline(&cache, id, self.config(), on_event);
        }
        let (commit, plan) = match &id.file {
            Some(f) => (None, Plan::Single(f.clone())),
            None => {
                let (commit, files) =
                    self.client
                        .repo_files(&id.to_string(), &id.repo, &id.revision)?;
                (Some(commit), choose::plan(&id.to_string(), &files)?)
            }
        };
        // files of a repo asked as a whole come from the commit its file list is from
        let revision = commit.clone().unwrap_or_else(|| id.revision.clone());
        let files = match &plan {
            Plan::Single(f) => vec![f.clone()],
            Plan::Diffusers(fs) => fs.clone(),
        };
        let mut bytes = 0;
        let mut last = None;
        for file in &files {
            let (path, size, c) = self.file(&cache, id, &revision, file, on_event)?;
            bytes += size;
            last = Some((path, c));
        }
        let (path, file_commit) = last.ok_or_else(|| client::bad(&id.to_string(), "no files"))?;
        let commit = commit.unwrap_or(file_commit);
        cache.write_ref(&id.revision, &commit)?;
        let path = match plan {
            Plan::Single(_) => path,
            Plan::Diffusers(_) => cache.snapshot(&commit),
        };
        Ok(Fetched {
            path,
            commit,
            files,
            bytes,
        })
    }

    /// One file: its snapshot path, size and commit.
    fn file(
        &self,
        cache: &RepoCache,
        id: &HubId,
        revision: &str,
        file: &str,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(PathBuf, u64, String)> {
        let fid = id.with_file(file).to_string();
        let meta = self.client.file_meta(&fid, &id.repo, revision, file)?;
        let pointer = cache.pointer(&meta.commit, file);
        let blob = cache.blob(&meta.etag);
        let cached = std::fs::metadata(&pointer).is_ok_and(|m| m.is_file() && m.len() == meta.size);
        if cached || blob.is_file() {
            let path = match cached {
                true => pointer,
                false => cache.link(&meta.commit, file, &meta.etag)?,
            };
            on_event(Event::Cached {
                id: &fid,
                path: &path,
                size: meta.size,
            });
            return Ok((path, meta.size, meta.commit));
        }
        // the bytes of this commit, whatever the revision moves to meanwhile
        let url = self.client.resolve_url(&id.repo, &meta.commit, file);
        transfer::blob(&self.client, cache, &fid, &url, &meta, on_event)?;
        let path = cache.link(&meta.commit, file, &meta.etag)?;
        on_event(Event::Done {
            id: &fid,
            path: &path,
            size: meta.size,
        });
        Ok((path, meta.size, meta.commit))
    }
}

/// `id` from the cache alone.
fn offline(
    cache: &RepoCache,
    id: &HubId,
    config: &HubConfig,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Fetched> {
    let miss = |detail: String| HubError::OfflineMiss {
        id: id.to_string(),
        cache: config.cache_dir.clone(),
        detail,
    };
    let commit = cache.commit_of(&id.revision).ok_or_else(|| {
        miss(format!(
            "no {} for revision `{}`",
            cache.root().join("refs").display(),
            id.revision
        ))
    })?;
    let plan = match &id.file {
        Some(f) => Plan::Single(f.clone()),
        None => choose::plan(&id.to_string(), &snapshot_files(&cache.snapshot(&commit))?)
            .map_err(|e| miss(e.to_string()))?,
    };
    let files = match &plan {
        Plan::Single(f) => vec![f.clone()],
        Plan::Diffusers(fs) => fs.clone(),
    };
    let mut bytes = 0;
    let mut path = cache.snapshot(&commit);
    for file in &files {
        let p = cache.pointer(&commit, file);
        let m = std::fs::metadata(&p)
            .ok()
            .filter(|m| m.is_file())
            .ok_or_else(|| miss(format!("no {}", p.display())))?;
        bytes += m.len();
        on_event(Event::Cached {
            id: &id.with_file(file).to_string(),
            path: &p,
            size: m.len(),
        });
        path = p;
    }
    if let Plan::Diffusers(_) = plan {
        path = cache.snapshot(&commit);
    }
    Ok(Fetched {
        path,
        commit,
        files,
        bytes,
    })
}

/// The repo paths of the files in snapshot folder `dir` (bounded walk).
fn snapshot_files(dir: &Path) -> Result<Vec<String>> {
    const MAX_FILES: usize = 100_000;
    const MAX_DEPTH: usize = 16;
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new(), 0usize)];
    while let Some((d, prefix, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if depth == 0 && e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(&d)(e)),
        };
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue; // not a name the Hub has
            };
            let rel = format!("{prefix}{name}");
            let p = e.path();
            if p.is_dir() && depth + 1 < MAX_DEPTH {
                stack.push((p, format!("{rel}/"), depth + 1));
            } else if p.is_file() && out.len() < MAX_FILES {
                out.push(rel);
            }
        }
    }
    Ok(out)
}
