//! Shared helpers for the several-machines tests: a real `redis-server` (Debian's package) on a
//! free loopback port in a temporary folder (`appendonly yes`), `sumi worker` and
//! `sumi serve --broker` processes. Tests skip with a printed reason where `redis-server` is
//! absent.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::serve_common::Server;

/// A `redis-server` of the test's own.
pub struct Redis {
    child: Child,
    /// Its port.
    pub port: u16,
    /// Its folder (AOF files).
    pub dir: tempfile::TempDir,
}

/// The `redis-server` program, if installed.
pub fn redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    /// Starts one; `None` (with the reason printed) where `redis-server` is not installed.
    pub fn start() -> Option<Redis> {
        let Some(bin) = redis_server() else {
            eprintln!(
                "SKIPPED: redis-server is not installed (bash tools/ci/install_redis.sh installs \
                 Debian's)"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Self::spawn(&bin, dir.path(), port);
        let r = Redis { child, port, dir };
        r.wait_ready();
        Some(r)
    }

    fn spawn(bin: &Path, dir: &Path, port: u16) -> Child {
        Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn wait_ready(&self) {
        let t0 = Instant::now();
        while self.command("PING").as_deref() != Some("+PONG") {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "redis did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one inline command, returns the first reply line.
    pub fn command(&self, cmd: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        Some(text.lines().next().unwrap_or("").to_string())
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGKILL: the AOF written so far is what a restart reads).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it as an operator does (`SHUTDOWN`: the AOF is flushed), waits `down`, and starts
    /// it again on the same port and folder.
    pub fn restart(&mut self, down: Duration) {
        let _ = self.command("SHUTDOWN");
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.child = Self::spawn(&redis_server().unwrap(), self.dir.path(), self.port);
        self.wait_ready();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child process whose stderr lines are collected.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Every stderr line so far.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `sumi <args>` and waits for a stderr line containing `ready`.
    pub fn start(args: &[&str], ready: &str) -> Proc {
        Self::spawn(args, ready).0
    }

    fn spawn(args: &[&str], ready: &str) -> (Proc, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sumi"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = mpsc::channel();
        let l2 = lines.clone();
        let ready = ready.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(&ready) {
                    let _ = tx.send(line.clone());
                }
                l2.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => (Proc { child, lines }, line),
            Err(e) => {
                let _ = child.kill();
                panic!("{args:?} did not start ({e}): {:?}", lines.lock().unwrap());
            }
        }
    }

    /// The lines so far that contain `text`.
    pub fn lines_with(&self, text: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .cloned()
            .collect()
    }

    /// Waits (10 s at most) until a line contains `text`.
    pub fn wait_line(&self, text: &str) {
        let t0 = Instant::now();
        while self.lines_with(text).is_empty() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no line with {text:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Fast heartbeats and claims, so that a dead worker's job moves on within seconds.
pub const FAST: &[&str] = &["--heartbeat-ms", "200", "--claim-idle-ms", "1500"];

/// Starts `sumi worker --broker <url> --model <model> --name <name>`.
pub fn worker(redis: &Redis, model: &Path, name: &str) -> Proc {
    let url = redis.url();
    let m = model.to_string_lossy().to_string();
    let mut args = vec!["worker", "--broker", &url, "--model", &m, "--name", name];
    args.extend_from_slice(FAST);
    Proc::spawn(&args, "serving").0
}

/// Starts `sumi serve --broker <url>` with `extra` options; the process and a [`Server`] handle
/// for the request helpers (which owns no process).
pub fn front(redis: &Redis, extra: &[&str]) -> (Proc, Server) {
    let url = redis.url();
    let mut args = vec![
        "serve",
        "--broker",
        &url,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    let (p, line) = Proc::spawn(&args, "serving on ");
    let base = line.trim_start_matches("serving on ").trim().to_string();
    // a handle for the helpers: a placeholder process that exits at once
    let child = Command::new("true").spawn().unwrap();
    let (_tx, rx) = mpsc::channel();
    (
        p,
        Server {
            child,
            base,
            log: Mutex::new(rx),
        },
    )
}
