//! A1111's Extras API (`modules/api/api.py` `extras_single_image_api` /
//! `extras_batch_images_api`, `ExtrasBaseRequest`'s fields and defaults) over
//! [`sumi_pipeline::extras`], and the upscaler listings (`/upscalers`, `/realesrgan-models`)
//! from the upscaler folders (`Config.load.upscaler_dirs`).
//!
//! The work takes its turn in the generation queue and runs on its worker thread, as A1111 runs
//! it under its queue lock: an Extras request waits behind the generations queued before it
//! (and they behind it), counts toward the queue's capacity (429 when full), and stops at the
//! next model tile when the client goes away. Running, it is A1111's `shared.state` job
//! (`state.begin(job="extras")`, so an interrupt sent to an earlier generation does not reach
//! it): `/progress` shows it and `/interrupt` and `/skip` act on it as A1111's
//! `run_postprocessing` and tiled upscalers do (an interrupt ends the batch before the next
//! image and makes the running model pass hand back its input; a skip drops the image). The
//! model tiles are the stored settings' (`ESRGAN_tile`, `SWIN_tile`, `DAT_tile` and their
//! overlaps, A1111's 192/8 by default). Fields
//! A1111 accepts but Sumi does not do are refused with a 422 naming them: face restoration
//! (`gfpgan_visibility`, `codeformer_visibility` above 0). `upscale_first` is accepted as A1111
//! does: its `run_extras` never reads it. Other unknown fields are ignored, as pydantic does.
//! An unknown upscaler is a 404 listing the known ones (A1111 answers a 500 `AssertionError`).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sumi_pipeline::extras::{
    html_info, output_texts, upscale_extras_picture, ExtrasRequest, ExtrasResize,
};
use sumi_pipeline::png::encode_picture_png;
use sumi_pipeline::upscale::{
    real_esrgan_model, TileProgress, UpscaleError, UpscalerRegistry, UpscalerTiles,
    REAL_ESRGAN_MODELS,
};
use sumi_pipeline::PipelineError;

use crate::body::{json_object, read_body};
use crate::error::ApiError;
use crate::images::{decode_base64, encode_base64, Upload, MAX_REQUEST_PIXELS};
use crate::queue::{Outcome, Task, Work};
use crate::{lax, worker, AppState};

/// `ExtrasBaseRequest` (and the single image's `image`, the batch's `imageList`).
#[derive(Debug, Default, Deserialize)]
struct Fields {
    #[serde(default, deserialize_with = "lax::int")]
    resize_mode: Option<i64>,
    #[serde(default, deserialize_with = "lax::boolean")]
    show_extras_results: Option<bool>,
    #[serde(default, deserialize_with = "lax::float")]
    gfpgan_visibility: Option<f64>,
    #[serde(default, deserialize_with = "lax::float")]
    codeformer_visibility: Option<f64>,
    #[serde(default, deserialize_with = "lax::float")]
    codeformer_weight: Option<f64>,
    #[serde(default, deserialize_with = "lax::float")]
    upscaling_resize: Option<f64>,
    #[serde(default, deserialize_with = "lax::int")]
    upscaling_resize_w: Option<i64>,
    #[serde(default, deserialize_with = "lax::int")]
    upscaling_resize_h: Option<i64>,
    #[serde(default, deserialize_with = "lax::boolean")]
    upscaling_crop: Option<bool>,
    #[serde(default, deserialize_with = "lax::string")]
    upscaler_1: Option<String>,
    #[serde(default, deserialize_with = "lax::string")]
    upscaler_2: Option<String>,
    #[serde(default, deserialize_with = "lax::float")]
    extras_upscaler_2_visibility: Option<f64>,
    #[serde(default, deserialize_with = "lax::boolean")]
    upscale_first: Option<bool>,
    #[serde(default, deserialize_with = "lax::string")]
    image: Option<String>,
    #[serde(default, rename = "imageList")]
    image_list: Option<Vec<FileData>>,
}

/// `FileData`: `{data, name}`.
#[derive(Debug, Deserialize)]
struct FileData {
    data: String,
    #[allow(dead_code)] // A1111 uses it for file names only, which the API does not save
    name: String,
}

fn parse(sent: Map<String, Value>) -> Result<Fields, ApiError> {
    serde_path_to_error::deserialize(Value::Object(sent)).map_err(|e| {
        let path = e.path().to_string();
        ApiError::invalid(format!("{path}: {}", e.inner()))
    })
}

/// A field `0 ≤ v ≤ 1` (pydantic's `ge=0, le=1, allow_inf_nan=False`).
fn unit(field: &str, v: Option<f64>) -> Result<f64, ApiError> {
    let v = v.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&v) {
        return Err(ApiError::invalid(format!(
            "{field}: {v} is not between 0 and 1"
        )));
    }
    Ok(v)
}

/// The pipeline request from A1111's fields, with its defaults, and the model tiles of the
/// settings (`ESRGAN_tile`, `SWIN_tile`, `DAT_tile`: [`crate::options::upscaler_tiles`]); 422
/// for values out of A1111's ranges and for the face restoration Sumi does not do.
fn request(f: &Fields, tiles: UpscalerTiles) -> Result<ExtrasRequest, ApiError> {
    for (field, v) in [
        ("gfpgan_visibility", f.gfpgan_visibility),
        ("codeformer_visibility", f.codeformer_visibility),
    ] {
        if unit(field, v)? > 0.0 {
            return Err(ApiError::invalid(format!(
                "{field}: face restoration (GFPGAN, CodeFormer) is not supported by Sumi; send 0"
            )));
        }
    }
    unit("codeformer_weight", f.codeformer_weight)?;
    let _ = (f.show_extras_results, f.upscale_first); // read by A1111 (or not) without effect
    let side = |field: &str, v: Option<i64>| -> Result<u32, ApiError> {
        let v = v.unwrap_or(512);
        u32::try_from(v)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| ApiError::invalid(format!("{field}: {v} is not at least 1")))
    };
    let resize = match f.resize_mode.unwrap_or(0) {
        0 => {
            let scale = f.upscaling_resize.unwrap_or(2.0);
            if !(scale.is_finite() && scale > 0.0) {
                return Err(ApiError::invalid(format!(
                    "upscaling_resize: {scale} is not greater than 0"
                )));
            }
            ExtrasResize::By {
                scale,
                max_side_length: 0,
            }
        }
        1 => ExtrasResize::To {
            width: side("upscaling_resize_w", f.upscaling_resize_w)?,
            height: side("upscaling_resize_h", f.upscaling_resize_h)?,
            crop: f.upscaling_crop.unwrap_or(true),
        },
        m => {
            return Err(ApiError::invalid(format!(
                "resize_mode: {m} is not 0 (by upscaling_resize) or 1 (to upscaling_resize_w/h)"
            )))
        }
    };
    Ok(ExtrasRequest {
        resize,
        upscaler_1: f.upscaler_1.clone().unwrap_or_else(|| "None".into()),
        upscaler_2: f.upscaler_2.clone().unwrap_or_else(|| "None".into()),
        upscaler_2_visibility: unit(
            "extras_upscaler_2_visibility",
            f.extras_upscaler_2_visibility,
        )?,
        tile: tiles,
    })
}

/// The registries already scanned, by folder list (A1111 lists upscalers at start; a
/// registry keeps the networks it has built).
type Registries = Mutex<Vec<(Vec<PathBuf>, Arc<UpscalerRegistry>)>>;

/// The upscalers of the server's upscaler folders, scanned once.
pub fn registry(s: &AppState) -> Result<Arc<UpscalerRegistry>, ApiError> {
    static CACHE: OnceLock<Registries> = OnceLock::new();
    let dirs = &s.config.load.upscaler_dirs;
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((_, r)) = cache.iter().find(|(d, _)| d == dirs) {
        return Ok(r.clone());
    }
    let r = Arc::new(
        UpscalerRegistry::scan(dirs)
            .map_err(|e| ApiError::internal(format!("cannot list the upscalers: {e}")))?,
    );
    cache.push((dirs.clone(), r.clone()));
    Ok(r)
}

/// A pipeline error as an answer: unknown upscaler 404 (with the list), the request's sizes
/// and fields 422, an unusable upscaler file or anything else 500.
fn answer(e: PipelineError) -> ApiError {
    match &e {
        PipelineError::Upscale(u) => match **u {
            UpscaleError::UnknownUpscaler { .. } => ApiError::not_found(e.to_string()),
            UpscaleError::Size { .. } | UpscaleError::Scale(_) | UpscaleError::Tile { .. } => {
                ApiError::invalid(e.to_string())
            }
            UpscaleError::Interrupted => ApiError::unavailable(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        },
        PipelineError::Request { .. } => ApiError::invalid(e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

/// An input PNG's text chunks (none for other formats), carried to the output as A1111 does.
type Texts = Vec<(String, String)>;

/// Reads the header of the image sent as `field` and its text chunks.
fn upload(field: &str, text: &str) -> Result<(Upload, Texts), ApiError> {
    let bytes = decode_base64(field, text)?;
    let texts = sumi_pipeline::png::text_chunks(&bytes).unwrap_or_default();
    Ok((Upload::inspect(field, bytes)?, texts))
}

/// Where the Extras loop is, for A1111's shared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// Image `i` is about to be upscaled (A1111's `nextjob`; its loop breaks here once
    /// interrupted).
    Image(usize),
    /// Image `i`'s model upscaler is about to run a tile.
    Tile(usize, TileProgress),
    /// Image `i` is upscaled (A1111 drops it here when skipped).
    Done(usize),
}

/// What the shared state asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Go,
    Interrupt,
    Skip,
}

/// A1111's `run_postprocessing` loop: each image upscaled, `control` asked before each image
/// (an interrupt ends the loop, with the images made), between a model's tiles (an interrupt
/// makes the upscaler hand back the pass's input, then Lanczos, as A1111's) and after each
/// image (a skip leaves it out). `(html_info, base64 PNGs)`.
fn upscale_all(
    uploads: Vec<(Upload, Texts)>,
    req: &ExtrasRequest,
    registry: &UpscalerRegistry,
    control: &mut dyn FnMut(Event) -> Control,
) -> Result<(String, Vec<String>), ApiError> {
    let mut infotext = String::new();
    let mut images = Vec::with_capacity(uploads.len());
    for (i, (up, texts)) in uploads.into_iter().enumerate() {
        if control(Event::Image(i)) == Control::Interrupt {
            break;
        }
        let img = up.decode_picture()?;
        let mut on_tile = |p| match control(Event::Tile(i, p)) {
            Control::Interrupt => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        };
        let (image, info) =
            upscale_extras_picture(&img, req, registry, &mut on_tile).map_err(answer)?;
        if control(Event::Done(i)) == Control::Skip {
            continue;
        }
        infotext = sumi_pipeline::extras::infotext(&info);
        let png = encode_picture_png(&image, &output_texts(&texts, &infotext))
            .map_err(|e| ApiError::internal(format!("cannot encode the PNG: {e}")))?;
        images.push(encode_base64(&png));
    }
    Ok((html_info(&infotext), images))
}

/// A1111's `shared.state` for an Extras job on the worker: `/progress` shows it ("extras", one
/// job an image, a model's tiles as steps) and `/interrupt`, `/skip` reach it.
struct ExtrasState<'a> {
    state: &'a AppState,
    cancel: &'a AtomicBool,
}

impl<'a> ExtrasState<'a> {
    /// `state.begin(job="extras")`: a stop asked of an earlier job is forgotten.
    fn begin(state: &'a AppState, cancel: &'a AtomicBool, images: usize) -> Self {
        state.control.store(worker::RUN, Ordering::SeqCst);
        state.progress_lock().begin("extras", images as u32);
        Self { state, cancel }
    }

    fn control(&self, e: Event) -> Control {
        if self.cancel.load(Ordering::SeqCst) {
            return Control::Interrupt;
        }
        match e {
            Event::Image(i) => self.state.progress_lock().step(i as u32, 0, 0, None),
            Event::Tile(i, p) => self
                .state
                .progress_lock()
                .step(i as u32, p.done, p.total, None),
            Event::Done(_) => {}
        }
        match self.state.control.load(Ordering::SeqCst) {
            worker::INTERRUPT => Control::Interrupt,
            worker::SKIP if matches!(e, Event::Done(_)) => {
                self.state.control.store(worker::RUN, Ordering::SeqCst);
                Control::Skip
            }
            _ => Control::Go,
        }
    }
}

impl Drop for ExtrasState<'_> {
    fn drop(&mut self) {
        self.state.progress_lock().end();
        self.state.control.store(worker::RUN, Ordering::SeqCst);
    }
}

/// What an Extras job answers: `(html_info, base64 PNGs)`.
type Answer = Result<(String, Vec<String>), ApiError>;

/// Upscales each uploaded image in the generation queue's turn; `(html_info, base64 PNGs)`.
async fn run(s: &Arc<AppState>, uploads: Vec<(Upload, Texts)>, req: ExtrasRequest) -> Answer {
    let registry = registry(s)?;
    // unknown names fail before the queue and before any pixel is decoded
    for name in [&req.upscaler_1, &req.upscaler_2] {
        if name != "None" {
            registry.get(name).map_err(answer)?;
        }
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<Answer>();
    let state = s.clone();
    let work = Work(Box::new(move |cancel: &AtomicBool| {
        let shared = ExtrasState::begin(&state, cancel, uploads.len());
        let out = upscale_all(uploads, &req, &registry, &mut |e| shared.control(e));
        drop(shared);
        let _ = tx.send(out);
    }));
    match crate::routes::submit(s, Task::Run(work), false).await? {
        Outcome::Ran => rx
            .await
            .map_err(|_| ApiError::internal("the Extras job ended without an answer"))?,
        Outcome::Cancelled(why) => Err(ApiError::unavailable(why)),
        Outcome::Refused(e) => Err(e),
        Outcome::Generated(_) | Outcome::Loaded(_) => {
            Err(ApiError::internal("the Extras job failed in the worker"))
        }
    }
}

/// The model tiles of the stored settings (Extras requests have no `override_settings`).
fn settings_tiles(s: &AppState) -> Result<UpscalerTiles, ApiError> {
    crate::options::upscaler_tiles(&s.options_lock(), None)
}

/// Reads the body and its fields (body limit, timeouts, draining as the generation routes).
async fn read_fields(s: &AppState, headers: &HeaderMap, body: Body) -> Result<Fields, ApiError> {
    if s.draining.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let bytes = read_body(headers, body, s.config.body_limit, s.timeouts.body).await?;
    let sent = json_object(&bytes)?;
    drop(bytes);
    parse(sent)
}

/// Checks the declared sizes of all the images together.
fn check_total(uploads: &[(Upload, Texts)]) -> Result<(), ApiError> {
    let total: u64 = uploads.iter().map(|(u, _)| u.pixels()).sum();
    if total > MAX_REQUEST_PIXELS {
        return Err(ApiError::invalid(format!(
            "the images have {total} pixels together, over the limit of {MAX_REQUEST_PIXELS}"
        )));
    }
    Ok(())
}

/// `POST /sdapi/v1/extra-single-image`: `{"image": b64, …}` → `{"html_info", "image"}`.
pub async fn extra_single_image(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let f = read_fields(&s, &headers, body).await?;
    let req = request(&f, settings_tiles(&s)?)?;
    let text = f.image.as_deref().unwrap_or("");
    let (html, mut images) = run(&s, vec![upload("image", text)?], req).await?;
    let image = images.pop().unwrap_or_default();
    Ok(Json(json!({ "html_info": html, "image": image })))
}

/// `POST /sdapi/v1/extra-batch-images`: `{"imageList": [{data, name}], …}` →
/// `{"html_info", "images"}` (`html_info` of the last image, as A1111).
pub async fn extra_batch_images(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let f = read_fields(&s, &headers, body).await?;
    let req = request(&f, settings_tiles(&s)?)?;
    let Some(list) = &f.image_list else {
        return Err(ApiError::invalid("imageList: field required"));
    };
    let uploads = list
        .iter()
        .enumerate()
        .map(|(i, d)| upload(&format!("imageList[{i}].data"), &d.data))
        .collect::<Result<Vec<_>, _>>()?;
    check_total(&uploads)?;
    let (html, images) = run(&s, uploads, req).await?;
    Ok(Json(json!({ "html_info": html, "images": images })))
}

/// `GET /sdapi/v1/upscalers`: A1111's `get_upscalers` over the registry (`model_name`
/// `ESRGAN_4x` for files of the ESRGAN folder, null for the built-ins and Real-ESRGAN; the
/// Real-ESRGAN entries' `model_path` is their `data_path`, the release's URL, as A1111 lists
/// it even when the file is on disk).
pub async fn upscalers(State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let r = registry(&s)?;
    let items = r
        .entries()
        .iter()
        .map(|u| {
            let real = u.path().and(real_esrgan_model(u.name()));
            let path = match real {
                Some(m) => Some(m.url.to_string()),
                None => u.path().map(|p| p.to_string_lossy().into_owned()),
            };
            let model_name = (path.is_some() && real.is_none()).then_some("ESRGAN_4x");
            json!({
                "name": u.name(),
                "model_name": model_name,
                "model_path": path,
                "model_url": Value::Null,
                "scale": u.scale(),
            })
        })
        .collect();
    Ok(Json(Value::Array(items)))
}

/// `GET /sdapi/v1/realesrgan-models`: A1111's `get_realesrgan_models(None)`: its six
/// Real-ESRGAN entries (`name`, `path` = the release's URL, `scale`), whichever files are on
/// disk (`/upscalers` lists those Sumi can run).
pub async fn realesrgan_models() -> Json<Value> {
    let items = REAL_ESRGAN_MODELS
        .iter()
        .map(|m| json!({"name": m.name, "path": m.url, "scale": m.scale}))
        .collect();
    Json(Value::Array(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    fn fields(v: Value) -> Fields {
        parse(v.as_object().unwrap().clone()).unwrap()
    }

    #[test]
    fn a1111_defaults() {
        let r = request(&Fields::default(), UpscalerTiles::default()).unwrap();
        assert_eq!(r, ExtrasRequest::default());
        let f = fields(json!({"resize_mode": 1, "upscaling_crop": false}));
        let r = request(&f, UpscalerTiles::default()).unwrap();
        assert_eq!(
            r.resize,
            ExtrasResize::To {
                width: 512,
                height: 512,
                crop: false
            }
        );
    }

    /// Three 40×30 PNGs.
    fn uploads() -> Vec<(Upload, Texts)> {
        (0..3u8)
            .map(|k| {
                let img = RgbImage::from_fn(40, 30, |x, y| {
                    image::Rgb([(x * 6) as u8, (y * 8) as u8, k.wrapping_mul(70)])
                });
                let png = sumi_pipeline::png::encode_png(&img, None).unwrap();
                (Upload::inspect("image", png).unwrap(), Vec::new())
            })
            .collect()
    }

    fn decode(b64: &str) -> RgbImage {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        image::load_from_memory(&bytes).unwrap().to_rgb8()
    }

    #[test]
    fn interrupt_and_skip_as_run_postprocessing() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/upscalers");
        let reg = UpscalerRegistry::scan(&[dir]).unwrap();
        let lanczos = ExtrasRequest {
            upscaler_1: "Lanczos".into(),
            ..Default::default()
        };
        // an interrupt before the second image: the first only
        let (_, out) = upscale_all(uploads(), &lanczos, &reg, &mut |e| match e {
            Event::Image(1) => Control::Interrupt,
            _ => Control::Go,
        })
        .unwrap();
        assert_eq!(out.len(), 1);
        // a skip of the second image: the first and the third
        let all = upscale_all(uploads(), &lanczos, &reg, &mut |_| Control::Go)
            .unwrap()
            .1;
        let (_, out) = upscale_all(uploads(), &lanczos, &reg, &mut |e| match e {
            Event::Done(1) => Control::Skip,
            _ => Control::Go,
        })
        .unwrap();
        assert_eq!(out, [all[0].clone(), all[2].clone()]);
        // a model upscaler interrupted at its second tile: A1111's upscaler hands back the
        // picture, then Lanczos to the size (80×56 for 2× of 40×30)
        let model = ExtrasRequest {
            upscaler_1: "compact_x2".into(),
            tile: sumi_pipeline::upscale::TileOptions {
                tile: 16,
                overlap: 4,
            }
            .into(),
            ..Default::default()
        };
        let mut tiles = 0;
        let (_, out) = upscale_all(uploads(), &model, &reg, &mut |e| match e {
            Event::Tile(0, p) => {
                tiles += 1;
                assert_eq!(p.total, 9, "3×3 tiles of 16 overlapping 4");
                if p.done == 1 {
                    Control::Interrupt
                } else {
                    Control::Go
                }
            }
            Event::Image(1) => Control::Interrupt,
            _ => Control::Go,
        })
        .unwrap();
        assert_eq!((out.len(), tiles), (1, 2));
        let (src, _) = &uploads()[0];
        let src = src.decode_init_image().unwrap();
        let want = sumi_pipeline::image::resize_lanczos(&src, 80, 56).unwrap();
        assert_eq!(decode(&out[0]), want);
    }

    #[test]
    fn rgba_stays_rgba_as_in_a1111() {
        let img = image::RgbaImage::from_fn(20, 12, |x, y| {
            image::Rgba([(x * 12) as u8, (y * 20) as u8, 50, (x * 13 + y) as u8])
        });
        let mut png = Vec::new();
        image::DynamicImage::ImageRgba8(img.clone())
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let upload = (Upload::inspect("image", png).unwrap(), Vec::new());
        let req = ExtrasRequest {
            upscaler_1: "Lanczos".into(),
            ..Default::default()
        };
        let reg = UpscalerRegistry::builtin();
        let (_, out) = upscale_all(vec![upload], &req, &reg, &mut |_| Control::Go).unwrap();
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&out[0])
            .unwrap();
        let got = image::load_from_memory(&bytes).unwrap();
        assert!(got.color().has_alpha());
        let src = sumi_pipeline::upscale::Picture::Rgba(img);
        let (want, _) =
            upscale_extras_picture(&src, &req, &reg, &mut |_| ControlFlow::Continue(())).unwrap();
        assert_eq!(got.to_rgba8().as_raw(), want.as_raw());
    }

    #[test]
    fn refused_fields_are_named() {
        for (v, field) in [
            (json!({"gfpgan_visibility": 0.5}), "gfpgan_visibility"),
            (json!({"codeformer_visibility": 1}), "codeformer_visibility"),
            (json!({"codeformer_weight": 2}), "codeformer_weight"),
            (json!({"resize_mode": 2}), "resize_mode"),
            (json!({"upscaling_resize": 0}), "upscaling_resize"),
            (
                json!({"resize_mode": 1, "upscaling_resize_w": 0}),
                "upscaling_resize_w",
            ),
            (
                json!({"extras_upscaler_2_visibility": -0.1}),
                "extras_upscaler_2_visibility",
            ),
        ] {
            let e = request(&fields(v), UpscalerTiles::default()).unwrap_err();
            assert_eq!(e.status.as_u16(), 422);
            assert!(e.detail.starts_with(field), "{}", e.detail);
        }
    }
}
