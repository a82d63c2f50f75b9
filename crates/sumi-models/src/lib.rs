//! sumi-models (placeholder)
