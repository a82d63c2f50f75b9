//! The A1111 prompt stages (`sumi_prompt`): extra networks, `AND`, schedules, attention, the
//! CLIP tokenizer and chunking (with two embeddings to match), on any UTF-8 text up to the
//! pipeline's 64 KiB prompt limit. The step count (1-64) comes from the input's length; the
//! rendering, which tokenizes every schedule entry again, runs when the entries hold at most
//! 64 KiB of text in all.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sumi_pipeline::request::MAX_PROMPT_BYTES;
use sumi_prompt::{
    read_negative_prompt, read_prompt, Chunking, EmbeddingIndex, Timeline, Tokenizer,
};

fn embeddings() -> &'static EmbeddingIndex {
    static E: OnceLock<EmbeddingIndex> = OnceLock::new();
    E.get_or_init(|| EmbeddingIndex::new(Tokenizer::shared(), [("tinyemb", 2), ("two words", 3)]))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() > MAX_PROMPT_BYTES {
        return;
    }
    let tok = Tokenizer::shared();
    let emb = embeddings();
    let mut tl = Timeline::new(1 + (data.len() % 64) as u32);
    tl.old_scheduling = data.len() % 7 == 0;
    if data.len() % 5 == 0 {
        tl.hires_steps = Some(1 + (data.len() % 40) as u32);
    }
    let cfg = Chunking::default();
    for reading in [read_prompt(text, &tl), read_negative_prompt(text, &tl)]
        .into_iter()
        .flatten()
    {
        let _ = reading.chunks(tok, emb, &cfg);
        let (count, target) = reading.token_counter(tok, emb, &cfg);
        assert!(count <= target, "{count} tokens > {target}");
        let _ = reading.to_json();
        let texts: usize = (reading.subprompts.iter())
            .flat_map(|s| &s.schedule)
            .map(|e| e.text.len())
            .sum();
        if texts <= MAX_PROMPT_BYTES {
            let _ = reading.render(Some((tok, emb, &cfg)));
        }
    }
    let ids = tok.encode(text);
    for id in ids {
        let _ = tok.token_text(id);
    }
});
