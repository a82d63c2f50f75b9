//! `sumi-testkit`: what Sumi's test suites share, used only as a dev-dependency.
//!
//! * [`synth`](mod@synth): the deterministic synthetic weights (a tensor's values from its
//!   name alone), bit for bit those of `tools/reference/synth_weights.py`;
//! * [`tiny`]: the tiny-model materialiser, which turns a `fixtures/tiny/<arch>` manifest into
//!   checkpoint files, checking every tensor against the reference's checksum;
//! * [`fixture`]: fixture paths and loaders that fail on a missing or empty fixture (a file of
//!   zero bytes, a JSON document or case list with nothing in it, a tensor file without
//!   tensors) and typed case lists with count guards, so a suite cannot pass by testing nothing;
//! * [`measure`]: the one definition of max |x| and of relative error the suites compare with;
//! * [`mock_hub`]: a Hugging Face Hub on 127.0.0.1 (resolve with ranges, LFS ETags, model
//!   info) with faults on demand, for the tests of Hub downloads.
//!
//! It depends on no Sumi crate, so every crate's tests (those of `sumi-weights` included) can
//! use it, and the files it writes do not come from the code under test.

pub mod fixture;
pub mod measure;
pub mod mock_hub;
pub mod synth;
pub mod tiny;

pub use fixture::{fixtures, repo_root, Cases, FixtureError};
pub use measure::{max_abs, max_abs_diff, rel_err, rel_err_floor};
pub use synth::synth;
pub use tiny::{materialize, tiny_fixture, tiny_model, Storage};
