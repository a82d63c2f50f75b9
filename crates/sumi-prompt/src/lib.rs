//! sumi-prompt (placeholder)
