//! Every one of A1111's 20 samplers generates through the CLI, txt2img and img2img, and the
//! picture's infotext names it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A1111 v1.10.1's sampler labels, in its order (`/sdapi/v1/samplers`).
const SAMPLERS: [&str; 20] = [
    "DPM++ 2M",
    "DPM++ SDE",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun",
    "DPM++ 2S a",
    "DPM++ 3M SDE",
    "Euler a",
    "Euler",
    "LMS",
    "Heun",
    "DPM2",
    "DPM2 a",
    "DPM fast",
    "DPM adaptive",
    "Restart",
    "DDIM",
    "DDIM CFG++",
    "PLMS",
    "UniPC",
    "LCM",
];

fn model(dir: &Path) -> PathBuf {
    let fixture = sumi_testkit::tiny_fixture("sd1");
    sumi_testkit::materialize(&fixture, dir, sumi_testkit::Storage::F16).unwrap();
    dir.join("tiny_sd1.safetensors")
}

#[test]
fn every_a1111_sampler_generates_txt2img_and_img2img() {
    let d = tempfile::tempdir().unwrap();
    let m = model(d.path());
    let init = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/generate/init.png");
    for (i, sampler) in SAMPLERS.iter().enumerate() {
        for mode in ["txt2img", "img2img"] {
            let out = format!("{i}_{mode}.png");
            let mut c = Command::new(env!("CARGO_BIN_EXE_sumi"));
            c.current_dir(d.path())
                .args([mode, "--model"])
                .arg(&m)
                .args([
                    "--prompt",
                    "a red apple",
                    "--seed",
                    "5",
                    "--sampler",
                    sampler,
                ])
                .args(["--steps", "6", "--width", "64", "--height", "64", "--quiet"])
                .args(["--output", &out]);
            if mode == "img2img" {
                c.arg("--init-image").arg(&init);
            }
            let o = c.output().unwrap();
            assert!(
                o.status.success(),
                "{sampler} {mode}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let info = Command::new(env!("CARGO_BIN_EXE_sumi"))
                .current_dir(d.path())
                .args(["png-info", &out])
                .output()
                .unwrap();
            let info = String::from_utf8_lossy(&info.stdout);
            assert!(
                info.contains(&format!("Sampler: {sampler},")),
                "{sampler} {mode}: {info}"
            );
        }
    }
}
