//! Uploaded images (`init_images`, `mask`): checked by their headers before the queue admits
//! the job (a declared size over the limit, or a request over its pixel budget, is refused
//! at once), decoded by the worker only once admitted: a full queue refuses a request before
//! any pixel is decoded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::fake::Fake;

/// CRC-32 (ISO-HDLC), as PNG chunks carry.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A PNG declaring `w`×`h` 8-bit RGB pixels whose data holds 1 KiB of zero rows and stops:
/// its header reads, its pixels cannot be decoded (a decoder would first allocate 3·w·h
/// bytes).
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    // zlib header, then a stored deflate block that is not the last one
    let mut idat = vec![0x78, 0x01, 0x00, 0x00, 0x04, 0xFF, 0xFB];
    idat.extend_from_slice(&[0u8; 1024]);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn img2img(init: &[u8], mask: Option<&[u8]>) -> Value {
    let mut v =
        json!({"init_images": [b64(init)], "seed": 1, "steps": 2, "width": 64, "height": 64});
    if let Some(m) = mask {
        v["mask"] = json!(b64(m));
    }
    v
}

#[test]
fn a_crafted_png_reads_as_declared() {
    let png = png_declaring(8192, 8192);
    let reader = image::ImageReader::new(std::io::Cursor::new(&png))
        .with_guessed_format()
        .unwrap();
    assert_eq!(reader.into_dimensions().unwrap(), (8192, 8192));
    assert!(image::load_from_memory(&png_declaring(64, 64)).is_err());
}

#[test]
fn a_full_queue_refuses_images_before_decoding_them() {
    let d = tempfile::tempdir().unwrap();
    let mut c = config(d.path());
    c.queue = 1;
    let s = Arc::new(TestServer::start(c, Fake::new(5)));
    let s2 = s.clone();
    let running = std::thread::spawn(move || {
        post(
            &s2,
            "/sdapi/v1/txt2img",
            &json!({"prompt": "slow", "seed": 1, "steps": 500, "width": 64, "height": 64}),
        )
    });
    wait_progress(&s, |p| p["state"]["sampling_step"].as_u64() >= Some(1));
    let s3 = s.clone();
    let queued = std::thread::spawn(move || {
        post(
            &s3,
            "/sdapi/v1/txt2img",
            &json!({"seed": 2, "steps": 2, "width": 64, "height": 64}),
        )
    });
    wait_until("the job is queued", || {
        metric(&s, "sumi_queue_depth") >= 1.0
    });
    // six clients at once, each with an 8192x8192 PNG (192 MiB of pixels) that cannot decode:
    // all are told 429, none is told that its image is unreadable
    let big = Arc::new(img2img(&png_declaring(8192, 8192), None));
    let t0 = Instant::now();
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (s, big) = (s.clone(), big.clone());
            std::thread::spawn(move || post(&s, "/sdapi/v1/img2img", &big))
        })
        .collect();
    for c in clients {
        let (st, v) = c.join().unwrap();
        assert_eq!(st, 429, "{v}");
        assert_eq!(v["error"], "QueueFull", "{v}");
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // a declared bomb is refused by its header at once, full queue or not
    let t0 = Instant::now();
    let (st, v) = post(
        &s,
        "/sdapi/v1/img2img",
        &img2img(&png_declaring(100_000, 100_000), None),
    );
    assert_eq!(st, 422, "{v}");
    assert_eq!(
        v["detail"],
        "init_images[0]: 100000x100000 is over the limit of 67108864 pixels"
    );
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    post(&s, "/sdapi/v1/interrupt", &json!({}));
    assert_eq!(running.join().unwrap().0, 200);
    assert_eq!(queued.join().unwrap().0, 200);
    // admitted, the same image is decoded at its turn, and refused naming its field
    let (st, v) = post(&s, "/sdapi/v1/img2img", &big);
    assert_eq!(st, 400, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.starts_with("init_images[0]: "), "{detail}");
    assert_eq!(
        s.fake.runs().len(),
        2,
        "the unreadable image reached the model"
    );
    assert_eq!(
        metric(&s, "sumi_rejected_total{reason=\"queue_full\"}"),
        6.0
    );
    assert_eq!(metric(&s, "sumi_rejected_total{reason=\"bad_image\"}"), 1.0);
    // the worker serves on
    let (st, v) = post(
        &s,
        "/sdapi/v1/img2img",
        &img2img(&png(64, 64, [9, 9, 9]), None),
    );
    assert_eq!(st, 200, "{v}");
}

#[test]
fn a_request_over_its_pixel_budget_is_refused_by_the_headers() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    let big = png_declaring(6000, 6000);
    let (st, v) = post(&s, "/sdapi/v1/img2img", &img2img(&big, Some(&big)));
    assert_eq!(st, 422, "{v}");
    assert_eq!(
        v["detail"],
        "mask: 6000x6000 with the 6000x6000 init image makes 72000000 pixels, over the limit \
         of 67108864 pixels a request"
    );
    // an empty image is refused by its header too
    let (st, v) = post(
        &s,
        "/sdapi/v1/img2img",
        &img2img(&png_declaring(0, 64), None),
    );
    assert!(st == 400 || st == 422, "{st} {v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .starts_with("init_images[0]: "),
        "{v}"
    );
    // within the budget, init image and mask reach the model decoded
    let init = png(64, 48, [10, 20, 30]);
    let mask = png(64, 48, [255, 255, 255]);
    let (st, v) = post(&s, "/sdapi/v1/img2img", &img2img(&init, Some(&mask)));
    assert_eq!(st, 200, "{v}");
    let r = s.fake.last();
    let i = r.img2img.unwrap();
    assert_eq!(i.init_image.dimensions(), (64, 48));
    assert_eq!(i.init_image.get_pixel(5, 5).0, [10, 20, 30]);
    assert_eq!(i.inpaint.unwrap().mask.to_luma8().get_pixel(5, 5).0, [255]);
    assert_eq!(s.fake.runs().len(), 1);
}
