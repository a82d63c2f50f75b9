//! Tokenizing is linear in the length of a word (issue 14, finding 5): one 50,000-character
//! word took 25 s when every merge rescanned the whole word. The BPE now keeps its pairs in a
//! priority queue, so a word of n bytes costs O(n log n); the ids stay those of the
//! transformers corpus (`clip_tokens.rs`).

use std::time::{Duration, Instant};

use sumi_prompt::tokenizer::Tokenizer;

/// A word of `n` letters with no repeating structure the merges could shortcut.
fn word(n: usize) -> String {
    let mut x: u32 = 12345;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            char::from(b'a' + ((x >> 16) % 26) as u8)
        })
        .collect()
}

#[test]
fn a_50000_character_word_tokenizes_in_well_under_a_second() {
    let tok = Tokenizer::shared();
    let text = word(50_000);
    let start = Instant::now();
    let ids = tok.encode(&text);
    let took = start.elapsed();
    // about 10–30 ms here; the quadratic merge loop took 25 s (debug builds are ~20× slower)
    let bound = if cfg!(debug_assertions) { 20 } else { 2 };
    assert!(
        took < Duration::from_secs(bound),
        "50,000-letter word took {took:?}"
    );
    // merges happened: far fewer tokens than letters, and every letter is accounted for
    assert!(
        ids.len() > 5_000 && ids.len() < 40_000,
        "{} tokens",
        ids.len()
    );
    let text_back: String = ids.iter().map(|&id| tok.token_text(id)).collect::<String>();
    assert_eq!(text_back.replace('…', ""), text);
}

#[test]
fn a_long_word_splits_as_its_pieces_do() {
    // BPE never merges across a `</w>`; a word made of one word repeated with spaces
    // tokenizes as that word's tokens repeated
    let tok = Tokenizer::shared();
    let one = tok.encode("photograph");
    let many = tok.encode(&["photograph"; 5000].join(" "));
    assert_eq!(many.len(), one.len() * 5000);
    assert!(many.chunks(one.len()).all(|c| c == one.as_slice()));
}
