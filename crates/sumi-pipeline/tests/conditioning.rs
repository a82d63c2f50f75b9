//! Conditioning tensors against a Python reference that follows A1111's `sd_hijack_clip.py`,
//! `sd_emphasis.py`, `sd_hijack.EmbeddingsWithFixes` and `prompt_parser.py` on the tiny SD1 and
//! SD2-v text encoders: emphasis modes, CLIP skip, several chunks, BREAK, embeddings in every
//! file format, prompt editing, alternation, AND, negatives.
//! Fixtures: tools/reference/make_conditioning_fixtures.py.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sumi_pipeline::conditioning::{
    cond_at, ConditioningOptions, Emphasis, ScheduledCond, TextEncoder,
};
use sumi_pipeline::{Checkpoint, PipelineError};
use sumi_prompt::Timeline;
use sumi_weights::embedding::{Embedding, EmbeddingDir};

/// max |a - b| / max(1, max |b|), as the model parity tests.
const TOL: f64 = 1e-5;

fn root() -> PathBuf {
    sumi_testkit::repo_root()
}

fn checkpoint(arch: &str, dir: &Path) -> Checkpoint {
    Checkpoint::open(&sumi_testkit::tiny_model(arch, dir), None).unwrap()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    sumi_testkit::rel_err_floor(a, b, 1.0)
}

fn embeddings() -> Vec<Embedding> {
    EmbeddingDir::load(&root().join("fixtures/embeddings"), Some(64))
        .unwrap()
        .loaded
}

fn parity(arch: &str) {
    let cases = sumi_testkit::Cases::<serde_json::Value>::load(
        &root().join("fixtures/conditioning/cases.json"),
        "/cases",
    )
    .and_then(|c| c.at_least(20))
    .unwrap();
    let want: HashMap<String, Tensor> = sumi_testkit::fixture::tensors(
        &root().join("fixtures/conditioning/conditioning.safetensors"),
    )
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    let ck = checkpoint(arch, d.path());
    let clip = ck.clip(DType::F32, &Device::Cpu).unwrap();
    let embs = embeddings();
    let mut n = 0;
    let mut worst = 0f64;
    for (i, case) in cases.iter().enumerate() {
        if case["arch"] != arch {
            continue;
        }
        let opts = ConditioningOptions {
            emphasis: case["emphasis"].as_str().unwrap().parse().unwrap(),
            clip_skip: case["clip_skip"].as_u64().unwrap() as usize,
            ..Default::default()
        };
        let enc = TextEncoder::new(&clip, &Device::Cpu, &ck.facts, &embs, opts).unwrap();
        let prompt = case["prompt"].as_str().unwrap();
        let tl = Timeline::new(case["steps"].as_u64().unwrap() as u32);
        let got: Vec<(f64, Vec<ScheduledCond>)> = if case["negative"].as_bool().unwrap() {
            vec![(1.0, enc.negative(prompt, &tl).unwrap())]
        } else {
            enc.prompt(prompt, &tl)
                .unwrap()
                .parts
                .into_iter()
                .map(|p| (p.weight, p.schedule))
                .collect()
        };
        let parts = case["parts"].as_array().unwrap();
        assert_eq!(got.len(), parts.len(), "case {i}: {prompt:?}");
        for (j, ((w, sched), part)) in got.iter().zip(parts).enumerate() {
            assert_eq!(*w, part["weight"].as_f64().unwrap(), "case {i} part {j}");
            let entries = part["schedule"].as_array().unwrap();
            assert_eq!(sched.len(), entries.len(), "case {i} part {j}");
            for (k, (s, e)) in sched.iter().zip(entries).enumerate() {
                assert_eq!(s.end_step as u64, e["end_step"].as_u64().unwrap());
                let r = &want[e["tensor"].as_str().unwrap()];
                let err = rel_err(&s.cond, r);
                assert!(
                    err < TOL,
                    "case {i} ({} skip {}) part {j} entry {k}: {err:e}\n{prompt:?}",
                    case["emphasis"],
                    case["clip_skip"]
                );
                worst = worst.max(err);
                n += 1;
            }
        }
    }
    println!("{arch}: {n} conds, worst relative error {worst:.2e}");
    assert!(n > 0);
}

#[test]
fn sd1_matches_a1111() {
    parity("sd1");
}

#[test]
fn sd2_matches_a1111() {
    parity("sd2-v");
}

#[test]
fn schedules_and_and_parts_at_a_step() {
    let d = tempfile::tempdir().unwrap();
    let ck = checkpoint("sd1", d.path());
    let clip = ck.clip(DType::F32, &Device::Cpu).unwrap();
    let enc = TextEncoder::new(&clip, &Device::Cpu, &ck.facts, &[], Default::default()).unwrap();
    let long = "red (flower:1.2), ".repeat(30);
    let m = enc
        .prompt(
            &format!("[{long}:short:3] AND a cat:0.5"),
            &Timeline::new(10),
        )
        .unwrap();
    let ends: Vec<u32> = m.parts[0].schedule.iter().map(|e| e.end_step).collect();
    assert_eq!(ends, [3, 10]);
    // A1111's reconstruct_cond_batch: the first entry with step <= end_step; past the end,
    // the first entry again
    let s = &m.parts[0].schedule;
    for (step, want) in [(0, 0), (3, 0), (4, 1), (10, 1), (11, 0)] {
        let got = cond_at(s, step).unwrap();
        assert_eq!(rel_err(got, &s[want].cond), 0.0, "step {step}");
    }
    // both schedule texts were encoded together: the short one padded to two chunks
    assert_eq!(s[1].cond.dims(), [154, 64]);
    // AND parts of different lengths stacked as stack_conds: the last vector repeated
    let (weights, stacked) = m.at_step(5).unwrap();
    assert_eq!(weights, [1.0, 0.5]);
    assert_eq!(stacked.dims(), [2, 154, 64]);
    let cat = &m.parts[1].schedule[0].cond;
    assert_eq!(cat.dims(), [77, 64]);
    let row = stacked.get(1).unwrap();
    assert_eq!(rel_err(&row.narrow(0, 0, 77).unwrap(), cat), 0.0);
    let last = cat.narrow(0, 76, 1).unwrap().repeat((77, 1)).unwrap();
    assert_eq!(rel_err(&row.narrow(0, 77, 77).unwrap(), &last), 0.0);

    // "Original" restores the mean of the whole batch (every schedule text's chunk), so a
    // scheduled text's cond is not the one it gets encoded alone (the parity fixtures pin the
    // batched value)
    let m = enc
        .prompt("a [cat:dog:0.5] on a (hill:1.2)", &Timeline::new(10))
        .unwrap();
    let alone = enc.encode_texts(&["a cat on a (hill:1.2)"]).unwrap();
    let batched = &m.parts[0].schedule[0].cond;
    let e = rel_err(batched, &alone.get(0).unwrap());
    println!("batched vs alone: {e:e}");
    assert!(e > 1e-4, "{e:e}");
    // without emphasis weights the batch does not matter
    let m = enc
        .prompt("a [cat:dog:0.5] on a hill", &Timeline::new(10))
        .unwrap();
    let alone = enc.encode_texts(&["a cat on a hill"]).unwrap();
    assert!(rel_err(&m.parts[0].schedule[0].cond, &alone.get(0).unwrap()) < 1e-6);
}

#[test]
fn options_and_embeddings_are_checked() {
    let d = tempfile::tempdir().unwrap();
    let ck = checkpoint("sd1", d.path());
    let clip = ck.clip(DType::F32, &Device::Cpu).unwrap();
    let wide = Embedding::load(&root().join("fixtures/embeddings/wide.safetensors")).unwrap();
    let err = TextEncoder::new(&clip, &Device::Cpu, &ck.facts, &[wide], Default::default())
        .err()
        .unwrap();
    assert!(
        matches!(err, PipelineError::Embedding(_)) && err.to_string().contains("wide.safetensors"),
        "{err}"
    );
    for skip in [0, 4] {
        let opts = ConditioningOptions {
            clip_skip: skip,
            ..Default::default()
        };
        let err = TextEncoder::new(&clip, &Device::Cpu, &ck.facts, &[], opts)
            .err()
            .unwrap();
        assert!(err.to_string().contains("CLIP skip"), "{err}");
    }
    for (name, want) in [
        ("Original", Emphasis::Original),
        ("No norm", Emphasis::NoNorm),
        ("no-norm", Emphasis::NoNorm),
        ("ignore", Emphasis::Ignore),
        ("None", Emphasis::None),
    ] {
        assert_eq!(name.parse::<Emphasis>().unwrap(), want);
    }
    assert!("strong".parse::<Emphasis>().is_err());
    // a prompt A1111 refuses
    let enc = TextEncoder::new(&clip, &Device::Cpu, &ck.facts, &[], Default::default()).unwrap();
    let err = enc.prompt("a (cat:1.2.3)", &Timeline::new(5)).unwrap_err();
    assert!(matches!(err, PipelineError::Prompt(_)), "{err}");
    // ... but not with emphasis "None", which never parses brackets
    let opts = ConditioningOptions {
        emphasis: Emphasis::None,
        ..Default::default()
    };
    let enc = TextEncoder::new(&clip, &Device::Cpu, &ck.facts, &[], opts).unwrap();
    assert!(enc.prompt("a (cat:1.2.3)", &Timeline::new(5)).is_ok());
}

#[test]
fn embeddings_are_found_in_prompts() {
    let d = tempfile::tempdir().unwrap();
    let ck = checkpoint("sd1", d.path());
    let clip = ck.clip(DType::F32, &Device::Cpu).unwrap();
    let embs = embeddings();
    let enc = TextEncoder::new(&clip, &Device::Cpu, &ck.facts, &embs, Default::default()).unwrap();
    let c = enc
        .chunks("a portrait in tinyemb style, (tinypt:1.2), [tinydict] and tinyconcept")
        .unwrap();
    let fixes: Vec<(usize, &str, usize)> = c.chunks[0]
        .fixes
        .iter()
        .map(|f| (f.offset, f.name.as_str(), f.vectors))
        .collect();
    assert_eq!(
        fixes,
        [
            (3, "tinyemb", 3),
            (8, "tinypt", 2),
            (11, "tinydict", 2),
            (14, "tinyconcept", 1)
        ]
    );
    let names = enc
        .embeddings_in(
            "[tinypt:tinyemb:3] AND (tinyconcept) x tinypt",
            &Timeline::new(6),
            false,
        )
        .unwrap();
    assert_eq!(names, ["tinypt", "tinyemb", "tinyconcept"]);
    // the vectors differ from the words' own embeddings: the conds differ
    let with = enc.encode_texts(&["tinyemb"]).unwrap();
    let enc0 = TextEncoder::new(&clip, &Device::Cpu, &ck.facts, &[], Default::default()).unwrap();
    let without = enc0.encode_texts(&["tinyemb"]).unwrap();
    assert!(rel_err(&with, &without) > 1e-2);
}
