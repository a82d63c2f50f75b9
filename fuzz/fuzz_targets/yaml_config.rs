//! The LDM YAML config reader (`sumi_weights::config::read_ldm_yaml`) on arbitrary bytes
//! written to a tmpfs file.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;

fuzz_target!(|data: &[u8]| {
    let path = scratch::write("model", "yaml", data);
    let _ = sumi_weights::config::read_ldm_yaml(&path);
});
