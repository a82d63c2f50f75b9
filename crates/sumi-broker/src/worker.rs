//! The worker's side: announce a checkpoint, take jobs from its stream (a dead worker's first,
//! `XAUTOCLAIM` after [`Settings::claim_idle`], then new ones with `XREADGROUP`), heartbeat,
//! publish progress, read control requests, and complete each job exactly once, acknowledging
//! its entry only with (or after) the stored result.

use std::time::Duration;

use redis::{AsyncCommands, Value};
use serde::{Deserialize, Serialize};

use crate::conn::Conn;
use crate::front::Control;
use crate::record::{JobResult, JobState, ModelEntry, Progress};
use crate::{keys, now, scripts, BrokerError, Endpoint, Result, Settings};

/// A worker's heartbeat record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The worker's name.
    pub name: String,
    /// The short hash of its checkpoint.
    pub model: String,
    /// When it last said it is alive (Unix seconds).
    pub seen: f64,
    /// The job it runs now.
    pub job: Option<String>,
}

/// A job delivered to this worker.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The stream entry (acknowledged on completion).
    pub entry: String,
    /// The job id.
    pub id: String,
    /// Its route.
    pub endpoint: Endpoint,
    /// The request body (JSON text).
    pub request: String,
    /// Deliveries so far, this one included.
    pub attempts: u32,
    /// Taken over from a worker that stopped heartbeating.
    pub claimed: bool,
}

/// One worker's connection to the broker.
pub struct Worker {
    name: String,
    model: ModelEntry,
    stream: String,
    conn: Conn,
    /// Blocking reads get a connection of their own (a blocked connection answers nothing
    /// else).
    reader: Conn,
    settings: Settings,
}

fn malformed(key: &str, reason: impl Into<String>) -> BrokerError {
    BrokerError::Malformed {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// The text of a bulk string reply, at most `limit` bytes.
fn text(v: &Value, key: &str, limit: usize) -> Result<String> {
    match v {
        Value::BulkString(b) if b.len() <= limit => {
            String::from_utf8(b.clone()).map_err(|_| malformed(key, "not UTF-8"))
        }
        Value::BulkString(b) => Err(malformed(key, format!("{} bytes, over {limit}", b.len()))),
        Value::SimpleString(s) if s.len() <= limit => Ok(s.clone()),
        other => Err(malformed(key, format!("unexpected reply {other:?}"))),
    }
}

/// The `(entry id, job id)` pairs of a list of stream entries (`[[id, [k, v, …]], …]`); entries
/// with no `job` field are returned with an empty job id (to be acknowledged and dropped).
fn entries(v: &Value, key: &str) -> Result<Vec<(String, String)>> {
    let Value::Array(list) = v else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in list.iter().take(64) {
        let Value::Array(pair) = e else {
            continue;
        };
        let [id, fields] = pair.as_slice() else {
            return Err(malformed(key, "an entry is not [id, fields]"));
        };
        let id = text(id, key, 64)?;
        let mut job = String::new();
        if let Value::Array(kv) = fields {
            for chunk in kv.chunks(2).take(16) {
                if let [k, v] = chunk {
                    if text(k, key, 64)? == "job" {
                        job = text(v, key, 256)?;
                    }
                }
            }
        }
        out.push((id, job));
    }
    Ok(out)
}

impl Worker {
    /// Connects to `url` (waiting for Redis with backoff), makes the checkpoint's stream and
    /// group, and announces `model` under the name `name`.
    pub async fn connect(
        url: &str,
        name: &str,
        model: ModelEntry,
        settings: Settings,
    ) -> Result<Self> {
        if !keys::is_model_hash(&model.hash) {
            return Err(malformed(
                keys::MODELS,
                format!("bad short hash {:?}", model.hash),
            ));
        }
        let client = crate::client(url)?;
        let conn = Conn::new(client.clone(), "sumi worker", Duration::from_secs(5), None);
        let reader = Conn::new(client, "sumi worker", Duration::from_secs(10), None);
        let w = Self {
            name: name.to_string(),
            stream: keys::stream(&model.hash),
            model,
            conn,
            reader,
            settings,
        };
        let stream = w.stream.clone();
        w.conn
            .run(|mut c| {
                let stream = stream.clone();
                async move {
                    let r: redis::RedisResult<()> = redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(&stream)
                        .arg(keys::GROUP)
                        .arg("0")
                        .arg("MKSTREAM")
                        .query_async(&mut c)
                        .await;
                    match r {
                        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                        other => other,
                    }
                }
            })
            .await?;
        w.heartbeat(None).await?;
        Ok(w)
    }

    /// The worker's name (its consumer name in the group).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Says the worker is alive (and which checkpoint it serves), and refreshes the running
    /// job's entry so that no other worker claims it.
    pub async fn heartbeat(&self, running: Option<&Delivery>) -> Result<()> {
        let beat = Heartbeat {
            name: self.name.clone(),
            model: self.model.hash.clone(),
            seen: now(),
            job: running.map(|d| d.id.clone()),
        };
        let beat =
            serde_json::to_string(&beat).map_err(|e| malformed(keys::WORKERS, e.to_string()))?;
        let entry = serde_json::to_string(&self.model)
            .map_err(|e| malformed(keys::MODELS, e.to_string()))?;
        let (name, hash, stream) = (&self.name, &self.model.hash, &self.stream);
        let running = running.map(|d| d.entry.clone());
        self.conn
            .run(|mut c| {
                let (beat, entry, running) = (beat.clone(), entry.clone(), running.clone());
                async move {
                    let mut p = redis::pipe();
                    p.hset(keys::WORKERS, name, beat).ignore();
                    p.hset(keys::MODELS, hash, entry).ignore();
                    if let Some(e) = &running {
                        // still ours? then its idle time starts again
                        p.cmd("XCLAIM")
                            .arg(stream)
                            .arg(keys::GROUP)
                            .arg(name)
                            .arg(0)
                            .arg(e)
                            .arg("JUSTID")
                            .ignore();
                    }
                    p.query_async::<()>(&mut c).await
                }
            })
            .await
    }

    /// Says the worker is leaving (its heartbeat is removed).
    pub async fn leave(&self) -> Result<()> {
        let name = self.name.clone();
        self.conn
            .run(|mut c| {
                let name = name.clone();
                async move { c.hdel::<_, _, ()>(keys::WORKERS, name).await }
            })
            .await
    }

    /// The next job: a dead worker's first, else a new one (waiting up to `block`). Entries
    /// without a record, or whose job has a result already, are acknowledged and skipped; a job
    /// delivered more than [`Settings::max_attempts`] times is failed with the reason.
    pub async fn next(&self, block: Duration) -> Result<Option<Delivery>> {
        for (entry, id, claimed) in self.take(block).await? {
            if let Some(d) = self.start(entry, id, claimed).await? {
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    /// Entries to look at: `(entry, job id, claimed)`.
    async fn take(&self, block: Duration) -> Result<Vec<(String, String, bool)>> {
        let (stream, name) = (&self.stream, &self.name);
        let idle = self.settings.claim_idle.as_millis() as u64;
        let claimed: Value = self
            .conn
            .run(|mut c| async move {
                redis::cmd("XAUTOCLAIM")
                    .arg(stream)
                    .arg(keys::GROUP)
                    .arg(name)
                    .arg(idle)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if let Value::Array(parts) = &claimed {
            if let Some(list) = parts.get(1) {
                let got = entries(list, stream)?;
                if !got.is_empty() {
                    return Ok(got.into_iter().map(|(e, j)| (e, j, true)).collect());
                }
            }
        }
        let ms = block.as_millis() as u64;
        let read: Value = self
            .reader
            .run(|mut c| async move {
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(keys::GROUP)
                    .arg(name)
                    .arg("COUNT")
                    .arg(1)
                    .arg("BLOCK")
                    .arg(ms)
                    .arg("STREAMS")
                    .arg(stream)
                    .arg(">")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        // [[stream, [entries]]] (RESP2) or {stream: [entries]} (RESP3)
        let list = match &read {
            Value::Array(streams) => match streams.first() {
                Some(Value::Array(s)) if s.len() == 2 => Some(&s[1]),
                _ => None,
            },
            Value::Map(m) => m.first().map(|(_, v)| v),
            _ => None,
        };
        Ok(match list {
            Some(l) => entries(l, stream)?
                .into_iter()
                .map(|(e, j)| (e, j, false))
                .collect(),
            None => Vec::new(),
        })
    }

    /// Marks a delivered job running; `None` when it is not to run.
    async fn start(&self, entry: String, id: String, claimed: bool) -> Result<Option<Delivery>> {
        if crate::check_id(&id).is_err() {
            eprintln!("sumi worker: stream entry {entry} names no valid job; dropped");
            self.ack_only(&entry).await?;
            return Ok(None);
        }
        let (jk, rk) = (keys::job(&id), keys::result(&id));
        let t = now().to_string();
        let name = &self.name;
        let started: Vec<Value> = self
            .conn
            .run(|mut c| {
                let mut inv = scripts::START.prepare_invoke();
                inv.key(&jk).key(&rk);
                inv.arg(name).arg(&t);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        let (n, previous, fields) = match started.as_slice() {
            [Value::Int(n)] => (*n, String::new(), None),
            [Value::Int(n), prev, endpoint, request] => (
                *n,
                text(prev, &jk, 256).unwrap_or_default(),
                Some((endpoint, request)),
            ),
            _ => return Err(malformed(&jk, "unexpected start reply")),
        };
        if n < 0 {
            // finished (cancelled, failed) or gone: nothing to run
            self.ack_only(&entry).await?;
            return Ok(None);
        }
        let attempts = u32::try_from(n).unwrap_or(u32::MAX);
        if claimed {
            let _ = self
                .conn
                .run(|mut c| async move { c.hincr::<_, _, _, ()>(keys::STATS, "claims", 1).await })
                .await;
            eprintln!(
                "sumi worker: took over job {id} from worker {previous:?}, which stopped \
                 (attempt {attempts})"
            );
        }
        let key = jk.clone();
        let mut d = Delivery {
            entry,
            id: id.clone(),
            endpoint: Endpoint::Txt2img,
            request: String::new(),
            attempts,
            claimed,
        };
        let limit = self.settings.value_limit;
        let parsed = match fields {
            Some((Value::BulkString(e), Value::BulkString(r)))
                if !r.is_empty() && r.len() <= limit =>
            {
                let e = String::from_utf8_lossy(e);
                match (Endpoint::parse(&e), String::from_utf8(r.clone())) {
                    (Some(ep), Ok(req)) => Ok((ep, req)),
                    _ => Err(format!("{key}: a bad endpoint or request")),
                }
            }
            _ => Err(format!("{key}: no endpoint or request (or one too large)")),
        };
        match parsed {
            Ok((ep, req)) => {
                d.endpoint = ep;
                d.request = req;
            }
            Err(why) => {
                self.fail(&d, &why).await?;
                return Ok(None);
            }
        }
        if attempts > self.settings.max_attempts {
            let why = format!(
                "the job was delivered {} times and never finished (--max-attempts {}); the \
                 last worker to run it, {previous:?}, stopped during it",
                attempts - 1,
                self.settings.max_attempts
            );
            eprintln!("sumi worker: job {id} failed: {why}");
            self.fail(&d, &why).await?;
            return Ok(None);
        }
        Ok(Some(d))
    }

    async fn ack_only(&self, entry: &str) -> Result<()> {
        let stream = &self.stream;
        self.conn
            .run(|mut c| async move {
                let mut p = redis::pipe();
                p.xack(stream, keys::GROUP, &[entry]).ignore();
                p.xdel(stream, &[entry]).ignore();
                p.query_async::<()>(&mut c).await
            })
            .await
    }

    /// Ends job `d` failed with `why`.
    pub async fn fail(&self, d: &Delivery, why: &str) -> Result<bool> {
        let result = JobResult {
            status: 500,
            body: serde_json::json!({ "error": "JobFailed", "detail": why }),
        };
        self.complete(d, &result, JobState::Failed, &[], why).await
    }

    /// Stores job `d`'s result unless one is there, then acknowledges its entry. True when this
    /// call's result was stored; false when the job had one (this one is discarded).
    pub async fn complete(
        &self,
        d: &Delivery,
        result: &JobResult,
        state: JobState,
        warnings: &[String],
        error: &str,
    ) -> Result<bool> {
        let (rk, jk) = (keys::result(&d.id), keys::job(&d.id));
        let text = serde_json::to_string(result).map_err(|e| malformed(&rk, e.to_string()))?;
        let warnings =
            serde_json::to_string(warnings).map_err(|e| malformed(&jk, e.to_string()))?;
        let ttl = self.settings.result_ttl.as_secs().max(1);
        let t = now().to_string();
        let (stream, name) = (&self.stream, &self.name);
        let n: i64 = self
            .conn
            .run(|mut c| {
                let mut inv = scripts::COMPLETE.prepare_invoke();
                inv.key(&rk).key(&jk).key(stream);
                inv.arg(&text)
                    .arg(ttl)
                    .arg(state.name())
                    .arg(name)
                    .arg(&t)
                    .arg(keys::GROUP)
                    .arg(&d.entry)
                    .arg(&d.id)
                    .arg(&warnings)
                    .arg(error);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        if n == 0 {
            eprintln!(
                "sumi worker: job {} had a result already; this one is discarded",
                d.id
            );
        }
        Ok(n == 1)
    }

    /// Publishes job `id`'s progress (and preview, a base64 PNG, when given).
    pub async fn progress(&self, id: &str, p: &Progress, preview: Option<&str>) -> Result<()> {
        let jk = keys::job(id);
        let text = serde_json::to_string(p).map_err(|e| malformed(&jk, e.to_string()))?;
        self.conn
            .run(|mut c| {
                let (jk, text) = (jk.clone(), text.clone());
                async move {
                    let mut p = redis::pipe();
                    // only while the record exists and runs (a finished job keeps its end)
                    p.hset(&jk, "progress", text).ignore();
                    if let Some(img) = preview {
                        p.hset(&jk, "preview", img).ignore();
                    }
                    p.query_async::<()>(&mut c).await
                }
            })
            .await
    }

    /// The control request for job `id`, if any (a skip is taken: it applies once).
    pub async fn control(&self, id: &str) -> Result<Option<Control>> {
        let key = keys::control(id);
        let v: Option<String> = self
            .conn
            .run(|mut c| {
                let key = key.clone();
                async move { c.get(key).await }
            })
            .await?;
        Ok(match v.as_deref() {
            Some("interrupt") => Some(Control::Interrupt),
            Some("skip") => {
                let key = key.clone();
                self.conn
                    .run(|mut c| {
                        let key = key.clone();
                        async move { c.del::<_, ()>(key).await }
                    })
                    .await?;
                Some(Control::Skip)
            }
            _ => None,
        })
    }
}
