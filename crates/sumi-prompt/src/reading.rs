//! How Sumi reads a whole prompt, stage by stage as A1111 does: extra networks removed, `AND`
//! split, schedule per part, emphasis per schedule entry. This is the core of the object that
//! `sumi prompt --json` prints (the pipeline's prompt report adds the token counter and the
//! embeddings), plus a human-readable rendering.

use std::fmt::Write as _;

use crate::attention::{parse_prompt_attention, Segment};
use crate::chunk::{chunk_segments, pad_to_same_count, Chunking, EmbeddingMatcher, PromptChunks};
use crate::error::PromptError;
use crate::extra_networks::{extract, ExtraNetwork};
use crate::multicond::split_and;
use crate::schedule::{prompt_schedule, Timeline};
use crate::tokenizer::Tokenizer;

/// One schedule entry of an `AND` part with its emphasis segments.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScheduledText {
    /// Last step (1-based) at which `text` applies.
    pub end_step: u32,
    /// The prompt text for those steps.
    pub text: String,
    /// `parse_prompt_attention(text)`: `[segment, weight]` pairs, `["BREAK", -1]` markers.
    pub attention: Vec<Segment>,
}

/// One `AND` part of a prompt.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SubPromptReading {
    /// The part's text (after extra networks were removed).
    pub text: String,
    /// Its weight in the CFG combination.
    pub weight: f64,
    /// Its schedule.
    pub schedule: Vec<ScheduledText>,
}

/// A prompt as A1111 reads it (the core of the `sumi prompt --json` object).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PromptReading {
    /// `<name:args>` tags, in order of appearance.
    pub extra_networks: Vec<ExtraNetwork>,
    /// The `AND` parts, in order (repeated parts are listed each time).
    pub subprompts: Vec<SubPromptReading>,
}

/// The chunks CLIP encodes for one `AND` part: one [`PromptChunks`] per schedule entry, all
/// with the same chunk count (A1111 encodes a part's schedule texts in one batch, padding with
/// empty chunks).
#[derive(Debug, Clone, PartialEq)]
pub struct SubPromptChunks {
    /// The part's weight in the CFG combination.
    pub weight: f64,
    /// `(end_step, chunks)` per schedule entry.
    pub schedule: Vec<(u32, PromptChunks)>,
}

/// Reads `prompt` as A1111 does for `timeline`; fails where A1111 raises.
///
/// ```
/// use sumi_prompt::{read_prompt, Timeline};
/// let r = read_prompt("<lora:x:0.5>a [cat:dog:2] AND b:0.5", &Timeline::new(4)).unwrap();
/// assert_eq!(r.extra_networks[0].name, "lora");
/// assert_eq!(r.subprompts[0].schedule[0].text, "a cat");
/// assert_eq!(r.subprompts[1].weight, 0.5);
/// ```
pub fn read_prompt(prompt: &str, timeline: &Timeline) -> Result<PromptReading, PromptError> {
    let (stripped, extra_networks) = extract(prompt);
    let mut subprompts = Vec::new();
    for part in split_and(&stripped) {
        let mut schedule = Vec::new();
        for entry in prompt_schedule(&part.text, timeline)? {
            let attention = parse_prompt_attention(&entry.text)?;
            schedule.push(ScheduledText {
                end_step: entry.end_step,
                text: entry.text,
                attention,
            });
        }
        subprompts.push(SubPromptReading {
            text: part.text,
            weight: part.weight,
            schedule,
        });
    }
    Ok(PromptReading {
        extra_networks,
        subprompts,
    })
}

/// Reads a negative prompt as A1111 does: no extra networks are taken out and no `AND` split
/// is made (A1111 encodes negatives with `get_learned_conditioning`, not the multicond form);
/// the whole text gets a schedule and emphasis.
pub fn read_negative_prompt(
    prompt: &str,
    timeline: &Timeline,
) -> Result<PromptReading, PromptError> {
    let mut schedule = Vec::new();
    for entry in prompt_schedule(prompt, timeline)? {
        let attention = parse_prompt_attention(&entry.text)?;
        schedule.push(ScheduledText {
            end_step: entry.end_step,
            text: entry.text,
            attention,
        });
    }
    Ok(PromptReading {
        extra_networks: Vec::new(),
        subprompts: vec![SubPromptReading {
            text: prompt.to_string(),
            weight: 1.0,
            schedule,
        }],
    })
}

impl PromptReading {
    /// Tokenizes and chunks every schedule entry of every part, as the conditioning stage
    /// needs them.
    pub fn chunks(
        &self,
        tok: &Tokenizer,
        emb: &dyn EmbeddingMatcher,
        cfg: &Chunking,
    ) -> Vec<SubPromptChunks> {
        self.subprompts
            .iter()
            .map(|sub| {
                let mut batch: Vec<PromptChunks> = sub
                    .schedule
                    .iter()
                    .map(|e| chunk_segments(&e.attention, tok, emb, cfg))
                    .collect();
                pad_to_same_count(&mut batch);
                SubPromptChunks {
                    weight: sub.weight,
                    schedule: sub.schedule.iter().map(|e| e.end_step).zip(batch).collect(),
                }
            })
            .collect()
    }

    /// A1111's token counter ("75/150"): the largest token count over every schedule text of
    /// every part, and that count rounded up to whole chunks.
    pub fn token_counter(
        &self,
        tok: &Tokenizer,
        emb: &dyn EmbeddingMatcher,
        cfg: &Chunking,
    ) -> (usize, usize) {
        let mut best: Option<(usize, usize)> = None;
        for entry in self.subprompts.iter().flat_map(|s| &s.schedule) {
            let c = chunk_segments(&entry.attention, tok, emb, cfg);
            let here = (c.token_count, c.target_token_count());
            if best.is_none_or(|(n, _)| here.0 > n) {
                best = Some(here);
            }
        }
        best.unwrap_or((0, cfg.chunk_length))
    }

    /// As JSON: `extra_networks` and `subprompts`, the fields `sumi prompt --json` starts from.
    pub fn to_json(&self) -> serde_json::Value {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// A human-readable account: extra networks, parts with weights, the schedule with the
    /// weighted segments and, given a tokenizer, A1111's token counter per schedule entry and
    /// the tokens of each chunk.
    pub fn render(
        &self,
        tokenizer: Option<(&Tokenizer, &dyn EmbeddingMatcher, &Chunking)>,
    ) -> String {
        let mut out = String::new();
        for net in &self.extra_networks {
            let _ = writeln!(out, "extra network <{}:{}>", net.name, net.args.join(":"));
        }
        let many = self.subprompts.len() > 1;
        for (i, sub) in self.subprompts.iter().enumerate() {
            if many {
                let _ = writeln!(
                    out,
                    "AND part {} (weight {}): {:?}",
                    i + 1,
                    sub.weight,
                    sub.text
                );
            }
            let mut from = 1;
            for entry in &sub.schedule {
                let steps = if from == entry.end_step {
                    format!("step {from}")
                } else {
                    format!("steps {from}-{}", entry.end_step)
                };
                from = entry.end_step + 1;
                let _ = write!(out, "  {steps}: ");
                for (k, seg) in entry.attention.iter().enumerate() {
                    if k > 0 {
                        out.push(' ');
                    }
                    if seg.is_break() {
                        out.push_str("BREAK");
                    } else if seg.weight == 1.0 {
                        let _ = write!(out, "{:?}", seg.text);
                    } else {
                        let _ = write!(out, "{:?}×{}", seg.text, seg.weight);
                    }
                }
                out.push('\n');
                if let Some((tok, emb, chunking)) = tokenizer {
                    let chunks = chunk_segments(&entry.attention, tok, emb, chunking);
                    let _ = writeln!(
                        out,
                        "    tokens {}/{} in {} chunk(s)",
                        chunks.token_count,
                        chunks.target_token_count(),
                        chunks.chunks.len()
                    );
                    for (c, chunk) in chunks.chunks.iter().enumerate() {
                        let words: Vec<String> = chunk
                            .content()
                            .iter()
                            .map(|&id| tok.token_text(id))
                            .collect();
                        let _ = writeln!(out, "    chunk {}: {}", c + 1, words.join(" "));
                        for fix in &chunk.fixes {
                            let _ = writeln!(
                                out,
                                "      embedding {:?} at {} ({} vectors)",
                                fix.name, fix.offset, fix.vectors
                            );
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::NoEmbeddings;

    #[test]
    fn json_object_is_the_issue_shape() {
        let r = read_prompt(
            "<lora:x:0.5>a [b:c:2] (d:1.5) BREAK e AND f:0.5",
            &Timeline::new(3),
        )
        .unwrap();
        let want = r#"{"extra_networks":[{"args":["x","0.5"],"name":"lora"}],"subprompts":[{"schedule":[{"attention":[["a b ",1.0],["d",1.5],["",1.0],["BREAK",-1],["e",1.0]],"end_step":2,"text":"a b (d:1.5) BREAK e"},{"attention":[["a c ",1.0],["d",1.5],["",1.0],["BREAK",-1],["e",1.0]],"end_step":3,"text":"a c (d:1.5) BREAK e"}],"text":"a [b:c:2] (d:1.5) BREAK e","weight":1.0},{"schedule":[{"attention":[[" f",1.0]],"end_step":3,"text":" f"}],"text":" f","weight":0.5}]}"#;
        assert_eq!(r.to_json().to_string(), want);
    }

    #[test]
    fn schedule_entries_share_a_chunk_count() {
        let tok = Tokenizer::shared();
        let prompt = format!("[{}:short:2] AND x:0.5", "long ".repeat(80));
        let r = read_prompt(&prompt, &Timeline::new(4)).unwrap();
        let parts = r.chunks(tok, &NoEmbeddings, &Chunking::default());
        assert_eq!(parts.len(), 2);
        let counts: Vec<(u32, usize, usize)> = parts[0]
            .schedule
            .iter()
            .map(|(s, c)| (*s, c.chunks.len(), c.token_count))
            .collect();
        // "short" needs one chunk but is padded to the long entry's two, keeping its count
        assert_eq!(counts, [(2, 2, 80), (4, 2, 1)]);
        assert_eq!(parts[1].weight, 0.5);
        assert_eq!(parts[1].schedule[0].1.chunks.len(), 1);
    }

    #[test]
    fn negative_prompts_are_not_split() {
        let r = read_negative_prompt("<lora:x:1> a AND b:2", &Timeline::new(5)).unwrap();
        assert!(r.extra_networks.is_empty());
        assert_eq!(r.subprompts.len(), 1);
        assert_eq!(r.subprompts[0].schedule[0].text, "<lora:x:1> a AND b:2");
    }

    #[test]
    fn human_rendering_and_counter() {
        let tok = Tokenizer::shared();
        let cfg = Chunking::default();
        let long = format!("{} [cat:dog:2]", "red, ".repeat(40));
        let r = read_prompt(&long, &Timeline::new(4)).unwrap();
        assert_eq!(r.token_counter(tok, &NoEmbeddings, &cfg), (81, 150));
        let text = r.render(Some((tok, &NoEmbeddings, &cfg)));
        assert!(text.contains("  steps 1-2: \"red, "), "{text}");
        assert!(text.contains("    tokens 81/150 in 2 chunk(s)"), "{text}");
        // A1111 starts the next chunk with the comma that arrives when a chunk is full
        assert!(text.contains("    chunk 2: , red , red , cat\n"), "{text}");
        let w = read_prompt("(a:1.5) BREAK b AND c:2", &Timeline::new(1)).unwrap();
        assert_eq!(
            w.render(None),
            "AND part 1 (weight 1): \"(a:1.5) BREAK b\"\n  step 1: \"a\"×1.5 \"\" BREAK \"b\"\nAND part 2 (weight 2): \" c\"\n  step 1: \" c\"\n"
        );
    }
}
