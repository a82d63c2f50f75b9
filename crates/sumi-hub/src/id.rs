//! Hub ids as Sumi's model options take them: `org/name`, `org/name/path/in/repo.safetensors`,
//! either with `@revision` (a branch, tag or commit; `main` when absent). Parsed strictly: the
//! repo part follows the Hub's own rule (`huggingface_hub`'s `validate_repo_id`: letters,
//! digits, `-`, `_`, `.`, at most 96 characters, no `--` or `..`, not starting or ending with
//! `-` or `.`), the path has no `.`/`..`/empty segments and only plain file-name characters, so
//! that no part of an id can leave the cache folder it is stored under.

use std::fmt;

use crate::error::{HubError, Result};

/// Longest id accepted, in bytes.
const MAX_ID: usize = 512;
/// Longest repo name part (the Hub's own limit).
const MAX_REPO_PART: usize = 96;
/// Longest path segment (a file name).
const MAX_SEGMENT: usize = 255;
/// Deepest path inside a repo.
const MAX_DEPTH: usize = 16;
/// Extensions of a model file: `dir/x.safetensors` that does not exist is a missing local
/// file, not the Hub repo `dir/x.safetensors`.
const FILE_EXTENSIONS: &[&str] = &[".safetensors", ".ckpt", ".bin", ".pt", ".pth", ".yaml"];

/// A model on the Hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubId {
    /// `org/name`.
    pub repo: String,
    /// A file in the repo (`/`-separated), or none: the repo's one checkpoint or its diffusers
    /// folders.
    pub file: Option<String>,
    /// The branch, tag or commit (`main` when not given).
    pub revision: String,
}

impl HubId {
    /// Whether `s` has the shape of a Hub id (callers try a local path first): two or more
    /// `/`-separated parts, not starting with `/`, `.` or `~`, no `\`, and not just
    /// `folder/file.safetensors` (a missing local file).
    pub fn looks_like(s: &str) -> bool {
        let spec = s.split('@').next().unwrap_or("");
        let parts: Vec<&str> = spec.split('/').collect();
        if parts.len() < 2
            || s.starts_with(['/', '.', '~'])
            || s.contains('\\')
            || parts[0].is_empty()
            || parts[1].is_empty()
        {
            return false;
        }
        let lower = parts[1].to_ascii_lowercase();
        !(parts.len() == 2 && FILE_EXTENSIONS.iter().any(|e| lower.ends_with(e)))
    }

    /// Parses `org/name[/path][@revision]`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: String| HubError::BadId {
            id: s.chars().take(MAX_ID).collect(),
            reason,
        };
        if s.len() > MAX_ID {
            return Err(bad(format!("longer than {MAX_ID} bytes")));
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(bad(format!("the character {c:?} is not allowed")));
        }
        let (spec, revision) = match s.split_once('@') {
            Some((spec, rev)) => (spec, Some(rev)),
            None => (s, None),
        };
        let parts: Vec<&str> = spec.split('/').collect();
        if parts.len() < 2 {
            return Err(bad("expected org/name or org/name/file".into()));
        }
        for p in &parts[..2] {
            repo_part(p).map_err(&bad)?;
        }
        let file = if parts.len() > 2 {
            Some(repo_path(&parts[2..].join("/")).map_err(&bad)?)
        } else {
            None
        };
        let revision = match revision {
            None => "main".to_string(),
            Some(r) => self::revision(r).map_err(|e| bad(format!("revision: {e}")))?,
        };
        Ok(Self {
            repo: format!("{}/{}", parts[0], parts[1]),
            file,
            revision,
        })
    }

    /// This id naming `file` in the same repo and revision.
    pub fn with_file(&self, file: &str) -> Self {
        Self {
            file: Some(file.to_string()),
            ..self.clone()
        }
    }

    /// The repo's folder in the Hub cache: `models--org--name`.
    pub fn cache_folder(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }
}

impl fmt::Display for HubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repo)?;
        if let Some(file) = &self.file {
            write!(f, "/{file}")?;
        }
        if self.revision != "main" {
            write!(f, "@{}", self.revision)?;
        }
        Ok(())
    }
}

/// `org` or `name`: the Hub's `validate_repo_id` rule.
fn repo_part(p: &str) -> std::result::Result<(), String> {
    if p.is_empty() || p.len() > MAX_REPO_PART {
        return Err(format!(
            "`{p}`: a repo owner or name has 1 to {MAX_REPO_PART} characters"
        ));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "`{p}`: the character {c:?} is not allowed in a repo id"
        ));
    }
    if p.contains("--") || p.contains("..") {
        return Err(format!("`{p}`: `--` and `..` are not allowed in a repo id"));
    }
    if p.starts_with(['-', '.']) || p.ends_with(['-', '.']) {
        return Err(format!(
            "`{p}`: a repo id part cannot start or end with `-` or `.`"
        ));
    }
    Ok(())
}

/// A `/`-separated path inside a repo, validated (also for names the Hub lists).
pub fn repo_path(path: &str) -> std::result::Result<String, String> {
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() > MAX_DEPTH {
        return Err(format!("`{path}`: deeper than {MAX_DEPTH} folders"));
    }
    for seg in &segments {
        if seg.is_empty() || *seg == "." || *seg == ".." {
            return Err(format!(
                "`{path}`: empty, `.` and `..` parts are not allowed"
            ));
        }
        if seg.len() > MAX_SEGMENT {
            return Err(format!(
                "`{path}`: a part is longer than {MAX_SEGMENT} bytes"
            ));
        }
        let plain = |c: char| c.is_ascii_alphanumeric() || "-_.+=,()[]~".contains(c);
        if let Some(c) = seg.chars().find(|&c| !plain(c)) {
            return Err(format!(
                "`{path}`: the character {c:?} is not allowed in a file name"
            ));
        }
    }
    Ok(path.to_string())
}

/// A branch, tag or commit name: letters, digits, `-_.` and `/` between non-empty parts
/// (`refs/pr/1`), no `..`.
fn revision(r: &str) -> std::result::Result<String, String> {
    if r.is_empty() || r.len() > MAX_SEGMENT {
        return Err(format!("1 to {MAX_SEGMENT} characters expected"));
    }
    for seg in r.split('/') {
        if seg.is_empty() || seg == "." || seg.contains("..") {
            return Err(format!("`{r}`: empty parts and `..` are not allowed"));
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if let Some(c) = seg.chars().find(|&c| !ok(c)) {
            return Err(format!("`{r}`: the character {c:?} is not allowed"));
        }
    }
    Ok(r.to_string())
}

/// Whether `s` is a full commit hash (40 lowercase hex digits).
pub fn is_commit(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repo_file_and_revision() {
        let id = HubId::parse("org/name/unet/x.safetensors@v1.0").unwrap();
        assert_eq!(id.repo, "org/name");
        assert_eq!(id.file.as_deref(), Some("unet/x.safetensors"));
        assert_eq!(id.revision, "v1.0");
        assert_eq!(id.to_string(), "org/name/unet/x.safetensors@v1.0");
        assert_eq!(id.cache_folder(), "models--org--name");
        let id = HubId::parse("a/b").unwrap();
        assert_eq!((id.file, id.revision.as_str()), (None, "main"));
    }

    #[test]
    fn rejects_what_could_leave_the_cache() {
        for bad in [
            "org/name/../x",
            "org/name/./x",
            "org//x",
            "org/name/a//b",
            "../name",
            "org/na..me",
            "org/-name",
            "org/name@",
            "org/name@../x",
            "org/name/a b",
            "org/name/x%2F",
            "org/name/x\\y",
            "org",
            "org/name/x@main@dev",
        ] {
            let e = HubId::parse(bad).unwrap_err().to_string();
            assert!(e.contains("is not a Hub id"), "{bad}: {e}");
        }
    }

    #[test]
    fn local_looking_paths_are_not_hub_ids() {
        for local in [
            "/abs/x",
            "./a/b",
            "~/a/b",
            "model.safetensors",
            "dir/x.safetensors",
        ] {
            assert!(!HubId::looks_like(local), "{local}");
        }
        for hub in ["org/name", "org/name/x.safetensors", "org/name@rev"] {
            assert!(HubId::looks_like(hub), "{hub}");
        }
    }

    #[test]
    fn commits_are_forty_lowercase_hex() {
        assert!(is_commit(&"a".repeat(40)));
        assert!(!is_commit(&"A".repeat(40)));
        assert!(!is_commit("main"));
    }
}
