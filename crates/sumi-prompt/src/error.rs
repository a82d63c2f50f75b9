//! Errors for prompts A1111 refuses, each pointing at the place in the text that was being read.

use std::fmt;

/// Which stage of A1111's prompt reading a [`PromptError`] comes from, and so which text its
/// position refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// `get_learned_conditioning_prompt_schedules` on one `AND` part (the text after extra
    /// networks were removed and the `AND` split made).
    Schedule,
    /// `parse_prompt_attention` on the text of one schedule entry.
    Attention,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Schedule => f.write_str("prompt schedule"),
            Stage::Attention => f.write_str("emphasis"),
        }
    }
}

/// A place in a text: the text itself, a byte range in it and the 1-based character column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The text that was being parsed (an `AND` part or a schedule entry's text).
    pub text: String,
    /// Byte offset of the offending part in `text`.
    pub start: usize,
    /// Byte offset just past the offending part.
    pub end: usize,
}

impl Place {
    /// A place covering `start..end` (byte offsets) of `text`.
    pub fn new(text: &str, start: usize, end: usize) -> Self {
        Place {
            text: text.to_string(),
            start,
            end,
        }
    }

    /// 1-based character column of the start.
    pub fn column(&self) -> usize {
        self.text
            .get(..self.start)
            .map_or(1, |s| s.chars().count() + 1)
    }

    /// The offending part itself.
    pub fn snippet(&self) -> &str {
        self.text.get(self.start..self.end).unwrap_or("")
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line with the text (newlines shown as ⏎) and a caret line under the place.
        let shown: String = self
            .text
            .chars()
            .map(|c| if c == '\n' { '⏎' } else { c })
            .collect();
        let col = self.column();
        let width = self.snippet().chars().count().max(1);
        write!(
            f,
            "column {col}: `{}`\n    {shown}\n    {}{}",
            self.snippet(),
            " ".repeat(col - 1),
            "^".repeat(width)
        )
    }
}

/// A prompt that A1111 refuses (its code raises), so Sumi refuses it too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// `(text:w)` where `w` matches A1111's weight pattern `[+-]?[.\d]+` but is no number,
    /// e.g. `(abc:1.2.3)`: A1111's `float()` raises `ValueError`.
    #[error("{stage}: invalid emphasis weight at {place}\n(A1111 raises ValueError: the weight after `:` must be one number such as 1.2)")]
    InvalidWeight {
        /// The stage reading the text.
        stage: Stage,
        /// Where the weight is.
        place: Place,
    },
    /// `[a:b:when]` whose `when` is infinite (e.g. `1e999`): A1111's `int()` raises
    /// `OverflowError`.
    #[error("{stage}: step number out of range at {place}\n(A1111 raises OverflowError: the step must be finite)")]
    StepOverflow {
        /// The stage reading the text.
        stage: Stage,
        /// Where the number is.
        place: Place,
    },
    /// Brackets nested deeper than A1111 can render ([`crate::schedule::MAX_NESTING`]
    /// levels): A1111 raises `RecursionError`.
    #[error("prompt schedule: brackets nested more than 245 levels deep at {place}\n(A1111 raises RecursionError)")]
    TooDeep {
        /// The bracket where the limit was hit.
        place: Place,
    },
    /// The step count given for a schedule is zero.
    #[error("steps must be at least 1 (got {0})")]
    ZeroSteps(u32),
}
