//! The networks in force on a pipeline: the LoRA folders' listing, the networks read (kept
//! while in use), and which set the U-Net and the text encoder were last built with. A job
//! whose set differs rebuilds only the network (U-Net, text encoder) whose set changed, from
//! the checkpoint's own tensors: a job without networks after one with them is the checkpoint
//! exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::deps::NetworkModule;
use super::deps::{read_network, NetworkLibrary, NetworkOnDisk, TargetIndex};
use candle_core::Tensor;
use sumi_weights::embedding::Embedding;

use super::activation::LoraActivation;
use super::patch::LayerNetwork;
use crate::error::{PipelineError, Result};

/// One network file read against the loaded model, ready to merge.
pub(crate) struct ReadNetwork {
    /// The file's modification time when read (a newer file is read again, as A1111).
    mtime: Option<SystemTime>,
    /// Its modules: (canonical module prefix, text encoder layer?, module).
    pub modules: Vec<(String, bool, Arc<NetworkModule>)>,
    /// Its bundled textual inversions usable with this model.
    pub embeddings: Vec<Embedding>,
    /// Lines about the file (keys that matched no layer, bundled embeddings not used).
    pub notes: Vec<String>,
    /// A1111's short hash of the file (`Lora hashes`), when it could be computed.
    pub shorthash: Option<String>,
}

/// A LoRA of a job, resolved to its file.
pub(crate) struct Resolved {
    /// The tag.
    pub tag: LoraActivation,
    /// The file.
    pub file: NetworkOnDisk,
    /// The file read.
    pub read: Arc<ReadNetwork>,
}

/// Which networks a built U-Net or text encoder holds: (file, multiplier, rank limit, mtime).
pub(crate) type SetKey = Vec<(PathBuf, u64, Option<usize>, Option<SystemTime>)>;

/// The state of a pipeline's networks.
pub(crate) struct NetworkState {
    dirs: Vec<PathBuf>,
    library: Mutex<Option<NetworkLibrary>>,
    read: Mutex<HashMap<PathBuf, Arc<ReadNetwork>>>,
    /// The set the current U-Net was built with.
    pub unet_set: Mutex<SetKey>,
    /// The set the current text encoder was built with.
    pub clip_set: Mutex<SetKey>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl NetworkState {
    /// No network applied; LoRAs are looked for in `dirs`.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self {
            dirs,
            library: Mutex::new(None),
            read: Mutex::new(HashMap::new()),
            unet_set: Mutex::new(Vec::new()),
            clip_set: Mutex::new(Vec::new()),
        }
    }

    /// The folders listed again (A1111's refresh).
    pub fn refresh(&self) -> Result<Vec<NetworkOnDisk>> {
        let lib = NetworkLibrary::scan(&self.dirs)?;
        let all = lib.all().to_vec();
        *self.library.lock().unwrap_or_else(|e| e.into_inner()) = Some(lib);
        Ok(all)
    }

    /// The listing (made on first use).
    pub fn list(&self) -> Result<Vec<NetworkOnDisk>> {
        {
            let lib = self.library.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(lib) = lib.as_ref() {
                return Ok(lib.all().to_vec());
            }
        }
        self.refresh()
    }

    /// `name` as A1111 resolves it; a name not found lists the folders again first.
    fn find(&self, name: &str) -> Result<Option<NetworkOnDisk>> {
        {
            let lib = self.library.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(found) = lib.as_ref().and_then(|l| l.find(name)) {
                return Ok(Some(found.clone()));
            }
        }
        self.refresh()?;
        let lib = self.library.lock().unwrap_or_else(|e| e.into_inner());
        Ok(lib.as_ref().and_then(|l| l.find(name)).cloned())
    }

    /// Resolves and reads the LoRAs of a job; a name not found or a file that cannot be read is
    /// a warning (A1111 makes the image without it: "Lora not found: …", or the load error).
    pub fn resolve(
        &self,
        tags: &[LoraActivation],
        index: &TargetIndex,
        width: usize,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<Resolved>> {
        let mut out = Vec::new();
        let mut missing: Vec<&str> = Vec::new();
        let mut keep: HashMap<PathBuf, Arc<ReadNetwork>> = HashMap::new();
        for tag in tags {
            let file = if self.dirs.is_empty() {
                None
            } else {
                self.find(&tag.name)?
            };
            let Some(file) = file else {
                missing.push(&tag.name);
                continue;
            };
            match self.read_cached(&file, index, width) {
                Ok(read) => {
                    keep.insert(file.path.clone(), read.clone());
                    out.push(Resolved {
                        tag: tag.clone(),
                        file,
                        read,
                    });
                }
                Err(e) => warnings.push(format!("loading network {}: {e}", file.path.display())),
            }
        }
        // only the networks in use stay in memory (A1111's lora_in_memory_limit of 0)
        *self.read.lock().unwrap_or_else(|e| e.into_inner()) = keep;
        if !missing.is_empty() {
            let mut line = format!("Lora not found: {}", missing.join(", "));
            if self.dirs.is_empty() {
                line.push_str(" (no LoRA folder given: --lora-dir)");
            }
            warnings.push(line);
        }
        // A1111's loaded_networks holds one object per file: a LoRA named twice applies twice,
        // both times with the multipliers of its last tag
        for i in 0..out.len() {
            if let Some(last) = out.iter().rposition(|r| r.tag.name == out[i].tag.name) {
                out[i].tag = LoraActivation {
                    name: out[i].tag.name.clone(),
                    ..out[last].tag.clone()
                };
            }
        }
        Ok(out)
    }

    fn read_cached(
        &self,
        file: &NetworkOnDisk,
        index: &TargetIndex,
        width: usize,
    ) -> Result<Arc<ReadNetwork>> {
        let path = file.path.as_path();
        let now = mtime(path);
        if let Some(r) = self
            .read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            if r.mtime == now {
                return Ok(r.clone());
            }
        }
        Ok(Arc::new(read_file(file, path, index, width, now)?))
    }
}

/// Reads one network file against the model.
fn read_file(
    file: &NetworkOnDisk,
    path: &Path,
    index: &TargetIndex,
    width: usize,
    mtime: Option<SystemTime>,
) -> Result<ReadNetwork> {
    let net = read_network(path, index)?;
    let mut modules = Vec::with_capacity(net.targets.len());
    for t in &net.targets {
        let module = NetworkModule::from_tensors(&t.tensors)
            .map_err(|e| PipelineError::Network {
                path: path.to_path_buf(),
                detail: format!("{}: {e}", t.sd_key),
            })?
            .ok_or_else(|| PipelineError::Network {
                path: path.to_path_buf(),
                detail: format!(
                    "Could not find a module type that would accept those keys: {}",
                    t.tensors.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })?;
        modules.push((t.module.clone(), t.text_encoder, Arc::new(module)));
    }
    let mut notes = Vec::new();
    if !net.unmatched.is_empty() {
        notes.push(format!(
            "{}: {} keys match no layer of this model and are not applied (e.g. {})",
            path.display(),
            net.unmatched.len(),
            net.unmatched
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut embeddings = Vec::new();
    for (name, data) in &net.bundled_embeddings {
        match bundled_embedding(path, name, data, width) {
            Ok(e) => embeddings.push(e),
            Err(why) => notes.push(format!(
                "{}: bundled embedding {name} not used: {why}",
                path.display()
            )),
        }
    }
    let shorthash = match file.shorthash() {
        Ok(h) => Some(h),
        Err(e) => {
            notes.push(format!("{}: no hash: {e}", path.display()));
            None
        }
    };
    Ok(ReadNetwork {
        shorthash,
        mtime,
        modules,
        embeddings,
        notes,
    })
}

/// A1111's `create_embedding_from_data` for a bundled textual inversion (`string_to_param`).
fn bundled_embedding(
    path: &Path,
    name: &str,
    data: &std::collections::BTreeMap<String, Tensor>,
    width: usize,
) -> std::result::Result<Embedding, String> {
    let params: Vec<&Tensor> = data
        .iter()
        .filter(|(k, _)| k.split('.').next() == Some("string_to_param"))
        .map(|(_, v)| v)
        .collect();
    let vectors = match params.as_slice() {
        [one] => (*one).clone(),
        [] => return Err("it has no string_to_param vectors".into()),
        _ => return Err("embedding file has multiple terms in it".into()),
    };
    let vectors = match vectors.dims() {
        [w] => vectors.reshape((1, *w)),
        [_, _] => Ok(vectors),
        d => return Err(format!("vectors of shape {d:?}")),
    }
    .map_err(|e| e.to_string())?;
    if vectors.dims()[1] != width {
        return Err(format!(
            "its vectors are {} wide, this model's text encoder {width}",
            vectors.dims()[1]
        ));
    }
    Ok(Embedding {
        name: name.to_string(),
        path: path.join(name),
        vectors,
        step: None,
    })
}

/// The layers of one network (U-Net or text encoder) the resolved LoRAs change, with their
/// multipliers, and the set's key.
pub(crate) fn layers(
    resolved: &[Resolved],
    text_encoder: bool,
) -> (HashMap<String, Vec<LayerNetwork>>, SetKey) {
    let mut layers: HashMap<String, Vec<LayerNetwork>> = HashMap::new();
    let mut key = SetKey::new();
    for r in resolved {
        let multiplier = if text_encoder { r.tag.te } else { r.tag.unet };
        let mut any = false;
        for (module, te, m) in &r.read.modules {
            if *te != text_encoder {
                continue;
            }
            any = true;
            layers
                .entry(module.clone())
                .or_default()
                .push(LayerNetwork {
                    name: r.tag.name.clone(),
                    module: m.clone(),
                    multiplier,
                    dyn_dim: r.tag.dyn_dim,
                });
        }
        if any {
            key.push((
                r.file.path.clone(),
                multiplier.to_bits(),
                r.tag.dyn_dim,
                r.read.mtime,
            ));
        }
    }
    (layers, key)
}
