//! The progress display of `sumi txt2img` and `sumi img2img`, on stderr. On a terminal: one line
//! rewritten in place (`\r`) with the batch, the pass, the step, the speed and the time left.
//! Elsewhere (a log file, a pipe): one plain line per finished pass of a batch, so that logs
//! hold no carriage returns and no line per step.
//!
//! Times run from the start of each pass's sampler (as A1111's console progress bar, tqdm,
//! counts them), so the first step is counted with the others; the speed is written as tqdm
//! writes it: `it/s` at more than one step a second, else `s/it`.

use std::io::{IsTerminal, Write};

use sumi_pipeline::Progress;

/// The display of one run.
pub struct ProgressBar {
    quiet: bool,
    terminal: bool,
    /// Whether an in-place line is on screen.
    shown: bool,
}

impl ProgressBar {
    /// A display on stderr (nothing when `quiet`).
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            terminal: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    /// Whether stderr is a terminal (the in-place line is shown).
    pub fn on_terminal(&self) -> bool {
        self.terminal
    }

    /// Shows a step.
    pub fn update(&mut self, p: &Progress<'_>) {
        // before sampling (the prompts being encoded) there is no step to show
        if self.quiet || p.denoised.is_none() {
            return;
        }
        let mut e = std::io::stderr();
        if self.terminal {
            let _ = write!(e, "\r{}   ", step_line(p));
            self.shown = true;
        } else if p.step + 1 == p.steps {
            let _ = writeln!(e, "{}", pass_line(p));
        }
        let _ = e.flush();
    }

    /// Ends the in-place line.
    pub fn finish(&mut self) {
        if !self.quiet && self.terminal && self.shown {
            eprintln!();
        }
    }
}

/// `batch 1/2` and, with the hires fix, the pass.
fn batch_label(p: &Progress<'_>) -> String {
    let pass = match (p.passes > 1, p.pass) {
        (false, _) => "",
        (true, 0) => "  first pass",
        (true, _) => "  hires pass",
    };
    format!("batch {}/{}{pass}", p.batch + 1, p.batch_count)
}

/// Seconds per step so far (`step + 1` steps in `elapsed`).
fn per_step(p: &Progress<'_>) -> f64 {
    p.elapsed.as_secs_f64() / (p.step + 1) as f64
}

/// tqdm's speed: `2.50it/s` at more than one step a second, else `1.52s/it`.
fn speed(per: f64) -> String {
    match per {
        p if p >= 1.0 => format!("{p:.2}s/it"),
        p if p > 0.0 => format!("{:.2}it/s", 1.0 / p),
        _ => "?it/s".to_string(),
    }
}

/// The in-place line: `batch 1/1  step 3/20  1.52s/it  ETA 26s`.
fn step_line(p: &Progress<'_>) -> String {
    let (done, per) = (p.step + 1, per_step(p));
    let eta = per * p.steps.saturating_sub(done) as f64;
    format!(
        "{}  step {done}/{}  {}  ETA {eta:.0}s",
        batch_label(p),
        p.steps,
        speed(per)
    )
}

/// A log's line for a finished pass: `batch 1/1  20 steps in 30.4s  1.52s/it`.
fn pass_line(p: &Progress<'_>) -> String {
    format!(
        "{}  {} steps in {:.1}s  {}",
        batch_label(p),
        p.step + 1,
        p.elapsed.as_secs_f64(),
        speed(per_step(p))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(step: usize, steps: usize, elapsed_ms: u64, pass: (u32, u32)) -> Progress<'static> {
        Progress {
            batch: 1,
            batch_count: 3,
            pass: pass.0,
            passes: pass.1,
            step,
            steps,
            denoised: None,
            elapsed: Duration::from_millis(elapsed_ms),
        }
    }

    #[test]
    fn every_step_counts_from_the_samplers_start() {
        // the first step alone: its own time, not nothing
        assert_eq!(
            step_line(&at(0, 20, 1520, (0, 1))),
            "batch 2/3  step 1/20  1.52s/it  ETA 29s"
        );
        // 4 steps in 6 s: 1.5 s each, 16 left
        assert_eq!(
            step_line(&at(3, 20, 6000, (0, 1))),
            "batch 2/3  step 4/20  1.50s/it  ETA 24s"
        );
        // 20 steps in 30.4 s: all 20 counted
        assert_eq!(
            pass_line(&at(19, 20, 30_400, (1, 2))),
            "batch 2/3  hires pass  20 steps in 30.4s  1.52s/it"
        );
        assert_eq!(
            pass_line(&at(3, 4, 1000, (0, 2))),
            "batch 2/3  first pass  4 steps in 1.0s  4.00it/s"
        );
    }

    #[test]
    fn the_speed_reads_as_tqdm_writes_it() {
        assert_eq!(speed(1.0), "1.00s/it");
        assert_eq!(speed(12.5), "12.50s/it");
        assert_eq!(speed(0.4), "2.50it/s");
        assert_eq!(speed(0.0), "?it/s");
    }
}
