//! The API front's side: enqueue a job, read its record and progress, wait for its result
//! (woken by the `sumi:done` channel, with a poll as a fallback), interrupt, skip, cancel; the
//! checkpoints workers announced and which of them have a live worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use tokio::sync::Notify;

use crate::conn::Conn;
use crate::record::{parse_result, JobResult, JobState, JobStatus, ModelEntry};
use crate::worker::Heartbeat;
use crate::{keys, now, scripts, Endpoint, Result, Settings};

/// How often a waiting client looks at its job without a notification (a missed message, a
/// job timeout to check).
const POLL: Duration = Duration::from_millis(500);

/// What happened to an enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued.
    Queued,
    /// The checkpoint's stream holds [`Settings::queue`] jobs already.
    Full,
    /// A job with this id exists (A1111's `force_task_id` used twice).
    Exists,
}

/// A control request for a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop the job after the current batch's step (A1111's interrupt).
    Interrupt,
    /// Skip the current batch.
    Skip,
}

impl Control {
    /// The stored word.
    pub fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "interrupt",
            Self::Skip => "skip",
        }
    }
}

/// One API front's connection to the broker.
pub struct Front {
    conn: Conn,
    settings: Settings,
    waiters: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    /// The announced checkpoints as last read, and when.
    models: Mutex<Option<(std::time::Instant, Vec<ModelEntry>)>>,
}

/// How long the announced checkpoints are read from the last copy.
const MODELS_FRESH: Duration = Duration::from_secs(1);

impl Front {
    /// Connects to `url` (waiting for Redis with backoff) and starts listening for finished
    /// jobs.
    pub async fn connect(url: &str, settings: Settings) -> Result<Arc<Self>> {
        let client = crate::client(url)?;
        let conn = Conn::new(
            client.clone(),
            "sumi serve",
            Duration::from_secs(5),
            Some(Duration::from_secs(30)),
        );
        let front = Arc::new(Self {
            conn,
            settings,
            waiters: Arc::default(),
            models: Mutex::default(),
        });
        // fail early on a wrong address or password
        front
            .conn
            .run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await?;
        let listener = Conn::new(client, "sumi serve", Duration::from_secs(5), None);
        tokio::spawn(listen(listener, front.waiters.clone()));
        Ok(front)
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The checkpoints workers announced, by title, as read at most a second ago (`fresh`:
    /// read now).
    pub async fn models(&self, fresh: bool) -> Result<Vec<ModelEntry>> {
        if !fresh {
            let cached = self.models.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, list)) = &*cached {
                if at.elapsed() < MODELS_FRESH {
                    return Ok(list.clone());
                }
            }
        }
        let list = self.read_models().await?;
        *self.models.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), list.clone()));
        Ok(list)
    }

    async fn read_models(&self) -> Result<Vec<ModelEntry>> {
        let raw: HashMap<String, Vec<u8>> = self
            .conn
            .run(|mut c| async move { c.hgetall(keys::MODELS).await })
            .await?;
        let mut out: Vec<ModelEntry> = raw
            .iter()
            .filter(|(h, v)| keys::is_model_hash(h) && v.len() <= 64 << 10)
            .filter_map(|(h, v)| {
                serde_json::from_slice::<ModelEntry>(v)
                    .ok()
                    .filter(|e| &e.hash == h)
            })
            .collect();
        out.sort_by(|a, b| a.title.cmp(&b.title));
        Ok(out)
    }

    /// The workers that heartbeat now, with the checkpoint each runs.
    pub async fn live_workers(&self) -> Result<Vec<Heartbeat>> {
        let raw: HashMap<String, Vec<u8>> = self
            .conn
            .run(|mut c| async move { c.hgetall(keys::WORKERS).await })
            .await?;
        let fresh = 3.0 * self.settings.heartbeat.as_secs_f64().max(0.5);
        let t = now();
        Ok(raw
            .values()
            .filter(|v| v.len() <= 64 << 10)
            .filter_map(|v| serde_json::from_slice::<Heartbeat>(v).ok())
            .filter(|h| (t - h.seen).abs() <= fresh)
            .collect())
    }

    /// The shared counters (`sumi:stats`): finished jobs by state, claims.
    pub async fn stats(&self) -> Result<Vec<(String, u64)>> {
        let raw: HashMap<String, String> = self
            .conn
            .run(|mut c| async move { c.hgetall(keys::STATS).await })
            .await?;
        let mut out: Vec<(String, u64)> = raw
            .into_iter()
            .filter(|(k, _)| {
                k.len() <= 64 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
            .filter_map(|(k, v)| v.parse().ok().map(|n| (k, n)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Entries of checkpoint `model`'s stream delivered to a worker and not yet acknowledged.
    pub async fn pending(&self, model: &str) -> Result<u64> {
        let key = keys::stream(model);
        let v: redis::Value = self
            .conn
            .run(|mut c| {
                let key = key.clone();
                async move {
                    let r: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
                        .arg(&key)
                        .arg(keys::GROUP)
                        .query_async(&mut c)
                        .await;
                    match r {
                        // no stream or group yet: nothing pending
                        Err(e) if e.code() == Some("NOGROUP") => Ok(redis::Value::Nil),
                        other => other,
                    }
                }
            })
            .await?;
        Ok(match v {
            redis::Value::Array(parts) => match parts.first() {
                Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
                _ => 0,
            },
            _ => 0,
        })
    }

    /// Jobs queued or running for checkpoint `model`.
    pub async fn depth(&self, model: &str) -> Result<usize> {
        let key = keys::stream(model);
        self.conn
            .run(|mut c| {
                let key = key.clone();
                async move { c.xlen(key).await }
            })
            .await
    }

    /// Queues job `id` for checkpoint `model` (a short hash) with its request body.
    pub async fn enqueue(
        &self,
        id: &str,
        endpoint: Endpoint,
        model: &str,
        request: &str,
    ) -> Result<Enqueued> {
        crate::check_id(id)?;
        let (job, stream) = (keys::job(id), keys::stream(model));
        let t = now().to_string();
        let cap = self.settings.queue;
        let r: i64 = self
            .conn
            .run(|mut c| {
                let mut inv = scripts::ENQUEUE.prepare_invoke();
                inv.key(&job).key(&stream);
                inv.arg(id)
                    .arg(endpoint.name())
                    .arg(model)
                    .arg(request)
                    .arg(&t)
                    .arg(cap);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        Ok(match r {
            1 => Enqueued::Queued,
            0 => Enqueued::Full,
            _ => Enqueued::Exists,
        })
    }

    /// Job `id`'s record, if it exists.
    pub async fn status(&self, id: &str) -> Result<Option<JobStatus>> {
        crate::check_id(id)?;
        let key = keys::job(id);
        let fields: HashMap<String, Vec<u8>> = self
            .conn
            .run(|mut c| {
                let key = key.clone();
                async move {
                    redis::cmd("HMGET")
                        .arg(&key)
                        .arg(FIELDS)
                        .query_async::<Vec<Option<Vec<u8>>>>(&mut c)
                        .await
                        .map(|v| {
                            FIELDS
                                .iter()
                                .zip(v)
                                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
                                .collect()
                        })
                }
            })
            .await?;
        JobStatus::from_fields(&key, &fields)
    }

    /// Job `id`'s latest preview (a base64 PNG), if its worker published one.
    pub async fn preview(&self, id: &str) -> Result<Option<String>> {
        crate::check_id(id)?;
        let key = keys::job(id);
        let v: Option<String> = self
            .conn
            .run(|mut c| {
                let key = key.clone();
                async move { c.hget(key, "preview").await }
            })
            .await?;
        Ok(v.filter(|p| p.len() <= self.settings.value_limit && !p.is_empty()))
    }

    /// Job `id`'s result, if it has finished.
    pub async fn result(&self, id: &str) -> Result<Option<JobResult>> {
        crate::check_id(id)?;
        let key = keys::result(id);
        let raw: Option<Vec<u8>> = self
            .conn
            .run(|mut c| {
                let key = key.clone();
                async move { c.get(key).await }
            })
            .await?;
        raw.map(|r| parse_result(&key, &r, self.settings.value_limit))
            .transpose()
    }

    /// Waits for job `id`'s result. A job still queued after [`Settings::job_timeout`] with no
    /// live worker for its checkpoint is failed with that reason.
    pub async fn wait(&self, id: &str) -> Result<JobResult> {
        crate::check_id(id)?;
        let notify = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone();
        let r = self.wait_on(id, &notify).await;
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        r
    }

    async fn wait_on(&self, id: &str, notify: &Notify) -> Result<JobResult> {
        let mut polls = 0u32;
        loop {
            if let Some(r) = self.result(id).await? {
                return Ok(r);
            }
            polls += 1;
            if polls.is_multiple_of(4) {
                self.check_timeout(id).await?;
                if self.status(id).await?.is_none() && self.result(id).await?.is_none() {
                    return Err(crate::BrokerError::Malformed {
                        key: keys::job(id),
                        reason: "the job's record is gone (expired or deleted)".into(),
                    });
                }
            }
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Fails job `id` when it has waited past the job timeout with no live worker (a client
    /// waiting or asking for the job checks this).
    pub async fn check_timeout(&self, id: &str) -> Result<()> {
        let Some(s) = self.status(id).await? else {
            return Ok(());
        };
        let waited = now() - s.created.unwrap_or_else(now);
        if s.state != JobState::Queued || waited < self.settings.job_timeout.as_secs_f64() {
            return Ok(());
        }
        let live = self
            .live_workers()
            .await?
            .iter()
            .any(|w| w.model == s.model);
        if !live {
            let why = format!(
                "no live worker for checkpoint {} took the job within {} s (--job-timeout)",
                s.model,
                self.settings.job_timeout.as_secs()
            );
            self.finish(id, &s.model, JobState::Failed, &why).await?;
        }
        Ok(())
    }

    /// Stores a failure or cancellation as job `id`'s result (unless it has one); true when
    /// this call stored it.
    async fn finish(&self, id: &str, model: &str, state: JobState, why: &str) -> Result<bool> {
        let status = if state == JobState::Cancelled {
            499
        } else {
            503
        };
        let result = JobResult {
            status,
            body: serde_json::json!({
                "error": if state == JobState::Cancelled { "Cancelled" } else { "JobFailed" },
                "detail": why,
            }),
        };
        let text = serde_json::to_string(&result).map_err(|e| crate::BrokerError::Malformed {
            key: keys::result(id),
            reason: e.to_string(),
        })?;
        let (rk, jk, sk) = (keys::result(id), keys::job(id), keys::stream(model));
        let ttl = self.settings.result_ttl.as_secs().max(1);
        let t = now().to_string();
        let n: i64 = self
            .conn
            .run(|mut c| {
                let mut inv = scripts::COMPLETE.prepare_invoke();
                inv.key(&rk).key(&jk).key(&sk);
                inv.arg(&text)
                    .arg(ttl)
                    .arg(state.name())
                    .arg("")
                    .arg(&t)
                    .arg(keys::GROUP)
                    .arg("")
                    .arg(id)
                    .arg("[]")
                    .arg(why);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        Ok(n == 1)
    }

    /// Asks the worker running job `id` to interrupt or skip (read within one step).
    pub async fn control(&self, id: &str, what: Control) -> Result<()> {
        crate::check_id(id)?;
        let key = keys::control(id);
        let ttl = self.settings.result_ttl.as_secs().max(1);
        self.conn
            .run(|mut c| {
                let key = key.clone();
                async move { c.set_ex::<_, _, ()>(key, what.name(), ttl).await }
            })
            .await
    }

    /// Cancels job `id`: a queued one never runs, a running one is interrupted and its result
    /// discarded. False when it had finished already (or never existed).
    pub async fn cancel(&self, id: &str) -> Result<bool> {
        let Some(s) = self.status(id).await? else {
            return Ok(false);
        };
        if s.state.finished() {
            return Ok(false);
        }
        self.control(id, Control::Interrupt).await?;
        self.finish(id, &s.model, JobState::Cancelled, "cancelled by a client")
            .await
    }
}

/// The record fields a status reads (the request and preview are left in Redis).
const FIELDS: &[&str] = &[
    "id", "state", "endpoint", "model", "progress", "warnings", "worker", "attempts", "created",
    "started", "finished", "error",
];

/// Wakes the waiters of every id published on `sumi:done`, resubscribing when the connection
/// drops (waiters poll meanwhile).
async fn listen(conn: Conn, waiters: Arc<Mutex<HashMap<String, Arc<Notify>>>>) {
    loop {
        let mut pubsub = conn.pubsub().await;
        if let Err(e) = pubsub.subscribe(keys::DONE).await {
            eprintln!("sumi serve: redis: cannot subscribe: {e}; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let mut messages = pubsub.on_message();
        while let Some(m) = messages.next().await {
            let Ok(id) = m.get_payload::<String>() else {
                continue;
            };
            let w = waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&id)
                .cloned();
            if let Some(n) = w {
                n.notify_one();
            }
        }
        eprintln!("sumi serve: redis: the notification channel closed; reconnecting");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
