//! Crafted PyTorch archives for the bomb tests, written byte by byte in a temporary folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use sumi_weights::ckpt::CkptFile;
use sumi_weights::embedding::{Embedding, EmbeddingError};
use sumi_weights::WeightsError;

/// A `BINUNICODE` string.
pub fn binunicode(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A `LONG1` integer (any i64).
pub fn long1(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&[0x8a, 8]);
    out.extend_from_slice(&v.to_le_bytes());
}

/// A tuple of integers (`MARK … TUPLE`).
pub fn ints(out: &mut Vec<u8>, vs: &[i64]) {
    out.push(b'(');
    for &v in vs {
        long1(out, v);
    }
    out.push(b't');
}

/// `{"emb": _rebuild_tensor_v2(storage("0", FloatStorage, numel), offset, <shape>, <stride>)}`,
/// the shape and stride written by `shape_stride`.
pub fn tensor_pickle(numel: u8, offset: i64, shape_stride: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut p = vec![0x80, 0x02, b'}'];
    binunicode(&mut p, "emb");
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    p.push(b'(');
    binunicode(&mut p, "storage");
    p.extend_from_slice(b"ctorch\nFloatStorage\n");
    binunicode(&mut p, "0");
    binunicode(&mut p, "cpu");
    p.extend_from_slice(&[b'K', numel, b't', b'Q']);
    long1(&mut p, offset);
    shape_stride(&mut p);
    p.extend_from_slice(&[0x89, b't', b'R', b's', b'.']);
    p
}

/// A zip laid out as `torch.save` does: `archive/data.pkl`, then the storage records.
pub fn write_zip(
    dir: &Path,
    name: &str,
    pickle: &[u8],
    records: &[(&str, &[u8], bool)],
) -> PathBuf {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(pickle).unwrap();
    for &(key, bytes, deflate) in records {
        let opts = if deflate {
            stored
                .compression_method(zip::CompressionMethod::Deflated)
                .large_file(true)
        } else {
            stored
        };
        zip.start_file(format!("archive/data/{key}"), opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    let p = dir.join(name);
    std::fs::write(&p, zip.finish().unwrap().into_inner()).unwrap();
    p
}

/// 128 floats, 0..128.
pub fn storage() -> Vec<u8> {
    (0..128).flat_map(|i| (i as f32).to_le_bytes()).collect()
}

/// The `BadCheckpoint` detail of a checkpoint, checking it names the file.
pub fn ckpt_refusal(p: &Path) -> String {
    match CkptFile::open(p) {
        Err(WeightsError::BadCheckpoint { path, detail }) => {
            assert_eq!(path, p);
            detail
        }
        other => panic!("{}: {other:?}", p.display()),
    }
}

/// The `BadCheckpoint` detail of an embedding, checking it names the file.
#[allow(dead_code)] // not every test file reads embeddings
pub fn embedding_refusal(p: &Path) -> String {
    match Embedding::load(p) {
        Err(EmbeddingError::Weights(WeightsError::BadCheckpoint { path, detail })) => {
            assert_eq!(path, p);
            detail
        }
        other => panic!("{}: {other:?}", p.display()),
    }
}
