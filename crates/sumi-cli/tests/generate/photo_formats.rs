//! JPEG and WebP outputs and inputs of `sumi txt2img`/`img2img`/`png-info` on the tiny SD1
//! model: `--output x.jpg|x.webp` writes A1111's EXIF parameters, `png-info` and `--from-png`
//! read them (also from files A1111 wrote: `fixtures/exif/`, made by
//! `tools/reference/make_exif_fixtures.py`), an unknown extension is refused.

use super::{fails, ok, sumi};

const FAST: &[&str] = &[
    "--steps", "2", "--width", "64", "--height", "64", "--quiet", "--seed", "9",
];

#[test]
fn jpeg_and_webp_outputs_carry_the_infotext() {
    let d = tempfile::tempdir().unwrap();
    let m = sumi_testkit::tiny_model("sd1", d.path());
    let run = |out: &str, extra: &[&str]| {
        ok(sumi(d.path())
            .args(["txt2img", "--model"])
            .arg(&m)
            .args(["--prompt", "a café, 猫", "--output", out])
            .args(FAST)
            .args(extra)
            .output()
            .unwrap())
    };
    run("o.jpg", &[]);
    let jpg = std::fs::read(d.path().join("o.jpg")).unwrap();
    assert_eq!(jpg[..4], [0xff, 0xd8, 0xff, 0xe1], "JPEG with EXIF in APP1");
    let info = ok(sumi(d.path()).args(["png-info", "o.jpg"]).output().unwrap());
    assert!(
        info.starts_with("a café, 猫\nSteps: 2, Sampler: DPM++ 2M"),
        "{info}"
    );
    assert!(info.contains("Seed: 9, Size: 64x64"), "{info}");
    // --from-png takes the JPEG; the WebP made from it has the same infotext
    run("o.webp", &["--from-png", "o.jpg"]);
    let webp = std::fs::read(d.path().join("o.webp")).unwrap();
    assert_eq!((&webp[..4], &webp[8..16]), (&b"RIFF"[..], &b"WEBPVP8X"[..]));
    let info2 = ok(sumi(d.path())
        .args(["png-info", "o.webp"])
        .output()
        .unwrap());
    assert_eq!(info2, info);
    let im = image::load_from_memory(&webp).unwrap();
    assert_eq!((im.width(), im.height()), (64, 64));
    // an unknown or missing extension: exit 2 naming --output, nothing written
    for (out, msg) in [
        ("o.gif", "--output o.gif: unknown image format"),
        ("noext", "--output noext: unknown image format"),
    ] {
        let mut c = sumi(d.path());
        c.args(["txt2img", "--model"]).arg(&m);
        fails(
            c.args(["--prompt", "x", "--output", out])
                .args(FAST)
                .output()
                .unwrap(),
            msg,
        );
        assert!(!d.path().join(out).exists());
    }
}

#[test]
fn png_info_reads_a1111_jpeg_and_webp() {
    let dir = sumi_testkit::fixtures().join("exif");
    let expected = sumi_testkit::fixture::read_json(&dir.join("expected.json")).unwrap();
    let d = tempfile::tempdir().unwrap();
    for name in ["a1111_short.jpg", "a1111_long.webp", "ascii_comment.jpg"] {
        let out = ok(sumi(d.path())
            .arg("png-info")
            .arg(dir.join(name))
            .output()
            .unwrap());
        assert_eq!(
            out.trim_end_matches('\n'),
            expected[name].as_str().unwrap(),
            "{name}"
        );
    }
    let json = ok(sumi(d.path())
        .args(["png-info", "--json"])
        .arg(dir.join("a1111_short.webp"))
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["Seed"], "1234");
    fails(
        sumi(d.path())
            .arg("png-info")
            .arg(dir.join("no_parameters.jpg"))
            .output()
            .unwrap(),
        "carries no A1111 parameters",
    );
}
