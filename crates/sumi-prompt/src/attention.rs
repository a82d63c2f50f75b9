//! Emphasis: A1111's `parse_prompt_attention`, text to `(segment, weight)` pairs.
//!
//! `(x)` multiplies by 1.1, `[x]` divides by 1.1, `(x:w)` multiplies by `w`; nesting multiplies
//! (in A1111's order, so the f64 results are bit-identical); `\(`, `\)`, `\[`, `\]`, `\\` are
//! literal characters; unclosed brackets apply to the end of the text; a stray `)` or `]` is
//! literal. `BREAK` as a word splits a segment and yields the marker `("BREAK", -1.0)`.
//! Adjacent segments with equal weights are merged, as A1111 does (two markers in a row merge
//! into `("BREAKBREAK", -1.0)` there too).

use crate::error::{Place, PromptError, Stage};
use crate::pychar;

/// The weight A1111 gives the `BREAK` marker segment.
pub const BREAK_WEIGHT: f64 = -1.0;

/// One `(text, weight)` pair of A1111's `parse_prompt_attention` output.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The text of the segment (brackets and escapes removed).
    pub text: String,
    /// The attention multiplier (`-1` for the `BREAK` marker).
    pub weight: f64,
    /// A1111's marker weight is the Python int `-1` until a bracket multiplies it; kept so
    /// the JSON shows `-1` exactly where A1111's would.
    int_weight: bool,
}

impl Segment {
    /// Whether this is a `BREAK` marker as A1111's chunker recognises it (text `BREAK`, weight
    /// exactly -1; a `BREAK` inside brackets gets another weight and is then plain text).
    pub fn is_break(&self) -> bool {
        self.text == "BREAK" && self.weight == BREAK_WEIGHT
    }

    /// A text segment.
    pub fn new(text: impl Into<String>, weight: f64) -> Self {
        Segment {
            text: text.into(),
            weight,
            int_weight: false,
        }
    }

    fn marker() -> Self {
        Segment {
            text: "BREAK".to_string(),
            weight: BREAK_WEIGHT,
            int_weight: true,
        }
    }
}

impl serde::Serialize for Segment {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.text)?;
        if self.int_weight {
            t.serialize_element(&(self.weight as i64))?;
        } else {
            t.serialize_element(&self.weight)?;
        }
        t.end()
    }
}

/// A token of A1111's `re_attention`, with its byte span.
enum Tok<'a> {
    /// `\(` and the other escapes, or a lone `\`: literal text (the char after the backslash).
    Escape(&'a str),
    Open(char),
    /// `:w)`: the captured weight string and its span.
    WeightClose(&'a str, usize, usize),
    Close(char),
    Text,
}

/// Scans `text` with the alternatives of A1111's `re_attention`, in its order.
fn tokens(text: &str) -> Vec<(Tok<'_>, usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    let len = text.len();
    while i < len {
        let rest = &text[i..];
        let mut chars = rest.chars();
        let Some(c) = chars.next() else { break };
        let cl = c.len_utf8();
        match c {
            '\\' => {
                let next = chars.next();
                if let Some(n @ ('(' | ')' | '[' | ']' | '\\')) = next {
                    out.push((
                        Tok::Escape(&rest[1..1 + n.len_utf8()]),
                        i,
                        i + 1 + n.len_utf8(),
                    ));
                    i += 1 + n.len_utf8();
                } else {
                    out.push((Tok::Escape(""), i, i + 1));
                    i += 1;
                }
            }
            '(' | '[' => {
                out.push((Tok::Open(c), i, i + 1));
                i += 1;
            }
            ':' => {
                if let Some((ws, we, end)) = weight_close(rest) {
                    out.push((Tok::WeightClose(&rest[ws..we], i + ws, i + we), i, i + end));
                    i += end;
                } else {
                    out.push((Tok::Text, i, i + 1));
                    i += 1;
                }
            }
            ')' | ']' => {
                out.push((Tok::Close(c), i, i + 1));
                i += 1;
            }
            _ => {
                let end = rest
                    .char_indices()
                    .find(|(_, ch)| matches!(ch, '\\' | '(' | ')' | '[' | ']' | ':'))
                    .map_or(rest.len(), |(k, _)| k);
                out.push((Tok::Text, i, i + end));
                i += end;
            }
        }
        debug_assert!(cl > 0);
    }
    out
}

/// `:\s*([+-]?[.\d]+)\s*\)` at the start of `s`: (weight start, weight end, match end).
fn weight_close(s: &str) -> Option<(usize, usize, usize)> {
    let mut it = s.char_indices().skip(1).peekable();
    let mut ws = s.len();
    while let Some(&(k, c)) = it.peek() {
        if pychar::is_space(c) {
            it.next();
        } else {
            ws = k;
            break;
        }
    }
    let mut we = ws;
    let mut first = true;
    let mut count = 0;
    while let Some(&(k, c)) = it.peek() {
        let ok =
            (first && matches!(c, '+' | '-')) || c == '.' || pychar::decimal_value(c).is_some();
        if !ok {
            break;
        }
        if c == '.' || pychar::decimal_value(c).is_some() {
            count += 1;
        }
        first = false;
        it.next();
        we = k + c.len_utf8();
    }
    if count == 0 {
        return None;
    }
    while let Some(&(_, c)) = it.peek() {
        if pychar::is_space(c) {
            it.next();
        } else {
            break;
        }
    }
    match it.next() {
        Some((k, ')')) => Some((ws, we, k + 1)),
        _ => None,
    }
}

/// `re.split(r"\s*\bBREAK\b\s*", text)`.
fn split_break(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut last = 0; // end of the previous match
    let mut search = 0;
    while let Some(off) = text[search..].find("BREAK") {
        let p = search + off;
        let before = text[..p].chars().next_back();
        let after = text[p + 5..].chars().next();
        let boundary_before = pychar::is_boundary(before, Some('B'));
        let boundary_after = pychar::is_boundary(Some('K'), after);
        if boundary_before && boundary_after {
            let mut start = p;
            while start > last {
                match text[last..start].chars().next_back() {
                    Some(c) if pychar::is_space(c) => start -= c.len_utf8(),
                    _ => break,
                }
            }
            let mut end = p + 5;
            while let Some(c) = text[end..].chars().next() {
                if pychar::is_space(c) {
                    end += c.len_utf8();
                } else {
                    break;
                }
            }
            parts.push(&text[last..start]);
            last = end;
            search = end;
        } else {
            search = p + 1;
        }
    }
    parts.push(&text[last..]);
    parts
}

/// A1111's `parse_prompt_attention`: the text split into segments with their weights.
///
/// Fails where A1111 raises: a `(text:w)` weight that Python's `float()` refuses, such as
/// `(abc:1.2.3)`.
///
/// ```
/// use sumi_prompt::attention::parse_prompt_attention;
/// let s = parse_prompt_attention("an (important) word").unwrap();
/// assert_eq!(s[1].text, "important");
/// assert_eq!(s[1].weight, 1.1);
/// ```
pub fn parse_prompt_attention(text: &str) -> Result<Vec<Segment>, PromptError> {
    let mut res: Vec<Segment> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let round_mult = 1.1_f64;
    let square_mult = 1.0_f64 / 1.1_f64;
    fn multiply(res: &mut [Segment], start: usize, m: f64) {
        for s in res.iter_mut().skip(start) {
            s.weight *= m;
            s.int_weight = false;
        }
    }
    for (tok, start, end) in tokens(text) {
        match tok {
            Tok::Escape(lit) => res.push(Segment::new(lit, 1.0)),
            Tok::Open('(') => round.push(res.len()),
            Tok::Open(_) => square.push(res.len()),
            Tok::WeightClose(w, ws, we) if !round.is_empty() => {
                let m = pychar::parse_float(w).ok_or_else(|| PromptError::InvalidWeight {
                    stage: Stage::Attention,
                    place: Place::new(text, ws, we),
                })?;
                if let Some(pos) = round.pop() {
                    multiply(&mut res, pos, m);
                }
            }
            Tok::Close(')') if !round.is_empty() => {
                if let Some(pos) = round.pop() {
                    multiply(&mut res, pos, round_mult);
                }
            }
            Tok::Close(']') if !square.is_empty() => {
                if let Some(pos) = square.pop() {
                    multiply(&mut res, pos, square_mult);
                }
            }
            _ => {
                let raw = &text[start..end];
                for (i, part) in split_break(raw).into_iter().enumerate() {
                    if i > 0 {
                        res.push(Segment::marker());
                    }
                    res.push(Segment::new(part, 1.0));
                }
            }
        }
    }
    for pos in round {
        multiply(&mut res, pos, round_mult);
    }
    for pos in square {
        multiply(&mut res, pos, square_mult);
    }
    if res.is_empty() {
        res.push(Segment::new("", 1.0));
    }
    let mut i = 0;
    while i + 1 < res.len() {
        if res[i].weight == res[i + 1].weight {
            let next = res.remove(i + 1);
            res[i].text.push_str(&next.text);
        } else {
            i += 1;
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: &str) -> Vec<(String, f64)> {
        parse_prompt_attention(t)
            .unwrap()
            .into_iter()
            .map(|s| (s.text, s.weight))
            .collect()
    }

    fn v(x: &[(&str, f64)]) -> Vec<(String, f64)> {
        x.iter().map(|(a, b)| (a.to_string(), *b)).collect()
    }

    #[test]
    fn a1111_doctests() {
        assert_eq!(p("normal text"), v(&[("normal text", 1.0)]));
        assert_eq!(
            p("an (important) word"),
            v(&[("an ", 1.0), ("important", 1.1), (" word", 1.0)])
        );
        assert_eq!(p("(unbalanced"), v(&[("unbalanced", 1.1)]));
        assert_eq!(p("\\(literal\\]"), v(&[("(literal]", 1.0)]));
        assert_eq!(p("(unnecessary)(parens)"), v(&[("unnecessaryparens", 1.1)]));
        assert_eq!(
            p("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
            v(&[
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ])
        );
    }

    #[test]
    fn breaks() {
        assert_eq!(
            p("a BREAK b"),
            v(&[("a", 1.0), ("BREAK", -1.0), ("b", 1.0)])
        );
        assert_eq!(p("aBREAK b"), v(&[("aBREAK b", 1.0)]));
        // inside brackets the marker's -1 is multiplied: A1111 then reads it as text
        let r = parse_prompt_attention("(a BREAK b)").unwrap();
        assert_eq!(r[1].text, "BREAK");
        assert!((r[1].weight + 1.1).abs() < 1e-15 && !r[1].is_break());
    }

    #[test]
    fn invalid_weight_points_at_it() {
        let e = parse_prompt_attention("x (abc:1.2.3)").unwrap_err();
        let PromptError::InvalidWeight { place, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(place.snippet(), "1.2.3");
        assert_eq!(place.column(), 8);
        // without an open '(' A1111 never converts it: plain text
        assert_eq!(p("abc:1.2.3)"), v(&[("abc:1.2.3)", 1.0)]));
    }

    #[test]
    fn weight_with_spaces_and_unicode_digits() {
        assert_eq!(p("(a: 1.5 )"), v(&[("a", 1.5)]));
        assert_eq!(p("(a:١.٥)"), v(&[("a", 1.5)]));
    }
}
