//! The network files of the LoRA folders, named as A1111 names them
//! (`extensions-builtin/Lora/networks.py`: `list_available_networks`, `process_network_files`,
//! `load_networks`; `network.py`: `NetworkOnDisk`; `modules/util.py`: `walk_files`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::hash::addnet_hash;
use crate::error::{Result, WeightsError};
use crate::safetensors::MAX_HEADER_BYTES;

/// Deepest folder level walked below a LoRA folder (A1111's `os.walk(followlinks=True)` has
/// no bound and loops on a link cycle; 16 levels is beyond any real collection).
pub const MAX_WALK_DEPTH: usize = 16;

/// The base model a network file says it was trained for (A1111's `SdVersion`, from the
/// kohya metadata; shown by A1111's UI to filter the list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdVersion {
    /// No metadata.
    Unknown,
    /// Metadata without the SD2 or SDXL marks.
    Sd1,
    /// `ss_v2` is `True`.
    Sd2,
    /// `ss_base_model_version` starts with `sdxl_`.
    Sdxl,
}

/// A network file found in the LoRA folders (A1111's `NetworkOnDisk`).
#[derive(Debug, Clone)]
pub struct NetworkOnDisk {
    /// The file name without its extension (Python's `os.path.splitext`).
    pub name: String,
    /// `ss_output_name` from the metadata, else [`Self::name`].
    pub alias: String,
    /// The file.
    pub path: PathBuf,
    /// The safetensors `__metadata__` (values that are not JSON strings kept as JSON text);
    /// empty for other files and where the header could not be read.
    pub metadata: BTreeMap<String, String>,
    /// Whether the extension is `.safetensors` (any case), which decides the hash and the
    /// reader, as in A1111.
    pub is_safetensors: bool,
    hash: OnceLock<String>,
}

impl NetworkOnDisk {
    /// A1111's hash of the file: the metadata's `sshs_model_hash` when present and not empty,
    /// else for a `.safetensors` file the "addnet" hash ([`addnet_hash`]), else the sha256 of
    /// the whole file. Computed once (A1111 caches it by file).
    pub fn hash(&self) -> Result<String> {
        if let Some(h) = self.hash.get() {
            return Ok(h.clone());
        }
        let h = match self.metadata.get("sshs_model_hash") {
            Some(h) if !h.is_empty() => h.clone(),
            _ if self.is_safetensors => addnet_hash(&self.path)?,
            _ => crate::hash::sha256_file(&self.path)?.sha256,
        };
        Ok(self.hash.get_or_init(|| h).clone())
    }

    /// The first 12 characters of [`Self::hash`] (what `Lora hashes` in the infotext writes).
    pub fn shorthash(&self) -> Result<String> {
        Ok(self.hash()?.chars().take(12).collect())
    }

    /// A1111's `detect_version` from the metadata.
    pub fn sd_version(&self) -> SdVersion {
        let get = |k: &str| self.metadata.get(k).map(String::as_str).unwrap_or("");
        if get("ss_base_model_version").starts_with("sdxl_") {
            SdVersion::Sdxl
        } else if get("ss_v2") == "True" {
            SdVersion::Sd2
        } else if !self.metadata.is_empty() {
            SdVersion::Sd1
        } else {
            SdVersion::Unknown
        }
    }
}

/// The networks of the LoRA folders, with A1111's name and alias tables.
#[derive(Debug, Default)]
pub struct NetworkLibrary {
    /// Every file registered: after the scan, the `available` networks first (by name, in the
    /// order names were first seen), then the files that a later file of the same name
    /// displaced and only an alias still reaches.
    files: Vec<NetworkOnDisk>,
    /// How many of `files` are A1111's `available_networks`.
    available: usize,
    /// During the scan: `available_networks` as (name, file), in the order names were first seen.
    names: Vec<(String, usize)>,
    by_name: HashMap<String, usize>,
    /// `available_network_aliases`: name or alias → file.
    aliases: HashMap<String, usize>,
    /// `forbidden_network_aliases` (lowercase, plus A1111's literal `"Addams"`).
    forbidden: HashSet<String>,
    problems: Vec<WeightsError>,
}

impl NetworkLibrary {
    /// A1111's `list_available_networks` over `dirs` in order (A1111: `--lora-dir`, then the
    /// LyCORIS back-compat folder): every `.pt`, `.ckpt` and `.safetensors` file (extension in
    /// any case) below each folder, folders in natural order (`walk_files`), each folder's
    /// files in natural order; name = file stem, alias = `ss_output_name`.
    ///
    /// A later file with the same name replaces the earlier one under that name; an alias
    /// that is already a name or an alias becomes forbidden (lowercased), and so are `none`
    /// and A1111's literal `Addams`. A folder that does not exist contributes nothing (A1111
    /// creates its LoRA folder). Files that are not regular files (FIFOs, sockets, broken
    /// links), cannot be opened, or have a name that is not UTF-8 are left out and listed in
    /// [`Self::problems`]; a `.safetensors` file whose header cannot be read is listed with
    /// empty metadata, as A1111 does, and also reported there. Err only when a folder exists
    /// and cannot be listed.
    pub fn scan(dirs: &[PathBuf]) -> Result<Self> {
        let mut lib = Self::default();
        lib.forbidden.insert("none".into());
        lib.forbidden.insert("Addams".into());
        for dir in dirs {
            if !dir.exists() {
                continue;
            }
            let mut roots = Vec::new();
            walk(dir, 0, &mut roots, &mut lib.problems)?;
            roots.sort_by_cached_key(|(root, _)| natural_key(&root.to_string_lossy()));
            for (root, mut files) in roots {
                files.sort_by_cached_key(|f| natural_key(f));
                for f in files {
                    lib.consider(root.join(&f), &f);
                }
            }
        }
        lib.arrange();
        Ok(lib)
    }

    /// One file of the walk: registered when its extension is a network's.
    fn consider(&mut self, path: PathBuf, file_name: &str) {
        let (stem, ext) = splitext(file_name);
        let ext = ext.to_lowercase();
        if !matches!(ext.as_str(), ".pt" | ".ckpt" | ".safetensors") {
            return;
        }
        let problem = |detail: String| WeightsError::BadNetwork {
            path: path.clone(),
            detail,
        };
        match std::fs::metadata(&path) {
            Err(e) => {
                self.problems.push(WeightsError::io(&path, e));
                return;
            }
            Ok(m) if !m.is_file() => {
                self.problems
                    .push(problem("not a regular file; left out of the list".into()));
                return;
            }
            Ok(_) => {}
        }
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                self.problems.push(WeightsError::io(&path, e));
                return;
            }
        };
        let is_safetensors = ext == ".safetensors";
        let metadata = if is_safetensors {
            read_metadata(&mut file).unwrap_or_else(|detail| {
                self.problems.push(WeightsError::BadSafetensors {
                    path: path.clone(),
                    detail: format!("{detail}; listed without metadata"),
                });
                BTreeMap::new()
            })
        } else {
            BTreeMap::new()
        };
        let name = stem.to_string();
        let alias = metadata
            .get("ss_output_name")
            .cloned()
            .unwrap_or_else(|| name.clone());
        self.register(NetworkOnDisk {
            name,
            alias,
            path,
            metadata,
            is_safetensors,
            hash: OnceLock::new(),
        });
    }

    /// A1111's `process_network_files` body for one entry.
    fn register(&mut self, entry: NetworkOnDisk) {
        let i = self.files.len();
        let (name, alias) = (entry.name.clone(), entry.alias.clone());
        self.files.push(entry);
        match self.by_name.insert(name.clone(), i) {
            Some(_) => {
                if let Some(slot) = self.names.iter_mut().find(|(n, _)| *n == name) {
                    slot.1 = i;
                }
            }
            None => self.names.push((name.clone(), i)),
        }
        if self.aliases.contains_key(&alias) {
            self.forbidden.insert(alias.to_lowercase());
        }
        self.aliases.insert(name, i);
        self.aliases.insert(alias, i);
    }

    /// Puts the available networks first, in the order of their names, so that [`Self::all`]
    /// is a slice; the displaced files follow.
    fn arrange(&mut self) {
        let n = self.files.len();
        let mut order: Vec<usize> = self.names.iter().map(|&(_, i)| i).collect();
        let mut listed = vec![false; n];
        for &i in &order {
            listed[i] = true;
        }
        order.extend((0..n).filter(|&i| !listed[i]));
        let mut new_index = vec![0; n];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new;
        }
        let mut old: Vec<Option<NetworkOnDisk>> = std::mem::take(&mut self.files)
            .into_iter()
            .map(Some)
            .collect();
        self.files = order
            .iter()
            .filter_map(|&i| old.get_mut(i).and_then(Option::take))
            .collect();
        for i in self.by_name.values_mut().chain(self.aliases.values_mut()) {
            *i = new_index[*i];
        }
        self.available = self.names.len();
        self.names.clear();
    }

    /// The file a prompt's `<lora:NAME:…>` means (A1111's `load_networks`): by file name
    /// when `NAME` lowercased is a forbidden alias, else by alias or name.
    pub fn find(&self, name: &str) -> Option<&NetworkOnDisk> {
        let i = if self.forbidden.contains(&name.to_lowercase()) {
            self.by_name.get(name)
        } else {
            self.aliases.get(name)
        };
        i.map(|&i| &self.files[i])
    }

    /// The networks by name (A1111's `available_networks`, what `/sdapi/v1/loras` lists), in
    /// the order names were first found; a name found twice gives its later file.
    pub fn all(&self) -> &[NetworkOnDisk] {
        self.files.get(..self.available).unwrap_or(&[])
    }

    /// The name A1111 puts in prompts for `entry` (`get_alias` with the default "Alias from
    /// file"): its alias, or its file name when the alias is forbidden.
    pub fn prompt_name<'a>(&self, entry: &'a NetworkOnDisk) -> &'a str {
        if self.forbidden.contains(&entry.alias.to_lowercase()) {
            &entry.name
        } else {
            &entry.alias
        }
    }

    /// Whether `alias` (compared lowercased) may only be used as a file name.
    pub fn is_forbidden_alias(&self, alias: &str) -> bool {
        self.forbidden.contains(&alias.to_lowercase())
    }

    /// What was passed over or only partly read during the scan, each naming its file.
    pub fn problems(&self) -> &[WeightsError] {
        &self.problems
    }
}

/// Python's `os.path.splitext` on a file name: the extension starts at the last dot, unless
/// everything before that dot is dots (`.pt` has no extension).
pub(crate) fn splitext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(dot) if name[..dot].bytes().any(|b| b != b'.') => (&name[..dot], &name[dot..]),
        _ => (name, ""),
    }
}

/// One part of A1111's `natural_sort_key`: `re.split('([0-9]+)')`, text lowercased, digit runs
/// as integers (compared by value: leading zeros dropped, then length, then digits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Text(String),
    Num(usize, String),
}

/// A1111's `natural_sort_key`; the full string breaks ties, for a stable order (A1111 keeps
/// the file system's order there).
fn natural_key(s: &str) -> (Vec<Part>, String) {
    let mut parts = Vec::new();
    let mut rest = s;
    loop {
        let text_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        parts.push(Part::Text(rest[..text_len].to_lowercase()));
        rest = &rest[text_len..];
        if rest.is_empty() {
            break;
        }
        let n = rest.bytes().take_while(u8::is_ascii_digit).count();
        let digits = rest[..n].trim_start_matches('0');
        parts.push(Part::Num(digits.len(), digits.to_string()));
        rest = &rest[n..];
    }
    (parts, s.to_string())
}

type Roots = Vec<(PathBuf, Vec<String>)>;

/// `os.walk(dir, followlinks=True)`: each folder with the names of its non-folder entries.
fn walk(
    dir: &Path,
    depth: usize,
    roots: &mut Roots,
    problems: &mut Vec<WeightsError>,
) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // the top folder must be readable; below it A1111's walk skips what it cannot list
        Err(e) if depth == 0 => return Err(WeightsError::io(dir, e)),
        Err(e) => {
            problems.push(WeightsError::io(dir, e));
            return Ok(());
        }
    };
    let mut files = Vec::new();
    let mut subdirs = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                problems.push(WeightsError::io(dir, e));
                continue;
            }
        };
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            problems.push(WeightsError::BadNetwork {
                path,
                detail: "the name is not UTF-8; left out".into(),
            });
            continue;
        };
        // `is_dir` follows links, as `followlinks=True`
        if path.is_dir() {
            subdirs.push(path);
        } else {
            files.push(name);
        }
    }
    roots.push((dir.to_path_buf(), files));
    for sub in subdirs {
        if depth + 1 > MAX_WALK_DEPTH {
            problems.push(WeightsError::BadNetwork {
                path: sub,
                detail: format!("deeper than {MAX_WALK_DEPTH} folders (a link cycle?); not walked"),
            });
            continue;
        }
        walk(&sub, depth + 1, roots, problems)?;
    }
    Ok(())
}

/// A1111's `read_metadata_from_safetensors`: the header's `__metadata__`, read without
/// validating the tensors. Err (A1111 reports and goes on with no metadata) when the first
/// bytes are not a header length over 2 followed by `{"` or `{'`, the header is longer than
/// [`MAX_HEADER_BYTES`], or is not a JSON object with an object `__metadata__`.
fn read_metadata(f: &mut File) -> std::result::Result<BTreeMap<String, String>, String> {
    let mut head = Vec::with_capacity(10);
    f.by_ref()
        .take(10)
        .read_to_end(&mut head)
        .map_err(|e| e.to_string())?;
    let mut len8 = [0u8; 8];
    let n8 = head.len().min(8);
    len8[..n8].copy_from_slice(&head[..n8]);
    let n = u64::from_le_bytes(len8);
    let start = head.get(8..).unwrap_or(&[]);
    if !(n > 2 && (start == b"{\"" || start == b"{'")) {
        return Err("not a safetensors file (no JSON header)".into());
    }
    if n > MAX_HEADER_BYTES {
        return Err(format!(
            "header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes"
        ));
    }
    let mut json = start.to_vec();
    f.take(n - 2)
        .read_to_end(&mut json)
        .map_err(|e| e.to_string())?;
    let value: serde_json::Value = serde_json::from_slice(&json)
        .map_err(|e| format!("header is not valid JSON (truncated?): {e}"))?;
    let obj = value.as_object().ok_or("header is not a JSON object")?;
    let Some(meta) = obj.get("__metadata__") else {
        return Ok(BTreeMap::new());
    };
    let meta = meta.as_object().ok_or("__metadata__ is not an object")?;
    Ok(meta
        .iter()
        .map(|(k, v)| {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            (k.clone(), v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitext_as_python() {
        assert_eq!(splitext("a.b.safetensors"), ("a.b", ".safetensors"));
        assert_eq!(splitext(".pt"), (".pt", ""));
        assert_eq!(splitext("..pt"), ("..pt", ""));
        assert_eq!(splitext("x"), ("x", ""));
        assert_eq!(splitext(".x.pt"), (".x", ".pt"));
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["b10", "B2", "a", "b02x", "b1"];
        v.sort_by_cached_key(|s| natural_key(s));
        assert_eq!(v, ["a", "b1", "B2", "b02x", "b10"]);
    }
}
