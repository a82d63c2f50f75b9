//! `sumi txt2img` / `img2img` / `png-info` end to end on the tiny SD1 model: outputs carry
//! A1111 infotext, `--from-png` reproduces an image bit for bit, bad input gets a message
//! naming the field and exit code 1, and nothing is ever overwritten.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "generate/photo_formats.rs"]
mod photo_formats;
#[path = "generate/photo_sizes.rs"]
mod photo_sizes;

fn sumi(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sumi"));
    c.current_dir(dir);
    c
}

fn model(dir: &Path) -> PathBuf {
    sumi_testkit::tiny_model("sd1", dir)
}

fn init_png() -> PathBuf {
    sumi_testkit::fixtures().join("generate/init.png")
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(o: Output, needle: &str) {
    assert_eq!(
        o.status.code(),
        Some(2),
        "stdout {} stderr {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

const FAST: &[&str] = &["--steps", "3", "--width", "64", "--height", "64", "--quiet"];

#[test]
fn txt2img_writes_infotext_and_from_png_reproduces_it() {
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path());
    let out = ok(sumi(d.path())
        .args(["txt2img", "--model"])
        .arg(&m)
        .args([
            "--prompt",
            "a red (apple:1.2)",
            "--negative-prompt",
            "blurry",
            "--seed",
            "77",
            "--sampler",
            "Euler a",
            "--rng",
            "cpu",
        ])
        .args(FAST)
        .args(["--batch-size", "2"])
        .output()
        .unwrap());
    assert!(
        out.contains("outputs/00000.png (seed 77)") && out.contains("outputs/00001.png (seed 78)"),
        "{out}"
    );
    let info = ok(sumi(d.path())
        .args(["png-info", "outputs/00001.png"])
        .output()
        .unwrap());
    assert_eq!(
        info.trim_end(),
        "a red (apple:1.2)\nNegative prompt: blurry\nSteps: 3, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 78, Size: 64x64, Model hash: "
            .to_string()
            + &info.split("Model hash: ").nth(1).unwrap()[..10]
            + ", Model: tiny_sd1, RNG: CPU, Version: sumi-0.1.0"
    );
    let json = ok(sumi(d.path())
        .args(["png-info", "--json", "outputs/00001.png"])
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["Seed"], "78");
    assert_eq!(v["Prompt"], "a red (apple:1.2)");
    // reproduce the second image of the batch from its PNG alone
    ok(sumi(d.path())
        .args(["txt2img", "--model"])
        .arg(&m)
        .args([
            "--from-png",
            "outputs/00001.png",
            "--output",
            "again.png",
            "--quiet",
        ])
        .output()
        .unwrap());
    let a = image::open(d.path().join("outputs/00001.png"))
        .unwrap()
        .to_rgb8();
    let b = image::open(d.path().join("again.png")).unwrap().to_rgb8();
    assert_eq!(
        a.as_raw(),
        b.as_raw(),
        "--from-png did not reproduce the image"
    );
}

#[test]
fn img2img_runs_and_records_strength() {
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path());
    ok(sumi(d.path())
        .args(["img2img", "--model"])
        .arg(&m)
        .arg("--init-image")
        .arg(init_png())
        .args([
            "--prompt",
            "x",
            "--seed",
            "5",
            "--denoising-strength",
            "0.6",
            "--sampler",
            "DPM++ SDE Karras",
            "--resize-mode",
            "crop-and-resize",
            "--output",
            "o.png",
        ])
        .args(FAST)
        .output()
        .unwrap());
    let info = ok(sumi(d.path()).args(["png-info", "o.png"]).output().unwrap());
    assert!(
        info.contains("Sampler: DPM++ SDE, Schedule type: Karras")
            && info.contains("Denoising strength: 0.6"),
        "{info}"
    );
}

#[test]
fn bad_input_is_refused_with_the_field_named() {
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path());
    let run = |args: &[&str]| {
        let mut c = sumi(d.path());
        c.args(["txt2img", "--model"])
            .arg(&m)
            .args(["--quiet"])
            .args(args);
        c.output().unwrap()
    };
    fails(
        run(&["--sampler", "Euler z"]),
        "unknown sampler 'Euler z'; valid samplers: DPM++ 2M",
    );
    fails(run(&["--scheduler", "sideways"]), "--sampler/--scheduler");
    fails(run(&["--width", "10"]), "width: 10 is outside 64..=4096");
    fails(run(&["--steps", "0"]), "steps: 0 is outside 1..=500");
    fails(
        run(&["--steps", "100000"]),
        "steps: 100000 is outside 1..=500",
    );
    fails(run(&["--cfg-scale", "NaN"]), "cfg-scale");
    fails(
        run(&["--batch-size", "1000"]),
        "batch-size: 1000 is outside 1..=64",
    );
    fails(run(&["--rng", "dice"]), "--rng");
    fails(run(&["--subseed-strength", "2"]), "subseed-strength");
    fails(run(&["--prompt", "(abc:1.2.3)"]), "1.2.3");
    fails(run(&["--from-png", "nope.png"]), "nope.png");
    fails(
        run(&["--infotext", "x\nSteps: many, Sampler: Euler, CFG scale: 7"]),
        "infotext `Steps: many`",
    );
    // img2img specifics
    let i2i = |args: &[&str]| {
        let mut c = sumi(d.path());
        c.args(["img2img", "--model"])
            .arg(&m)
            .args(["--quiet"])
            .args(args);
        c.output().unwrap()
    };
    fails(i2i(&["--init-image", "missing.png"]), "missing.png");
    std::fs::write(d.path().join("not-an-image.png"), b"hello").unwrap();
    fails(
        i2i(&["--init-image", "not-an-image.png"]),
        "not-an-image.png",
    );
    let init = init_png();
    let init = init.to_str().unwrap();
    fails(
        i2i(&["--init-image", init, "--denoising-strength", "1.5"]),
        "denoising-strength: 1.5 is outside 0..=1",
    );
    fails(
        i2i(&["--init-image", init, "--resize-mode", "squash"]),
        "--resize-mode",
    );
    // a broken model names the file
    std::fs::write(
        d.path().join("broken.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":",
    )
    .unwrap();
    let o = sumi(d.path())
        .args(["txt2img", "--model", "broken.safetensors", "--quiet"])
        .output()
        .unwrap();
    fails(o, "broken.safetensors");
}

#[test]
fn never_overwrites() {
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path());
    std::fs::write(d.path().join("taken.png"), b"precious").unwrap();
    let o = sumi(d.path())
        .args(["txt2img", "--model"])
        .arg(&m)
        .args(["--output", "taken.png"])
        .args(FAST)
        .output()
        .unwrap();
    fails(o, "taken.png already exists");
    assert_eq!(
        std::fs::read(d.path().join("taken.png")).unwrap(),
        b"precious"
    );
    let leftovers: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(
        !leftovers
            .iter()
            .any(|n| n.to_string_lossy().contains("tmp")),
        "{leftovers:?}"
    );
}

#[test]
fn bad_input_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path());
    let o = sumi(d.path())
        .args(["txt2img", "--model"])
        .arg(&m)
        .args(["--steps", "0"])
        .output()
        .unwrap();
    fails(o, "steps: 0 is outside 1..=500");
    let o = sumi(d.path())
        .args(["txt2img", "--model", "missing.safetensors", "--quiet"])
        .output()
        .unwrap();
    fails(o, "missing.safetensors");
    assert!(
        !d.path().join("outputs").exists(),
        "a failed run created ./outputs"
    );
}

#[test]
fn an_interrupted_run_keeps_finished_images_and_leaves_no_partial_file() {
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path());
    let mut child = sumi(d.path())
        .args(["txt2img", "--model"])
        .arg(&m)
        .args([
            "--steps",
            "200",
            "--width",
            "64",
            "--height",
            "64",
            "--batch-count",
            "50",
            "--seed",
            "1",
            "--quiet",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first = d.path().join("outputs/00000.png");
    let start = std::time::Instant::now();
    while !first.exists() && start.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        first.exists(),
        "the first image was not written within 120 s"
    );
    for e in std::fs::read_dir(d.path().join("outputs")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // a temp file of the write in progress when killed: never under a real name
        }
        let img = image::open(&p).unwrap_or_else(|e| panic!("{name} is not a complete PNG: {e}"));
        assert_eq!(img.width(), 64, "{name}");
    }
}

/// An A1111 external VAE file (LDM keys without `first_stage_model.`): used instead of the
/// checkpoint's, and recorded as `VAE hash` / `VAE`.
#[test]
fn external_vae_replaces_the_checkpoints() {
    use std::collections::BTreeMap;
    use sumi_weights::safetensors::{serialize, SafetensorsFile};
    use sumi_weights::StorageDtype;
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path());
    // the checkpoint's own VAE, with the decoder's output bias shifted, as a standalone file,
    // and the same change made inside a copy of the checkpoint
    let f = SafetensorsFile::open(&m).unwrap();
    let mut vae = Vec::new();
    let mut full = Vec::new();
    for e in f.entries() {
        let mut bytes = f.bytes(e).to_vec();
        if e.name == "first_stage_model.decoder.conv_out.bias" {
            for c in bytes.chunks_exact_mut(2) {
                let v = half::f16::from_le_bytes([c[0], c[1]]).to_f32() + 0.25;
                c.copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
        }
        if let Some(k) = e.name.strip_prefix("first_stage_model.") {
            vae.push((
                k.to_string(),
                StorageDtype::F16,
                e.shape.clone(),
                bytes.clone(),
            ));
        }
        full.push((e.name.clone(), StorageDtype::F16, e.shape.clone(), bytes));
    }
    std::fs::write(
        d.path().join("shifted.vae.safetensors"),
        serialize(&vae, &BTreeMap::new()),
    )
    .unwrap();
    std::fs::write(
        d.path().join("patched.safetensors"),
        serialize(&full, &BTreeMap::new()),
    )
    .unwrap();
    let run = |model: &str, vae: Option<&str>, out: &str| {
        let mut c = sumi(d.path());
        c.args(["txt2img", "--model", model, "--seed", "3", "--output", out])
            .args(FAST);
        if let Some(v) = vae {
            c.args(["--vae", v]);
        }
        ok(c.output().unwrap());
        image::open(d.path().join(out)).unwrap().to_rgb8()
    };
    let plain = run("tiny_sd1.safetensors", None, "plain.png");
    let with_vae = run(
        "tiny_sd1.safetensors",
        Some("shifted.vae.safetensors"),
        "vae.png",
    );
    let patched = run("patched.safetensors", None, "patched.png");
    assert_ne!(
        plain.as_raw(),
        with_vae.as_raw(),
        "the external VAE was not used"
    );
    assert_eq!(with_vae.as_raw(), patched.as_raw());
    let info = ok(sumi(d.path())
        .args(["png-info", "vae.png"])
        .output()
        .unwrap());
    assert!(
        info.contains("VAE hash: ") && info.contains("VAE: shifted.vae"),
        "{info}"
    );
    fails(
        sumi(d.path())
            .args([
                "txt2img",
                "--model",
                "tiny_sd1.safetensors",
                "--vae",
                "tiny_sd1.safetensors.missing",
                "--quiet",
            ])
            .output()
            .unwrap(),
        "tiny_sd1.safetensors.missing",
    );
}

#[test]
fn taesd_decoder_option() {
    let taesd = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/taesd/taesd_decoder.safetensors");
    if !taesd.is_file() {
        eprintln!("skipped: {} is absent", taesd.display());
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path());
    let run = |extra: &[&std::ffi::OsStr], out: &str| {
        let o = sumi(d.path())
            .args(["txt2img", "--model"])
            .arg(&m)
            .args(["--output", out])
            .args(FAST)
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        ok(o);
        (image::open(d.path().join(out)).unwrap().to_rgb8(), err)
    };
    type Args<'a> = [&'a std::ffi::OsStr; 2];
    let with_taesd: Args = ["--taesd-decoder".as_ref(), taesd.as_os_str()];
    let seed: Args = ["--seed".as_ref(), "9".as_ref()];
    let (vae, _) = run(&seed, "vae.png");
    let (fast, _) = run(&[seed, with_taesd].concat(), "taesd.png");
    assert_eq!(fast.dimensions(), (64, 64));
    assert_ne!(vae.as_raw(), fast.as_raw());
    // A1111's infotext key, last before the version
    let info = ok(sumi(d.path())
        .args(["png-info", "taesd.png"])
        .output()
        .unwrap());
    assert!(info.contains(", VAE Decoder: TAESD, Version: "), "{info}");
    let vae_info = ok(sumi(d.path())
        .args(["png-info", "vae.png"])
        .output()
        .unwrap());
    assert!(!vae_info.contains("VAE Decoder"), "{vae_info}");
    // --from-png reads it back: with the decoder given, the same picture and no warning; without,
    // the VAE's picture and a warning naming the option
    let from: Args = ["--from-png".as_ref(), "taesd.png".as_ref()];
    let (again, err) = run(&[from, with_taesd].concat(), "again.png");
    assert_eq!(
        again.as_raw(),
        fast.as_raw(),
        "--from-png did not remake it"
    );
    assert!(!err.contains("warning"), "{err}");
    let (plain, err) = run(&from, "plain.png");
    assert_eq!(plain.as_raw(), vae.as_raw());
    assert!(
        err.contains(
            "warning: the infotext's `VAE Decoder: TAESD` is not applied without \
             --taesd-decoder (TAESD's taesd_decoder.safetensors, taesdxl_… for SDXL): the \
             picture may differ"
        ),
        "{err}"
    );
}

#[test]
fn oversized_init_image_is_refused_before_decoding() {
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path());
    // a PNG whose header claims 20000 x 20000 pixels (400 M, over the 64 Mi limit)
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&20000u32.to_be_bytes());
    ihdr.extend_from_slice(&20000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // a small (truncated) image data chunk and the end chunk: decoders read the header first
    for (kind, data) in [
        (&b"IDAT"[..], &b"\x78\x9c\x03\x00\x00\x00\x00\x01"[..]),
        (&b"IEND"[..], &b""[..]),
    ] {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    std::fs::write(d.path().join("huge.png"), &png).unwrap();
    let o = sumi(d.path())
        .args(["img2img", "--model"])
        .arg(&m)
        .args(["--init-image", "huge.png", "--quiet"])
        .output()
        .unwrap();
    fails(o, "huge.png");
    let o = sumi(d.path())
        .args(["img2img", "--model"])
        .arg(&m)
        .args(["--init-image", "huge.png", "--quiet"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("20000x20000"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn img2img_with_a_mask_records_a1111s_keys_and_keeps_the_source_size() {
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path());
    let fx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/inpaint");
    ok(sumi(d.path())
        .args(["img2img", "--model"])
        .arg(&m)
        .arg("--init-image")
        .arg(fx.join("init.png"))
        .arg("--mask")
        .arg(fx.join("mask_ellipse.png"))
        .args([
            "--inpainting-fill",
            "fill",
            "--inpaint-full-res",
            "--mask-invert",
            "--seed",
            "5",
            "--output",
            "o.png",
        ])
        .args(FAST)
        .output()
        .unwrap());
    let png = d.path().join("o.png");
    // "only masked" pastes the result back into the source: the source's size
    assert_eq!(image::image_dimensions(&png).unwrap(), (144, 128));
    let info = ok(sumi(d.path()).arg("png-info").arg(&png).output().unwrap());
    assert!(
        info.contains(
            "Denoising strength: 0.75, Mask mode: Inpaint not masked, Mask blur: 4, \
             Inpaint area: Only masked, Masked area padding: 32, Masked content: fill"
        ),
        "{info}"
    );

    // a mask that is not an image, an unknown fill, a mask with latent upscale
    let bad = d.path().join("bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let base = |extra: &[&str], mask: &Path| {
        let mut c = sumi(d.path());
        c.args(["img2img", "--model"])
            .arg(&m)
            .arg("--init-image")
            .arg(fx.join("init.png"))
            .arg("--mask")
            .arg(mask)
            .args(FAST)
            .args(extra);
        c.output().unwrap()
    };
    fails(base(&[], &bad), "--mask");
    fails(base(&[], &bad), "bad.png");
    fails(
        base(&["--inpainting-fill", "blur"], &fx.join("mask_soft.png")),
        "--inpainting-fill",
    );
    fails(
        base(
            &["--resize-mode", "latent-upscale"],
            &fx.join("mask_soft.png"),
        ),
        "resize-mode: latent-upscale cannot be combined with a mask",
    );
}

#[test]
fn unipc_with_fewer_steps_than_its_order_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path());
    let run = |steps: &str| {
        sumi(d.path())
            .args(["txt2img", "--model"])
            .arg(&m)
            .args(["--sampler", "UniPC", "--width", "64", "--height", "64"])
            .args(["--steps", steps, "--quiet", "--output", "u.png"])
            .output()
            .unwrap()
    };
    fails(
        run("2"),
        "steps: UniPC is order 3 and needs at least 3 sampling steps",
    );
    ok(run("3"));
}

#[test]
fn hires_fix_records_a1111s_keys_and_from_png_reproduces_it() {
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path());
    ok(sumi(d.path())
        .args(["txt2img", "--model"])
        .arg(&m)
        .args([
            "--prompt",
            "a red apple",
            "--seed",
            "12",
            "--sampler",
            "Euler a",
            "--hr-scale",
            "1.5",
            "--hr-upscaler",
            "Latent (bicubic antialiased)",
            "--hr-second-pass-steps",
            "2",
            "--hr-denoising-strength",
            "0.55",
            "--hr-sampler",
            "DPM++ 2M",
            "--output",
            "hr.png",
        ])
        .args(FAST)
        .output()
        .unwrap());
    let img = image::open(d.path().join("hr.png")).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (96, 96));
    let info = ok(sumi(d.path())
        .args(["png-info", "hr.png"])
        .output()
        .unwrap());
    assert!(
        info.contains("Size: 64x64, ")
            && info.contains("Denoising strength: 0.55, ")
            && info.contains(
                "Hires sampler: DPM++ 2M, Hires schedule type: Karras, Hires upscale: 1.5, \
                 Hires steps: 2, Hires upscaler: Latent (bicubic antialiased), Version"
            ),
        "{info}"
    );
    ok(sumi(d.path())
        .args(["txt2img", "--model"])
        .arg(&m)
        .args(["--from-png", "hr.png", "--output", "again.png", "--quiet"])
        .output()
        .unwrap());
    // a hires pass on another checkpoint is named, not silently dropped
    let text = ok(sumi(d.path())
        .args(["png-info", "hr.png"])
        .output()
        .unwrap());
    let o = sumi(d.path())
        .args(["txt2img", "--model"])
        .arg(&m)
        .arg("--infotext")
        .arg(text.trim_end().to_string() + ", Hires checkpoint: other_model")
        .args(["--output", "other.png", "--quiet"])
        .output()
        .unwrap();
    ok(o.clone());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("`Hires checkpoint: other_model` is not applied"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let again = image::open(d.path().join("again.png")).unwrap().to_rgb8();
    assert_eq!(
        img.as_raw(),
        again.as_raw(),
        "--from-png did not reproduce the hires picture"
    );
    // an unknown upscaler is refused with the list
    fails(
        sumi(d.path())
            .args(["txt2img", "--model"])
            .arg(&m)
            .args(["--hr-scale", "2", "--hr-upscaler", "R-ESRGAN 9x"])
            .args(FAST)
            .output()
            .unwrap(),
        "Latent (nearest-exact)",
    );
    // a hires option without the hires fix is refused, not dropped
    fails(
        sumi(d.path())
            .args(["txt2img", "--model"])
            .arg(&m)
            .args(["--hr-upscaler", "Lanczos"])
            .args(FAST)
            .output()
            .unwrap(),
        "--hr-upscaler: the hires fix is off",
    );
}

#[test]
fn img2img_resize_by_scales_the_init_image() {
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path());
    // the 128×128 init image at 0.5: a 64×64 picture
    ok(sumi(d.path())
        .args(["img2img", "--model"])
        .arg(&m)
        .arg("--init-image")
        .arg(init_png())
        .args([
            "--scale", "0.5", "--steps", "2", "--quiet", "--output", "s.png",
        ])
        .output()
        .unwrap());
    let img = image::open(d.path().join("s.png")).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (64, 64));
    fails(
        sumi(d.path())
            .args(["img2img", "--model"])
            .arg(&m)
            .arg("--init-image")
            .arg(init_png())
            .args(["--scale", "0", "--quiet"])
            .output()
            .unwrap(),
        "--scale",
    );
}
