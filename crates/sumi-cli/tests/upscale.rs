//! `sumi upscale` end to end: A1111's Extras cases of `fixtures/extras/` (made by
//! `tools/reference/make_extras_fixtures.py` over Pillow 9.5.0) through the command line, the
//! PNG equal to A1111's picture with A1111's `postprocessing` text beside the input's
//! `parameters`; an unknown upscaler exits 2 with the list; bad sizes, bad tiles and clashing
//! options exit 2 naming them.

use std::path::Path;
use std::process::{Command, Output};

use image::RgbImage;
use sumi_testkit::fixture::{fixtures, read_json, tensors};

fn sumi() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sumi"))
}

fn image(key: &str) -> RgbImage {
    let t = tensors(&fixtures().join("extras/images.safetensors")).unwrap();
    let t = t.get(key).unwrap_or_else(|| panic!("no image {key}"));
    let (h, w, _) = t.dims3().unwrap();
    let v = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    RgbImage::from_raw(w as u32, h as u32, v).unwrap()
}

fn upscale(input: &Path, args: &[&str]) -> Output {
    sumi()
        .arg("upscale")
        .arg(input)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes the fixture picture `key` as a PNG with a `parameters` chunk.
fn input(dir: &Path, key: &str, n: usize) -> std::path::PathBuf {
    let p = dir.join(format!("{key}-{n}.png"));
    sumi_pipeline::png::write_png(&p, &image(key), Some("a cat, Steps: 20")).unwrap();
    p
}

#[test]
fn cases_match_a1111() {
    let doc = read_json(&fixtures().join("extras/cases.json")).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    let d = tempfile::tempdir().unwrap();
    let upscalers = fixtures().join("upscalers");
    let dir_arg = upscalers.to_str().unwrap();
    let mut ran = 0;
    for (name, args) in [
        (
            "model by 3 + Lanczos",
            vec![
                "--upscaler",
                "compact_x2",
                "--scale",
                "3",
                "--upscaler-2",
                "Lanczos",
                "--upscaler-2-visibility",
                "0.37",
            ],
        ),
        (
            "to 40x30 crop",
            vec![
                "--upscaler",
                "Lanczos",
                "--width",
                "40",
                "--height",
                "30",
                "--crop",
            ],
        ),
        (
            "to 40x30 no crop",
            vec!["--upscaler", "Lanczos", "--width", "40", "--height", "30"],
        ),
        (
            "max side 40",
            vec![
                "--upscaler",
                "Lanczos",
                "--scale",
                "4",
                "--max-side-length",
                "40",
            ],
        ),
    ] {
        let c = cases.iter().find(|c| c["name"] == name).unwrap();
        let src = input(d.path(), c["image"].as_str().unwrap(), ran);
        let out = d.path().join(format!("out{ran}.png"));
        let mut all: Vec<&str> = args.clone();
        all.extend([
            "--upscaler-dir",
            dir_arg,
            "--tile",
            "16",
            "--tile-overlap",
            "4",
        ]);
        all.extend(["--output", out.to_str().unwrap()]);
        let o = upscale(&src, &all);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let got = image::open(&out).unwrap().to_rgb8();
        assert_eq!(got, image(c["output"].as_str().unwrap()), "{name}");
        let bytes = std::fs::read(&out).unwrap();
        let texts = sumi_pipeline::png::text_chunks(&bytes).unwrap();
        let want = [
            ("parameters".to_string(), "a cat, Steps: 20".to_string()),
            (
                "postprocessing".to_string(),
                c["infotext"].as_str().unwrap().to_string(),
            ),
        ];
        assert_eq!(texts, want, "{name}");
        ran += 1;
    }
    assert_eq!(ran, 4);
}

#[test]
fn bad_input_exits_2() {
    let d = tempfile::tempdir().unwrap();
    let src = input(d.path(), "small", 0);
    let out = d.path().join("o.png");
    let o = upscale(
        &src,
        &["--upscaler", "R-ESRGAN 4x+", "-o", out.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(
            "--upscaler: unknown upscaler `R-ESRGAN 4x+`; the upscalers are: None, Lanczos, Nearest"
        ),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    // 13×10 by 400 is over the side limit
    let o = upscale(
        &src,
        &[
            "--upscaler",
            "Nearest",
            "--scale",
            "400",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("5200x4000"), "{}", stderr(&o));
    for args in [
        vec![
            "--upscaler",
            "Lanczos",
            "--scale",
            "2",
            "--width",
            "8",
            "--height",
            "8",
        ],
        vec!["--upscaler", "Lanczos", "--width", "8"],
        vec!["--upscaler", "Lanczos", "--upscaler-2", "Nearest"],
        vec![
            "--upscaler",
            "Lanczos",
            "--upscaler-2",
            "Nearest",
            "--upscaler-2-visibility",
            "2",
        ],
    ] {
        let o = upscale(&src, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(!stderr(&o).is_empty());
    }
    // tiles: negative, over 4096, an overlap not under the tile
    for (args, says) in [
        (
            ["--tile", "-16", "--tile-overlap", "8"],
            "a tile is 0 to 4096 pixels",
        ),
        (
            ["--tile", "5000", "--tile-overlap", "8"],
            "a tile is 0 to 4096 pixels",
        ),
        (
            ["--tile", "64", "--tile-overlap", "-1"],
            "a tile is 0 to 4096 pixels",
        ),
        (
            ["--tile", "16", "--tile-overlap", "16"],
            "tile size 16 with overlap 16",
        ),
    ] {
        let mut all = vec!["--upscaler", "Lanczos", "-o", out.to_str().unwrap()];
        all.extend(args);
        let o = upscale(&src, &all);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    assert!(!out.exists());
}
