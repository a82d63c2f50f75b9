//! `sumi serve` under load from this (second) process on loopback: SIGTERM during load lets the
//! running job finish, answers the queued ones 503, refuses new ones and exits 0. Bounded: a
//! fixed number of requests, each with a timeout. More requests than the queue holds, and the
//! drain itself, are tested in process in `sumi-server/tests/http/control.rs`.

mod serve_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serve_common::*;

fn job(seed: u64, steps: u64, side: u32) -> Value {
    json!({"prompt": "load", "seed": seed, "steps": steps, "width": side, "height": side, "sampler_name": "Euler"})
}

fn metric(s: &Server, name: &str) -> f64 {
    let text = get(s, "/metrics").1.as_str().unwrap().to_string();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[test]
fn sigterm_drains_the_running_job_and_exits_0() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let s = Arc::new(Server::start(&m, &["--queue", "4"]));
    let s1 = s.clone();
    let running = std::thread::spawn(move || post(&s1, "/sdapi/v1/txt2img", &job(1, 100, 128)));
    let t0 = Instant::now();
    while get(&s, "/sdapi/v1/progress").1["state"]["sampling_step"].as_u64() < Some(1) {
        assert!(t0.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(10));
    }
    let queued: Vec<_> = (0..2)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || post(&s, "/sdapi/v1/txt2img", &job(10 + i, 2, 64)))
        })
        .collect();
    while metric(&s, "sumi_queue_depth") < 2.0 {
        assert!(t0.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = s.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // queued jobs are answered 503 at once; new ones are refused while the running one drains
    for q in queued {
        let (st, v) = q.join().unwrap();
        assert_eq!(st, 503, "{v}");
    }
    let refused = agent()
        .post(&s.url("/sdapi/v1/txt2img"))
        .send_json(job(99, 2, 64));
    if let Ok(r) = refused {
        assert_eq!(r.status().as_u16(), 503);
    }
    let (st, v) = running.join().unwrap();
    assert_eq!(st, 200, "{v}");
    assert_eq!(info(&v)["seed"], 1);
    assert_eq!(v["images"].as_array().unwrap().len(), 1);
    let s = Arc::try_unwrap(s).ok().expect("no other handle");
    let mut s = s;
    let t1 = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "the server did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
