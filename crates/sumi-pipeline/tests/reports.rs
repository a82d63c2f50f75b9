//! What the front ends show, built by the pipeline: the checkpoint report (`sumi model-info`),
//! the prompt report (`sumi prompt`), the embeddings of a loaded pipeline (`/embeddings`) and
//! step previews (`/progress`), on the tiny fixture models (and TAESD's real weights from
//! `../shared/data` where present).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sumi_pipeline::checkpoint_report::CheckpointReport;
use sumi_pipeline::embedding_report::EmbeddingReport;
use sumi_pipeline::preview::{LatentSpace, PreviewLatents, Previewer};
use sumi_pipeline::prompt_report::{PromptReport, ReadPrompt, ReportEncoding};
use sumi_pipeline::{
    Checkpoint, Emphasis, Format, LoadOptions, Pipeline, Prediction, PredictionSource, Request,
};

mod common;
use common::{root, tiny_model};

fn embeddings() -> PathBuf {
    root().join("embeddings")
}

#[test]
fn checkpoint_report_of_the_tiny_sd1() {
    let d = tempfile::tempdir().unwrap();
    let p = tiny_model("sd1", d.path());
    let r = CheckpointReport::read(&p, None).unwrap();
    assert_eq!(r.architecture, "sd1");
    assert_eq!(r.format, Format::Safetensors);
    assert_eq!(
        (r.prediction, &r.prediction_source),
        (Prediction::Epsilon, &PredictionSource::Rule)
    );
    assert_eq!(r.dtypes, [("F16".to_string(), 9_024_395)]);
    assert_eq!(r.storage_dtype(), "F16");
    assert_eq!((r.tensors, r.file_tensors), (978, 979));
    let n = r.params;
    assert_eq!(
        (n.unet, n.vae, n.text_encoder),
        (4_307_396, 1_399_879, 3_317_120)
    );
    assert_eq!(n.unet + n.vae + n.text_encoder, 9_024_395);
    let sha = hex(&Sha256::digest(std::fs::read(&p).unwrap()));
    let h = r.hash.as_ref().unwrap();
    assert_eq!((h.sha256.as_str(), h.short()), (sha.as_str(), &sha[..10]));

    let v = r.to_json();
    assert_eq!(v["format"], "safetensors");
    assert_eq!(v["prediction_source"], "architecture rule");
    assert_eq!(v["params"]["unet"], 4_307_396);
    assert_eq!(v["short_hash"], &sha[..10]);
    let text = r.to_string();
    let want = format!(
        "{}\n  architecture   sd1\n  prediction     epsilon (architecture rule)\n  format         safetensors, stored as F16\n  tensors        978 used of 979 in the file\n  parameters     U-Net 4307396, VAE 1399879, text encoder 3317120\n  sha256         {sha}\n  short hash     {}\n",
        p.display(),
        &sha[..10]
    );
    assert_eq!(text, want);

    // a diffusers folder: its scheduler config says ε, and a folder has no model hash
    let r = CheckpointReport::read(&d.path().join("diffusers"), None).unwrap();
    assert_eq!(r.format, Format::Diffusers);
    assert_eq!(r.prediction_source, PredictionSource::DiffusersConfig);
    assert!(r.hash.is_none());
    assert_eq!(r.to_json()["sha256"], serde_json::Value::Null);
    assert!(!r.to_string().contains("sha256"));
    // an override wins and names itself
    let r = CheckpointReport::read(&p, Some(Prediction::V)).unwrap();
    assert_eq!(r.to_json()["prediction_source"], "override");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn prompt_report_with_a_model_encodes_and_width_checks() {
    let d = tempfile::tempdir().unwrap();
    let ck = Checkpoint::open(&tiny_model("sd1", d.path()), None).unwrap();
    let read = ReadPrompt::new(
        "a [cat:dog:0.5] in tinyemb style BREAK b AND c:0.5",
        10,
        false,
    )
    .unwrap();
    let enc = ReportEncoding {
        emphasis: Emphasis::NoNorm,
        clip_skip: 2,
    };
    let dir = embeddings();
    let r = PromptReport::new(read, Some(&ck), Some(&dir), enc).unwrap();
    assert_eq!(r.token_counter(), (76, 150));
    assert_eq!(r.embeddings_found(), ["tinyemb"]);
    let v = r.to_json().unwrap();
    let c = &v["conditioning"];
    assert_eq!(c["architecture"], "sd1");
    assert_eq!(
        (c["emphasis"].as_str(), c["clip_skip"].as_u64()),
        (Some("No norm"), Some(2))
    );
    let want = serde_json::json!([
        {"weight": 1.0, "schedule": [{"end_step": 5, "shape": [154, 64]}, {"end_step": 10, "shape": [154, 64]}]},
        {"weight": 0.5, "schedule": [{"end_step": 10, "shape": [77, 64]}]},
    ]);
    assert_eq!(c["parts"], want);
    // the model's 64-wide text encoder rules out the 768-wide file
    let skipped = v["skipped_embeddings"].to_string();
    assert!(
        skipped.contains("wide.safetensors: embedding vectors are 768 wide"),
        "{skipped}"
    );
    let text = r.to_string();
    assert!(
        text.contains("embeddings loaded: tinyconcept, tinydict, tinyemb, tinypt\n"),
        "{text}"
    );
    assert!(text.ends_with(
        "conditioning (sd1, emphasis No norm, CLIP skip 2):\n  part 1 (weight 1) steps 1-5: 154×64\n  part 1 (weight 1) steps 6-10: 154×64\n  part 2 (weight 0.5) steps 1-10: 77×64\n"
    ), "{text}");
}

#[test]
fn embeddings_of_the_loaded_pipeline() {
    let d = tempfile::tempdir().unwrap();
    let dir = embeddings();
    let opts = LoadOptions {
        embeddings: Some(dir.clone()),
        ..Default::default()
    };
    let pipe = Pipeline::load(&tiny_model("sd1", d.path()), &opts).unwrap();
    assert_eq!(pipe.text_encoder_width(), 64);
    let r: &EmbeddingReport = pipe.embedding_report();
    let loaded: Vec<(&str, usize, usize, Option<i64>)> = r
        .loaded
        .iter()
        .map(|e| (e.name.as_str(), e.shape, e.vectors, e.step))
        .collect();
    assert_eq!(
        loaded,
        [
            ("tinyconcept", 64, 1, None),
            ("tinydict", 64, 2, Some(7)),
            ("tinyemb", 64, 3, None),
            ("tinypt", 64, 2, Some(1500)),
        ]
    );
    assert_eq!(r.skipped.len(), 1);
    let wide = &r.skipped[0];
    assert_eq!(
        (
            wide.embedding.name.as_str(),
            wide.embedding.shape,
            wide.embedding.vectors
        ),
        ("wide", 768, 2)
    );
    assert!(
        wide.reason.contains("the model's text encoder is 64 wide"),
        "{}",
        wide.reason
    );
    assert_eq!(r.unreadable.len(), 5, "{:?}", r.unreadable);
    // a pipeline loaded without a folder has none
    let d2 = tempfile::tempdir().unwrap();
    let bare = Pipeline::load(&tiny_model("sd1", d2.path()), &LoadOptions::default()).unwrap();
    assert_eq!(bare.embedding_report(), &EmbeddingReport::default());
}

#[test]
fn previews_of_each_step() {
    let d = tempfile::tempdir().unwrap();
    let pipe = Pipeline::load(&tiny_model("sd1", d.path()), &LoadOptions::default()).unwrap();
    let req = Request {
        prompt: "a cat".into(),
        seed: 3,
        steps: 3,
        width: 64,
        height: 64,
        batch_size: 2,
        ..Default::default()
    };
    let mut seen = Vec::new();
    pipe.generate(&req, &mut |p| {
        if p.denoised.is_none() {
            // the prompts being encoded: nothing to preview
            assert!(PreviewLatents::first(p).is_none());
            return std::ops::ControlFlow::Continue(());
        }
        let first = PreviewLatents::first(p).unwrap();
        let second = PreviewLatents::of(p, 1).unwrap();
        assert!(PreviewLatents::of(p, 2).is_none());
        seen.push((p.step, first, second));
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    let steps: Vec<usize> = seen.iter().map(|s| s.0).collect();
    assert_eq!(steps, [0, 1, 2]);
    for (_, first, second) in &seen {
        assert_eq!(first.dims(), Some((4, 8, 8)));
        let a = Previewer::Cheap.render(first, LatentSpace::Sd).unwrap();
        let b = Previewer::Cheap.render(second, LatentSpace::Sd).unwrap();
        assert_eq!(a.dimensions(), (8, 8));
        // seeds 3 and 4 make different images
        assert_ne!(a.as_raw(), b.as_raw());
    }
}

fn shared() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if p.join("taesd/taesd_decoder.safetensors").is_file() {
        Some(p)
    } else {
        eprintln!(
            "skipped: {} is absent (TAESD weights live in ../shared/data/taesd)",
            p.display()
        );
        None
    }
}

/// TAESD's encoder on a 256² photo, then the previewer's TAESD decode: a full-size preview
/// close to the photo.
#[test]
fn taesd_preview_of_a_real_photo() {
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
    let w = sumi_weights::Weights::open_raw(&data.join("taesd/taesd_encoder.safetensors")).unwrap();
    let enc = sumi_models::TaesdEncoder::new(w.var_builder(DType::F32, &Device::Cpu), 4).unwrap();
    let latents = enc.forward(&x).unwrap();
    let previewer = Previewer::load(Some(Path::new(
        &data.join("taesd/taesd_decoder.safetensors"),
    )))
    .unwrap();
    assert!(previewer.is_taesd());
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
    let preview = previewer
        .render(&PreviewLatents::first(&progress).unwrap(), LatentSpace::Sd)
        .unwrap();
    assert_eq!(preview.dimensions(), (256, 256));
    let mse: f64 = preview
        .as_raw()
        .iter()
        .zip(photo.as_raw())
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum::<f64>()
        / preview.as_raw().len() as f64;
    let psnr = 10.0 * (255.0f64 * 255.0 / mse).log10();
    println!("TAESD preview PSNR {psnr:.2} dB");
    // 23.4 dB measured (the bytes are truncated, as A1111's preview does)
    assert!(psnr > 22.0, "PSNR {psnr:.2} dB");
}

/// The wrong TAESD files are refused by what they are: the encoder, and TAESDXL's decoder (same
/// layers, told apart by its name) for these SD1/SD2 models when no SD decoder is beside it; the
/// SD decoder is taken, also when TAESDXL's is named and TAESD's is in its folder.
#[test]
fn wrong_taesd_files_are_refused_by_what_they_are() {
    let Some(data) = shared() else { return };
    let d = tempfile::tempdir().unwrap();
    let m = sumi_testkit::tiny_model("sd1", d.path());
    let load = |p: PathBuf| {
        let opts = sumi_pipeline::LoadOptions {
            taesd_decoder: Some(p),
            ..Default::default()
        };
        sumi_pipeline::Pipeline::load(&m, &opts).map(|_| ())
    };
    let enc = data.join("taesd/taesd_encoder.safetensors");
    let e = load(enc.clone()).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "taesd-decoder: {}: this is a TAESD encoder, not a decoder (taesd_decoder.safetensors)",
            enc.display()
        )
    );
    // TAESDXL's decoder alone in its folder (beside TAESD's, the SD decoder is taken)
    let xl = d.path().join("taesdxl_decoder.safetensors");
    std::fs::copy(data.join("taesd/taesdxl_decoder.safetensors"), &xl).unwrap();
    let e = load(xl).unwrap_err().to_string();
    assert!(e.contains("by its name this is TAESDXL's decoder"), "{e}");
    load(data.join("taesd/taesdxl_decoder.safetensors")).unwrap();
    assert!(Previewer::load(Some(&enc))
        .err()
        .unwrap()
        .to_string()
        .contains("TAESD encoder"));
    load(data.join("taesd/taesd_decoder.safetensors")).unwrap();
    let e = load(d.path().join("missing.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("taesd-decoder: "), "{e}");
    assert_eq!(e.matches("missing.safetensors").count(), 1, "{e}");
}
