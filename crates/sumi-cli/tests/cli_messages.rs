//! Issue 18's CLI messages through the binary: a negative or out-of-range number reaches the
//! option's own limits (exit 2, naming the option and the range) instead of the argument
//! parser's "unexpected argument"; the step line is rewritten in place (`\r`) only on a
//! terminal, and a log gets one plain line per finished batch.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn sumi(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sumi"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn refused(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(!err.contains("unexpected argument"), "{err}");
}

#[test]
fn negative_numbers_reach_the_options_own_limits() {
    let d = tempfile::tempdir().unwrap();
    let m = sumi_testkit::tiny_model("sd1", d.path());
    let m = m.to_str().unwrap();
    let base = ["txt2img", "--model", m, "--prompt", "x"];
    for (extra, needle) in [
        (
            &["--steps", "-5"][..],
            "invalid value '-5' for '--steps <STEPS>': steps: -5 is outside 1..=500",
        ),
        (
            &["--width", "-64"],
            "'--width <WIDTH>': width: -64 is outside 64..=4096",
        ),
        (&["--batch-size", "0"], "batch-size: 0 is outside 1..=64"),
        (&["--clip-skip", "13"], "clip-skip: 13 is outside 1..=12"),
        (
            &["--hr-resize-x", "-1"],
            "hr-resize-x: -1 is outside 0..=4096",
        ),
        // a float reaches the pipeline's check
        (&["--cfg-scale", "-1"], "cfg-scale: -1 is outside 0..=100"),
        (
            &["--subseed-strength", "-0.5"],
            "subseed-strength: -0.5 is outside 0..=1",
        ),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        refused(&sumi(d.path(), &args), needle);
    }
    // seeds keep taking -1
    let o = sumi(
        d.path(),
        &[
            &base[..],
            &[
                "--seed", "-1", "--steps", "1", "--width", "64", "--height", "64",
            ],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_log_gets_a_line_per_batch_and_no_carriage_returns() {
    let d = tempfile::tempdir().unwrap();
    let m = sumi_testkit::tiny_model("sd1", d.path());
    let args = [
        "txt2img",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        "x",
        "--steps",
        "3",
        "--width",
        "64",
        "--height",
        "64",
        "--batch-count",
        "2",
        "--output",
        "o.png",
    ];
    let o = sumi(d.path(), &args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains('\r'), "{err:?}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("batch ")).collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with("batch 1/2  3 steps in "), "{err}");
    assert!(lines[1].starts_with("batch 2/2  3 steps in "), "{err}");
    // `3 steps in 0.6s  5.00it/s`: the speed is the 3 steps over their time (the first counted)
    for l in lines {
        let rest = l.split("3 steps in ").nth(1).unwrap();
        let (secs, speed) = rest.split_once("s  ").unwrap();
        let secs: f64 = secs.parse().unwrap();
        let per = match (speed.strip_suffix("it/s"), speed.strip_suffix("s/it")) {
            (Some(r), _) => 1.0 / r.parse::<f64>().unwrap(),
            (_, Some(p)) => p.parse().unwrap(),
            _ => panic!("no speed in {l}"),
        };
        // both are rounded (the time to 0.1 s, the speed to 2 digits)
        assert!((per * 3.0 - secs).abs() <= 0.05 + 0.02 * secs, "{l}");
    }
}

#[test]
fn infotext_keys_sumi_does_not_apply_are_named() {
    let d = tempfile::tempdir().unwrap();
    let m = sumi_testkit::tiny_model("sd1", d.path());
    let info = "a cat\nSteps: 2, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64, \
                ENSD: 31337, Eta: 1, Tiling: True, Face restoration: CodeFormer, Model: x";
    let o = sumi(
        d.path(),
        &[
            "txt2img",
            "--model",
            m.to_str().unwrap(),
            "--infotext",
            info,
            "--output",
            "o.png",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let warned: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(
        warned,
        [
            "warning: the infotext's `ENSD: 31337` is not applied: the picture may differ",
            "warning: the infotext's `Tiling: True` is not applied: the picture may differ",
            "warning: the infotext's `Face restoration: CodeFormer` is not applied: the picture \
             may differ",
        ],
        "{err}"
    );
}

#[test]
fn an_infotext_of_another_checkpoint_is_named() {
    let d = tempfile::tempdir().unwrap();
    let m = sumi_testkit::tiny_model("sd1", d.path());
    let m = m.to_str().unwrap();
    let run = |hash: &str, out: &str| {
        let info = format!("a cat\nSteps: 1, Seed: 1, Size: 64x64, Model hash: {hash}");
        let o = sumi(
            d.path(),
            &[
                "txt2img",
                "--model",
                m,
                "--infotext",
                &info,
                "--output",
                out,
            ],
        );
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        err.lines()
            .filter(|l| l.starts_with("warning:"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let warned = run("0123456789", "a.png");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].starts_with(
            "warning: the infotext was made with the checkpoint of hash 0123456789, not "
        ),
        "{warned:?}"
    );
    // the checkpoint's own hash (as its pictures record it): nothing to say
    let own = sumi_pipeline::png::read_parameters(&d.path().join("a.png"))
        .unwrap()
        .unwrap();
    let own = sumi_pipeline::infotext::parse_generation_parameters(&own);
    let hash = own.get("Model hash").unwrap().to_string();
    assert_eq!(hash.len(), 10);
    assert_eq!(run(&hash, "b.png"), Vec::<String>::new());
}

#[test]
fn output_into_a_missing_folder_needs_mkdir() {
    let d = tempfile::tempdir().unwrap();
    let m = sumi_testkit::tiny_model("sd1", d.path());
    let args = |out: &'static str, extra: &'static [&'static str]| {
        let mut a = vec![
            "txt2img",
            "--model",
            m.to_str().unwrap(),
            "--prompt",
            "x",
            "--steps",
            "1",
            "--width",
            "64",
            "--height",
            "64",
            "--quiet",
            "--output",
            out,
        ];
        a.extend(extra);
        sumi(d.path(), &a)
    };
    let o = args("typo/x.png", &[]);
    refused(
        &o,
        "--output typo/x.png: the folder typo does not exist; add --mkdir to create it",
    );
    assert!(!d.path().join("typo").exists());
    let o = args("made/x.png", &["--mkdir"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(d.path().join("made/x.png").is_file());
}

/// The commands `sumi --help` lists (clap's own list of the subcommands, so that a new command
/// is checked without being added here), `help` aside.
fn commands(help: &str) -> Vec<String> {
    let list = help.split("Commands:").nth(1).expect("a Commands section");
    list.lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // a wrapped description goes on deeper
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn help_shows_an_example_of_every_command() {
    let d = tempfile::tempdir().unwrap();
    let o = sumi(d.path(), &["--help"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    let commands = commands(&text);
    // the list was read (a new command joins it by itself)
    for known in ["txt2img", "img2img", "upscale", "worker"] {
        assert!(commands.iter().any(|c| c == known), "{known}: {commands:?}");
    }
    assert!(commands.len() >= 8, "{commands:?}");
    let examples = text.split("Examples:").nth(1).expect("an Examples section");
    for cmd in &commands {
        assert!(
            examples
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("sumi {cmd} "))),
            "no example of {cmd} in {examples}"
        );
    }
}
