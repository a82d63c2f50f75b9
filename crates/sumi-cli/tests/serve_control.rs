//! `sumi serve` job control on the real pipeline: the cheap preview (latent-sized) and a TAESD
//! one (full-sized), interrupt and skip within a step (200 with the partial result: the
//! pipeline hands over the stopped batch), back to idle afterwards. The queue, departed clients
//! and the progress/metrics bookkeeping are tested in process in
//! `sumi-server/tests/http/control.rs`.

mod serve_common;

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

/// The next log line of `s` that starts with `start` (10 s at most).
fn log_line(s: &Server, start: &str) -> String {
    let rx = s.log.lock().unwrap();
    loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.starts_with(start) => return line,
            Ok(_) => {}
            Err(e) => panic!("no log line starting {start:?}: {e}"),
        }
    }
}

#[test]
fn one_log_line_per_request_with_method_path_status_and_time() {
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let s = Server::start(&m, &[]);
    assert_eq!(get(&s, "/sdapi/v1/samplers?x=secret").0, 200);
    let line = log_line(&s, "GET /sdapi/v1/samplers");
    let parts: Vec<&str> = line.split(' ').collect();
    assert_eq!(parts.len(), 4, "{line}");
    assert_eq!(parts[2], "200");
    let secs: f64 = parts[3].strip_suffix('s').unwrap().parse().unwrap();
    assert!((0.0..10.0).contains(&secs), "{line}");
    // a refused request has its line too, without the query
    let (st, _) = post(&s, "/sdapi/v1/txt2img", &json!({"steps": -1}));
    assert_eq!(st, 422);
    assert!(log_line(&s, "POST /sdapi/v1/txt2img").contains(" 422 "));
    assert_eq!(get(&s, "/no/such/path").0, 404);
    assert!(log_line(&s, "GET /no/such/path").contains(" 404 "));
}
