//! The web page of `sumi serve`, driven in headless Chromium: starts the server on the tiny SD1
//! model and runs `tools/webtest/page_test.mjs` (playwright-core + Debian's chromium), which
//! uploads astronaut.png, sets strength 0.6, a sampler, 4 steps and 64x64, generates, watches
//! the progress bar, checks the result and its infotext, reuses the settings through png-info
//! and keeps a screenshot in `target/test-artifacts/web_page.png`; then (`feature_checks.mjs`)
//! inpaints a mouse-drawn mask on a 64×64 photo and checks that the pixels outside the blurred
//! mask are the source's, paints with touch events, inpaint sketch, picks the `lora_kohya` card
//! (its preview served beside it) and finds `Lora hashes` in the infotext, runs the hires fix and
//! Extras, reloads and finds the history, switches to 中文 with no English label left, refuses
//! any request leaving 127.0.0.1, and keeps a screenshot of each panel in both languages
//! (`target/test-artifacts/web_<panel>_<lang>.png`). And (`model_size_test.mjs`, a server with
//! a tiny SD1 and a tiny SDXL checkpoint in `--models-dir`): the size is 512² on the SD1
//! checkpoint, 1024² once the SDXL one is chosen, 512² again back on SD1, a typed size stays.
//!
//! Skips (passes, with the reason printed) where the browser side is not installed:
//! `/usr/bin/chromium`, `node`, `tools/webtest/node_modules/playwright-core`
//! (`tools/ci/install_webtest.sh` installs them) or `../shared/data/astronaut.png`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

fn repo_root() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                root.join(d)
            }
        }
        None => root.join("target"),
    }
}

fn skip(reason: &str) {
    println!("SKIP serve_web_page: {reason}");
    eprintln!("SKIP serve_web_page: {reason}");
}

/// `node` from PATH, if it runs.
fn find_node() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let node = std::env::split_paths(&path)
        .map(|d| d.join("node"))
        .find(|p| p.is_file())?;
    let ok = Command::new(&node)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(node)
}

/// astronaut.png from the shared data folder next to the repository.
fn find_astronaut(root: &Path) -> Option<PathBuf> {
    let data = root.join("../shared/data");
    [
        data.join("astronaut.png"),
        data.join("images/astronaut.png"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

/// The status code of a plain GET, or None while nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Kills the server when dropped, also when an assertion fails.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `node`, where the browser side is installed (Chromium, node, playwright-core); else the
/// reason to skip.
fn browser_side(root: &Path) -> Result<PathBuf, String> {
    if !Path::new(CHROMIUM).is_file() {
        return Err(format!(
            "{CHROMIUM} is missing (tools/ci/install_webtest.sh installs it)"
        ));
    }
    let node = find_node().ok_or("node is not on PATH")?;
    if !root
        .join("tools/webtest/node_modules/playwright-core")
        .is_dir()
    {
        return Err("tools/webtest/node_modules/playwright-core is missing (run tools/ci/install_webtest.sh)".into());
    }
    Ok(node)
}

/// Starts `sumi serve <args>` in `dir` on a free loopback port (its output in
/// `dir/server.log`) and waits until it answers.
fn serve(dir: &Path, args: &[&std::ffi::OsStr]) -> (Server, u16) {
    let port = free_port();
    let log = dir.join("server.log");
    let log_file = std::fs::File::create(&log).expect("server log");
    let err_file = log_file.try_clone().expect("server log");
    let child = Command::new(env!("CARGO_BIN_EXE_sumi"))
        .current_dir(dir)
        .arg("serve")
        .args(args)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(log_file)
        .stderr(err_file)
        .spawn()
        .expect("start `sumi serve`");
    let mut server = Server { child, log };

    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "`sumi serve` exited early ({status}):\n{}",
                server.log_text()
            );
        }
        let ready = [
            http_status(port, "/health"),
            http_status(port, "/sdapi/v1/samplers"),
        ]
        .contains(&Some(200));
        if ready {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "`sumi serve` did not answer /health within 120 s:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "sumi serve ready on port {port} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (server, port)
}

/// Runs the browser script `cmd` against `server` (which must outlive it), prints its output and
/// fails naming `what` (with the server's log) unless both end well; returns its stdout.
fn run_script(mut server: Server, cmd: &mut Command, what: &str) -> String {
    let t = Instant::now();
    let out = cmd.output().expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    println!("{what} ran {:.1} s", t.elapsed().as_secs_f64());
    let alive = server
        .child
        .try_wait()
        .map(|s| s.is_none())
        .unwrap_or(false);
    let server_log = server.log_text();
    drop(server);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}\n--- server log ---\n{server_log}",
        out.status
    );
    assert!(alive, "`sumi serve` died during {what}:\n{server_log}");
    stdout
}

#[test]
fn web_page_generates_img2img_in_headless_chromium() {
    let root = repo_root();
    let node = match browser_side(&root) {
        Ok(node) => node,
        Err(reason) => return skip(&reason),
    };
    let script = root.join("tools/webtest/page_test.mjs");
    let Some(image) = find_astronaut(&root) else {
        return skip("../shared/data/astronaut.png is missing");
    };

    let dir = tempfile::tempdir().expect("temp dir");
    let model = sumi_testkit::tiny_model("sd1", dir.path());
    // a LoRA folder with one network and its preview picture beside it (A1111's convention)
    let loras = dir.path().join("loras");
    std::fs::create_dir_all(&loras).expect("lora folder");
    std::fs::copy(
        root.join("fixtures/lora/sd1/lora_kohya.safetensors"),
        loras.join("lora_kohya.safetensors"),
    )
    .expect("copy the LoRA fixture");
    image::RgbImage::from_pixel(16, 16, image::Rgb([200, 60, 40]))
        .save(loras.join("lora_kohya.preview.png"))
        .expect("write a preview");
    let (server, port) = serve(
        dir.path(),
        &[
            "--model".as_ref(),
            model.as_os_str(),
            "--lora-dir".as_ref(),
            loras.as_os_str(),
        ],
    );

    let artifacts = target_dir(&root).join("test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("create target/test-artifacts");
    let shot = artifacts.join("web_page.png");
    let _ = std::fs::remove_file(&shot);
    let mut cmd = Command::new(&node);
    cmd.current_dir(&root)
        .arg(&script)
        .arg("--url")
        .arg(format!("http://127.0.0.1:{port}/"))
        .arg("--image")
        .arg(&image)
        .arg("--out")
        .arg(&shot)
        .args(["--sampler", "Euler a", "--steps", "4", "--width", "64"])
        .args(["--timeout", "240"])
        .args(["--features", "--lora", "lora_kohya", "--lora-preview"])
        .arg("--artifacts")
        .arg(&artifacts);
    run_script(server, &mut cmd, "page_test.mjs");
    assert!(shot.is_file(), "no screenshot at {}", shot.display());
    // "save on the server" was ticked for the LoRA picture only: one file in --outdir
    let saved: Vec<_> = std::fs::read_dir(dir.path().join("outputs"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(saved.len(), 1, "outputs/ holds {saved:?}");
    for panel in ["txt2img", "img2img", "inpaint", "extras", "history"] {
        for lang in ["en", "zh-CN"] {
            let p = artifacts.join(format!("web_{panel}_{lang}.png"));
            assert!(p.is_file(), "no screenshot at {}", p.display());
        }
    }
    println!("screenshot: {}", shot.display());
}

/// The page's default size follows the checkpoint's latent space
/// (`tools/webtest/model_size_test.mjs`): 512² on SD1, 1024² on SDXL, a typed size kept.
#[test]
fn web_page_size_follows_the_checkpoint() {
    let root = repo_root();
    let node = match browser_side(&root) {
        Ok(node) => node,
        Err(reason) => return skip(&reason),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).expect("models folder");
    for (arch, name) in [("sd1", "one"), ("sdxl", "xl")] {
        let made = sumi_testkit::tiny_model(arch, dir.path());
        std::fs::rename(made, models.join(format!("{name}.safetensors"))).expect("move the model");
    }
    let model = models.join("one.safetensors");
    let (server, port) = serve(
        dir.path(),
        &[
            "--model".as_ref(),
            model.as_os_str(),
            "--models-dir".as_ref(),
            models.as_os_str(),
        ],
    );
    let mut cmd = Command::new(&node);
    cmd.current_dir(&root)
        .arg(root.join("tools/webtest/model_size_test.mjs"))
        .arg("--url")
        .arg(format!("http://127.0.0.1:{port}/"))
        .args(["--sd", "one", "--sdxl", "xl", "--timeout", "120"]);
    let stdout = run_script(server, &mut cmd, "model_size_test.mjs");
    assert!(stdout.contains("model_size_test: PASS"), "{stdout}");
}
