//! Counters for `/metrics`, in Prometheus' text format: queue depth, jobs by outcome, step and
//! job times, rejected requests.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum JobOutcome {
    /// Finished.
    Ok,
    /// Stopped by an interrupt (partial result returned).
    Interrupted,
    /// Failed in the pipeline.
    Error,
    /// Its client left, or the server was shutting down.
    Cancelled,
}

impl JobOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Interrupted => "interrupted",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    jobs: BTreeMap<JobOutcome, u64>,
    rejected: BTreeMap<&'static str, u64>,
    step_sum: f64,
    step_count: u64,
    job_sum: f64,
    job_count: u64,
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Counts) -> R) -> R {
        f(&mut self.counts.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A job ended after `seconds`.
    pub fn job(&self, outcome: JobOutcome, seconds: f64) {
        self.with(|c| {
            *c.jobs.entry(outcome).or_default() += 1;
            if outcome != JobOutcome::Cancelled {
                c.job_sum += seconds;
                c.job_count += 1;
            }
        });
    }

    /// A sampler step took `seconds`.
    pub fn step(&self, seconds: f64) {
        self.with(|c| {
            c.step_sum += seconds;
            c.step_count += 1;
        });
    }

    /// A request was turned away (`reason`: `queue_full`, `shutting_down`, `bad_image`: an
    /// uploaded image whose pixels could not be decoded at its job's turn).
    pub fn rejected(&self, reason: &'static str) {
        self.with(|c| *c.rejected.entry(reason).or_default() += 1);
    }

    /// The exposition text.
    pub fn render(&self, queue_depth: usize, running: bool, ready: bool) -> String {
        self.with(|c| {
            let mut s = String::new();
            let _ = writeln!(s, "# HELP sumi_queue_depth Jobs waiting in the queue.");
            let _ = writeln!(s, "# TYPE sumi_queue_depth gauge");
            let _ = writeln!(s, "sumi_queue_depth {queue_depth}");
            let _ = writeln!(s, "# HELP sumi_job_running Whether a job is running.");
            let _ = writeln!(s, "# TYPE sumi_job_running gauge");
            let _ = writeln!(s, "sumi_job_running {}", u8::from(running));
            let _ = writeln!(s, "# HELP sumi_ready Whether the server takes jobs.");
            let _ = writeln!(s, "# TYPE sumi_ready gauge");
            let _ = writeln!(s, "sumi_ready {}", u8::from(ready));
            let _ = writeln!(s, "# HELP sumi_jobs_total Jobs by outcome.");
            let _ = writeln!(s, "# TYPE sumi_jobs_total counter");
            for o in [
                JobOutcome::Ok,
                JobOutcome::Interrupted,
                JobOutcome::Error,
                JobOutcome::Cancelled,
            ] {
                let n = c.jobs.get(&o).copied().unwrap_or(0);
                let _ = writeln!(s, "sumi_jobs_total{{outcome=\"{}\"}} {n}", o.label());
            }
            let _ = writeln!(
                s,
                "# HELP sumi_rejected_total Requests turned away, by reason."
            );
            let _ = writeln!(s, "# TYPE sumi_rejected_total counter");
            for r in ["queue_full", "shutting_down", "bad_image"] {
                let n = c.rejected.get(r).copied().unwrap_or(0);
                let _ = writeln!(s, "sumi_rejected_total{{reason=\"{r}\"}} {n}");
            }
            let _ = writeln!(s, "# HELP sumi_step_seconds Sampler step time.");
            let _ = writeln!(s, "# TYPE sumi_step_seconds summary");
            let _ = writeln!(s, "sumi_step_seconds_sum {}", c.step_sum);
            let _ = writeln!(s, "sumi_step_seconds_count {}", c.step_count);
            let _ = writeln!(s, "# HELP sumi_job_seconds Job time, queue wait excluded.");
            let _ = writeln!(s, "# TYPE sumi_job_seconds summary");
            let _ = writeln!(s, "sumi_job_seconds_sum {}", c.job_sum);
            let _ = writeln!(s, "sumi_job_seconds_count {}", c.job_count);
            s
        })
    }
}
