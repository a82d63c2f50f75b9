//! One blob's download: into `blobs/<etag>.incomplete`, resumed with `Range: bytes=N-` from the
//! part already there (a `200` answer to a range request restarts from byte 0, a `416` drops the
//! part), retried from where it stopped a few times, then checked — the sha256 of the bytes
//! against a 64-digit ETag (the LFS object id), the length always — and only then renamed to
//! `blobs/<etag>`. A read that waits longer than the read timeout
//! ([`crate::HubConfig::read_timeout`]) stops the transfer as a closed connection does. A
//! mismatch deletes the part: nothing is ever kept under the final name that the Hub did not
//! vouch for. Small non-LFS files (40-digit git blob ETags) are checked by length. The blob's lock file (as `huggingface_hub`'s) keeps two processes from writing it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cache::RepoCache;
use crate::client::{bad, header, Client, FileMeta};
use crate::error::{io, HubError, Result};
use crate::Event;

/// Tries of one transfer (the first and the resumes after it stopped).
const MAX_TRIES: usize = 3;
/// Read and hash buffer.
const CHUNK: usize = 1 << 20;

/// Downloads the blob `meta` describes from `url` into `cache` and returns its path.
pub fn blob(
    client: &Client,
    cache: &RepoCache,
    id: &str,
    url: &str,
    meta: &FileMeta,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<PathBuf> {
    let final_path = cache.blob(&meta.etag);
    let part = cache.incomplete(&meta.etag);
    for dir in [part.parent(), cache.lock(&meta.etag).parent()]
        .into_iter()
        .flatten()
    {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let lock_path = cache.lock(&meta.etag);
    let lock = File::create(&lock_path).map_err(io(&lock_path))?;
    if lock.try_lock().is_err() {
        on_event(Event::Waiting {
            id,
            lock: &lock_path,
        });
        lock.lock().map_err(io(&lock_path))?;
    }
    // another process may have finished it meanwhile
    if final_path.is_file() {
        return Ok(final_path);
    }
    let mut tries = 0;
    loop {
        tries += 1;
        match fetch(client, id, url, &part, meta, on_event) {
            Ok(()) => break,
            Err(HubError::Interrupted { got, reason, .. }) if tries < MAX_TRIES => {
                on_event(Event::Retry {
                    id,
                    done: got,
                    reason: &reason,
                })
            }
            Err(e) => return Err(e),
        }
    }
    verify(id, &part, meta)?;
    fs::rename(&part, &final_path).map_err(io(&final_path))?;
    Ok(final_path)
}

/// Brings `part` to `meta.size` bytes from `url`.
fn fetch(
    client: &Client,
    id: &str,
    url: &str,
    part: &Path,
    meta: &FileMeta,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<()> {
    let size = meta.size;
    let mut from = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if from > size {
        remove(part)?;
        from = 0;
    }
    if from == size {
        return Ok(());
    }
    let resp = client.get(id, url, from)?;
    let status = resp.status().as_u16();
    match status {
        206 if from > 0 => {
            let range = header(&resp, "content-range").unwrap_or_default();
            let want = format!("bytes {from}-{}/{size}", size - 1);
            if range != want {
                return Err(bad(
                    id,
                    &format!("asked for bytes {from}- of {size}, got `Content-Range: {range}`"),
                ));
            }
        }
        // the server ignored the range (or none was asked): the whole file comes
        200 => from = 0,
        416 => {
            remove(part)?;
            return Err(interrupted(
                id,
                0,
                size,
                "the server refused to resume; starting over",
            ));
        }
        _ => return Err(client.status_error(id, url, &resp)),
    }
    let expected = size - from;
    if let Some(len) = header(&resp, "content-length") {
        if len.parse::<u64>().ok() != Some(expected) {
            return Err(bad(
                id,
                &format!(
                    "Content-Length {len} where {expected} bytes were due (X-Linked-Size {size})"
                ),
            ));
        }
    }
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(from == 0)
        .append(from > 0)
        .open(part)
        .map_err(io(part))?;
    on_event(Event::Download {
        id,
        url,
        size,
        from,
    });
    let mut body = resp
        .into_body()
        .into_with_config()
        .limit(expected + 1)
        .reader();
    let mut buf = vec![0u8; CHUNK];
    let mut done = from;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                file.flush().map_err(io(part))?;
                let reason = match ureq::Error::from(e) {
                    ureq::Error::Timeout(_) => stalled(client),
                    e => e.to_string(),
                };
                return Err(interrupted(id, done, size, &reason));
            }
        };
        if done + n as u64 > size {
            drop(file);
            remove(part)?;
            return Err(bad(
                id,
                &format!("more than the announced {size} bytes arrived"),
            ));
        }
        file.write_all(&buf[..n]).map_err(io(part))?;
        done += n as u64;
        on_event(Event::Progress { id, done, size });
    }
    file.flush().map_err(io(part))?;
    if done < size {
        return Err(interrupted(id, done, size, "the connection closed early"));
    }
    Ok(())
}

/// Checks the finished `part` against `meta`; deletes it when it does not match.
fn verify(id: &str, part: &Path, meta: &FileMeta) -> Result<()> {
    let len = fs::metadata(part).map_err(io(part))?.len();
    if len != meta.size {
        remove(part)?;
        return Err(bad(
            id,
            &format!("{len} bytes arrived, {} announced", meta.size),
        ));
    }
    if meta.etag.len() != 64 {
        return Ok(());
    }
    let mut f = File::open(part).map_err(io(part))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(io(part))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual = hex::encode(hasher.finalize());
    if actual != meta.etag {
        remove(part)?;
        return Err(HubError::Checksum {
            id: id.to_string(),
            expected: meta.etag.clone(),
            actual,
        });
    }
    Ok(())
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// Why a transfer that timed out stopped.
fn stalled(client: &Client) -> String {
    format!(
        "nothing arrived for {:.1} s; HF_HUB_DOWNLOAD_TIMEOUT sets how long to wait",
        client.config().read_timeout.as_secs_f64()
    )
}

fn interrupted(id: &str, got: u64, size: u64, reason: &str) -> HubError {
    HubError::Interrupted {
        id: id.to_string(),
        got,
        size,
        reason: reason.to_string(),
    }
}
