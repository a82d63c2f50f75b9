//! `sumi-server`'s HTTP behaviour in process, against a fake backend (no model file, a few
//! milliseconds a step): routing, request parsing, defaults and validation with every error
//! status, the queue, progress, interrupt and skip, shutdown, metrics, auth, listings, slow
//! clients, uploaded images, the web page's assets and network previews.
//! End-to-end tests that spawn the real binary on a tiny model are in `sumi-cli/tests/serve_*`.

mod api;
mod common;
mod control;
mod errors;
mod extras;
mod extras_queue;
mod fake;
mod listing;
mod page;
mod png_info_exif;
mod security;
mod timeouts;
mod uploads;
mod worker;
