//! Which files of a repo named without a file (`org/name`) Sumi needs:
//! - a diffusers repo (`model_index.json` at its root): `model_index.json`, the `config.json`
//!   and one weights file of `unet/`, `vae/` and `text_encoder/` (the non-variant
//!   `.safetensors` first, then the `fp16` variant, then `.bin`: the order Sumi's diffusers
//!   loader looks in, `sumi_weights::layout::diffusers::COMPONENTS`), the small files of
//!   `tokenizer/` and `scheduler/`, and `text_encoder_2/config.json` where there is one (so
//!   that an SDXL repo is recognised and refused by name, not half-loaded);
//! - else the one checkpoint file at its root: `.safetensors`, else `.ckpt`, else `.bin`;
//!   several of the first kind found are an error listing them.

use crate::error::{HubError, Result};

/// The weight files each needed diffusers component may have, by stem.
const COMPONENTS: &[(&str, &[&str])] = &[
    ("unet", &["diffusion_pytorch_model"]),
    ("vae", &["diffusion_pytorch_model"]),
    ("text_encoder", &["model", "pytorch_model"]),
];
/// Weight file endings, best first.
const WEIGHT_ENDINGS: &[&str] = &[".safetensors", ".fp16.safetensors", ".bin", ".fp16.bin"];
/// Folders taken whole (configs, vocabularies: a few KB to a few MB).
const SMALL_FOLDERS: &[&str] = &["tokenizer", "scheduler"];
/// Checkpoint extensions at a repo's root, best first.
const CHECKPOINTS: &[&str] = &[".safetensors", ".ckpt", ".bin"];

/// What to fetch of a repo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// One checkpoint file.
    Single(String),
    /// These files of a diffusers repo; the model is the snapshot folder.
    Diffusers(Vec<String>),
}

/// The plan for repo `id` whose files are `files` (repo paths).
pub fn plan(id: &str, files: &[String]) -> Result<Plan> {
    let has = |f: &str| files.iter().any(|x| x == f);
    if has("model_index.json") {
        return diffusers(id, files).map(Plan::Diffusers);
    }
    for ext in CHECKPOINTS {
        let mut found: Vec<String> = files
            .iter()
            .filter(|f| !f.contains('/') && f.to_ascii_lowercase().ends_with(ext))
            .cloned()
            .collect();
        found.sort();
        match found.len() {
            0 => continue,
            1 => return Ok(Plan::Single(found.remove(0))),
            _ => {
                return Err(HubError::Ambiguous {
                    id: id.to_string(),
                    files: found,
                })
            }
        }
    }
    Err(HubError::NoModel {
        id: id.to_string(),
        reason: "no .safetensors, .ckpt or .bin file at its root and no model_index.json".into(),
    })
}

fn diffusers(id: &str, files: &[String]) -> Result<Vec<String>> {
    let has = |f: &str| files.iter().any(|x| x == f);
    let mut out = vec!["model_index.json".to_string()];
    for (folder, stems) in COMPONENTS {
        let weights = WEIGHT_ENDINGS
            .iter()
            .flat_map(|end| {
                stems
                    .iter()
                    .map(move |stem| format!("{folder}/{stem}{end}"))
            })
            .find(|f| has(f))
            .ok_or_else(|| HubError::NoModel {
                id: id.to_string(),
                reason: format!(
                    "a diffusers repo without {folder} weights ({folder}/{}.safetensors; \
                     sharded weights are not supported)",
                    stems[0]
                ),
            })?;
        let config = format!("{folder}/config.json");
        if has(&config) {
            out.push(config);
        }
        out.push(weights);
    }
    for folder in SMALL_FOLDERS {
        let prefix = format!("{folder}/");
        out.extend(
            files
                .iter()
                .filter(|f| {
                    f.strip_prefix(&prefix)
                        .is_some_and(|rest| !rest.contains('/'))
                })
                .cloned(),
        );
    }
    if has("text_encoder_2/config.json") {
        out.push("text_encoder_2/config.json".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(files: &[&str]) -> Vec<String> {
        files.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn one_checkpoint_safetensors_first() {
        let files = list(&["README.md", "a.ckpt", "b.safetensors", "sub/c.safetensors"]);
        assert_eq!(
            plan("o/n", &files).unwrap(),
            Plan::Single("b.safetensors".into())
        );
        let files = list(&["a.ckpt", "v.yaml"]);
        assert_eq!(plan("o/n", &files).unwrap(), Plan::Single("a.ckpt".into()));
        let e = plan("o/n", &list(&["README.md"])).unwrap_err();
        assert!(
            e.to_string().starts_with("o/n: no model in the repo"),
            "{e}"
        );
    }

    #[test]
    fn several_checkpoints_are_listed() {
        let e = plan("o/n", &list(&["b.safetensors", "a.safetensors", "c.ckpt"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "o/n holds several checkpoint files; name one, e.g. o/n/a.safetensors: \
             a.safetensors, b.safetensors"
        );
    }

    #[test]
    fn diffusers_takes_the_needed_files_fp32_safetensors_first() {
        let files = list(&[
            "model_index.json",
            "v1-5.safetensors",
            "unet/config.json",
            "unet/diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.fp16.safetensors",
            "text_encoder/config.json",
            "text_encoder/pytorch_model.bin",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "scheduler/scheduler_config.json",
            "safety_checker/model.safetensors",
            "feature_extractor/preprocessor_config.json",
        ]);
        let Plan::Diffusers(got) = plan("o/n", &files).unwrap() else {
            panic!("not diffusers")
        };
        assert_eq!(
            got,
            list(&[
                "model_index.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors",
                "vae/config.json",
                "vae/diffusion_pytorch_model.fp16.safetensors",
                "text_encoder/config.json",
                "text_encoder/pytorch_model.bin",
                "tokenizer/vocab.json",
                "tokenizer/merges.txt",
                "scheduler/scheduler_config.json",
            ])
        );
    }
}
