//! Token ids against transformers' `CLIPTokenizer` (transformers 5, `tokenizers` backend), as
//! recorded by `tools/reference/make_prompt_fixtures.py`.

use serde_json::Value;
use sumi_prompt::tokenizer::{ClipPad, Tokenizer, BOS, EOS};

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/clip_tokens.json")).expect("fixture parses")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

#[test]
fn ids_equal_transformers_on_the_corpus() {
    let fx = fixture();
    let tok = Tokenizer::shared();
    let texts = fx["texts"].as_array().expect("texts");
    assert!(texts.len() >= 200, "{}", texts.len());
    let mut failures = Vec::new();
    for t in texts {
        let text = t["text"].as_str().expect("text");
        let want = ids(&t["ids"]);
        let got = tok.encode(text);
        if got != want {
            failures.push(format!(
                "{text:?}\n  transformers {want:?}\n  sumi         {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        texts.len(),
        failures.join("\n")
    );
}

#[test]
fn padded_sequences_per_model() {
    let fx = fixture();
    let tok = Tokenizer::shared();
    let padded = fx["padded"].as_array().expect("padded");
    assert_eq!(padded.len(), 6);
    for p in padded {
        let text = p["text"].as_str().expect("text");
        let pad = match p["pad"].as_str() {
            Some("sd1") => ClipPad::EndOfText,
            _ => ClipPad::Zero,
        };
        let want = ids(&p["ids"]);
        assert_eq!(tok.encode_padded(text, 77, pad), want, "{text:?} {pad:?}");
    }
}

#[test]
fn known_ids() {
    let tok = Tokenizer::shared();
    // "a photo of a cat" as every SD user has seen it
    assert_eq!(
        tok.encode_padded("a photo of a cat", 8, ClipPad::EndOfText),
        [BOS, 320, 1125, 539, 320, 2368, EOS, EOS]
    );
    // each digit is its own word; an apostrophe suffix splits off
    assert_eq!(tok.encode("42").len(), 2);
    assert_eq!(tok.encode("it's").len(), 2);
}
