//! Prompt editing and alternation: A1111's `get_learned_conditioning_prompt_schedules`.
//!
//! A1111 parses with a lark (Earley) grammar:
//!
//! ```text
//! !start: (prompt | /[][():]/+)*
//! prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
//! !emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
//! scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
//! alternate: "[" prompt ("|" [prompt])+ "]"
//! plain: /([^\\\[\]():|]|\\.)+/
//! ```
//!
//! and renders the text for each step at which something changes. This module reads the same
//! language with a hand-written parser:
//!
//! * Inside brackets the reading is unique: an item opened by `[` or `(` ends at its matching
//!   bracket, its parts are split by `:` / `|` at its own level, and the parts decide whether it
//!   is an emphasis (kept verbatim), a schedule `[from:to:when]` or an alternation `[a|b]`.
//! * At the top level, a bracket or `:` that cannot be read as part of an item is literal text.
//!   Lark chooses among the readings by its rule order: a prompt that is one whole item
//!   sequence beats literal brackets, and the last item beats a literal bracket. Where lark's
//!   choice is a tie (a run of two or more literal brackets after an item, e.g. `x[a:1]]`), its
//!   result depends on Python's string hash seed, random per A1111 run; Sumi then keeps the
//!   item (one of A1111's possible results).
//! * A `|` outside an alternation, or a `\` at the end or before a newline, makes the whole
//!   prompt unparseable: A1111 then uses the text as it is, with no schedule at all.
//!
//! Step numbers follow A1111's default timeline: a number with a `.` is a fraction of the steps
//! (`0.25` of 20 is step 5), one without is an absolute step; `int()` truncates and the result
//! is capped at the step count. An infinite number (`1e999`) makes A1111 raise.

use crate::error::{Place, PromptError, Stage};
use crate::pychar;

/// How step numbers in `[from:to:when]` are read (A1111's `get_learned_conditioning_prompt_schedules`
/// arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// Sampling steps (A1111's `base_steps`).
    pub steps: u32,
    /// Steps of the hires pass; with it, integers count from the end of the base pass and
    /// fractions above 1 are fractions of the hires pass (A1111's hires timeline).
    pub hires_steps: Option<u32>,
    /// A1111's "use old prompt editing timeline" option: numbers below 1 are fractions, others
    /// are steps, whether or not they contain a `.`.
    pub old_scheduling: bool,
}

impl Timeline {
    /// The default timeline for `steps` sampling steps.
    pub fn new(steps: u32) -> Self {
        Timeline {
            steps,
            hires_steps: None,
            old_scheduling: false,
        }
    }
}

/// One entry of a prompt schedule: `text` is used up to and including step `end_step`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScheduleEntry {
    /// Last step (1-based) at which `text` applies.
    pub end_step: u32,
    /// The prompt text for those steps.
    pub text: String,
}

/// Node of a parsed prompt; spans are character indices.
#[derive(Debug, Clone)]
enum Node {
    /// Text kept as it is (plain text, whitespace, emphasis brackets, literal brackets).
    Text(usize, usize),
    /// `[before:after:when]`; `before` is `None` for `[after:when]`.
    Scheduled {
        before: Option<Vec<Node>>,
        after: Vec<Node>,
        /// Character span of the number.
        number: (usize, usize),
    },
    /// `[a|b|…]`.
    Alternate(Vec<Vec<Node>>),
}

/// A bracket item could not be read.
struct Fail;

/// Deepest bracket nesting A1111 renders: its recursive lark `Transformer` raises
/// `RecursionError` beyond 245 levels (measured with lark 1.1.2 and Python's default limit in
/// a bare call; inside the web UI the limit is a little lower).
pub const MAX_NESTING: usize = 245;

/// A bracket item opened at some position.
#[derive(Debug, Clone)]
struct ItemInfo {
    /// Character index just past its closing bracket.
    end: usize,
    /// Bracket nesting depth (1 for an item with no item inside).
    depth: usize,
    /// Its nodes; empty when `depth > MAX_NESTING` (A1111 cannot render it).
    nodes: Vec<Node>,
}

struct Parser<'a> {
    chars: Vec<char>,
    /// Byte offset of each character, plus the text length at the end.
    bytes: Vec<usize>,
    text: &'a str,
    /// The item opened at each `[` / `(` that can be read as one.
    items: Vec<Option<ItemInfo>>,
}

fn is_special(c: char) -> bool {
    matches!(c, '\\' | '[' | ']' | '(' | ')' | ':' | '|')
}

fn is_bracket(c: char) -> bool {
    matches!(c, '[' | ']' | '(' | ')' | ':')
}

impl<'a> Parser<'a> {
    /// Reads every bracket item, right to left so that inner items are known first (no
    /// recursion, whatever the nesting).
    fn new(text: &'a str) -> Self {
        let chars: Vec<char> = text.chars().collect();
        let mut bytes: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        bytes.push(text.len());
        let n = chars.len();
        let mut p = Parser {
            chars,
            bytes,
            text,
            items: vec![None; n],
        };
        for i in (0..n).rev() {
            if matches!(p.chars[i], '[' | '(') {
                p.items[i] = p.read_item(i).ok();
            }
        }
        p
    }

    fn slice(&self, start: usize, end: usize) -> &'a str {
        &self.text[self.bytes[start]..self.bytes[end]]
    }

    /// End of the greedy `plain` token starting at `i` (`i` itself if none matches).
    fn plain_end(&self, mut i: usize) -> usize {
        let n = self.chars.len();
        while i < n {
            let c = self.chars[i];
            if c == '\\' {
                if i + 1 < n && self.chars[i + 1] != '\n' {
                    i += 2;
                } else {
                    break;
                }
            } else if is_special(c) {
                break;
            } else {
                i += 1;
            }
        }
        i
    }

    fn read_item(&self, i: usize) -> Result<ItemInfo, Fail> {
        let open = self.chars[i];
        let n = self.chars.len();
        // parts separated by ':' / '|' at this level: (start, end, nodes)
        let mut parts: Vec<(usize, usize, Vec<Node>)> = Vec::new();
        let mut seps: Vec<(char, usize)> = Vec::new();
        let mut cur: Vec<Node> = Vec::new();
        let mut part_start = i + 1;
        let mut depth = 1;
        let mut j = i + 1;
        let close = loop {
            if j >= n {
                return Err(Fail);
            }
            let c = self.chars[j];
            match c {
                '[' | '(' => {
                    let inner = self.items[j].as_ref().ok_or(Fail)?;
                    cur.extend(inner.nodes.iter().cloned());
                    depth = depth.max(inner.depth + 1);
                    j = inner.end;
                }
                ':' | '|' => {
                    parts.push((part_start, j, std::mem::take(&mut cur)));
                    seps.push((c, j));
                    j += 1;
                    part_start = j;
                }
                ']' | ')' => {
                    parts.push((part_start, j, std::mem::take(&mut cur)));
                    break c;
                }
                _ => {
                    let e = self.plain_end(j);
                    if e == j {
                        return Err(Fail); // a '\' that nothing matches
                    }
                    cur.push(Node::Text(j, e));
                    j = e;
                }
            }
        };
        let end = j + 1;
        let colons = seps.iter().filter(|(c, _)| *c == ':').count();
        let bars = seps.len() - colons;
        let verbatim = |parts: Vec<(usize, usize, Vec<Node>)>, seps: &[(char, usize)]| {
            let mut nodes = vec![Node::Text(i, i + 1)];
            for (k, (_, _, p)) in parts.into_iter().enumerate() {
                if k > 0 {
                    let (_, at) = seps[k - 1];
                    nodes.push(Node::Text(at, at + 1));
                }
                nodes.extend(p);
            }
            nodes.push(Node::Text(j, j + 1));
            nodes
        };
        let nodes = match (open, close) {
            ('(', ')') if bars == 0 && colons <= 1 => verbatim(parts, &seps),
            ('[', ']') if seps.is_empty() => verbatim(parts, &seps),
            ('[', ']') if colons == 0 => {
                vec![Node::Alternate(
                    parts.into_iter().map(|(_, _, p)| p).collect(),
                )]
            }
            ('[', ']') if bars == 0 && (colons == 1 || colons == 2) => {
                let (ns, ne, nnodes) = parts.pop().ok_or(Fail)?;
                let number = self.number_span(ns, ne, &nnodes)?;
                let after = parts.pop().ok_or(Fail)?.2;
                let before = parts.pop().map(|p| p.2);
                vec![Node::Scheduled {
                    before,
                    after,
                    number,
                }]
            }
            _ => return Err(Fail),
        };
        let nodes = if depth > MAX_NESTING {
            Vec::new()
        } else {
            nodes
        };
        Ok(ItemInfo { end, depth, nodes })
    }

    /// `[WHITESPACE] NUMBER [WHITESPACE]` over characters `s..e`: the number's span.
    fn number_span(&self, s: usize, e: usize, nodes: &[Node]) -> Result<(usize, usize), Fail> {
        if nodes.iter().any(|n| !matches!(n, Node::Text(..))) {
            return Err(Fail);
        }
        let mut a = s;
        while a < e && pychar::is_space(self.chars[a]) {
            a += 1;
        }
        let mut b = e;
        while b > a && pychar::is_space(self.chars[b - 1]) {
            b -= 1;
        }
        if is_lark_number(&self.chars[a..b]) {
            Ok((a, b))
        } else {
            Err(Fail)
        }
    }
}

/// lark's `common.SIGNED_NUMBER`, matched against the whole slice.
fn is_lark_number(s: &[char]) -> bool {
    let mut i = 0;
    let digits = |i: &mut usize| {
        let st = *i;
        while *i < s.len() && s[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - st
    };
    if i < s.len() && matches!(s[i], '+' | '-') {
        i += 1;
    }
    let int_digits = digits(&mut i);
    let mut frac_digits = 0;
    let mut dot = false;
    if i < s.len() && s[i] == '.' {
        dot = true;
        i += 1;
        frac_digits = digits(&mut i);
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if i < s.len() && matches!(s[i], 'e' | 'E') {
        i += 1;
        if i < s.len() && matches!(s[i], '+' | '-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    } else if !dot && int_digits == 0 {
        return false;
    }
    i == s.len()
}

/// Reads the prompt as lark's `start` rule: `None` where A1111's parse fails (the text is then
/// used as it is), else the top-level nodes of the reading lark picks.
fn parse(p: &Parser<'_>) -> Result<Option<Vec<Node>>, PromptError> {
    let n = p.chars.len();
    // reach[k]: the prefix 0..k is a sequence of top-level segments (lark's `start`).
    // whole[k]: the prefix 0..k is one `prompt` (items only, no literal brackets).
    // last_item[k]: start of an item (bracket item or plain run) ending at k from a reachable start.
    let mut reach = vec![false; n + 1];
    let mut whole = vec![false; n + 1];
    let mut last_item: Vec<Option<usize>> = vec![None; n + 1];
    reach[0] = true;
    whole[0] = true;
    for i in 0..n {
        if !reach[i] {
            continue;
        }
        let c = p.chars[i];
        if is_bracket(c) {
            reach[i + 1] = true;
        }
        let end = match c {
            '[' | '(' => p.items[i].as_ref().map(|it| it.end),
            ']' | ')' | ':' | '|' => None,
            _ => Some(p.plain_end(i)).filter(|&e| e > i),
        };
        if let Some(e) = end {
            reach[e] = true;
            if last_item[e].is_none() {
                last_item[e] = Some(i);
            }
            if whole[i] {
                whole[e] = true;
            }
        }
    }
    if !reach[n] {
        return Ok(None);
    }
    // Resolve from the end, as lark's rule order does (see the module docs).
    let first_text = p.chars.iter().position(|&c| !is_bracket(c)).unwrap_or(n);
    let mut segments: Vec<Vec<Node>> = Vec::new();
    let mut k = n;
    while k > 0 {
        if whole[k] {
            segments.push(items(p, 0, k)?);
            break;
        }
        if k <= first_text {
            segments.push(vec![Node::Text(0, k)]);
            break;
        }
        if let Some(s) = last_item[k] {
            segments.push(items(p, s, k)?);
            k = s;
        } else {
            segments.push(vec![Node::Text(k - 1, k)]);
            k -= 1;
        }
    }
    segments.reverse();
    Ok(Some(segments.into_iter().flatten().collect()))
}

/// The items (bracket items and plain runs) covering `s..e`, known to be a valid `prompt`.
fn items(p: &Parser<'_>, s: usize, e: usize) -> Result<Vec<Node>, PromptError> {
    let mut out = Vec::new();
    let mut i = s;
    while i < e {
        match p.chars[i] {
            '[' | '(' => match &p.items[i] {
                Some(it) if it.depth > MAX_NESTING => {
                    return Err(PromptError::TooDeep {
                        place: Place::new(p.text, p.bytes[i], p.bytes[it.end]),
                    });
                }
                Some(it) => {
                    out.extend(it.nodes.iter().cloned());
                    i = it.end;
                }
                None => {
                    // cannot happen for a span marked valid; keep the character literal
                    out.push(Node::Text(i, i + 1));
                    i += 1;
                }
            },
            _ => {
                let end = p.plain_end(i).max(i + 1).min(e);
                out.push(Node::Text(i, end));
                i = end;
            }
        }
    }
    Ok(out)
}

/// Step at which each schedule switches, as A1111's `CollectSteps`; errors on infinite numbers.
fn collect(
    p: &Parser<'_>,
    nodes: &[Node],
    tl: &Timeline,
    whens: &mut Vec<((usize, usize), i64)>,
    steps_out: &mut Vec<u32>,
    alternates: &mut bool,
) -> Result<(), PromptError> {
    for node in nodes {
        match node {
            Node::Text(..) => {}
            Node::Alternate(options) => {
                *alternates = true;
                for o in options {
                    collect(p, o, tl, whens, steps_out, alternates)?;
                }
            }
            Node::Scheduled {
                before,
                after,
                number,
            } => {
                if let Some(b) = before {
                    collect(p, b, tl, whens, steps_out, alternates)?;
                }
                collect(p, after, tl, whens, steps_out, alternates)?;
                let s = p.slice(number.0, number.1);
                let when = step_of(s, tl).ok_or_else(|| PromptError::StepOverflow {
                    stage: Stage::Schedule,
                    place: Place::new(p.text, p.bytes[number.0], p.bytes[number.1]),
                })?;
                if when >= 1 {
                    steps_out.push(when as u32);
                }
                whens.push((*number, when));
            }
        }
    }
    Ok(())
}

/// A1111's step for a NUMBER string: `min(steps, int(v))`; `None` where `int()` overflows.
fn step_of(s: &str, tl: &Timeline) -> Option<i64> {
    let (steps, int_offset, flt_offset) = match tl.hires_steps {
        Some(h) if !tl.old_scheduling => (h, tl.steps, 1.0),
        _ => (tl.steps, 0, 0.0),
    };
    let steps_f = f64::from(steps);
    let mut v: f64 = s.parse().ok()?;
    if tl.old_scheduling {
        if v < 1.0 {
            v *= steps_f;
        }
    } else if s.contains('.') {
        v = (v - flt_offset) * steps_f;
    } else {
        v -= f64::from(int_offset);
    }
    if !v.is_finite() {
        return None;
    }
    // `as` saturates; beyond i64 only the comparison with 1..=steps matters.
    Some((v.trunc() as i64).min(i64::from(steps)))
}

fn render(
    p: &Parser<'_>,
    nodes: &[Node],
    step: u32,
    whens: &[((usize, usize), i64)],
    out: &mut String,
) {
    for node in nodes {
        match node {
            Node::Text(s, e) => out.push_str(p.slice(*s, *e)),
            Node::Alternate(options) => {
                let idx = (step as usize - 1) % options.len();
                render(p, &options[idx], step, whens, out);
            }
            Node::Scheduled {
                before,
                after,
                number,
            } => {
                let when = whens
                    .iter()
                    .find(|(span, _)| span == number)
                    .map_or(0, |(_, w)| *w);
                if i64::from(step) <= when {
                    if let Some(b) = before {
                        render(p, b, step, whens, out);
                    }
                } else {
                    render(p, after, step, whens, out);
                }
            }
        }
    }
}

/// A1111's `get_learned_conditioning_prompt_schedules` for one prompt: the text to use up to
/// each step at which it changes, in step order; the last entry ends at the last step.
///
/// ```
/// use sumi_prompt::schedule::{prompt_schedule, Timeline};
/// let s = prompt_schedule("a [b:c:0.5]", &Timeline::new(10)).unwrap();
/// assert_eq!((s[0].end_step, s[0].text.as_str()), (5, "a b"));
/// assert_eq!((s[1].end_step, s[1].text.as_str()), (10, "a c"));
/// ```
pub fn prompt_schedule(text: &str, tl: &Timeline) -> Result<Vec<ScheduleEntry>, PromptError> {
    let steps = match tl.hires_steps {
        Some(h) if !tl.old_scheduling => h,
        _ => tl.steps,
    };
    if steps == 0 {
        return Err(PromptError::ZeroSteps(steps));
    }
    let p = Parser::new(text);
    let Some(nodes) = parse(&p)? else {
        return Ok(vec![ScheduleEntry {
            end_step: steps,
            text: text.to_string(),
        }]);
    };
    let mut whens = Vec::new();
    let mut at = vec![steps];
    let mut alternates = false;
    collect(&p, &nodes, tl, &mut whens, &mut at, &mut alternates)?;
    if alternates {
        at.extend(1..=steps);
    }
    at.sort_unstable();
    at.dedup();
    Ok(at
        .into_iter()
        .map(|step| {
            let mut out = String::new();
            render(&p, &nodes, step, &whens, &mut out);
            ScheduleEntry {
                end_step: step,
                text: out,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str, steps: u32) -> Vec<(u32, String)> {
        prompt_schedule(p, &Timeline::new(steps))
            .unwrap()
            .into_iter()
            .map(|e| (e.end_step, e.text))
            .collect()
    }

    fn s(v: &[(u32, &str)]) -> Vec<(u32, String)> {
        v.iter().map(|(a, b)| (*a, b.to_string())).collect()
    }

    #[test]
    fn lark_numbers() {
        let ok = |x: &str| is_lark_number(&x.chars().collect::<Vec<_>>());
        for good in [
            "1", "+1", "-1", "1.", ".5", "1.5", "1e5", "1.e5", ".5E-3", "12",
        ] {
            assert!(ok(good), "{good}");
            assert!(
                good.parse::<f64>().is_ok(),
                "Rust must read {good} like float()"
            );
        }
        for bad in ["", ".", "e5", "1e", "1.2.3", "+", "1 2", "１"] {
            assert!(!ok(bad), "{bad}");
        }
    }

    #[test]
    fn a1111_doctests() {
        assert_eq!(g("test", 10), s(&[(10, "test")]));
        assert_eq!(g("a [b:3]", 10), s(&[(3, "a "), (10, "a b")]));
        assert_eq!(g("a [b: 3]", 10), s(&[(3, "a "), (10, "a b")]));
        assert_eq!(g("a [[[b]]:2]", 10), s(&[(2, "a "), (10, "a [[b]]")]));
        assert_eq!(g("[(a:2):3]", 10), s(&[(3, ""), (10, "(a:2)")]));
        assert_eq!(
            g("a [b : c : 1] d", 10),
            s(&[(1, "a b  d"), (10, "a  c  d")])
        );
        assert_eq!(
            g("a[b:[c:d:2]:1]e", 10),
            s(&[(1, "abe"), (2, "ace"), (10, "ade")])
        );
        assert_eq!(g("a [unbalanced", 10), s(&[(10, "a [unbalanced")]));
        assert_eq!(g("a [b:.5] c", 10), s(&[(5, "a  c"), (10, "a b c")]));
        // The doctest A1111's code no longer satisfies: it expects [[5, 'a  c'], [10, 'a {b|d{ c']],
        // but the `|` outside a valid alternation makes the parse fail, so the text is kept.
        assert_eq!(g("a [{b|d{:.5] c", 10), s(&[(10, "a [{b|d{:.5] c")]));
        assert_eq!(
            g("((a][:b:c [d:3]", 10),
            s(&[(3, "((a][:b:c "), (10, "((a][:b:c d")])
        );
        let alt: Vec<(u32, String)> = (1..=10)
            .map(|i| (i, if i % 2 == 1 { "a" } else { "(b:1.1)" }.to_string()))
            .collect();
        assert_eq!(g("[a|(b:1.1)]", 10), alt);
        let fe: Vec<(u32, String)> = (1..=10)
            .map(|i| (i, if i % 2 == 1 { "female" } else { "male" }.to_string()))
            .collect();
        assert_eq!(g("[fe|]male", 10), fe);
        let fe3: Vec<(u32, String)> = (1..=10)
            .map(|i| (i, if i % 4 == 1 { "female" } else { "male" }.to_string()))
            .collect();
        assert_eq!(g("[fe|||]male", 10), fe3);
    }

    #[test]
    fn hires_timeline_doctests() {
        let tl = Timeline {
            steps: 10,
            hires_steps: Some(10),
            old_scheduling: false,
        };
        let r = |p: &str| -> Vec<(u32, String)> {
            prompt_schedule(p, &tl)
                .unwrap()
                .into_iter()
                .map(|e| (e.end_step, e.text))
                .collect()
        };
        assert_eq!(r("a [b:.5] c"), s(&[(10, "a b c")]));
        assert_eq!(r("a [b:1.5] c"), s(&[(5, "a  c"), (10, "a b c")]));
    }

    #[test]
    fn fractions_truncate_like_python_int() {
        // 0.29 * 100 = 28.999999999999996 in f64: A1111's int() gives 28.
        assert_eq!(g("[a:b:0.29]", 100), s(&[(28, "a"), (100, "b")]));
        // without a '.', the number is a step; with one, a fraction (1.5 of 10 = 15, capped)
        assert_eq!(g("[a:b:3]", 10), s(&[(3, "a"), (10, "b")]));
        assert_eq!(g("[a:b:1.5]", 10), s(&[(10, "a")]));
        assert_eq!(g("[a:b:0]", 10), s(&[(10, "b")]));
    }

    #[test]
    fn infinite_step_is_refused_with_its_place() {
        let e = prompt_schedule("x [a:b:1e999]", &Timeline::new(10)).unwrap_err();
        match e {
            PromptError::StepOverflow { place, .. } => {
                assert_eq!(place.snippet(), "1e999");
                assert_eq!(place.column(), 8);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bar_outside_alternation_keeps_whole_text() {
        assert_eq!(g("[a|b] c|d", 4), s(&[(4, "[a|b] c|d")]));
        assert_eq!(g("a\\", 4), s(&[(4, "a\\")]));
    }

    #[test]
    fn nesting_limit_as_a1111() {
        let deep = |n: usize| format!("{}a{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(g(&deep(MAX_NESTING), 2).len(), 1);
        let e = prompt_schedule(&deep(MAX_NESTING + 1), &Timeline::new(2)).unwrap_err();
        assert!(matches!(e, PromptError::TooDeep { .. }), "{e:?}");
        // unclosed brackets are literal text at any depth
        let open = "[".repeat(5000) + "a:1";
        assert_eq!(g(&open, 2), s(&[(2, open.as_str())]));
    }

    #[test]
    fn hash_seed_tie_keeps_the_item() {
        // A1111 gives either reading depending on PYTHONHASHSEED; Sumi keeps the schedule.
        assert_eq!(g("x[a:1]]", 10), s(&[(1, "x]"), (10, "xa]")]));
    }
}
