//! A `.ckpt` whose compressed storage records declare sizes matching the pickle but inflate at
//! a zip bomb's ratio is refused from the zip directory, before anything is inflated; deflated
//! records at ordinary ratios still load.

#[allow(dead_code)] // not every helper is used here
mod bomb_files;

use bomb_files::*;
use sumi_weights::ckpt::{CkptFile, INFLATE_ALLOWANCE, MAX_INFLATE_RATIO};

/// `{"emb": _rebuild_tensor_v2(storage("0", FloatStorage, numel), 0, (numel,), (1,))}`.
fn flat_pickle(numel: i64) -> Vec<u8> {
    let mut p = vec![0x80, 0x02, b'}'];
    binunicode(&mut p, "emb");
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    p.push(b'(');
    binunicode(&mut p, "storage");
    p.extend_from_slice(b"ctorch\nFloatStorage\n");
    binunicode(&mut p, "0");
    binunicode(&mut p, "cpu");
    long1(&mut p, numel);
    p.extend_from_slice(b"tQ");
    long1(&mut p, 0);
    ints(&mut p, &[numel]);
    ints(&mut p, &[1]);
    p.extend_from_slice(&[0x89, b't', b'R', b's', b'.']);
    p
}

#[test]
fn a_deflated_storage_at_a_zip_bomb_ratio_is_refused_before_inflating() {
    assert_eq!((INFLATE_ALLOWANCE, MAX_INFLATE_RATIO), (64 << 20, 16));
    let d = tempfile::tempdir().unwrap();
    // 96 MiB of zeros, declared as such by the pickle and the zip, deflated to about 96 KiB
    let numel = 24 << 20;
    let f = write_zip(
        d.path(),
        "bomb.ckpt",
        &flat_pickle(numel),
        &[("0", &vec![0u8; 96 << 20], true)],
    );
    let size = std::fs::metadata(&f).unwrap().len();
    assert!(size < 200 << 10, "{size}");
    let detail = ckpt_refusal(&f);
    assert!(
        detail.starts_with("compressed storage records of ")
            && detail.contains(" bytes would inflate to 100663296 (more than 67108864 + 16 x")
            && detail.ends_with("refused as a zip bomb"),
        "{detail}"
    );
}

#[test]
fn deflated_storages_within_the_allowance_or_the_ratio_load() {
    let d = tempfile::tempdir().unwrap();
    // zeros under the allowance: any ratio
    let f = write_zip(
        d.path(),
        "zeros.ckpt",
        &flat_pickle(1 << 20),
        &[("0", &vec![0u8; 4 << 20], true)],
    );
    let ck = CkptFile::open(&f).unwrap();
    assert_eq!(ck.bytes(&ck.tensors()[0]).len(), 4 << 20);
    // 72 MiB (over the allowance) of values that deflate at an ordinary ratio
    let mut x = 0x2545_f491_u32;
    let noisy: Vec<u8> = (0..18 << 20)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (f32::from_bits(x) % 1.0).to_le_bytes()
        })
        .collect();
    let f = write_zip(
        d.path(),
        "noisy.ckpt",
        &flat_pickle(18 << 20),
        &[("0", &noisy, true)],
    );
    let ck = CkptFile::open(&f).unwrap();
    assert_eq!(&ck.bytes(&ck.tensors()[0])[..], &noisy[..]);
}
