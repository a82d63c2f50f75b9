//! PNG `parameters` chunks against Pillow 9.5 as A1111 v1.10.1 uses it
//! (`fixtures/pipeline/png/`, made by `tools/reference/make_pipeline_fixtures.py`), and the
//! atomic, never-overwriting writer.

use std::path::PathBuf;

use image::RgbImage;
use sumi_pipeline::png::{
    encode_png, parameters_from_bytes, read_parameters, text_chunks, write_png,
};
use sumi_pipeline::PipelineError;

fn dir() -> PathBuf {
    sumi_testkit::fixtures().join("pipeline/png")
}

fn texts() -> (String, String) {
    let t = sumi_testkit::fixture::read_json(&dir().join("texts.json")).expect("texts");
    (
        t["latin1"].as_str().expect("latin1").to_string(),
        t["utf8"].as_str().expect("utf8").to_string(),
    )
}

/// `(type, data)` of every chunk, in order.
fn chunks(bytes: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 8;
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().expect("4")) as usize;
        let ty: [u8; 4] = bytes[pos + 4..pos + 8].try_into().expect("4");
        out.push((ty, bytes[pos + 8..pos + 8 + len].to_vec()));
        pos += 12 + len;
    }
    out
}

fn small() -> RgbImage {
    image::open(dir().join("pillow_none.png"))
        .expect("fixture")
        .to_rgb8()
}

#[test]
fn reads_every_kind_of_text_chunk_pillow_writes() {
    let (latin1, utf8) = texts();
    let read = |f: &str| read_parameters(&dir().join(f)).expect("reads");
    assert_eq!(read("pillow_latin1.png").as_deref(), Some(latin1.as_str()));
    assert_eq!(read("pillow_utf8.png").as_deref(), Some(utf8.as_str()));
    assert_eq!(read("pillow_ztxt.png").as_deref(), Some(latin1.as_str()));
    assert_eq!(read("pillow_itxt_zip.png").as_deref(), Some(utf8.as_str()));
    assert_eq!(read("pillow_none.png"), None);
}

#[test]
fn writes_the_same_chunk_as_pillow_in_the_same_place() {
    let (latin1, utf8) = texts();
    for (text, file, ty) in [
        (&latin1, "pillow_latin1.png", *b"tEXt"),
        (&utf8, "pillow_utf8.png", *b"iTXt"),
    ] {
        let pillow = chunks(&std::fs::read(dir().join(file)).expect("read"));
        let ours = chunks(&encode_png(&small(), Some(text)).expect("encodes"));
        // IHDR, then the text chunk, as Pillow orders them.
        assert_eq!(ours[0], pillow[0], "IHDR");
        assert_eq!(ours[1].0, ty);
        assert_eq!(ours[1], pillow[1], "{file}: the text chunk, byte for byte");
        assert_eq!(ours.last().map(|c| c.0), Some(*b"IEND"));
    }
}

#[test]
fn write_then_read_round_trips_pixels_and_text() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let img = RgbImage::from_fn(17, 9, |x, y| image::Rgb([x as u8 * 13, y as u8 * 27, 200]));
    for (i, text) in ["plain", "café ☃\nSteps: 20, Seed: 1", ""]
        .iter()
        .enumerate()
    {
        let path = tmp.path().join(format!("{i:05}.png"));
        write_png(&path, &img, Some(text)).expect("writes");
        assert_eq!(
            read_parameters(&path).expect("reads").as_deref(),
            Some(*text)
        );
        assert_eq!(image::open(&path).expect("decodes").to_rgb8(), img);
    }
    let path = tmp.path().join("none.png");
    write_png(&path, &img, None).expect("writes");
    assert_eq!(read_parameters(&path).expect("reads"), None);
    // Only the four files: no temporary file is left.
    assert_eq!(std::fs::read_dir(tmp.path()).expect("list").count(), 4);
}

#[test]
fn never_overwrites_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("out.png");
    std::fs::write(&path, b"precious").expect("write");
    let e = write_png(&path, &small(), Some("x")).expect_err("exists");
    assert!(matches!(e, PipelineError::OutputExists { .. }), "{e}");
    assert!(e.to_string().contains("out.png"), "{e}");
    assert_eq!(std::fs::read(&path).expect("read"), b"precious");
    assert_eq!(std::fs::read_dir(tmp.path()).expect("list").count(), 1);

    // A missing folder is an error naming the file, and creates nothing.
    let e = write_png(&tmp.path().join("no/such/dir/a.png"), &small(), None).expect_err("dir");
    assert!(matches!(e, PipelineError::PngWrite { .. }), "{e}");
    assert!(e.to_string().contains("a.png"), "{e}");
}

#[test]
fn racing_writers_one_wins_the_rest_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("race.png");
    let img = small();
    let results: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (path, img) = (&path, &img);
                s.spawn(
                    move || match write_png(path, img, Some(&format!("writer {i}"))) {
                        Ok(()) => true,
                        Err(PipelineError::OutputExists { .. }) => false,
                        Err(e) => panic!("unexpected: {e}"),
                    },
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("joins"))
            .collect()
    });
    assert_eq!(results.iter().filter(|w| **w).count(), 1);
    let text = read_parameters(&path).expect("reads").expect("has text");
    assert!(text.starts_with("writer "));
    assert_eq!(std::fs::read_dir(tmp.path()).expect("list").count(), 1);
}

#[test]
fn damaged_files_are_refused() {
    let good = encode_png(&small(), Some("hello")).expect("encodes");
    assert_eq!(
        parameters_from_bytes(&good).expect("ok").as_deref(),
        Some("hello")
    );
    assert_eq!(text_chunks(&good).expect("ok").len(), 1);

    let mut bad_crc = good.clone();
    let i = bad_crc
        .windows(5)
        .position(|w| w == b"hello")
        .expect("text in file");
    bad_crc[i] = b'j';
    assert!(parameters_from_bytes(&bad_crc)
        .expect_err("crc")
        .contains("CRC"));

    assert!(
        parameters_from_bytes(&good[..good.len() - 20]).is_err(),
        "truncated"
    );
    assert!(parameters_from_bytes(b"GIF89a....")
        .expect_err("sig")
        .contains("signature"));

    let tmp = tempfile::tempdir().expect("tempdir");
    let e = read_parameters(&tmp.path().join("missing.png")).expect_err("missing");
    assert!(matches!(e, PipelineError::PngRead { .. }) && e.to_string().contains("missing.png"));
}
