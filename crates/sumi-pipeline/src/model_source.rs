//! Where a model option's value comes from, for the front ends: a local file or folder as it
//! is, or — when no such path exists and the value has the shape `org/name[/path][@revision]` —
//! a Hugging Face Hub id, fetched into the Hub cache by [`sumi_hub`]; and which model to use
//! when none is named: `$SUMI_MODEL`, else [`DEFAULT_MODEL`].

use std::path::{Path, PathBuf};

pub use sumi_hub::{Event as HubEvent, Fetched, Hub, HubConfig, HubError, HubId};

/// The model used when neither `--model` nor `$SUMI_MODEL` names one: Stable Diffusion 1.5's
/// EMA-only weights (4.27 GB, sha256 `6ce0161689b3…`), the file A1111 downloads when it finds
/// no model, from the repo that replaced `runwayml/stable-diffusion-v1-5`.
pub const DEFAULT_MODEL: &str =
    "stable-diffusion-v1-5/stable-diffusion-v1-5/v1-5-pruned-emaonly.safetensors";

/// The environment variable naming the model when no `--model` is given.
pub const MODEL_ENV: &str = "SUMI_MODEL";

/// Who named the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The command line.
    Given,
    /// `$SUMI_MODEL`.
    Env,
    /// Nobody: [`DEFAULT_MODEL`].
    Default,
}

/// The model to use: `given`, else `$SUMI_MODEL`, else [`DEFAULT_MODEL`].
pub fn choose_model(given: Option<&Path>) -> (PathBuf, Origin) {
    match (given, std::env::var_os(MODEL_ENV).filter(|v| !v.is_empty())) {
        (Some(p), _) => (p.to_path_buf(), Origin::Given),
        (None, Some(v)) => (PathBuf::from(v), Origin::Env),
        (None, None) => (PathBuf::from(DEFAULT_MODEL), Origin::Default),
    }
}

/// What a model option's value names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A path (which may not exist: the reader then says so).
    Local(PathBuf),
    /// A model on the Hub.
    Hub(HubId),
}

impl Source {
    /// An existing path is local; else a value shaped as a Hub id is one (parsed strictly: a
    /// malformed id is an error); anything else is a local path that does not exist.
    pub fn of(arg: &Path) -> Result<Self, HubError> {
        if arg.exists() {
            return Ok(Self::Local(arg.to_path_buf()));
        }
        match arg.to_str() {
            Some(s) if HubId::looks_like(s) => HubId::parse(s).map(Self::Hub),
            _ => Ok(Self::Local(arg.to_path_buf())),
        }
    }
}

/// The local path `arg` stands for: itself, or the Hub model it names, fetched with `hub`
/// (progress through `on_event`).
pub fn resolve(
    arg: &Path,
    hub: impl FnOnce() -> Result<Hub, HubError>,
    on_event: &mut dyn FnMut(HubEvent<'_>),
) -> Result<PathBuf, HubError> {
    match Source::of(arg)? {
        Source::Local(p) => Ok(p),
        Source::Hub(id) => Ok(hub()?.fetch(&id, on_event)?.path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_paths_stay_local_and_ids_go_to_the_hub() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("org/name");
        std::fs::create_dir_all(&local).unwrap();
        assert_eq!(Source::of(&local).unwrap(), Source::Local(local.clone()));
        let id = Source::of(Path::new("org/name/x.safetensors@v2")).unwrap();
        assert_eq!(
            id,
            Source::Hub(HubId::parse("org/name/x.safetensors@v2").unwrap())
        );
        let missing = Path::new("models/x.safetensors");
        assert_eq!(Source::of(missing).unwrap(), Source::Local(missing.into()));
        let e = Source::of(Path::new("org/name/../../etc")).unwrap_err();
        assert!(e.to_string().contains("is not a Hub id"), "{e}");
        assert!(HubId::parse(DEFAULT_MODEL).is_ok());
    }
}
