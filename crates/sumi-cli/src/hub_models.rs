//! Model options that name a Hugging Face Hub id (`--model org/name/file.safetensors`, `--vae`,
//! `model-info`, `serve --model`) are fetched into the Hub cache before the run, with one line
//! saying what, from where and how big, and a download display on stderr: on a terminal one
//! line rewritten in place (bytes, percent, speed, time left), elsewhere a plain line every 10%.
//! No `--model`: `$SUMI_MODEL`, else the default model
//! ([`sumi_pipeline::model_source::DEFAULT_MODEL`]).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use sumi_pipeline::model_source::{self, choose_model, Hub, HubEvent, Origin, Source};

/// The model `given` (or `$SUMI_MODEL`, or the default) names, as a local path.
pub fn model(given: Option<&Path>, what: &str, quiet: bool) -> Result<PathBuf> {
    let (arg, origin) = choose_model(given);
    let env = model_source::MODEL_ENV;
    let (intro, label) = match origin {
        Origin::Given => (String::new(), format!("{what} {}", arg.display())),
        Origin::Env => (
            format!("no {what} given, {env} names "),
            format!("{env} {}", arg.display()),
        ),
        Origin::Default => (
            format!("no {what} given (nor {env}): the default model "),
            format!("no {what} given (nor {env}), so the default model from the Hub"),
        ),
    };
    fetch(&arg, &label, origin != Origin::Default, &intro, quiet)
}

/// The file `arg` (a path or a Hub id) names, as a local path.
pub fn file(arg: &Path, what: &str, quiet: bool) -> Result<PathBuf> {
    fetch(arg, &format!("{what} {}", arg.display()), true, "", quiet)
}

/// `arg` as a local path; errors start with `label` (and, when `given` by the user, say that
/// it was taken as a Hub id for want of such a file).
fn fetch(arg: &Path, label: &str, given: bool, intro: &str, quiet: bool) -> Result<PathBuf> {
    let source = Source::of(arg).with_context(|| label.to_string())?;
    let Source::Hub(id) = source else {
        return Ok(arg.to_path_buf());
    };
    let hub = Hub::from_env().with_context(|| label.to_string())?;
    let mut display = Display::new(intro, hub.config(), quiet);
    let fetched = hub.fetch(&id, &mut |e| display.event(e));
    display.finish();
    let fetched = fetched.with_context(|| match given {
        true => format!("{label}: no such file or folder, so taken as a Hub id"),
        false => label.to_string(),
    })?;
    if fetched.files.len() > 1 && !quiet {
        eprintln!(
            "{id}: {} files, {} in {}",
            fetched.files.len(),
            human(fetched.bytes),
            fetched.path.display()
        );
    }
    Ok(fetched.path)
}

/// The download display of one fetch.
struct Display {
    intro: String,
    endpoint: String,
    cache: PathBuf,
    quiet: bool,
    terminal: bool,
    start: Instant,
    from: u64,
    /// The last tenth reported on a plain line.
    tenth: u64,
    in_place: bool,
}

impl Display {
    fn new(intro: &str, config: &model_source::HubConfig, quiet: bool) -> Self {
        Self {
            intro: intro.to_string(),
            endpoint: config.endpoint.clone(),
            cache: config.cache_dir.clone(),
            quiet,
            terminal: std::io::stderr().is_terminal(),
            start: Instant::now(),
            from: 0,
            tenth: 0,
            in_place: false,
        }
    }

    fn event(&mut self, e: HubEvent<'_>) {
        let mut err = std::io::stderr();
        match e {
            HubEvent::Retry { id, done, reason } => {
                self.finish();
                eprintln!(
                    "warning: {id}: the transfer stopped at {} ({reason}); resuming",
                    human(done)
                );
            }
            _ if self.quiet => {}
            HubEvent::Cached { id, path, size } => eprintln!(
                "{}{id} ({}, in the Hub cache: {})",
                self.intro,
                human(size),
                path.display()
            ),
            HubEvent::Download { id, size, from, .. } => {
                let resume = match from {
                    0 => String::new(),
                    n => format!(", resuming at {}", human(n)),
                };
                eprintln!(
                    "{}{id}: downloading {} from {} into {}{resume}",
                    self.intro,
                    human(size),
                    self.endpoint,
                    self.cache.display()
                );
                (self.start, self.from, self.tenth) =
                    (Instant::now(), from, from * 10 / size.max(1));
            }
            HubEvent::Progress { done, size, .. } => {
                let secs = self.start.elapsed().as_secs_f64().max(1e-3);
                let speed = (done - self.from) as f64 / secs;
                let pct = done as f64 * 100.0 / size.max(1) as f64;
                if self.terminal {
                    let eta = (size - done) as f64 / speed.max(1.0);
                    let _ = write!(
                        err,
                        "\r  {} / {}  {pct:.0}%  {}/s  ETA {eta:.0}s   ",
                        human(done),
                        human(size),
                        human(speed as u64)
                    );
                    let _ = err.flush();
                    self.in_place = true;
                } else if done * 10 / size.max(1) > self.tenth {
                    self.tenth = done * 10 / size.max(1);
                    eprintln!(
                        "  {} / {}  {pct:.0}%  {}/s",
                        human(done),
                        human(size),
                        human(speed as u64)
                    );
                }
            }
            HubEvent::Waiting { id, lock } => eprintln!(
                "{id}: another process is downloading it; waiting ({})",
                lock.display()
            ),
            HubEvent::Done { id, size, .. } => {
                self.finish();
                eprintln!(
                    "{id}: {} downloaded and checked in {:.0}s",
                    human(size),
                    self.start.elapsed().as_secs_f64()
                );
            }
            _ => {}
        }
    }

    /// Ends the in-place line.
    fn finish(&mut self) {
        if self.in_place {
            eprintln!();
            self.in_place = false;
        }
    }
}

/// `n` bytes in decimal units, as the Hub shows sizes (`4.27 GB`).
fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "";
    for u in UNITS {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.2} {unit}")
}
