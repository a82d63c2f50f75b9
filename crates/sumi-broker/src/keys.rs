//! The names of Sumi's keys in Redis (all under `sumi:`).

/// The consumer group every worker of a checkpoint reads its stream with.
pub const GROUP: &str = "workers";
/// The hash of announced checkpoints: short hash → [`crate::ModelEntry`] JSON.
pub const MODELS: &str = "sumi:models";
/// The counters every front and worker adds to: `jobs_<state>` (finished jobs by state),
/// `claims` (jobs taken over from workers that stopped).
pub const STATS: &str = "sumi:stats";
/// The channel a finished job's id is published on.
pub const DONE: &str = "sumi:done";

/// A job's record (a hash).
pub fn job(id: &str) -> String {
    format!("sumi:job:{id}")
}

/// A job's result (a string, written once).
pub fn result(id: &str) -> String {
    format!("sumi:result:{id}")
}

/// A job's control request (`interrupt`, `skip`).
pub fn control(id: &str) -> String {
    format!("sumi:control:{id}")
}

/// The stream of jobs for the checkpoint with short hash `model`.
pub fn stream(model: &str) -> String {
    format!("sumi:stream:{model}")
}

/// The hash of workers' heartbeats: worker name → [`crate::worker::Heartbeat`] JSON.
pub const WORKERS: &str = "sumi:workers";

/// Whether `hash` is a checkpoint short hash as streams are named by (10 lower-case hex
/// digits, A1111's short sha256), so that no key can be made of other text.
pub fn is_model_hash(hash: &str) -> bool {
    hash.len() == 10
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
