//! Chunking against a transcription of A1111's `tokenize_line` (sd_hijack_clip.py, default
//! options) on transformers' tokenizer with a fake embedding database, as recorded by
//! `tools/reference/make_prompt_fixtures.py`.

use serde_json::Value;
use sumi_prompt::{
    chunk_line, pad_to_same_count, Chunk, Chunking, ClipPad, EmbeddingIndex, Tokenizer,
};

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/a1111_chunks.json")).expect("fixture parses")
}

fn index(fx: &Value, tok: &Tokenizer) -> EmbeddingIndex {
    let list: Vec<(String, usize)> = fx["meta"]["embeddings"]
        .as_array()
        .expect("embeddings")
        .iter()
        .map(|e| {
            (
                e[0].as_str().expect("name").to_string(),
                e[1].as_u64().expect("n") as usize,
            )
        })
        .collect();
    EmbeddingIndex::new(tok, list.iter().map(|(n, v)| (n.as_str(), *v)))
}

#[test]
fn chunks_equal_a1111() {
    let fx = fixture();
    let tok = Tokenizer::shared();
    let emb = index(&fx, tok);
    let cfg = Chunking::default();
    let lines = fx["lines"].as_array().expect("lines");
    assert!(lines.len() >= 50);
    let (mut multi, mut with_fixes) = (0, 0);
    for l in lines {
        let line = l["line"].as_str().expect("line");
        let got = chunk_line(line, tok, &emb, &cfg).expect("chunks");
        assert_eq!(
            got.token_count as u64,
            l["token_count"].as_u64().expect("count"),
            "token count of {line:?}"
        );
        let want = l["chunks"].as_array().expect("chunks");
        assert_eq!(got.chunks.len(), want.len(), "chunk count of {line:?}");
        multi += usize::from(want.len() > 1);
        for (c, (g, w)) in got.chunks.iter().zip(want).enumerate() {
            let tokens: Vec<u32> = w["tokens"]
                .as_array()
                .expect("tokens")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect();
            let mults: Vec<f64> = w["multipliers"]
                .as_array()
                .expect("mults")
                .iter()
                .map(|x| x.as_f64().expect("w"))
                .collect();
            let fixes: Vec<(usize, String)> = w["fixes"]
                .as_array()
                .expect("fixes")
                .iter()
                .map(|f| {
                    (
                        f[0].as_u64().expect("o") as usize,
                        f[1].as_str().expect("n").to_string(),
                    )
                })
                .collect();
            assert_eq!(g.tokens, tokens, "tokens of chunk {c} of {line:?}");
            assert_eq!(g.multipliers, mults, "weights of chunk {c} of {line:?}");
            let gf: Vec<(usize, String)> =
                g.fixes.iter().map(|f| (f.offset, f.name.clone())).collect();
            assert_eq!(gf, fixes, "fixes of chunk {c} of {line:?}");
            with_fixes += usize::from(!fixes.is_empty());
        }
    }
    assert!(
        multi >= 10 && with_fixes >= 5,
        "{multi} multi-chunk, {with_fixes} with fixes"
    );
}

#[test]
fn counter_break_and_padding() {
    let tok = Tokenizer::shared();
    let cfg = Chunking::default();
    let none = sumi_prompt::NoEmbeddings;
    let long = chunk_line(&"cat ".repeat(80), tok, &none, &cfg).expect("chunks");
    assert_eq!((long.token_count, long.target_token_count()), (80, 150));
    let empty = chunk_line("", tok, &none, &cfg).expect("chunks");
    assert_eq!(
        (
            empty.token_count,
            empty.target_token_count(),
            empty.chunks.len()
        ),
        (0, 75, 1)
    );
    let brk = chunk_line("a BREAK b", tok, &none, &cfg).expect("chunks");
    assert_eq!((brk.chunks.len(), brk.token_count), (2, 76));
    assert_eq!(brk.chunks[0].content(), [320]);
    // SD2: everything after the first end token is the pad id 0
    let ids = brk.chunks[1].ids(ClipPad::Zero);
    assert_eq!(&ids[..4], [49406, 321, 49407, 0]);
    assert_eq!(ids.len(), 77);
    // texts encoded together get the same chunk count
    let mut batch = vec![long, brk.clone(), empty];
    batch[1].chunks.truncate(1);
    pad_to_same_count(&mut batch);
    assert!(batch.iter().all(|p| p.chunks.len() == 2));
    assert_eq!(batch[2].chunks[1], Chunk::empty(75));
}
