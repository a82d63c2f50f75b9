//! `sumi serve` job control: progress with a preview, interrupt and skip within a step (200 with
//! the partial result), back to idle afterwards, a full queue answering 429, and a client that
//! leaves cancelling its queued job.

mod serve_common;

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serve_common::*;

/// A job long enough to act on while it runs.
fn long_job(seed: u64, n_iter: u64) -> Value {
    json!({"prompt": "slow", "seed": seed, "steps": 500, "width": 128, "height": 128, "n_iter": n_iter, "sampler_name": "Euler"})
}

/// Polls `/progress` until `pred` holds (60 s at most).
fn wait_progress(s: &Server, pred: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let (st, p) = get(s, "/sdapi/v1/progress");
        assert_eq!(st, 200);
        if pred(&p) {
            return p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "progress never got there: {p}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metric(s: &Server, line_start: &str) -> f64 {
    let (_, v) = get(s, "/metrics");
    let text = v.as_str().unwrap().to_string();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in {text}"))
}

#[test]
fn progress_interrupt_and_skip() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let s = std::sync::Arc::new(Server::start(&m, &[]));
    // idle
    let p = wait_progress(&s, |_| true);
    assert_eq!(p["progress"], 0.0);
    assert_eq!(p["state"]["job_count"], 0);
    // interrupt: the running batch comes back, later batches are not run
    let s2 = s.clone();
    let job = std::thread::spawn(move || post(&s2, "/sdapi/v1/txt2img", &long_job(11, 3)));
    let p = wait_progress(&s, |p| p["state"]["sampling_step"].as_u64() >= Some(2));
    assert_eq!(p["state"]["job_count"], 3);
    assert_eq!(p["state"]["sampling_steps"], 500);
    let prog = p["progress"].as_f64().unwrap();
    assert!(prog > 0.0 && prog < 1.0, "{p}");
    let preview = p["current_image"]
        .as_str()
        .expect("a preview while sampling");
    let (img, _) = decode_image(&json!(preview));
    assert_eq!(
        img.dimensions(),
        (16, 16),
        "the cheap preview is latent-sized"
    );
    let t0 = Instant::now();
    let (st, _) = post(&s, "/sdapi/v1/interrupt", &json!({}));
    assert_eq!(st, 200);
    let (st, v) = job.join().unwrap();
    assert_eq!(st, 200, "{v}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "interrupt took {:?}",
        t0.elapsed()
    );
    assert_eq!(
        v["images"].as_array().unwrap().len(),
        1,
        "only the interrupted batch"
    );
    assert_eq!(decode_image(&v["images"][0]).0.dimensions(), (128, 128));
    let p = wait_progress(&s, |p| p["state"]["job_count"] == 0);
    assert_eq!(p["progress"], 0.0);
    // skip: the batch stops, the next one runs
    let s2 = s.clone();
    let job = std::thread::spawn(move || post(&s2, "/sdapi/v1/txt2img", &long_job(20, 2)));
    wait_progress(&s, |p| p["state"]["sampling_step"].as_u64() >= Some(2));
    post(&s, "/sdapi/v1/skip", &json!({}));
    wait_progress(&s, |p| {
        p["state"]["job_no"] == 1 && p["state"]["sampling_step"].as_u64() >= Some(1)
    });
    post(&s, "/sdapi/v1/interrupt", &json!({}));
    let (st, v) = job.join().unwrap();
    assert_eq!(st, 200, "{v}");
    let texts = info(&v)["infotexts"].clone();
    assert_eq!(v["images"].as_array().unwrap().len(), 2);
    assert!(texts[0].as_str().unwrap().contains("Seed: 20"));
    assert!(texts[1].as_str().unwrap().contains("Seed: 21"));
    assert_eq!(metric(&s, "sumi_jobs_total{outcome=\"interrupted\"}"), 2.0);
    assert!(metric(&s, "sumi_step_seconds_count") > 4.0);
    wait_progress(&s, |p| p["state"]["job_count"] == 0);
}

#[test]
fn a_full_queue_answers_429_and_a_departed_client_is_cancelled() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let s = std::sync::Arc::new(Server::start(&m, &["--queue", "1"]));
    let s2 = s.clone();
    let running = std::thread::spawn(move || post(&s2, "/sdapi/v1/txt2img", &long_job(1, 1)));
    wait_progress(&s, |p| p["state"]["sampling_step"].as_u64() >= Some(1));
    // a client queues a job and goes away
    let addr = s.base.trim_start_matches("http://").to_string();
    let body = json!({"seed": 2, "steps": 2, "width": 64, "height": 64}).to_string();
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        tcp,
        "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let t0 = Instant::now();
    while metric(&s, "sumi_queue_depth") < 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(tcp);
    // its place is freed: another job fits in the queue of one
    let t0 = Instant::now();
    while metric(&s, "sumi_queue_depth") > 0.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the departed client's job stayed queued"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let s3 = s.clone();
    let queued = std::thread::spawn(move || {
        post(
            &s3,
            "/sdapi/v1/txt2img",
            &json!({"seed": 3, "steps": 2, "width": 64, "height": 64}),
        )
    });
    let t0 = Instant::now();
    while metric(&s, "sumi_queue_depth") < 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    // the queue is full now
    let r = agent()
        .post(&s.url("/sdapi/v1/txt2img"))
        .send_json(json!({"seed": 4, "steps": 2, "width": 64, "height": 64}))
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    post(&s, "/sdapi/v1/interrupt", &json!({}));
    assert_eq!(running.join().unwrap().0, 200);
    let (st, v) = queued.join().unwrap();
    assert_eq!(st, 200, "{v}");
    assert_eq!(info(&v)["seed"], 3);
    assert_eq!(
        metric(&s, "sumi_rejected_total{reason=\"queue_full\"}"),
        1.0
    );
    let t0 = Instant::now();
    while metric(&s, "sumi_jobs_total{outcome=\"cancelled\"}") < 1.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the departed client's job was not cancelled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_taesd_preview_decoder_gives_full_size_previews() {
    let taesd = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/taesd/taesd_decoder.safetensors");
    if !taesd.exists() {
        eprintln!("skipped: {} is missing", taesd.display());
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let s = std::sync::Arc::new(Server::start(
        &m,
        &["--preview-decoder", taesd.to_str().unwrap()],
    ));
    assert_eq!(
        get(&s, "/sdapi/v1/options").1["show_progress_type"],
        "TAESD"
    );
    let s2 = s.clone();
    let job = std::thread::spawn(move || post(&s2, "/sdapi/v1/txt2img", &long_job(5, 1)));
    let p = wait_progress(&s, |p| {
        p["state"]["sampling_step"].as_u64() >= Some(1) && p["current_image"].is_string()
    });
    let (img, _) = decode_image(&p["current_image"]);
    assert_eq!(img.dimensions(), (128, 128));
    // skip_current_image leaves it out
    let (_, p) = get(&s, "/sdapi/v1/progress?skip_current_image=true");
    assert!(p["current_image"].is_null(), "{p}");
    post(&s, "/sdapi/v1/interrupt", &json!({}));
    assert_eq!(job.join().unwrap().0, 200);
}

#[test]
fn a_departed_client_stops_its_running_job() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let s = Server::start(&m, &[]);
    let addr = s.base.trim_start_matches("http://").to_string();
    let body = long_job(3, 1).to_string();
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        tcp,
        "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    wait_progress(&s, |p| p["state"]["sampling_step"].as_u64() >= Some(1));
    drop(tcp);
    let p = wait_progress(&s, |p| p["state"]["job_count"] == 0);
    assert_eq!(p["progress"], 0.0);
    assert_eq!(metric(&s, "sumi_jobs_total{outcome=\"cancelled\"}"), 1.0);
    assert!(
        metric(&s, "sumi_step_seconds_count") < 400.0,
        "the job ran on after its client left"
    );
}
