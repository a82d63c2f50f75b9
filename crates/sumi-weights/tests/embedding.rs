//! Textual-inversion files in every format A1111 reads, and the ones it refuses.
//! Fixtures: tools/reference/make_conditioning_fixtures.py (vectors are `synth("embedding.<name>")`).

use std::path::PathBuf;

use sumi_testkit::synth;
use sumi_weights::embedding::{Embedding, EmbeddingDir, EmbeddingError};
use sumi_weights::WeightsError;

fn dir() -> PathBuf {
    sumi_testkit::fixtures().join("embeddings")
}

fn expected(name: &str, n: usize) -> Vec<Vec<f32>> {
    let v = synth(&format!("embedding.{name}"), &[n, 64]);
    v.chunks(64)
        .map(|r| r.iter().map(|x| x.to_f32()).collect())
        .collect()
}

#[test]
fn every_format_reads_to_the_same_vectors_as_torch() {
    for (file, name, n, step) in [
        ("tinyemb.safetensors", "tinyemb", 3, None),
        ("tinypt.pt", "tinypt", 2, Some(1500)),
        ("tinydict.pt", "tinydict", 2, Some(7)),
        ("tinyconcept.bin", "tinyconcept", 1, None),
    ] {
        let e = Embedding::load(&dir().join(file)).unwrap();
        assert_eq!(e.name, name);
        assert_eq!((e.len(), e.width()), (n, 64), "{file}");
        assert_eq!(e.step, step, "{file}");
        assert_eq!(
            e.vectors.to_vec2::<f32>().unwrap(),
            expected(name, n),
            "{file}"
        );
        e.check_width(64).unwrap();
    }
}

fn load_err(file: &str) -> EmbeddingError {
    let r = Embedding::load(&dir().join(file)).and_then(|e| e.check_width(64).map(|()| e));
    match r {
        Ok(e) => panic!("{file} loaded: {e:?}"),
        Err(err) => {
            assert!(err.to_string().contains(file), "{file}: {err}");
            err
        }
    }
}

#[test]
fn refusals_name_the_file_and_the_reason() {
    assert!(matches!(
        load_err("wide.safetensors"),
        EmbeddingError::Width {
            found: 768,
            expected: 64,
            ..
        }
    ));
    assert!(matches!(
        load_err("twoterms.safetensors"),
        EmbeddingError::MultipleTerms { count: 2, .. }
    ));
    assert!(matches!(
        load_err("xlemb.safetensors"),
        EmbeddingError::Sdxl { .. }
    ));
    let bare = load_err("bare.pt");
    assert!(
        matches!(&bare, EmbeddingError::Unrecognised { detail, .. } if detail.contains("bare tensor")),
        "{bare}"
    );
    match load_err("evil.pt") {
        EmbeddingError::Weights(WeightsError::ForbiddenGlobal { module, name, .. }) => {
            assert_eq!((module.as_str(), name.as_str()), ("__builtin__", "print"))
        }
        other => panic!("{other}"),
    }
    assert!(matches!(
        load_err("notes.txt"),
        EmbeddingError::Extension { .. }
    ));
    assert!(matches!(
        load_err("pictured.png"),
        EmbeddingError::Image { .. }
    ));
}

#[test]
fn a_folder_loads_what_it_can_and_lists_the_rest() {
    let d = EmbeddingDir::load(&dir(), Some(64)).unwrap();
    let names: Vec<&str> = d.loaded.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["tinyconcept", "tinydict", "tinyemb", "tinypt"]);
    let mut skipped: Vec<String> = d
        .skipped
        .iter()
        .map(|e| {
            let s = e.to_string();
            let file = s.split(':').next().unwrap_or("");
            PathBuf::from(file)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    skipped.sort();
    // empty.pt, notes.txt and tinyemb.preview.png are passed over silently, as A1111 does
    assert_eq!(
        skipped,
        [
            "bare.pt",
            "evil.pt",
            "pictured.png",
            "twoterms.safetensors",
            "wide.safetensors",
            "xlemb.safetensors"
        ]
    );
    assert_eq!(d.get("tinypt").map(|e| e.len()), Some(2));
    // without a model, every width is accepted (A1111 before a model is loaded)
    let any = EmbeddingDir::load(&dir(), None).unwrap();
    assert!(any.get("wide").is_some_and(|e| e.width() == 768));
}

#[test]
fn truncated_and_garbage_files_are_errors_not_panics() {
    let t = tempfile::tempdir().unwrap();
    let full = std::fs::read(dir().join("tinypt.pt")).unwrap();
    for cut in [10, full.len() / 3, full.len() / 2, full.len() - 30] {
        let p = t.path().join("cut.pt");
        std::fs::write(&p, &full[..cut]).unwrap();
        let e = Embedding::load(&p).unwrap_err();
        assert!(e.to_string().contains("cut.pt"), "{e}");
    }
    let st = std::fs::read(dir().join("tinyemb.safetensors")).unwrap();
    let p = t.path().join("cut.safetensors");
    std::fs::write(&p, &st[..st.len() - 8]).unwrap();
    assert!(Embedding::load(&p).is_err());
    let p = t.path().join("noise.bin");
    std::fs::write(&p, b"PK\x03\x04 definitely not a zip archive").unwrap();
    assert!(Embedding::load(&p)
        .unwrap_err()
        .to_string()
        .contains("noise.bin"));
    assert!(matches!(
        EmbeddingDir::load(&t.path().join("missing"), None),
        Err(EmbeddingError::Dir { .. })
    ));
}
