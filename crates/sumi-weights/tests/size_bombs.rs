//! Tensor views whose sizes overflow or leave their storage, and storage records that inflate
//! past their declared size (issue 14, findings 2 and 3): refused with an error naming the file.

mod bomb_files;

use bomb_files::*;
use sumi_weights::ckpt::CkptFile;

#[test]
fn sizes_that_overflow_or_leave_the_storage_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let rec = storage();
    let case = |name: &str, offset: i64, shape: &[i64], stride: &[i64]| {
        let p = tensor_pickle(128, offset, |p| {
            ints(p, shape);
            ints(p, stride);
        });
        let f = write_zip(d.path(), name, &p, &[("0", &rec, false)]);
        ckpt_refusal(&f)
    };
    // an empty tensor far past its storage
    assert_eq!(
        case("off.ckpt", 1 << 62, &[0, 4], &[4, 1]),
        "tensor `emb` starts at element 4611686018427387904, past its storage of 128"
    );
    // an empty tensor whose other dimensions multiply past usize (torch's strides would wrap)
    assert_eq!(
        case("dims.ckpt", 0, &[0, 1 << 40, 1 << 40], &[0, 0, 0]),
        "tensor `emb` (shape [0, 1099511627776, 1099511627776]) is too large"
    );
    // an element count that fits but not in bytes
    assert_eq!(
        case("bytes.ckpt", 0, &[1 << 31, 1 << 31], &[1, 1]),
        "tensor `emb` (shape [2147483648, 2147483648]) is too large"
    );
    // strides whose products wrap
    assert_eq!(
        case("wrap.ckpt", 0, &[3, 2], &[i64::MAX, 1]),
        "tensor `emb` (shape [3, 2]) reaches past its storage of 128 elements"
    );
    // a storage record shorter than the pickle declares
    let p = tensor_pickle(200, 0, |p| {
        ints(p, &[2, 64]);
        ints(p, &[64, 1]);
    });
    let f = write_zip(d.path(), "short.ckpt", &p, &[("0", &rec, false)]);
    assert_eq!(
        ckpt_refusal(&f),
        "storage record `0` holds 512 bytes, its FloatStorage of 200 elements needs 800"
    );
}

#[test]
fn a_zip_bomb_record_is_refused_at_its_declared_size() {
    let d = tempfile::tempdir().unwrap();
    let p = tensor_pickle(128, 0, |p| {
        ints(p, &[2, 64]);
        ints(p, &[64, 1]);
    });
    // 512 declared bytes, 256 MiB inflated from about 256 KiB
    let mut big = storage();
    big.resize(256 << 20, 0);
    let f = write_zip(d.path(), "bomb.ckpt", &p, &[("0", &big, true)]);
    assert!(std::fs::metadata(&f).unwrap().len() < 1 << 20);
    assert_eq!(
        ckpt_refusal(&f),
        "storage record `0` holds 268435456 bytes, its FloatStorage of 128 elements needs 512"
    );
    // the same storage deflated at its declared size is read
    let f = write_zip(d.path(), "ok.ckpt", &p, &[("0", &storage(), true)]);
    let ck = CkptFile::open(&f).unwrap();
    assert_eq!(&ck.bytes(&ck.tensors()[0])[..], &storage()[..]);
}
