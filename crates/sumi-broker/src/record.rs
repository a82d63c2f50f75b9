//! What a job is in Redis: its endpoint, state, progress, result; and the announcement of a
//! checkpoint. Reading a record back checks every field (it is another machine's data).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{BrokerError, Result};

/// Which A1111 route a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Endpoint {
    /// `/sdapi/v1/txt2img`.
    Txt2img,
    /// `/sdapi/v1/img2img`.
    Img2img,
    /// `/sdapi/v1/extra-single-image`.
    ExtraSingleImage,
}

impl Endpoint {
    /// The name the async job API and the records use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Txt2img => "txt2img",
            Self::Img2img => "img2img",
            Self::ExtraSingleImage => "extra-single-image",
        }
    }

    /// The endpoint called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Txt2img, Self::Img2img, Self::ExtraSingleImage]
            .into_iter()
            .find(|e| e.name() == name)
    }

    /// The route's path.
    pub fn path(self) -> &'static str {
        match self {
            Self::Txt2img => "/sdapi/v1/txt2img",
            Self::Img2img => "/sdapi/v1/img2img",
            Self::ExtraSingleImage => "/sdapi/v1/extra-single-image",
        }
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// A worker runs it.
    Running,
    /// Finished with a result (which may be an HTTP error of the request's own).
    Done,
    /// Given up: attempts used up, or no live worker in time.
    Failed,
    /// Cancelled by a client.
    Cancelled,
}

impl JobState {
    /// The name stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Running,
            Self::Done,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// Whether the job has ended.
    pub fn finished(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

/// A finished job's answer: the HTTP status and JSON body its route gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
}

/// A running job's progress, as the worker publishes it per step (A1111's progress fields).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// 0–1.
    pub progress: f64,
    /// Seconds left, estimated.
    pub eta_relative: f64,
    /// A1111's `state` object.
    pub state: Value,
    /// A one-line summary.
    pub textinfo: Option<String>,
    /// Bumped whenever the preview changes.
    pub preview_version: u64,
}

/// A checkpoint a worker announced, as `/sdapi/v1/sd-models` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// A1111's title, `<file> [<short hash>]`.
    pub title: String,
    /// The name (file stem with its folder under the models folder).
    pub model_name: String,
    /// The short hash (10 hex digits): the stream's name.
    pub hash: String,
    /// The full sha256.
    pub sha256: String,
    /// The file as the worker knows it.
    pub filename: String,
    /// Sumi's `latent_space` of the checkpoint as the single server lists it (`sd`, `sdxl`;
    /// `None` where the file's header does not say, and in announcements of workers that
    /// predate the field): the web page's default size follows it.
    #[serde(default)]
    pub latent_space: Option<String>,
}

impl ModelEntry {
    /// Whether `wanted` names this checkpoint (title, name, file name, short or full hash),
    /// as A1111 matches `sd_model_checkpoint`.
    pub fn matches(&self, wanted: &str) -> bool {
        let file = std::path::Path::new(&self.filename)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        [
            &self.title,
            &self.model_name,
            &self.hash,
            &self.sha256,
            &file,
        ]
        .iter()
        .any(|n| n.as_str() == wanted)
    }
}

/// A job's record, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    /// The id.
    pub id: String,
    /// Where it is.
    pub state: JobState,
    /// Its route.
    pub endpoint: Endpoint,
    /// Its checkpoint's short hash.
    pub model: String,
    /// The latest progress (running jobs).
    pub progress: Option<Progress>,
    /// What the request asked for and was not applied.
    pub warnings: Vec<String>,
    /// The worker that ran it (last).
    pub worker: Option<String>,
    /// Deliveries so far.
    pub attempts: u32,
    /// Queued at (Unix seconds).
    pub created: Option<f64>,
    /// Started at, last delivery.
    pub started: Option<f64>,
    /// Finished at.
    pub finished: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The longest text field accepted from a record (ids, names, messages).
const TEXT_LIMIT: usize = 64 << 10;

fn malformed(key: &str, reason: impl Into<String>) -> BrokerError {
    BrokerError::Malformed {
        key: key.to_string(),
        reason: reason.into(),
    }
}

impl JobStatus {
    /// Reads a record's fields (`key` names it in errors); `None` when it has none.
    pub fn from_fields(key: &str, f: &HashMap<String, Vec<u8>>) -> Result<Option<Self>> {
        if f.is_empty() {
            return Ok(None);
        }
        let text = |name: &str| -> Result<Option<String>> {
            match f.get(name) {
                None => Ok(None),
                Some(b) if b.len() > TEXT_LIMIT => Err(malformed(key, format!("{name}: too long"))),
                Some(b) => String::from_utf8(b.clone())
                    .map(Some)
                    .map_err(|_| malformed(key, format!("{name}: not UTF-8"))),
            }
        };
        let number = |name: &str| -> Result<Option<f64>> {
            text(name)?
                .map(|t| {
                    t.parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| malformed(key, format!("{name}: not a number")))
                })
                .transpose()
        };
        let need = |name: &str| -> Result<String> {
            text(name)?.ok_or_else(|| malformed(key, format!("{name}: missing")))
        };
        let state = need("state")?;
        let endpoint = need("endpoint")?;
        let progress = match text("progress")? {
            None => None,
            Some(t) if t.is_empty() => None,
            Some(t) => Some(
                serde_json::from_str(&t).map_err(|e| malformed(key, format!("progress: {e}")))?,
            ),
        };
        let warnings = match text("warnings")? {
            None => Vec::new(),
            Some(t) if t.is_empty() => Vec::new(),
            Some(t) => {
                serde_json::from_str(&t).map_err(|e| malformed(key, format!("warnings: {e}")))?
            }
        };
        let attempts = number("attempts")?.unwrap_or(0.0);
        Ok(Some(Self {
            id: need("id")?,
            state: JobState::parse(&state)
                .ok_or_else(|| malformed(key, format!("state: unknown {state:?}")))?,
            endpoint: Endpoint::parse(&endpoint)
                .ok_or_else(|| malformed(key, format!("endpoint: unknown {endpoint:?}")))?,
            model: need("model")?,
            progress,
            warnings,
            worker: text("worker")?.filter(|w| !w.is_empty()),
            attempts: attempts.clamp(0.0, f64::from(u32::MAX)) as u32,
            created: number("created")?,
            started: number("started")?,
            finished: number("finished")?,
            error: text("error")?.filter(|e| !e.is_empty()),
        }))
    }
}

/// Parses a stored result, at most `limit` bytes.
pub fn parse_result(key: &str, raw: &[u8], limit: usize) -> Result<JobResult> {
    if raw.len() > limit {
        return Err(malformed(key, format!("{} bytes, over {limit}", raw.len())));
    }
    serde_json::from_slice(raw).map_err(|e| malformed(key, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn records_are_read_and_checked() {
        let f = fields(&[
            ("id", "task(x)"),
            ("state", "running"),
            ("endpoint", "img2img"),
            ("model", "0123456789"),
            ("attempts", "2"),
            ("warnings", r#"["a"]"#),
            ("created", "1.5"),
        ]);
        let s = JobStatus::from_fields("k", &f).unwrap().unwrap();
        assert_eq!(s.state, JobState::Running);
        assert_eq!(s.endpoint, Endpoint::Img2img);
        assert_eq!(s.attempts, 2);
        assert_eq!(s.warnings, vec!["a".to_string()]);
        assert_eq!(s.created, Some(1.5));
        assert!(JobStatus::from_fields("k", &HashMap::new())
            .unwrap()
            .is_none());
        let mut bad = f.clone();
        bad.insert("state".into(), b"exploded".to_vec());
        assert!(JobStatus::from_fields("k", &bad).is_err());
        let mut bad = f.clone();
        bad.insert("attempts".into(), b"NaN".to_vec());
        assert!(JobStatus::from_fields("k", &bad).is_err());
        let mut bad = f;
        bad.insert("id".into(), vec![b'x'; TEXT_LIMIT + 1]);
        assert!(JobStatus::from_fields("k", &bad).is_err());
    }

    #[test]
    fn results_are_bounded() {
        let r = parse_result("k", br#"{"status":200,"body":{"a":1}}"#, 100).unwrap();
        assert_eq!(r.status, 200);
        assert!(parse_result("k", br#"{"status":200,"body":{"a":1}}"#, 10).is_err());
        assert!(parse_result("k", b"{", 100).is_err());
    }

    #[test]
    fn checkpoints_match_as_a1111_names_them() {
        let e = ModelEntry {
            title: "m.safetensors [0123456789]".into(),
            model_name: "m".into(),
            hash: "0123456789".into(),
            sha256: "01234567890abc".into(),
            filename: "/x/m.safetensors".into(),
            latent_space: Some("sdxl".into()),
        };
        for n in [
            "m",
            "m.safetensors",
            "0123456789",
            "m.safetensors [0123456789]",
        ] {
            assert!(e.matches(n), "{n}");
        }
        assert!(!e.matches("other"));
        assert_eq!(
            Endpoint::parse("extra-single-image"),
            Some(Endpoint::ExtraSingleImage)
        );
        assert_eq!(Endpoint::parse("upscale"), None);
    }

    /// A worker's announcement carries the latent space; one of a worker that predates it
    /// still reads, without it.
    #[test]
    fn announcements_with_and_without_the_latent_space() {
        let old = br#"{"title":"m [0123456789]","model_name":"m","hash":"0123456789","sha256":"ab","filename":"m"}"#;
        let e: ModelEntry = serde_json::from_slice(old).unwrap();
        assert_eq!(e.latent_space, None);
        let new = ModelEntry {
            latent_space: Some("sdxl".into()),
            ..e
        };
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains(r#""latent_space":"sdxl""#), "{text}");
        assert_eq!(serde_json::from_str::<ModelEntry>(&text).unwrap(), new);
    }
}
