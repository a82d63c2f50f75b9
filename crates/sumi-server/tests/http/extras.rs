//! A1111's Extras API and the upscaler listings: `extra-single-image` and `extra-batch-images`
//! with A1111's defaults and answers (pictures equal to the pipeline's Extras upscale, which is
//! tested against A1111 in `sumi-pipeline/tests/extras.rs`; `html_info`; the `postprocessing`
//! text chunk beside the input's `parameters`), their errors (unknown upscaler 404 with the
//! list, face restoration and bad fields 422 naming the field, sizes over the limits 422,
//! unreadable images 400, an upscaler file of unknown architecture 500 naming it);
//! `/upscalers`, `/realesrgan-models`, `/latent-upscale-modes`.

use std::path::Path;

use base64::Engine;
use serde_json::{json, Value};
use sumi_pipeline::extras::{upscale_extras, ExtrasRequest, ExtrasResize};
use sumi_pipeline::upscale::{keep_going, UpscalerRegistry};

use crate::common::*;
use crate::fake::Fake;

fn upscaler_dir(root: &Path) -> std::path::PathBuf {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/upscalers");
    let d = root.join("upscalers");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(
        fixtures.join("compact_x2.safetensors"),
        d.join("compact_x2.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        fixtures.join("compact_x4.pth"),
        d.join("RealESRGAN_x4plus_anime_6B.pth"),
    )
    .unwrap();
    std::fs::write(d.join("broken.pth"), b"not a pickle").unwrap();
    d
}

fn server(root: &Path) -> TestServer {
    let mut c = config(root);
    c.load.upscaler_dirs = vec![upscaler_dir(root)];
    TestServer::start(c, Fake::new(0))
}

/// A 13×10 picture with a `parameters` chunk.
fn picture() -> (image::RgbImage, Vec<u8>) {
    let img = image::RgbImage::from_fn(13, 10, |x, y| {
        image::Rgb([(x * 19) as u8, (y * 25) as u8, ((x * y) % 256) as u8])
    });
    let png = sumi_pipeline::png::encode_png(&img, Some("a cat\nSteps: 20")).unwrap();
    (img, png)
}

fn texts(b64: &Value) -> Vec<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().unwrap())
        .unwrap();
    sumi_pipeline::png::text_chunks(&bytes).unwrap()
}

fn pipeline(img: &image::RgbImage, req: &ExtrasRequest, root: &Path) -> image::RgbImage {
    let reg = UpscalerRegistry::scan(&[root.join("upscalers")]).unwrap();
    upscale_extras(img, req, &reg, &mut keep_going)
        .unwrap()
        .image
}

#[test]
fn single_image_as_a1111() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path());
    let (img, png) = picture();
    // A1111's own test payload (test_simple_upscaling_performed)
    let (st, v) = post(
        &s,
        "/sdapi/v1/extra-single-image",
        &json!({
            "resize_mode": 0, "show_extras_results": true, "gfpgan_visibility": 0,
            "codeformer_visibility": 0, "codeformer_weight": 0, "upscaling_resize": 2,
            "upscaling_resize_w": 128, "upscaling_resize_h": 128, "upscaling_crop": true,
            "upscaler_1": "Lanczos", "upscaler_2": "None", "extras_upscaler_2_visibility": 0,
            "image": format!("data:image/png;base64,{}", b64(&png)),
        }),
    );
    assert_eq!(st, 200, "{v}");
    let text = "Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos";
    assert_eq!(v["html_info"], format!("<p>{text}</p>"));
    let (out, params) = decode_image(&v["image"]);
    assert_eq!(out.dimensions(), (24, 16)); // A1111's (w·2)//8·8 × (h·2)//8·8
    let req = ExtrasRequest {
        upscaler_1: "Lanczos".into(),
        ..Default::default()
    };
    assert_eq!(out, pipeline(&img, &req, d.path()));
    assert_eq!(params.as_deref(), Some("a cat\nSteps: 20"));
    assert_eq!(
        texts(&v["image"]),
        [
            ("parameters".to_string(), "a cat\nSteps: 20".to_string()),
            ("postprocessing".to_string(), text.to_string())
        ]
    );

    // only the image (test_png_info_performed), an unknown field (test_interrogate_performed):
    // upscaler None, the picture as sent, an empty infotext
    let (st, v) = post(
        &s,
        "/sdapi/v1/extra-single-image",
        &json!({"image": b64(&png), "model": "clip"}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["html_info"], "<p></p>");
    assert_eq!(decode_image(&v["image"]).0, img);
}

#[test]
fn model_upscaler_blend_and_crop() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path());
    let (img, png) = picture();
    let (st, v) = post(
        &s,
        "/sdapi/v1/extra-single-image",
        &json!({
            "image": b64(&png), "resize_mode": 1, "upscaling_resize_w": 30,
            "upscaling_resize_h": 20, "upscaler_1": "compact_x2", "upscaler_2": "Nearest",
            "extras_upscaler_2_visibility": 0.4,
        }),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["html_info"],
        "<p>Postprocess upscale to: 30x20, Postprocess crop to: 30x20, Postprocess upscaler: \
         compact_x2, Postprocess upscaler 2: Nearest</p>"
    );
    let req = ExtrasRequest {
        resize: ExtrasResize::To {
            width: 30,
            height: 20,
            crop: true,
        },
        upscaler_1: "compact_x2".into(),
        upscaler_2: "Nearest".into(),
        upscaler_2_visibility: 0.4,
        ..Default::default()
    };
    let (out, _) = decode_image(&v["image"]);
    assert_eq!(out.dimensions(), (30, 20));
    assert_eq!(out, pipeline(&img, &req, d.path()));
}

#[test]
fn batch_images() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path());
    let (_, first) = picture();
    let (st, v) = post(
        &s,
        "/sdapi/v1/extra-batch-images",
        &json!({
            "imageList": [{"data": b64(&first), "name": "a.png"},
                          {"data": b64(&png(16, 8, [10, 200, 30])), "name": "b.png"}],
            "upscaler_1": "Nearest", "upscaling_resize": 3,
        }),
    );
    assert_eq!(st, 200, "{v}");
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(decode_image(&images[0]).0.dimensions(), (32, 24));
    assert_eq!(decode_image(&images[1]).0.dimensions(), (48, 24));
    assert_eq!(
        v["html_info"],
        "<p>Postprocess upscale by: 3.0, Postprocess upscaler: Nearest</p>"
    );
    let (st, v) = post(
        &s,
        "/sdapi/v1/extra-batch-images",
        &json!({"imageList": [], "upscaler_1": "Nearest"}),
    );
    assert_eq!(
        (st, v),
        (200, json!({"html_info": "<p></p>", "images": []}))
    );
}

#[test]
fn errors_name_the_field_or_list_the_upscalers() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path());
    let img = b64(&png(16, 16, [10, 200, 30]));
    let single = |body: Value| post(&s, "/sdapi/v1/extra-single-image", &body);
    let (st, v) = single(json!({"image": img, "upscaler_1": "R-ESRGAN 4x+"}));
    assert_eq!(st, 404, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("`R-ESRGAN 4x+`"), "{detail}");
    assert!(
        detail.contains("None, Lanczos, Nearest, broken, compact_x2, R-ESRGAN 4x+ Anime6B"),
        "{detail}"
    );
    let (st, v) = single(json!({"image": img, "upscaler_1": "Lanczos", "upscaler_2": "x"}));
    assert_eq!(st, 404, "{v}");
    for (body, field) in [
        (json!({"gfpgan_visibility": 0.3}), "gfpgan_visibility"),
        (json!({"codeformer_visibility": 1}), "codeformer_visibility"),
        (json!({"resize_mode": 2}), "resize_mode"),
        (json!({"upscaling_resize": -1}), "upscaling_resize"),
        (json!({"upscaling_resize": "x"}), "upscaling_resize"),
        (
            json!({"extras_upscaler_2_visibility": 2}),
            "extras_upscaler_2_visibility",
        ),
    ] {
        let mut body = body;
        body["image"] = json!(img);
        let (st, v) = single(body);
        assert_eq!(st, 422, "{field}: {v}");
        assert!(v["detail"].as_str().unwrap().starts_with(field), "{v}");
    }
    // over the 4096-pixel side limit
    let (st, v) = single(json!({"image": img, "upscaler_1": "Lanczos", "upscaling_resize": 300}));
    assert_eq!(st, 422, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("4800x4800"), "{v}");
    let (st, v) = single(json!({"image": "!!!", "upscaler_1": "Lanczos"}));
    assert_eq!(st, 400, "{v}");
    let (st, v) = single(json!({"upscaler_1": "Lanczos"}));
    assert_eq!(st, 400, "{v}");
    let (st, v) = post(&s, "/sdapi/v1/extra-batch-images", &json!({}));
    assert_eq!(st, 422, "{v}");
    assert!(
        v["detail"].as_str().unwrap().starts_with("imageList"),
        "{v}"
    );
    // an upscaler file that is no upscaler: the server's fault, the file named
    let (st, v) = single(json!({"image": img, "upscaler_1": "broken"}));
    assert_eq!(st, 500, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("broken.pth"), "{v}");
}

/// Where A1111 downloads the Real-ESRGAN releases from.
const REL: &str = "https://github.com/xinntao/Real-ESRGAN/releases/download/";

#[test]
fn upscaler_listings() {
    let d = tempfile::tempdir().unwrap();
    let s = server(d.path());
    let dir = d.path().join("upscalers");
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let builtin = |n: &str| json!({"name": n, "model_name": null, "model_path": null, "model_url": null, "scale": 4});
    let (st, v) = get(&s, "/sdapi/v1/upscalers");
    assert_eq!(st, 200);
    assert_eq!(
        v,
        json!([
            builtin("None"),
            builtin("Lanczos"),
            builtin("Nearest"),
            {"name": "broken", "model_name": "ESRGAN_4x", "model_path": path("broken.pth"),
             "model_url": null, "scale": 4},
            {"name": "compact_x2", "model_name": "ESRGAN_4x",
             "model_path": path("compact_x2.safetensors"), "model_url": null, "scale": 4},
            // A1111 lists a Real-ESRGAN entry's data_path, the release's URL
            {"name": "R-ESRGAN 4x+ Anime6B", "model_name": null,
             "model_path": format!("{REL}v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth"),
             "model_url": null, "scale": 4},
        ])
    );
    // A1111's get_realesrgan_models(None): its six entries, whichever files are there
    let real = |name: &str, file: &str, scale: u32| json!({"name": name, "path": format!("{REL}{file}"), "scale": scale});
    assert_eq!(
        get(&s, "/sdapi/v1/realesrgan-models").1,
        json!([
            real(
                "R-ESRGAN General 4xV3",
                "v0.2.5.0/realesr-general-x4v3.pth",
                4
            ),
            real(
                "R-ESRGAN General WDN 4xV3",
                "v0.2.5.0/realesr-general-wdn-x4v3.pth",
                4
            ),
            real(
                "R-ESRGAN AnimeVideo",
                "v0.2.5.0/realesr-animevideov3.pth",
                4
            ),
            real("R-ESRGAN 4x+", "v0.1.0/RealESRGAN_x4plus.pth", 4),
            real(
                "R-ESRGAN 4x+ Anime6B",
                "v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
                4
            ),
            real("R-ESRGAN 2x+", "v0.2.1/RealESRGAN_x2plus.pth", 2),
        ])
    );
    let names: Vec<Value> = [
        "Latent",
        "Latent (antialiased)",
        "Latent (bicubic)",
        "Latent (bicubic antialiased)",
        "Latent (nearest)",
        "Latent (nearest-exact)",
    ]
    .iter()
    .map(|n| json!({ "name": n }))
    .collect();
    assert_eq!(
        get(&s, "/sdapi/v1/latent-upscale-modes").1,
        Value::Array(names)
    );
}
