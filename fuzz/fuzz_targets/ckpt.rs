//! The PyTorch zip archive reader (`sumi_weights::ckpt::CkptFile`) and the `.pt` embedding
//! reader, on a tmpfs file: open, then every tensor's bytes.
//!
//! An input that starts as a zip (`PK\x03\x04`) is the file itself. Any other input is a
//! `data.pkl`: it is wrapped in an archive laid out as `torch.save` writes one, with a record
//! of the declared size for each storage its persistent ids name (zeros past 1 MiB in all are
//! left out; records whose key starts with an odd byte are deflated), so that the fuzzer
//! reaches the tensor checks (shapes, strides, offsets) past the zip's CRCs.
#![no_main]

use std::cell::RefCell;
use std::io::Write;

use libfuzzer_sys::fuzz_target;
use sumi_weights::pickle::{self, PickleError, Value};
use sumi_weights::StorageDtype;

#[path = "scratch.rs"]
mod scratch;

/// Most record bytes written for one input.
const MAX_RECORDS: u64 = 1 << 20;

/// `(key, storage class, element count)` of each persistent id of a torch pickle.
fn declared_storages(pkl: &[u8]) -> Vec<(String, String, u64)> {
    let seen = RefCell::new(Vec::new());
    let _ = pickle::read(pkl, &|pid| {
        if let Value::Tuple(t) = &pid {
            if let [Value::Str(_), Value::Global(_, kind), Value::Str(key), _, Value::Int(n), ..] =
                t.as_slice()
            {
                seen.borrow_mut()
                    .push((key.clone(), kind.clone(), (*n).max(0) as u64));
                return Ok(Value::Storage {
                    kind: kind.clone(),
                    key: key.clone(),
                });
            }
        }
        Err(PickleError::Malformed("persistent id".into()))
    });
    seen.into_inner()
}

/// A torch-layout zip around `pkl`.
fn archive(pkl: &[u8]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod;
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    let deflated = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut budget = MAX_RECORDS;
    let write = |zip: &mut zip::ZipWriter<_>, name: &str, bytes: &[u8], opts| {
        zip.start_file(name, opts).expect("zip entry");
        zip.write_all(bytes).expect("zip write");
    };
    write(&mut zip, "archive/data.pkl", pkl, stored);
    let mut done = std::collections::HashSet::new();
    for (key, kind, numel) in declared_storages(pkl) {
        if !done.insert(key.clone()) || key.contains('/') || key.is_empty() {
            continue;
        }
        let size = StorageDtype::from_torch_storage(&kind).map_or(1, |d| d.size() as u64);
        let Some(len) = numel.checked_mul(size).filter(|&l| l <= budget) else {
            continue;
        };
        budget -= len;
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let opts = if key.as_bytes()[0] % 2 == 1 {
            deflated
        } else {
            stored
        };
        write(&mut zip, &format!("archive/data/{key}"), &bytes, opts);
    }
    write(&mut zip, "archive/version", b"3\n", stored);
    zip.finish().expect("zip finish").into_inner()
}

fuzz_target!(|data: &[u8]| {
    let file = if data.starts_with(b"PK\x03\x04") {
        data.to_vec()
    } else {
        archive(data)
    };
    let path = scratch::write("model", "ckpt", &file);
    if let Ok(ckpt) = sumi_weights::ckpt::CkptFile::open(&path) {
        for t in ckpt.tensors() {
            let _ = ckpt.bytes(t);
        }
    }
    let pt = scratch::write("embedding", "pt", &file);
    let _ = sumi_weights::embedding::Embedding::load(&pt);
});
