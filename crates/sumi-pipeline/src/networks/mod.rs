//! The extra-networks stage (A1111's built-in Lora extension): the `<lora:…>` tags of the
//! prompt resolved in the LoRA folders, read against the loaded model and merged into the
//! U-Net's and the text encoder's weights before the job runs, as A1111 merges them by default;
//! `Lora hashes` for the infotext; a warning for every tag or key not applied. The
//! `<hypernet:…>` tags' hypernetworks go with the job to the U-Net's attention ([`hypernet`]).

mod activation;
mod first;
pub mod hypernet;
mod patch;
mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};
use sumi_models::nn::Reload;
use sumi_models::{ClipTextModel, Hypernetworks, UNet};
use sumi_weights::embedding::Embedding;
use sumi_weights::lora::TargetIndex;
use sumi_weights::TensorPatch;

pub use activation::{activations, Activations, HypernetActivation, LoraActivation};
pub(crate) use first::first_build;
pub use hypernet::{list_hypernetworks, HypernetworkOnDisk};
pub(crate) use hypernet::{AttentionWidths, HypernetState};
pub(crate) use state::NetworkState;
pub use sumi_weights::lora::NetworkOnDisk;

use crate::error::Result;
use crate::generate::Pipeline;
use crate::request::Request;
use patch::{add_errors, errors_line, LayerNetwork, MergePatch};
use state::{layers, Built, Resolved, TEXT_ENCODER, TEXT_ENCODER_2, UNET};

/// Canonical tensor name → merged tensor.
pub type MergedTensors = Vec<(String, Tensor)>;

/// The networks in force for one job.
pub(crate) struct Active {
    /// The U-Net with the job's networks merged.
    pub unet: Arc<UNet>,
    /// The text encoder with the job's networks merged.
    pub clip: Arc<ClipTextModel>,
    /// SDXL's second text encoder (bigG) with the job's networks merged; `None` for SD1/SD2.
    pub clip_g: Option<Arc<ClipTextModel>>,
    /// The job's hypernetworks, for the U-Net's attention.
    pub hypernetworks: Hypernetworks,
    /// The embedding folder's embeddings and the networks' bundled ones.
    pub embeddings: Vec<Embedding>,
    /// `Lora hashes` for the infotext, when any network has one.
    pub extra_params: Vec<(String, String)>,
    /// What was asked and not applied.
    pub warnings: Vec<String>,
}

/// The network files in `dirs` as A1111 lists them (`list_available_networks`).
pub fn list_loras(dirs: &[std::path::PathBuf]) -> Result<Vec<NetworkOnDisk>> {
    Ok(sumi_weights::lora::NetworkLibrary::scan(dirs)?
        .all()
        .to_vec())
}

impl Pipeline {
    /// The model's layers by A1111's names (made once).
    fn target_index(&self) -> &TargetIndex {
        self.networks
            .index(|| TargetIndex::new(self.checkpoint.weights.names(), self.model.facts.family))
    }

    /// The LoRAs in the LoRA folders (A1111's `/sdapi/v1/loras`), listed on first use.
    pub fn loras(&self) -> Result<Vec<NetworkOnDisk>> {
        self.networks.list()
    }

    /// The LoRA folders listed again (A1111's `/sdapi/v1/refresh-loras`).
    pub fn refresh_loras(&self) -> Result<Vec<NetworkOnDisk>> {
        self.networks.refresh()
    }

    /// The checkpoint tensors the LoRAs of `prompt` change, merged as a job would merge them
    /// (canonical name → merged tensor, f32, stored shape), with the job's warnings; the
    /// networks in use are not touched. For checks and tools.
    pub fn merged_tensors(&self, prompt: &str) -> Result<(MergedTensors, Vec<String>)> {
        let asked = activations(prompt)?;
        let mut warnings = asked.warnings;
        let index = self.target_index();
        let weights = &self.checkpoint.weights;
        let resolved = self.networks.resolve(
            &asked.loras,
            weights,
            index,
            self.embedding_width(),
            &mut warnings,
        )?;
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for network in [TEXT_ENCODER, TEXT_ENCODER_2, UNET] {
            let (layers, _) = layers(&resolved, network);
            let mut modules: Vec<String> = layers.keys().cloned().collect();
            modules.sort();
            let patch = MergePatch::new(weights, layers);
            for m in modules {
                for name in [format!("{m}.weight"), format!("{m}.bias")] {
                    if weights.contains(&name) {
                        let t = weights.load(&name, DType::F32, &self.device)?;
                        out.push((name.clone(), patch.patch(&name, t)?));
                    }
                }
            }
            add_errors(&mut errors, patch.errors());
        }
        warnings.extend(errors_line(&errors));
        Ok((out, warnings))
    }

    /// A tensor of the checkpoint as stored (canonical name, f32), for checks against
    /// [`Self::merged_tensors`].
    pub fn checkpoint_tensor(&self, name: &str) -> Result<Tensor> {
        Ok(self
            .checkpoint
            .weights
            .load(name, DType::F32, &self.device)?)
    }

    /// Brings the U-Net and the text encoder to the networks `prompt` asks for (rebuilding only
    /// the one whose set changed) and says what is in force.
    pub(crate) fn activate_networks(&self, req: &Request) -> Result<Active> {
        let asked = activations(&req.prompt)?;
        let mut warnings = asked.warnings;
        *self
            .networks
            .update
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = NetworkUpdate::default();
        let resolved = if asked.loras.is_empty() {
            Vec::new()
        } else {
            let index = self.target_index();
            let weights = &self.checkpoint.weights;
            self.networks.resolve(
                &asked.loras,
                weights,
                index,
                self.embedding_width(),
                &mut warnings,
            )?
        };
        let hypernetworks = if asked.hypernets.is_empty() {
            let none = AttentionWidths::default();
            self.hypernets.resolve(&[], &none, &mut warnings)?
        } else {
            let widths = AttentionWidths::of(&self.checkpoint.unet_config()?);
            self.hypernets
                .resolve(&asked.hypernets, &widths, &mut warnings)?
        };
        if let Some(recorded) = &req.lora_hashes {
            warnings.extend(hash_mismatches(&resolved, recorded));
        }
        // A1111 counts the layers each network failed on over both networks, text encoder first
        let mut errors = Vec::new();
        let clip = self.clip_with(&resolved, &mut warnings, &mut errors)?;
        let clip_g = self.clip_g_with(&resolved, &mut warnings, &mut errors)?;
        let unet = self.unet_with(&resolved, &mut warnings, &mut errors)?;
        warnings.extend(errors_line(&errors));
        let mut embeddings = self.embeddings.clone();
        for r in &resolved {
            for e in &r.read.embeddings {
                if embeddings.iter().any(|x| x.name == e.name) {
                    warnings.push(format!(
                        "Skip bundle embedding: \"{}\" as it was already loaded from embeddings folder",
                        e.name
                    ));
                } else {
                    embeddings.push(e.clone());
                }
            }
        }
        Ok(Active {
            unet,
            clip,
            clip_g,
            hypernetworks,
            embeddings,
            extra_params: lora_hashes(&resolved),
            warnings,
        })
    }

    fn unet_with(
        &self,
        resolved: &[Resolved],
        warnings: &mut Vec<String>,
        errors: &mut Vec<(String, usize)>,
    ) -> Result<Arc<UNet>> {
        let (layers, want) = layers(resolved, UNET);
        let net = Net {
            label: "unet",
            build: &|patch| {
                self.checkpoint
                    .unet_patched(self.weight_dtype, &self.device, patch)
            },
            layers_of: UNet::layers_mut,
        };
        let slots = (&self.unet, &self.networks.unet_set);
        self.rebuilt(slots, want, layers, &net, (warnings, errors))
    }

    fn clip_with(
        &self,
        resolved: &[Resolved],
        warnings: &mut Vec<String>,
        errors: &mut Vec<(String, usize)>,
    ) -> Result<Arc<ClipTextModel>> {
        let (layers, want) = layers(resolved, TEXT_ENCODER);
        let net = Net {
            label: "text_encoder",
            build: &|patch| {
                self.checkpoint
                    .clip_patched(self.weight_dtype, &self.device, patch)
            },
            layers_of: ClipTextModel::layers_mut,
        };
        let slots = (&self.clip, &self.networks.clip_set);
        self.rebuilt(slots, want, layers, &net, (warnings, errors))
    }

    /// SDXL's bigG with the job's networks merged (`None` for SD1/SD2).
    fn clip_g_with(
        &self,
        resolved: &[Resolved],
        warnings: &mut Vec<String>,
        errors: &mut Vec<(String, usize)>,
    ) -> Result<Option<Arc<ClipTextModel>>> {
        let Some(slot) = &self.clip_g else {
            return Ok(None);
        };
        let (layers, want) = layers(resolved, TEXT_ENCODER_2);
        let net = Net {
            label: "text_encoder_2",
            build: &|patch| {
                self.checkpoint
                    .clip_g_patched(self.weight_dtype, &self.device, patch)
            },
            layers_of: ClipTextModel::layers_mut,
        };
        let slots = (slot, &self.networks.clip_g_set);
        self.rebuilt(slots, want, layers, &net, (warnings, errors))
            .map(Some)
    }

    /// The network in `slot` brought to the networks `want` (merged from `layers`) when it
    /// holds others: in place, loading again only the layers whose networks changed, when the
    /// network is not in use elsewhere and every such layer can be loaded again; else built
    /// again whole (the old one dropped first: never two in memory). A failure leaves the
    /// checkpoint's own network in the slot and the error.
    fn rebuilt<T>(
        &self,
        (slot, built): (&Mutex<Option<Arc<T>>>, &Mutex<Built>),
        want: Built,
        layers: HashMap<String, Vec<LayerNetwork>>,
        net: &Net<'_, T>,
        (warnings, errors): (&mut Vec<String>, &mut Vec<(String, usize)>),
    ) -> Result<Arc<T>> {
        let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let (true, Some(current)) = (built.key == want.key, slot.as_ref()) {
            if let Some((e, dropped)) = built.unreported.take() {
                add_errors(errors, e);
                warnings.extend(dropped_bias_warnings(dropped));
            }
            return Ok(current.clone());
        }
        let changed = built.changed(&want.layers);
        let patch = MergePatch::new(&self.checkpoint.weights, layers);
        let in_place = match slot.as_mut() {
            Some(arc) => match Arc::get_mut(arc) {
                Some(model) => self
                    .reload_layers(model, net, &changed, &patch)
                    .map(|r| r.map(|()| arc.clone())),
                None => None,
            },
            None => None,
        };
        let mut update = self
            .networks
            .update
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let outcome = match in_place {
            Some(done) => {
                update.reloaded.extend(changed);
                done
            }
            None => {
                update.rebuilt.push(net.label);
                *slot = None;
                *built = Built::default();
                (net.build)(Some(&patch)).map(Arc::new)
            }
        };
        let model = match outcome {
            Ok(m) => m,
            Err(e) => {
                *slot = None;
                *built = Built::default();
                *slot = Some(Arc::new((net.build)(None)?));
                return Err(e);
            }
        };
        add_errors(errors, patch.errors());
        warnings.extend(dropped_bias_warnings(patch.dropped_bias()));
        *slot = Some(model.clone());
        *built = want;
        Ok(model)
    }

    /// Loads the `changed` layers of `model` again through `patch`; `None` (nothing done) when
    /// one of them is not a layer that can be loaded again.
    fn reload_layers<T>(
        &self,
        model: &mut T,
        net: &Net<'_, T>,
        changed: &[String],
        patch: &MergePatch<'_>,
    ) -> Option<Result<()>> {
        let mut found: Vec<&mut dyn Reload> = (net.layers_of)(model)
            .into_iter()
            .filter(|l| {
                changed
                    .binary_search_by(|c| c.as_str().cmp(l.name()))
                    .is_ok()
            })
            .collect();
        if found.len() != changed.len() {
            return None;
        }
        let (dtype, dev) = (self.weight_dtype, &self.device);
        Some(
            self.checkpoint
                .reload_layers(&mut found, dtype, dev, Some(patch)),
        )
    }

    /// How the last job's networks were brought into the U-Net and the text encoder: the
    /// layers loaded again in place, the networks built again whole. For checks and tools.
    pub fn last_network_update(&self) -> NetworkUpdate {
        self.networks
            .update
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A warning for each layer whose networks' bias was not applied.
fn dropped_bias_warnings(layers: Vec<String>) -> impl Iterator<Item = String> {
    layers
        .into_iter()
        .map(|m| format!("{m}: the network's bias is not applied (the layer has none)"))
}

/// How one network (U-Net or text encoder) is built and loaded again.
struct Net<'a, T> {
    /// Its name in [`NetworkUpdate::rebuilt`].
    label: &'static str,
    /// Builds it whole, with a patch over the checkpoint's tensors.
    build: &'a dyn Fn(Option<&dyn TensorPatch>) -> Result<T>,
    /// Its layers that can be loaded again.
    layers_of: fn(&mut T) -> Vec<&mut dyn Reload>,
}

/// How a job's networks were brought into the U-Net and the text encoder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkUpdate {
    /// The layers loaded again in place (canonical module prefixes: `unet.…`,
    /// `text_encoder.…`, `text_encoder_2.…`), text encoders first, each network's sorted.
    pub reloaded: Vec<String>,
    /// The networks built again whole (`unet`, `text_encoder`, `text_encoder_2`): one of the
    /// layers to change cannot be loaded in place (a LayerNorm), or the network was in use
    /// elsewhere.
    pub rebuilt: Vec<&'static str>,
}

/// A1111's `Lora hashes`: `name: shorthash` per network loaded (the name as the prompt gives
/// it, `:` and `,` removed; a name once), joined with `, `.
fn lora_hashes(resolved: &[Resolved]) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for r in resolved {
        let Some(hash) = &r.read.shorthash else {
            continue;
        };
        let name: String = r
            .tag
            .name
            .chars()
            .filter(|c| !matches!(c, ':' | ','))
            .collect();
        match entries.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v = hash.clone(),
            None => entries.push((name, hash.clone())),
        }
    }
    if entries.is_empty() {
        return Vec::new();
    }
    let list: Vec<String> = entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    vec![("Lora hashes".to_string(), list.join(", "))]
}

/// A1111's reading of an infotext's `Lora hashes` (`lora_script.infotext_pasted`): items split
/// on `,`, each `name: hash` split at its first `:`, both trimmed.
fn recorded_hashes(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|item| {
            let (name, hash) = item.trim().split_once(':')?;
            Some((name.trim().to_string(), hash.trim().to_string()))
        })
        .collect()
}

/// A warning for each LoRA whose file's short hash is not the one `recorded` (an infotext's
/// `Lora hashes`) gives for its name.
fn hash_mismatches(resolved: &[Resolved], recorded: &str) -> Vec<String> {
    let recorded = recorded_hashes(recorded);
    let mut out = Vec::new();
    for r in resolved {
        let name: String = r
            .tag
            .name
            .chars()
            .filter(|c| !matches!(c, ':' | ','))
            .collect();
        let Some((_, want)) = recorded.iter().rev().find(|(k, _)| *k == name) else {
            continue;
        };
        let have = r.read.shorthash.as_deref().unwrap_or("?");
        if !have.eq_ignore_ascii_case(want) {
            out.push(format!(
                "Lora {name}: {} has hash {have}, the infotext records {want}: the picture may differ",
                r.file.path.display()
            ));
        }
    }
    out
}
