//! A1111's Extras upscale against the restatement in `tools/reference/make_extras_fixtures.py`
//! (Pillow 9.5.0, fixtures in `fixtures/extras/`): by a factor, to a size with and without
//! crop, `max_side_length`, a model upscaler, a second upscaler blended in, `None`; pictures
//! within one level (measured: 0), sizes, infotexts and `html_info` exactly; Pillow's
//! `Image.blend` exactly; unknown names, bad fields and sizes over the limits as typed errors.

use image::RgbImage;
use sumi_pipeline::error::PipelineError;
use sumi_pipeline::extras::{
    blend, html_info, output_texts, upscale_extras, ExtrasRequest, ExtrasResize,
};
use sumi_pipeline::upscale::{keep_going, TileOptions, UpscaleError, UpscalerRegistry};

mod common;
use common::ImageFixture;

fn fixture() -> ImageFixture {
    ImageFixture::open("extras")
}

fn registry() -> UpscalerRegistry {
    UpscalerRegistry::scan(&[common::root().join("upscalers")]).unwrap()
}

/// The largest difference in pixel levels, and how many values differ at all.
fn level_diff(a: &RgbImage, b: &RgbImage) -> (u8, usize) {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .fold((0, 0), |(m, n), (x, y)| {
            (m.max(x.abs_diff(*y)), n + usize::from(x != y))
        })
}

fn request(c: &serde_json::Value, tile: TileOptions) -> ExtrasRequest {
    let resize = if c["mode"].as_u64().unwrap() == 1 {
        ExtrasResize::To {
            width: c["w"].as_u64().unwrap() as u32,
            height: c["h"].as_u64().unwrap() as u32,
            crop: c["crop"].as_bool().unwrap(),
        }
    } else {
        ExtrasResize::By {
            scale: c["by"].as_f64().unwrap(),
            max_side_length: c["max_side"].as_u64().unwrap() as u32,
        }
    };
    ExtrasRequest {
        resize,
        upscaler_1: c["upscaler_1"].as_str().unwrap().into(),
        upscaler_2: c["upscaler_2"].as_str().unwrap().into(),
        upscaler_2_visibility: c["visibility"].as_f64().unwrap(),
        tile: tile.into(),
    }
}

#[test]
fn extras_match_a1111() {
    let f = fixture();
    assert_eq!(f.doc["pillow"], "9.5.0");
    let tile = TileOptions {
        tile: f.doc["tile"].as_u64().unwrap() as u32,
        overlap: f.doc["overlap"].as_u64().unwrap() as u32,
    };
    let reg = registry();
    let mut worst = 0;
    for c in f.cases("cases", 12) {
        let name = c["name"].as_str().unwrap();
        let src = f.image(c["image"].as_str().unwrap());
        let out = upscale_extras(&src, &request(c, tile), &reg, &mut keep_going)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = f.image(c["output"].as_str().unwrap());
        assert_eq!(
            out.image.dimensions(),
            (
                c["width"].as_u64().unwrap() as u32,
                c["height"].as_u64().unwrap() as u32
            ),
            "{name}"
        );
        let (d, n) = level_diff(&out.image, &want);
        assert!(d <= 1, "{name}: {d} levels apart in {n} values");
        worst = worst.max(d);
        let text = out.infotext();
        assert_eq!(text, c["infotext"].as_str().unwrap(), "{name}");
        assert_eq!(html_info(&text), c["html_info"].as_str().unwrap(), "{name}");
    }
    assert_eq!(worst, 0, "measured: every picture equal to A1111's");
}

#[test]
fn blend_is_pillows() {
    let f = fixture();
    for b in f.cases("blends", 9) {
        let alpha = b["alpha"].as_f64().unwrap();
        let out = blend(
            &f.image(b["a"].as_str().unwrap()),
            &f.image(b["b"].as_str().unwrap()),
            alpha,
        )
        .unwrap();
        let want = f.image(b["output"].as_str().unwrap());
        assert_eq!(level_diff(&out, &want), (0, 0), "alpha {alpha}");
    }
}

#[test]
fn html_info_escapes_as_python() {
    assert_eq!(
        html_info("a <b> & \"c\" 'd'\ne"),
        "<p>a &lt;b&gt; &amp; &quot;c&quot; &#x27;d&#x27;<br>\ne</p>"
    );
    assert_eq!(html_info(""), "<p></p>");
}

#[test]
fn output_texts_keep_a1111_dict_order() {
    let s = |k: &str, v: &str| (k.to_string(), v.to_string());
    let got = output_texts(
        &[
            s("parameters", "p"),
            s("postprocessing", "old"),
            s("x", "1"),
        ],
        "new",
    );
    assert_eq!(
        got,
        vec![
            s("postprocessing", "new"),
            s("x", "1"),
            s("parameters", "p")
        ]
    );
    assert_eq!(output_texts(&[], ""), vec![s("postprocessing", "")]);
}

fn small() -> RgbImage {
    RgbImage::from_fn(13, 10, |x, y| image::Rgb([x as u8 * 9, y as u8 * 20, 77]))
}

fn unknown(e: PipelineError) -> (String, Vec<String>) {
    match e {
        PipelineError::Upscale(b) => match *b {
            UpscaleError::UnknownUpscaler { name, known } => (name, known),
            other => panic!("not an unknown name: {other}"),
        },
        other => panic!("not an upscale error: {other}"),
    }
}

#[test]
fn unknown_names_list_the_known_ones() {
    let reg = registry();
    let req = ExtrasRequest {
        upscaler_1: "R-ESRGAN 4x+".into(),
        ..Default::default()
    };
    let (name, known) = unknown(upscale_extras(&small(), &req, &reg, &mut keep_going).unwrap_err());
    assert_eq!(name, "R-ESRGAN 4x+");
    assert_eq!(&known[..4], ["None", "Lanczos", "Nearest", "compact_x2"]);
    // the second name is checked even at visibility 0, as A1111's assert does
    let req = ExtrasRequest {
        upscaler_1: "Lanczos".into(),
        upscaler_2: "nope".into(),
        ..Default::default()
    };
    let (name, _) = unknown(upscale_extras(&small(), &req, &reg, &mut keep_going).unwrap_err());
    assert_eq!(name, "nope");
    // with upscaler_1 None, A1111 returns before looking the second one up
    let req = ExtrasRequest {
        upscaler_2: "nope".into(),
        upscaler_2_visibility: 0.5,
        ..Default::default()
    };
    let out = upscale_extras(&small(), &req, &reg, &mut keep_going).unwrap();
    assert_eq!(out.image, small());
    assert!(out.info.is_empty());
}

#[test]
fn bad_fields_and_sizes_are_typed_errors() {
    let reg = registry();
    let field = |req: ExtrasRequest| match upscale_extras(&small(), &req, &reg, &mut keep_going) {
        Err(PipelineError::Request { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let lanczos = |resize| ExtrasRequest {
        resize,
        upscaler_1: "Lanczos".into(),
        ..Default::default()
    };
    let by = |scale| ExtrasResize::By {
        scale,
        max_side_length: 0,
    };
    assert_eq!(field(lanczos(by(0.0))), "upscaling_resize");
    assert_eq!(field(lanczos(by(f64::NAN))), "upscaling_resize");
    let to = |width, height| ExtrasResize::To {
        width,
        height,
        crop: true,
    };
    assert_eq!(field(lanczos(to(0, 8))), "upscaling_resize_w");
    assert_eq!(field(lanczos(to(8, 5000))), "upscaling_resize_h");
    let mut r = lanczos(by(2.0));
    r.upscaler_2_visibility = 1.5;
    assert_eq!(field(r), "extras_upscaler_2_visibility");
    // 13x10 by 400 is over the 4096-pixel side limit
    match upscale_extras(&small(), &lanczos(by(400.0)), &reg, &mut keep_going) {
        Err(PipelineError::Upscale(b)) => match *b {
            UpscaleError::Size { width, height, .. } => assert_eq!((width, height), (5200, 4000)),
            other => panic!("{other}"),
        },
        other => panic!("{other:?}"),
    }
}
