//! sumi-sampling (placeholder)
