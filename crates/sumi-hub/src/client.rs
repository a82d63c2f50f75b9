//! The Hub's HTTP API as `huggingface_hub` uses it: `HEAD {endpoint}/{repo}/resolve/{revision}/
//! {file}` for a file's commit (`X-Repo-Commit`), ETag (`X-Linked-Etag` for LFS files, the
//! sha256 of the bytes; else `ETag`) and size (`X-Linked-Size`, else `Content-Length`), following
//! only relative redirects (renamed repos), as the absolute one points at the CDN; `GET` of the
//! same address for the bytes (redirects followed, the token never sent along them); and
//! `GET {endpoint}/api/models/{repo}/revision/{revision}` for a repo's file list (`siblings`).

use std::time::Duration;

use ureq::http::Response;
use ureq::{Agent, Body};

/// A request without a body (`HEAD`, `GET`).
type Request = ureq::RequestBuilder<ureq::typestate::WithoutBody>;

use crate::config::HubConfig;
use crate::error::{HubError, Result};
use crate::id::{is_commit, repo_path};

/// Largest file accepted (the largest checkpoints are tens of GB).
pub const MAX_FILE_BYTES: u64 = 1 << 40;
/// Largest model-info answer read.
const MAX_INFO_BYTES: u64 = 32 << 20;
/// Most files listed for a repo.
const MAX_SIBLINGS: usize = 100_000;
/// Relative redirects followed (a renamed repo).
const MAX_RELATIVE_REDIRECTS: usize = 5;
/// Longest Hub error message quoted.
const MAX_MESSAGE: usize = 200;

/// What the Hub says of one file.
#[derive(Clone, Debug)]
pub struct FileMeta {
    /// The commit the revision is at.
    pub commit: String,
    /// The ETag: 64 hex digits (sha256, LFS files) or 40 (git blob id, small files).
    pub etag: String,
    /// Bytes.
    pub size: u64,
}

/// HTTP access to one Hub.
pub struct Client {
    config: HubConfig,
    /// For metadata: redirects not followed, so the LFS headers of the first answer are seen.
    meta: Agent,
    /// For bytes: redirects followed (to the CDN), `Authorization` dropped on them.
    data: Agent,
}

impl Client {
    /// A client of the Hub `config` describes.
    pub fn new(config: HubConfig) -> Self {
        let read_timeout = config.read_timeout;
        let agent = |redirects: u32| {
            Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(redirects)
                .user_agent(concat!("sumi/", env!("CARGO_PKG_VERSION")))
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_recv_response(Some(Duration::from_secs(120)))
                // a server that stops sending: each read waits this long at most
                .timeout_per_read(Some(read_timeout))
                .build()
                .new_agent()
        };
        Self {
            config,
            meta: agent(0),
            data: agent(10),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{file}`, each part percent-encoded.
    pub fn resolve_url(&self, repo: &str, revision: &str, file: &str) -> String {
        let file: Vec<String> = file.split('/').map(encode).collect();
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.config.endpoint,
            encode(revision),
            file.join("/")
        )
    }

    /// Sends `req` to `url`, with the token when `url` is on the endpoint.
    fn call(&self, req: Request, id: &str, url: &str) -> Result<Response<Body>> {
        let req = match &self.config.token {
            Some(t) if same_origin(url, &self.config.endpoint) => {
                req.header("Authorization", format!("Bearer {t}"))
            }
            _ => req,
        };
        req.call().map_err(|e| HubError::Network {
            id: id.to_string(),
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    /// `GET url`, from byte `from` on when `from > 0`.
    pub fn get(&self, id: &str, url: &str, from: u64) -> Result<Response<Body>> {
        let mut req = self.data.get(url).header("Accept-Encoding", "identity");
        if from > 0 {
            req = req.header("Range", format!("bytes={from}-"));
        }
        self.call(req, id, url)
    }

    /// What the Hub says of `file` of `repo` at `revision`.
    pub fn file_meta(&self, id: &str, repo: &str, revision: &str, file: &str) -> Result<FileMeta> {
        let mut url = self.resolve_url(repo, revision, file);
        for _ in 0..=MAX_RELATIVE_REDIRECTS {
            let req = self.meta.head(&url).header("Accept-Encoding", "identity");
            let resp = self.call(req, id, &url)?;
            let status = resp.status();
            if status.is_redirection() {
                if let Some(loc) = header(&resp, "location").filter(|l| l.starts_with('/')) {
                    url = format!("{}{loc}", origin(&self.config.endpoint));
                    continue;
                }
            } else if !status.is_success() {
                return Err(self.status_error(id, &url, &resp));
            }
            return file_meta(id, &resp);
        }
        Err(bad(id, "too many redirects"))
    }

    /// The commit `revision` of `repo` is at, and the repo's files.
    pub fn repo_files(
        &self,
        id: &str,
        repo: &str,
        revision: &str,
    ) -> Result<(String, Vec<String>)> {
        let url = format!(
            "{}/api/models/{repo}/revision/{}",
            self.config.endpoint,
            encode(revision)
        );
        let resp = self.call(self.data.get(&url), id, &url)?;
        if !resp.status().is_success() {
            return Err(self.status_error(id, &url, &resp));
        }
        let bytes = resp
            .into_body()
            .into_with_config()
            .limit(MAX_INFO_BYTES)
            .read_to_vec()
            .map_err(|e| bad(id, &format!("model info: {e}")))?;
        let info: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad(id, &format!("model info is not JSON: {e}")))?;
        let commit = info["sha"]
            .as_str()
            .filter(|s| is_commit(s))
            .ok_or_else(|| bad(id, "model info has no commit (`sha`)"))?;
        let siblings = info["siblings"]
            .as_array()
            .ok_or_else(|| bad(id, "model info has no file list (`siblings`)"))?;
        if siblings.len() > MAX_SIBLINGS {
            return Err(bad(id, &format!("more than {MAX_SIBLINGS} files")));
        }
        // names that are not plain paths are never chosen, so they are not kept
        let files = siblings
            .iter()
            .filter_map(|s| s["rfilename"].as_str())
            .filter(|f| repo_path(f).is_ok())
            .map(str::to_string)
            .collect();
        Ok((commit.to_string(), files))
    }

    /// The error an unsuccessful answer stands for.
    pub fn status_error(&self, id: &str, url: &str, resp: &Response<Body>) -> HubError {
        let status = resp.status().as_u16();
        let code = header(resp, "x-error-code").unwrap_or_default();
        let message: String = header(resp, "x-error-message")
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_MESSAGE)
            .collect();
        let detail = |sep: &str| match (code.is_empty(), message.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!("{sep}{code}"),
            (true, false) => format!("{sep}{message}"),
            (false, false) => format!("{sep}{code}: {message}"),
        };
        let id = id.to_string();
        match (status, code.as_str()) {
            (_, "RepoNotFound" | "EntryNotFound" | "RevisionNotFound") | (404, _) => {
                HubError::NotFound {
                    id,
                    endpoint: self.config.endpoint.clone(),
                    detail: match detail("") {
                        d if d.is_empty() => format!("HTTP {status}"),
                        d => d,
                    },
                }
            }
            (_, "GatedRepo") | (401 | 403, _) => HubError::Unauthorized {
                id,
                status,
                detail: detail(": "),
            },
            _ => HubError::Status {
                id,
                status,
                url: url.to_string(),
                detail: detail(": "),
            },
        }
    }
}

/// The file's metadata from a `HEAD` answer.
fn file_meta(id: &str, resp: &Response<Body>) -> Result<FileMeta> {
    let commit = header(resp, "x-repo-commit")
        .filter(|c| is_commit(c))
        .ok_or_else(|| bad(id, "no commit hash (X-Repo-Commit)"))?;
    let etag = header(resp, "x-linked-etag")
        .or_else(|| header(resp, "etag"))
        .map(|e| {
            let e = e.strip_prefix("W/").unwrap_or(&e);
            e.trim_matches('"').to_ascii_lowercase()
        })
        .ok_or_else(|| bad(id, "no ETag"))?;
    if !(etag.len() == 64 || etag.len() == 40) || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(
            id,
            &format!("ETag `{etag}` is not a sha256 or a git blob id"),
        ));
    }
    let size = match header(resp, "x-linked-size") {
        Some(s) => Some(s),
        // a redirect's own length is not the file's
        None if resp.status().is_success() => header(resp, "content-length"),
        None => None,
    };
    let size = size
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| bad(id, "no file size (X-Linked-Size or Content-Length)"))?;
    if size > MAX_FILE_BYTES {
        return Err(bad(
            id,
            &format!("a file of {size} bytes is over the {MAX_FILE_BYTES}-byte limit"),
        ));
    }
    Ok(FileMeta { commit, etag, size })
}

/// A [`HubError::BadReply`].
pub fn bad(id: &str, reason: &str) -> HubError {
    HubError::BadReply {
        id: id.to_string(),
        reason: reason.to_string(),
    }
}

/// Header `name`'s value as text.
pub fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

/// `scheme://host[:port]` of `url`.
fn origin(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].find('/') {
        Some(i) => &url[..start + i],
        None => url,
    }
}

/// Whether `url` is on `endpoint`'s origin.
fn same_origin(url: &str, endpoint: &str) -> bool {
    origin(url).eq_ignore_ascii_case(origin(endpoint))
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_encoding() {
        assert_eq!(origin("https://h.co/a/b"), "https://h.co");
        assert_eq!(origin("http://127.0.0.1:9"), "http://127.0.0.1:9");
        assert!(same_origin("https://h.co/x", "https://h.co"));
        assert!(!same_origin("https://cdn.h.co/x", "https://h.co"));
        assert_eq!(encode("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(encode("a (1).bin"), "a%20%281%29.bin");
    }
}
