//! `sumi-broker`: Sumi's jobs on Redis Streams (Redis ≥ 6.2, Valkey), for one or more API fronts
//! and any number of workers on several machines.
//!
//! - [`front::Front`] (the API side): enqueues a job (a record keyed by its id, an entry on its
//!   checkpoint's stream), reads its progress, waits for its result, asks for interrupt/skip,
//!   cancels; lists the checkpoints workers announced.
//! - [`worker::Worker`] (the generating side): announces its checkpoint, reads jobs with a
//!   consumer group, heartbeats (and keeps its running job's stream entry fresh), claims the
//!   jobs of workers that stopped heartbeating (`XAUTOCLAIM` after [`Settings::claim_idle`]),
//!   publishes progress, reads control requests, and stores each result exactly once before it
//!   acknowledges the entry.
//!
//! The layout in Redis ([`keys`]): `sumi:job:{id}` (a hash: request, state, progress,
//! warnings, worker, attempts, timestamps), `sumi:result:{id}` (written once, `SET NX`, kept
//! [`Settings::result_ttl`]), `sumi:stream:{hash}` (one stream per checkpoint, by its short hash,
//! consumer group `workers`), `sumi:models` (announced checkpoints), `sumi:workers`
//! (heartbeats), `sumi:control:{id}` (interrupt/skip), channel `sumi:done` (finished ids).
//!
//! Everything read back from Redis is data another machine wrote: sizes are checked and
//! malformed values are errors, never panics. Connections are re-made with backoff
//! ([`conn::Conn`]), each attempt logged on stderr.

pub mod conn;
pub mod front;
pub mod keys;
pub mod record;
mod scripts;
pub mod worker;

use std::time::Duration;

pub use record::{Endpoint, JobResult, JobState, JobStatus, ModelEntry, Progress};

/// What can go wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker URL does not parse.
    #[error("--broker {url}: {reason}")]
    Url {
        /// The URL given (its password hidden).
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// Redis answered with an error or the connection failed for good.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A value read from Redis is not what Sumi writes (another program's, or damaged).
    #[error("redis: {key}: {reason}")]
    Malformed {
        /// The key read.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A job id that is not acceptable (empty, too long, odd characters).
    #[error("job id {0:?}: 1–128 characters of letters, digits and ()-_.: only")]
    BadId(String),
}

/// A result of this crate.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// The timings and bounds shared by fronts and workers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a finished job's record and result are kept (`--result-ttl`, 1 h).
    pub result_ttl: Duration,
    /// Deliveries of a job before it ends failed (`--max-attempts`, 3).
    pub max_attempts: u32,
    /// How often a worker says it is alive and refreshes its running job's entry (1 s).
    pub heartbeat: Duration,
    /// How long a delivered job may go without its worker's refresh before another worker
    /// claims it (10 s; longer than a heartbeat, and than a step).
    pub claim_idle: Duration,
    /// Jobs queued or running per checkpoint before new ones are refused (the front's
    /// `--queue`, 16).
    pub queue: usize,
    /// How long a queued job waits for a live worker of its checkpoint before it fails
    /// (`--job-timeout`, 10 min).
    pub job_timeout: Duration,
    /// Largest request or result kept in Redis, in bytes (bounds what is read back).
    pub value_limit: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            result_ttl: Duration::from_secs(3600),
            max_attempts: 3,
            heartbeat: Duration::from_secs(1),
            claim_idle: Duration::from_secs(10),
            queue: 16,
            job_timeout: Duration::from_secs(600),
            value_limit: 256 << 20,
        }
    }
}

/// Seconds since the Unix epoch, as the records store them.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Checks a job id: 1–128 characters of ASCII letters, digits and `()-_.:` (A1111's
/// `task(…)` ids included).
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"()-_.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BrokerError::BadId(id.chars().take(140).collect()))
    }
}

/// A fresh job id in A1111's shape, `task(<15 random letters and digits>)`.
pub fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::from("task(");
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let mut x = h.finish();
    for i in 0..15 {
        if i == 12 {
            let mut h2 = std::collections::hash_map::RandomState::new().build_hasher();
            h2.write_u64(x);
            x = h2.finish();
        }
        out.push(char::from(alphabet[(x % 36) as usize]));
        x /= 36;
    }
    out.push(')');
    out
}

/// The URL with its password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Opens a client for `url` (`redis://[user:pass@]host:port[/db]`); nothing is connected yet.
pub fn client(url: &str) -> Result<redis::Client> {
    if url.starts_with("rediss://") {
        return Err(BrokerError::Url {
            url: redact(url),
            reason: "TLS (rediss://) is not built into this Sumi yet; use redis:// (e.g. through \
                     a TLS tunnel)"
                .into(),
        });
    }
    redis::Client::open(url).map_err(|e| BrokerError::Url {
        url: redact(url),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(check_id("task(abc123)").is_ok());
        assert!(check_id("a-b_c.d:e").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id(&"x".repeat(129)).is_err());
        assert!(check_id("a b").is_err());
        assert!(check_id("sumi:job:x\n").is_err());
        let id = new_id();
        assert_eq!(id.len(), 21, "{id}");
        assert!(check_id(&id).is_ok());
        assert_ne!(new_id(), new_id());
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert!(client("rediss://h:1").is_err());
        assert!(client("redis://127.0.0.1:1").is_ok());
    }
}
