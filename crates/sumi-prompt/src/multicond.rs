//! Composable prompts: A1111's `get_multicond_prompt_list`, the split on the word `AND` with an
//! optional `:weight` at the end of each part.

use crate::pychar;

/// One `AND` part of a prompt with its weight for the CFG combination.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SubPrompt {
    /// The part's text: trailing whitespace and the `:weight` removed, leading whitespace kept.
    pub text: String,
    /// Its weight (1 where none is given).
    pub weight: f64,
}

/// Splits `prompt` on `AND` as a whole word (Python's `\bAND\b`), then reads each part as
/// A1111's `re_weight` does: `text`, then optionally `\s*:\s*` and a number
/// (`[-+]?(\d+\.?|\d*\.\d+)`), then trailing whitespace.
///
/// ```
/// use sumi_prompt::multicond::split_and;
/// let parts = split_and("a cat AND a dog:0.5");
/// assert_eq!((parts[0].text.as_str(), parts[0].weight), ("a cat", 1.0));
/// assert_eq!((parts[1].text.as_str(), parts[1].weight), (" a dog", 0.5));
/// ```
pub fn split_and(prompt: &str) -> Vec<SubPrompt> {
    split_words(prompt, "AND")
        .into_iter()
        .map(read_weight)
        .collect()
}

/// `re.split(r"\bWORD\b", text)`.
fn split_words<'a>(text: &'a str, word: &str) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let mut last = 0;
    let mut search = 0;
    let first = word.chars().next();
    let end_char = word.chars().next_back();
    while let Some(off) = text[search..].find(word) {
        let p = search + off;
        let before = text[..p].chars().next_back();
        let after = text[p + word.len()..].chars().next();
        if pychar::is_boundary(before, first) && pychar::is_boundary(end_char, after) {
            parts.push(&text[last..p]);
            last = p + word.len();
            search = last;
        } else {
            search = p + 1;
        }
    }
    parts.push(&text[last..]);
    parts
}

/// `re_weight = ^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$` on one part.
fn read_weight(part: &str) -> SubPrompt {
    let trimmed = part.trim_end_matches(pychar::is_space);
    if let Some(colon) = trimmed.rfind(':') {
        let number = trimmed[colon + 1..].trim_start_matches(pychar::is_space);
        if is_weight_number(number) {
            if let Some(weight) = pychar::parse_float(number) {
                let text = trimmed[..colon].trim_end_matches(pychar::is_space);
                return SubPrompt {
                    text: text.to_string(),
                    weight,
                };
            }
        }
    }
    SubPrompt {
        text: trimmed.to_string(),
        weight: 1.0,
    }
}

/// `[-+]?(?:\d+\.?|\d*\.\d+)` matching all of `s` (`\d`: any decimal digit).
fn is_weight_number(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let is_digit = |c: char| pychar::decimal_value(c).is_some();
    let (int, frac) = match body.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (body, None),
    };
    let int_ok = int.chars().all(is_digit);
    match frac {
        None => !int.is_empty() && int_ok,
        Some(f) => int_ok && f.chars().all(is_digit) && !(int.is_empty() && f.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(p: &str) -> Vec<(String, f64)> {
        split_and(p)
            .into_iter()
            .map(|x| (x.text, x.weight))
            .collect()
    }

    #[test]
    fn and_with_weights() {
        assert_eq!(
            s("a:1.5 AND b : 0.25 "),
            vec![("a".to_string(), 1.5), (" b".to_string(), 0.25)]
        );
        assert_eq!(s("a ANDb AND c").len(), 2);
        assert_eq!(s("a:1. AND b:.5 AND c:.")[2], (" c:.".to_string(), 1.0));
        assert_eq!(s("cat AND dog:-1")[1], (" dog".to_string(), -1.0));
        assert_eq!(s("(a:1.2)"), vec![("(a:1.2)".to_string(), 1.0)]);
        assert_eq!(s("a:b:2"), vec![("a:b".to_string(), 2.0)]);
        assert_eq!(s("AND"), vec![(String::new(), 1.0), (String::new(), 1.0)]);
    }
}
