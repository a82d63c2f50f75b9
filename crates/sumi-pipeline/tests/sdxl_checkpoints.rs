//! SDXL checkpoints in the pipeline: identified (the report `sumi model-info` prints) for the
//! base, inpainting and refiner single files and diffusers folders; the base and inpainting
//! models open for generation, the refiner is refused as the model by name. Fixtures: the tiny
//! SDXL models of tools/reference/make_sdxl_fixtures.py.

use sumi_pipeline::checkpoint_report::CheckpointReport;
use sumi_pipeline::{Checkpoint, LoadOptions, Pipeline, Prediction};
use sumi_testkit::tiny_model;
use sumi_weights::PredictionSource;

#[test]
fn reports_name_every_sdxl_architecture() {
    for (arch, text_encoder, text_encoder_2) in [
        ("sdxl", 3_317_120, 6_945_536),
        ("sdxl-inpaint", 3_317_120, 6_945_536),
        ("sdxl-refiner", 0, 6_945_536),
    ] {
        let d = tempfile::tempdir().unwrap();
        let p = tiny_model(arch, d.path());
        for (path, source) in [
            (p, PredictionSource::Rule),
            (
                d.path().join("diffusers"),
                PredictionSource::DiffusersConfig,
            ),
        ] {
            let r = CheckpointReport::read(&path, None).unwrap();
            assert_eq!(r.architecture, arch, "{}", path.display());
            assert_eq!(
                (r.prediction, r.prediction_source.clone()),
                (Prediction::Epsilon, source)
            );
            assert_eq!(
                (r.params.text_encoder, r.params.text_encoder_2),
                (text_encoder, text_encoder_2),
                "{arch}"
            );
            let text = r.to_string();
            assert!(text.contains(&format!("architecture   {arch}\n")), "{text}");
            assert!(text.contains(", text encoder 2 6945536\n"), "{text}");
            assert_eq!(r.to_json()["params"]["text_encoder_2"], text_encoder_2);
        }
    }
}

#[test]
fn a_refiner_is_refused_as_the_model() {
    let d = tempfile::tempdir().unwrap();
    let p = tiny_model("sdxl-refiner", d.path());
    let want = format!(
        "model: {}: an SDXL refiner (sdxl-refiner): a refiner checkpoint is used with \
         --refiner, not as the model",
        p.display()
    );
    let e = Pipeline::load(&p, &LoadOptions::default()).err().unwrap();
    assert_eq!(e.to_string(), want);
    let e = Checkpoint::open(&d.path().join("diffusers"), None)
        .err()
        .unwrap();
    assert!(e.to_string().contains("not as the model"), "{e}");
}

#[test]
fn sdxl_base_and_inpainting_models_load() {
    for arch in ["sdxl", "sdxl-inpaint"] {
        let d = tempfile::tempdir().unwrap();
        let p = tiny_model(arch, d.path());
        for path in [p, d.path().join("diffusers")] {
            let pipe = Pipeline::load(&path, &LoadOptions::default()).unwrap();
            assert_eq!(pipe.model.architecture, arch, "{}", path.display());
        }
    }
}
