//! Job control: progress with a preview, interrupt and skip (200 with the partial result), idle
//! afterwards; a full queue answering 429 with Retry-After; a client that leaves cancelling its
//! queued or running job; more requests than the queue holds; a shutdown (SIGTERM's path) that
//! drains the running job, answers the queued ones 503 and refuses new ones.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};

use serde_json::{json, Value};

use crate::common::*;
use crate::fake::Fake;

/// A job long enough to act on while it runs (2.5 s a batch at 5 ms a step).
fn long_job(seed: u64, n_iter: u64) -> Value {
    json!({"prompt": "slow", "seed": seed, "steps": 500, "width": 128, "height": 128, "n_iter": n_iter, "sampler_name": "Euler"})
}

fn quick_job(seed: u64) -> Value {
    json!({"seed": seed, "steps": 2, "width": 64, "height": 64})
}

#[test]
fn progress_interrupt_and_skip() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(TestServer::start(config(d.path()), Fake::new(5)));
    // idle; interrupt and skip do nothing then
    let p = wait_progress(&s, |_| true);
    assert_eq!(p["progress"], 0.0);
    assert_eq!(p["eta_relative"], 0.0);
    assert_eq!(p["state"]["job_count"], 0);
    assert_eq!(p["state"]["job_timestamp"], "0");
    assert!(
        p["current_image"].is_null() && p["textinfo"].is_null(),
        "{p}"
    );
    assert_eq!(
        post(&s, "/sdapi/v1/interrupt", &json!({})),
        (200, Value::Null)
    );
    assert_eq!(post(&s, "/sdapi/v1/skip", &json!({})), (200, Value::Null));
    let (st, v) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({"steps": 3, "width": 64, "height": 64, "n_iter": 2}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["images"].as_array().unwrap().len(),
        2,
        "a stale stop request stopped a job"
    );
    // interrupt: the running batch comes back, later batches are not run
    let s2 = s.clone();
    let job = std::thread::spawn(move || post(&s2, "/sdapi/v1/txt2img", &long_job(11, 3)));
    let p = wait_progress(&s, |p| p["state"]["sampling_step"].as_u64() >= Some(2));
    assert_eq!(p["state"]["job_count"], 3);
    assert_eq!(p["state"]["job"], "txt2img");
    assert_eq!(p["state"]["sampling_steps"], 500);
    assert_eq!(p["state"]["job_timestamp"].as_str().unwrap().len(), 14);
    let prog = p["progress"].as_f64().unwrap();
    assert!(prog > 0.0 && prog < 0.34, "{p}");
    assert!(p["eta_relative"].as_f64().unwrap() > 0.0, "{p}");
    assert!(
        p["textinfo"]
            .as_str()
            .unwrap()
            .starts_with("txt2img: step "),
        "{p}"
    );
    let preview = p["current_image"]
        .as_str()
        .expect("a preview while sampling");
    let (img, _) = decode_image(&json!(preview));
    assert_eq!(
        img.dimensions(),
        (16, 16),
        "the cheap preview is latent-sized"
    );
    let (_, p) = get(&s, "/sdapi/v1/progress?skip_current_image=true");
    assert!(p["current_image"].is_null(), "{p}");
    // slow steps from the next one on, so the interrupted state can be seen before it ends
    let shared = s.fake.shared.clone();
    shared.step_micros.store(300_000, Ordering::SeqCst);
    let n = shared.steps.load(Ordering::SeqCst);
    wait_until("a slow step", || shared.steps.load(Ordering::SeqCst) > n);
    let (st, _) = post(&s, "/sdapi/v1/interrupt", &json!({}));
    assert_eq!(st, 200);
    shared.step_micros.store(5_000, Ordering::SeqCst);
    assert_eq!(
        get(&s, "/sdapi/v1/progress").1["state"]["interrupted"],
        true
    );
    let (st, v) = job.join().unwrap();
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["images"].as_array().unwrap().len(),
        1,
        "only the interrupted batch"
    );
    assert_eq!(decode_image(&v["images"][0]).0.dimensions(), (128, 128));
    assert_eq!(info(&v)["infotexts"].as_array().unwrap().len(), 1);
    let p = wait_progress(&s, |p| p["state"]["job_count"] == 0);
    assert_eq!(p["progress"], 0.0);
    assert_eq!(p["state"]["interrupted"], false);
    // skip: the batch stops, the next one runs
    let s2 = s.clone();
    let job = std::thread::spawn(move || post(&s2, "/sdapi/v1/txt2img", &long_job(20, 2)));
    wait_progress(&s, |p| p["state"]["sampling_step"].as_u64() >= Some(2));
    post(&s, "/sdapi/v1/skip", &json!({}));
    let p = wait_progress(&s, |p| {
        p["state"]["job_no"] == 1 && p["state"]["sampling_step"].as_u64() >= Some(1)
    });
    assert_eq!(p["state"]["job"], "Batch 2 out of 2");
    assert_eq!(
        p["state"]["skipped"], false,
        "skipped is cleared by the next batch"
    );
    assert!(p["progress"].as_f64().unwrap() > 0.5, "{p}");
    post(&s, "/sdapi/v1/interrupt", &json!({}));
    let (st, v) = job.join().unwrap();
    assert_eq!(st, 200, "{v}");
    let texts = info(&v)["infotexts"].clone();
    assert_eq!(v["images"].as_array().unwrap().len(), 2);
    assert!(texts[0].as_str().unwrap().contains("Seed: 20"));
    assert!(texts[1].as_str().unwrap().contains("Seed: 21"));
    assert_eq!(metric(&s, "sumi_jobs_total{outcome=\"interrupted\"}"), 2.0);
    assert_eq!(metric(&s, "sumi_jobs_total{outcome=\"ok\"}"), 1.0);
    let steps = s.fake.shared.steps.load(Ordering::SeqCst) as f64;
    assert_eq!(metric(&s, "sumi_step_seconds_count"), steps);
    assert!(steps > 10.0 && steps < 1000.0, "{steps}");
    wait_progress(&s, |p| p["state"]["job_count"] == 0);
}

#[test]
fn taesd_previews_are_full_sized_and_named_in_the_options() {
    let d = tempfile::tempdir().unwrap();
    let fake = Fake {
        taesd: true,
        ..Fake::new(5)
    };
    let s = Arc::new(TestServer::start(config(d.path()), fake));
    assert_eq!(
        get(&s, "/sdapi/v1/options").1["show_progress_type"],
        "TAESD"
    );
    let s2 = s.clone();
    let job = std::thread::spawn(move || post(&s2, "/sdapi/v1/txt2img", &long_job(5, 1)));
    let p = wait_progress(&s, |p| {
        p["state"]["sampling_step"].as_u64() >= Some(1) && p["current_image"].is_string()
    });
    assert_eq!(decode_image(&p["current_image"]).0.dimensions(), (128, 128));
    post(&s, "/sdapi/v1/interrupt", &json!({}));
    assert_eq!(job.join().unwrap().0, 200);
    let d = tempfile::tempdir().unwrap();
    let cheap = TestServer::start(config(d.path()), Fake::new(0));
    assert_eq!(
        get(&cheap, "/sdapi/v1/options").1["show_progress_type"],
        "Approx cheap"
    );
}

#[test]
fn a_full_queue_answers_429_and_a_departed_client_is_cancelled() {
    let d = tempfile::tempdir().unwrap();
    let mut c = config(d.path());
    c.queue = 1;
    c.models_dir = Some(d.path().to_path_buf());
    let other = fake_model(d.path(), "tiny_b");
    let s = Arc::new(TestServer::start(c, Fake::new(5)));
    let s2 = s.clone();
    let running = std::thread::spawn(move || post(&s2, "/sdapi/v1/txt2img", &long_job(1, 1)));
    wait_progress(&s, |p| p["state"]["sampling_step"].as_u64() >= Some(1));
    // a client queues a job and goes away
    let tcp = raw_request(&s, "/sdapi/v1/txt2img", &quick_job(2));
    wait_until("the job is queued", || {
        metric(&s, "sumi_queue_depth") >= 1.0
    });
    drop(tcp);
    // its place is freed: another job fits in the queue of one
    wait_until("the departed client's job leaves the queue", || {
        metric(&s, "sumi_queue_depth") == 0.0
    });
    let s3 = s.clone();
    let queued = std::thread::spawn(move || post(&s3, "/sdapi/v1/txt2img", &quick_job(3)));
    wait_until("the job is queued", || {
        metric(&s, "sumi_queue_depth") >= 1.0
    });
    // the queue is full now
    let mut r = agent()
        .post(&s.url("/sdapi/v1/txt2img"))
        .send_json(quick_job(4))
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(v["error"], "QueueFull");
    assert!(v["detail"].as_str().unwrap().contains("(1 waiting)"), "{v}");
    // a model switch is a control job: it queues whatever the capacity, after the others
    let s4 = s.clone();
    let switch = std::thread::spawn(move || {
        post(
            &s4,
            "/sdapi/v1/options",
            &json!({"sd_model_checkpoint": "tiny_b"}),
        )
    });
    wait_until("the switch is queued", || {
        metric(&s, "sumi_queue_depth") == 2.0
    });
    post(&s, "/sdapi/v1/interrupt", &json!({}));
    assert_eq!(running.join().unwrap().0, 200);
    let (st, v) = queued.join().unwrap();
    assert_eq!(st, 200, "{v}");
    assert_eq!(info(&v)["seed"], 3);
    assert!(info(&v)["infotexts"][0]
        .as_str()
        .unwrap()
        .contains("Model: tiny,"));
    assert_eq!(switch.join().unwrap(), (200, Value::Null));
    assert_eq!(s.fake.loads().last(), Some(&other));
    assert_eq!(
        metric(&s, "sumi_rejected_total{reason=\"queue_full\"}"),
        1.0
    );
    assert_eq!(metric(&s, "sumi_jobs_total{outcome=\"cancelled\"}"), 1.0);
    let seeds: Vec<i64> = s.fake.runs().iter().map(|(_, r)| r.seed).collect();
    assert_eq!(seeds, [1, 3], "the departed client's job ran");
}

#[test]
fn a_departed_client_stops_its_running_job() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(5));
    let tcp = raw_request(&s, "/sdapi/v1/txt2img", &long_job(3, 1));
    wait_progress(&s, |p| p["state"]["sampling_step"].as_u64() >= Some(1));
    drop(tcp);
    let p = wait_progress(&s, |p| p["state"]["job_count"] == 0);
    assert_eq!(p["progress"], 0.0);
    assert_eq!(metric(&s, "sumi_jobs_total{outcome=\"cancelled\"}"), 1.0);
    assert_eq!(metric(&s, "sumi_jobs_total{outcome=\"interrupted\"}"), 0.0);
    assert!(
        metric(&s, "sumi_step_seconds_count") < 400.0,
        "the job ran on after its client left"
    );
}

#[test]
fn more_requests_than_the_queue_holds() {
    let d = tempfile::tempdir().unwrap();
    let mut c = config(d.path());
    c.queue = 3;
    let s = Arc::new(TestServer::start(c, Fake::new(1)));
    const N: u64 = 12;
    let job =
        |seed: u64| json!({"prompt": "load", "seed": seed, "steps": 60, "width": 64, "height": 64});
    let barrier = Arc::new(Barrier::new(N as usize));
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let (s, barrier) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (i, post(&s, "/sdapi/v1/txt2img", &job(1000 + i)))
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut rejected = 0;
    for h in handles {
        let (i, (st, v)) = h.join().unwrap();
        match st {
            200 => {
                assert_eq!(info(&v)["seed"], 1000 + i, "a response for another request");
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
    assert_eq!(ok.len() + rejected, N as usize);
    assert!(rejected >= 1, "the queue of 3 never filled");
    assert!(
        ok.len() >= 3,
        "fewer than the queue holds were accepted: {}",
        ok.len()
    );
    // run once each, counted once each, none lost
    let mut ran: Vec<i64> = s.fake.runs().iter().map(|(_, r)| r.seed - 1000).collect();
    ran.sort();
    let mut accepted: Vec<i64> = ok.iter().map(|(i, _)| *i as i64).collect();
    accepted.sort();
    assert_eq!(ran, accepted);
    assert_eq!(
        metric(&s, "sumi_jobs_total{outcome=\"ok\"}"),
        ok.len() as f64
    );
    assert_eq!(
        metric(&s, "sumi_rejected_total{reason=\"queue_full\"}"),
        rejected as f64
    );
    assert_eq!(metric(&s, "sumi_queue_depth"), 0.0);
    assert_eq!(metric(&s, "sumi_job_running"), 0.0);
    // and the same answer as alone
    let (i, img) = &ok[ok.len() - 1];
    let (_, alone) = post(&s, "/sdapi/v1/txt2img", &job(1000 + i));
    assert_eq!(decode_image(&alone["images"][0]).0.as_raw(), img.as_raw());
}

#[test]
fn shutdown_drains_the_running_job_answers_the_queued_503_and_refuses_new_ones() {
    let d = tempfile::tempdir().unwrap();
    let mut c = config(d.path());
    c.queue = 4;
    let fake = Fake::new(5);
    let shared = fake.shared.clone();
    let mut s = TestServer::start(c, fake);
    let base = s.base.clone();
    let running = std::thread::spawn({
        let url = format!("{base}/sdapi/v1/txt2img");
        move || {
            let mut r = agent().post(&url).send_json(long_job(1, 1)).unwrap();
            let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
            (r.status().as_u16(), v)
        }
    });
    wait_progress(&s, |p| p["state"]["sampling_step"].as_u64() >= Some(1));
    let queued: Vec<_> = (0..2)
        .map(|i| {
            let url = format!("{base}/sdapi/v1/txt2img");
            std::thread::spawn(move || {
                let mut r = agent().post(&url).send_json(quick_job(10 + i)).unwrap();
                (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
            })
        })
        .collect();
    wait_until("two jobs queued", || metric(&s, "sumi_queue_depth") == 2.0);
    assert_eq!(metric(&s, "sumi_ready"), 1.0);
    // slower steps: the running job outlasts the checks below
    shared.step_micros.store(20_000, Ordering::SeqCst);
    s.shutdown();
    // queued jobs are answered 503 at once; new ones are refused while the running one drains
    for q in queued {
        let (st, v) = q.join().unwrap();
        assert_eq!(st, 503, "{v}");
        assert!(v.contains("shutting down"), "{v}");
    }
    let (st, v) = get(&s, "/ready");
    assert_eq!((st, v["ready"].as_bool()), (503, Some(false)), "{v}");
    let (st, v) = post(&s, "/sdapi/v1/txt2img", &quick_job(99));
    assert_eq!((st, v["error"].as_str()), (503, Some("Unavailable")), "{v}");
    let r = agent()
        .post(&s.url("/sdapi/v1/txt2img"))
        .send_json(quick_job(98))
        .unwrap();
    assert_eq!(r.headers().get("retry-after").unwrap(), "5");
    let (st, _) = post(
        &s,
        "/sdapi/v1/options",
        &json!({"sd_model_checkpoint": "tiny"}),
    );
    assert_eq!(st, 200, "the current checkpoint needs no job");
    assert_eq!(metric(&s, "sumi_ready"), 0.0);
    assert_eq!(metric(&s, "sumi_jobs_total{outcome=\"cancelled\"}"), 2.0);
    assert_eq!(
        metric(&s, "sumi_rejected_total{reason=\"shutting_down\"}"),
        2.0
    );
    // the running job finishes (fast from now on) and gets its answer
    shared.step_micros.store(0, Ordering::SeqCst);
    let (st, v) = running.join().unwrap();
    assert_eq!(st, 200, "{v}");
    assert_eq!(info(&v)["seed"], 1);
    assert_eq!(v["images"].as_array().unwrap().len(), 1);
    s.join().expect("a clean stop");
    assert_eq!(shared.runs.lock().unwrap().len(), 1, "a queued job ran");
    assert!(
        agent().get(&format!("{base}/health")).call().is_err(),
        "still listening"
    );
}
