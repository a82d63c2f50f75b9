//! Pickle bombs (issue 14, finding 1): deep nesting, `DUP` and memo copies, huge stacks and
//! memos in a checkpoint's or embedding's `data.pkl` are refused with an error naming the file,
//! never a stack overflow or an allocation abort.

mod bomb_files;

use bomb_files::*;

/// `n` empty lists, each appended to the one below: one list nested `n` deep.
fn nested_lists(out: &mut Vec<u8>, n: usize) {
    out.extend(std::iter::repeat_n(b']', n));
    out.extend(std::iter::repeat_n(b'a', n - 1));
}

#[test]
fn a_million_nested_lists_are_refused_not_a_stack_overflow() {
    let d = tempfile::tempdir().unwrap();
    let mut p = vec![0x80, 0x02];
    nested_lists(&mut p, 1 << 20);
    p.push(b'.');
    let f = write_zip(d.path(), "deep.ckpt", &p, &[]);
    let detail = ckpt_refusal(&f);
    assert!(
        detail.starts_with("data.pkl: values nested deeper than 100 at byte "),
        "{detail}"
    );
    // the same through MARK … LIST
    let mut p = vec![0x80, 0x02];
    p.extend(std::iter::repeat_n(b'(', 1 << 20));
    p.extend(std::iter::repeat_n(b'l', 1 << 20));
    p.push(b'.');
    let f = write_zip(d.path(), "deep2.pt", &p, &[]);
    let detail = embedding_refusal(&f);
    assert!(detail.contains("nested deeper than 100"), "{detail}");
}

#[test]
fn deep_nesting_inside_a_tensor_shape_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = tensor_pickle(128, 0, |p| {
        nested_lists(p, 1 << 20);
        ints(p, &[1]);
    });
    let rec = storage();
    let pt = write_zip(d.path(), "shape.pt", &p, &[("0", &rec, false)]);
    assert!(embedding_refusal(&pt).contains("nested deeper than 100"));
    // a shallow but wrong shape is described briefly, not printed whole
    let p = tensor_pickle(128, 0, |p| {
        p.push(b']');
        p.extend(std::iter::repeat_n([b'N', b'a'], 100_000).flatten());
        ints(p, &[1]);
    });
    let ckpt = write_zip(d.path(), "shape.ckpt", &p, &[("0", &rec, false)]);
    assert_eq!(
        ckpt_refusal(&ckpt),
        "data.pkl: tensor size has 100000 dimensions, more than 64"
    );
    let p = tensor_pickle(128, 0, |p| {
        p.extend_from_slice(b"(]");
        p.extend(std::iter::repeat_n([b'N', b'a'], 100_000).flatten());
        p.push(b't');
        ints(p, &[1]);
    });
    let ckpt = write_zip(d.path(), "shape2.ckpt", &p, &[("0", &rec, false)]);
    assert_eq!(
        ckpt_refusal(&ckpt),
        "data.pkl: tensor size is not a non-negative integer: a list of 100000 items"
    );
}

/// A list that holds a copy of itself, doubled `n` times by `step` (2^n values if copied).
fn doubling(step: &[u8], n: usize) -> Vec<u8> {
    let mut p = vec![0x80, 0x02, b']'];
    p.extend(std::iter::repeat_n(step, n).flatten());
    p.push(b'.');
    p
}

#[test]
fn dup_and_memo_bombs_are_refused_not_an_allocation_abort() {
    let d = tempfile::tempdir().unwrap();
    // DUP APPEND, 60 times: 2^60 lists if each copy were made
    let f = write_zip(d.path(), "dup.ckpt", &doubling(b"2a", 60), &[]);
    let detail = ckpt_refusal(&f);
    assert!(
        detail.starts_with("data.pkl: more than 2097152 values at byte "),
        "{detail}"
    );
    // PUT 0, GET 0, APPEND, 60 times
    let f = write_zip(d.path(), "memo.pt", &doubling(b"q\x00h\x00a", 60), &[]);
    assert!(embedding_refusal(&f).contains("more than 2097152 values"));
    // a string copied over and over
    let mut p = vec![0x80, 0x02];
    p.push(b'B');
    p.extend_from_slice(&(1u32 << 20).to_le_bytes());
    p.extend(std::iter::repeat_n(b'x', 1 << 20));
    p.extend(std::iter::repeat_n(b'2', 100_000));
    p.push(b'.');
    let f = write_zip(d.path(), "str.ckpt", &p, &[]);
    assert!(
        ckpt_refusal(&f).contains("more than 134217728 bytes of values"),
        "{}",
        ckpt_refusal(&f)
    );
    // a million memo entries
    let mut p = vec![0x80, 0x02, b'N'];
    for i in 0..(1u32 << 20) + 1 {
        p.push(b'r');
        p.extend_from_slice(&i.to_le_bytes());
    }
    p.push(b'.');
    let f = write_zip(d.path(), "memo2.ckpt", &p, &[]);
    assert!(ckpt_refusal(&f).contains("more than 1048576 memo entries"));
    // a stack of a few million values
    let mut p = vec![0x80, 0x02];
    p.extend(std::iter::repeat_n(b'N', 5 << 20));
    p.push(b'.');
    let f = write_zip(d.path(), "stack.ckpt", &p, &[]);
    assert!(ckpt_refusal(&f).contains("more than 2097152 values"));
}
