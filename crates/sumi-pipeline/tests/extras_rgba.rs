//! Extras of an RGBA picture as A1111 v1.10.1 with Pillow 9.5.0 does them
//! (tools/reference/make_extras_rgba_fixtures.py, fixtures/extras_rgba/): Lanczos (over
//! premultiplied colour) and Nearest keep the alpha, the crop's canvas is RGB, the second
//! upscale is blended in the first's mode — exact; `None` leaves the picture as it is; a model
//! upscaler sees the colour without the alpha (not flattened) and gives RGB.

use std::ops::ControlFlow;

use image::RgbaImage;
use sumi_pipeline::extras::{upscale_extras, upscale_extras_picture, ExtrasRequest, ExtrasResize};
use sumi_pipeline::upscale::{keep_going, Picture, UpscalerRegistry};

mod common;
use common::{cases, reference, root};

fn source() -> RgbaImage {
    let img = image::open(root().join("extras_rgba/source.png")).unwrap();
    assert!(img.color().has_alpha());
    img.to_rgba8()
}

fn request(c: &serde_json::Value) -> ExtrasRequest {
    let resize = match c["to"].as_array() {
        Some(to) => ExtrasResize::To {
            width: to[0].as_u64().unwrap() as u32,
            height: to[1].as_u64().unwrap() as u32,
            crop: true,
        },
        None => ExtrasResize::By {
            scale: c["scale"].as_f64().unwrap(),
            max_side_length: 0,
        },
    };
    ExtrasRequest {
        resize,
        upscaler_1: c["upscaler_1"].as_str().unwrap().into(),
        upscaler_2: c["upscaler_2"].as_str().unwrap_or("None").into(),
        upscaler_2_visibility: c["visibility"].as_f64().unwrap_or(0.0),
        ..Default::default()
    }
}

#[test]
fn rgba_extras_match_pillow() {
    let (_, list) = cases("extras_rgba/cases.json", 4);
    let want = reference("extras_rgba/images.safetensors");
    let reg = UpscalerRegistry::builtin();
    let src = Picture::Rgba(source());
    for c in list.exactly(4).unwrap().into_vec() {
        let name = c["name"].as_str().unwrap();
        let (got, info) =
            upscale_extras_picture(&src, &request(&c), &reg, &mut keep_going).unwrap();
        assert!(!info.is_empty());
        let w = &want[name];
        let (h, wd, ch) = w.dims3().unwrap();
        let raw = w.flatten_all().unwrap().to_vec1::<u8>().unwrap();
        let mode = c["mode"].as_str().unwrap();
        assert_eq!(ch, if mode == "RGBA" { 4 } else { 3 }, "{name}");
        match (&got, mode) {
            (Picture::Rgba(_), "RGBA") | (Picture::Rgb(_), "RGB") => {}
            _ => panic!("{name}: a picture in the wrong mode"),
        }
        assert_eq!(got.dimensions(), (wd as u32, h as u32), "{name}");
        let diff = got
            .as_raw()
            .iter()
            .zip(&raw)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(diff, 0, "{name}: {diff} bytes differ");
    }
}

#[test]
fn none_keeps_rgba_and_a_model_sees_the_colour_without_alpha() {
    let src = Picture::Rgba(source());
    let reg = UpscalerRegistry::scan(&[root().join("upscalers")]).unwrap();
    let none = ExtrasRequest::default();
    let (got, info) = upscale_extras_picture(&src, &none, &reg, &mut keep_going).unwrap();
    assert_eq!((got, info.len()), (src.clone(), 0));
    let model = ExtrasRequest {
        upscaler_1: "compact_x2".into(),
        ..Default::default()
    };
    let (got, _) =
        upscale_extras_picture(&src, &model, &reg, &mut |_| ControlFlow::Continue(())).unwrap();
    let Picture::Rgb(got) = got else {
        panic!("a model upscaler gives RGB")
    };
    let rgb = upscale_extras(&src.to_rgb(), &model, &reg, &mut keep_going).unwrap();
    assert_eq!(got, rgb.image);
    // the colour under transparent pixels is kept, not flattened onto white
    let raw = src.to_rgb();
    let [r, _, _, a] = source().get_pixel(0, 0).0;
    assert_eq!((a, raw.get_pixel(0, 0).0[0]), (0, r));
}
