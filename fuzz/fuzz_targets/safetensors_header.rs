//! The safetensors header parser (`sumi_weights::safetensors::parse_header`) on arbitrary
//! bytes, then the file and embedding readers on the same bytes as a `.safetensors` file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

#[path = "scratch.rs"]
mod scratch;

fuzz_target!(|data: &[u8]| {
    if let Ok((entries, _metadata, _data_start)) =
        sumi_weights::safetensors::parse_header(data, Path::new("fuzz.safetensors"))
    {
        let path = scratch::write("model", "safetensors", data);
        let file = sumi_weights::safetensors::SafetensorsFile::open(&path)
            .expect("a header parse_header accepts must open");
        assert_eq!(file.entries().len(), entries.len());
        for e in file.entries() {
            let _ = file.bytes(e);
        }
        let _ = sumi_weights::embedding::Embedding::load(&path);
    }
});
