//! Chunking as A1111's `FrozenCLIPEmbedderWithCustomWords.tokenize_line`: the weighted segments
//! of a prompt become 77-token chunks (start token, 75 prompt tokens, end token) with a weight
//! per token, so prompts of any length reach CLIP.
//!
//! * When a chunk is full and the current token is not a comma, the tokens after the last comma
//!   (if it is at most `comma_padding_backtrack` = 20 tokens back) move to the next chunk.
//! * `BREAK` (the `["BREAK", -1]` marker) pads the current chunk and starts the next.
//! * A textual-inversion embedding takes as many positions as it has vectors (placeholder id 0,
//!   recorded in [`Chunk::fixes`]) and never straddles two chunks.
//! * A1111's token counter ("75/150") is [`PromptChunks::token_count`] over
//!   [`PromptChunks::target_token_count`].
//!
//! Several texts encoded in one batch (the entries of one prompt's schedule) are padded to the
//! same number of chunks with [`Chunk::empty`] ([`pad_to_same_count`]), as A1111's `forward`.
//! Cond and uncond are encoded in separate calls and keep their own chunk counts (A1111's
//! default, `pad_cond_uncond` off); conds of different lengths stacked in one U-Net batch (AND
//! parts) are extended by repeating their last vector — that is tensor work for the
//! conditioning stage, which also applies the weights ("emphasis") and splices the embedding
//! vectors at [`Chunk::fixes`].

use std::collections::HashMap;

use crate::attention::{parse_prompt_attention, Segment};
use crate::error::PromptError;
use crate::tokenizer::{ClipPad, Tokenizer, BOS, EOS};

/// Chunking options (A1111's defaults by [`Chunking::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunking {
    /// Prompt tokens per chunk (75).
    pub chunk_length: usize,
    /// A1111's "Prompt word wrap length limit" (`comma_padding_backtrack`, 20; 0 turns it off).
    pub comma_padding_backtrack: usize,
}

impl Default for Chunking {
    fn default() -> Self {
        Chunking {
            chunk_length: 75,
            comma_padding_backtrack: 20,
        }
    }
}

/// A textual-inversion embedding recognised in the token stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingMatch {
    /// The embedding's name (its file name without extension).
    pub name: String,
    /// Number of vectors it inserts.
    pub vectors: usize,
    /// Number of prompt tokens its name took.
    pub token_len: usize,
}

/// Finds textual-inversion embeddings in a token stream, as A1111's
/// `EmbeddingDatabase.find_embedding_at_position`.
pub trait EmbeddingMatcher {
    /// The embedding whose name's tokens start at `tokens[offset]`, if any.
    fn match_at(&self, tokens: &[u32], offset: usize) -> Option<EmbeddingMatch>;
}

/// No embeddings.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEmbeddings;

impl EmbeddingMatcher for NoEmbeddings {
    fn match_at(&self, _: &[u32], _: usize) -> Option<EmbeddingMatch> {
        None
    }
}

/// Embeddings by name and vector count, matched by the token ids of their names: for each
/// first token, the candidates longest first (ties in registration order), as A1111.
#[derive(Debug, Clone, Default)]
pub struct EmbeddingIndex {
    lookup: HashMap<u32, Vec<(Vec<u32>, String, usize)>>,
}

impl EmbeddingIndex {
    /// Registers `(name, vectors)` pairs in order; names that tokenize to nothing are skipped.
    pub fn new<'a>(
        tok: &Tokenizer,
        embeddings: impl IntoIterator<Item = (&'a str, usize)>,
    ) -> Self {
        let mut idx = EmbeddingIndex::default();
        for (name, vectors) in embeddings {
            let ids = tok.encode(name);
            let Some(&first) = ids.first() else { continue };
            let list = idx.lookup.entry(first).or_default();
            list.retain(|(_, n, _)| n != name);
            list.push((ids, name.to_string(), vectors));
            list.sort_by_key(|(ids, _, _)| std::cmp::Reverse(ids.len()));
        }
        idx
    }
}

impl EmbeddingMatcher for EmbeddingIndex {
    fn match_at(&self, tokens: &[u32], offset: usize) -> Option<EmbeddingMatch> {
        let first = tokens.get(offset)?;
        self.lookup
            .get(first)?
            .iter()
            .find_map(|(ids, name, vectors)| {
                (tokens.get(offset..offset + ids.len()) == Some(ids.as_slice())).then(|| {
                    EmbeddingMatch {
                        name: name.clone(),
                        vectors: *vectors,
                        token_len: ids.len(),
                    }
                })
            })
    }
}

/// Where an embedding's vectors go in a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingFix {
    /// Position in the chunk's prompt tokens (0 = first token after the start token; A1111's
    /// `PromptChunkFix.offset`; add 1 for the index into [`Chunk::tokens`]).
    pub offset: usize,
    /// The embedding's name.
    pub name: String,
    /// Its vector count (positions `offset..offset + vectors`).
    pub vectors: usize,
}

/// One 77-token chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Start token, 75 prompt tokens (0 where an embedding vector goes), end token; padding is
    /// the end token (see [`Chunk::ids`] for SD2's padding).
    pub tokens: Vec<u32>,
    /// Weight per token (1 for start, end and padding).
    pub multipliers: Vec<f64>,
    /// Embedding positions.
    pub fixes: Vec<EmbeddingFix>,
}

impl Chunk {
    /// A chunk of nothing: start token, then end tokens (A1111's `empty_chunk`).
    pub fn empty(chunk_length: usize) -> Chunk {
        let mut tokens = vec![BOS];
        tokens.resize(chunk_length + 2, EOS);
        Chunk {
            tokens,
            multipliers: vec![1.0; chunk_length + 2],
            fixes: Vec::new(),
        }
    }

    /// The prompt tokens between the start and end tokens.
    pub fn content(&self) -> &[u32] {
        let n = self.tokens.len();
        if n < 2 {
            return &[];
        }
        let body = &self.tokens[1..n - 1];
        let end = body.iter().position(|&t| t == EOS).unwrap_or(body.len());
        &body[..end]
    }

    /// The ids CLIP receives: for a model padding with a token other than the end token,
    /// everything after the first end token becomes the pad id (A1111's `process_tokens`).
    pub fn ids(&self, pad: ClipPad) -> Vec<u32> {
        let mut ids = self.tokens.clone();
        if pad.id() != EOS {
            if let Some(p) = ids.iter().position(|&t| t == EOS) {
                for t in ids.iter_mut().skip(p + 1) {
                    *t = pad.id();
                }
            }
        }
        ids
    }
}

/// The chunks of one prompt text.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptChunks {
    /// At least one chunk.
    pub chunks: Vec<Chunk>,
    /// A1111's token count: 75 per chunk before the last, plus the last one's tokens.
    pub token_count: usize,
    /// Chunk length the chunks were made with.
    pub chunk_length: usize,
}

impl PromptChunks {
    /// The counter's denominator: the token count rounded up to whole chunks (at least one).
    pub fn target_token_count(&self) -> usize {
        let n = self.token_count.max(1);
        n.div_ceil(self.chunk_length) * self.chunk_length
    }
}

/// Chunks weighted segments (`parse_prompt_attention` output) as A1111's `tokenize_line`.
pub fn chunk_segments(
    segments: &[Segment],
    tok: &Tokenizer,
    emb: &dyn EmbeddingMatcher,
    cfg: &Chunking,
) -> PromptChunks {
    let len = cfg.chunk_length;
    let mut st = State {
        chunks: Vec::new(),
        tokens: Vec::new(),
        mults: Vec::new(),
        fixes: Vec::new(),
        token_count: 0,
        last_comma: None,
        len,
    };
    for seg in segments {
        if seg.is_break() {
            st.next_chunk(false);
            continue;
        }
        let tokens = tok.encode(&seg.text);
        let mut pos = 0;
        while pos < tokens.len() {
            let token = tokens[pos];
            if token == tok.comma() {
                st.last_comma = Some(st.tokens.len());
            } else if let Some(lc) = st.last_comma {
                if cfg.comma_padding_backtrack != 0
                    && st.tokens.len() == len
                    && st.tokens.len() - lc <= cfg.comma_padding_backtrack
                {
                    let at = lc + 1;
                    let reloc_tokens = st.tokens.split_off(at);
                    let reloc_mults = st.mults.split_off(at);
                    // A1111 leaves fixes in the chunk they were recorded in
                    st.next_chunk(false);
                    st.tokens = reloc_tokens;
                    st.mults = reloc_mults;
                }
            }
            if st.tokens.len() == len {
                st.next_chunk(false);
            }
            match emb.match_at(&tokens, pos) {
                None => {
                    st.tokens.push(token);
                    st.mults.push(seg.weight);
                    pos += 1;
                }
                Some(m) => {
                    if st.tokens.len() + m.vectors > len {
                        st.next_chunk(false);
                    }
                    st.fixes.push(EmbeddingFix {
                        offset: st.tokens.len(),
                        name: m.name,
                        vectors: m.vectors,
                    });
                    st.tokens.extend(std::iter::repeat_n(0, m.vectors));
                    st.mults.extend(std::iter::repeat_n(seg.weight, m.vectors));
                    pos += m.token_len.max(1);
                }
            }
        }
    }
    if !st.tokens.is_empty() || st.chunks.is_empty() {
        st.next_chunk(true);
    }
    PromptChunks {
        chunks: st.chunks,
        token_count: st.token_count,
        chunk_length: len,
    }
}

/// Parses `line` with [`parse_prompt_attention`] and chunks it.
pub fn chunk_line(
    line: &str,
    tok: &Tokenizer,
    emb: &dyn EmbeddingMatcher,
    cfg: &Chunking,
) -> Result<PromptChunks, PromptError> {
    Ok(chunk_segments(
        &parse_prompt_attention(line)?,
        tok,
        emb,
        cfg,
    ))
}

/// Pads every text of a batch to the largest chunk count with empty chunks, as A1111's
/// `forward` does for texts encoded together.
pub fn pad_to_same_count(batch: &mut [PromptChunks]) {
    let most = batch.iter().map(|p| p.chunks.len()).max().unwrap_or(0);
    for p in batch.iter_mut() {
        while p.chunks.len() < most {
            p.chunks.push(Chunk::empty(p.chunk_length));
        }
    }
}

struct State {
    chunks: Vec<Chunk>,
    tokens: Vec<u32>,
    mults: Vec<f64>,
    fixes: Vec<EmbeddingFix>,
    token_count: usize,
    last_comma: Option<usize>,
    len: usize,
}

impl State {
    fn next_chunk(&mut self, is_last: bool) {
        self.token_count += if is_last { self.tokens.len() } else { self.len };
        let mut tokens = Vec::with_capacity(self.len + 2);
        tokens.push(BOS);
        tokens.append(&mut self.tokens);
        let mut mults = Vec::with_capacity(self.len + 2);
        mults.push(1.0);
        mults.append(&mut self.mults);
        // a relocated tail can make a chunk longer than `len`: A1111 then pads nothing
        while tokens.len() < self.len + 1 {
            tokens.push(EOS);
            mults.push(1.0);
        }
        tokens.push(EOS);
        mults.push(1.0);
        self.chunks.push(Chunk {
            tokens,
            multipliers: mults,
            fixes: std::mem::take(&mut self.fixes),
        });
        self.last_comma = None;
    }
}
