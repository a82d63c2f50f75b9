//! The fast path for CPU users on the tiny SD1 model: an LCM-LoRA-shaped file
//! (`fixtures/lcm_lora/`, LCM-LoRA SD1.5's key layout at the tiny model's shapes), the LCM
//! sampler at 4 steps, CFG 1, img2img at strength 0.5; and TAESD's encoder for the source
//! (A1111's "VAE type for encode: TAESD"; the real TAESD weights of ../shared/data/taesd, the
//! test says so and skips where they are absent).

use std::ops::ControlFlow;
use std::path::PathBuf;

use sumi_pipeline::{Generated, Img2Img, LoadOptions, Pipeline, Request};
use sumi_sampling::names::parse_sampler_and_scheduler;

mod common;
use common::{root, tiny_model};

fn request(prompt: &str) -> Request {
    let (sampler, scheduler) = parse_sampler_and_scheduler("LCM", None).unwrap();
    let init = image::open(root().join("generate/init.png"))
        .unwrap()
        .to_rgb8();
    Request {
        prompt: prompt.into(),
        negative_prompt: "blurry".into(),
        seed: 5,
        steps: 4,
        cfg_scale: 1.0,
        sampler,
        scheduler,
        width: 64,
        height: 64,
        img2img: Some(Img2Img {
            init_image: init,
            resize_mode: sumi_pipeline::image::ResizeMode::from_index(0).unwrap(),
            denoising_strength: 0.5,
            inpaint: None,
        }),
        ..Default::default()
    }
}

fn run(pipe: &Pipeline, req: &Request) -> (Vec<Generated>, Vec<String>) {
    pipe.generate(req, &mut |_| ControlFlow::Continue(()))
        .unwrap()
}

/// Every key of the LCM-LoRA-shaped file applies (no warning), the infotext names it, and it
/// changes the picture.
#[test]
fn an_lcm_lora_applies_whole_at_cfg_1() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LoadOptions {
        lora_dirs: vec![root().join("lcm_lora")],
        ..Default::default()
    };
    let pipe = Pipeline::load(&tiny_model("sd1", dir.path()), &opts).unwrap();
    let (with, warnings) = run(&pipe, &request("a cat <lora:lcm_lora_tiny_sd1:1>"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let keys: Vec<&str> = with[0]
        .extra_params
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    let info = pipe
        .infotext(&request("a cat <lora:lcm_lora_tiny_sd1:1>"), &with[0])
        .unwrap();
    let info = info.to_string();
    assert!(
        info.contains("Lora hashes: \"lcm_lora_tiny_sd1: "),
        "{info}"
    );
    assert!(
        info.contains("Sampler: LCM") && info.contains("CFG scale: 1"),
        "{info}"
    );
    let (without, _) = run(&pipe, &request("a cat"));
    let d = sumi_testkit::max_abs_diff(&with[0].latents, &without[0].latents);
    println!("LCM-LoRA-shaped file: latents move by {d:.3e}; extra keys {keys:?}");
    assert!(d > 1e-3, "the LoRA changed nothing ({d:e})");
}

fn taesd_dir() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/taesd");
    if p.join("taesd_encoder.safetensors").is_file() {
        Some(p)
    } else {
        eprintln!(
            "skipped: {} is absent (the real TAESD weights)",
            p.display()
        );
        None
    }
}

/// `taesd_encoder`: img2img encodes its source with TAESD (infotext `VAE Encoder: TAESD`, a
/// different start than the VAE's); a decoder file given as the encoder is refused, by name.
#[test]
fn img2img_encodes_with_taesd_when_asked() {
    let Some(taesd) = taesd_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model("sd1", dir.path());
    let plain = Pipeline::load(&model, &LoadOptions::default()).unwrap();
    let opts = LoadOptions {
        taesd_encoder: Some(taesd.join("taesd_encoder.safetensors")),
        ..Default::default()
    };
    let fast = Pipeline::load(&model, &opts).unwrap();
    let req = request("a cat");
    let (a, _) = run(&fast, &req);
    let (b, _) = run(&plain, &req);
    let vae_encoder: Vec<&(String, String)> = a[0]
        .extra_params
        .iter()
        .filter(|(k, _)| k == "VAE Encoder")
        .collect();
    assert_eq!(vae_encoder, [&("VAE Encoder".into(), "TAESD".into())]);
    assert!(b[0].extra_params.iter().all(|(k, _)| k != "VAE Encoder"));
    let d = sumi_testkit::max_abs_diff(&a[0].latents, &b[0].latents);
    println!("TAESD vs VAE encode: latents differ by {d:.3e}");
    assert!(d > 1e-3, "{d:e}");
    let wrong = LoadOptions {
        taesd_encoder: Some(taesd.join("taesd_decoder.safetensors")),
        ..Default::default()
    };
    let e = Pipeline::load(&model, &wrong).err().unwrap().to_string();
    assert!(
        e.contains("taesd-encoder") && e.contains("this is a TAESD decoder, not an encoder"),
        "{e}"
    );
}

fn keys(g: &Generated) -> Vec<&str> {
    g.extra_params.iter().map(|(k, _)| k.as_str()).collect()
}

/// `taesd_decoder`: the pictures are TAESD's decode of the same latents (A1111's
/// `sd_vae_decode_method` "TAESD"), and the infotext says `VAE Decoder: TAESD` after every
/// other key of the processing (A1111 adds it as it decodes): after `VAE Encoder` and
/// `Lora hashes` on img2img, after the hires keys, `Lora hashes` and `VAE Encoder` on a
/// hires-fix txt2img (where A1111 leaves it out, though it decodes with TAESD there too: Sumi
/// writes it so that the infotext remakes the picture).
#[test]
fn taesd_decodes_when_asked_and_the_infotext_says_so_last() {
    let Some(taesd) = taesd_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model("sd1", dir.path());
    let vae = LoadOptions {
        lora_dirs: vec![root().join("lcm_lora")],
        taesd_encoder: Some(taesd.join("taesd_encoder.safetensors")),
        ..Default::default()
    };
    let fast = LoadOptions {
        taesd_decoder: Some(taesd.join("taesd_decoder.safetensors")),
        ..vae.clone()
    };
    let (vae, fast) = (
        Pipeline::load(&model, &vae).unwrap(),
        Pipeline::load(&model, &fast).unwrap(),
    );
    let req = request("a cat <lora:lcm_lora_tiny_sd1:1>");
    let (a, _) = run(&fast, &req);
    let (b, _) = run(&vae, &req);
    assert_eq!(keys(&a[0]), ["VAE Encoder", "Lora hashes", "VAE Decoder"]);
    assert_eq!(keys(&b[0]), ["VAE Encoder", "Lora hashes"]);
    assert_eq!(a[0].extra_params[2].1, "TAESD");
    // the same latents, decoded otherwise
    assert_eq!(
        sumi_testkit::max_abs_diff(&a[0].latents, &b[0].latents),
        0.0
    );
    let d = a[0]
        .image
        .as_raw()
        .iter()
        .zip(b[0].image.as_raw())
        .filter(|(x, y)| x != y)
        .count();
    println!(
        "TAESD vs VAE decode: {d} of {} bytes differ",
        a[0].image.len()
    );
    assert!(d > a[0].image.len() / 2, "{d}");
    let info = fast.infotext(&req, &a[0]).unwrap().to_string();
    assert!(
        info.contains(", VAE Decoder: TAESD, Version: sumi-"),
        "{info}"
    );
    // the hires fix: the key after the hires keys
    let (sampler, scheduler) = parse_sampler_and_scheduler("Euler", None).unwrap();
    let hires = Request {
        prompt: "a cat <lora:lcm_lora_tiny_sd1:1>".into(),
        seed: 3,
        steps: 2,
        sampler,
        scheduler,
        width: 64,
        height: 64,
        hires: Some(sumi_pipeline::Hires {
            upscaler: Some("Lanczos".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (h, _) = run(&fast, &hires);
    assert_eq!(h[0].image.dimensions(), (128, 128));
    let k = keys(&h[0]);
    assert!(k.contains(&"Hires upscale"), "{k:?}");
    // A1111 sets `VAE Encoder` in its hires pass, after the networks' `Lora hashes`
    assert_eq!(
        k[k.len() - 3..],
        ["Lora hashes", "VAE Encoder", "VAE Decoder"],
        "{k:?}"
    );
    assert_eq!(k.iter().filter(|k| **k == "VAE Decoder").count(), 1);
}
