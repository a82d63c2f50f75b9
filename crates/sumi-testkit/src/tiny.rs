//! The tiny-model materialiser: a `fixtures/tiny/<arch>/manifest.json` (written by
//! `tools/reference/make_tiny_models.py`) lists every tensor of the tiny checkpoints — file,
//! key, shape, the canonical names its values are synthesised from, and a checksum of the
//! reference's f16 bytes — so the repository commits the manifest instead of the weights.
//!
//! The safetensors files are written here, independently of `sumi-weights` (whose reader the
//! suites test): an 8-byte little-endian header length, the JSON header (tensors in manifest
//! order, `__metadata__` first when there is any) padded with spaces to a multiple of 8, then
//! the tensors' bytes back to back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::f16;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::fixture::{fixtures, read_json, FixtureError, Result};
use crate::synth::synth;

/// How the materialised weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Half precision, the reference's own values.
    F16,
    /// Single precision (the f16 values widened).
    F32,
}

impl Storage {
    /// The safetensors dtype name.
    pub fn name(self) -> &'static str {
        match self {
            Self::F16 => "F16",
            Self::F32 => "F32",
        }
    }
}

impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The fixture folder of tiny model `arch` (`sd1`, `sd1-inpaint`, `sd2`, `sd2-v`).
pub fn tiny_fixture(arch: &str) -> PathBuf {
    fixtures().join("tiny").join(arch)
}

/// Writes the tiny `arch` checkpoints (f16 storage) into `dir` and returns the single-file one,
/// `dir/tiny_<arch>.safetensors` (the diffusers folder is `dir/diffusers`).
///
/// # Panics
/// If the fixture cannot be materialised (the error names the file and the problem).
pub fn tiny_model(arch: &str, dir: &Path) -> PathBuf {
    materialize(&tiny_fixture(arch), dir, Storage::F16)
        .unwrap_or_else(|e| panic!("tiny model {arch}: {e}"));
    dir.join(format!("tiny_{arch}.safetensors"))
}

fn bad(path: &Path, detail: impl Into<String>) -> FixtureError {
    FixtureError::Materialize {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn empty(path: &Path, detail: impl Into<String>) -> FixtureError {
    FixtureError::Empty {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn checksum(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))[..16].to_string()
}

/// Writes every weight file the manifest of `fixture` describes into `out` (plus the
/// fixture's JSON configs, at the same relative paths), stored as `storage`, and checks each
/// tensor against the manifest's checksum of the reference's f16 bytes. A manifest without
/// files, or a file without tensors, is refused.
pub fn materialize(fixture: &Path, out: &Path, storage: Storage) -> Result<()> {
    let mpath = fixture.join("manifest.json");
    let m = read_json(&mpath)?;
    let files = m["files"]
        .as_object()
        .ok_or_else(|| bad(&mpath, "no `files` object"))?;
    if files.is_empty() {
        return Err(empty(&mpath, "`files` lists no file"));
    }
    copy_configs(fixture, fixture, out)?;
    for (fname, spec) in files {
        let entries = spec["tensors"]
            .as_array()
            .ok_or_else(|| bad(&mpath, format!("{fname}: no `tensors` list")))?;
        if entries.is_empty() {
            return Err(empty(&mpath, format!("{fname} lists no tensor")));
        }
        let tensors = entries
            .iter()
            .map(|t| tensor(&mpath, fname, t, storage))
            .collect::<Result<Vec<_>>>()?;
        let metadata: BTreeMap<String, String> = spec["metadata"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let path = out.join(fname);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| bad(dir, e.to_string()))?;
        }
        std::fs::write(&path, safetensors_bytes(&tensors, &metadata, storage))
            .map_err(|e| bad(&path, e.to_string()))?;
    }
    Ok(())
}

/// One tensor: (key, shape, stored bytes).
type Stored = (String, Vec<usize>, Vec<u8>);

/// A manifest entry `[key, shape, [source names], checksum]` synthesised and checked; a
/// source `T:<name>` is canonical tensor `name` transposed (2-D only).
fn tensor(mpath: &Path, fname: &str, t: &Value, storage: Storage) -> Result<Stored> {
    let (Some(key), Some(shape), Some(sources), Some(sum)) = (
        t[0].as_str(),
        t[1].as_array(),
        t[2].as_array(),
        t[3].as_str(),
    ) else {
        return Err(bad(mpath, format!("{fname}: bad tensor entry {t}")));
    };
    let shape = shape
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| bad(mpath, format!("{fname}: `{key}` has a bad shape")))?;
    let numel: usize = shape.iter().product();
    let parts = sources.len().max(1);
    let mut part_shape = shape.clone();
    if let Some(d) = part_shape.first_mut() {
        *d /= parts;
    }
    let mut vals: Vec<f16> = Vec::with_capacity(numel);
    for s in sources {
        let s = s
            .as_str()
            .ok_or_else(|| bad(mpath, format!("{fname}: bad source in `{key}`")))?;
        if let Some(name) = s.strip_prefix("T:") {
            // a matrix stored transposed (open_clip's `text_projection`): synthesised in its
            // canonical shape, then transposed
            let [r, c] = part_shape[..] else {
                return Err(bad(
                    mpath,
                    format!("{fname}: `{key}` is transposed but not 2-D"),
                ));
            };
            let t = synth(name, &[c, r]);
            vals.extend(
                (0..r)
                    .flat_map(|i| (0..c).map(move |j| (i, j)))
                    .map(|(i, j)| t[j * r + i]),
            );
            continue;
        }
        // 1x1 kernels and matrices share fan-in, so the stored shape serves
        vals.extend(synth(s, &part_shape));
    }
    let f16_bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    if vals.len() != numel || checksum(&f16_bytes) != sum {
        return Err(bad(
            mpath,
            format!("{fname}: `{key}` does not match its checksum"),
        ));
    }
    let bytes = match storage {
        Storage::F32 => vals.iter().flat_map(|v| v.to_f32().to_le_bytes()).collect(),
        Storage::F16 => f16_bytes,
    };
    Ok((key.to_string(), shape, bytes))
}

/// A safetensors file of `tensors` (all of dtype `storage`), in the given order.
fn safetensors_bytes(
    tensors: &[Stored],
    metadata: &BTreeMap<String, String>,
    storage: Storage,
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut off = 0usize;
    for (name, shape, bytes) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": storage.name(),
                "shape": shape,
                "data_offsets": [off, off + bytes.len()],
            }),
        );
        off += bytes.len();
    }
    let mut h = Value::Object(header).to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + off);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for (_, _, bytes) in tensors {
        out.extend_from_slice(bytes);
    }
    out
}

fn copy_configs(root: &Path, dir: &Path, out: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|source| FixtureError::Missing {
        path: dir.to_path_buf(),
        source,
    })?;
    for e in entries {
        let p = e.map_err(|e| bad(dir, e.to_string()))?.path();
        if p.is_dir() {
            copy_configs(root, &p, out)?;
        } else if p.extension().is_some_and(|x| x == "json")
            && p.file_name().is_some_and(|n| n != "manifest.json")
        {
            let rel = p
                .strip_prefix(root)
                .map_err(|_| bad(&p, "outside the fixture"))?;
            let dst = out.join(rel);
            if let Some(d) = dst.parent() {
                std::fs::create_dir_all(d).map_err(|e| bad(d, e.to_string()))?;
            }
            std::fs::copy(&p, &dst).map_err(|e| bad(&p, e.to_string()))?;
        }
    }
    Ok(())
}
