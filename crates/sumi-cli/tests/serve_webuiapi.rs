//! Acceptance 1 of issue 8: the `webuiapi` client from PyPI (0.9.17) drives a running
//! `sumi serve` (tools/apitest/webuiapi_test.py). Needs tools/apitest/.venv, made by
//! tools/ci/install_apitest.sh; skips with a note without it.

mod serve_common;

use std::path::PathBuf;
use std::process::Command;

use serve_common::*;

#[test]
fn the_webuiapi_client_drives_sumi_serve() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join("tools/apitest/.venv/bin/python");
    if !python.exists() {
        eprintln!(
            "skipped: {} is missing; run tools/ci/install_apitest.sh",
            python.display()
        );
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("models");
    std::fs::create_dir_all(&dir).unwrap();
    let a = tiny_model(&dir, "tiny_a");
    tiny_model(&dir, "tiny_b");
    let s = Server::start(&a, &["--models-dir", dir.to_str().unwrap()]);
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let out = Command::new(&python)
        .arg(root.join("tools/apitest/webuiapi_test.py"))
        .args(["--port", &port, "--other-model", "tiny_b", "--init-image"])
        .arg(init_png())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "webuiapi checks failed:\n{text}");
}
