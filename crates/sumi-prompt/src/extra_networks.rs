//! Extra networks (`<lora:name:0.8>`, `<hypernet:…>`): A1111's `extra_networks.parse_prompt`,
//! which removes every `<(\w+):([^>]+)>` from the prompt before anything else reads it.

use crate::pychar;

/// One `<name:arg:…>` found in a prompt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExtraNetwork {
    /// The network kind before the first `:` (`lora`, `hypernet`, …).
    pub name: String,
    /// The rest split on `:` (for `lora`: file name, then multipliers).
    pub args: Vec<String>,
}

/// Removes the extra-network tags from `prompt`; returns the remaining text and the tags in
/// order of appearance.
///
/// ```
/// use sumi_prompt::extra_networks::extract;
/// let (text, nets) = extract("a cat <lora:fluffy:0.8>");
/// assert_eq!(text, "a cat ");
/// assert_eq!(nets[0].args, ["fluffy", "0.8"]);
/// ```
pub fn extract(prompt: &str) -> (String, Vec<ExtraNetwork>) {
    let mut out = String::with_capacity(prompt.len());
    let mut nets = Vec::new();
    let mut last = 0;
    let mut i = 0;
    while let Some(off) = prompt[i..].find('<') {
        let start = i + off;
        match tag_at(&prompt[start..]) {
            Some((name, args, len)) => {
                out.push_str(&prompt[last..start]);
                nets.push(ExtraNetwork {
                    name: name.to_string(),
                    args: args.split(':').map(str::to_string).collect(),
                });
                last = start + len;
                i = last;
            }
            None => i = start + 1,
        }
    }
    out.push_str(&prompt[last..]);
    (out, nets)
}

/// `<(\w+):([^>]+)>` at the start of `s`: (name, args, match length).
fn tag_at(s: &str) -> Option<(&str, &str, usize)> {
    let body = &s[1..];
    let name_len = body
        .char_indices()
        .find(|(_, c)| !pychar::is_word(*c))
        .map_or(body.len(), |(k, _)| k);
    if name_len == 0 || !body[name_len..].starts_with(':') {
        return None;
    }
    let rest = &body[name_len + 1..];
    let args_len = rest.find('>')?;
    if args_len == 0 {
        return None;
    }
    Some((
        &body[..name_len],
        &rest[..args_len],
        1 + name_len + 1 + args_len + 1,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_removed_in_order() {
        let (t, n) = extract("<lora:x:1><lyco:y:0.2> z");
        assert_eq!(t, " z");
        assert_eq!(n[0].name, "lora");
        assert_eq!(n[1].args, ["y", "0.2"]);
    }

    #[test]
    fn not_tags() {
        for p in ["a <b> c", "<:x>", "<lo ra:x>", "<lora:>", "<lora:x"] {
            let (t, n) = extract(p);
            assert_eq!(t, p);
            assert!(n.is_empty());
        }
        let (t, n) = extract("<lora:<lora:x:1>");
        assert_eq!(t, "");
        assert_eq!(n[0].args, ["<lora", "x", "1"]);
    }
}
