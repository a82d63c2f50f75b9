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
use sumi_models::{Hypernetwork, Hypernetworks};
pub use sumi_weights::hypernetwork::HypernetworkOnDisk;
use sumi_weights::hypernetwork::{read_hypernetwork, HypernetworkFile};

use super::activation::HypernetActivation;
use crate::error::Result;

/// A hypernetwork read, with the modification time of its file then.
type Loaded = (Option<SystemTime>, Arc<Hypernetwork>);

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
    /// name or a file that cannot be read is a warning, and the job goes on without it; so is
    /// a hypernetwork with no modules for any of the model's attention context `widths` (it
    /// changes nothing, in A1111 too).
    pub fn resolve(
        &self,
        asked: &[HypernetActivation],
        widths: &[usize],
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
            let own = net.widths();
            if !own.iter().any(|w| widths.contains(w)) {
                warnings.push(format!(
                    "hypernetwork {} has modules for context widths {own:?}, and this model's \
                     attention sees {widths:?}: it changes nothing",
                    tag.name
                ));
            }
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
