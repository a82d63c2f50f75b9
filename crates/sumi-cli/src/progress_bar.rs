//! The progress display of `sumi txt2img` and `sumi img2img`, on stderr. On a terminal: one line
//! rewritten in place (`\r`) with the batch, the pass, the step, seconds per step and the time
//! left. Elsewhere (a log file, a pipe): one plain line per finished pass of a batch, so that logs
//! hold no carriage returns and no line per step.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use sumi_pipeline::Progress;

/// The display of one run.
pub struct ProgressBar {
    quiet: bool,
    terminal: bool,
    last: Option<Instant>,
    start: Instant,
}

impl ProgressBar {
    /// A display on stderr (nothing when `quiet`).
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            terminal: std::io::stderr().is_terminal(),
            last: None,
            start: Instant::now(),
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
        let now = Instant::now();
        if p.step == 0 {
            self.start = now;
        }
        let done = p.step + 1;
        let spent = now.duration_since(self.start).as_secs_f64();
        let per = spent / done as f64;
        let pass = if p.passes > 1 {
            ["  first pass", "  hires pass"][p.pass.min(1) as usize]
        } else {
            ""
        };
        let mut e = std::io::stderr();
        if self.terminal {
            let eta = per * p.steps.saturating_sub(done) as f64;
            let _ = write!(
                e,
                "\rbatch {}/{}{pass}  step {done}/{}  {per:.2}s/it  ETA {eta:.0}s   ",
                p.batch + 1,
                p.batch_count,
                p.steps
            );
        } else if done == p.steps {
            let _ = writeln!(
                e,
                "batch {}/{}{pass}  {done} steps in {spent:.1}s  {per:.2}s/it",
                p.batch + 1,
                p.batch_count,
            );
        }
        let _ = e.flush();
        self.last = Some(now);
    }

    /// Ends the in-place line.
    pub fn finish(&mut self) {
        if !self.quiet && self.terminal && self.last.is_some() {
            eprintln!();
        }
    }
}
