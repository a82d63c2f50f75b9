//! A1111's hash cache (`modules/hashes.py`, `sha256_from_cache`): a large file's sha256 kept
//! with the file's size and modification time in a JSON file, so that a checkpoint is read
//! through once for its `Model hash`, not on every run (a 2.1 GB checkpoint took 1.6–1.8 s
//! of each CLI run here). A1111 keeps it in its `cache` folder and takes it while the file's
//! mtime is not newer than the one recorded; here size and mtime must both be the recorded
//! ones.
//!
//! The cache is off until a front end names its file ([`use_hash_cache`]). Files under
//! [`MIN_CACHED_BYTES`] are hashed every time (milliseconds), so that test fixtures and small
//! embeddings never fill it. The file is another program's input: one that cannot be read,
//! is larger than [`MAX_CACHE_BYTES`] or does not parse counts as empty and is replaced at
//! the next store; entries whose file is gone are dropped at each store. A store that fails
//! (read-only folder) leaves the hash uncached: the next run computes it again.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

/// Files smaller than this are not cached (hashing 32 MiB takes about 15 ms).
pub const MIN_CACHED_BYTES: u64 = 32 << 20;
/// A cache file larger than this is not read (counts as empty).
pub const MAX_CACHE_BYTES: u64 = 16 << 20;
/// Entries kept at most; beyond it the store drops entries in path order.
const MAX_ENTRIES: usize = 4096;
/// The value of the file's `format` key.
const FORMAT: &str = "sumi-hash-cache-1";

static CACHE_FILE: OnceLock<PathBuf> = OnceLock::new();
/// Serialises this process's read-modify-write of the cache file.
static STORE: Mutex<()> = Mutex::new(());

/// Makes [`crate::sha256_file`] keep the hashes of files of [`MIN_CACHED_BYTES`] or more in
/// `file` (created with its folder when first needed). Once per process; false when a cache
/// file was set already.
pub fn use_hash_cache(file: PathBuf) -> bool {
    CACHE_FILE.set(file).is_ok()
}

/// The cache file in force, if any.
pub(crate) fn cache_file() -> Option<&'static Path> {
    CACHE_FILE.get().map(PathBuf::as_path)
}

#[derive(Serialize, Deserialize, Default)]
struct CacheFile {
    format: String,
    files: BTreeMap<String, Entry>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
struct Entry {
    size: u64,
    mtime_ns: u64,
    sha256: String,
}

/// What identifies a file's content here: its canonical path, size and mtime; `None` for a
/// file that cannot be stat'ed, is small, or has an mtime before 1970.
pub(crate) struct Key {
    path: String,
    size: u64,
    mtime_ns: u64,
}

impl Key {
    pub(crate) fn of(path: &Path, min_bytes: u64) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() || meta.len() < min_bytes {
            return None;
        }
        let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
        Some(Self {
            path: std::fs::canonicalize(path).ok()?.to_str()?.to_string(),
            size: meta.len(),
            mtime_ns: u64::try_from(mtime.as_nanos()).ok()?,
        })
    }
}

fn read(cache: &Path) -> CacheFile {
    let parsed = std::fs::File::open(cache).ok().and_then(|f| {
        let mut text = String::new();
        f.take(MAX_CACHE_BYTES + 1).read_to_string(&mut text).ok()?;
        if text.len() as u64 > MAX_CACHE_BYTES {
            return None;
        }
        serde_json::from_str::<CacheFile>(&text).ok()
    });
    match parsed {
        Some(c) if c.format == FORMAT => c,
        _ => CacheFile::default(),
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The recorded sha256 of `key`'s file, when size and mtime match the record.
pub(crate) fn lookup(cache: &Path, key: &Key) -> Option<String> {
    let e = read(cache).files.remove(&key.path)?;
    (e.size == key.size && e.mtime_ns == key.mtime_ns && is_sha256(&e.sha256)).then_some(e.sha256)
}

/// Records `sha256` for `key`'s file, dropping entries whose file is gone; written to a
/// temporary file beside the cache and renamed over it.
pub(crate) fn store(cache: &Path, key: &Key, sha256: &str) {
    let _one = STORE.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = read(cache);
    c.format = FORMAT.to_string();
    c.files
        .retain(|p, e| is_sha256(&e.sha256) && Path::new(p).is_file());
    c.files.insert(
        key.path.clone(),
        Entry {
            size: key.size,
            mtime_ns: key.mtime_ns,
            sha256: sha256.to_string(),
        },
    );
    while c.files.len() > MAX_ENTRIES {
        let Some(first) = c.files.keys().find(|p| **p != key.path).cloned() else {
            break;
        };
        c.files.remove(&first);
    }
    let Ok(text) = serde_json::to_string_pretty(&c) else {
        return;
    };
    if let Some(dir) = cache.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = cache.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, text).is_err() || std::fs::rename(&tmp, cache).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256_cached;
    use std::fs::File;
    use std::time::{Duration, SystemTime};

    fn set_mtime(p: &Path, t: SystemTime) {
        File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn a_recorded_hash_is_taken_while_size_and_mtime_match() {
        let dir = tempfile::tempdir().unwrap();
        let (f, cache) = (dir.path().join("m.bin"), dir.path().join("c/hashes.json"));
        std::fs::write(&f, b"abc").unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        set_mtime(&f, t);
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_cached(&f, Some(&cache), 0).unwrap().sha256, abc);
        assert!(cache.is_file(), "the cache file and its folder are created");
        // same size and mtime, other bytes: the record is taken (the file was not read)
        std::fs::write(&f, b"abd").unwrap();
        set_mtime(&f, t);
        assert_eq!(sha256_cached(&f, Some(&cache), 0).unwrap().sha256, abc);
        // a newer mtime: hashed again, and recorded
        set_mtime(&f, t + Duration::from_secs(1));
        let abd = sha256_cached(&f, Some(&cache), 0).unwrap().sha256;
        assert_eq!(
            abd,
            "a52d159f262b2c6ddb724a61840befc36eb30c88877a4030b65cbe86298449c9"
        );
        std::fs::write(&f, b"abc").unwrap();
        set_mtime(&f, t + Duration::from_secs(1));
        assert_eq!(sha256_cached(&f, Some(&cache), 0).unwrap().sha256, abd);
        // another size at the same mtime: hashed again
        std::fs::write(&f, b"abcd").unwrap();
        set_mtime(&f, t + Duration::from_secs(1));
        assert_eq!(
            sha256_cached(&f, Some(&cache), 0).unwrap().sha256,
            "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"
        );
    }

    #[test]
    fn small_files_are_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let (f, cache) = (dir.path().join("m.bin"), dir.path().join("hashes.json"));
        std::fs::write(&f, b"abc").unwrap();
        sha256_cached(&f, Some(&cache), 4).unwrap();
        assert!(!cache.exists());
        sha256_cached(&f, Some(&cache), 3).unwrap();
        assert!(cache.exists());
    }

    #[test]
    fn a_broken_cache_file_counts_as_empty_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (f, cache) = (dir.path().join("m.bin"), dir.path().join("hashes.json"));
        std::fs::write(&f, b"abc").unwrap();
        let key = Key::of(&f, 0).unwrap();
        let bad_hash = format!(
            r#"{{"format":"{FORMAT}","files":{{"{}":{{"size":3,"mtime_ns":{},"sha256":"../x"}}}}}}"#,
            key.path, key.mtime_ns
        );
        let other_format = bad_hash
            .replace(FORMAT, "v0")
            .replace("../x", &"0".repeat(64));
        for text in ["{not json", "[]", "", &bad_hash, &other_format] {
            std::fs::write(&cache, text).unwrap();
            assert_eq!(lookup(&cache, &key), None, "{text}");
            let h = sha256_cached(&f, Some(&cache), 0).unwrap();
            assert_eq!(h.sha256[..10], *"ba7816bf8f", "{text}");
            assert_eq!(lookup(&cache, &key).as_deref(), Some(h.sha256.as_str()));
        }
        // larger than MAX_CACHE_BYTES: not read
        let big = format!("{}{}", " ".repeat(MAX_CACHE_BYTES as usize), bad_hash);
        std::fs::write(&cache, big).unwrap();
        assert_eq!(lookup(&cache, &key), None);
    }

    #[test]
    fn entries_of_files_gone_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("hashes.json");
        let (a, b) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        sha256_cached(&a, Some(&cache), 0).unwrap();
        sha256_cached(&b, Some(&cache), 0).unwrap();
        assert_eq!(read(&cache).files.len(), 2);
        let key_a = Key::of(&a, 0).unwrap();
        std::fs::remove_file(&b).unwrap();
        std::fs::write(&a, b"aa").unwrap();
        sha256_cached(&a, Some(&cache), 0).unwrap();
        let files = read(&cache).files;
        assert_eq!(files.len(), 1);
        assert!(files.contains_key(&key_a.path));
    }
}
