//! What the CLI prints: text that came from files or prompts (PNG text chunks, prompts,
//! tensor names, error details) has its control characters escaped, so that a crafted PNG
//! cannot move the cursor, retitle the terminal or hide text, whether stdout is a terminal
//! or not; and a closed stdout (`sumi png-info x.png | head -0`) ends the command quietly.
//!
//! Escaped, always: C0 controls except newline and tab, DEL, and the C1 controls
//! U+0080–U+009F, each written as JSON spells it, `\u001b`, so that JSON output stays valid.

use std::borrow::Cow;
use std::io::Write;

/// Whether `c` is escaped by [`escape_controls`].
fn is_escaped(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') && (c as u32) < 0xA0
}

/// `s` with every C0 control but `\n` and `\t`, DEL and every C1 control written `\u00XX`.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_escaped) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_escaped(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Writes `text` (escaped) to stdout. A closed stdout comes back as an `io::Error` of kind
/// `BrokenPipe`, which `main` turns into a quiet exit.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(escape_controls(text).as_bytes())?;
    out.flush()
}

/// [`print`] with a newline.
pub fn println(text: &str) -> std::io::Result<()> {
    print(&format!("{text}\n"))
}

/// Whether `e` (or one of its causes) is a write to a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn controls_are_escaped_newlines_and_tabs_kept() {
        assert_eq!(
            escape_controls("a\x1b]0;pwned\x07b\r\n\tc\u{9b}2Jd\u{7f}é"),
            "a\\u001b]0;pwned\\u0007b\\u000d\n\tc\\u009b2Jd\\u007fé"
        );
        assert!(matches!(
            escape_controls("plain\ttext\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
