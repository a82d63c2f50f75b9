//! Hypernetwork files as A1111 v1.10.1 lists and reads them (`modules/hypernetworks/
//! hypernetwork.py`: `list_hypernetworks`, `Hypernetwork.load`).
//!
//! A file is a `torch.save` of a dict: for each context width it changes (an `int` key: 768,
//! 320, 640, 1280, 1024), a pair of `HypernetworkModule` state dicts (the one for `to_k`, the
//! one for `to_v`), and the settings `layer_structure`, `activation_func`, `is_layer_norm`,
//! `activate_output`, `use_dropout`, `last_layer_dropout`, `dropout_structure` (with A1111's
//! defaults for the ones missing), plus `name`, `step`, `sd_checkpoint`… that change nothing.
//! Only `.pt` files are hypernetworks (A1111 globs `**/*.pt`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::ckpt::TorchArchive;
use crate::dtype::decode;
use crate::error::{Result, WeightsError};
use crate::lora::MAX_WALK_DEPTH;
use crate::pickle::Value;

/// Most context widths one file may hold (A1111 trains 5 at most).
pub const MAX_SIZES: usize = 16;
/// Most entries of `layer_structure` (A1111's UI builds 3 to 5).
pub const MAX_LAYERS: usize = 64;
/// Most tensors one module's state dict may hold (2 per linear layer and per layer norm).
pub const MAX_MODULE_TENSORS: usize = 4 * MAX_LAYERS;
/// Largest context width accepted as a key.
pub const MAX_WIDTH: usize = 1 << 16;

/// A hypernetwork file in the hypernetwork folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypernetworkOnDisk {
    /// The file name without `.pt`: the name prompts use.
    pub name: String,
    /// The file.
    pub path: PathBuf,
}

/// One `HypernetworkModule` state dict: tensor name (`linear.0.weight`, …) → f32 tensor.
pub type ModuleTensors = Vec<(String, Tensor)>;

/// The two modules a hypernetwork applies to contexts of one width.
#[derive(Debug, Clone)]
pub struct SizeModules {
    /// The context width (the dict key).
    pub width: usize,
    /// The module applied to the context `to_k` sees.
    pub k: ModuleTensors,
    /// The module applied to the context `to_v` sees.
    pub v: ModuleTensors,
}

/// A hypernetwork file read (A1111's `Hypernetwork` after `load`), tensors in f32.
#[derive(Debug, Clone)]
pub struct HypernetworkFile {
    /// The file.
    pub path: PathBuf,
    /// The `name` the file records, if any.
    pub name: Option<String>,
    /// `layer_structure` (`[1, 2, 1]` when missing): layer widths as multiples of the context
    /// width.
    pub layer_structure: Vec<f64>,
    /// `activation_func` (`None` and `"linear"` mean none).
    pub activation_func: Option<String>,
    /// `is_layer_norm`: a layer norm after every linear layer.
    pub add_layer_norm: bool,
    /// `activate_output` (true when missing): the activation after the last layer too.
    pub activate_output: bool,
    /// `dropout_structure`, or A1111's `parse_dropout_structure` of `use_dropout` and
    /// `last_layer_dropout`: a dropout layer (a no-op when generating, but it takes a place
    /// in the module's numbering) after layer `i` where entry `i + 1` is above 0.
    pub dropout_structure: Vec<f64>,
    /// The modules, in the file's order.
    pub sizes: Vec<SizeModules>,
}

fn bad(path: &Path, detail: impl Into<String>) -> WeightsError {
    WeightsError::BadHypernetwork {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn get<'a>(d: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    d.iter()
        .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
        .map(|(_, v)| v)
}

/// Python truthiness of a settings value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::None => false,
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::Float(f) => *f != 0.0,
        Value::Str(s) => !s.is_empty(),
        Value::List(l) | Value::Tuple(l) => !l.is_empty(),
        Value::Dict(d) => !d.is_empty(),
        _ => true,
    }
}

fn numbers(path: &Path, key: &str, v: &Value) -> Result<Vec<f64>> {
    let (Value::List(items) | Value::Tuple(items)) = v else {
        return Err(bad(
            path,
            format!("`{key}` is not a list: {}", v.describe()),
        ));
    };
    if items.len() > MAX_LAYERS {
        return Err(bad(
            path,
            format!(
                "`{key}` has {} entries, more than {MAX_LAYERS}",
                items.len()
            ),
        ));
    }
    items
        .iter()
        .map(|x| match x {
            Value::Int(i) => Ok(*i as f64),
            Value::Float(f) if f.is_finite() => Ok(*f),
            Value::Bool(b) => Ok(f64::from(u8::from(*b))),
            other => Err(bad(
                path,
                format!("`{key}` holds {}, not a number", other.describe()),
            )),
        })
        .collect()
}

/// A1111's `parse_dropout_structure`.
pub fn parse_dropout_structure(
    layer_structure: &[f64],
    use_dropout: bool,
    last_layer_dropout: bool,
) -> Vec<f64> {
    let n = layer_structure.len();
    if !use_dropout {
        return vec![0.0; n];
    }
    let mut out = vec![0.0];
    out.extend(std::iter::repeat_n(0.3, n.saturating_sub(3)));
    out.push(if last_layer_dropout { 0.3 } else { 0.0 });
    out.push(0.0);
    out
}

/// Reads a hypernetwork `.pt` file (through the restricted pickle reader: nothing executes).
/// Every problem (not a torch archive, a setting of the wrong type, a module that is not a
/// pair of state dicts of float tensors, too many of anything) is an error naming the file.
pub fn read_hypernetwork(path: &Path) -> Result<HypernetworkFile> {
    let (archive, root) = TorchArchive::open(path)?;
    let Value::Dict(d) = &root else {
        return Err(bad(
            path,
            format!("the root is {}, not a dict", root.describe()),
        ));
    };
    let layer_structure = match get(d, "layer_structure") {
        None | Some(Value::None) => vec![1.0, 2.0, 1.0],
        Some(v) => numbers(path, "layer_structure", v)?,
    };
    let activation_func = match get(d, "activation_func") {
        None | Some(Value::None) => None,
        Some(Value::Str(s)) => Some(s.clone()),
        Some(v) => {
            return Err(bad(
                path,
                format!("`activation_func` is {}, not a string", v.describe()),
            ))
        }
    };
    let flag = |key: &str, default: bool| get(d, key).map_or(default, truthy);
    let dropout_structure = match get(d, "dropout_structure") {
        None | Some(Value::None) => None,
        Some(v) => Some(numbers(path, "dropout_structure", v)?),
    };
    let dropout_structure = match dropout_structure {
        Some(s) => s,
        None => parse_dropout_structure(
            &layer_structure,
            flag("use_dropout", false),
            flag("last_layer_dropout", false),
        ),
    };
    let name = match get(d, "name") {
        Some(Value::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let mut sizes = Vec::new();
    for (key, value) in d {
        let Value::Int(width) = key else { continue };
        if sizes.len() == MAX_SIZES {
            return Err(bad(path, format!("more than {MAX_SIZES} context widths")));
        }
        let width = usize::try_from(*width)
            .ok()
            .filter(|w| (1..=MAX_WIDTH).contains(w))
            .ok_or_else(|| bad(path, format!("context width {width} is out of range")))?;
        let (Value::Tuple(pair) | Value::List(pair)) = value else {
            return Err(bad(
                path,
                format!(
                    "width {width}: {}, not a pair of state dicts",
                    value.describe()
                ),
            ));
        };
        let (Some(k), Some(v)) = (pair.first(), pair.get(1)) else {
            return Err(bad(path, format!("width {width}: fewer than two modules")));
        };
        sizes.push(SizeModules {
            width,
            k: module(&archive, width, k)?,
            v: module(&archive, width, v)?,
        });
    }
    Ok(HypernetworkFile {
        path: path.to_path_buf(),
        name,
        layer_structure,
        activation_func,
        add_layer_norm: flag("is_layer_norm", false),
        activate_output: flag("activate_output", true),
        dropout_structure,
        sizes,
    })
}

/// One module's state dict, in f32, with A1111's `fix_old_state_dict` renames
/// (`linear1.*` → `linear.0.*`, `linear2.*` → `linear.1.*`).
fn module(archive: &TorchArchive, width: usize, v: &Value) -> Result<ModuleTensors> {
    let path = archive.path();
    let Value::Dict(items) = v else {
        return Err(bad(
            path,
            format!(
                "width {width}: a module is {}, not a state dict",
                v.describe()
            ),
        ));
    };
    if items.len() > MAX_MODULE_TENSORS {
        return Err(bad(
            path,
            format!("width {width}: more than {MAX_MODULE_TENSORS} tensors in a module"),
        ));
    }
    let mut out: ModuleTensors = Vec::with_capacity(items.len());
    for (k, t) in items {
        let (Value::Str(name), Value::Tensor(t)) = (k, t) else {
            return Err(bad(
                path,
                format!(
                    "width {width}: entry {} is not a named tensor",
                    k.describe()
                ),
            ));
        };
        let name = match name.as_str() {
            "linear1.weight" => "linear.0.weight",
            "linear1.bias" => "linear.0.bias",
            "linear2.weight" => "linear.1.weight",
            "linear2.bias" => "linear.1.bias",
            other => other,
        }
        .to_string();
        let full = format!("{width}.{name}");
        let t = archive.tensor(full.clone(), (**t).clone())?;
        if !t.dtype.is_float() {
            return Err(WeightsError::BadDtype {
                path: path.to_path_buf(),
                name: full,
                dtype: t.dtype.name().to_string(),
            });
        }
        let tensor = decode(
            &archive.bytes(&t),
            t.dtype,
            &t.shape,
            DType::F32,
            &Device::Cpu,
        )
        .map_err(|e| WeightsError::Tensor {
            path: path.to_path_buf(),
            name: full,
            source: Box::new(e),
        })?;
        out.retain(|(n, _)| *n != name);
        out.push((name, tensor));
    }
    Ok(out)
}

/// A1111's `list_hypernetworks` over `dirs` in order: every `*.pt` file below each folder
/// (`glob('**/*.pt', recursive=True)`: names starting with `.` are passed over, extension
/// case-sensitive, links to folders followed, at most [`MAX_WALK_DEPTH`] levels down), sorted
/// by lowercased path; name = file stem; a later file of the same name replaces the earlier
/// one (keeping the first one's place); a file named `None.pt` is left out. A folder that does
/// not exist contributes nothing.
pub fn list_hypernetworks(dirs: &[PathBuf]) -> Result<Vec<HypernetworkOnDisk>> {
    let mut found: Vec<HypernetworkOnDisk> = Vec::new();
    for dir in dirs {
        if !dir.exists() {
            continue;
        }
        let mut files = Vec::new();
        walk(dir, 0, &mut files)?;
        files.sort_by_cached_key(|p| p.to_string_lossy().to_lowercase());
        for path in files {
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pt"))
            else {
                continue;
            };
            if name == "None" || name.is_empty() {
                continue;
            }
            let entry = HypernetworkOnDisk {
                name: name.to_string(),
                path: path.clone(),
            };
            match found.iter_mut().find(|e| e.name == name) {
                Some(e) => *e = entry,
                None => found.push(entry),
            }
        }
    }
    Ok(found)
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if depth == 0 => return Err(WeightsError::io(dir, e)),
        // glob passes over folders it cannot list
        Err(_) => return Ok(()),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        if path.is_dir() {
            if depth < MAX_WALK_DEPTH {
                walk(&path, depth + 1, out)?;
            }
        } else if path.is_file() && entry.file_name().to_string_lossy().ends_with(".pt") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_structure_as_a1111_parses_it() {
        assert_eq!(
            parse_dropout_structure(&[1.0, 2.0, 1.0], false, true),
            [0.0; 3]
        );
        assert_eq!(
            parse_dropout_structure(&[1.0, 2.0, 2.0, 1.0], true, false),
            [0.0, 0.3, 0.0, 0.0]
        );
        assert_eq!(
            parse_dropout_structure(&[1.0, 2.0, 2.0, 1.0], true, true),
            [0.0, 0.3, 0.3, 0.0]
        );
    }

    #[test]
    fn listing_follows_glob() {
        let dir = std::env::temp_dir().join(format!("sumi-hn-list-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for f in [
            "b.pt",
            "sub/a.pt",
            "sub/b.pt",
            ".hidden/c.pt",
            "d.PT",
            "None.pt",
            "e.ckpt",
        ] {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"x").unwrap();
        }
        let list = list_hypernetworks(std::slice::from_ref(&dir)).unwrap();
        let got: Vec<(&str, PathBuf)> = list
            .iter()
            .map(|e| {
                (
                    e.name.as_str(),
                    e.path.strip_prefix(&dir).unwrap().to_path_buf(),
                )
            })
            .collect();
        // sorted by path: b.pt, sub/a.pt, sub/b.pt; the later b replaces the first
        assert_eq!(
            got,
            [
                ("b", PathBuf::from("sub/b.pt")),
                ("a", PathBuf::from("sub/a.pt"))
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
