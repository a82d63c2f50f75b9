//! The textual-inversion embeddings of a loaded [`Pipeline`], as A1111's `/sdapi/v1/embeddings`
//! lists them (`EmbeddingDatabase.word_embeddings` and `skipped_embeddings`): `loaded` is exactly
//! what the pipeline's prompts can use (read and width-checked when it was loaded); `skipped`
//! are embeddings of the folder whose vectors have another width than this model's text
//! encoder (A1111's shape check), each with the reason. Files that hold no usable embedding at
//! all are reported apart (A1111 only prints those).

use std::path::{Path, PathBuf};

use sumi_weights::embedding::{Embedding, EmbeddingDir, EmbeddingError};

use crate::generate::Pipeline;

/// One embedding, as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingInfo {
    /// The name prompts use (the file stem).
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// The training step recorded in the file (A1111's `.pt` files).
    pub step: Option<i64>,
    /// The width of its vectors (A1111's `shape`).
    pub shape: usize,
    /// How many vectors (prompt positions) it takes.
    pub vectors: usize,
}

impl From<&Embedding> for EmbeddingInfo {
    fn from(e: &Embedding) -> Self {
        Self {
            name: e.name.clone(),
            path: e.path.clone(),
            step: e.step,
            shape: e.width(),
            vectors: e.len(),
        }
    }
}

/// An embedding the model cannot use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEmbedding {
    /// The embedding.
    pub embedding: EmbeddingInfo,
    /// Why it is not used (its width against the text encoder's).
    pub reason: String,
}

/// The embeddings of a loaded pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmbeddingReport {
    /// Usable in prompts: exactly those the pipeline loaded, in its order.
    pub loaded: Vec<EmbeddingInfo>,
    /// Embeddings of another text-encoder width (A1111's `skipped`).
    pub skipped: Vec<SkippedEmbedding>,
    /// Files of the folder that hold no embedding Sumi can read, with the reason (or the
    /// folder's own error).
    pub unreadable: Vec<String>,
}

impl Pipeline {
    /// The width of the text encoder's vectors (what an embedding must have).
    pub fn text_encoder_width(&self) -> usize {
        self.clip_width
    }

    /// The embeddings this pipeline uses, and those of its embeddings folder it skipped (read
    /// once, when it was loaded).
    pub fn embedding_report(&self) -> &EmbeddingReport {
        &self.embedding_report
    }
}

/// The embeddings of `dir` a text encoder `width` wide can use (A1111 registers them in walk
/// order; one of another width neither registers nor replaces one of the same name), with the
/// report of the folder.
pub(crate) fn load_embeddings(
    dir: &Path,
    width: usize,
) -> Result<(Vec<Embedding>, EmbeddingReport), EmbeddingError> {
    let loaded = EmbeddingDir::load(dir, Some(width))?.loaded;
    let mut report = EmbeddingReport {
        loaded: loaded.iter().map(EmbeddingInfo::from).collect(),
        ..Default::default()
    };
    report.add_skipped(dir, width);
    Ok((loaded, report))
}

impl EmbeddingReport {
    /// Adds the embeddings of `dir` whose vectors are not `width` wide, and its unreadable
    /// files.
    fn add_skipped(&mut self, dir: &Path, width: usize) {
        let all = match EmbeddingDir::load(dir, None) {
            Ok(d) => d,
            Err(e) => {
                self.unreadable.push(e.to_string());
                return;
            }
        };
        self.unreadable
            .extend(all.skipped.iter().map(ToString::to_string));
        for e in &all.loaded {
            if let Err(why) = e.check_width(width) {
                self.skipped.push(SkippedEmbedding {
                    embedding: EmbeddingInfo::from(e),
                    reason: why.to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/embeddings")
    }

    #[test]
    fn another_width_is_skipped_with_its_reason() {
        let mut r = EmbeddingReport::default();
        r.add_skipped(&fixtures(), 64);
        let names: Vec<&str> = r
            .skipped
            .iter()
            .map(|s| s.embedding.name.as_str())
            .collect();
        assert_eq!(names, ["wide"]);
        let wide = &r.skipped[0];
        assert_eq!((wide.embedding.shape, wide.embedding.vectors), (768, 2));
        assert!(wide.reason.contains("768 wide"), "{}", wide.reason);
        assert!(wide.reason.contains("64 wide"), "{}", wide.reason);
        // bare.pt, evil.pt, pictured.png, twoterms.safetensors, xlemb.safetensors
        assert_eq!(r.unreadable.len(), 5, "{:?}", r.unreadable);
        assert!(r.unreadable.iter().any(|u| u.contains("evil.pt")));

        let mut r = EmbeddingReport::default();
        r.add_skipped(&fixtures(), 768);
        let names: Vec<&str> = r
            .skipped
            .iter()
            .map(|s| s.embedding.name.as_str())
            .collect();
        assert_eq!(names, ["tinyconcept", "tinydict", "tinyemb", "tinypt"]);

        let mut r = EmbeddingReport::default();
        r.add_skipped(Path::new("/nonexistent/embeddings"), 64);
        assert!(r.skipped.is_empty());
        assert!(r.unreadable[0].contains("/nonexistent/embeddings"));
    }
}
