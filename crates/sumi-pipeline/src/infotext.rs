//! A1111 infotext (placeholder).
