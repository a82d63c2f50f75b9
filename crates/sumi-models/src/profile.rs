//! Per-layer timing for performance work. With `SUMI_PROFILE` set in the environment, the
//! layers' calls (convolutions, linear layers, attention, GroupNorm, GEGLU) add their wall time,
//! count and flops under a key naming the kind and shape (`conv k3 s1 1280->1280 @16x16`), and
//! [`report`] prints the totals, slowest first, with each key's GFLOP/s. Without it each call
//! costs one check of a cached flag.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Seconds, calls and flops under one key.
#[derive(Default, Clone, Copy)]
struct Entry {
    seconds: f64,
    calls: usize,
    flops: f64,
}

static TABLE: Mutex<Option<HashMap<String, Entry>>> = Mutex::new(None);

/// Whether `SUMI_PROFILE` is set (read once).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SUMI_PROFILE").is_some())
}

/// Runs `f`, adding its wall time under the key and flops `what()` gives when profiling is on
/// (`what` runs only then).
pub(crate) fn time<R>(what: impl FnOnce() -> (String, f64), f: impl FnOnce() -> R) -> R {
    if !enabled() {
        return f();
    }
    let start = Instant::now();
    let out = f();
    let seconds = start.elapsed().as_secs_f64();
    let (key, flops) = what();
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let e = table
        .get_or_insert_with(HashMap::new)
        .entry(key)
        .or_default();
    e.seconds += seconds;
    e.calls += 1;
    e.flops += flops;
    out
}

/// The totals so far as lines (`seconds calls GFLOP/s key`), slowest first, after a line with
/// the sum of all; empty when profiling is off or nothing ran.
pub fn report() -> Vec<String> {
    let table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(t) = table.as_ref() else {
        return Vec::new();
    };
    let mut rows: Vec<(&String, &Entry)> = t.iter().collect();
    rows.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
    let total: f64 = rows.iter().map(|r| r.1.seconds).sum();
    let mut lines = vec![format!("profile: {total:.3} s in the layers below")];
    for (key, e) in rows {
        let gflops = if e.flops > 0.0 {
            format!("{:7.1} GFLOP/s", e.flops / e.seconds.max(1e-12) / 1e9)
        } else {
            " ".repeat(15)
        };
        lines.push(format!(
            "profile: {:8.3} s {:5} calls {gflops}  {key}",
            e.seconds, e.calls
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_add_up_when_on() {
        if !enabled() {
            // off: the closure runs and nothing is recorded
            assert_eq!(time(|| ("x".into(), 1.0), || 7), 7);
            assert!(report().is_empty());
            return;
        }
        time(|| ("t".into(), 2e9), || ());
        time(|| ("t".into(), 2e9), || ());
        assert!(report()
            .iter()
            .any(|l| l.contains("2 calls") && l.ends_with(" t")));
    }
}
