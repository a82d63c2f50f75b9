//! PNG (placeholder).
