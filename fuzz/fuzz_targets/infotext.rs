//! A1111 infotext parsing (`sumi_pipeline::infotext::parse_generation_parameters`) on any
//! UTF-8 text, with the defaults A1111 adds and the JSON output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sumi_pipeline::infotext::parse_generation_parameters;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let p = parse_generation_parameters(text);
    let _ = p.pairs();
    let json = p.with_a1111_defaults().to_json();
    serde_json::from_str::<serde_json::Value>(&json).expect("to_json writes valid JSON");
});
