//! [`Weights`]: a checkpoint of any layout opened by content, seen through canonical names.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};

use crate::ckpt::CkptFile;
use crate::dtype::{self, StorageDtype};
use crate::error::{Result, WeightsError};
use crate::layout::{self, Mapped};
use crate::safetensors::SafetensorsFile;

/// The container a checkpoint came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A single safetensors file.
    Safetensors,
    /// A PyTorch zip checkpoint (`.ckpt`/`.pt`).
    Checkpoint,
    /// A diffusers folder.
    Diffusers,
}

enum File {
    St(SafetensorsFile),
    Ckpt(CkptFile),
}

impl File {
    fn open(path: &Path) -> Result<Self> {
        let mut head = [0u8; 9];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| WeightsError::io(path, e))?;
            let mut n = 0;
            while n < head.len() {
                match f
                    .read(&mut head[n..])
                    .map_err(|e| WeightsError::io(path, e))?
                {
                    0 => break,
                    k => n += k,
                }
            }
            n
        };
        if n >= 4 && head[..4] == *b"PK\x03\x04" {
            return Ok(Self::Ckpt(CkptFile::open(path)?));
        }
        if n >= 2 && head[0] == 0x80 && head[1] <= 5 {
            return Err(WeightsError::UnknownFormat {
                path: path.to_path_buf(),
                detail: "a legacy (pre-zip) PyTorch pickle; re-save it with a current torch or as safetensors".into(),
            });
        }
        let named_st = path.extension().is_some_and(|e| e == "safetensors");
        if !named_st && n == 9 && head[8] != b'{' {
            return Err(WeightsError::UnknownFormat {
                path: path.to_path_buf(),
                detail: "neither a zip archive nor a safetensors header".into(),
            });
        }
        Ok(Self::St(SafetensorsFile::open(path)?))
    }

    /// (name, dtype, shape) of every tensor.
    fn entries(&self) -> Entries {
        match self {
            Self::St(f) => f
                .entries()
                .iter()
                .map(|e| (e.name.clone(), e.dtype, e.shape.clone()))
                .collect(),
            Self::Ckpt(f) => f
                .tensors()
                .iter()
                .map(|t| (t.name.clone(), t.dtype, t.shape.clone()))
                .collect(),
        }
    }

    fn bytes(&self, idx: usize) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Self::St(f) => std::borrow::Cow::Borrowed(f.bytes(&f.entries()[idx])),
            Self::Ckpt(f) => f.bytes(&f.tensors()[idx]),
        }
    }

    /// Drops tensor `idx`'s mapped pages from the resident set (safetensors only).
    fn release(&self, idx: usize) {
        if let Self::St(f) = self {
            f.release(&f.entries()[idx]);
        }
    }
}

/// A file's tensors: (name, dtype, shape), in file order.
type Entries = Vec<(String, StorageDtype, Vec<usize>)>;

/// Where a canonical tensor comes from.
#[derive(Debug, Clone)]
struct Source {
    file: usize,
    index: usize,
    part: Option<(usize, usize)>,
    /// Stored transposed (2-D); `shape` is the canonical (transposed back) shape.
    transposed: bool,
    dtype: StorageDtype,
    shape: Vec<usize>,
}

/// A checkpoint (single file or diffusers folder) with its tensors under canonical names.
pub struct Weights {
    path: PathBuf,
    format: Format,
    files: Vec<(PathBuf, File)>,
    tensors: BTreeMap<String, Source>,
    raw_keys: Vec<String>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Weights {
    /// Opens a checkpoint by content: a diffusers folder, a PyTorch zip checkpoint or a
    /// safetensors file, whatever its extension.
    pub fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| WeightsError::io(path, e))?;
        if meta.is_dir() {
            return Self::open_diffusers(path);
        }
        let (mut w, entries) = Self::single_file(path)?;
        if layout::sgm::is_sgm(entries.iter().map(|(k, _, _)| k.as_str())) {
            let sgm = layout::sgm::SgmLayout::new(entries.iter().map(|(k, _, _)| k.as_str()));
            w.add(0, entries, |k| sgm.map_key(k))?;
            return Ok(w);
        }
        let open_clip_layers = layout::open_clip::count_layers(
            entries
                .iter()
                .filter_map(|(k, _, _)| k.strip_prefix(layout::ldm::OPEN_CLIP_PREFIX)),
        );
        w.add(0, entries, |k| layout::ldm::map_key(k, open_clip_layers))?;
        Ok(w)
    }

    /// Opens one weight file with its keys as they are (no layout mapping, no detection):
    /// for networks stored under their own names, such as TAESD.
    pub fn open_raw(path: &Path) -> Result<Self> {
        let (mut w, entries) = Self::single_file(path)?;
        w.add(0, entries, |k| vec![Mapped::whole(k.to_string())])?;
        Ok(w)
    }

    /// Opens a standalone VAE file (A1111's `models/VAE`): keys in the LDM layout with or
    /// without `first_stage_model.`, or in the diffusers layout; every tensor ends up under
    /// the canonical `vae.` names. Other keys (EMA copies, loss weights) are ignored.
    pub fn open_vae(path: &Path) -> Result<Self> {
        let (mut w, entries) = Self::single_file(path)?;
        w.add(0, entries, |k| {
            let k = k.strip_prefix(layout::ldm::VAE_PREFIX).unwrap_or(k);
            let vae_part = ["encoder.", "decoder.", "quant_conv.", "post_quant_conv."]
                .iter()
                .any(|p| k.starts_with(p));
            if vae_part {
                layout::ldm::map_key(&format!("{}{k}", layout::ldm::VAE_PREFIX), 0)
            } else {
                Vec::new()
            }
        })?;
        if !w.contains("vae.decoder.conv_in.weight") {
            return Err(WeightsError::MissingTensor {
                path: path.to_path_buf(),
                name: "decoder.conv_in.weight (not a VAE file?)".into(),
            });
        }
        Ok(w)
    }

    /// One weight file opened, its tensors not mapped yet: the weights and the file's entries.
    fn single_file(path: &Path) -> Result<(Self, Entries)> {
        let file = File::open(path)?;
        let (format, metadata) = match &file {
            File::St(f) => (Format::Safetensors, f.metadata().clone()),
            File::Ckpt(_) => (Format::Checkpoint, BTreeMap::new()),
        };
        let entries = file.entries();
        let w = Self {
            path: path.to_path_buf(),
            format,
            files: vec![(path.to_path_buf(), file)],
            tensors: BTreeMap::new(),
            raw_keys: Vec::new(),
            metadata,
        };
        Ok((w, entries))
    }

    fn open_diffusers(dir: &Path) -> Result<Self> {
        let mut w = Self {
            path: dir.to_path_buf(),
            format: Format::Diffusers,
            files: Vec::new(),
            tensors: BTreeMap::new(),
            raw_keys: Vec::new(),
            metadata: BTreeMap::new(),
        };
        let sdxl = dir.join("text_encoder_2").is_dir();
        for (folder, prefix, stems) in layout::diffusers::COMPONENTS {
            let sub = dir.join(folder);
            // SDXL's second encoder is only in SDXL folders; its refiner has no first one
            let optional = match *folder {
                "text_encoder_2" => !sdxl,
                "text_encoder" => sdxl && !sub.is_dir(),
                _ => false,
            };
            if optional {
                continue;
            }
            let found = stems.iter().find_map(|stem| {
                [".safetensors", ".fp16.safetensors", ".bin", ".fp16.bin"]
                    .iter()
                    .map(|ext| sub.join(format!("{stem}{ext}")))
                    .find(|p| p.is_file())
            });
            let Some(p) = found else {
                return Err(WeightsError::BadDiffusers {
                    path: dir.to_path_buf(),
                    detail: format!(
                        "no weights in {folder}/ (looked for {}.safetensors)",
                        stems[0]
                    ),
                });
            };
            let file = File::open(&p)?;
            let entries = file.entries();
            let idx = w.files.len();
            w.files.push((p, file));
            w.add(idx, entries, |k| layout::diffusers::map_key(prefix, k))?;
        }
        Ok(w)
    }

    fn add(
        &mut self,
        file: usize,
        entries: Entries,
        map: impl Fn(&str) -> Vec<Mapped>,
    ) -> Result<()> {
        let path = self.files[file].0.clone();
        for (index, (key, dtype, shape)) in entries.into_iter().enumerate() {
            for m in map(&key) {
                let mut shape = shape.clone();
                if let Some((_, n)) = m.part {
                    if shape.is_empty() || shape[0] % n != 0 {
                        return Err(WeightsError::ShapeMismatch {
                            path,
                            name: key,
                            found: shape,
                            expected: vec![],
                        });
                    }
                    shape[0] /= n;
                }
                if m.transposed {
                    if shape.len() != 2 {
                        return Err(WeightsError::ShapeMismatch {
                            path,
                            name: key,
                            found: shape,
                            expected: vec![0, 0],
                        });
                    }
                    shape.reverse();
                }
                if !dtype.is_float() {
                    return Err(WeightsError::BadDtype {
                        path,
                        name: key,
                        dtype: dtype.to_string(),
                    });
                }
                if self.tensors.contains_key(&m.name) {
                    return Err(WeightsError::BadSafetensors {
                        path,
                        detail: format!("two tensors map to `{}` (the second is `{key}`)", m.name),
                    });
                }
                self.tensors.insert(
                    m.name,
                    Source {
                        file,
                        index,
                        part: m.part,
                        transposed: m.transposed,
                        dtype,
                        shape,
                    },
                );
            }
            self.raw_keys.push(key);
        }
        Ok(())
    }

    /// The checkpoint's path (file or folder).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Safetensors `__metadata__` (empty for other formats).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The files behind this checkpoint (one, or one per diffusers component).
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    /// Every key as stored in the files, mapped or not.
    pub fn raw_keys(&self) -> impl Iterator<Item = &str> {
        self.raw_keys.iter().map(String::as_str)
    }

    /// Canonical names of the tensors a model can use.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Whether a canonical tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A canonical tensor's shape.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|s| s.shape.as_slice())
    }

    /// A canonical tensor's stored dtype.
    pub fn storage_dtype(&self, name: &str) -> Option<StorageDtype> {
        self.tensors.get(name).map(|s| s.dtype)
    }

    /// Number of parameters under a canonical prefix (`unet.`, `vae.`, `text_encoder.`).
    pub fn param_count(&self, prefix: &str) -> usize {
        self.tensors
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, s)| s.shape.iter().product::<usize>())
            .sum()
    }

    /// Loads a canonical tensor as `dtype` on `device`.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let src = self
            .tensors
            .get(name)
            .ok_or_else(|| WeightsError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        let (path, file) = &self.files[src.file];
        let bytes = file.bytes(src.index);
        let bytes = match src.part {
            None => &bytes[..],
            Some((i, n)) => {
                let len = bytes.len() / n;
                &bytes[i * len..(i + 1) * len]
            }
        };
        let err = |e| WeightsError::Tensor {
            path: path.clone(),
            name: name.to_string(),
            source: Box::new(e),
        };
        let t = if src.transposed {
            let stored: Vec<usize> = src.shape.iter().rev().copied().collect();
            dtype::decode(bytes, src.dtype, &stored, dtype, device)
                .and_then(|t| t.t()?.contiguous())
                .map_err(err)
        } else {
            dtype::decode(bytes, src.dtype, &src.shape, dtype, device).map_err(err)
        };
        // the decoded tensor is a copy (or a failure): the file's pages need not stay resident
        file.release(src.index);
        t
    }

    /// Loads a canonical tensor that must have `shape`; a stored shape that differs only by
    /// trailing unit dimensions (a 1×1 convolution kernel for a linear layer, or the reverse)
    /// is reshaped.
    pub fn load_shaped(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        self.check_shape(name, shape)?;
        let t = self.load(name, dtype, device)?;
        t.reshape(shape).map_err(|e| WeightsError::Tensor {
            path: self.path.clone(),
            name: name.to_string(),
            source: Box::new(e),
        })
    }

    /// Checks that tensor `name` can serve as `shape` (equal up to trailing unit dimensions).
    fn check_shape(&self, name: &str, shape: &[usize]) -> Result<()> {
        let found = self
            .shape(name)
            .ok_or_else(|| WeightsError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        let trim = |s: &[usize]| {
            let mut v = s.to_vec();
            while v.len() > 1 && v.last() == Some(&1) {
                v.pop();
            }
            v
        };
        if found != shape && trim(found) != trim(shape) {
            return Err(WeightsError::ShapeMismatch {
                path: self.path.clone(),
                name: name.to_string(),
                found: found.to_vec(),
                expected: shape.to_vec(),
            });
        }
        Ok(())
    }

    /// The storage dtypes of the canonical tensors with their parameter counts.
    pub fn dtype_histogram(&self) -> BTreeMap<StorageDtype, usize> {
        let mut h = BTreeMap::new();
        for s in self.tensors.values() {
            *h.entry(s.dtype).or_insert(0) += s.shape.iter().product::<usize>();
        }
        h
    }

    /// A candle `VarBuilder` over the canonical names, producing `dtype` tensors on `device`.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> candle_nn::VarBuilder<'_> {
        self.var_builder_patched(dtype, device, None)
    }

    /// [`Self::var_builder`] whose tensors pass through `patch` (extra networks merged into
    /// the weights as they are loaded), in their stored shape, before any reshape.
    pub fn var_builder_patched<'a>(
        &'a self,
        dtype: DType,
        device: &Device,
        patch: Option<&'a dyn TensorPatch>,
    ) -> candle_nn::VarBuilder<'a> {
        let backend = Backend {
            weights: self,
            cache: Mutex::new(HashMap::new()),
            patch,
        };
        candle_nn::VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
    }

    /// [`Self::var_builder`] with every tensor under `prefix` decoded up front, in parallel
    /// (decoding f16 weights to f32 is most of a network's load time). Each preloaded tensor
    /// is handed out once (the builder keeps no reference, so a network that converts a
    /// weight frees the decoded copy); asking again decodes it again.
    pub fn var_builder_preloaded<'a>(
        &'a self,
        prefix: &str,
        dtype: DType,
        device: &Device,
        patch: Option<&'a dyn TensorPatch>,
    ) -> Result<candle_nn::VarBuilder<'a>> {
        use rayon::prelude::*;
        let names: Vec<&str> = self.names().filter(|n| n.starts_with(prefix)).collect();
        let cache = names
            .par_iter()
            .map(|n| Ok((n.to_string(), self.load(n, dtype, device)?)))
            .collect::<Result<HashMap<String, Tensor>>>()?;
        let backend = Backend {
            weights: self,
            cache: Mutex::new(cache),
            patch,
        };
        Ok(candle_nn::VarBuilder::from_backend(
            Box::new(backend),
            dtype,
            device.clone(),
        ))
    }
}

/// A change applied to some tensors as a network is built from the weights (extra networks
/// merged into the checkpoint's weights).
pub trait TensorPatch: Send + Sync {
    /// Whether the canonical tensor `name` is changed.
    fn touches(&self, name: &str) -> bool;
    /// The changed tensor: `original` is the stored tensor (stored shape, the builder's
    /// dtype); the result must have its shape and dtype.
    fn patch(&self, name: &str, original: Tensor) -> candle_core::Result<Tensor>;
}

struct Backend<'a> {
    weights: &'a Weights,
    cache: Mutex<HashMap<String, Tensor>>,
    patch: Option<&'a dyn TensorPatch>,
}

impl Backend<'_> {
    /// `t` through the patch, when it touches `name`.
    fn patched(&self, name: &str, t: Tensor) -> candle_core::Result<Tensor> {
        match self.patch {
            Some(p) if p.touches(name) => {
                let (shape, dtype) = (t.shape().clone(), t.dtype());
                let out = p.patch(name, t)?;
                if out.shape() != &shape || out.dtype() != dtype {
                    candle_core::bail!(
                        "patch of {name} changed it from {shape:?} {dtype:?} to {:?} {:?}",
                        out.shape(),
                        out.dtype()
                    );
                }
                Ok(out)
            }
            _ => Ok(t),
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for Backend<'_> {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let cached = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(name) {
                Some(t) if t.dtype() == dtype && t.elem_count() == s.elem_count() => {
                    cache.remove(name)
                }
                _ => None,
            }
        };
        // shape checks as `load_shaped` (only trailing unit dimensions may differ)
        self.weights
            .check_shape(name, s.dims())
            .map_err(candle_core::Error::wrap)?;
        let t = match cached {
            Some(t) => t,
            None => self
                .weights
                .load(name, dtype, dev)
                .map_err(candle_core::Error::wrap)?,
        };
        self.patched(name, t)?.reshape(s)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self
            .weights
            .load(name, dtype, dev)
            .map_err(candle_core::Error::wrap)?;
        self.patched(name, t)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.weights.contains(name)
    }
}
