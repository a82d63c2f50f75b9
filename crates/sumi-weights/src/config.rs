//! What the weights cannot show, from the files beside them: a sibling LDM `<name>.yaml`
//! (A1111's convention), safetensors `modelspec.*` metadata, and diffusers `config.json`s.

use std::path::{Path, PathBuf};

use crate::error::{Result, WeightsError};

/// Overrides read from a sibling LDM yaml config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LdmYaml {
    /// The yaml's path.
    pub path: PathBuf,
    /// `model.params.parameterization` (`"v"` or `"eps"`).
    pub parameterization: Option<String>,
    /// `unet_config.params.num_heads`.
    pub num_heads: Option<usize>,
    /// `unet_config.params.num_head_channels`.
    pub num_head_channels: Option<usize>,
    /// `unet_config.params.use_linear_in_transformer`.
    pub use_linear_in_transformer: Option<bool>,
    /// `unet_config.params.context_dim`.
    pub context_dim: Option<usize>,
}

/// The yaml A1111 would use for `checkpoint`: same folder, same stem, `.yaml`.
pub fn sibling_yaml(checkpoint: &Path) -> Option<PathBuf> {
    let p = checkpoint.with_extension("yaml");
    (p != checkpoint && p.is_file()).then_some(p)
}

/// Reads the overrides from an LDM yaml.
pub fn read_ldm_yaml(path: &Path) -> Result<LdmYaml> {
    use yaml_rust2::{Yaml, YamlLoader};
    let text = std::fs::read_to_string(path).map_err(|e| WeightsError::io(path, e))?;
    let docs = YamlLoader::load_from_str(&text).map_err(|e| WeightsError::BadConfig {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let root = docs.first().cloned().unwrap_or(Yaml::Null);
    let params = &root["model"]["params"];
    let unet = &params["unet_config"]["params"];
    let num = |y: &Yaml, key: &str| -> Result<Option<usize>> {
        match &y[key] {
            Yaml::BadValue | Yaml::Null => Ok(None),
            Yaml::Integer(i) if *i == -1 => Ok(None),
            Yaml::Integer(i) if *i > 0 => Ok(Some(*i as usize)),
            other => Err(WeightsError::BadConfig {
                path: path.to_path_buf(),
                detail: format!("`{key}` should be a positive integer, found {other:?}"),
            }),
        }
    };
    let parameterization = match &params["parameterization"] {
        Yaml::String(s) => Some(s.clone()),
        _ => None,
    };
    Ok(LdmYaml {
        path: path.to_path_buf(),
        parameterization,
        num_heads: num(unet, "num_heads")?,
        num_head_channels: num(unet, "num_head_channels")?,
        use_linear_in_transformer: unet["use_linear_in_transformer"].as_bool(),
        context_dim: num(unet, "context_dim")?,
    })
}

/// Reads a JSON config file of a diffusers folder, if present.
pub fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| WeightsError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| WeightsError::BadConfig {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
}
