//! `sumi prompt`: A1111's reading through the binary, refusals, embeddings, and the encoding
//! with a model (the tiny fixture checkpoints).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn sumi() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sumi"))
}

fn root() -> PathBuf {
    sumi_testkit::repo_root()
}

fn embeddings() -> PathBuf {
    root().join("fixtures/embeddings")
}

fn model(arch: &str, dir: &Path) -> PathBuf {
    sumi_testkit::tiny_model(arch, dir)
}

fn run(args: &[&str], prompt: &str) -> Output {
    sumi()
        .arg("prompt")
        .args(args)
        .arg("--")
        .arg(prompt)
        .output()
        .unwrap()
}

fn json(args: &[&str], prompt: &str) -> Value {
    let out = run(&[args, &["--json"]].concat(), prompt);
    assert!(
        out.status.success(),
        "{prompt:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The object A1111's reading gives (the issue's keys; `sumi prompt` adds more).
fn reading(v: &Value) -> Value {
    serde_json::json!({"extra_networks": v["extra_networks"], "subprompts": v["subprompts"]})
}

#[test]
fn json_is_the_a1111_reading() {
    let v = json(
        &["--steps", "3"],
        "<lora:x:0.5>a [b:c:2] (d:1.5) BREAK e AND f:0.5",
    );
    let want = r#"{"extra_networks":[{"args":["x","0.5"],"name":"lora"}],"subprompts":[{"schedule":[{"attention":[["a b ",1.0],["d",1.5],["",1.0],["BREAK",-1],["e",1.0]],"end_step":2,"text":"a b (d:1.5) BREAK e"},{"attention":[["a c ",1.0],["d",1.5],["",1.0],["BREAK",-1],["e",1.0]],"end_step":3,"text":"a c (d:1.5) BREAK e"}],"text":"a [b:c:2] (d:1.5) BREAK e","weight":1.0},{"schedule":[{"attention":[[" f",1.0]],"end_step":3,"text":" f"}],"text":" f","weight":0.5}]}"#;
    assert_eq!(reading(&v).to_string(), want);
    assert_eq!(
        v["token_counter"],
        serde_json::json!({"tokens": 76, "max": 150})
    );
}

#[test]
fn a1111_fixture_cases_through_the_binary() {
    let fx: Value = serde_json::from_str(include_str!(
        "../../sumi-prompt/tests/fixtures/a1111_prompts.json"
    ))
    .unwrap();
    let mut checked = 0;
    let mut refused = 0;
    for case in fx["cases"].as_array().unwrap().iter().take(150) {
        let (Some(expected), Some(prompt)) = (case.get("expected"), case["prompt"].as_str()) else {
            continue;
        };
        if case.get("hires_steps").is_some()
            || case.get("old_scheduling").is_some()
            || prompt.contains('\0')
        {
            continue;
        }
        let steps = case["steps"].to_string();
        let out = run(&["--steps", &steps, "--json"], prompt);
        match expected.get("error").and_then(Value::as_str) {
            Some(kind) => {
                assert!(!out.status.success(), "{prompt:?} was accepted");
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains(kind), "{prompt:?}: {err}");
                refused += 1;
            }
            None => {
                assert!(
                    out.status.success(),
                    "{prompt:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let got: Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(&reading(&got), expected, "{prompt:?} @ {steps}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 100 && refused >= 2, "{checked} {refused}");
}

#[test]
fn refused_prompts_exit_non_zero_with_the_place() {
    let out = run(&[], "a (cat:1.2.3) on a hill");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("column 8: `1.2.3`"), "{err}");
    assert!(err.contains("ValueError"), "{err}");
    assert!(out.stdout.is_empty());
    let out = run(&["--steps", "0"], "a [b:c:0.5]");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("steps must be at least 1"));
    let out = run(&["--emphasis", "loud"], "a");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown emphasis mode"));
    let out = run(&["--model", "/nonexistent/model.safetensors"], "a");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model.safetensors"));
}

#[test]
fn human_output_shows_chunks_counter_and_embeddings() {
    let emb = embeddings();
    let long = "red, ".repeat(40);
    let out = run(
        &["--steps", "4", "--embeddings", emb.to_str().unwrap()],
        &format!("{long} [cat:dog:2] in tinyemb style BREAK (tinypt:1.2)"),
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "prompt read for 4 steps\n",
        "embeddings loaded: tinyconcept, tinydict, tinyemb, tinypt, wide\n",
        "evil.pt: refused to load",
        "  steps 1-2: \"red, ",
        "    tokens 152/225 in 3 chunk(s)\n",
        "embedding \"tinyemb\" at ",
        "embedding \"tinypt\" at 0 (2 vectors)",
        "token counter 152/225\n",
        "embeddings found: tinyemb (3 vectors, ",
        "tinypt (2 vectors, ",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn negative_prompts_are_read_whole() {
    let v = json(&["--negative"], "<lora:x:1> lowres AND text");
    assert_eq!(v["extra_networks"], serde_json::json!([]));
    assert_eq!(v["subprompts"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["subprompts"][0]["schedule"][0]["text"],
        "<lora:x:1> lowres AND text"
    );
}

#[test]
fn with_a_model_the_prompt_is_encoded() {
    let d = tempfile::tempdir().unwrap();
    let emb = embeddings();
    let sd1 = model("sd1", d.path());
    let v = json(
        &[
            "--steps",
            "10",
            "--model",
            sd1.to_str().unwrap(),
            "--embeddings",
            emb.to_str().unwrap(),
            "--clip-skip",
            "2",
        ],
        "a [cat:dog:0.5] in tinyemb style BREAK b AND c:0.5",
    );
    let c = &v["conditioning"];
    assert_eq!(c["architecture"], "sd1");
    assert_eq!(c["clip_skip"], 2);
    assert_eq!(c["emphasis"], "Original");
    let want = serde_json::json!([
        {"weight": 1.0, "schedule": [{"end_step": 5, "shape": [154, 64]}, {"end_step": 10, "shape": [154, 64]}]},
        {"weight": 0.5, "schedule": [{"end_step": 10, "shape": [77, 64]}]},
    ]);
    assert_eq!(c["parts"], want);
    // the model's width (64) rules out the 768-wide file
    assert_eq!(v["embeddings"][0]["name"], "tinyemb", "{}", v["embeddings"]);
    // A1111's TI hash: the first 12 hex digits of the file's sha256
    let hash = sumi_weights::sha256_file(&emb.join("tinyemb.safetensors")).unwrap();
    assert_eq!(v["embeddings"][0]["hash"], hash.sha256[..12]);
    let skipped = v["skipped_embeddings"].to_string();
    assert!(skipped.contains("wide.safetensors"), "{skipped}");
    assert!(skipped.contains("768 wide"), "{skipped}");

    // SD2 reads its penultimate layer whatever CLIP skip says
    let d2 = tempfile::tempdir().unwrap();
    let sd2 = model("sd2-v", d2.path());
    let v = json(
        &["--model", sd2.to_str().unwrap(), "--clip-skip", "2"],
        "a cat",
    );
    assert_eq!(v["conditioning"]["architecture"], "sd2-v");
    assert_eq!(v["conditioning"]["clip_skip"], 1);
    let out = run(
        &["--model", sd2.to_str().unwrap(), "--emphasis", "No norm"],
        "a (cat:1.2)",
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("conditioning (sd2-v, emphasis No norm, CLIP skip 1):\n  part 1 (weight 1) steps 1-20: 77×64\n"),
        "{text}"
    );
}
