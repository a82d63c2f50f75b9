//! The CLIP BPE tokenizer, giving the ids of transformers' `CLIPTokenizer`.
//!
//! The vocabulary is OpenAI's `bpe_simple_vocab_16e6.txt.gz` (MIT), embedded in the binary:
//! 256 byte symbols, the same with `</w>`, one token per merge (48,894), then
//! `<|startoftext|>` (49406) and `<|endoftext|>` (49407) — 49,408 ids.
//!
//! The pipeline is transformers' (the `tokenizers` backend of `CLIPTokenizer`):
//! 1. the special tokens `<|startoftext|>` / `<|endoftext|>` are split out of the raw text;
//! 2. normalisation: Unicode NFC, every run of whitespace (`\s+`) to one space, lowercase
//!    (per character, as Rust's `char::to_lowercase`). NFC comes from
//!    `unicode-normalization-alignments`, the crate `tokenizers` itself uses: its Unicode 9.0
//!    tables order combining marks added later (e.g. Malayalam U+0D3B) as transformers does;
//!    newer tables would reorder them and change the ids;
//! 3. pre-tokenisation: the matches of
//!    `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
//!    (so every digit is its own word), then within each match GPT-2's byte-level split
//!    `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|…` (which only ever
//!    splits a lowercased `<|endoftext|>` typed in the prompt: `<|`, `endoftext`, `|>`), and
//!    mapped to GPT-2's byte-level characters;
//! 4. BPE on each word with `</w>` on its last symbol, always merging the adjacent pair of
//!    lowest merge rank (the leftmost of equals).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::Read;
use std::sync::OnceLock;

use regex::Regex;
use unicode_normalization_alignments::UnicodeNormalization;

/// The embedded BPE merges file.
static BPE_GZ: &[u8] = include_bytes!("../data/bpe_simple_vocab_16e6.txt.gz");

/// Number of merges CLIP uses from the BPE file.
const MERGES: usize = 49152 - 256 - 2;

/// Id of `<|startoftext|>`.
pub const BOS: u32 = 49406;
/// Id of `<|endoftext|>`.
pub const EOS: u32 = 49407;
/// Vocabulary size.
pub const VOCAB_SIZE: usize = 49408;

/// The token that pads a sequence after its end token, per model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipPad {
    /// SD1.x and SDXL's first encoder: pad with `<|endoftext|>` (49407).
    EndOfText,
    /// SD2.x (OpenCLIP) and SDXL's second encoder: pad with `!` (id 0).
    Zero,
}

impl ClipPad {
    /// The padding id.
    pub fn id(self) -> u32 {
        match self {
            ClipPad::EndOfText => EOS,
            ClipPad::Zero => 0,
        }
    }
}

/// The embedded vocabulary could not be read (a broken build).
#[derive(Debug, thiserror::Error)]
#[error("embedded CLIP vocabulary is unreadable: {0}")]
pub struct VocabError(String);

/// CLIP's BPE tokenizer.
pub struct Tokenizer {
    /// Token string (byte-level characters, maybe with `</w>`) for each id.
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    /// (left id, right id) → (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Byte → id of its byte-level character, without and with `</w>`.
    byte_ids: [u32; 256],
    byte_ids_eow: [u32; 256],
    /// Byte-level character → byte.
    char_bytes: HashMap<char, u8>,
    pretokenize: Regex,
    byte_level: Regex,
    whitespace: Regex,
    comma: u32,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.tokens.len())
            .finish()
    }
}

/// GPT-2's byte to printable character table (`bytes_to_unicode`), in vocabulary order.
fn byte_chars() -> Vec<(u8, char)> {
    let mut bs: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .filter_map(|(b, c)| Some((u8::try_from(b).ok()?, char::from_u32(c)?)))
        .collect()
}

impl Tokenizer {
    /// Builds the tokenizer from the embedded vocabulary (about 50 ms; see [`Tokenizer::shared`]).
    pub fn new() -> Result<Self, VocabError> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(BPE_GZ)
            .read_to_string(&mut text)
            .map_err(|e| VocabError(e.to_string()))?;
        let merge_lines: Vec<&str> = text.split('\n').skip(1).take(MERGES).collect();
        if merge_lines.len() != MERGES {
            return Err(VocabError(format!("{} merges", merge_lines.len())));
        }
        let table = byte_chars();
        let mut tokens: Vec<String> = table.iter().map(|(_, c)| c.to_string()).collect();
        tokens.extend(table.iter().map(|(_, c)| format!("{c}</w>")));
        let mut pairs = Vec::with_capacity(MERGES);
        for line in &merge_lines {
            let (a, b) = line
                .split_once(' ')
                .ok_or_else(|| VocabError(format!("bad merge line {line:?}")))?;
            pairs.push((a, b));
            tokens.push(format!("{a}{b}"));
        }
        tokens.push("<|startoftext|>".into());
        tokens.push("<|endoftext|>".into());
        if tokens.len() != VOCAB_SIZE {
            return Err(VocabError(format!("{} tokens", tokens.len())));
        }
        let mut ids = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            // later duplicates win, as in a Python dict built in order
            ids.insert(t.clone(), i as u32);
        }
        let mut merges = HashMap::with_capacity(MERGES);
        for (rank, (a, b)) in pairs.iter().enumerate() {
            let (Some(&l), Some(&r), Some(&m)) =
                (ids.get(*a), ids.get(*b), ids.get(&format!("{a}{b}")))
            else {
                return Err(VocabError(format!("merge {a} {b} of unknown tokens")));
            };
            merges.entry((l, r)).or_insert((rank as u32, m));
        }
        let mut byte_ids = [0u32; 256];
        let mut byte_ids_eow = [0u32; 256];
        let mut char_bytes = HashMap::new();
        for (b, c) in &table {
            byte_ids[usize::from(*b)] = ids[&c.to_string()];
            byte_ids_eow[usize::from(*b)] = ids[&format!("{c}</w>")];
            char_bytes.insert(*c, *b);
        }
        let pretokenize = Regex::new(
            r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        )
        .map_err(|e| VocabError(e.to_string()))?;
        // GPT-2's pattern without its whitespace alternatives (the pieces hold no whitespace)
        let byte_level = Regex::new(r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+")
            .map_err(|e| VocabError(e.to_string()))?;
        let whitespace = Regex::new(r"\s+").map_err(|e| VocabError(e.to_string()))?;
        let comma = ids
            .get(",</w>")
            .copied()
            .ok_or_else(|| VocabError("no ',</w>'".into()))?;
        Ok(Tokenizer {
            tokens,
            ids,
            merges,
            byte_ids,
            byte_ids_eow,
            char_bytes,
            pretokenize,
            byte_level,
            whitespace,
            comma,
        })
    }

    /// The process-wide tokenizer, built on first use.
    ///
    /// # Panics
    /// Only if the vocabulary embedded at build time is corrupt (a broken build, covered by
    /// this crate's tests).
    pub fn shared() -> &'static Tokenizer {
        static TOK: OnceLock<Tokenizer> = OnceLock::new();
        TOK.get_or_init(|| Tokenizer::new().expect("embedded CLIP vocabulary"))
    }

    /// Id of `,</w>`, the comma A1111's chunker backtracks to.
    pub fn comma(&self) -> u32 {
        self.comma
    }

    /// The id of a vocabulary entry (`"cat</w>"`), if any.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// Readable text of a token: bytes decoded, `</w>` as a trailing space trimmed away.
    pub fn token_text(&self, id: u32) -> String {
        let Some(t) = self.tokens.get(id as usize) else {
            return format!("<{id}>");
        };
        if id == BOS || id == EOS {
            return t.clone();
        }
        let (body, eow) = match t.strip_suffix("</w>") {
            Some(b) => (b, true),
            None => (t.as_str(), false),
        };
        let bytes: Vec<u8> = body
            .chars()
            .filter_map(|c| self.char_bytes.get(&c).copied())
            .collect();
        let mut s = String::from_utf8_lossy(&bytes).into_owned();
        if !eow {
            s.push('…');
        }
        s
    }

    /// Token ids of `text` without start and end tokens (transformers'
    /// `tokenizer(text, add_special_tokens=False)["input_ids"]`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut rest = text;
        loop {
            let next = [("<|startoftext|>", BOS), ("<|endoftext|>", EOS)]
                .into_iter()
                .filter_map(|(s, id)| rest.find(s).map(|p| (p, s.len(), id)))
                .min_by_key(|(p, _, _)| *p);
            match next {
                Some((p, len, id)) => {
                    self.encode_plain(&rest[..p], &mut out);
                    out.push(id);
                    rest = &rest[p + len..];
                }
                None => {
                    self.encode_plain(rest, &mut out);
                    return out;
                }
            }
        }
    }

    /// `max_length` ids: start token, as many text tokens as fit, end token, then padding
    /// (transformers' `padding="max_length", truncation=True`).
    pub fn encode_padded(&self, text: &str, max_length: usize, pad: ClipPad) -> Vec<u32> {
        let mut ids = vec![BOS];
        let body = self.encode(text);
        let room = max_length.saturating_sub(2);
        ids.extend(body.into_iter().take(room));
        ids.push(EOS);
        ids.resize(max_length.max(ids.len()), pad.id());
        ids
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let nfc: String = text.nfc().map(|(c, _)| c).collect();
        let spaced = self.whitespace.replace_all(&nfc, " ");
        let lower: String = spaced.chars().flat_map(char::to_lowercase).collect();
        for m in self.pretokenize.find_iter(&lower) {
            for w in self.byte_level.find_iter(m.as_str()) {
                self.bpe(w.as_str().as_bytes(), out);
            }
        }
    }

    /// BPE on one word: always merges the adjacent pair of lowest rank, the leftmost of
    /// equals, until no pair has a merge — what open_clip's and transformers' loops compute,
    /// in O(n log n) for a word of n bytes (their loops rescan the word after every merge,
    /// O(n²): a 50,000-letter word took 25 s that way).
    ///
    /// The symbols form a linked list over their first byte's position (a merged symbol keeps
    /// its left part's position, so positions keep the word's order) and every adjacent pair
    /// with a merge waits in a min-heap keyed by (rank, position). An entry whose pair has
    /// changed since (either side merged away) is skipped when popped, so each pop is exactly
    /// the lowest-ranked leftmost pair of the current word.
    fn bpe(&self, word: &[u8], out: &mut Vec<u32>) {
        let Some((&last, head)) = word.split_last() else {
            return;
        };
        let mut syms: Vec<u32> = head
            .iter()
            .map(|&b| self.byte_ids[usize::from(b)])
            .collect();
        syms.push(self.byte_ids_eow[usize::from(last)]);
        let n = syms.len();
        // next[i] / prev[i]: the neighbours of the symbol at i (n / usize::MAX = none);
        // alive[i]: a symbol starts at i
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::new();
        let pair = |heap: &mut BinaryHeap<_>, syms: &[u32], i: usize, j: usize| {
            if let Some(&(rank, merged)) = self.merges.get(&(syms[i], syms[j])) {
                heap.push(Reverse(Pending {
                    rank,
                    pos: i,
                    left: syms[i],
                    right: syms[j],
                    merged,
                }));
            }
        };
        for i in 0..n.saturating_sub(1) {
            pair(&mut heap, &syms, i, i + 1);
        }
        while let Some(Reverse(p)) = heap.pop() {
            let i = p.pos;
            let j = next[i];
            // stale: the left symbol was merged into its neighbour, or either side changed
            if !alive[i] || j >= n || syms[i] != p.left || syms[j] != p.right {
                continue;
            }
            syms[i] = p.merged;
            alive[j] = false;
            next[i] = next[j];
            if next[i] < n {
                prev[next[i]] = i;
            }
            if prev[i] != usize::MAX {
                pair(&mut heap, &syms, prev[i], i);
            }
            if next[i] < n {
                pair(&mut heap, &syms, i, next[i]);
            }
        }
        out.extend((0..n).filter(|&i| alive[i]).map(|i| syms[i]));
    }
}

/// A pair waiting to be merged: ordered by rank, then by position (leftmost first).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    rank: u32,
    pos: usize,
    left: u32,
    right: u32,
    merged: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_shape() {
        let t = Tokenizer::shared();
        assert_eq!(t.token_id("<|startoftext|>"), Some(BOS));
        assert_eq!(t.token_id("<|endoftext|>"), Some(EOS));
        assert_eq!(t.token_id("!"), Some(0));
        assert_eq!(t.comma(), 267);
        assert_eq!(t.token_text(t.encode("cat")[0]), "cat");
    }

    /// The merge loop as open_clip and transformers' slow tokenizer write it: rescan the word,
    /// merge the lowest-ranked leftmost pair, repeat (O(n²), the reference for [`Tokenizer::bpe`]).
    fn bpe_by_rescanning(t: &Tokenizer, word: &[u8]) -> Vec<u32> {
        let (&last, head) = word.split_last().expect("a word");
        let mut syms: Vec<u32> = head.iter().map(|&b| t.byte_ids[usize::from(b)]).collect();
        syms.push(t.byte_ids_eow[usize::from(last)]);
        loop {
            let best = (0..syms.len().saturating_sub(1))
                .filter_map(|i| t.merges.get(&(syms[i], syms[i + 1])).map(|&m| (m, i)))
                .min_by_key(|&((rank, _), i)| (rank, i));
            let Some(((_, merged), i)) = best else {
                return syms;
            };
            syms[i] = merged;
            syms.remove(i + 1);
        }
    }

    #[test]
    fn heap_bpe_equals_the_rescanning_loop() {
        let t = Tokenizer::shared();
        let mut words: Vec<Vec<u8>> = ["a", "aa", "aaaaaaaaa", "lowerlowest", "photograph"]
            .iter()
            .map(|w| w.as_bytes().to_vec())
            .collect();
        words.push("ab".repeat(300).into_bytes());
        words.push("é".repeat(100).into_bytes());
        // pseudo-random words over small alphabets, so the same pairs repeat and overlap
        let mut x: u32 = 7;
        let mut rand = |m: u32| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) % m
        };
        for alphabet in [
            &b"ab"[..],
            b"aeiou",
            b"thesringo",
            b"abcdefghijklmnopqrstuvwxyz",
        ] {
            for len in [2, 3, 7, 16, 50, 400] {
                for _ in 0..20 {
                    let w = (0..len)
                        .map(|_| alphabet[rand(alphabet.len() as u32) as usize])
                        .collect();
                    words.push(w);
                }
            }
        }
        let all_bytes: Vec<u8> = (0..=255).cycle().step_by(37).take(600).collect();
        words.push(all_bytes);
        for w in &words {
            let mut fast = Vec::new();
            t.bpe(w, &mut fast);
            assert_eq!(
                fast,
                bpe_by_rescanning(t, w),
                "{:?}",
                String::from_utf8_lossy(w)
            );
        }
        assert!(words.len() > 480);
    }

    #[test]
    fn padding_per_model() {
        let t = Tokenizer::shared();
        let sd1 = t.encode_padded("a", 5, ClipPad::EndOfText);
        let sd2 = t.encode_padded("a", 5, ClipPad::Zero);
        assert_eq!(sd1, [BOS, 320, EOS, EOS, EOS]);
        assert_eq!(sd2, [BOS, 320, EOS, 0, 0]);
    }
}
