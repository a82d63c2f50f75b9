//! What the weights cannot show, from the files beside them: a sibling LDM `<name>.yaml`
//! (A1111's convention), safetensors `modelspec.*` metadata, and diffusers `config.json`s.

use std::collections::HashMap;
use std::io::Read;
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

/// Largest LDM yaml read (A1111's own configs are 2 to 4 KB).
pub const MAX_YAML_BYTES: u64 = 1 << 20;
/// Most nodes an LDM yaml may hold, every alias counted as the nodes it stands for (so that
/// a few nested aliases cannot expand to billions of nodes).
pub const MAX_YAML_NODES: u64 = 100_000;
/// Deepest nesting of sequences and mappings in an LDM yaml.
pub const MAX_YAML_DEPTH: usize = 100;

/// Walks the yaml's events (iteratively: yaml-rust2's loader recurses once per nesting level)
/// and refuses it beyond [`MAX_YAML_DEPTH`] or [`MAX_YAML_NODES`], before anything is built.
fn check_yaml_bounds(text: &str) -> std::result::Result<(), String> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    let mut nodes: u64 = 0;
    // per open collection: its anchor and the node count before it
    let mut open: Vec<(usize, u64)> = Vec::new();
    // nodes each anchor stands for
    let mut anchors: HashMap<usize, u64> = HashMap::new();
    loop {
        let (ev, _) = parser.next_token().map_err(|e| e.to_string())?;
        match ev {
            Event::StreamEnd => return Ok(()),
            Event::Scalar(_, _, anchor, _) => {
                nodes += 1;
                if anchor > 0 {
                    anchors.insert(anchor, 1);
                }
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                open.push((anchor, nodes));
                nodes += 1;
                if open.len() > MAX_YAML_DEPTH {
                    return Err(format!("nested deeper than {MAX_YAML_DEPTH}"));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, start)) = open.pop() {
                    if anchor > 0 {
                        anchors.insert(anchor, nodes - start);
                    }
                }
            }
            Event::Alias(anchor) => nodes += anchors.get(&anchor).copied().unwrap_or(1),
            _ => {}
        }
        if nodes > MAX_YAML_NODES {
            return Err(format!(
                "more than {MAX_YAML_NODES} nodes once its aliases are expanded"
            ));
        }
    }
}

/// Reads the overrides from an LDM yaml (at most [`MAX_YAML_BYTES`], nesting and alias
/// expansion bounded as [`check_yaml_bounds`] says).
pub fn read_ldm_yaml(path: &Path) -> Result<LdmYaml> {
    use yaml_rust2::{Yaml, YamlLoader};
    let bad = |detail: String| WeightsError::BadConfig {
        path: path.to_path_buf(),
        detail,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_YAML_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| WeightsError::io(path, e))?;
    if text.len() as u64 > MAX_YAML_BYTES {
        return Err(bad(format!("larger than the {MAX_YAML_BYTES}-byte limit")));
    }
    check_yaml_bounds(&text).map_err(bad)?;
    let docs = YamlLoader::load_from_str(&text).map_err(|e| bad(e.to_string()))?;
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
