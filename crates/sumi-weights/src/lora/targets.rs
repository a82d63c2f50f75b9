//! The model's layers under the names A1111 gives them, and A1111's rules for finding the
//! layer a network module names.
//!
//! A1111 (`assign_network_names_to_compvis_modules`, `extensions-builtin/Lora/networks.py`)
//! names every module of the text encoder (`cond_stage_model.wrapped.named_modules()`: SD1
//! `transformer.text_model.…`, SD2 `model.transformer.resblocks.…`) and of the U-Net wrapper
//! (`sd_model.model.named_modules()`: `diffusion_model.…`) with `.` replaced by `_`. The VAE is
//! not among them. [`TargetIndex`] rebuilds that table from the canonical tensor names of a
//! loaded checkpoint: each canonical tensor is mapped back to its LDM key
//! ([`crate::layout::ldm::unmap_key`]), whose module path is the A1111 name.
//!
//! On SDXL (`sd_model.is_sdxl`) A1111 names the modules of each conditioner embedder with its
//! index in front (`embedder.wrapped.named_modules()`, `f'{i}_{name}'`): the base's CLIP-L
//! `0_transformer_text_model_…`, its OpenCLIP bigG `1_model_transformer_resblocks_…` (the
//! refiner's bigG is embedder 0), and the U-Net as on SD1 (`diffusion_model_…`, numbered as the
//! SGM file numbers its blocks).
//!
//! What A1111 then does with a matched module depends on the layer: it changes the weights of
//! `Linear`, `Conv2d`, `GroupNorm`, `LayerNorm` and `MultiheadAttention` layers only
//! (`lora_patches.py`); every other match is accepted and never applied ([`Inert`]).
//!
//! Known gap: parameterless modules (activations, dropout, SD2's `ls_1`) are not in the index,
//! so a key naming one is reported unmatched where A1111 accepts it and does nothing.

use std::collections::HashMap;

use super::convert::convert_diffusers_name_to_compvis;
use crate::detect::Family;
use crate::layout::ldm::{self, build_unet_table, unet_key_back_in, UnetRow};
use crate::layout::open_clip;

/// Why A1111 accepts a network module and never changes the model with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inert {
    /// A container (a block, a layer list, the model): A1111 only patches layers.
    Container,
    /// A token or position embedding: A1111 patches no `nn.Embedding`.
    Embedding,
    /// A layer of the last OpenCLIP resblock, which SD2 never runs (and Sumi does not keep).
    UnusedLayer,
    /// An OpenCLIP `nn.MultiheadAttention` named as a whole (A1111 counts an error for it).
    WholeAttention,
    /// A `…_q_proj`/`_k_proj`/`_v_proj` name that A1111 resolves to a layer that is no
    /// `nn.MultiheadAttention` (its module is filed under a name no layer asks for).
    NotAttention,
    /// One of q, k, v, out of an OpenCLIP attention whose network lacks one of the other
    /// three (A1111 applies them only all four together).
    IncompleteAttention,
}

impl Inert {
    /// A short explanation for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Inert::Container => "a container module, not a layer",
            Inert::Embedding => "an embedding layer, which A1111 never changes",
            Inert::UnusedLayer => "a layer of the last OpenCLIP block, which SD2 does not run",
            Inert::WholeAttention => "a whole attention module, which A1111 cannot change",
            Inert::NotAttention => "a q/k/v part of a layer that is not an attention",
            Inert::IncompleteAttention => {
                "part of an OpenCLIP attention without all of its q, k, v and out parts"
            }
        }
    }
}

/// One of the four parts of an OpenCLIP attention (SD2's text encoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttentionPart {
    /// The query projection (first third of `in_proj_weight`).
    Q,
    /// The key projection.
    K,
    /// The value projection.
    V,
    /// `out_proj`.
    Out,
}

impl AttentionPart {
    fn canonical(self) -> &'static str {
        match self {
            AttentionPart::Q => "q_proj",
            AttentionPart::K => "k_proj",
            AttentionPart::V => "v_proj",
            AttentionPart::Out => "out_proj",
        }
    }
}

/// Where a network module lands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A layer A1111 changes: its canonical module prefix (tensors `<module>.weight`,
    /// `<module>.bias`).
    Layer {
        /// Canonical module prefix, e.g. `unet.down_blocks.0.attentions.0.proj_in`.
        module: String,
    },
    /// One of q, k, v, out of an SD2 OpenCLIP attention, changed only when the network has
    /// all four (A1111's `network_apply_weights` for `nn.MultiheadAttention`).
    Attention {
        /// Canonical module prefix, e.g. `text_encoder.encoder.layers.0.self_attn.q_proj`.
        module: String,
        /// A1111's name of the attention, e.g. `model_transformer_resblocks_0_attn`.
        attention: String,
        /// Which part.
        part: AttentionPart,
    },
    /// Accepted and never applied.
    Inert(Inert),
}

/// A network module name resolved as A1111's `load_network` resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The A1111 module name it matched under (`sd_key`), e.g.
    /// `diffusion_model_input_blocks_1_1_proj_in` or `model_transformer_resblocks_0_attn_q_proj`.
    pub sd_key: String,
    /// What it changes.
    pub target: Target,
}

impl Resolved {
    /// Whether the text-encoder multiplier applies: A1111's `'transformer' in sd_key[:20]`
    /// (`NetworkModule.multiplier`), so SD2's `model_ln_final` takes the U-Net multiplier.
    pub fn text_encoder(&self) -> bool {
        let head: String = self.sd_key.chars().take(20).collect();
        head.contains("transformer")
    }
}

/// What A1111's `network_layer_mapping` holds under one name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// A layer A1111 patches: its canonical module.
    Layer(String),
    /// An OpenCLIP `nn.MultiheadAttention`: the canonical prefix of its parts (`…self_attn`).
    Mha(String),
    /// The `out_proj` of such an attention: the attention's canonical prefix and A1111 name.
    MhaOut { attention: String, mha_key: String },
    /// A module A1111 never changes.
    Inert(Inert),
}

/// A1111's `network_layer_mapping` for one loaded model: module names (`_`-joined)
/// to the layers they are, built from the model's canonical tensor names.
#[derive(Debug, Clone)]
pub struct TargetIndex {
    family: Family,
    slots: HashMap<String, Slot>,
}

/// The A1111 module path of an LDM key (`model.` of the U-Net wrapper and
/// `cond_stage_model.` of the text encoder's wrapper dropped); `None` for the VAE.
fn a1111_path(ldm_key: &str) -> Option<&str> {
    ldm_key
        .strip_prefix("model.")
        .filter(|k| k.starts_with("diffusion_model."))
        .or_else(|| ldm_key.strip_prefix("cond_stage_model."))
}

fn network_name(path: &str) -> String {
    path.replace('.', "_")
}

/// How canonical tensor names go back to the keys whose module paths A1111 names.
enum Paths {
    /// SD1/SD2: the LDM keys ([`ldm::unmap_key`]).
    Ldm(Family),
    /// SDXL: the SGM U-Net of this file's levels, and the conditioner embedders' indices.
    Sgm {
        unet: Vec<UnetRow>,
        clip_l: Option<usize>,
        clip_g: usize,
    },
}

impl Paths {
    fn new(names: &[&str], family: Family) -> Self {
        if !family.is_sdxl() {
            return Paths::Ldm(family);
        }
        let index = |rest: &str| -> Option<usize> { rest.split_once('.')?.0.parse().ok() };
        let mut levels = 0usize;
        let mut up_attention = std::collections::HashSet::new();
        for n in names {
            if let Some(i) = n.strip_prefix("unet.down_blocks.").and_then(index) {
                levels = levels.max(i.saturating_add(1));
            }
            if let Some(rest) = n.strip_prefix("unet.up_blocks.") {
                if let (Some(i), true) = (index(rest), rest.contains(".attentions.")) {
                    up_attention.insert(i);
                }
            }
        }
        // A1111's SDXL conditioner: the base's CLIP-L is embedder 0 and bigG 1; the refiner
        // has bigG only, as embedder 0
        let has_clip_l = names.iter().any(|n| n.starts_with("text_encoder."));
        Paths::Sgm {
            unet: build_unet_table(levels, &|i| up_attention.contains(&i)),
            clip_l: has_clip_l.then_some(0),
            clip_g: usize::from(has_clip_l),
        }
    }

    /// The key of a canonical tensor with the module path A1111 gives it (the U-Net's
    /// `model.diffusion_model.…`, the text encoder's `cond_stage_model.…`; on SDXL
    /// `cond_stage_model.<embedder>.…`); `None` for the VAE and names outside the model.
    fn key(&self, name: &str) -> Option<String> {
        let (unet, clip_l, clip_g) = match self {
            Paths::Ldm(family) => return ldm::unmap_key(name, *family).map(|m| m.name),
            Paths::Sgm {
                unet,
                clip_l,
                clip_g,
            } => (unet, clip_l, clip_g),
        };
        if let Some(rest) = name.strip_prefix("unet.") {
            return unet_key_back_in(unet, rest);
        }
        if let Some(rest) = name.strip_prefix("text_encoder_2.") {
            let m = open_clip::unmap_key(rest)?;
            return Some(format!("cond_stage_model.{clip_g}.model.{}", m.name));
        }
        let rest = name.strip_prefix("text_encoder.")?;
        let i = (*clip_l)?;
        Some(format!(
            "cond_stage_model.{i}.transformer.text_model.{rest}"
        ))
    }
}

/// Whether `module` (an A1111 module path) is the `out_proj` of an OpenCLIP attention (SD2's
/// `model.transformer.resblocks.N.attn.out_proj`, SDXL's under an embedder index).
fn is_open_clip_out_proj(module: &str) -> bool {
    let inner = match module.split_once('.') {
        Some((i, rest)) if i.parse::<usize>().is_ok() => rest,
        _ => module,
    };
    inner.starts_with("model.transformer.resblocks.") && inner.ends_with(".attn.out_proj")
}

impl TargetIndex {
    /// Builds the index from a model's canonical tensor names (`Weights::names()`) and its
    /// family. Names outside the U-Net and the text encoder are passed over.
    pub fn new<'a>(canonical_names: impl Iterator<Item = &'a str>, family: Family) -> Self {
        let names: Vec<&str> = canonical_names.collect();
        let paths = Paths::new(&names, family);
        let mut slots: HashMap<String, Slot> = HashMap::new();
        let mut last_layer: Option<usize> = None;
        for name in names {
            let Some(key) = paths.key(name) else {
                continue;
            };
            let Some(path) = a1111_path(&key) else {
                continue;
            };
            let (Some((module, param)), Some((canonical, _))) =
                (path.rsplit_once('.'), name.rsplit_once('.'))
            else {
                continue;
            };
            if let Some(n) = name
                .strip_prefix("text_encoder.encoder.layers.")
                .and_then(|t| t.split_once('.'))
                .and_then(|(n, _)| n.parse::<usize>().ok())
            {
                last_layer = last_layer.max(Some(n));
            }
            let slot = match param {
                "weight" | "bias" => {
                    if (family == Family::Sd2 || family.is_sdxl()) && is_open_clip_out_proj(module)
                    {
                        Slot::MhaOut {
                            attention: canonical.trim_end_matches(".out_proj").to_string(),
                            mha_key: network_name(module.trim_end_matches(".out_proj")),
                        }
                    } else if canonical.ends_with("embeddings.token_embedding")
                        || canonical.ends_with("embeddings.position_embedding")
                    {
                        Slot::Inert(Inert::Embedding)
                    } else {
                        Slot::Layer(canonical.to_string())
                    }
                }
                "in_proj_weight" | "in_proj_bias" => match canonical.rsplit_once('.') {
                    Some((attention, _)) => Slot::Mha(attention.to_string()),
                    None => continue,
                },
                // a bare parameter (SD2's positional_embedding) belongs to a container
                _ => Slot::Inert(Inert::Container),
            };
            add_containers(&mut slots, module);
            if slot != Slot::Inert(Inert::Container) {
                slots.insert(network_name(module), slot);
            }
        }
        if family == Family::Sd2 {
            if let Some(n) = last_layer {
                add_unused_open_clip_layer(&mut slots, n + 1);
            }
        }
        if family.is_sdxl() {
            // an embedder itself: A1111's `f'{i}_{name}'` of the empty name
            for i in ["0", "1"] {
                if let Some(slot) = slots.remove(i) {
                    slots.insert(format!("{i}_"), slot);
                }
            }
        }
        Self { family, slots }
    }

    /// The model family the index was built for.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Number of module names (layers and containers).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the index holds no module (built from no U-Net or text-encoder tensor).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Resolves the module part of a network key (A1111's `key_network_without_network_parts`,
    /// e.g. `lora_unet_down_blocks_0_attentions_0_proj_in`) exactly as `load_network` does:
    /// `convert_diffusers_name_to_compvis`, then the `_[qkv]_proj` attention fallback, then
    /// `lora_unet` → `diffusion_model`, else `lora_te1_text_model` → `0_transformer_text_model`
    /// or `transformer_text_model`, else `oft_unet` → `diffusion_model`, then the `oft_diag`
    /// rule. `Ok(None)`: no layer (A1111's `keys_failed_to_match`). `Err`: A1111 raises on
    /// this name (and fails to load the network); the message says why.
    pub fn resolve(&self, module_key: &str) -> Result<Option<Resolved>, String> {
        let kn = module_key;
        // A1111: is_sd2 = 'model_transformer_resblocks' in network_layer_mapping
        let is_sd2 = self.slots.contains_key("model_transformer_resblocks");
        let key = convert_diffusers_name_to_compvis(kn, is_sd2)?;
        if let Some(t) = self.direct(&key).or_else(|| self.x_proj(&key)) {
            return Ok(Some(Resolved {
                sd_key: key,
                target: t,
            }));
        }
        let mut key = key;
        let mut found = None;
        if kn.contains("lora_unet") {
            key = kn.replace("lora_unet", "diffusion_model");
            found = self.direct(&key);
        } else if kn.contains("lora_te1_text_model") {
            key = kn.replace("lora_te1_text_model", "0_transformer_text_model");
            found = self.direct(&key);
            // "some SD1 Loras also have correct compvis keys"
            if found.is_none() {
                key = kn.replace("lora_te1_text_model", "transformer_text_model");
                found = self.direct(&key);
            }
        } else if kn.contains("oft_unet") {
            key = kn.replace("oft_unet", "diffusion_model");
            found = self.direct(&key);
        }
        // KohakuBlueLeaf OFT: A1111 assigns the `lora_unet` replacement and overwrites it at once
        if found.is_none() && key.contains("oft_diag") {
            key = kn.replace("lora_te1_text_model", "0_transformer_text_model");
            found = self.direct(&key);
        }
        Ok(found.map(|target| Resolved {
            sd_key: key,
            target,
        }))
    }

    /// `network_layer_mapping.get(key)`.
    fn direct(&self, key: &str) -> Option<Target> {
        Some(match self.slots.get(key)? {
            Slot::Layer(m) => Target::Layer { module: m.clone() },
            Slot::Mha(_) => Target::Inert(Inert::WholeAttention),
            Slot::MhaOut { attention, mha_key } => Target::Attention {
                module: format!("{attention}.out_proj"),
                attention: mha_key.clone(),
                part: AttentionPart::Out,
            },
            Slot::Inert(r) => Target::Inert(*r),
        })
    }

    /// A1111's `re_x_proj = r"(.*)_([qkv]_proj)$"` fallback: the module named by group 1.
    fn x_proj(&self, key: &str) -> Option<Target> {
        // `$` also matches before a final newline; `.` matches no newline
        let k = key.strip_suffix('\n').unwrap_or(key);
        let part = [
            ("_q_proj", AttentionPart::Q),
            ("_k_proj", AttentionPart::K),
            ("_v_proj", AttentionPart::V),
        ];
        let (head, part) = part
            .iter()
            .find_map(|(s, p)| k.strip_suffix(s).map(|h| (h, *p)))?;
        if head.contains('\n') {
            return None;
        }
        Some(match self.slots.get(head)? {
            Slot::Mha(attention) => Target::Attention {
                module: format!("{attention}.{}", part.canonical()),
                attention: head.to_string(),
                part,
            },
            _ => Target::Inert(Inert::NotAttention),
        })
    }
}

/// `module` and every module enclosing it (its dotted prefixes, the root `""` included), as
/// `named_modules` lists them, where nothing more specific is known yet.
fn add_containers(slots: &mut HashMap<String, Slot>, module: &str) {
    let prefixes = std::iter::once(0)
        .chain(module.match_indices('.').map(|(i, _)| i))
        .chain(std::iter::once(module.len()));
    for end in prefixes {
        slots
            .entry(network_name(&module[..end]))
            .or_insert(Slot::Inert(Inert::Container));
    }
}

/// The resblock SD2 skips (A1111 loads all 24 OpenCLIP layers and stops one short).
fn add_unused_open_clip_layer(slots: &mut HashMap<String, Slot>, n: usize) {
    let block = format!("model.transformer.resblocks.{n}");
    for sub in [
        "",
        ".ln_1",
        ".ln_2",
        ".attn",
        ".attn.out_proj",
        ".mlp",
        ".mlp.c_fc",
        ".mlp.c_proj",
    ] {
        slots
            .entry(network_name(&format!("{block}{sub}")))
            .or_insert(Slot::Inert(Inert::UnusedLayer));
    }
}
