//! `sumi serve`'s command line: `--help` lists the flags, bad flags and a missing model exit 2
//! naming the flag or file. Bad HTTP requests are tested in process in
//! `sumi-server/tests/http/errors.rs`.

mod serve_common;

use serve_common::*;

#[test]
fn serve_help_exits_0_and_bad_flags_are_refused() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sumi"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--model",
        "--models-dir",
        "--host",
        "--port",
        "--queue",
        "--api-auth",
        "--embeddings",
        "--vae",
        "--preview-decoder",
        "--precision",
        "--cors-allow-origins",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sumi"))
        .args(["serve", "--port", "0", "--api-auth", "nocolon", "--model"])
        .arg(&m)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--api-auth"));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sumi"))
        .args([
            "serve",
            "--port",
            "0",
            "--models-dir",
            "no/such/dir",
            "--model",
        ])
        .arg(&m)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--models-dir"));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sumi"))
        .args([
            "serve",
            "--port",
            "0",
            "--cors-allow-origins",
            "localhost:3000",
            "--model",
        ])
        .arg(&m)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--cors-allow-origins: localhost:3000: expected an origin"),
        "{err}"
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sumi"))
        .args(["serve", "--port", "0", "--model", "missing.safetensors"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.safetensors"));
}
