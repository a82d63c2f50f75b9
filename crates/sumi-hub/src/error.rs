//! The error type of this crate: every variant names the Hub id (and file) it is about.

use std::path::PathBuf;

/// What can go wrong fetching a model from the Hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The string is not a well-formed Hub id.
    #[error("`{id}` is not a Hub id: {reason}")]
    BadId {
        /// The string given.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An environment variable (`HF_ENDPOINT`, `HF_HUB_CACHE`, …) holds something unusable.
    #[error("{var}: {reason}")]
    Config {
        /// The variable.
        var: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The repo, revision or file does not exist (or is private and no token was given).
    #[error("{id}: not found on the Hub at {endpoint} ({detail})")]
    NotFound {
        /// The id (with the file, if any).
        id: String,
        /// The Hub asked.
        endpoint: String,
        /// The Hub's own word (`RepoNotFound`, `EntryNotFound`, …) or the HTTP status.
        detail: String,
    },
    /// The Hub refused access: a gated or private repo.
    #[error("{id}: the Hub refused access (HTTP {status}{detail}); a gated or private repo needs HF_TOKEN (and its terms accepted on the Hub)")]
    Unauthorized {
        /// The id.
        id: String,
        /// The HTTP status.
        status: u16,
        /// The Hub's message, if any, with a leading `: `.
        detail: String,
    },
    /// Any other HTTP status.
    #[error("{id}: the Hub answered HTTP {status} for {url}{detail}")]
    Status {
        /// The id.
        id: String,
        /// The HTTP status.
        status: u16,
        /// The address asked.
        url: String,
        /// The Hub's message, if any, with a leading `: `.
        detail: String,
    },
    /// The Hub could not be reached.
    #[error("{id}: cannot reach {url}: {reason} (HF_HUB_OFFLINE=1 uses the Hub cache only)")]
    Network {
        /// The id.
        id: String,
        /// The address asked.
        url: String,
        /// The transport's error.
        reason: String,
    },
    /// `HF_HUB_OFFLINE` is set and the cache does not hold what was asked for.
    #[error("{id}: not in the Hub cache {cache} and HF_HUB_OFFLINE is set ({detail}); unset HF_HUB_OFFLINE to download it")]
    OfflineMiss {
        /// The id.
        id: String,
        /// The cache folder looked in.
        cache: PathBuf,
        /// What was missing.
        detail: String,
    },
    /// The transfer stopped before the whole file arrived; the part is kept for a resume.
    #[error(
        "{id}: the download stopped after {got} of {size} bytes ({reason}); run again to resume it"
    )]
    Interrupted {
        /// The id with its file.
        id: String,
        /// Bytes on disk.
        got: u64,
        /// The file's size.
        size: u64,
        /// Why it stopped.
        reason: String,
    },
    /// The downloaded bytes do not hash to the Hub's sha256; nothing was kept.
    #[error("{id}: the downloaded file's sha256 is {actual}, the Hub's is {expected}; the file was deleted, nothing kept")]
    Checksum {
        /// The id with its file.
        id: String,
        /// The Hub's sha256 (its LFS ETag).
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// The Hub's answer is unusable (a header missing or malformed, sizes that disagree).
    #[error("{id}: unusable answer from the Hub: {reason}")]
    BadReply {
        /// The id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// `org/name` holds several checkpoint files and none was named.
    #[error("{id} holds several checkpoint files; name one, e.g. {id}/{}: {}", files[0], files.join(", "))]
    Ambiguous {
        /// The repo id.
        id: String,
        /// The checkpoint files at its root.
        files: Vec<String>,
    },
    /// `org/name` holds no checkpoint Sumi can use.
    #[error("{id}: no model in the repo ({reason})")]
    NoModel {
        /// The repo id.
        id: String,
        /// What was looked for.
        reason: String,
    },
    /// A file or folder of the cache could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
}

/// This crate's result.
pub type Result<T> = std::result::Result<T, HubError>;

/// `source` at `path` as a [`HubError::Io`].
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HubError {
    let path = path.into();
    move |source| HubError::Io { path, source }
}
