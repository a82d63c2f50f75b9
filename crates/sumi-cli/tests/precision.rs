//! `--precision`: f32 and bf16 both generate on the tiny SD1 model, with images that differ
//! (the bf16 path really runs) but only slightly; an unknown precision is refused by clap
//! with exit code 2.

use std::path::{Path, PathBuf};
use std::process::Command;

fn sumi(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sumi"));
    c.current_dir(dir);
    c
}

fn model(dir: &Path) -> PathBuf {
    sumi_testkit::tiny_model("sd1", dir)
}

fn txt2img(dir: &Path, precision: &str) -> image::RgbImage {
    let out = format!("{precision}.png");
    let o = sumi(dir)
        .args(["txt2img", "--model"])
        .arg(model(dir))
        .args(["--prompt", "a red apple", "--seed", "5", "--steps", "3"])
        .args(["--width", "64", "--height", "64", "--quiet"])
        .args(["--precision", precision, "--output", &out])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{precision}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    image::open(dir.join(out)).unwrap().to_rgb8()
}

#[test]
fn f32_and_bf16_images_are_close() {
    let d = tempfile::tempdir().unwrap();
    let a = txt2img(d.path(), "f32");
    let b = txt2img(d.path(), "bf16");
    let diff: Vec<i32> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (x as i32 - y as i32).abs())
        .collect();
    let max = diff.iter().copied().max().unwrap();
    let mean = diff.iter().sum::<i32>() as f64 / diff.len() as f64;
    println!("bf16 vs f32 pixels: max {max}, mean {mean:.2}");
    assert!(max > 0, "bf16 image identical to f32");
    assert!(mean < 4.0 && max < 64, "max {max}, mean {mean:.2}");
}

#[test]
fn unknown_precision_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let o = sumi(d.path())
        .args(["txt2img", "--model", "x.safetensors", "--precision", "f16"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("precision") && err.contains("f16"), "{err}");
}
