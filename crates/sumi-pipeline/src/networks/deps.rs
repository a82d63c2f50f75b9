//! Stand-ins for the LoRA file reader (`sumi_weights::lora`) and the network math
//! (`sumi_models::networks`) while those land; replaced by re-exports of them.

#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

pub type WResult<T> = std::result::Result<T, sumi_weights::WeightsError>;

#[derive(Debug, Clone)]
pub struct NetworkOnDisk {
    pub name: String,
    pub alias: String,
    pub path: PathBuf,
    pub metadata: BTreeMap<String, String>,
    pub is_safetensors: bool,
}
impl NetworkOnDisk {
    pub fn shorthash(&self) -> WResult<String> {
        Ok(String::new())
    }
}
pub struct NetworkLibrary(Vec<NetworkOnDisk>);
impl NetworkLibrary {
    pub fn scan(_dirs: &[PathBuf]) -> WResult<Self> {
        Ok(Self(Vec::new()))
    }
    pub fn find(&self, _name: &str) -> Option<&NetworkOnDisk> {
        None
    }
    pub fn all(&self) -> &[NetworkOnDisk] {
        &self.0
    }
}
pub struct TargetIndex;
impl TargetIndex {
    pub fn new<'a>(_names: impl Iterator<Item = &'a str>, _family: sumi_weights::Family) -> Self {
        Self
    }
}
pub struct NetworkTarget {
    pub module: String,
    pub sd_key: String,
    pub text_encoder: bool,
    pub tensors: BTreeMap<String, Tensor>,
}
pub struct LoadedNetwork {
    pub targets: Vec<NetworkTarget>,
    pub unmatched: Vec<String>,
    pub bundled_embeddings: Vec<(String, BTreeMap<String, Tensor>)>,
}
pub fn read_network(_path: &Path, _index: &TargetIndex) -> WResult<LoadedNetwork> {
    Ok(LoadedNetwork {
        targets: Vec::new(),
        unmatched: Vec::new(),
        bundled_embeddings: Vec::new(),
    })
}
pub struct NetworkModule;
impl NetworkModule {
    pub fn from_tensors(_t: &BTreeMap<String, Tensor>) -> candle_core::Result<Option<Self>> {
        Ok(None)
    }
}
pub fn merge(
    weight: &Tensor,
    bias: Option<&Tensor>,
    _m: &[(&NetworkModule, f64, Option<usize>)],
) -> candle_core::Result<(Tensor, Option<Tensor>)> {
    Ok((weight.clone(), bias.cloned()))
}
