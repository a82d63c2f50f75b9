//! Timings of single network passes at full SD1.5 size, for `tools/bench/run.sh` (which runs
//! PyTorch on the same work in the same run and prints the ratios).
//!
//! `cargo bench -p sumi-pipeline --bench forward -- WHAT CHECKPOINT RUNS [LATENT]`, WHAT one of
//! `unet-f32`/`unet-bf16` (batch 2, 4×64×64 latent, 2×77×768 context), `unet-sdxl-f32`/
//! `unet-sdxl-bf16` (an SDXL checkpoint's U-Net: batch 2, 4×128×128 latent, 2×77×2048 context,
//! the ADM vector 2×2816), `vae-decode-f32`/`vae-decode-bf16` (one 512×512 image). LATENT sets
//! the latent's side (96 = 768², 128 = 1024²; a small one for a quick check), for the VAE one
//! image from a LATENT×LATENT latent. Prints one
//! JSON line: load seconds, each timed run's seconds (after one warm-up) with the CPU seconds
//! each used (a loaded machine stretches the wall time more than the CPU time), peak RSS.
//! `unet-fidelity`/`vae-fidelity` (RUNS ignored) print the bf16 output's max difference from f32
//! relative to f32's largest magnitude. With `SUMI_PROFILE` set, stderr also gets the time
//! per layer kind and shape over all passes, warm-up included (see `sumi_models::profile`).

use std::time::Instant;

/// A caching allocator: the networks allocate and free large activations at every layer, and
/// the system allocator returns them to the kernel, which then zeroes fresh pages again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{DType, Device, Tensor};
use sumi_models::UNetConfig;
use sumi_pipeline::Checkpoint;

/// CPU seconds this process has used (user + system), from /proc/self/stat (0 if unreadable).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // fields after the parenthesised command name; utime and stime are the 14th and 15th
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

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

/// A U-Net forward's inputs: latent, timesteps, context, ADM vector (SDXL only).
type UnetInputs = (Tensor, Tensor, Tensor, Option<Tensor>);

/// One U-Net forward's inputs for `cfg`: batch 2, `in_channels`×`lat`×`lat` latent, t = 500,
/// 77 tokens of context, and the ADM vector where the U-Net takes one (SDXL).
fn unet_inputs(cfg: &UNetConfig, lat: usize, dev: &Device) -> candle_core::Result<UnetInputs> {
    let y = cfg
        .adm_in
        .map(|n| Tensor::randn(0f32, 1.0, (2, n), dev))
        .transpose()?;
    Ok((
        Tensor::randn(0f32, 1.0, (2, cfg.in_channels, lat, lat), dev)?,
        Tensor::new(&[500f32, 500.0], dev)?,
        Tensor::randn(0f32, 1.0, (2, 77, cfg.context_dim), dev)?,
        y,
    ))
}

/// max |a - b| / max |b|
fn rel(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    let d = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let m = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    Ok(d / m)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let (what, path, runs, lat) = match args.as_slice() {
        [_, what, path, runs] => (what, path, runs, None),
        [_, what, path, runs, lat] => (what, path, runs, Some(lat.parse::<usize>()?)),
        _ => {
            eprintln!("usage: forward unet-f32|unet-bf16|unet-sdxl-f32|unet-sdxl-bf16|vae-decode-f32|vae-decode-bf16|unet-fidelity|vae-fidelity CHECKPOINT RUNS [LATENT]");
            std::process::exit(2);
        }
    };
    let sdxl = what.starts_with("unet-sdxl-");
    let lat = lat.unwrap_or(if sdxl { 128 } else { 64 });
    if lat == 0 || lat % 8 != 0 {
        return Err(format!("LATENT {lat}: a positive multiple of 8").into());
    }
    // Keep freed memory instead of returning it to the kernel, which would zero it again on
    // the next layer's allocation. 15 is mimalloc v2's `mi_option_purge_delay`; -1 = never.
    // SAFETY: sets a process-wide allocator option before any worker threads exist.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let runs: usize = runs.parse()?;
    let dev = Device::Cpu;
    let t0 = Instant::now();
    let ck = Checkpoint::open(std::path::Path::new(path), None)?;
    if sdxl != ck.is_sdxl() {
        return Err(format!("{what} on a {} checkpoint", ck.architecture()).into());
    }
    let precision = |w: &str| {
        if w.ends_with("-bf16") {
            DType::BF16
        } else {
            DType::F32
        }
    };
    let mut step: Box<dyn FnMut() -> Result<(), Box<dyn std::error::Error>>> = match what.as_str() {
        "unet-f32" | "unet-bf16" | "unet-sdxl-f32" | "unet-sdxl-bf16" => {
            let unet = ck.unet(precision(what), &dev)?;
            let (x, t, ctx, y) = unet_inputs(unet.config(), lat, &dev)?;
            Box::new(move || {
                match &y {
                    Some(y) => unet.forward_adm(&x, &t, &ctx, y)?,
                    None => unet.forward(&x, &t, &ctx)?,
                };
                Ok(())
            })
        }
        "vae-decode-f32" | "vae-decode-bf16" => {
            let vae = ck.vae(precision(what), &dev)?;
            let z = Tensor::randn(0f32, 1.0, (1, 4, lat, lat), &dev)?;
            Box::new(move || {
                vae.decode(&z)?;
                Ok(())
            })
        }
        "unet-fidelity" => {
            // bf16 against f32 on the same inputs: max |bf16 - f32| / max |f32|
            let (x, t, ctx, _) = unet_inputs(&ck.unet_config()?, lat, &dev)?;
            let a = ck.unet(DType::F32, &dev)?.forward(&x, &t, &ctx)?;
            let b = ck.unet(DType::BF16, &dev)?.forward(&x, &t, &ctx)?;
            println!("{{\"unet_bf16_rel\": {:.4e}}}", rel(&b, &a)?);
            return Ok(());
        }
        "vae-fidelity" => {
            let z = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &dev)?;
            let a = ck.vae(DType::F32, &dev)?.decode(&z)?;
            let b = ck.vae(DType::BF16, &dev)?.decode(&z)?;
            println!("{{\"vae_decode_bf16_rel\": {:.4e}}}", rel(&b, &a)?);
            return Ok(());
        }
        other => return Err(format!("unknown benchmark {other}").into()),
    };
    let load = t0.elapsed().as_secs_f64();
    step()?;
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..runs {
        let (t, c) = (Instant::now(), cpu_seconds());
        step()?;
        times.push(t.elapsed().as_secs_f64());
        cpu.push(((cpu_seconds() - c) * 100.0).round() / 100.0);
    }
    for line in sumi_models::profile::report() {
        eprintln!("{line}");
    }
    println!(
        "{{\"load_s\": {load:.3}, \"runs_s\": {times:?}, \"cpu_s\": {cpu:?}, \"peak_rss_kib\": {}}}",
        peak_rss_kib()
    );
    Ok(())
}
