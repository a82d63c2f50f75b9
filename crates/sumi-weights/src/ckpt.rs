//! PyTorch zip archives (`.ckpt`, `.pt`, `.bin`): one reader for checkpoints and embeddings.
//!
//! [`TorchArchive`] is the only path from such a file to tensors: the zip is read from a memory
//! map, its `data.pkl` (at most [`MAX_PICKLE_BYTES`]) goes through the restricted
//! [`crate::pickle`] reader (nothing executed), persistent ids become storage references, and
//! every tensor view is checked against its storage with checked arithmetic before its bytes
//! are gathered. [`CkptFile`] is the state-dict view of an archive; textual-inversion
//! embeddings (`crate::embedding`) read their vectors from the same archive.
//!
//! Stored (uncompressed) records, which is what `torch.save` writes, are used straight from the
//! memory map; compressed ones are inflated once, each exactly to its declared size, and all of
//! them together to no more than [`INFLATE_ALLOWANCE`] plus [`MAX_INFLATE_RATIO`] times their
//! compressed bytes (checked from the zip's directory before anything is inflated).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dtype::StorageDtype;
use crate::error::{Result, WeightsError};
use crate::pickle::{self, PickleError, TensorRef, Value};

/// Largest `data.pkl` read from an archive. The pickle holds only names and tensor views
/// (a few hundred bytes per tensor: about 1 MB for an SD checkpoint with EMA and optimizer
/// state, a few kilobytes for an embedding); the bytes live in the storage records.
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// Inflated bytes an archive's compressed records may always use, whatever their ratio.
pub const INFLATE_ALLOWANCE: u64 = 64 << 20;

/// Beyond [`INFLATE_ALLOWANCE`], the largest ratio of inflated to compressed bytes over an
/// archive's compressed storage records. Weights deflate by 1.1 to 1.3 (int64 index tensors
/// by about 10); deflate's own limit is about 1032, reached only by runs of one byte value,
/// which is what a zip bomb is made of.
pub const MAX_INFLATE_RATIO: u64 = 16;

/// Where a storage's bytes live.
enum Record {
    Mapped(std::ops::Range<usize>),
    Owned(Vec<u8>),
}

/// One tensor of an archive, checked against its storage and laid out contiguously on demand.
#[derive(Debug, Clone)]
pub struct CkptTensor {
    /// Its key in the state dict.
    pub name: String,
    /// Stored dtype.
    pub dtype: StorageDtype,
    /// Shape.
    pub shape: Vec<usize>,
    stride: Vec<usize>,
    offset: usize,
    record: String,
}

/// A PyTorch zip archive whose pickle has been read: its storage records, by key.
pub struct TorchArchive {
    path: PathBuf,
    mmap: memmap2::Mmap,
    records: HashMap<String, Record>,
}

impl std::fmt::Debug for TorchArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchArchive")
            .field("path", &self.path)
            .field("records", &self.records.len())
            .finish()
    }
}

fn bad(path: &Path, detail: impl Into<String>) -> WeightsError {
    WeightsError::BadCheckpoint {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// A storage as the pickle declares it: its class and element count.
#[derive(Debug, Clone, PartialEq)]
struct Declared {
    kind: String,
    numel: u64,
}

/// Storages declared by the pickle's persistent ids, by record key.
type DeclaredStorages = std::cell::RefCell<BTreeMap<String, Declared>>;

/// torch's persistent ids: `("storage", <StorageClass>, key, location, numel)`; each storage's
/// class and size is recorded in `declared` (a key declared twice must agree).
fn storage_ref(pid: Value, declared: &DeclaredStorages) -> std::result::Result<Value, PickleError> {
    let Value::Tuple(t) = pid else {
        return Err(PickleError::Malformed(format!(
            "persistent id is not a tuple: {}",
            pid.describe()
        )));
    };
    match t.as_slice() {
        [Value::Str(tag), Value::Global(_, kind), Value::Str(key), _, Value::Int(numel), ..]
            if tag == "storage" && *numel >= 0 =>
        {
            let d = Declared {
                kind: kind.clone(),
                numel: *numel as u64,
            };
            let mut declared = declared.borrow_mut();
            match declared.get(key) {
                Some(old) if *old != d => {
                    return Err(PickleError::Malformed(format!(
                        "storage `{key}` is declared as {} of {} elements and as {} of {}",
                        old.kind, old.numel, d.kind, d.numel
                    )))
                }
                Some(_) => {}
                None => {
                    declared.insert(key.clone(), d);
                }
            }
            Ok(Value::Storage {
                kind: kind.clone(),
                key: key.clone(),
            })
        }
        _ => Err(PickleError::Malformed(format!(
            "unexpected persistent id, a tuple of {} items",
            t.len()
        ))),
    }
}

type Zip<'a> = zip::ZipArchive<std::io::Cursor<&'a [u8]>>;

/// The archive's `data.pkl` bytes (at most [`MAX_PICKLE_BYTES`]) and the zip index of each
/// storage record (`<prefix>/data/<key>`), whose bytes are not read yet.
fn scan(path: &Path, zip: &mut Zip<'_>) -> Result<(Vec<u8>, HashMap<String, usize>)> {
    let mut pkl: Option<Vec<u8>> = None;
    let mut entries = HashMap::new();
    let mut big_endian = false;
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|e| bad(path, format!("zip entry {i}: {e}")))?;
        let name = f
            .name()
            .map_err(|e| bad(path, format!("zip entry {i}: {e}")))?
            .to_string();
        let Some((_, inner)) = name.split_once('/') else {
            continue;
        };
        if inner == "data.pkl" {
            let mut v = Vec::new();
            f.by_ref()
                .take(MAX_PICKLE_BYTES + 1)
                .read_to_end(&mut v)
                .map_err(|e| bad(path, format!("{name}: {e}")))?;
            if v.len() as u64 > MAX_PICKLE_BYTES {
                return Err(bad(
                    path,
                    format!("{name} is larger than the {MAX_PICKLE_BYTES}-byte limit"),
                ));
            }
            pkl = Some(v);
        } else if inner == "byteorder" {
            let mut v = String::new();
            f.by_ref()
                .take(16)
                .read_to_string(&mut v)
                .map_err(|e| bad(path, format!("{name}: {e}")))?;
            big_endian = v.trim() == "big";
        } else if let Some(key) = inner.strip_prefix("data/") {
            entries.insert(key.to_string(), i);
        }
    }
    if big_endian {
        return Err(bad(path, "big-endian checkpoints are not supported"));
    }
    let pkl = pkl.ok_or_else(|| bad(path, "no data.pkl in the archive"))?;
    Ok((pkl, entries))
}

/// Refuses an archive whose compressed storage records would inflate to more than
/// [`INFLATE_ALLOWANCE`] + [`MAX_INFLATE_RATIO`] × their compressed size, as the zip's central
/// directory declares them, counting the records whose size is their storage's (they are
/// inflated to exactly that size, so these sizes bound the memory used).
fn check_inflate_ratio(
    path: &Path,
    zip: &mut Zip<'_>,
    entries: &HashMap<String, usize>,
    declared: &BTreeMap<String, Declared>,
) -> Result<()> {
    let (mut inflated, mut compressed) = (0u64, 0u64);
    for (key, d) in declared {
        let (Some(dtype), Some(&i)) = (StorageDtype::from_torch_storage(&d.kind), entries.get(key))
        else {
            continue;
        };
        let f = zip
            .by_index_raw(i)
            .map_err(|e| bad(path, format!("storage record `{key}`: {e}")))?;
        // a record whose size is not its storage's is refused by `read_records`, which names both
        let fits = d.numel.checked_mul(dtype.size() as u64) == Some(f.size());
        if fits && f.compression() != zip::CompressionMethod::Stored {
            inflated = inflated.saturating_add(f.size());
            compressed = compressed.saturating_add(f.compressed_size());
        }
    }
    let limit = MAX_INFLATE_RATIO
        .saturating_mul(compressed)
        .saturating_add(INFLATE_ALLOWANCE);
    if inflated > limit {
        return Err(bad(
            path,
            format!(
                "compressed storage records of {compressed} bytes would inflate to {inflated} \
                 (more than {INFLATE_ALLOWANCE} + {MAX_INFLATE_RATIO} x the compressed size): \
                 refused as a zip bomb"
            ),
        ));
    }
    Ok(())
}

/// The records of the declared storages, each exactly its declared size (element count ×
/// element size): stored ones mapped, compressed ones inflated up to that size and no further.
/// Records no storage declares are never read; a storage of unknown class or without a record
/// is left to [`TorchArchive::tensor`] to report for the tensors that use it.
fn read_records(
    path: &Path,
    zip: &mut Zip<'_>,
    mmap_len: usize,
    entries: &HashMap<String, usize>,
    declared: BTreeMap<String, Declared>,
) -> Result<HashMap<String, Record>> {
    check_inflate_ratio(path, zip, entries, &declared)?;
    let mut records = HashMap::new();
    for (key, d) in declared {
        let (Some(dtype), Some(&i)) =
            (StorageDtype::from_torch_storage(&d.kind), entries.get(&key))
        else {
            continue;
        };
        let need = d
            .numel
            .checked_mul(dtype.size() as u64)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= isize::MAX as usize)
            .ok_or_else(|| {
                bad(
                    path,
                    format!("storage `{key}` of {} elements is too large", d.numel),
                )
            })?;
        let mut f = zip
            .by_index(i)
            .map_err(|e| bad(path, format!("storage record `{key}`: {e}")))?;
        let mismatch = |holds: String| {
            bad(
                path,
                format!(
                    "storage record `{key}` holds {holds} bytes, its {} of {} elements needs {need}",
                    d.kind, d.numel
                ),
            )
        };
        if f.size() != need as u64 {
            return Err(mismatch(f.size().to_string()));
        }
        let mapped = match (f.compression(), f.data_start()) {
            (zip::CompressionMethod::Stored, Some(s)) => usize::try_from(s)
                .ok()
                .filter(|s| s.checked_add(need).is_some_and(|e| e <= mmap_len)),
            _ => None,
        };
        let rec = match mapped {
            Some(s) => Record::Mapped(s..s + need),
            None => {
                let mut v = Vec::with_capacity(need.min(64 << 20));
                f.by_ref()
                    .take(need as u64 + 1)
                    .read_to_end(&mut v)
                    .map_err(|e| bad(path, format!("storage record `{key}`: {e}")))?;
                if v.len() != need {
                    let holds = match v.len() > need {
                        true => format!("more than {need}"),
                        false => v.len().to_string(),
                    };
                    return Err(mismatch(holds));
                }
                Record::Owned(v)
            }
        };
        records.insert(key, rec);
    }
    Ok(records)
}

impl TorchArchive {
    /// Opens a zip archive and reads its pickle without executing anything: the archive and
    /// the pickle's root object (its tensors as [`Value::Tensor`] views, not yet checked).
    /// Each storage record must hold exactly the bytes its storage declares.
    pub fn open(path: &Path) -> Result<(Self, Value)> {
        let file = std::fs::File::open(path).map_err(|e| WeightsError::io(path, e))?;
        // SAFETY: read-only map; see SafetensorsFile::open.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| WeightsError::io(path, e))?;
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&mmap[..]))
            .map_err(|e| bad(path, format!("not a readable zip archive: {e}")))?;
        let (pkl, entries) = scan(path, &mut zip)?;
        let declared = DeclaredStorages::default();
        let root = pickle::read(&pkl, &|pid| storage_ref(pid, &declared)).map_err(|e| match e {
            PickleError::Forbidden(module, name) => WeightsError::ForbiddenGlobal {
                path: path.to_path_buf(),
                module,
                name,
            },
            PickleError::Malformed(d) => bad(path, format!("data.pkl: {d}")),
        })?;
        let records = read_records(path, &mut zip, mmap.len(), &entries, declared.into_inner())?;
        drop(zip);
        let archive = Self {
            path: path.to_path_buf(),
            mmap,
            records,
        };
        Ok((archive, root))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks tensor view `t` (called `name`) against its storage: a known storage type, a
    /// record that exists, a byte size that fits in `isize` (empty dimensions counted as 1), an
    /// offset inside the storage (even for an empty view), no more elements than the storage
    /// holds, and every element inside it.
    pub fn tensor(&self, name: String, t: TensorRef) -> Result<CkptTensor> {
        let dtype = StorageDtype::from_torch_storage(&t.kind).ok_or_else(|| {
            bad(
                &self.path,
                format!("tensor `{name}`: unknown storage type {}", t.kind),
            )
        })?;
        let rec = self.records.get(&t.key).ok_or_else(|| {
            bad(
                &self.path,
                format!("tensor `{name}`: storage record `{}` is missing", t.key),
            )
        })?;
        let len = match rec {
            Record::Mapped(r) => r.len(),
            Record::Owned(v) => v.len(),
        } / dtype.size();
        // the byte size with every empty dimension counted as 1 must fit, so that no stride or
        // size computed from the shape (here, by candle or by a later reshape) can wrap
        let bytes = t
            .shape
            .iter()
            .try_fold(dtype.size(), |a, &d| a.checked_mul(d.max(1)))
            .filter(|&b| b <= isize::MAX as usize);
        let Some(numel) = bytes.map(|_| t.shape.iter().product::<usize>()) else {
            return Err(bad(
                &self.path,
                format!("tensor `{name}` (shape {:?}) is too large", t.shape),
            ));
        };
        if t.offset > len {
            return Err(bad(
                &self.path,
                format!(
                    "tensor `{name}` starts at element {}, past its storage of {len}",
                    t.offset
                ),
            ));
        }
        if numel > len {
            // a view repeating elements (a broadcast stride): never in a state dict, and it
            // would let a few stored bytes ask for an arbitrarily large tensor
            return Err(bad(
                &self.path,
                format!(
                    "tensor `{name}` (shape {:?}) has more elements than its storage of {len}",
                    t.shape
                ),
            ));
        }
        if numel > 0 {
            let last = t
                .shape
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset, |a, (&d, &s)| {
                    a.checked_add((d - 1).checked_mul(s)?)
                });
            if last.is_none_or(|l| l >= len) {
                return Err(bad(
                    &self.path,
                    format!(
                        "tensor `{name}` (shape {:?}) reaches past its storage of {len} elements",
                        t.shape
                    ),
                ));
            }
        }
        Ok(CkptTensor {
            name,
            dtype,
            shape: t.shape,
            stride: t.stride,
            offset: t.offset,
            record: t.key,
        })
    }

    /// The tensor's bytes in contiguous row-major order (borrowed when already contiguous).
    /// `t` must come from this archive's [`TorchArchive::tensor`], which bounds every index
    /// computed here.
    pub fn bytes(&self, t: &CkptTensor) -> Cow<'_, [u8]> {
        let all: &[u8] = match self.records.get(&t.record) {
            Some(Record::Mapped(r)) => &self.mmap[r.clone()],
            Some(Record::Owned(v)) => v,
            None => &[],
        };
        let es = t.dtype.size();
        let numel: usize = t.shape.iter().product();
        if numel == 0 {
            return Cow::Borrowed(&[]);
        }
        let mut contiguous = vec![1usize; t.shape.len()];
        for i in (0..t.shape.len().saturating_sub(1)).rev() {
            contiguous[i] = contiguous[i + 1] * t.shape[i + 1];
        }
        let is_contig = t
            .shape
            .iter()
            .zip(t.stride.iter().zip(&contiguous))
            .all(|(&d, (&s, &c))| d <= 1 || s == c);
        if is_contig {
            return Cow::Borrowed(&all[t.offset * es..(t.offset + numel) * es]);
        }
        let mut out = Vec::with_capacity(numel * es);
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let e = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            out.extend_from_slice(&all[e * es..(e + 1) * es]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Cow::Owned(out)
    }
}

/// A PyTorch zip checkpoint's state dict.
pub struct CkptFile {
    archive: TorchArchive,
    tensors: Vec<CkptTensor>,
}

impl std::fmt::Debug for CkptFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CkptFile")
            .field("path", &self.archive.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl CkptFile {
    /// Opens a zip checkpoint and reads its pickle without executing anything.
    pub fn open(path: &Path) -> Result<Self> {
        let (archive, root) = TorchArchive::open(path)?;
        let tensors = state_dict(&archive, root)?;
        Ok(Self { archive, tensors })
    }

    /// The tensors of the state dict, in file order.
    pub fn tensors(&self) -> &[CkptTensor] {
        &self.tensors
    }

    /// The tensor's bytes in contiguous row-major order (borrowed when already contiguous).
    pub fn bytes(&self, t: &CkptTensor) -> Cow<'_, [u8]> {
        self.archive.bytes(t)
    }
}

/// Takes the state dict out of the root object (A1111's rule: a `state_dict` entry if present,
/// else the root itself) and checks every tensor against its storage.
fn state_dict(archive: &TorchArchive, root: Value) -> Result<Vec<CkptTensor>> {
    let Value::Dict(mut d) = root else {
        return Err(bad(&archive.path, "the pickle's root is not a dict"));
    };
    if let Some(i) = d
        .iter()
        .position(|(k, v)| *k == Value::Str("state_dict".into()) && matches!(v, Value::Dict(_)))
    {
        let (_, v) = d.swap_remove(i);
        if let Value::Dict(sd) = v {
            d = sd;
        }
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in d {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            continue;
        };
        if !seen.insert(name.clone()) {
            return Err(bad(
                &archive.path,
                format!("duplicate tensor name `{name}`"),
            ));
        }
        out.push(archive.tensor(name, *t)?);
    }
    Ok(out)
}
