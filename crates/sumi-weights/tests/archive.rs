//! Embeddings (`.pt`) and checkpoints (`.ckpt`) are read by one PyTorch-archive reader: the same
//! crafted archive is accepted or refused by both, with the same error.
//!
//! The archives are written here, byte by byte: a protocol-2 pickle of `{"emb": tensor}` (a
//! one-term diffusers concept to the embedding reader, a one-tensor state dict to the
//! checkpoint reader) viewing a 128-element float storage with a stride chosen per case.

use std::io::Write;
use std::path::{Path, PathBuf};

use sumi_weights::ckpt::CkptFile;
use sumi_weights::embedding::{Embedding, EmbeddingError};
use sumi_weights::WeightsError;

/// Elements in the crafted storage.
const STORAGE: usize = 128;

fn binunicode(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn tuple2(out: &mut Vec<u8>, a: u8, b: u8) {
    out.extend_from_slice(&[b'K', a, b'K', b, 0x86]);
}

/// `{"emb": _rebuild_tensor_v2(storage("0", FloatStorage, 128), 0, shape, stride, False)}`.
fn state_dict_pickle(shape: (u8, u8), stride: (u8, u8)) -> Vec<u8> {
    let mut p = vec![0x80, 0x02, b'}'];
    binunicode(&mut p, "emb");
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    p.push(b'(');
    binunicode(&mut p, "storage");
    p.extend_from_slice(b"ctorch\nFloatStorage\n");
    binunicode(&mut p, "0");
    binunicode(&mut p, "cpu");
    p.extend_from_slice(&[b'K', STORAGE as u8, b't', b'Q', b'K', 0]);
    tuple2(&mut p, shape.0, shape.1);
    tuple2(&mut p, stride.0, stride.1);
    p.extend_from_slice(&[0x89, b't', b'R', b's', b'.']);
    p
}

/// Writes the archive as `torch.save` lays it out (stored entries under `archive/`) to
/// `dir/name`; the tensor is `[2, 64]` with `stride`.
fn write_archive(dir: &Path, name: &str, stride: (u8, u8)) -> PathBuf {
    write_view(dir, name, (2, 64), stride)
}

/// As [`write_archive`], with the tensor's shape chosen too.
fn write_view(dir: &Path, name: &str, shape: (u8, u8), stride: (u8, u8)) -> PathBuf {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(&state_dict_pickle(shape, stride)).unwrap();
    zip.start_file("archive/data/0", opts).unwrap();
    let storage: Vec<u8> = (0..STORAGE)
        .flat_map(|i| (i as f32).to_le_bytes())
        .collect();
    zip.write_all(&storage).unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The `BadCheckpoint` detail of both readers for the same archive.
fn both_refuse(dir: &Path, stem: &str, shape: (u8, u8), stride: (u8, u8)) -> String {
    let pt = write_view(dir, &format!("{stem}.pt"), shape, stride);
    let ckpt = write_view(dir, &format!("{stem}.ckpt"), shape, stride);
    let from_embedding = match Embedding::load(&pt) {
        Err(EmbeddingError::Weights(WeightsError::BadCheckpoint { path, detail })) => {
            assert_eq!(path, pt);
            detail
        }
        other => panic!("{stem}.pt: {other:?}"),
    };
    let from_ckpt = match CkptFile::open(&ckpt) {
        Err(WeightsError::BadCheckpoint { path, detail }) => {
            assert_eq!(path, ckpt);
            detail
        }
        other => panic!("{stem}.ckpt: {other:?}"),
    };
    assert_eq!(from_embedding, from_ckpt, "{stem}");
    from_embedding
}

#[test]
fn the_well_formed_archive_reads_the_same_through_both() {
    let d = tempfile::tempdir().unwrap();
    let pt = write_archive(d.path(), "good.pt", (64, 1));
    let e = Embedding::load(&pt).unwrap();
    assert_eq!(e.vectors.dims(), [2, 64]);
    let want: Vec<f32> = (0..STORAGE).map(|i| i as f32).collect();
    assert_eq!(
        e.vectors.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        want
    );
    let ck = CkptFile::open(&write_archive(d.path(), "good.ckpt", (64, 1))).unwrap();
    let [t] = ck.tensors() else {
        panic!("{:?}", ck.tensors())
    };
    assert_eq!((t.name.as_str(), &t.shape[..]), ("emb", &[2usize, 64][..]));
    let bytes: Vec<u8> = want.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(&ck.bytes(t)[..], &bytes[..]);
    // a transposed view (column-major storage) is gathered, not refused
    let ck = CkptFile::open(&write_archive(d.path(), "t.ckpt", (1, 2))).unwrap();
    let e = Embedding::load(&write_archive(d.path(), "t.pt", (1, 2))).unwrap();
    let gathered: Vec<f32> = ck.bytes(&ck.tensors()[0])[..]
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(gathered[..3], [0.0, 2.0, 4.0]);
    assert_eq!(gathered[64..67], [1.0, 3.0, 5.0]);
    assert_eq!(
        e.vectors.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        gathered
    );
}

#[test]
fn a_stride_past_the_storage_is_refused_alike() {
    let d = tempfile::tempdir().unwrap();
    // last element at 1·64 + 63·2 = 190, past the 128 stored
    let detail = both_refuse(d.path(), "far", (2, 64), (64, 2));
    assert_eq!(
        detail,
        "tensor `emb` (shape [2, 64]) reaches past its storage of 128 elements"
    );
}

#[test]
fn a_view_larger_than_its_storage_is_refused_alike() {
    // stride 0 along 4 rows: 256 elements from 128 stored. torch allows such broadcast views,
    // but they let a few stored bytes ask for a tensor of any size, so both readers refuse
    let d = tempfile::tempdir().unwrap();
    let detail = both_refuse(d.path(), "wide", (4, 64), (0, 1));
    assert_eq!(
        detail,
        "tensor `emb` (shape [4, 64]) has more elements than its storage of 128"
    );
    // a repeating view within the storage's size is still read (2 rows, both row 0)
    let ck = CkptFile::open(&write_archive(d.path(), "rep.ckpt", (0, 1))).unwrap();
    let b = ck.bytes(&ck.tensors()[0]);
    assert_eq!(b[..256], b[256..]);
}

#[test]
fn an_oversized_pickle_is_refused_alike() {
    // 64 MiB + 1 of zeros, deflated to a few kilobytes: the bound holds on the inflated size
    let limit = sumi_weights::ckpt::MAX_PICKLE_BYTES as usize;
    let d = tempfile::tempdir().unwrap();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(&vec![0u8; limit + 1]).unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    assert!(bytes.len() < 1 << 20, "{} bytes", bytes.len());
    let pt = d.path().join("big.pt");
    let ckpt = d.path().join("big.ckpt");
    std::fs::write(&pt, &bytes).unwrap();
    std::fs::write(&ckpt, &bytes).unwrap();
    let want = format!("archive/data.pkl is larger than the {limit}-byte limit");
    match Embedding::load(&pt) {
        Err(EmbeddingError::Weights(WeightsError::BadCheckpoint { detail, .. })) => {
            assert_eq!(detail, want)
        }
        other => panic!("{other:?}"),
    }
    match CkptFile::open(&ckpt) {
        Err(WeightsError::BadCheckpoint { detail, .. }) => assert_eq!(detail, want),
        other => panic!("{other:?}"),
    }
}
