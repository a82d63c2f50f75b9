//! Several machines on Redis Streams (issue 20), with a real `redis-server` and real `sumi`
//! processes on the tiny model: one front and two workers give every one of 20 concurrent jobs
//! exactly once with the single-process server's pixels; a worker killed with `kill -9` during
//! a job has it finished by the other, once; workers of two checkpoints get their own jobs and
//! an interrupt reaches the worker running the caller's job; the async job API; the bounds
//! (404 for an unannounced checkpoint, 429 with Retry-After past the queue); the front's
//! checkpoint listing (an SD1 and an SDXL worker) equal to the single server's.

mod broker_common;
mod serve_common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker_common::*;
use serde_json::{json, Value};
use serve_common::*;

fn small_job(seed: u64, id: &str) -> Value {
    json!({"prompt": "a red fox", "seed": seed, "steps": 3, "width": 64, "height": 64,
           "sampler_name": "Euler", "force_task_id": id})
}

/// A job long enough to act on while it runs (hundreds of tiny steps).
fn long_job(seed: u64, id: &str, steps: u32) -> Value {
    json!({"prompt": "slow", "seed": seed, "steps": steps, "width": 64, "height": 64,
           "sampler_name": "Euler", "force_task_id": id})
}

fn pixels(v: &Value) -> image::RgbImage {
    decode_image(&v["images"][0]).0
}

/// Polls `GET /sumi/v1/jobs/{id}` until `pred` holds (60 s at most).
fn wait_job(s: &Server, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let (st, v) = get(s, &format!("/sumi/v1/jobs/{id}"));
        if st == 200 && pred(&v) {
            return v;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "job {id}: {st} {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many times each job id was completed (stored or discarded) in the workers' logs, once
/// `expected` completions are logged (a worker logs after storing: its client may have its answer
/// first; 10 s at most).
fn completions(workers: &[&Proc], expected: usize) -> (HashMap<String, usize>, usize) {
    let t0 = Instant::now();
    loop {
        let mut stored = HashMap::new();
        let mut discarded = 0;
        for w in workers {
            for l in w.lines_with("sumi worker: job ") {
                let id = l["sumi worker: job ".len()..]
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string();
                if l.contains("discarded") {
                    discarded += 1;
                } else if l.contains(" done (") || l.contains(" failed (") {
                    *stored.entry(id).or_insert(0) += 1;
                }
            }
        }
        let n: usize = stored.values().sum();
        if n >= expected || t0.elapsed() > Duration::from_secs(10) {
            return (stored, discarded);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn twenty_concurrent_jobs_on_two_workers_complete_once_with_single_process_pixels() {
    let Some(redis) = Redis::start() else { return };
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let w1 = worker(&redis, &m, "w1");
    let w2 = worker(&redis, &m, "w2");
    let (_fp, front) = front(&redis, &["--queue", "32"]);
    let front = Arc::new(front);
    let single = Server::start(&m, &[]);
    let (st, models) = get(&front, "/sdapi/v1/sd-models");
    assert_eq!(st, 200);
    assert_eq!(models.as_array().unwrap().len(), 1, "{models}");
    assert_eq!(get(&front, "/ready"), (200, json!({"ready": true})));
    for path in [
        "/sdapi/v1/samplers",
        "/sdapi/v1/schedulers",
        "/sdapi/v1/scripts",
    ] {
        let (st, list) = get(&front, path);
        assert_eq!(st, 200);
        assert_eq!(list, get(&single, path).1, "{path}");
    }
    assert_eq!(models[0]["model_name"], "tiny");
    let t0 = Instant::now();
    let clients: Vec<_> = (0..20u64)
        .map(|i| {
            let f = front.clone();
            std::thread::spawn(move || {
                post(
                    &f,
                    "/sdapi/v1/txt2img",
                    &small_job(100 + i, &format!("a1-{i}")),
                )
            })
        })
        .collect();
    let answers: Vec<(u16, Value)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    eprintln!(
        "20 jobs on two workers: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    for (i, (st, v)) in answers.iter().enumerate() {
        assert_eq!(*st, 200, "job {i}: {v}");
        let (st1, v1) = post(
            &single,
            "/sdapi/v1/txt2img",
            &small_job(100 + i as u64, "x"),
        );
        assert_eq!(st1, 200);
        assert_eq!(
            pixels(v),
            pixels(&v1),
            "job {i}: the broker's pixels differ"
        );
        assert_eq!(info(v)["seed"], 100 + i as u64);
        let (st, rec) = get(&front, &format!("/sumi/v1/jobs/a1-{i}"));
        assert_eq!(st, 200);
        assert_eq!(rec["state"], "done", "{rec}");
        assert_eq!(rec["attempts"], 1, "{rec}");
        assert_eq!(rec["result"]["status"], 200);
    }
    let (stored, discarded) = completions(&[&w1, &w2], 20);
    assert_eq!(stored.len(), 20, "{stored:?}");
    assert!(stored.values().all(|&n| n == 1), "{stored:?}");
    assert_eq!(discarded, 0);
    let by_w1 = w1.lines_with(" done (").len();
    let by_w2 = w2.lines_with(" done (").len();
    assert_eq!(by_w1 + by_w2, 20);
    assert!(
        by_w1 > 0 && by_w2 > 0,
        "one worker did all: {by_w1} {by_w2}"
    );
    // the id is taken now
    let (st, v) = post(&front, "/sdapi/v1/txt2img", &small_job(1, "a1-0"));
    assert_eq!(st, 409, "{v}");
}

#[test]
fn the_async_job_api_answers_alike_behind_the_broker_and_in_one_process() {
    let Some(redis) = Redis::start() else { return };
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let _w = worker(&redis, &m, "w1");
    let (_fp, front) = front(&redis, &[]);
    let single = Server::start(&m, &[]);
    // the front has the single-process server's cross-site guard
    let r = agent()
        .post(&front.url("/sumi/v1/jobs"))
        .header("origin", "http://evil.example")
        .send_json(json!({"endpoint": "txt2img", "payload": small_job(5, "evil")}))
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(get(&front, "/sumi/v1/jobs/evil").0, 404);
    let mut images = Vec::new();
    for s in [&front, &single] {
        let job = json!({"endpoint": "txt2img", "payload": small_job(5, "async-1")});
        let (st, v) = post(s, "/sumi/v1/jobs", &job);
        assert_eq!(st, 202, "{v}");
        assert_eq!(v["id"], "async-1");
        let done = wait_job(s, "async-1", |v| v["state"] == "done");
        assert_eq!(done["endpoint"], "txt2img");
        assert_eq!(done["result"]["status"], 200, "{done}");
        images.push(pixels(&done["result"]["body"]));
        // a second job with the same id is refused
        let (st, v) = post(s, "/sumi/v1/jobs", &job);
        assert_eq!(st, 409, "{v}");
        let (st, v) = post(
            s,
            "/sumi/v1/jobs",
            &json!({"endpoint": "upscale", "payload": {}}),
        );
        assert_eq!(st, 422, "{v}");
        let (st, _) = get(s, "/sumi/v1/jobs/nope");
        assert_eq!(st, 404);
        // cancel a long job
        let job = json!({"endpoint": "txt2img", "payload": long_job(9, "async-2", 500)});
        let (st, _) = post(s, "/sumi/v1/jobs", &job);
        assert_eq!(st, 202);
        wait_job(s, "async-2", |v| v["state"] == "running");
        let (st, v) = answer_delete(s, "/sumi/v1/jobs/async-2");
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["state"], "cancelled");
        let v = wait_job(s, "async-2", |v| v["state"] == "cancelled");
        assert_eq!(v["result"]["status"], 499, "{v}");
    }
    assert_eq!(images[0], images[1]);
}

fn answer_delete(s: &Server, path: &str) -> (u16, Value) {
    let mut r = agent().delete(&s.url(path)).call().unwrap();
    let st = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    (
        st,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn a_worker_killed_during_a_job_has_it_finished_by_the_other_once() {
    let Some(redis) = Redis::start() else { return };
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let mut workers = vec![worker(&redis, &m, "w1"), worker(&redis, &m, "w2")];
    let (_fp, front) = front(&redis, &[]);
    let front = Arc::new(front);
    let f2 = front.clone();
    let client = std::thread::spawn(move || post(&f2, "/sdapi/v1/txt2img", &long_job(7, "k1", 60)));
    let rec = wait_job(&front, "k1", |v| {
        v["state"] == "running" && v["progress"]["state"]["sampling_step"].as_u64() >= Some(2)
    });
    let victim = rec["worker"].as_str().unwrap().to_string();
    let (dead, alive) = if victim == "w1" { (0, 1) } else { (1, 0) };
    workers[dead].kill9();
    let t0 = Instant::now();
    let (st, v) = client.join().unwrap();
    assert_eq!(st, 200, "{v}");
    eprintln!(
        "finished {:.2} s after the kill",
        t0.elapsed().as_secs_f64()
    );
    let rec = wait_job(&front, "k1", |v| v["state"] == "done");
    assert_eq!(rec["attempts"], 2, "{rec}");
    let other = if alive == 0 { "w1" } else { "w2" };
    assert_eq!(rec["worker"], other);
    assert_eq!(workers[alive].lines_with("took over job k1").len(), 1);
    let (stored, discarded) = completions(&[&workers[0], &workers[1]], 1);
    assert_eq!(stored.get("k1"), Some(&1), "{stored:?}");
    assert_eq!(discarded, 0);
    let (st, metrics) = get(&front, "/metrics");
    assert_eq!(st, 200);
    let text = metrics.as_str().unwrap();
    for line in [
        "sumi_broker_claims_total 1",
        "sumi_broker_jobs_total{state=\"done\"} 1",
        "sumi_broker_jobs_pending{model=",
        "sumi_broker_live_workers{model=",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    drop(workers);
    let single = Server::start(&m, &[]);
    let (st, full) = post(&single, "/sdapi/v1/txt2img", &long_job(7, "x", 60));
    assert_eq!(st, 200);
    assert_eq!(
        pixels(&v),
        pixels(&full),
        "the taken-over job's pixels differ"
    );
}

/// The tiny SD2 checkpoint as `dir/<name>.safetensors` (another hash than the SD1 one).
/// The tiny `arch` checkpoint as `dir/<name>.safetensors`.
fn tiny_arch(arch: &str, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let sub = dir.join(format!(".make-{name}"));
    std::fs::create_dir_all(&sub).unwrap();
    let made = sumi_testkit::tiny_model(arch, &sub);
    let target = dir.join(format!("{name}.safetensors"));
    std::fs::rename(made, &target).unwrap();
    let _ = std::fs::remove_dir_all(&sub);
    target
}

fn tiny_sd2(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    tiny_arch("sd2", dir, name)
}

/// The front lists the announced checkpoints as the single server lists the same files,
/// Sumi's `latent_space` included (the web page's default size follows it).
#[test]
fn the_front_lists_checkpoints_and_their_latent_space_as_the_single_server() {
    let Some(redis) = Redis::start() else { return };
    let d = tempfile::tempdir().unwrap();
    let sd = tiny_model(d.path(), "one");
    let xl = tiny_arch("sdxl", d.path(), "xl");
    let _w1 = worker(&redis, &sd, "w1");
    let _w2 = worker(&redis, &xl, "w2");
    let (_fp, front) = front(&redis, &[]);
    let (st, models) = get(&front, "/sdapi/v1/sd-models");
    assert_eq!(st, 200);
    let spaces: Vec<(&str, &str)> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["model_name"].as_str().unwrap();
            (name, m["latent_space"].as_str().unwrap_or("null"))
        })
        .collect();
    assert_eq!(spaces, [("one", "sd"), ("xl", "sdxl")], "{models}");
    let dir = d.path().to_string_lossy().to_string();
    let single = Server::start(&sd, &["--models-dir", &dir]);
    assert_eq!(get(&single, "/sdapi/v1/sd-models").1, models);
}

#[test]
fn two_checkpoints_get_their_own_jobs_and_an_interrupt_reaches_the_right_worker() {
    let Some(redis) = Redis::start() else { return };
    let d = tempfile::tempdir().unwrap();
    let m1 = tiny_model(d.path(), "one");
    let m2 = tiny_sd2(d.path(), "two");
    let wa = worker(&redis, &m1, "wa");
    let mut wb = worker(&redis, &m2, "wb");
    let (_p1, f1) = front(&redis, &[]);
    let (_p2, f2) = front(&redis, &["--queue", "1", "--job-timeout", "1"]);
    let (f1, f2) = (Arc::new(f1), Arc::new(f2));
    let (st, models) = get(&f1, "/sdapi/v1/sd-models");
    assert_eq!(st, 200);
    let names: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one", "two"]);
    let with_model = |mut job: Value, name: &str| {
        job["override_settings"] = json!({ "sd_model_checkpoint": name });
        job
    };
    // a checkpoint no worker announced: 404 before queueing
    let (st, v) = post(
        &f1,
        "/sdapi/v1/txt2img",
        &with_model(small_job(1, "n1"), "three"),
    );
    assert_eq!(st, 404, "{v}");
    assert_eq!(get(&f1, "/sumi/v1/jobs/n1").0, 404);
    // each job on its checkpoint's worker
    for (name, w) in [("one", "wa"), ("two", "wb")] {
        let id = format!("r-{name}");
        let (st, v) = post(
            &f1,
            "/sdapi/v1/txt2img",
            &with_model(small_job(2, &id), name),
        );
        assert_eq!(st, 200, "{v}");
        assert!(
            info(&v)["infotexts"][0]
                .as_str()
                .unwrap()
                .contains(&format!("Model: {name}")),
            "{v}"
        );
        assert_eq!(get(&f1, &format!("/sumi/v1/jobs/{id}")).1["worker"], w);
    }
    // two long jobs through two fronts; the second front's interrupt stops its own job only
    let f = f1.clone();
    let job_a = with_model(long_job(3, "i-one", 200), "one");
    let a = std::thread::spawn(move || post(&f, "/sdapi/v1/txt2img", &job_a));
    let f = f2.clone();
    let job_b = with_model(long_job(3, "i-two", 300), "two");
    let b = std::thread::spawn(move || post(&f, "/sdapi/v1/txt2img", &job_b));
    for id in ["i-one", "i-two"] {
        wait_job(&f1, id, |v| {
            v["state"] == "running" && v["progress"]["state"]["sampling_step"].as_u64() >= Some(2)
        });
    }
    // progress with a preview (the worker renders one a second into a job)
    let t0 = Instant::now();
    let p = loop {
        let (st, p) = get(&f2, "/sdapi/v1/progress");
        assert_eq!(st, 200);
        if p["current_image"].is_string() {
            break p;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no preview: {p}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let prog = p["progress"].as_f64().unwrap();
    assert!(prog > 0.0 && prog < 1.0, "{p}");
    assert_eq!(p["state"]["sampling_steps"], 300, "{p}");
    let (img, _) = decode_image(&p["current_image"]);
    assert_eq!(
        img.dimensions(),
        (8, 8),
        "the cheap preview is latent-sized"
    );
    let (st, p) = post(
        &f1,
        "/internal/progress",
        &json!({"id_task": "i-two", "id_live_preview": -1}),
    );
    assert_eq!(st, 200);
    assert_eq!(p["active"], true, "{p}");
    assert!(
        p["live_preview"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,"),
        "{p}"
    );
    assert!(p["id_live_preview"].as_i64().unwrap() >= 1, "{p}");
    let t0 = Instant::now();
    assert_eq!(post(&f2, "/sdapi/v1/interrupt", &json!({})).0, 200);
    let (st, v) = b.join().unwrap();
    assert_eq!(st, 200, "{v}");
    eprintln!("interrupt answered in {:.3} s", t0.elapsed().as_secs_f64());
    assert!(t0.elapsed() < Duration::from_secs(5));
    let rec = get(&f1, "/sumi/v1/jobs/i-one").1;
    assert_eq!(
        rec["state"], "running",
        "the other checkpoint's job runs on: {rec}"
    );
    let (st, v) = a.join().unwrap();
    assert_eq!(st, 200, "{v}");
    let single = Server::start(&m1, &[]);
    let (_, full) = post(
        &single,
        "/sdapi/v1/txt2img",
        &with_model(long_job(3, "x", 200), "one"),
    );
    assert_eq!(
        pixels(&v),
        pixels(&full),
        "the uninterrupted job's pixels differ"
    );
    drop(wa);
    // no live worker for `two`: jobs wait; past --queue the front answers 429 + Retry-After
    wb.kill9();
    let job =
        |id: &str| json!({"endpoint": "txt2img", "payload": with_model(small_job(4, id), "two")});
    let (st, v) = post(&f2, "/sumi/v1/jobs", &job("q1"));
    assert_eq!(st, 202, "{v}");
    let r = agent()
        .post(&f2.url("/sumi/v1/jobs"))
        .send_json(job("q2"))
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    assert_eq!(get(&f2, "/sumi/v1/jobs/q1").1["state"], "queued");
    // and past --job-timeout without a live worker it fails, saying why
    let v = wait_job(&f2, "q1", |v| v["state"] == "failed");
    assert!(
        v["error"].as_str().unwrap().contains("--job-timeout"),
        "{v}"
    );
    assert_eq!(v["result"]["status"], 503, "{v}");
    assert_eq!(
        answer_delete(&f2, "/sumi/v1/jobs/q1").1["state"],
        "finished"
    );
}

#[test]
fn a_front_killed_during_jobs_loses_nothing_a_new_one_gives_the_results() {
    let Some(redis) = Redis::start() else { return };
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let w = worker(&redis, &m, "w1");
    let (mut fp, front1) = front(&redis, &[]);
    let front1 = Arc::new(front1);
    // synchronous clients and async jobs, then the front dies
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let f = front1.clone();
            std::thread::spawn(move || {
                agent()
                    .post(&f.url("/sdapi/v1/txt2img"))
                    .send_json(long_job(20 + i, &format!("f-{i}"), 20))
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    for i in 3..5u64 {
        let job =
            json!({"endpoint": "txt2img", "payload": long_job(20 + i, &format!("f-{i}"), 20)});
        assert_eq!(post(&front1, "/sumi/v1/jobs", &job).0, 202);
    }
    wait_job(&front1, "f-0", |v| v["state"] == "running");
    fp.kill9();
    for c in clients {
        // their connections are gone with the front (or the job was quick enough)
        let _ = c.join().unwrap();
    }
    let (_fp2, front2) = front(&redis, &[]);
    for i in 0..5u64 {
        let v = wait_job(&front2, &format!("f-{i}"), |v| v["state"] == "done");
        assert_eq!(v["result"]["status"], 200, "{v}");
        assert_eq!(v["attempts"], 1);
        assert_eq!(info(&v["result"]["body"])["seed"], 20 + i);
    }
    let (stored, discarded) = completions(&[&w], 5);
    assert_eq!(stored.len(), 5, "{stored:?}");
    assert!(stored.values().all(|&n| n == 1));
    assert_eq!(discarded, 0);
}

#[test]
fn redis_restarted_mid_run_loses_no_accepted_job() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let w = worker(&redis, &m, "w1");
    let (fp, front) = front(&redis, &[]);
    let front = Arc::new(front);
    for i in 0..4u64 {
        let job =
            json!({"endpoint": "txt2img", "payload": long_job(40 + i, &format!("r-{i}"), 20)});
        assert_eq!(post(&front, "/sumi/v1/jobs", &job).0, 202);
    }
    let f = front.clone();
    let client =
        std::thread::spawn(move || post(&f, "/sdapi/v1/txt2img", &long_job(44, "r-4", 20)));
    wait_job(&front, "r-0", |v| v["state"] == "running");
    redis.restart(Duration::from_millis(500));
    let (st, v) = client.join().unwrap();
    assert_eq!(st, 200, "the waiting client gets its image: {v}");
    for i in 0..5u64 {
        let v = wait_job(&front, &format!("r-{i}"), |v| v["state"] == "done");
        assert_eq!(v["result"]["status"], 200, "{v}");
        assert_eq!(info(&v["result"]["body"])["seed"], 40 + i);
    }
    let (stored, discarded) = completions(&[&w], 5);
    assert_eq!(stored.len(), 5, "{stored:?}");
    assert!(stored.values().all(|&n| n == 1), "{stored:?}");
    assert_eq!(discarded, 0);
    // both said so in their logs, and both go on without a restart
    assert!(!w.lines_with("reconnecting").is_empty());
    assert!(!fp.lines_with("reconnecting").is_empty());
    let (st, _) = post(&front, "/sdapi/v1/txt2img", &small_job(50, "r-after"));
    assert_eq!(st, 200);
}

/// Sends `n` jobs from `clients` concurrent clients; jobs per second.
fn throughput(s: &Arc<Server>, n: u64, clients: u64, tag: &str) -> f64 {
    let t0 = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let s = s.clone();
            let tag = tag.to_string();
            std::thread::spawn(move || {
                for i in (c..n).step_by(clients as usize) {
                    let (st, v) = post(
                        &s,
                        "/sdapi/v1/txt2img",
                        &small_job(i, &format!("{tag}-{i}")),
                    );
                    assert_eq!(st, 200, "{v}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

/// Sequential one-step jobs: each one's time in milliseconds, sorted.
fn latencies(s: &Server, n: u64, tag: &str) -> Vec<f64> {
    let mut out: Vec<f64> = (0..n)
        .map(|i| {
            let mut job = small_job(i, &format!("{tag}-{i}"));
            job["steps"] = json!(1);
            let t0 = Instant::now();
            let (st, v) = post(s, "/sdapi/v1/txt2img", &job);
            assert_eq!(st, 200, "{v}");
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Issue 20's note: throughput with one and two workers on the tiny model, and the latency the
/// broker adds over the single-process queue per job (median and p99). Run with
/// `cargo test --release -p sumi-cli --test broker -- --ignored --nocapture measure`.
#[test]
#[ignore = "a measurement; prints numbers"]
fn measure_throughput_and_added_latency() {
    let Some(redis) = Redis::start() else { return };
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let single = Arc::new(Server::start(&m, &["--queue", "64"]));
    let _w1 = worker(&redis, &m, "w1");
    let (_fp, front) = front(&redis, &["--queue", "64"]);
    let front = Arc::new(front);
    // warm up both
    latencies(&single, 5, "warm-s");
    latencies(&front, 5, "warm-f");
    let (n, clients) = (200u64, 8u64);
    let single_tp = throughput(&single, n, clients, "tp-s");
    let one = throughput(&front, n, clients, "tp-1");
    let ls = latencies(&single, 200, "lat-s");
    let lf = latencies(&front, 200, "lat-f");
    let _w2 = worker(&redis, &m, "w2");
    let two = throughput(&front, n, clients, "tp-2");
    eprintln!("tiny model, 64x64, 3 Euler steps, {n} jobs from {clients} clients:");
    eprintln!("  single process: {single_tp:.1} jobs/s");
    eprintln!("  broker, one worker: {one:.1} jobs/s; two workers: {two:.1} jobs/s");
    eprintln!("one-step jobs one after another (200 each), milliseconds:");
    for (name, l) in [("single process", &ls), ("broker, one worker", &lf)] {
        eprintln!(
            "  {name}: median {:.2}, p99 {:.2}",
            quantile(l, 0.5),
            quantile(l, 0.99)
        );
    }
    eprintln!(
        "  added by the broker: median {:.2} ms, p99 {:.2} ms",
        quantile(&lf, 0.5) - quantile(&ls, 0.5),
        quantile(&lf, 0.99) - quantile(&ls, 0.99)
    );
}

#[test]
fn a_job_whose_workers_keep_dying_ends_failed_after_max_attempts() {
    let Some(redis) = Redis::start() else { return };
    let d = tempfile::tempdir().unwrap();
    let m = tiny_model(d.path(), "tiny");
    let mut w1 = worker(&redis, &m, "w1");
    let (_fp, front) = front(&redis, &[]);
    let job = json!({"endpoint": "txt2img", "payload": long_job(8, "m1", 500)});
    assert_eq!(post(&front, "/sumi/v1/jobs", &job).0, 202);
    wait_job(&front, "m1", |v| v["state"] == "running");
    w1.kill9();
    // the next worker allows one delivery: the second ends the job
    let url = redis.url();
    let model = m.to_string_lossy().to_string();
    let mut args = vec![
        "worker", "--broker", &url, "--model", &model, "--name", "w2",
    ];
    args.extend_from_slice(FAST);
    args.extend_from_slice(&["--max-attempts", "1"]);
    let w2 = Proc::start(&args, "serving");
    let v = wait_job(&front, "m1", |v| v["state"] == "failed");
    assert_eq!(v["attempts"], 2, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("--max-attempts 1") && error.contains("\"w1\""),
        "{v}"
    );
    assert_eq!(v["result"]["status"], 500);
    assert_eq!(w2.lines_with("job m1 failed").len(), 1);
}
