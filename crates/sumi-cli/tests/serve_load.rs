//! `sumi serve` under load from this (second) process on loopback: more concurrent requests
//! than the queue holds — accepted jobs complete with their own seeds, the rest get 429, none
//! is lost or duplicated; SIGTERM during load lets the running job finish, answers the queued
//! ones 503, refuses new ones and exits 0. Bounded: a fixed number of requests, each with a
//! timeout.

mod serve_common;

use std::sync::{Arc, Barrier};
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
fn more_requests_than_the_queue_holds() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let s = Arc::new(Server::start(&m, &["--queue", "3"]));
    const N: u64 = 12;
    let barrier = Arc::new(Barrier::new(N as usize));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let (s, barrier) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (i, post(&s, "/sdapi/v1/txt2img", &job(1000 + i, 60, 64)))
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut rejected = 0;
    for h in handles {
        let (i, (st, v)) = h.join().unwrap();
        match st {
            200 => {
                let inf = info(&v);
                assert_eq!(inf["seed"], 1000 + i, "a response for another request");
                assert_eq!(v["images"].as_array().unwrap().len(), 1);
                let (img, text) = decode_image(&v["images"][0]);
                assert_eq!(img.dimensions(), (64, 64));
                assert!(text.unwrap().contains(&format!("Seed: {}", 1000 + i)));
                ok.push((i, img));
            }
            429 => {
                assert_eq!(v["error"], "QueueFull", "{v}");
                rejected += 1;
            }
            other => panic!("request {i}: unexpected {other}: {v}"),
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(240));
    assert_eq!(ok.len() + rejected, N as usize);
    assert!(rejected >= 1, "the queue of 3 never filled");
    // the queue's places at least (the first job may not have left the queue yet)
    assert!(
        ok.len() >= 3,
        "fewer than the queue holds were accepted: {}",
        ok.len()
    );
    // counted once each, none lost
    assert_eq!(
        metric(&s, "sumi_jobs_total{outcome=\"ok\"}"),
        ok.len() as f64
    );
    assert_eq!(
        metric(&s, "sumi_rejected_total{reason=\"queue_full\"}"),
        rejected as f64
    );
    assert_eq!(metric(&s, "sumi_queue_depth"), 0.0);
    // and correct: the same pixels as alone
    let (i, img) = &ok[ok.len() - 1];
    let (_, alone) = post(&s, "/sdapi/v1/txt2img", &job(1000 + i, 60, 64));
    assert_eq!(decode_image(&alone["images"][0]).0.as_raw(), img.as_raw());
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
