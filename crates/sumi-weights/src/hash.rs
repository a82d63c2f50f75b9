//! Model hashes as A1111 shows them: the file's full sha256 and its first 10 hex digits
//! (`Model hash` in infotext, the `[abcdef1234]` in checkpoint titles).

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Result, WeightsError};

/// A file's sha256 (lowercase hex) and A1111's short form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelHash {
    /// 64 lowercase hex digits.
    pub sha256: String,
}

impl ModelHash {
    /// A1111's short hash: the first 10 hex digits of the sha256.
    pub fn short(&self) -> &str {
        &self.sha256[..10]
    }
}

/// Hashes a file, streaming it in 1 MiB blocks; a file of
/// [`crate::hash_cache::MIN_CACHED_BYTES`] or more is looked up in, and recorded to, the hash
/// cache when a front end has set one ([`crate::hash_cache::use_hash_cache`]).
pub fn sha256_file(path: &Path) -> Result<ModelHash> {
    sha256_cached(
        path,
        crate::hash_cache::cache_file(),
        crate::hash_cache::MIN_CACHED_BYTES,
    )
}

/// [`sha256_file`] with the cache file and the size from which it is used given.
pub(crate) fn sha256_cached(
    path: &Path,
    cache: Option<&Path>,
    min_bytes: u64,
) -> Result<ModelHash> {
    use crate::hash_cache::{lookup, store, Key};
    let key = cache.and_then(|c| Some((c, Key::of(path, min_bytes)?)));
    if let Some(sha256) = key.as_ref().and_then(|(c, k)| lookup(c, k)) {
        return Ok(ModelHash { sha256 });
    }
    let h = hash_bytes(path)?;
    if let Some((c, k)) = &key {
        store(c, k, &h.sha256);
    }
    Ok(h)
}

fn hash_bytes(path: &Path) -> Result<ModelHash> {
    let mut f = std::fs::File::open(path).map_err(|e| WeightsError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| WeightsError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(ModelHash {
        sha256: hex::encode(h.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_known_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        std::fs::write(&p, b"abc").unwrap();
        let h = sha256_file(&p).unwrap();
        assert_eq!(
            h.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.short(), "ba7816bf8f");
    }
}
