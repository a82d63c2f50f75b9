//! Reading a network file against a model: A1111's `load_network`
//! (`extensions-builtin/Lora/networks.py`) up to the creation of the network modules, which
//! is `sumi-models`' part.
//!
//! A1111 reads the file with `sd_models.read_state_dict` (by extension: `.safetensors` with
//! `safetensors`, anything else with `torch.load`, then the checkpoint's `state_dict` entry if
//! there is one), splits each key at its first `.` into the module name and the network part
//! (`lora_unet_…_proj_in` + `lora_up.weight`), resolves the module name to a layer
//! ([`TargetIndex::resolve`]) and groups the parts by the layer's A1111 name (`sd_key`): two
//! key spellings of one layer land in one module, a part given twice keeps the later tensor.
//! `bundle_emb.<name>.<vector>` keys are textual-inversion embeddings shipped in the file.
//!
//! Not restated: A1111's `checkpoint_dict_replacements` (which rename `cond_stage_model.…`
//! keys, and so never change a module name) and SD3's `diffusers_weight_map`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::library::splitext;
use super::targets::{AttentionPart, Inert, Resolved, Target, TargetIndex};
use crate::ckpt::{CkptTensor, TorchArchive};
use crate::dtype::{decode, StorageDtype};
use crate::error::{Result, WeightsError};
use crate::pickle::Value;
use crate::safetensors::{SafetensorsFile, TensorEntry};

/// Most tensors a network file may hold (an SDXL LyCORIS with every layer has about 10,000).
pub const MAX_NETWORK_TENSORS: usize = 100_000;

/// Most bytes of the f32 tensors handed out for one network file: 8 GiB, four times the 2 GiB
/// that the largest real networks (full-rank diffs of a U-Net in f16) store.
pub const MAX_NETWORK_F32_BYTES: u64 = 8 << 30;

/// One layer a network changes (A1111's `NetworkWeights` of a matched module).
#[derive(Debug, Clone)]
pub struct NetworkTarget {
    /// Canonical module prefix, e.g. `unet.down_blocks.0.attentions.0.proj_in` (tensors
    /// `<module>.weight`, `<module>.bias`).
    pub module: String,
    /// A1111's compvis module name (for messages, and the te/U-Net multiplier rule).
    pub sd_key: String,
    /// The first file key that named this module (A1111's `network_key`).
    pub network_key: String,
    /// The text-encoder multiplier applies (A1111: `'transformer' in sd_key[:20]`).
    pub text_encoder: bool,
    /// For SD2's OpenCLIP attention, which part this is: A1111 applies the four together
    /// (all present, or [`LoadedNetwork::inert`]) and drops the `ex_bias` of q, k and v
    /// (`updown_q, _ = module_q.calc_updown(qw)`); out's `ex_bias` goes to `out_proj.bias`.
    pub attention: Option<AttentionPart>,
    /// Network part (`lora_up.weight`, `alpha`, `hada_w1_a`, `dora_scale`, …) → tensor, f32 on
    /// the CPU (f16/bf16/f64 and integer tensors converted).
    pub tensors: BTreeMap<String, Tensor>,
}

/// A module A1111 matches and never applies (see [`Inert`]). A1111 still builds its network
/// module, and fails the whole network when no module type accepts its parts.
#[derive(Debug, Clone)]
pub struct InertModule {
    /// A1111's module name.
    pub sd_key: String,
    /// The first file key that named it.
    pub network_key: String,
    /// Why nothing is applied.
    pub reason: Inert,
    /// Network part → tensor (f32, CPU).
    pub tensors: BTreeMap<String, Tensor>,
}

/// A textual-inversion embedding bundled in a network file (`bundle_emb.<name>.<vector>`).
#[derive(Debug, Clone)]
pub struct BundledEmbedding {
    /// The embedding's name (used in prompts).
    pub name: String,
    /// Its tensors as A1111 groups them: `<vector>` → tensor, where a later
    /// `string_to_param.<k>` replaces any earlier `string_to_param.*` (f32, CPU).
    pub tensors: BTreeMap<String, Tensor>,
    /// The vectors, `[n, width]` (A1111's `create_embedding_from_data`: the `string_to_param`
    /// tensor, else the only tensor, a 1-D one as one vector); `None` for an SDXL
    /// `clip_l` + `clip_g` pair or a tensor that is not 1-D or 2-D, which SD1/SD2 cannot use.
    pub vectors: Option<Tensor>,
}

/// A network file read against a model.
#[derive(Debug, Clone, Default)]
pub struct LoadedNetwork {
    /// The layers it changes, in the order their first key appears.
    pub targets: Vec<NetworkTarget>,
    /// Modules A1111 matches and never applies.
    pub inert: Vec<InertModule>,
    /// Keys that match no module (A1111's `keys_failed_to_match`, which it logs at debug
    /// level), in file order; `bundle_emb.*` keys are not listed.
    pub unmatched: Vec<String>,
    /// The bundled embeddings, in the order of their first key.
    pub bundled_embeddings: Vec<BundledEmbedding>,
}

/// The file's tensors, by kind of file.
enum Source {
    St(SafetensorsFile),
    Ckpt(TorchArchive),
}

/// One state-dict value.
#[derive(Clone)]
enum Item {
    St(usize),
    Ckpt(Box<CkptTensor>),
    /// Not a tensor: its description.
    Other(String),
}

fn bad(path: &Path, detail: impl Into<String>) -> WeightsError {
    WeightsError::BadNetwork {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// The state dict of a `torch.load`ed file: A1111's `get_state_dict_from_checkpoint`
/// (`pl_sd.pop("state_dict", pl_sd)`, then `pop("state_dict")` of the result). Python dict
/// semantics: a key given twice keeps its first place and its last value.
fn torch_items(path: &Path, archive: &TorchArchive, root: Value) -> Result<Vec<(String, Item)>> {
    let Value::Dict(mut d) = root else {
        return Err(bad(path, "the pickle's root is not a dict"));
    };
    let is_sd = |k: &Value| *k == Value::Str("state_dict".into());
    if let Some(i) = d.iter().position(|(k, _)| is_sd(k)) {
        match d.swap_remove(i).1 {
            Value::Dict(inner) => d = inner,
            other => {
                return Err(bad(
                    path,
                    format!("`state_dict` is {}, not a dict", other.describe()),
                ))
            }
        }
    }
    let mut items: Vec<(String, Item)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for (k, v) in d {
        if is_sd(&k) {
            continue;
        }
        let Value::Str(key) = k else {
            return Err(bad(
                path,
                format!("a state-dict key is {}, not a string", k.describe()),
            ));
        };
        let item = match v {
            Value::Tensor(t) => Item::Ckpt(Box::new(archive.tensor(key.clone(), *t)?)),
            other => Item::Other(other.describe()),
        };
        match at.get(&key) {
            Some(&i) => items[i].1 = item,
            None => {
                at.insert(key.clone(), items.len());
                items.push((key, item));
            }
        }
    }
    Ok(items)
}

fn open(path: &Path) -> Result<(Source, Vec<(String, Item)>)> {
    // A1111's read_state_dict: `os.path.splitext(checkpoint_file)` → `.safetensors` (any case)
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let safetensors = splitext(&file_name).1.to_lowercase() == ".safetensors";
    if safetensors {
        let f = SafetensorsFile::open(path)?;
        let mut items: Vec<(String, Item)> = f
            .entries()
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), Item::St(i)))
            .collect();
        // `safetensors.torch.load_file` yields the keys sorted
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((Source::St(f), items))
    } else {
        let (archive, root) = TorchArchive::open(path)?;
        let items = torch_items(path, &archive, root)?;
        Ok((Source::Ckpt(archive), items))
    }
}

impl Source {
    fn shape(&self, item: &Item) -> Option<(StorageDtype, Vec<usize>)> {
        match (self, item) {
            (Source::St(f), Item::St(i)) => f.entries().get(*i).map(|e| (e.dtype, e.shape.clone())),
            (_, Item::Ckpt(t)) => Some((t.dtype, t.shape.clone())),
            _ => None,
        }
    }

    /// The tensor as f32 on the CPU; `key` names it in errors.
    fn load(&self, path: &Path, key: &str, item: &Item) -> Result<Tensor> {
        let tensor_err = |e: candle_core::Error| WeightsError::Tensor {
            path: path.to_path_buf(),
            name: key.to_string(),
            source: Box::new(e),
        };
        match (self, item) {
            (Source::St(f), Item::St(i)) => {
                let e: &TensorEntry = f
                    .entries()
                    .get(*i)
                    .ok_or_else(|| bad(path, format!("`{key}`: no such tensor")))?;
                to_f32(f.bytes(e), e.dtype, &e.shape).map_err(tensor_err)
            }
            (Source::Ckpt(a), Item::Ckpt(t)) => {
                to_f32(&a.bytes(t), t.dtype, &t.shape).map_err(tensor_err)
            }
            (_, Item::Other(what)) => Err(bad(
                path,
                format!("`{key}` is {what}, not a tensor (A1111 fails on it)"),
            )),
            _ => Err(bad(path, format!("`{key}`: no such tensor"))),
        }
    }
}

/// Little-endian bytes of any stored dtype → f32 tensor (integers and booleans by value, as
/// A1111's `.item()` reads an integer `alpha`).
fn to_f32(bytes: &[u8], dtype: StorageDtype, shape: &[usize]) -> candle_core::Result<Tensor> {
    if dtype.is_float() {
        return decode(bytes, dtype, shape, DType::F32, &Device::Cpu);
    }
    let n = dtype.size();
    let v: Vec<f32> = bytes
        .chunks_exact(n)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(c);
            match dtype {
                StorageDtype::I64 => i64::from_le_bytes(b) as f32,
                StorageDtype::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
                StorageDtype::I16 => i16::from_le_bytes([b[0], b[1]]) as f32,
                StorageDtype::I8 => f32::from(b[0] as i8),
                _ => f32::from(b[0]),
            }
        })
        .collect();
    Tensor::from_vec(v, shape.to_vec(), &Device::Cpu)
}

/// Matched keys of one module, as A1111's `matched_networks[sd_key]`.
struct Group {
    resolved: Resolved,
    network_key: String,
    parts: BTreeMap<String, (String, Item)>,
}

/// Keys of one bundled embedding, as A1111's `bundle_embeddings[name]`.
struct Bundle {
    name: String,
    parts: Vec<(String, String, Item)>,
}

/// Reads the network file at `path` against the model `index` describes: A1111's
/// `load_network` (see the module docs). Errors name the file: an unreadable or malformed
/// file, more than [`MAX_NETWORK_TENSORS`] tensors or [`MAX_NETWORK_F32_BYTES`] to hand out,
/// a matched or bundled value that is no tensor, a malformed `bundle_emb` key, a bundle with
/// several terms, and the key names A1111's name conversion raises on.
pub fn read_network(path: &Path, index: &TargetIndex) -> Result<LoadedNetwork> {
    let (source, items) = open(path)?;
    if items.len() > MAX_NETWORK_TENSORS {
        return Err(bad(
            path,
            format!(
                "{} tensors, more than the limit of {MAX_NETWORK_TENSORS}",
                items.len()
            ),
        ));
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut group_at: HashMap<String, usize> = HashMap::new();
    let mut bundles: Vec<Bundle> = Vec::new();
    let mut unmatched = Vec::new();
    for (key, item) in items {
        // A1111: key_network.partition(".")
        let (module, part) = key.split_once('.').unwrap_or((key.as_str(), ""));
        if module == "bundle_emb" {
            add_to_bundle(path, &mut bundles, &key, part, item)?;
            continue;
        }
        let resolved = index
            .resolve(module)
            .map_err(|e| bad(path, format!("key `{key}`: {e}")))?;
        let Some(resolved) = resolved else {
            unmatched.push(key);
            continue;
        };
        let i = *group_at.entry(resolved.sd_key.clone()).or_insert_with(|| {
            groups.push(Group {
                resolved,
                network_key: key.clone(),
                parts: BTreeMap::new(),
            });
            groups.len() - 1
        });
        groups[i]
            .parts
            .insert(part.to_string(), (key.clone(), item));
    }
    check_size(path, &source, &groups, &bundles)?;
    let complete = complete_attentions(&groups);
    let mut out = LoadedNetwork {
        unmatched,
        ..LoadedNetwork::default()
    };
    for g in groups {
        let mut tensors = BTreeMap::new();
        for (part, (key, item)) in &g.parts {
            tensors.insert(part.clone(), source.load(path, key, item)?);
        }
        let text_encoder = g.resolved.text_encoder();
        let Resolved { sd_key, target } = g.resolved;
        let (module, attention) = match target {
            Target::Layer { module } => (module, None),
            Target::Attention {
                module,
                attention,
                part,
            } if complete.contains(&attention) => (module, Some(part)),
            Target::Attention { .. } => {
                out.inert.push(inert(
                    sd_key,
                    g.network_key,
                    Inert::IncompleteAttention,
                    tensors,
                ));
                continue;
            }
            Target::Inert(reason) => {
                out.inert
                    .push(inert(sd_key, g.network_key, reason, tensors));
                continue;
            }
        };
        out.targets.push(NetworkTarget {
            module,
            sd_key,
            network_key: g.network_key,
            text_encoder,
            attention,
            tensors,
        });
    }
    for b in bundles {
        out.bundled_embeddings.push(embedding(path, &source, b)?);
    }
    Ok(out)
}

fn inert(
    sd_key: String,
    network_key: String,
    reason: Inert,
    tensors: BTreeMap<String, Tensor>,
) -> InertModule {
    InertModule {
        sd_key,
        network_key,
        reason,
        tensors,
    }
}

/// The attentions (A1111 names) for which the network has all of q, k, v and out.
fn complete_attentions(groups: &[Group]) -> std::collections::HashSet<String> {
    let mut parts: HashMap<&str, Vec<AttentionPart>> = HashMap::new();
    for g in groups {
        if let Target::Attention {
            attention, part, ..
        } = &g.resolved.target
        {
            parts.entry(attention).or_default().push(*part);
        }
    }
    parts
        .into_iter()
        .filter(|(_, p)| {
            [
                AttentionPart::Q,
                AttentionPart::K,
                AttentionPart::V,
                AttentionPart::Out,
            ]
            .iter()
            .all(|x| p.contains(x))
        })
        .map(|(a, _)| a.to_string())
        .collect()
}

/// Refuses a network whose tensors to hand out exceed [`MAX_NETWORK_F32_BYTES`] as f32.
fn check_size(path: &Path, source: &Source, groups: &[Group], bundles: &[Bundle]) -> Result<()> {
    let items = groups
        .iter()
        .flat_map(|g| g.parts.values().map(|(_, i)| i))
        .chain(
            bundles
                .iter()
                .flat_map(|b| b.parts.iter().map(|(_, _, i)| i)),
        );
    let mut total: u64 = 0;
    for item in items {
        let Some((_, shape)) = source.shape(item) else {
            continue;
        };
        let bytes = shape.iter().try_fold(4u64, |a, &d| a.checked_mul(d as u64));
        total = bytes
            .and_then(|b| total.checked_add(b))
            .filter(|&t| t <= MAX_NETWORK_F32_BYTES)
            .ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "its matched tensors are more than {MAX_NETWORK_F32_BYTES} bytes as f32"
                    ),
                )
            })?;
    }
    Ok(())
}

/// A1111's grouping of one `bundle_emb.<name>.<vector>` key.
fn add_to_bundle(
    path: &Path,
    bundles: &mut Vec<Bundle>,
    key: &str,
    part: &str,
    item: Item,
) -> Result<()> {
    // A1111: emb_name, vec_name = network_part.split(".", 1) — raises without a dot
    let (name, vec_name) = part.split_once('.').ok_or_else(|| {
        bad(
            path,
            format!("bundled-embedding key `{key}` has no `.<vector>` part (A1111 fails on it)"),
        )
    })?;
    let i = match bundles.iter().position(|b| b.name == name) {
        Some(i) => i,
        None => {
            bundles.push(Bundle {
                name: name.to_string(),
                parts: Vec::new(),
            });
            bundles.len() - 1
        }
    };
    let b = &mut bundles[i];
    let first = vec_name.split('.').next().unwrap_or("");
    if first == "string_to_param" {
        if !vec_name.contains('.') {
            return Err(bad(
                path,
                format!("bundled-embedding key `{key}` has no `string_to_param.<term>` (A1111 fails on it)"),
            ));
        }
        // emb_dict['string_to_param'] = {k2: weight}: replaces the earlier term
        b.parts
            .retain(|(v, _, _)| !v.starts_with("string_to_param."));
    } else if let Some(slot) = b.parts.iter_mut().find(|(v, _, _)| v == vec_name) {
        // a dict assignment keeps the key's place
        *slot = (vec_name.to_string(), key.to_string(), item);
        return Ok(());
    }
    b.parts.push((vec_name.to_string(), key.to_string(), item));
    Ok(())
}

/// A1111's `create_embedding_from_data` on a bundle.
fn embedding(path: &Path, source: &Source, b: Bundle) -> Result<BundledEmbedding> {
    let mut tensors = BTreeMap::new();
    let mut term = None;
    for (vec_name, key, item) in &b.parts {
        let t = source.load(path, key, item)?;
        if vec_name.starts_with("string_to_param.") {
            term = Some(t.clone());
        }
        tensors.insert(vec_name.clone(), t);
    }
    let vectors = if let Some(t) = term {
        Some(t)
    } else if tensors.contains_key("clip_g") && tensors.contains_key("clip_l") {
        None
    } else if tensors.len() == 1 {
        tensors.values().next().cloned()
    } else {
        return Err(bad(
            path,
            format!(
                "bundled embedding `{}` has {} terms in it; A1111 reads one",
                b.name,
                tensors.len()
            ),
        ));
    };
    let vectors = match vectors {
        Some(t) if t.rank() == 1 => Some(t.unsqueeze(0).map_err(|e| WeightsError::Tensor {
            path: path.to_path_buf(),
            name: format!("bundle_emb.{}", b.name),
            source: Box::new(e),
        })?),
        Some(t) if t.rank() == 2 => Some(t),
        _ => None,
    };
    Ok(BundledEmbedding {
        name: b.name,
        tensors,
        vectors,
    })
}
