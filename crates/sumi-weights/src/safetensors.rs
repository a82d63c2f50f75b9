//! Safetensors files: a fully validated header over a memory-mapped body.
//!
//! The header is checked before any tensor is touched: its length is bounded and inside the
//! file, it is UTF-8 JSON whose keys are unique, every dtype is known, every `shape` × dtype size
//! equals the byte range, and the ranges tile the data section exactly (start at 0, no overlaps,
//! no gaps, end at the end of the file).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, MapAccess, Visitor};

use crate::dtype::StorageDtype;
use crate::error::{Result, WeightsError};

/// Largest header accepted (the reference implementation's limit).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// The tensor's name in the file.
    pub name: String,
    /// Its stored dtype.
    pub dtype: StorageDtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Byte range inside the data section.
    pub start: usize,
    /// End of the byte range (exclusive).
    pub end: usize,
}

/// A validated, memory-mapped safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    data_start: usize,
    entries: Vec<TensorEntry>,
    metadata: BTreeMap<String, String>,
}

impl fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

/// The header's JSON object, keys in file order, duplicates detected.
struct RawHeader(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeader;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<RawHeader, A::Error> {
                let mut out: Vec<(String, serde_json::Value)> = Vec::new();
                let mut seen = std::collections::HashSet::new();
                while let Some((k, v)) = m.next_entry::<String, serde_json::Value>()? {
                    if !seen.insert(k.clone()) {
                        return Err(serde::de::Error::custom(format!(
                            "duplicate tensor name `{k}`"
                        )));
                    }
                    out.push((k, v));
                }
                Ok(RawHeader(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl SafetensorsFile {
    /// Opens and validates `path`; the body is memory-mapped, not read.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| WeightsError::io(path, e))?;
        // SAFETY: the map is read-only; a file truncated by another process while mapped
        // is outside what any reader can defend against (the same contract as every mmap user).
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| WeightsError::io(path, e))?;
        let (entries, metadata, data_start) = parse_header(&mmap, path)?;
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            data_start,
            entries,
            metadata,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensors, in header order.
    pub fn entries(&self) -> &[TensorEntry] {
        &self.entries
    }

    /// The `__metadata__` map (empty when absent).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The bytes of one entry (validated at open, so always in bounds).
    pub fn bytes(&self, e: &TensorEntry) -> &[u8] {
        &self.mmap[self.data_start + e.start..self.data_start + e.end]
    }

    /// Drops the mapped pages of one entry from this process's memory (they count in its
    /// resident set once read); a later read maps them again from the file. Best effort.
    pub fn release(&self, e: &TensorEntry) {
        #[cfg(unix)]
        // SAFETY: the map is a read-only file mapping that is never written: dropping its
        // pages only makes the next access read the same bytes from the file again.
        unsafe {
            let _ = self.mmap.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                self.data_start + e.start,
                e.end - e.start,
            );
        }
        #[cfg(not(unix))]
        let _ = e;
    }
}

fn bad(path: &Path, detail: impl Into<String>) -> WeightsError {
    WeightsError::BadSafetensors {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

type Parsed = (Vec<TensorEntry>, BTreeMap<String, String>, usize);

/// Parses and validates the header of a complete safetensors byte image.
pub fn parse_header(buf: &[u8], path: &Path) -> Result<Parsed> {
    if buf.len() < 8 {
        return Err(bad(
            path,
            format!(
                "file is {} bytes, too short for the 8-byte header length",
                buf.len()
            ),
        ));
    }
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&buf[..8]);
    let n = u64::from_le_bytes(len8);
    if n > MAX_HEADER_BYTES {
        return Err(bad(
            path,
            format!("header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes"),
        ));
    }
    let avail = (buf.len() - 8) as u64;
    if n > avail {
        return Err(bad(
            path,
            format!("header length {n} runs past the end of the file ({avail} bytes after the length; truncated?)"),
        ));
    }
    let n = n as usize;
    let text = std::str::from_utf8(&buf[8..8 + n])
        .map_err(|e| bad(path, format!("header is not UTF-8: {e}")))?;
    let raw: RawHeader = serde_json::from_str(text.trim_end_matches(' '))
        .map_err(|e| bad(path, format!("header is not a valid JSON object: {e}")))?;
    let data_len = buf.len() - 8 - n;
    let mut metadata = BTreeMap::new();
    let mut entries = Vec::with_capacity(raw.0.len());
    for (name, v) in raw.0 {
        if name == "__metadata__" {
            let obj = v
                .as_object()
                .ok_or_else(|| bad(path, "__metadata__ is not an object"))?;
            for (k, v) in obj {
                let s = v.as_str().ok_or_else(|| {
                    bad(path, format!("__metadata__ value `{k}` is not a string"))
                })?;
                metadata.insert(k.clone(), s.to_string());
            }
            continue;
        }
        entries.push(parse_entry(&name, &v, path)?);
    }
    check_layout(&mut entries.clone(), data_len, path)?;
    Ok((entries, metadata, 8 + n))
}

fn parse_entry(name: &str, v: &serde_json::Value, path: &Path) -> Result<TensorEntry> {
    let field = |f: &str| {
        v.get(f)
            .ok_or_else(|| bad(path, format!("tensor `{name}` has no `{f}`")))
    };
    let dt = field("dtype")?
        .as_str()
        .ok_or_else(|| bad(path, format!("tensor `{name}`: dtype is not a string")))?;
    let dtype = StorageDtype::from_safetensors(dt)
        .ok_or_else(|| bad(path, format!("tensor `{name}`: unknown dtype `{dt}`")))?;
    let shape = field("shape")?
        .as_array()
        .ok_or_else(|| bad(path, format!("tensor `{name}`: shape is not a list")))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| {
            bad(
                path,
                format!("tensor `{name}`: shape has a non-integer dimension"),
            )
        })?;
    let offs = field("data_offsets")?
        .as_array()
        .filter(|a| a.len() == 2)
        .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)))
        .ok_or_else(|| {
            bad(
                path,
                format!("tensor `{name}`: data_offsets is not [begin, end]"),
            )
        })?;
    let (start, end) = (offs.0 as usize, offs.1 as usize);
    if end < start {
        return Err(bad(
            path,
            format!("tensor `{name}`: data_offsets end {end} < begin {start}"),
        ));
    }
    let bytes = shape
        .iter()
        .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(path, format!("tensor `{name}`: shape {shape:?} overflows")))?;
    if bytes != end - start {
        return Err(bad(
            path,
            format!(
                "tensor `{name}`: dtype {dtype} × shape {shape:?} is {bytes} bytes but its data range is {} bytes",
                end - start
            ),
        ));
    }
    Ok(TensorEntry {
        name: name.to_string(),
        dtype,
        shape,
        start,
        end,
    })
}

fn check_layout(entries: &mut [TensorEntry], data_len: usize, path: &Path) -> Result<()> {
    entries.sort_by_key(|e| (e.start, e.end));
    let mut pos = 0usize;
    for e in entries.iter() {
        if e.start < pos {
            return Err(bad(
                path,
                format!("tensor `{}` at bytes {}..{} overlaps the previous tensor (which ends at {pos})", e.name, e.start, e.end),
            ));
        }
        if e.start > pos {
            return Err(bad(
                path,
                format!(
                    "gap of {} bytes before tensor `{}` (bytes {pos}..{})",
                    e.start - pos,
                    e.name,
                    e.start
                ),
            ));
        }
        pos = e.end;
    }
    if pos != data_len {
        return Err(bad(
            path,
            if pos > data_len {
                format!("tensor data ends at byte {pos} but the file has only {data_len} data bytes (truncated?)")
            } else {
                format!("{} unused bytes after the last tensor", data_len - pos)
            },
        ));
    }
    Ok(())
}

/// Serialises tensors (name, dtype, shape, little-endian bytes) to safetensors bytes, in the
/// given order. Used by tools and tests; names must be unique.
pub fn serialize(
    tensors: &[(String, StorageDtype, Vec<usize>, Vec<u8>)],
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut off = 0usize;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [off, off + bytes.len()]}),
        );
        off += bytes.len();
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + off);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for (_, _, _, bytes) in tensors {
        out.extend_from_slice(bytes);
    }
    out
}
