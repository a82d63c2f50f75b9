//! Helpers the pipeline's integration tests share, over `sumi-testkit`: the fixtures folder,
//! tiny checkpoints built from their manifests, guarded case lists, and a max |x|.

#![allow(dead_code)] // each test crate uses its own subset

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde_json::Value;
use sumi_testkit::Cases;

pub mod lora;

/// The repository's `fixtures/` folder.
pub fn root() -> PathBuf {
    sumi_testkit::fixtures()
}

/// The tiny `arch` checkpoint (f16 storage), written into `dir` from its manifest.
pub fn tiny_model(arch: &str, dir: &Path) -> PathBuf {
    sumi_testkit::tiny_model(arch, dir)
}

/// max |x| over all elements (the testkit's measure, as f32 for these suites' tolerances).
pub fn max_abs(x: &Tensor) -> f32 {
    sumi_testkit::max_abs(x) as f32
}

/// The JSON fixture `fixtures/<rel>` and its `cases` list, refused when missing or empty and
/// guarded to hold at least `min` cases.
pub fn cases(rel: &str, min: usize) -> (Value, Cases<Value>) {
    let path = root().join(rel);
    let doc = sumi_testkit::fixture::read_json(&path).unwrap();
    let cases = Cases::from_document(&path, &doc, "/cases")
        .and_then(|c| c.at_least(min))
        .unwrap();
    (doc, cases)
}

/// The tensors of fixture `fixtures/<rel>`, refused when missing or empty.
pub fn reference(rel: &str) -> HashMap<String, Tensor> {
    sumi_testkit::fixture::tensors(&root().join(rel)).unwrap()
}

/// The request of an end-to-end fixture case `c` (sampler, schedule, RNG, seed, steps, CFG,
/// batch, size (`width`/`height` or `size`), img2img's strength and resize mode) with its
/// prompts.
pub fn case_request(
    c: &Value,
    size: u32,
    (prompt, negative_prompt): (&str, &str),
    init: &image::RgbImage,
) -> sumi_pipeline::Request {
    let (sampler, scheduler) = sumi_sampling::names::parse_sampler_and_scheduler(
        c["sampler"].as_str().unwrap(),
        c["scheduler"].as_str(),
    )
    .unwrap();
    let resize_mode =
        sumi_pipeline::image::ResizeMode::from_index(c["resize_mode"].as_u64().unwrap_or(0) as u8)
            .unwrap();
    sumi_pipeline::Request {
        prompt: prompt.into(),
        negative_prompt: negative_prompt.into(),
        seed: c["seed"].as_i64().unwrap(),
        subseed: 0,
        steps: c["steps"].as_u64().unwrap() as u32,
        cfg_scale: c["cfg"].as_f64().unwrap(),
        sampler,
        scheduler,
        width: c["width"].as_u64().map_or(size, |v| v as u32),
        height: c["height"].as_u64().map_or(size, |v| v as u32),
        rng: c["rng"].as_str().unwrap().parse().unwrap(),
        batch_size: c["batch"].as_u64().unwrap() as u32,
        img2img: (c["mode"] == "img2img").then(|| sumi_pipeline::Img2Img {
            init_image: init.clone(),
            resize_mode,
            denoising_strength: c["strength"].as_f64().unwrap(),
            inpaint: None,
        }),
        ..Default::default()
    }
}

/// Checks generated images against fixture case `name` of `reference`: final latents within
/// 1e-4 of max(|ref|, 1), pixels (when the fixture has them) within one level. Returns the
/// latents' max |diff| and the pixels' (`None` without reference pixels).
pub fn check_images(
    reference: &HashMap<String, Tensor>,
    name: &str,
    out: &[sumi_pipeline::Generated],
) -> (f32, Option<f32>) {
    use candle_core::{DType, Device};
    let lat = Tensor::stack(
        &out.iter().map(|g| g.latents.clone()).collect::<Vec<_>>(),
        0,
    )
    .unwrap();
    let want = &reference[&format!("{name}/latents")];
    let d = max_abs(&(&lat - want).unwrap());
    let m = max_abs(want);
    assert!(d / m.max(1.0) < 1e-4, "{name}: latents {d} vs max {m}");
    let Some(img_want) = reference.get(&format!("{name}/image")) else {
        return (d, None);
    };
    let img_want = img_want.to_dtype(DType::F32).unwrap();
    let px: Vec<Tensor> = out
        .iter()
        .map(|g| {
            let (w, h) = g.image.dimensions();
            Tensor::from_vec(
                g.image.as_raw().clone(),
                (h as usize, w as usize, 3),
                &Device::Cpu,
            )
            .unwrap()
        })
        .collect();
    let px = Tensor::stack(&px, 0).unwrap().to_dtype(DType::F32).unwrap();
    let pd = max_abs(&(&px - &img_want).unwrap());
    assert!(pd <= 1.0, "{name}: pixels differ by {pd} levels");
    (d, Some(pd))
}

/// A fixture folder of image-op cases: `cases.json` and the 8-bit pictures of
/// `images.safetensors` (`[h, w, 3]` each), as the upscaler and Extras generators write them.
pub struct ImageFixture {
    /// `cases.json`.
    pub doc: Value,
    /// The pictures by name.
    pub images: HashMap<String, Tensor>,
}

impl ImageFixture {
    /// `fixtures/<folder>`, refused when a file is missing or empty.
    pub fn open(folder: &str) -> Self {
        let dir = root().join(folder);
        Self {
            doc: sumi_testkit::fixture::read_json(&dir.join("cases.json")).unwrap(),
            images: sumi_testkit::fixture::tensors(&dir.join("images.safetensors")).unwrap(),
        }
    }

    /// The picture `key`.
    pub fn image(&self, key: &str) -> image::RgbImage {
        let t = self
            .images
            .get(key)
            .unwrap_or_else(|| panic!("no image {key}"));
        let (h, w, c) = t.dims3().unwrap();
        assert_eq!(c, 3);
        let v = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
        image::RgbImage::from_raw(w as u32, h as u32, v).unwrap()
    }

    /// The case list `key`, which must hold exactly `n` cases.
    pub fn cases(&self, key: &str, n: usize) -> &Vec<Value> {
        let c = self.doc[key].as_array().unwrap();
        assert_eq!(c.len(), n, "{key}");
        c
    }
}

/// An end-to-end fixture folder (`cases.json` with `size` and an `e2e` list, `e2e.safetensors`)
/// and the img2img source picture its cases share.
pub struct E2e {
    /// `cases.json`.
    pub doc: Value,
    /// Its `e2e` cases.
    pub cases: Vec<Value>,
    /// `e2e.safetensors`.
    pub reference: HashMap<String, Tensor>,
    /// `fixtures/generate/init.png`.
    pub init: image::RgbImage,
}

impl E2e {
    /// `fixtures/<folder>`, guarded to hold exactly `n` cases.
    pub fn open(folder: &str, n: usize) -> Self {
        let path = root().join(folder).join("cases.json");
        let doc = sumi_testkit::fixture::read_json(&path).unwrap();
        let cases = Cases::<Value>::from_document(&path, &doc, "/e2e")
            .and_then(|c| c.exactly(n))
            .unwrap()
            .into_iter()
            .collect();
        let init = image::open(root().join("generate/init.png"))
            .unwrap()
            .to_rgb8();
        Self {
            reference: reference(&format!("{folder}/e2e.safetensors")),
            doc,
            cases,
            init,
        }
    }

    /// Runs case `c` (its prompts as typed) on `pipe`: the request, the images, the warnings.
    pub fn render(
        &self,
        pipe: &sumi_pipeline::Pipeline,
        c: &Value,
    ) -> (
        sumi_pipeline::Request,
        Vec<sumi_pipeline::Generated>,
        Vec<String>,
    ) {
        let size = self.doc["size"].as_u64().unwrap() as u32;
        let prompts = (
            c["prompt"].as_str().unwrap(),
            c["negative_prompt"].as_str().unwrap(),
        );
        let req = case_request(c, size, prompts, &self.init);
        let (out, warnings) = pipe
            .generate(&req, &mut |_| std::ops::ControlFlow::Continue(()))
            .unwrap();
        (req, out, warnings)
    }
}
