//! Character classes as Python's `re` module and `float()` see them on `str`, so that A1111's
//! regular expressions (`\s`, `\w`, `\b`, `\d`) read the same characters in Rust.

use std::sync::OnceLock;

use regex::Regex;

/// Python's `\s` / `str.isspace()`: bidirectional class WS, B or S, or category Zs.
pub(crate) fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\u{b}'
            | '\u{c}'
            | '\r'
            | '\u{1c}'..='\u{1f}'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// Python's `\w` on `str`: alphanumeric (letters and all numeric characters) or `_`.
///
/// Rust's `is_alphanumeric` also counts combining marks with the Other_Alphabetic property
/// (e.g. Devanagari vowel signs) that Python does not; that is the one known difference.
pub(crate) fn is_word(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Python's `\b` between the characters before and after a position (`None` at the ends).
pub(crate) fn is_boundary(before: Option<char>, after: Option<char>) -> bool {
    before.is_some_and(is_word) != after.is_some_and(is_word)
}

fn decimal_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^\p{Nd}$").expect("static regex"))
}

/// The value of a Unicode decimal digit (category Nd, Python's `\d`), or `None`.
///
/// Unicode guarantees that decimal digits come in contiguous runs of ten, 0 to 9, so the value
/// is the distance from the start of the run of Nd characters modulo 10.
pub(crate) fn decimal_value(c: char) -> Option<u32> {
    if c.is_ascii_digit() {
        return Some(c as u32 - '0' as u32);
    }
    if c.is_ascii() {
        return None;
    }
    let is_nd = |c: char| {
        let mut buf = [0u8; 4];
        decimal_regex().is_match(c.encode_utf8(&mut buf))
    };
    if !is_nd(c) {
        return None;
    }
    let mut start = c as u32;
    while let Some(prev) = start.checked_sub(1).and_then(char::from_u32) {
        if !is_nd(prev) {
            break;
        }
        start -= 1;
    }
    Some((c as u32 - start) % 10)
}

/// Python's `float()` on a string made of an optional sign, decimal digits (any script) and
/// dots, as A1111's weight patterns capture. `None` where Python raises `ValueError`.
pub(crate) fn parse_float(s: &str) -> Option<f64> {
    let mut ascii = String::with_capacity(s.len());
    let mut digits = 0usize;
    let mut dots = 0usize;
    for (i, c) in s.chars().enumerate() {
        match c {
            '+' | '-' if i == 0 => ascii.push(c),
            '.' => {
                dots += 1;
                ascii.push('.');
            }
            _ => {
                let d = decimal_value(c)?;
                digits += 1;
                ascii.push(char::from_digit(d, 10)?);
            }
        }
    }
    if digits == 0 || dots > 1 {
        return None;
    }
    ascii.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace_includes_separators_but_not_zero_width() {
        assert!(is_space('\u{1c}') && is_space('\u{85}') && is_space('\u{3000}'));
        assert!(!is_space('\u{200b}') && !is_space('\u{feff}') && !is_space('\u{180e}'));
    }

    #[test]
    fn decimal_digits_of_other_scripts() {
        assert_eq!(decimal_value('٣'), Some(3));
        assert_eq!(decimal_value('９'), Some(9));
        assert_eq!(decimal_value('𝟘'), Some(0));
        assert_eq!(decimal_value('𝟙'), Some(1));
        assert_eq!(decimal_value('①'), None);
        assert_eq!(decimal_value('x'), None);
    }

    #[test]
    fn float_like_python() {
        assert_eq!(parse_float("1."), Some(1.0));
        assert_eq!(parse_float(".5"), Some(0.5));
        assert_eq!(parse_float("-.5"), Some(-0.5));
        assert_eq!(parse_float("١.٥"), Some(1.5));
        assert_eq!(parse_float("1.2.3"), None);
        assert_eq!(parse_float("."), None);
        assert_eq!(parse_float("+"), None);
    }
}
