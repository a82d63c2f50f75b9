//! The in-process server: `sumi_server::serve_with` on a fake backend, on a loopback port, in a
//! runtime of its own; blocking HTTP helpers; a shutdown handle standing in for SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use sumi_server::{Config, ServerError, Timeouts};
use tokio::sync::oneshot;

use crate::fake::Fake;

/// A running in-process server.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The backend it runs on.
    pub fake: Fake,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

/// Writes a fake checkpoint `name.safetensors` into `dir` (its bytes, hence its hash, differ
/// by name).
pub fn fake_model(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(format!("{name}.safetensors"));
    std::fs::write(&p, format!("fake checkpoint {name}")).unwrap();
    p
}

/// A configuration for a fake checkpoint in `dir`.
pub fn config(dir: &Path) -> Config {
    Config::new(fake_model(dir, "tiny"))
}

impl TestServer {
    /// Serves `config` on `fake` and waits until it answers.
    pub fn start(config: Config, fake: Fake) -> Self {
        Self::start_with(config, fake, Timeouts::default())
    }

    /// [`Self::start`] with other timeouts.
    pub fn start_with(mut config: Config, fake: Fake, timeouts: Timeouts) -> Self {
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        config.on_ready = Some(Arc::new(move |a| {
            let _ = addr_tx.send(a);
        }));
        let backend = Arc::new(fake.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let stop = async move {
                    let _ = stop_rx.await;
                };
                sumi_server::serve_with_timeouts(config, timeouts, backend, listener, stop).await
            })
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(a) => a,
            Err(_) => panic!("the server did not start: {:?}", thread.join()),
        };
        TestServer {
            base: format!("http://{addr}"),
            fake,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Asks the server to shut down, as SIGTERM does.
    pub fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Waits (10 s at most) for the server to return after [`Self::shutdown`].
    pub fn join(mut self) -> Result<(), ServerError> {
        self.shutdown();
        let t = self.thread.take().unwrap();
        let t0 = Instant::now();
        while !t.is_finished() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the server did not stop"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        t.join().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // the server drains in the background; its thread ends with the test process
        self.shutdown();
    }
}

/// An HTTP agent that returns 4xx/5xx as responses.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
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
pub fn post(s: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    answer(agent().post(&s.url(path)).send_json(body))
}

/// POSTs raw bytes as JSON content.
pub fn post_raw(s: &TestServer, path: &str, body: &[u8]) -> (u16, Value) {
    answer(
        agent()
            .post(&s.url(path))
            .header("content-type", "application/json")
            .send(body),
    )
}

/// GETs JSON (or text, as a JSON string).
pub fn get(s: &TestServer, path: &str) -> (u16, Value) {
    answer(agent().get(&s.url(path)).call())
}

/// Base64 of bytes.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A PNG of `w`×`h` filled with `c`.
pub fn png(w: u32, h: u32, c: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb(c));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
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

/// A `/metrics` value.
pub fn metric(s: &TestServer, line_start: &str) -> f64 {
    let (_, v) = get(s, "/metrics");
    let text = v.as_str().unwrap().to_string();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in {text}"))
}

/// Polls until `pred` holds (10 s at most).
pub fn wait_until(what: &str, mut pred: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !pred() {
        assert!(t0.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `/progress` until `pred` holds (10 s at most), returns it.
pub fn wait_progress(s: &TestServer, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_until("the progress awaited", || {
        let (st, p) = get(s, "/sdapi/v1/progress");
        assert_eq!(st, 200);
        let ok = pred(&p);
        last = p;
        ok
    });
    last
}

/// Sends a request on a raw connection and returns it (drop it to leave).
pub fn raw_request(s: &TestServer, path: &str, body: &Value) -> std::net::TcpStream {
    use std::io::Write;
    let body = body.to_string();
    let mut tcp = std::net::TcpStream::connect(s.addr()).unwrap();
    write!(
        tcp,
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        s.addr(),
        body.len()
    )
    .unwrap();
    tcp
}
