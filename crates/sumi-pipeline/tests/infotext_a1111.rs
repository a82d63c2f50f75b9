//! Infotext against A1111 v1.10.1: the expected texts in `fixtures/pipeline/infotext/` were
//! derived by hand from `create_infotext` (the `generation_params` order, `quote`, Python's
//! `str()` of ints and floats) and joined by the same expressions in
//! `tools/reference/make_pipeline_fixtures.py`. Writing must give them byte for byte; parsing
//! must give the settings back and writing the parse must give the text back.

use std::path::Path;

use sumi_pipeline::infotext::{
    json_dumps, parse_generation_parameters, py_float_repr, quote, Infotext, Number,
};

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/pipeline/infotext")
        .join(format!("{name}.txt"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn base(prompt: &str, negative: &str, seed: i64) -> Infotext {
    Infotext {
        prompt: prompt.into(),
        negative_prompt: negative.into(),
        steps: 20,
        sampler: "DPM++ 2M".into(),
        schedule_type: "Karras".into(),
        cfg_scale: Number::Int(7),
        seed,
        version: Some("v1.10.1".into()),
        ..Infotext::default()
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The settings of every fixture; `true` where parse → write must give the text back.
fn cases() -> Vec<(&'static str, Infotext, bool)> {
    vec![
        (
            "01_txt2img_basic",
            Infotext {
                model_hash: s("6ce0161689"),
                model: s("v1-5-pruned-emaonly"),
                ..base("a photo of a cat", "blurry, lowres", 1234)
            },
            true,
        ),
        (
            "02_img2img_cpu_rng",
            Infotext {
                steps: 30,
                sampler: "Euler a".into(),
                schedule_type: "Automatic".into(),
                cfg_scale: Number::Float(7.5),
                height: 768,
                model_hash: s("0123456789"),
                model: s("anything-v5"),
                denoising_strength: Some(Number::Float(0.7)),
                rng: "CPU".into(),
                ..base("anime girl, masterpiece", "", 42)
            },
            true,
        ),
        (
            "03_clip_skip_nv",
            Infotext {
                steps: 25,
                sampler: "DPM++ SDE".into(),
                cfg_scale: Number::Int(6),
                width: 768,
                model: s("sd2"),
                clip_skip: 2,
                rng: "NV".into(),
                version: None,
                ..base("landscape", "people", 3_000_000_000)
            },
            true,
        ),
        (
            "04_variation_seed",
            Infotext {
                sampler: "Euler".into(),
                schedule_type: "Automatic".into(),
                model_hash: s("abcdef0123"),
                model: s("model"),
                variation: Some((77, Number::Float(0.3))),
                seed_resize_from: Some((640, 384)),
                ..base("a castle", "", 100)
            },
            true,
        ),
        (
            "05_quoted_model_vae",
            Infotext {
                model_hash: s("1111111111"),
                model: s("my, model:v2"),
                vae_hash: s("c6a580b13a"),
                vae: s("vae-ft-mse-840000-ema-pruned.safetensors"),
                ..base("portrait", "bad hands", 5)
            },
            true,
        ),
        (
            "06_multiline",
            base("line one\nline two, (detail:1.2)", "ugly\nbad anatomy", 9),
            true,
        ),
        (
            "07_empty_prompt",
            Infotext {
                sampler: "Euler a".into(),
                schedule_type: "Automatic".into(),
                ..base("", "lowres", 1)
            },
            true,
        ),
        (
            "08_api_floats",
            Infotext {
                steps: 1,
                sampler: "DPM++ 2M SDE".into(),
                schedule_type: "Exponential".into(),
                cfg_scale: Number::Float(7.0),
                width: 500,
                height: 333,
                variation: Some((0, Number::Float(1e-5))),
                denoising_strength: Some(Number::Float(1.0)),
                version: None,
                ..base("x", "", 0)
            },
            true,
        ),
        (
            "09_extra_params",
            Infotext {
                model_hash: s("2222222222"),
                model: s("m"),
                other: pairs(&[
                    ("ENSD", "31337"),
                    (
                        "TI hashes",
                        "easynegative: c74b4e810b03, verybad: 1234567890ab",
                    ),
                    ("Emphasis", "No norm"),
                ]),
                ..base("<lora:x:1>, girl", "", 7)
            },
            true,
        ),
        (
            "10_json_escapes",
            Infotext {
                model: s("a \"quoted\", back\\slash\ttab"),
                vae: s("모델:v1"),
                other: pairs(&[("Note", "esc\u{1b}, ok")]),
                ..base("unicode \u{2603} prompt", "", 11)
            },
            true,
        ),
        (
            "11_strip_and_bare_key",
            Infotext {
                sampler: "Euler".into(),
                schedule_type: "Automatic".into(),
                other: pairs(&[("Hires fix", "Hires fix")]),
                ..base("  hello  ", "", 12)
            },
            false,
        ),
        (
            "12_extreme_numbers",
            Infotext {
                steps: 150,
                cfg_scale: Number::Float(1e16),
                width: 2048,
                height: 64,
                variation: Some((1, Number::Float(0.1 + 0.2))),
                denoising_strength: Some(Number::Float(0.0001)),
                clip_skip: 12,
                version: None,
                ..base("big", "", 4_294_967_295)
            },
            true,
        ),
    ]
}

#[test]
fn writes_a1111_text_byte_for_byte() {
    let cases = cases();
    assert_eq!(cases.len(), 12);
    for (name, it, _) in &cases {
        assert_eq!(it.to_string(), fixture(name), "{name}");
    }
}

#[test]
fn parse_gives_the_settings_back() {
    for (name, it, round_trips) in cases() {
        if !round_trips {
            continue;
        }
        let parsed = Infotext::parse(&fixture(name)).expect("parses");
        assert_eq!(parsed, it, "{name}");
    }
}

#[test]
fn parse_then_write_round_trips() {
    for (name, _, round_trips) in cases() {
        if !round_trips {
            continue;
        }
        let text = fixture(name);
        assert_eq!(
            Infotext::parse(&text).expect("parses").to_string(),
            text,
            "{name}"
        );
    }
}

#[test]
fn slotted_extra_keys_keep_a1111s_order() {
    // ENSD has a slot of its own (after Clip skip); the extras follow Tiling, before Version.
    let mut it = cases().remove(8).1;
    it.other.rotate_left(1);
    assert_eq!(it.other[0].0, "TI hashes");
    assert_eq!(it.to_string(), fixture("09_extra_params"));
}

#[test]
fn stripping_and_bare_keys_are_lossy_as_in_a1111() {
    let text = fixture("11_strip_and_bare_key");
    let p = Infotext::parse(&text).expect("parses");
    assert_eq!(p.prompt, "hello");
    assert!(p.other.is_empty(), "a bare key is not a `key: value` pair");
}

#[test]
fn a1111_parse_map() {
    let p = parse_generation_parameters(&fixture("01_txt2img_basic"));
    assert_eq!(p.prompt, "a photo of a cat");
    assert_eq!(p.negative_prompt, "blurry, lowres");
    let keys: Vec<&str> = p.entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "Steps",
            "Sampler",
            "Schedule type",
            "CFG scale",
            "Seed",
            "Size-1",
            "Size-2",
            "Model hash",
            "Model",
            "Version"
        ]
    );
    assert_eq!(p.get("Size-2"), Some("512"));
    let d = p.with_a1111_defaults();
    assert_eq!(d.get("Clip skip"), Some("1"));
    assert_eq!(d.get("RNG"), Some("GPU"));
    assert_eq!(d.get("Schedule type"), Some("Karras"));
    assert_eq!(d.get("Hires resize-1"), Some("0"));
    assert_eq!(d.get("FP8 weight"), Some("Disable"));
    assert_eq!(d.get("Cache FP16 weight for LoRA"), None);

    let json: serde_json::Value = serde_json::from_str(&p.to_json()).expect("valid JSON");
    assert_eq!(json["Prompt"], "a photo of a cat");
    assert_eq!(json["Size-1"], "512");
    assert_eq!(json.as_object().map(|o| o.len()), Some(12));
}

#[test]
fn old_and_odd_infotexts() {
    // Before v1.9 there was no Schedule type; the scheduler was part of the sampler's name.
    let old = "a\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 45dee52b";
    let p = Infotext::parse(old).expect("parses");
    assert_eq!(p.sampler, "DPM++ 2M Karras");
    assert_eq!(p.schedule_type, "Automatic");
    assert_eq!(p.model_hash.as_deref(), Some("45dee52b"));

    // A last line with fewer than 3 pairs is part of the prompt.
    let p = parse_generation_parameters("hello\nSteps: 20, Seed: 1");
    assert_eq!(p.prompt, "hello\nSteps: 20, Seed: 1");
    assert!(p.entries.is_empty());

    // An empty value is skipped (A1111's `v[0]` raises); bad JSON stays as written; a quoted
    // WxH is split too; a repeated key keeps its first place and its last value; a one-letter
    // key is not a key. (Checked against Python's `re` with A1111's `re_param`.)
    let p = parse_generation_parameters(
        "p\nSteps: 20, Empty: , Bad: \"a\\qb\", Qs: \"64x32\", Steps: 30, Q: 1, Seed: 3",
    );
    assert_eq!(p.get("Empty"), None);
    assert_eq!(p.get("Bad"), Some("\"a\\qb\""));
    assert_eq!((p.get("Qs-1"), p.get("Qs-2")), (Some("64"), Some("32")));
    assert_eq!(
        p.get("Q"),
        None,
        "re_param's keys have at least 2 characters"
    );
    assert_eq!(p.entries[0], ("Steps".to_string(), "30".to_string()));

    // Fields that cannot be read name themselves.
    let e = Infotext::parse("p\nSteps: many, Seed: 1, Size: 512x512").expect_err("bad steps");
    assert!(e.to_string().contains("Steps"), "{e}");
    let e = Infotext::parse("p\nSteps: 20, Seed: 1, Size: 512 by 512").expect_err("bad size");
    assert!(e.to_string().contains("Size"), "{e}");
}

#[test]
fn python_number_and_quote_rules() {
    let cases: [(f64, &str); 14] = [
        (7.0, "7.0"),
        (7.5, "7.5"),
        (0.75, "0.75"),
        (1e-5, "1e-05"),
        (0.0001, "0.0001"),
        (1.5e-7, "1.5e-07"),
        (1e16, "1e+16"),
        (1234567890123456.0, "1234567890123456.0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (-2.5, "-2.5"),
        (0.0, "0.0"),
        (123.456e20, "1.23456e+22"),
        (f64::INFINITY, "inf"),
        (100.0, "100.0"),
    ];
    for (x, want) in cases {
        assert_eq!(py_float_repr(x), want, "{x:e}");
    }
    assert_eq!(Number::parse("7"), Some(Number::Int(7)));
    assert_eq!(Number::parse("7.0"), Some(Number::Float(7.0)));
    assert_eq!(Number::parse("nan"), None);
    assert_eq!(quote("plain text"), "plain text");
    assert_eq!(quote("a:b"), "\"a:b\"");
    assert_eq!(
        quote("say \"hi\""),
        "say \"hi\"",
        "a quote alone is not quoted"
    );
    assert_eq!(json_dumps("\u{8}\u{c}\r\u{7f}é"), "\"\\b\\f\\r\u{7f}é\"");
}
