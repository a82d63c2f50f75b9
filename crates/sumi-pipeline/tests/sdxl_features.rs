//! SDXL beyond plain txt2img/img2img, end to end against A1111 v1.10.1 restated over the tiny
//! SDXL models (tools/reference/make_sdxl_hires_fixtures.py, fixtures/sdxl_hires/): the hires
//! fix (`Latent` with second-pass steps of its own, `Latent (bicubic antialiased)` with A1111's
//! resize-and-crop, whose second-pass size conditions are the upscale target's, and the Lanczos
//! image upscaler with a hires prompt of its own), SD upscale (non-square tiles: the tile's size
//! in the conditioning), masked inpainting on the 4-channel base (latent blend; original and
//! latent noise, whole picture and only masked) and on the 9-channel SDXL inpainting U-Net
//! (an unrounded mask, whose conditioning A1111 rounds all the same; mask weight 0.5,
//! inverted). Final latents within 1e-4 of max(1, max |reference|), pixels within one level.
//! Also: previews on SDXL (A1111's SDXL cheap coefficients, TAESDXL's real decoder picked
//! beside TAESD's).

use std::ops::ControlFlow;
use std::path::PathBuf;

use serde_json::Value;
use sumi_pipeline::preview::{LatentSpace, PreviewLatents, Previewer};
use sumi_pipeline::sd_upscale::SdUpscaler;
use sumi_pipeline::{Hires, Inpaint, LoadOptions, MaskedContent, Pipeline, Request, SdUpscale};
use sumi_sampling::names::parse_sampler_and_scheduler;

mod common;
use common::{case_request, max_abs, root, tiny_model};

/// The cases the fixture holds.
const CASES: usize = 8;

fn image(rel: &str) -> image::RgbImage {
    image::open(root().join(rel)).unwrap().to_rgb8()
}

/// The request of fixture case `c`.
fn request(c: &Value) -> Request {
    let s = |k: &str| c[k].as_str();
    let u = |k: &str| c[k].as_u64().unwrap() as u32;
    let prompts = (s("prompt").unwrap(), s("negative").unwrap());
    match s("kind").unwrap() {
        "hires" => Request {
            hires: Some(Hires {
                scale: c["hr_scale"].as_f64().unwrap(),
                resize_x: u("hr_resize_x"),
                resize_y: u("hr_resize_y"),
                second_pass_steps: u("hr_steps"),
                denoising_strength: c["strength"].as_f64().unwrap(),
                upscaler: s("hr_upscaler").map(str::to_string),
                sampler: s("hr_sampler").map(|n| parse_sampler_and_scheduler(n, None).unwrap().0),
                scheduler: None,
                prompt: s("hr_prompt").unwrap().into(),
                negative_prompt: String::new(),
            }),
            ..case_request(c, 64, prompts, &image("generate/init.png"))
        },
        "sd_upscale" => Request {
            batch_count: u("n_iter"),
            sd_upscale: Some(SdUpscale {
                overlap: u("overlap"),
                upscaler: SdUpscaler::Name(s("upscaler").unwrap().to_lowercase()),
                scale: c["scale"].as_f64().unwrap(),
            }),
            ..case_request(c, 64, prompts, &image(s("source").unwrap()))
        },
        "inpaint" => {
            let mut r = case_request(c, 128, prompts, &image("inpaint/init.png"));
            r.inpainting_mask_weight = c["mask_weight"].as_f64().unwrap();
            let mask = root().join(format!("inpaint/mask_{}.png", s("mask").unwrap()));
            r.img2img.as_mut().unwrap().inpaint = Some(Inpaint {
                mask: image::open(mask).unwrap(),
                blur_x: u("blur_x"),
                blur_y: u("blur_y"),
                invert: c["invert"].as_bool().unwrap(),
                fill: MaskedContent::from_index(c["fill"].as_i64().unwrap()).unwrap(),
                full_res: c["full_res"].as_bool().unwrap(),
                full_res_padding: u("padding"),
                round: c["round"].as_bool().unwrap(),
            });
            r
        }
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn hires_sd_upscale_and_masked_inpainting_match_a1111() {
    let (_, list) = common::cases("sdxl_hires/cases.json", CASES);
    let list = list.exactly(CASES).unwrap().into_vec();
    let reference = common::reference("sdxl_hires/reference.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let mut loaded: std::collections::HashMap<String, Pipeline> = Default::default();
    for c in &list {
        let name = c["name"].as_str().unwrap();
        let arch = c["arch"].as_str().unwrap();
        let pipe = loaded.entry(arch.to_string()).or_insert_with(|| {
            let d = dir.path().join(arch);
            Pipeline::load(&tiny_model(arch, &d), &LoadOptions::default()).unwrap()
        });
        let (out, warnings) = pipe
            .generate(&request(c), &mut |_| ControlFlow::Continue(()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
        let (d, pd) = common::check_images(&reference, name, &out);
        let m = max_abs(&reference[&format!("{name}/latents")]);
        println!("{name}: latents max |diff| {d:.2e} (max {m:.2}), pixels max diff {pd:?}");
        assert!(pd.unwrap() <= 1.0, "{name}: pixels {pd:?}");
    }
}

/// The second pass's size conditions are the upscale target's (A1111's `calculate_hr_conds`),
/// not the cropped picture's: Sumi's crop case lies far closer to the reference than to the
/// reference's counterfactual conditioned at the cropped size (measured: max |diff| 9.5e-5
/// against 5.4e-3; the tiny model's size embeddings are weak, so the parity bound alone would
/// not tell them apart).
#[test]
fn the_hires_conditioning_is_sized_as_the_upscale_target() {
    let name = "hires_bicubic_aa_resize_crop";
    let (_, list) = common::cases("sdxl_hires/cases.json", CASES);
    let c = list
        .into_vec()
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap();
    let reference = common::reference("sdxl_hires/reference.safetensors");
    let right = &reference[&format!("{name}/latents")];
    let wrong = &reference[&format!("{name}/latents_conditioned_at_crop")];
    let dir = tempfile::tempdir().unwrap();
    let pipe = Pipeline::load(&tiny_model("sdxl", dir.path()), &LoadOptions::default()).unwrap();
    let (out, _) = pipe
        .generate(&request(&c), &mut |_| ControlFlow::Continue(()))
        .unwrap();
    let got = out[0].latents.unsqueeze(0).unwrap();
    let to_right = max_abs(&(&got - right).unwrap());
    let to_wrong = max_abs(&(&got - wrong).unwrap());
    println!("{name}: {to_right:.2e} from the reference, {to_wrong:.2e} from the crop-sized one");
    assert!(to_right * 10.0 < to_wrong, "{to_right} vs {to_wrong}");
}

fn shared() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if p.join("taesd/taesdxl_decoder.safetensors").is_file() {
        Some(p)
    } else {
        eprintln!(
            "skipped: {} is absent (TAESD weights live in ../shared/data/taesd)",
            p.display()
        );
        None
    }
}

/// PSNR in dB of `a` against `b` (same size).
fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let mse: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.as_raw().len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// TAESDXL's real encoder on a 256² photo gives SDXL latents (A1111 feeds TAESD the raw
/// latents, no scale); the previewer loaded from TAESD's SD decoder file takes TAESDXL's from
/// the same folder and renders them close to the photo, where the SD decoder does not.
#[test]
fn taesdxl_previews_sdxl_latents() {
    use candle_core::{DType, Device, Tensor};
    let Some(data) = shared() else { return };
    let photo = image::open(data.join("images/astronaut.png"))
        .unwrap()
        .to_rgb8();
    let photo = image::imageops::resize(&photo, 256, 256, image::imageops::FilterType::Triangle);
    let x: Vec<f32> = photo
        .as_raw()
        .iter()
        .map(|&b| f32::from(b) / 255.0)
        .collect();
    let x = Tensor::from_vec(x, (1, 256, 256, 3), &Device::Cpu)
        .and_then(|t| t.permute((0, 3, 1, 2)))
        .unwrap();
    let w =
        sumi_weights::Weights::open_raw(&data.join("taesd/taesdxl_encoder.safetensors")).unwrap();
    let enc = sumi_models::TaesdEncoder::new(w.var_builder(DType::F32, &Device::Cpu), 4).unwrap();
    let latents = enc.forward(&x).unwrap();
    let progress = sumi_pipeline::Progress {
        batch: 0,
        batch_count: 1,
        pass: 0,
        passes: 1,
        step: 0,
        steps: 1,
        denoised: Some(&latents),
        elapsed: Default::default(),
    };
    let l = PreviewLatents::first(&progress).unwrap();
    let previewer = Previewer::load(Some(&data.join("taesd/taesd_decoder.safetensors"))).unwrap();
    let xl = previewer.render(&l, LatentSpace::Sdxl).unwrap();
    assert_eq!(xl.dimensions(), (256, 256));
    let sd = previewer.render(&l, LatentSpace::Sd).unwrap();
    let (p_xl, p_sd) = (psnr(&xl, &photo), psnr(&sd, &photo));
    println!("TAESDXL preview PSNR {p_xl:.2} dB; the SD decoder on the same latents {p_sd:.2} dB");
    // measured: 23.92 dB against 11.07 dB (the bytes truncated, as A1111's preview does)
    assert!(p_xl > 22.0 && p_xl > p_sd + 3.0, "{p_xl:.2} vs {p_sd:.2}");

    assert_eq!(previewer.missing(LatentSpace::Sdxl), None);

    // TAESDXL's decoder alone in its folder: SD latents get the cheap projection, and why
    let d = tempfile::tempdir().unwrap();
    let only = d.path().join("taesdxl_decoder.safetensors");
    std::fs::copy(data.join("taesd/taesdxl_decoder.safetensors"), &only).unwrap();
    let previewer = Previewer::load(Some(&only)).unwrap();
    assert_eq!(previewer.render(&l, LatentSpace::Sdxl).unwrap(), xl);
    let cheap = Previewer::Cheap.render(&l, LatentSpace::Sd).unwrap();
    assert_eq!(cheap.dimensions(), (32, 32));
    assert_eq!(previewer.render(&l, LatentSpace::Sd).unwrap(), cheap);
    let why = previewer.missing(LatentSpace::Sd).unwrap();
    assert!(
        why.starts_with("previews: no taesd_decoder.safetensors beside "),
        "{why}"
    );

    // the SDXL model's `--taesd-decoder` given TAESD's SD file decodes with TAESDXL's beside it
    let opts = LoadOptions {
        taesd_decoder: Some(data.join("taesd/taesd_decoder.safetensors")),
        ..Default::default()
    };
    Pipeline::load(&tiny_model("sdxl", d.path()), &opts).unwrap();
}

/// A1111's SDXL "Approx cheap" coefficients on SDXL models.
#[test]
fn the_cheap_preview_of_sdxl_latents_uses_sdxls_coefficients() {
    let batch = candle_core::Tensor::from_vec(
        vec![1f32, 0.0, 0.0, 0.0],
        (1, 4, 1, 1),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let progress = sumi_pipeline::Progress {
        batch: 0,
        batch_count: 1,
        pass: 0,
        passes: 1,
        step: 0,
        steps: 1,
        denoised: Some(&batch),
        elapsed: Default::default(),
    };
    let l = PreviewLatents::first(&progress).unwrap();
    // 255 · (0.5 + 0.5 · [0.3448, 0.4168, 0.4395]) truncated; SD's first row [0.298, 0.207, 0.208]
    let xl = Previewer::Cheap.render(&l, LatentSpace::Sdxl).unwrap();
    assert_eq!(xl.into_raw(), vec![171, 180, 183]);
    let sd = Previewer::Cheap.render(&l, LatentSpace::Sd).unwrap();
    assert_eq!(sd.into_raw(), vec![165, 153, 154]);
}

/// The listing's latent space, from the header alone: SDXL base and inpainting files are
/// `sdxl`, SD1 `sd`; a refiner (no model of its own), a `.ckpt` and a broken file have none.
#[test]
fn latent_space_of_checkpoint_files() {
    use sumi_pipeline::checkpoint_report::latent_space_of;
    let dir = tempfile::tempdir().unwrap();
    for (arch, want) in [
        ("sdxl", Some(LatentSpace::Sdxl)),
        ("sdxl-inpaint", Some(LatentSpace::Sdxl)),
        ("sdxl-refiner", None),
        ("sd1", Some(LatentSpace::Sd)),
    ] {
        let d = dir.path().join(arch);
        assert_eq!(latent_space_of(&tiny_model(arch, &d)), want, "{arch}");
    }
    let broken = dir.path().join("broken.safetensors");
    std::fs::write(&broken, b"not a checkpoint").unwrap();
    assert_eq!(latent_space_of(&broken), None);
    assert_eq!(latent_space_of(&dir.path().join("model.ckpt")), None);
    assert_eq!(LatentSpace::Sdxl.name(), "sdxl");
}
