//! Issue 14's CLI leftovers through the binary: FIFOs and devices given as inputs are refused
//! (exit 2, naming the option) instead of hanging, `png-info` reads bounded regular files only,
//! control characters from PNG text and prompts are printed escaped, a closed stdout ends the
//! command quietly, two runs writing into one output folder both keep every image, and outputs
//! honour the umask.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn sumi(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sumi"));
    c.current_dir(dir).stdin(Stdio::null());
    c
}

/// Runs `c`, killing it (and failing the test) if it takes more than 60 s.
fn run(mut c: Command) -> Output {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("{c:?} hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn refused(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().unwrap();
    assert!(st.success());
}

fn png_with(dir: &Path, name: &str, parameters: &str) -> PathBuf {
    let img = image::RgbImage::from_pixel(8, 8, image::Rgb([10, 20, 30]));
    let bytes = sumi_pipeline::png::encode_png(&img, Some(parameters)).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

const FAST: &[&str] = &["--steps", "2", "--width", "64", "--height", "64", "--quiet"];

#[test]
fn fifos_and_devices_are_refused_not_waited_on() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let m = sumi_testkit::tiny_model("sd1", dir);
    let init = png_with(dir, "init.png", "x");
    let fifo = dir.join("fifo.safetensors");
    mkfifo(&fifo);
    let emb = dir.join("emb");
    std::fs::create_dir_all(emb.join("sub")).unwrap();
    mkfifo(&emb.join("sub/trap.pt"));
    let refusal = |what: &str| format!("{what} {}: a FIFO, refused", fifo.display());
    let gen = |verb: &str, extra: &[&std::ffi::OsStr]| {
        let mut c = sumi(dir);
        c.arg(verb).args(FAST).args(extra);
        run(c)
    };
    let (mo, m, f) = (
        std::ffi::OsStr::new("--model"),
        m.as_os_str(),
        fifo.as_os_str(),
    );
    let o = gen("txt2img", &[mo, f]);
    refused(&o, &refusal("--model"));
    let o = gen("txt2img", &[mo, m, "--vae".as_ref(), f]);
    refused(&o, &refusal("--vae"));
    let o = gen("txt2img", &[mo, m, "--taesd-decoder".as_ref(), f]);
    refused(&o, &refusal("--taesd-decoder"));
    let o = gen("txt2img", &[mo, m, "--from-png".as_ref(), f]);
    refused(&o, &refusal("--from-png"));
    let o = gen(
        "txt2img",
        &[mo, m, "--embeddings".as_ref(), emb.as_os_str()],
    );
    refused(&o, "sub/trap.pt is a FIFO, refused");
    let o = gen("img2img", &[mo, m, "--init-image".as_ref(), f]);
    refused(&o, &refusal("--init-image"));
    let i = init.as_os_str();
    let o = gen(
        "img2img",
        &[mo, m, "--init-image".as_ref(), i, "--mask".as_ref(), f],
    );
    refused(&o, &refusal("--mask"));
    // a FIFO as a checkpoint's sibling config
    let cfg = dir.join("tiny_sd1.yaml");
    mkfifo(&cfg);
    let o = gen("txt2img", &[mo, m]);
    refused(&o, &format!("--model's config {}: a FIFO", cfg.display()));
    std::fs::remove_file(&cfg).unwrap();
    for args in [
        vec!["model-info".as_ref(), f],
        vec!["png-info".as_ref(), f],
        vec!["prompt".as_ref(), mo, f, "x".as_ref()],
        vec![
            "prompt".as_ref(),
            "--embeddings".as_ref(),
            emb.as_os_str(),
            "x".as_ref(),
        ],
    ] {
        let mut c = sumi(dir);
        c.args(&args);
        let o = run(c);
        refused(&o, "a FIFO, refused");
    }
    // a FIFO inside a diffusers folder given as the model
    let unet_fifo = dir.join("diffusers/unet/trap.safetensors");
    mkfifo(&unet_fifo);
    let mut c = sumi(dir);
    c.arg("model-info").arg(dir.join("diffusers"));
    refused(
        &run(c),
        &format!("{} is a FIFO, refused", unet_fifo.display()),
    );
    // and nothing was written meanwhile
    assert!(!dir.join("outputs").exists());
}

#[test]
fn png_info_reads_only_bounded_regular_files() {
    let d = tempfile::tempdir().unwrap();
    let mut c = sumi(d.path());
    c.args(["png-info", "/dev/zero"]);
    refused(&run(c), "png-info /dev/zero: a device, refused");
    // a sparse file one byte over the 256 MiB limit
    let big = d.path().join("big.png");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len((256 << 20) + 1).unwrap();
    let mut c = sumi(d.path());
    c.arg("png-info").arg(&big);
    refused(
        &run(c),
        "268435457 bytes, more than the 268435456-byte limit",
    );
}

#[test]
fn control_characters_are_printed_escaped() {
    let d = tempfile::tempdir().unwrap();
    let text = "a cat\x1b]0;owned\x07 \x1b[2J\u{9b}31m\r\nSteps: 20, Seed: 1";
    let p = png_with(d.path(), "ctl.png", text);
    let mut c = sumi(d.path());
    c.arg("png-info").arg(&p);
    let o = run(c);
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        out,
        "a cat\\u001b]0;owned\\u0007 \\u001b[2J\\u009b31m\\u000d\nSteps: 20, Seed: 1\n"
    );
    // --json: serde escapes C0, the C1 control is escaped as JSON spells it
    let mut c = sumi(d.path());
    c.arg("png-info").arg("--json").arg(&p);
    let o = run(c);
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let prompt = v["Prompt"].as_str().unwrap();
    assert!(
        prompt.starts_with("a cat\x1b]0;owned\x07 \x1b[2J\u{9b}31m"),
        "{prompt:?}"
    );
    // prompts as `sumi prompt` shows them
    let mut c = sumi(d.path());
    c.args(["prompt", "--", "red\x1b]0;x\x07cat <lora:a\x1b[8mb:1>"]);
    let o = run(c);
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("extra network <lora:a\\u001b[8mb:1>\n"),
        "{out}"
    );
    assert!(out.contains("chunk 1: red \\u001b"), "{out}");
    assert!(out.contains(" x \\u0007 cat\n"), "{out}");
    assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let d = tempfile::tempdir().unwrap();
    let p = png_with(d.path(), "x.png", "a cat\nSteps: 20, Seed: 1");
    for args in [
        vec!["png-info".to_string(), p.display().to_string()],
        vec!["prompt".to_string(), "a (red:1.2) cat".to_string()],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = sumi(d.path())
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert_eq!(err, "", "{args:?}");
    }
}

#[test]
fn two_runs_in_one_output_folder_keep_every_image_with_the_umask() {
    let d = tempfile::tempdir().unwrap();
    let m = sumi_testkit::tiny_model("sd1", d.path());
    let start = |seed: &str, umask: &str| {
        Command::new("sh")
            .current_dir(d.path())
            .arg("-c")
            .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_sumi"))
            .args(["txt2img", "--model"])
            .arg(&m)
            .args(FAST)
            .args(["--batch-size", "3", "--seed", seed])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // both plan the same numbers (00000-00002) before either writes
    let (a, b) = (start("1", "022"), start("2", "022"));
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 3);
    }
    let mut names: Vec<String> = std::fs::read_dir(d.path().join("outputs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "00000.png",
            "00001.png",
            "00002.png",
            "00003.png",
            "00004.png",
            "00005.png"
        ]
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |n: &str| {
        std::fs::metadata(d.path().join("outputs").join(n))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert!(names.iter().all(|n| mode(n) == 0o644));
    let o = start("3", "027").wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(mode("00008.png"), 0o640);
}
