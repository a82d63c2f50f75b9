//! Shared helpers for the `sumi serve` tests: a tiny checkpoint, a server process on a free
//! loopback port, JSON requests, PNG decoding.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

/// Materializes the tiny SD1 checkpoint in `dir` (as `name`.safetensors).
pub fn tiny_model(dir: &Path, name: &str) -> PathBuf {
    let sub = dir.join(format!(".make-{name}"));
    std::fs::create_dir_all(&sub).unwrap();
    let made = sumi_testkit::tiny_model("sd1", &sub);
    let target = dir.join(format!("{name}.safetensors"));
    std::fs::rename(made, &target).unwrap();
    let _ = std::fs::remove_dir_all(&sub);
    target
}

/// The committed init image.
pub fn init_png() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/generate/init.png")
}

/// A running `sumi serve`.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: std::sync::Mutex<mpsc::Receiver<String>>,
}

impl Server {
    /// Starts `sumi serve --model <model> --port 0 <args>` and waits until it serves.
    pub fn start(model: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sumi"))
            .arg("serve")
            .arg("--model")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let base = loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("serving on ") {
                        break addr.trim().to_string();
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    panic!("the server did not start: {e}");
                }
            }
        };
        Server {
            child,
            base,
            log: std::sync::Mutex::new(rx),
        }
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP agent that returns 4xx/5xx as responses.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut r = r.unwrap();
    let status = r.status().as_u16();
    let text = r
        .body_mut()
        .with_config()
        .limit(200 << 20)
        .read_to_string()
        .unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// POSTs JSON, returns (status, JSON).
pub fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    answer(agent().post(&s.url(path)).send_json(body))
}

/// POSTs raw bytes as JSON content.
pub fn post_raw(s: &Server, path: &str, body: &[u8]) -> (u16, Value) {
    answer(
        agent()
            .post(&s.url(path))
            .header("content-type", "application/json")
            .send(body),
    )
}

/// GETs JSON.
pub fn get(s: &Server, path: &str) -> (u16, Value) {
    answer(agent().get(&s.url(path)).call())
}

/// Base64 of a file.
pub fn b64_file(p: &Path) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap())
}

/// A response image: its pixels and its `parameters` text.
pub fn decode_image(b64: &Value) -> (image::RgbImage, Option<String>) {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().unwrap())
        .unwrap();
    let text = sumi_pipeline::png::parameters_from_bytes(&bytes).unwrap();
    let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
    (img, text)
}

/// The `info` string of a response, parsed.
pub fn info(v: &Value) -> Value {
    serde_json::from_str(v["info"].as_str().unwrap()).unwrap()
}

/// Runs the CLI for several images (`out` becomes `stem-0001.png`, …).
pub fn cli_batch(dir: &Path, args: &[&str], out: &str) {
    let o = Command::new(env!("CARGO_BIN_EXE_sumi"))
        .current_dir(dir)
        .args(args)
        .args(["--quiet", "--output", out])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Runs the CLI, returns the PNG it wrote.
pub fn cli(dir: &Path, args: &[&str], out: &str) -> image::RgbImage {
    let o = Command::new(env!("CARGO_BIN_EXE_sumi"))
        .current_dir(dir)
        .args(args)
        .args(["--quiet", "--output", out])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    image::open(dir.join(out)).unwrap().to_rgb8()
}
