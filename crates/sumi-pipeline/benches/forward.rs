//! Timings of single network passes at full SD1.5 size, for `tools/bench/run.sh` (which runs
//! PyTorch on the same work in the same run and prints the ratios).
//!
//! `cargo bench -p sumi-pipeline --bench forward -- WHAT CHECKPOINT RUNS`, WHAT one of
//! `unet-f32` (batch 2, 4×64×64 latent, 2×77×768 context), `vae-decode-f32` (one 512×512
//! image). Prints one JSON line: load seconds, each timed run's seconds (after one warm-up),
//! peak RSS.

use std::time::Instant;

/// A caching allocator: the networks allocate and free large activations at every layer, and
/// the system allocator returns them to the kernel, which then zeroes fresh pages again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{DType, Device, Tensor};
use sumi_pipeline::Checkpoint;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let [_, what, path, runs] = args.as_slice() else {
        eprintln!("usage: forward unet-f32|vae-decode-f32 CHECKPOINT RUNS");
        std::process::exit(2);
    };
    // Keep freed memory instead of returning it to the kernel, which would zero it again on
    // the next layer's allocation. 15 is mimalloc v2's `mi_option_purge_delay`; -1 = never.
    // SAFETY: sets a process-wide allocator option before any worker threads exist.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let runs: usize = runs.parse()?;
    let dev = Device::Cpu;
    let t0 = Instant::now();
    let ck = Checkpoint::open(std::path::Path::new(path), None)?;
    let mut step: Box<dyn FnMut() -> Result<(), Box<dyn std::error::Error>>> = match what.as_str() {
        "unet-f32" => {
            let unet = ck.unet(DType::F32, &dev)?;
            let x = Tensor::randn(0f32, 1.0, (2, 4, 64, 64), &dev)?;
            let t = Tensor::new(&[500f32, 500.0], &dev)?;
            let ctx = Tensor::randn(0f32, 1.0, (2, 77, 768), &dev)?;
            Box::new(move || {
                unet.forward(&x, &t, &ctx)?;
                Ok(())
            })
        }
        "vae-decode-f32" => {
            let vae = ck.vae(DType::F32, &dev)?;
            let z = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &dev)?;
            Box::new(move || {
                vae.decode(&z)?;
                Ok(())
            })
        }
        other => return Err(format!("unknown benchmark {other}").into()),
    };
    let load = t0.elapsed().as_secs_f64();
    step()?;
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        step()?;
        times.push(t.elapsed().as_secs_f64());
    }
    println!(
        "{{\"load_s\": {load:.3}, \"runs_s\": {times:?}, \"peak_rss_kib\": {}}}",
        peak_rss_kib()
    );
    Ok(())
}
