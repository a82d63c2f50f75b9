//! Times Sumi's model upscale (A1111's tiled inference) of a SIZE² image for
//! `tools/bench/upscale.sh`: `upscale_bench MODEL IMAGE.png RUNS [TILE OVERLAP]`. Prints one
//! line `sumi <median seconds> <output width>x<height>` after a warm-up run; the output is
//! written to `$UPSCALE_BENCH_OUT` when that is set.

use std::path::Path;
use std::time::Instant;

use sumi_pipeline::upscale::{keep_going, upscale_with_model, TileOptions, Upscaler};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: upscale_bench MODEL IMAGE.png RUNS [TILE OVERLAP]".into());
    }
    let u = Upscaler::from_file(Path::new(&args[1]));
    let img = image::open(&args[2])?.to_rgb8();
    let runs: usize = args[3].parse()?;
    let tile = TileOptions {
        tile: args.get(4).map_or(Ok(192), |s| s.parse())?,
        overlap: args.get(5).map_or(Ok(8), |s| s.parse())?,
    };
    let t0 = Instant::now();
    let net = u.network()?.ok_or("not a model file")?;
    eprintln!("load {:.2}s", t0.elapsed().as_secs_f64());
    let mut out = upscale_with_model(&net, &img, tile, &mut keep_going)?; // warm-up
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        out = upscale_with_model(&net, &img, tile, &mut keep_going)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    if let Some(p) = std::env::var_os("UPSCALE_BENCH_OUT") {
        out.save(p)?;
    }
    println!("sumi {median:.3} {}x{}", out.width(), out.height());
    Ok(())
}
