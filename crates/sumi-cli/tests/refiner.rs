//! `--refiner`, `--refiner-switch-at` and `--hr-checkpoint` on the tiny models: the infotext
//! keys are written and `--from-png` finds the refiner beside the model by the name it records
//! and reproduces the picture; bad input exits with code 2 and a message naming the option (an
//! unknown refiner lists the checkpoints beside the model).

use std::path::Path;
use std::process::{Command, Output};

fn sumi(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sumi"));
    c.current_dir(dir);
    c
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(o: Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr {err}");
    for n in needles {
        assert!(err.contains(n), "expected `{n}` in: {err}");
    }
}

const FAST: &[&str] = &[
    "--steps", "3", "--width", "64", "--height", "64", "--seed", "5", "--quiet",
];

#[test]
fn the_refiner_is_recorded_and_found_again_by_name() {
    let d = tempfile::tempdir().unwrap();
    let m = sumi_testkit::tiny_model("sd1", d.path());
    sumi_testkit::tiny_model("sd2-v", d.path());
    ok(sumi(d.path())
        .args(["txt2img", "--model"])
        .arg(&m)
        .args(["--prompt", "a cat", "--sampler", "Euler"])
        .args(["--refiner", "tiny_sd2-v", "--refiner-switch-at", "0.5"])
        .args(["--output", "r.png"])
        .args(FAST)
        .output()
        .unwrap());
    let info = ok(sumi(d.path()).args(["png-info", "r.png"]).output().unwrap());
    assert!(
        info.contains("Refiner: tiny_sd2-v [") && info.contains("Refiner switch at: 0.5"),
        "{info}"
    );
    let o = sumi(d.path())
        .args(["txt2img", "--model"])
        .arg(&m)
        .args(["--from-png", "r.png", "--output", "again.png", "--quiet"])
        .output()
        .unwrap();
    ok(o.clone());
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let a = image::open(d.path().join("r.png")).unwrap().to_rgb8();
    let b = image::open(d.path().join("again.png")).unwrap().to_rgb8();
    assert_eq!(a.as_raw(), b.as_raw());
    // the plain picture differs: the refiner ran
    ok(sumi(d.path())
        .args(["txt2img", "--model"])
        .arg(&m)
        .args(["--prompt", "a cat", "--sampler", "Euler"])
        .args(["--output", "plain.png"])
        .args(FAST)
        .output()
        .unwrap());
    let p = image::open(d.path().join("plain.png")).unwrap().to_rgb8();
    assert_ne!(a.as_raw(), p.as_raw());
    // the hires pass on a checkpoint of its own
    ok(sumi(d.path())
        .args(["txt2img", "--model"])
        .arg(&m)
        .args(["--prompt", "a cat", "--hr-scale", "1.5"])
        .args(["--hr-checkpoint", "tiny_sd2-v", "--output", "hr.png"])
        .args(FAST)
        .output()
        .unwrap());
    let info = ok(sumi(d.path())
        .args(["png-info", "hr.png"])
        .output()
        .unwrap());
    assert!(info.contains("Hires checkpoint: tiny_sd2-v ["), "{info}");
}

#[test]
fn bad_refiners_exit_2_naming_the_option() {
    let d = tempfile::tempdir().unwrap();
    let m = sumi_testkit::tiny_model("sd1", d.path());
    sumi_testkit::tiny_model("sdxl-refiner", d.path());
    let run = |args: &[&str]| {
        sumi(d.path())
            .args(["txt2img", "--model"])
            .arg(&m)
            .args(args)
            .args(FAST)
            .output()
            .unwrap()
    };
    fails(
        run(&["--refiner", "no_such_model"]),
        &[
            "--refiner no_such_model: no such file",
            "tiny_sdxl-refiner.safetensors",
        ],
    );
    fails(
        run(&[
            "--refiner",
            "tiny_sdxl-refiner",
            "--refiner-switch-at",
            "1.5",
        ]),
        &["refiner-switch-at", "1.5 is outside (0, 1]"],
    );
    fails(
        run(&["--refiner-switch-at", "0.5"]),
        &["--refiner-switch-at: no --refiner given"],
    );
    fails(
        run(&["--hr-checkpoint", "tiny_sdxl-refiner"]),
        &["hr-checkpoint", "needs the hires fix"],
    );
    // an SDXL refiner as the model
    let r = d.path().join("tiny_sdxl-refiner.safetensors");
    let o = sumi(d.path())
        .args(["txt2img", "--model"])
        .arg(&r)
        .args(FAST)
        .output()
        .unwrap();
    fails(o, &["an SDXL refiner", "--refiner"]);
}
