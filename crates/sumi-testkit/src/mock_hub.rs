//! A Hugging Face Hub on 127.0.0.1 for the tests of `sumi-hub` and the CLI: the endpoints Sumi
//! uses, answered as huggingface.co answers them.
//! - `HEAD/GET /{org}/{name}/resolve/{revision}/{path}`: `X-Repo-Commit`; an LFS file (weights:
//!   `.safetensors`, `.ckpt`, `.bin`) answers `302` to `/cdn/{sha256}` with `X-Linked-Etag`
//!   (its sha256) and `X-Linked-Size`, a small file answers `200` with a 40-digit `ETag`;
//! - `GET /cdn/{sha256}`: the bytes, with `Range: bytes=N-` (`206`, `Content-Range`);
//! - `GET /api/models/{org}/{name}/revision/{revision}`: `sha` and `siblings`;
//! - `404` with `X-Error-Code: RepoNotFound` / `EntryNotFound` / `RevisionNotFound`, `401`
//!   `GatedRepo` for a repo with a token when the request lacks `Authorization: Bearer` with it.
//!
//! Faults on demand: a transfer cut after N bytes (the connection closed mid-body, or kept open
//! with nothing more sent: a stalled server), a corrupted byte, a range request answered `200` with the whole file, a wrong `X-Linked-Size`. Every request is recorded (method,
//! path, headers) for the tests to check what was asked.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

/// A repo of the mock Hub.
#[derive(Clone, Debug, Default)]
pub struct MockRepo {
    /// Revision (`main`, tags, branches) → commit.
    pub revisions: BTreeMap<String, String>,
    /// Commit → files (repo path → bytes).
    pub commits: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Requests must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl MockRepo {
    /// A repo whose `main` is commit `commit` holding `files`.
    pub fn new(commit: &str, files: &[(&str, Vec<u8>)]) -> Self {
        let mut r = Self::default();
        r.add_commit("main", commit, files);
        r
    }

    /// Adds `commit` holding `files`, with `revision` pointing at it.
    pub fn add_commit(&mut self, revision: &str, commit: &str, files: &[(&str, Vec<u8>)]) {
        self.revisions.insert(revision.into(), commit.into());
        let files = files
            .iter()
            .map(|(p, b)| (p.to_string(), b.clone()))
            .collect();
        self.commits.insert(commit.into(), files);
    }
}

/// A request the mock received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `GET`, `HEAD`.
    pub method: String,
    /// The path (percent-encoded as sent).
    pub path: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// Header `name`'s value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Faults and repos; what was asked.
#[derive(Debug, Default)]
pub struct MockState {
    /// Repo id (`org/name`) → repo.
    pub repos: BTreeMap<String, MockRepo>,
    /// The next this many `/cdn/` transfers stop after `cut_after` bytes of their body.
    pub cuts: usize,
    /// Bytes sent before a cut.
    pub cut_after: usize,
    /// A cut keeps the connection open and sends nothing more (until the client closes it, or
    /// [`STALL_LIMIT`]) instead of closing it.
    pub stall: bool,
    /// `/cdn/` bodies have their first byte changed.
    pub corrupt: bool,
    /// Range requests are answered `200` with the whole file.
    pub ignore_range: bool,
    /// `X-Linked-Size` announces one byte more than the file has.
    pub lie_size: bool,
    /// Every request, in order.
    pub seen: Vec<Seen>,
}

/// The longest a stalled transfer ([`MockState::stall`]) keeps its connection open.
pub const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The mock Hub, serving until the process ends.
pub struct MockHub {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<Mutex<MockState>>,
}

impl MockHub {
    /// Starts a mock Hub on a free port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let state = Arc::new(Mutex::new(MockState::default()));
        let s = state.clone();
        let base = url.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (s, base) = (s.clone(), base.clone());
                std::thread::spawn(move || serve(stream, &s, &base));
            }
        });
        Self { url, state }
    }

    /// The state, to add repos, set faults and read what was asked.
    pub fn state(&self) -> MutexGuard<'_, MockState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds repo `id`.
    pub fn add(&self, id: &str, repo: MockRepo) {
        self.state().repos.insert(id.into(), repo);
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }
}

/// The sha256 of `bytes`, in hex (an LFS file's ETag).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `n` deterministic bytes from `seed`.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

fn is_lfs(path: &str) -> bool {
    [".safetensors", ".ckpt", ".bin"]
        .iter()
        .any(|e| path.ends_with(e))
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Close the connection after this many body bytes.
    cut: Option<usize>,
    /// After the cut, keep the connection open, silent.
    stall: bool,
}

impl Reply {
    fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut: None,
            stall: false,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn error(status: u16, code: &str) -> Self {
        Self::new(status).header("X-Error-Code", code)
    }
}

fn serve(stream: TcpStream, state: &Mutex<MockState>, base: &str) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = match (parts.next(), parts.next()) {
        (Some(m), Some(p)) => (m.to_string(), p.to_string()),
        _ => return,
    };
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let seen = Seen {
        method: method.clone(),
        path: path.clone(),
        headers,
    };
    let reply = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.seen.push(seen.clone());
        answer(&mut st, &seen, base)
    };
    let _ = write_reply(stream, &method, reply);
}

fn write_reply(mut stream: TcpStream, method: &str, r: Reply) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", r.status);
    if !r.headers.iter().any(|(n, _)| n == "Content-Length") {
        head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    }
    for (n, v) in &r.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if method != "HEAD" {
        let n = r.cut.unwrap_or(r.body.len()).min(r.body.len());
        stream.write_all(&r.body[..n])?;
        if r.stall && r.cut.is_some() {
            // silent until the client gives up and closes its end
            stream.flush()?;
            stream.set_read_timeout(Some(STALL_LIMIT))?;
            let _ = stream.read(&mut [0u8; 1]);
        }
    }
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}

fn answer(st: &mut MockState, req: &Seen, base: &str) -> Reply {
    let path = req.path.clone();
    if let Some(sha) = path.strip_prefix("/cdn/") {
        let found = st
            .repos
            .values()
            .flat_map(|r| r.commits.values())
            .flat_map(|c| c.values())
            .find(|b| sha256_hex(b) == sha)
            .cloned();
        return match found {
            Some(b) => content(st, req, b),
            None => Reply::new(404),
        };
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        if parts.len() != 4 || parts[2] != "revision" {
            return Reply::new(404);
        }
        let id = format!("{}/{}", parts[0], parts[1]);
        let (repo, commit) = match lookup(st, &id, &decode(parts[3]), req) {
            Ok(x) => x,
            Err(r) => return r,
        };
        let files = &repo.commits[&commit];
        let siblings: Vec<_> = files
            .keys()
            .map(|f| serde_json::json!({ "rfilename": f }))
            .collect();
        let body = serde_json::json!({ "id": id, "sha": commit, "siblings": siblings });
        let mut r = Reply::new(200).header("Content-Type", "application/json");
        r.body = body.to_string().into_bytes();
        return r;
    }
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if parts.len() != 5 || parts[2] != "resolve" {
        return Reply::new(404);
    }
    let id = format!("{}/{}", parts[0], parts[1]);
    let (repo, commit) = match lookup(st, &id, &decode(parts[3]), req) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let file = decode(parts[4]);
    let Some(b) = repo.commits[&commit].get(&file).cloned() else {
        return Reply::error(404, "EntryNotFound");
    };
    if is_lfs(&file) {
        let sha = sha256_hex(&b);
        return Reply::new(302)
            .header("Location", format!("{base}/cdn/{sha}"))
            .header("X-Repo-Commit", commit)
            .header("X-Linked-Etag", format!("\"{sha}\""))
            .header(
                "X-Linked-Size",
                (b.len() + usize::from(st.lie_size)).to_string(),
            )
            .header("ETag", "\"not-the-sha\"");
    }
    let etag = sha256_hex(&b)[..40].to_string();
    content(st, req, b)
        .header("X-Repo-Commit", commit)
        .header("ETag", format!("\"{etag}\""))
}

/// The repo and commit `revision` names, or the error reply.
fn lookup(
    st: &MockState,
    id: &str,
    revision: &str,
    req: &Seen,
) -> Result<(MockRepo, String), Reply> {
    let repo = st
        .repos
        .get(id)
        .ok_or_else(|| Reply::error(401, "RepoNotFound"))?;
    if let Some(t) = &repo.token {
        if req.header("authorization") != Some(&format!("Bearer {t}")) {
            return Err(Reply::error(401, "GatedRepo")
                .header("X-Error-Message", "Access to this repo is restricted."));
        }
    }
    let commit = match repo.revisions.get(revision) {
        Some(c) => c.clone(),
        None if repo.commits.contains_key(revision) => revision.to_string(),
        None => return Err(Reply::error(404, "RevisionNotFound")),
    };
    Ok((repo.clone(), commit))
}

/// `bytes` as a `200`, or a `206` from a `Range: bytes=N-`, with the faults applied.
fn content(st: &mut MockState, req: &Seen, mut bytes: Vec<u8>) -> Reply {
    let is_cdn = req.path.starts_with("/cdn/");
    if is_cdn && st.corrupt && !bytes.is_empty() {
        bytes[0] ^= 0xff;
    }
    let size = bytes.len();
    let from = req
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let mut r = match from {
        Some(n) if !st.ignore_range && n < size => {
            let mut r =
                Reply::new(206).header("Content-Range", format!("bytes {n}-{}/{size}", size - 1));
            r.body = bytes[n..].to_vec();
            r
        }
        Some(n) if !st.ignore_range => {
            return Reply::new(416).header("Content-Range", format!("bytes */{n}"));
        }
        _ => {
            let mut r = Reply::new(200);
            r.body = bytes;
            r
        }
    };
    if is_cdn && req.method == "GET" && st.cuts > 0 {
        st.cuts -= 1;
        r.cut = Some(st.cut_after);
        r.stall = st.stall;
    }
    r
}

/// Undoes percent-encoding.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
