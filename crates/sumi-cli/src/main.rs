//! `sumi`: Stable Diffusion from the command line.

mod generate;
mod hub_models;
mod inputs;
mod model_info;
mod output;
mod png_info;
mod progress_bar;
mod prompt;
mod ranged;
mod sd_upscale;
mod serve;
mod size;
mod stages;
mod terminal;
mod upscale;
mod worker;

use std::io::Write;

use clap::{Parser, Subcommand};

/// A caching allocator: the networks allocate and free large activations at every layer, and
/// the system allocator returns them to the kernel, which then zeroes fresh pages again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One example per command, shown under `sumi --help`.
const EXAMPLES: &str = "\
Examples:
  sumi img2img --model v1-5.safetensors --init-image photo.jpg --prompt \"anime portrait\" --denoising-strength 0.6
  sumi txt2img --model v1-5.safetensors --prompt \"a red fox, <lora:style:0.8>\" --lora-dir loras --output fox.png
  sumi txt2img --model v1-5.safetensors --from-png old.png          (make a picture again from its parameters)
  sumi upscale photo.png --upscaler Lanczos --scale 2
  sumi serve --model v1-5.safetensors --port 7860                   (A1111's API and a web page)
  sumi worker --broker redis://host:6379 --model v1-5.safetensors   (run the jobs of `sumi serve --broker` fronts)
  sumi png-info picture.png
  sumi prompt --steps 20 \"a [cat:dog:0.5], (sharp:1.2)\"
  sumi model-info v1-5.safetensors

Each command's options: sumi <command> --help";

/// Stable Diffusion in Rust, A1111-compatible.
#[derive(Parser)]
#[command(name = "sumi", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make pictures from a prompt.
    #[command(allow_negative_numbers = true)]
    Txt2img(generate::Txt2ImgArgs),
    /// Turn a picture into a new one guided by a prompt.
    #[command(allow_negative_numbers = true)]
    Img2img(generate::Img2ImgArgs),
    /// Identify a checkpoint: architecture, prediction type, dtype, sizes, hashes.
    ModelInfo(model_info::Args),
    /// Print the A1111 parameters stored in a PNG.
    PngInfo(png_info::Args),
    /// Show how a prompt is read: schedule, weights, tokens per chunk, embeddings.
    Prompt(prompt::Args),
    /// Serve the A1111-compatible HTTP API and a web page.
    Serve(serve::Args),
    /// Upscale a picture as A1111's Extras tab does.
    Upscale(upscale::Args),
    /// Run jobs from a Redis job broker for `sumi serve --broker` fronts (several machines).
    Worker(worker::Args),
}

/// Where model hashes are kept (A1111's hash cache): `$SUMI_CACHE_DIR/hashes.json`, else
/// under `$XDG_CACHE_HOME/sumi`, else `~/.cache/sumi`; none when `SUMI_CACHE_DIR` is set empty.
fn hash_cache_file() -> Option<std::path::PathBuf> {
    let var = |k: &str| std::env::var_os(k).map(std::path::PathBuf::from);
    let dir = match var("SUMI_CACHE_DIR") {
        Some(d) if d.as_os_str().is_empty() => return None,
        Some(d) => d,
        None => match var("XDG_CACHE_HOME").filter(|d| d.is_absolute()) {
            Some(d) => d.join("sumi"),
            None => var("HOME").filter(|d| d.is_absolute())?.join(".cache/sumi"),
        },
    };
    Some(dir.join("hashes.json"))
}

fn main() -> std::process::ExitCode {
    // Keep freed memory instead of returning it to the kernel, which would zero it again on
    // the next layer's allocation. 15 is mimalloc v2's `mi_option_purge_delay`; -1 = never.
    // SAFETY: sets a process-wide allocator option before any worker threads exist.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    if let Some(file) = hash_cache_file() {
        sumi_pipeline::use_hash_cache(file);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Txt2img(a) => generate::txt2img(a),
        Command::Img2img(a) => generate::img2img(a),
        Command::ModelInfo(a) => model_info::run(a),
        Command::Prompt(a) => prompt::run(a),
        Command::PngInfo(a) => png_info::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Upscale(a) => upscale::run(a),
        Command::Worker(a) => worker::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // stdout closed by the reader (`sumi png-info x.png | head -0`): nothing left to say
        Err(e) if terminal::is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // one line, the option or file first, then each cause
            let mut msg = String::new();
            for cause in e.chain().map(|c| c.to_string()) {
                // errors that already quote their source are not repeated
                if !msg.ends_with(&cause) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&cause);
                }
            }
            // file data in the message is escaped; a closed stderr leaves only the exit status
            let _ = writeln!(
                std::io::stderr(),
                "error: {}",
                terminal::escape_controls(&msg)
            );
            std::process::ExitCode::from(2)
        }
    }
}
