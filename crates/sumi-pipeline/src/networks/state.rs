//! The networks in force on a pipeline: the LoRA folders' listing, the networks read (kept
//! while in use), and which set the U-Net and the text encoder hold, layer by layer. A job
//! whose set differs loads again only the layers whose networks changed, from the checkpoint's
//! own tensors: a job without networks after one with them is the checkpoint exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use candle_core::Tensor;
use sumi_models::networks::NetworkModule;
use sumi_weights::embedding::Embedding;
use sumi_weights::lora::{read_network, AttentionPart, NetworkLibrary, NetworkOnDisk, TargetIndex};
use sumi_weights::Weights;

use super::activation::LoraActivation;
use super::patch::{ErrorCounts, LayerNetwork};
use crate::error::{PipelineError, Result};

/// One network file read against the loaded model, ready to merge.
pub(crate) struct ReadNetwork {
    /// The file's modification time when read (a newer file is read again, as A1111).
    mtime: Option<SystemTime>,
    /// Its modules.
    pub modules: Vec<ModuleOnLayer>,
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

/// What a built U-Net or text encoder holds merged.
#[derive(Default)]
pub(crate) struct Built {
    /// The set.
    pub key: SetKey,
    /// Per layer (canonical module prefix), the networks merged into it, in order: (file,
    /// multiplier, rank limit, mtime), as in [`SetKey`].
    pub layers: HashMap<String, SetKey>,
    /// What a merge done before any job reported (error counts, layers whose networks' bias
    /// was not applied), for the first job to report.
    pub unreported: Option<(ErrorCounts, Vec<String>)>,
}

impl Built {
    /// The layers whose networks differ between `self` and `want`, sorted.
    pub fn changed(&self, want: &HashMap<String, SetKey>) -> Vec<String> {
        let mut out: Vec<String> = self
            .layers
            .keys()
            .chain(want.keys())
            .filter(|m| self.layers.get(*m) != want.get(*m))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The state of a pipeline's networks.
pub(crate) struct NetworkState {
    dirs: Vec<PathBuf>,
    library: Mutex<Option<NetworkLibrary>>,
    read: Mutex<HashMap<PathBuf, Arc<ReadNetwork>>>,
    /// What the current U-Net holds.
    pub unet_set: Mutex<Built>,
    /// What the current text encoder holds.
    pub clip_set: Mutex<Built>,
    /// What the current second text encoder (SDXL's bigG) holds.
    pub clip_g_set: Mutex<Built>,
    /// How the last activation brought the networks to its set.
    pub update: Mutex<super::NetworkUpdate>,
    /// The model's layers by A1111's names (made once, on the first job with a network).
    index: std::sync::OnceLock<TargetIndex>,
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
            unet_set: Mutex::new(Built::default()),
            clip_set: Mutex::new(Built::default()),
            clip_g_set: Mutex::new(Built::default()),
            update: Mutex::new(super::NetworkUpdate::default()),
            index: std::sync::OnceLock::new(),
        }
    }

    /// The model's layers by A1111's names, made by `make` on first use.
    pub fn index(&self, make: impl FnOnce() -> TargetIndex) -> &TargetIndex {
        self.index.get_or_init(make)
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
        weights: &Weights,
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
            match self.read_cached(&file, weights, index, width) {
                Ok(read) => {
                    warnings.extend(read.notes.iter().cloned());
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
        weights: &Weights,
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
        Ok(Arc::new(read_file(file, weights, index, width, now)?))
    }
}

/// One module of a network on one layer: (canonical module prefix, text encoder layer?,
/// keeps its `ex_bias`?, module).
pub(crate) type ModuleOnLayer = (String, bool, bool, Arc<NetworkModule>);

/// A1111's `create_module` for one module's parts: no type accepting them, or parts a type
/// refuses for the layer (its load-time checks), fail the whole network.
fn module_of(
    path: &Path,
    sd_key: &str,
    tensors: &std::collections::BTreeMap<String, Tensor>,
    layer_shape: Option<&[usize]>,
) -> Result<NetworkModule> {
    let fail = |detail: String| PipelineError::Network {
        path: path.to_path_buf(),
        detail: format!("{sd_key}: {detail}"),
    };
    let module = NetworkModule::from_tensors(tensors)
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| {
            fail(format!(
                "Could not find a module type that would accept those keys: {}",
                tensors.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
    if let Some(shape) = layer_shape {
        module.check_layer(shape).map_err(|e| fail(e.to_string()))?;
    }
    Ok(module)
}

/// Reads one network file against the model.
fn read_file(
    file: &NetworkOnDisk,
    weights: &Weights,
    index: &TargetIndex,
    width: usize,
    mtime: Option<SystemTime>,
) -> Result<ReadNetwork> {
    let path = file.path.as_path();
    let net = read_network(path, index)?;
    let mut modules = Vec::with_capacity(net.targets.len());
    for t in &net.targets {
        // SD2's OpenCLIP q/k/v come out of one in_proj: A1111 checks nothing per part
        let shape = match t.attention {
            None => weights.shape(&format!("{}.weight", t.module)),
            Some(_) => None,
        };
        let module = module_of(path, &t.sd_key, &t.tensors, shape)?;
        // A1111 drops the ex_bias of OpenCLIP's q, k and v (only out_proj's is added)
        let keeps_bias = matches!(t.attention, None | Some(AttentionPart::Out));
        modules.push((
            t.module.clone(),
            t.text_encoder,
            keeps_bias,
            Arc::new(module),
        ));
    }
    // modules A1111 matches and never applies must still be of a known type
    for m in &net.inert {
        module_of(path, &m.sd_key, &m.tensors, None)?;
    }
    let mut notes = Vec::new();
    if !net.unmatched.is_empty() {
        notes.push(unmatched_note(path, &net.unmatched, index.family()));
    }
    if !net.inert.is_empty() {
        let list: Vec<String> = net
            .inert
            .iter()
            .map(|m| format!("{} ({})", m.sd_key, m.reason.describe()))
            .collect();
        notes.push(format!(
            "{}: {} modules are not applied, as in A1111: {}",
            path.display(),
            list.len(),
            list.join(", ")
        ));
    }
    let mut embeddings = Vec::new();
    for b in &net.bundled_embeddings {
        match bundled_embedding(path, &b.name, b.vectors.as_ref(), width) {
            Ok(e) => embeddings.push(e),
            Err(why) => notes.push(format!(
                "{}: bundled embedding {} not used: {why}",
                path.display(),
                b.name
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

/// The group of a network key: its text up to the second `_` (`lora_te1`, `lora_unet`), or to
/// the first `.`, whichever comes first.
fn key_group(key: &str) -> &str {
    let head = key.split('.').next().unwrap_or(key);
    match head.match_indices('_').nth(1) {
        Some((i, _)) => &head[..i],
        None => head,
    }
}

/// The warning for the keys of a network file that match no layer of the model (A1111 logs
/// them at debug level only): every group of them named with its count and first key, and
/// what the groups say when the file is for another model family (an SD1/SD2 LoRA's
/// `lora_te_` keys on SDXL, an SDXL LoRA's `lora_te2_` keys on SD1/SD2).
fn unmatched_note(path: &Path, unmatched: &[String], family: sumi_weights::Family) -> String {
    let mut groups: Vec<(&str, usize, &str)> = Vec::new();
    for k in unmatched {
        let g = key_group(k);
        match groups.iter_mut().find(|(name, _, _)| *name == g) {
            Some(entry) => entry.1 += 1,
            None => groups.push((g, 1, k)),
        }
    }
    let list: Vec<String> = groups
        .iter()
        .map(|(g, n, first)| format!("{g}_* ({n} keys, e.g. {first})"))
        .collect();
    let has = |g: &str| groups.iter().any(|(name, _, _)| *name == g);
    let hint = if family.is_sdxl() && has("lora_te") {
        "; `lora_te_` keys name an SD1/SD2 text encoder: this looks like a LoRA for SD1/SD2, \
         not for SDXL"
    } else if !family.is_sdxl() && (has("lora_te2") || has("lora_te1")) {
        "; `lora_te1_`/`lora_te2_` keys name SDXL's text encoders: this looks like an SDXL LoRA"
    } else {
        ""
    };
    format!(
        "{}: {} keys match no layer of this model and are not applied: {}{hint}",
        path.display(),
        unmatched.len(),
        list.join(", ")
    )
}

/// A bundled textual inversion as A1111 registers it, when this model can use it.
fn bundled_embedding(
    path: &Path,
    name: &str,
    vectors: Option<&Tensor>,
    width: usize,
) -> std::result::Result<Embedding, String> {
    let vectors = vectors
        .ok_or("its vectors are not one text encoder's (SDXL clip_l/clip_g, or not 1-D/2-D)")?;
    let w = vectors.dims().last().copied().unwrap_or(0);
    if w != width {
        return Err(format!(
            "its vectors are {w} wide, this model's text encoder {width}"
        ));
    }
    Ok(Embedding {
        name: name.to_string(),
        path: path.join(name),
        vectors: vectors.clone(),
        step: None,
        positions: None,
    })
}

/// The canonical prefixes of the networks LoRAs change: the U-Net, the text encoder, SDXL's
/// second text encoder.
pub(crate) const UNET: &str = "unet.";
/// See [`UNET`].
pub(crate) const TEXT_ENCODER: &str = "text_encoder.";
/// See [`UNET`].
pub(crate) const TEXT_ENCODER_2: &str = "text_encoder_2.";

/// The layers of one network (the one whose canonical names start with `network`: [`UNET`],
/// [`TEXT_ENCODER`], [`TEXT_ENCODER_2`]) the resolved LoRAs change, with their multipliers
/// (each module's by A1111's te/U-Net rule), and what the network holds with them merged.
pub(crate) fn layers(
    resolved: &[Resolved],
    network: &str,
) -> (HashMap<String, Vec<LayerNetwork>>, Built) {
    let mut layers: HashMap<String, Vec<LayerNetwork>> = HashMap::new();
    let mut built = Built::default();
    for r in resolved {
        let mut entries: SetKey = Vec::new();
        for (module, te, keeps_bias, m) in &r.read.modules {
            if !module.starts_with(network) {
                continue;
            }
            let multiplier = if *te { r.tag.te } else { r.tag.unet };
            let entry = (
                r.file.path.clone(),
                multiplier.to_bits(),
                r.tag.dyn_dim,
                r.read.mtime,
            );
            // (a network whose layers here take both multipliers is in the set with both)
            if !entries.contains(&entry) {
                entries.push(entry.clone());
            }
            built
                .layers
                .entry(module.clone())
                .or_default()
                .push(entry.clone());
            layers
                .entry(module.clone())
                .or_default()
                .push(LayerNetwork {
                    name: r.tag.name.clone(),
                    module: m.clone(),
                    keeps_bias: *keeps_bias,
                    multiplier,
                    dyn_dim: r.tag.dyn_dim,
                });
        }
        built.key.extend(entries);
    }
    (layers, built)
}
