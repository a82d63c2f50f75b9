//! The state of the running job, as A1111's `shared.state`: what `/sdapi/v1/progress` reports
//! (progress 0–1, ETA, step counts, interrupted/skipped flags, a preview of the latest step).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The worker's progress, shared with the handlers.
#[derive(Debug, Default)]
pub struct ProgressState {
    /// A job is running.
    pub active: bool,
    /// A1111's `job` text ("txt2img", "Batch 2 out of 3", …).
    pub job: String,
    /// Batches in the job (0 when idle).
    pub job_count: u32,
    /// The current batch (0-based).
    pub job_no: u32,
    /// Steps done in this batch.
    pub sampling_step: usize,
    /// Steps in this batch.
    pub sampling_steps: usize,
    /// Interrupt was asked for.
    pub interrupted: bool,
    /// Skip was asked for (cleared when the next batch starts).
    pub skipped: bool,
    /// `YYYYmmddHHMMSS` of the job's start.
    pub job_timestamp: String,
    /// When the job started.
    pub started: Option<Instant>,
    /// The latest step's preview of the batch's first image (rendered on demand).
    pub latent: Option<crate::backend::Preview>,
    /// Bumped at every step (previews are cached by it).
    pub version: u64,
    /// A cached preview: (version, base64 PNG).
    pub preview: Option<(u64, String)>,
}

impl ProgressState {
    /// A job starts.
    pub fn begin(&mut self, job: &str, job_count: u32) {
        *self = Self {
            active: true,
            job: job.to_string(),
            job_count,
            job_timestamp: timestamp(SystemTime::now()),
            started: Some(Instant::now()),
            version: self.version + 1,
            ..Default::default()
        };
    }

    /// A step of batch `job_no` ended.
    pub fn step(
        &mut self,
        job_no: u32,
        step: usize,
        steps: usize,
        latent: Option<crate::backend::Preview>,
    ) {
        if job_no != self.job_no {
            self.skipped = false;
            if self.job_count > 1 {
                self.job = format!("Batch {} out of {}", job_no + 1, self.job_count);
            }
        }
        self.job_no = job_no;
        self.sampling_step = step;
        self.sampling_steps = steps;
        self.latent = latent;
        self.version += 1;
    }

    /// The job ended: back to idle.
    pub fn end(&mut self) {
        let version = self.version + 1;
        *self = Self {
            version,
            ..Default::default()
        };
    }

    /// A1111's `state.dict()`.
    pub fn state_json(&self) -> Value {
        json!({
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "stopping_generation": false,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": if self.job_timestamp.is_empty() { "0".to_string() } else { self.job_timestamp.clone() },
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        })
    }

    /// `(progress, eta_relative)` as A1111's `progressapi` computes them.
    pub fn progress(&self) -> (f64, f64) {
        if self.job_count == 0 || !self.active {
            return (0.0, 0.0);
        }
        let n = f64::from(self.job_count);
        let mut p = 0.01 + f64::from(self.job_no) / n;
        if self.sampling_steps > 0 {
            p += 1.0 / n * self.sampling_step as f64 / self.sampling_steps as f64;
        }
        let p = p.min(1.0);
        let elapsed = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let eta = elapsed / p;
        (p, eta - elapsed)
    }

    /// A one-line summary for `textinfo`.
    pub fn textinfo(&self) -> Option<String> {
        self.active.then(|| {
            format!(
                "{}: step {}/{}, batch {}/{}",
                self.job,
                self.sampling_step,
                self.sampling_steps,
                self.job_no + 1,
                self.job_count
            )
        })
    }
}

/// `YYYYmmddHHMMSS` in UTC.
pub fn timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_utc() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(timestamp(t), "20231114221320");
        assert_eq!(timestamp(UNIX_EPOCH), "19700101000000");
    }

    #[test]
    fn progress_counts_batches_and_steps() {
        let mut s = ProgressState::default();
        assert_eq!(s.progress(), (0.0, 0.0));
        s.begin("txt2img", 2);
        s.step(1, 5, 10, None);
        let (p, _) = s.progress();
        assert!((p - 0.76).abs() < 1e-9, "{p}");
        s.end();
        assert_eq!(s.state_json()["job_count"], 0);
    }
}
