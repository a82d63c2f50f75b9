//! Hypernetworks (A1111 v1.10.1's `ExtraNetworkHypernet` and `load_hypernetworks`): the
//! `<hypernet:name:multiplier>` tags of the prompt resolved by file stem in the hypernetwork
//! folders, read (kept while consecutive jobs use them, as A1111 keeps its
//! `loaded_hypernetworks`) and handed to the U-Net's attention for the job.
//!
//! A1111 writes nothing about hypernetworks into the infotext besides the tag the prompt keeps;
//! a name it does not know is passed over silently and a file it cannot read is reported and
//! passed over: Sumi names both in the job's warnings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sumi_models::hypernetwork::{Activation, HypernetworkSpec};
use sumi_models::{Hypernetwork, Hypernetworks, UNetConfig};
pub use sumi_weights::hypernetwork::HypernetworkOnDisk;
use sumi_weights::hypernetwork::{read_hypernetwork, HypernetworkFile};

use super::activation::HypernetActivation;
use crate::error::Result;

/// A hypernetwork read, with the modification time of its file then.
type Loaded = (Option<SystemTime>, Arc<Hypernetwork>);

/// The context widths a U-Net's attentions see, by which A1111 picks a hypernetwork's modules
/// (`apply_single_hypernetwork`: `layers.get(context.shape[2])`): the text context's in every
/// cross-attention (SD1 768, SD2 1024, SDXL 2048: CLIP-L ⊕ bigG, refiner 1280) and, in the
/// self-attentions, whose context is the block's own input, the channels of each level with
/// attention (SD1 320, 640, 1280; SDXL 640, 1280).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct AttentionWidths {
    /// The text context's width.
    pub text: usize,
    /// The self-attentions' widths.
    pub blocks: Vec<usize>,
}

impl AttentionWidths {
    /// The widths of a U-Net built from `cfg` (the middle block's attention has the last
    /// level's channels).
    pub fn of(cfg: &UNetConfig) -> Self {
        let mut blocks = Vec::new();
        let levels = cfg.block_channels.iter().zip(&cfg.attention);
        let mid = cfg.block_channels.last().filter(|_| cfg.mid_depth > 0);
        let with_attention = levels.filter(|(_, &a)| a).map(|(c, _)| c).chain(mid);
        for &c in with_attention {
            if !blocks.contains(&c) {
                blocks.push(c);
            }
        }
        Self {
            text: cfg.context_dim,
            blocks,
        }
    }

    /// A warning for hypernetwork `name` with modules for widths `own` when they miss the text
    /// context: then it changes nothing (no width of the model's), or only self-attention (an
    /// SD1 file's 640/1280 modules on SDXL), which A1111 does without a word.
    pub fn note(&self, name: &str, own: &[usize]) -> Option<String> {
        if own.contains(&self.text) {
            return None;
        }
        let used: Vec<usize> = own
            .iter()
            .copied()
            .filter(|w| self.blocks.contains(w))
            .collect();
        let text = self.text;
        let blocks = &self.blocks;
        Some(if used.is_empty() {
            format!(
                "hypernetwork {name} has modules for context widths {own:?}, and this model's \
                 attention sees {text} (text) and {blocks:?} (self-attention): it changes nothing \
                 (made for another model family?)"
            )
        } else {
            format!(
                "hypernetwork {name} has no modules for this model's text context width {text} \
                 (it has {own:?}): only its modules for {used:?} apply, on the self-attention, as \
                 in A1111 (made for another model family?)"
            )
        })
    }
}

/// The hypernetwork folders and the hypernetworks the last job used.
pub(crate) struct HypernetState {
    dirs: Vec<PathBuf>,
    loaded: Mutex<HashMap<PathBuf, Loaded>>,
}

/// The hypernetwork files in `dirs` as A1111 lists them (`/sdapi/v1/hypernetworks`).
pub fn list_hypernetworks(dirs: &[PathBuf]) -> Result<Vec<HypernetworkOnDisk>> {
    Ok(sumi_weights::hypernetwork::list_hypernetworks(dirs)?)
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// A1111's `HypernetworkModule` settings of a file.
fn spec(file: &HypernetworkFile) -> std::result::Result<HypernetworkSpec, sumi_models::ModelError> {
    let activation = match file.activation_func.as_deref() {
        None | Some("linear") => None,
        Some(name) => Some(name.parse::<Activation>()?),
    };
    Ok(HypernetworkSpec {
        layer_structure: file.layer_structure.clone(),
        activation,
        add_layer_norm: file.add_layer_norm,
        activate_output: file.activate_output,
        dropout_structure: file.dropout_structure.clone(),
    })
}

/// Reads `path` into a hypernetwork; the error is a line naming the file.
pub fn load_hypernetwork(path: &Path) -> std::result::Result<Hypernetwork, String> {
    let file = read_hypernetwork(path).map_err(|e| e.to_string())?;
    let named = |e: sumi_models::ModelError| format!("{}: {e}", path.display());
    let spec = spec(&file).map_err(named)?;
    Hypernetwork::new(
        &spec,
        file.sizes
            .iter()
            .map(|s| (s.width, s.k.as_slice(), s.v.as_slice())),
    )
    .map_err(named)
}

impl HypernetState {
    /// Hypernetworks are looked for in `dirs`.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self {
            dirs,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// A1111's `load_hypernetworks`: each tag's file (by stem, the folders listed now) read
    /// or taken from the last job's, with the tag's multiplier, in prompt order. An unknown
    /// name or a file that cannot be read is a warning, and the job goes on without it; a
    /// hypernetwork whose modules miss the model's attention `widths` is applied as A1111
    /// applies it and warned ([`AttentionWidths::note`]).
    pub fn resolve(
        &self,
        asked: &[HypernetActivation],
        widths: &AttentionWidths,
        warnings: &mut Vec<String>,
    ) -> Result<Hypernetworks> {
        if asked.is_empty() {
            self.lock().clear();
            return Ok(Hypernetworks::default());
        }
        let listed = list_hypernetworks(&self.dirs)?;
        let mut previous = std::mem::take(&mut *self.lock());
        let mut kept: HashMap<PathBuf, Loaded> = HashMap::new();
        let mut list = Vec::new();
        for tag in asked {
            let Some(entry) = listed.iter().find(|e| e.name == tag.name) else {
                warnings.push(format!(
                    "hypernetwork <hypernet:{}:{}> not found in the hypernetwork folders: not applied",
                    tag.name, tag.multiplier
                ));
                continue;
            };
            let when = mtime(&entry.path);
            let cached = kept
                .get(&entry.path)
                .or_else(|| previous.get(&entry.path))
                .filter(|(t, _)| *t == when)
                .map(|(_, h)| h.clone());
            let net = match cached {
                Some(h) => h,
                None => match load_hypernetwork(&entry.path) {
                    Ok(h) => Arc::new(h),
                    Err(e) => {
                        warnings.push(format!(
                            "Error loading hypernetwork {}: {e}; not applied",
                            entry.path.display()
                        ));
                        continue;
                    }
                },
            };
            warnings.extend(widths.note(&tag.name, &net.widths()));
            previous.remove(&entry.path);
            kept.insert(entry.path.clone(), (when, net.clone()));
            list.push((net, tag.multiplier));
        }
        *self.lock() = kept;
        Ok(Hypernetworks::new(list))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Loaded>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::AttentionWidths;
    use sumi_models::UNetConfig;

    #[test]
    fn attention_widths_and_their_notes() {
        let sd1 = AttentionWidths::of(&UNetConfig::sd1());
        assert_eq!(
            (sd1.text, sd1.blocks.as_slice()),
            (768, &[320, 640, 1280][..])
        );
        let xl = AttentionWidths::of(&UNetConfig::sdxl());
        assert_eq!((xl.text, xl.blocks.as_slice()), (2048, &[640, 1280][..]));
        // A1111's default sizes (an SD1 file) on SDXL: the self-attention at 640 and 1280 only
        let sd1_file = [768, 320, 640, 1280];
        assert!(sd1.note("a", &sd1_file).is_none());
        let n = xl.note("a", &sd1_file).unwrap();
        assert!(
            n.contains("no modules for this model's text context width 2048")
                && n.contains("only its modules for [640, 1280] apply"),
            "{n}"
        );
        let n = xl.note("b", &[768]).unwrap();
        assert!(
            n.starts_with("hypernetwork b ") && n.contains("it changes nothing"),
            "{n}"
        );
        assert!(xl.note("c", &[2048]).is_none());
        assert!(xl.note("c", &[2048, 320]).is_none());
    }
}
