//! Prompts as AUTOMATIC1111's web UI reads them, without any model: strings in, numbers out.
//!
//! The stages, in A1111's order:
//! 1. [`extra_networks`]: `<lora:name:0.8>` tags are removed first;
//! 2. [`multicond`]: the text is split on `AND`, each part with an optional `:weight`;
//! 3. [`schedule`]: each part becomes a schedule of texts (`[from:to:when]`, `[a|b]`);
//! 4. [`attention`]: each text becomes weighted segments (`(x)`, `[x]`, `(x:1.2)`, `BREAK`);
//! 5. [`tokenizer`] and [`chunk`]: segments become CLIP token ids in 77-token chunks with a
//!    weight per token and the places where textual-inversion vectors go.
//!
//! [`read_prompt`] runs stages 1–4; its [`PromptReading`] is the core of what `sumi prompt
//! --json` prints (the pipeline's prompt report adds the token counter and the embeddings).

pub mod attention;
pub mod chunk;
pub mod error;
pub mod extra_networks;
pub mod multicond;
mod pychar;
pub mod reading;
pub mod schedule;
pub mod tokenizer;

pub use attention::{parse_prompt_attention, Segment};
pub use chunk::{
    chunk_line, chunk_segments, pad_to_same_count, Chunk, Chunking, EmbeddingFix, EmbeddingIndex,
    EmbeddingMatch, EmbeddingMatcher, NoEmbeddings, PromptChunks,
};
pub use error::{Place, PromptError, Stage};
pub use extra_networks::ExtraNetwork;
pub use multicond::SubPrompt;
pub use reading::{
    read_negative_prompt, read_prompt, PromptReading, ScheduledText, SubPromptChunks,
    SubPromptReading,
};
pub use schedule::{prompt_schedule, ScheduleEntry, Timeline};
pub use tokenizer::{ClipPad, Tokenizer};
