//! PyTorch zip checkpoints written by torch.save (fixtures from tools/reference/make_ckpt_fixtures.py).

use std::path::PathBuf;

use sumi_weights::ckpt::CkptFile;
use sumi_weights::safetensors::SafetensorsFile;
use sumi_weights::WeightsError;

fn fixture(name: &str) -> PathBuf {
    sumi_testkit::fixtures().join("ckpt").join(name)
}

#[test]
fn reads_every_tensor_like_torch() {
    let ck = CkptFile::open(&fixture("good.ckpt")).unwrap();
    let st = SafetensorsFile::open(&fixture("expected.safetensors")).unwrap();
    assert_eq!(ck.tensors().len(), st.entries().len());
    for e in st.entries() {
        let t = ck
            .tensors()
            .iter()
            .find(|t| t.name == e.name)
            .unwrap_or_else(|| panic!("{} missing", e.name));
        assert_eq!(t.shape, e.shape, "{}", e.name);
        assert_eq!(t.dtype, e.dtype, "{}", e.name);
        assert_eq!(&ck.bytes(t)[..], st.bytes(e), "{}", e.name);
    }
}

#[test]
fn checkpoint_opens_by_content_whatever_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.safetensors");
    std::fs::copy(fixture("good.ckpt"), &p).unwrap();
    let w = sumi_weights::Weights::open(&p);
    // a ckpt with no model in it: opened as a checkpoint, then refused as an unknown model
    let w = w.unwrap();
    assert_eq!(w.format(), sumi_weights::Format::Checkpoint);
    let err = sumi_weights::detect(&w, None).unwrap_err();
    assert!(
        matches!(err, WeightsError::UnknownArchitecture { .. }),
        "{err}"
    );
}

#[test]
fn refuses_pickles_that_call_anything() {
    for (f, global) in [
        ("evil.ckpt", "posix.system"),
        ("evil_eval.ckpt", "__builtin__.eval"),
    ] {
        let err = CkptFile::open(&fixture(f)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, WeightsError::ForbiddenGlobal { .. }), "{msg}");
        assert!(msg.contains(global) && msg.contains(f), "{msg}");
    }
}
