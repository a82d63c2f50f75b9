//! A1111 request models without a server: API defaults, lenient field types, the echoed
//! `parameters`, limits named in errors, the bounded queue.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use sumi_sampling::{SamplerKind, Scheduler};
use sumi_server::convert::prepare;
use sumi_server::models::{echo, Endpoint, GenerationFields};
use sumi_server::options::{defaults, GenOptions};
use sumi_server::queue::{Job, PushError, Queue, Task};

fn fields(v: Value) -> GenerationFields {
    serde_json::from_value(v).unwrap()
}

fn opts() -> GenOptions {
    GenOptions::read(&defaults(false), None).unwrap()
}

#[test]
fn api_defaults_are_a1111s() {
    let p = prepare(Endpoint::Txt2Img, &fields(json!({})), &opts()).unwrap();
    let r = &p.request;
    assert_eq!(r.steps, 50);
    assert_eq!(r.sampler, SamplerKind::Euler);
    assert_eq!(r.scheduler, Scheduler::Automatic);
    assert_eq!((r.width, r.height, r.cfg_scale), (512, 512, 7.0));
    assert_eq!((r.batch_size, r.batch_count, r.clip_skip), (1, 1, 1));
    assert_eq!(p.requested_seed, -1);
    assert!(r.seed >= 0 && r.seed < 4_294_967_294);
    assert!(p.send_images);
}

#[test]
fn nulls_strings_and_floats_are_read_leniently() {
    let f = fields(json!({
        "steps": "12", "width": 320.0, "seed": null, "cfg_scale": "5.5", "send_images": 0,
        "sampler_name": null, "sampler_index": "k_dpmpp_2m", "unknown": {"deep": [1]},
        "styles": null, "override_settings": null, "restore_faces": null
    }));
    let p = prepare(Endpoint::Txt2Img, &f, &opts()).unwrap();
    assert_eq!(p.request.steps, 12);
    assert_eq!(p.request.width, 320);
    assert_eq!(p.request.cfg_scale, 5.5);
    assert_eq!(p.request.sampler, SamplerKind::DpmPp2M);
    assert!(!p.send_images);
    assert!(serde_json::from_value::<GenerationFields>(json!({"steps": 1.5})).is_err());
    assert!(serde_json::from_value::<GenerationFields>(json!({"steps": [1]})).is_err());
}

#[test]
fn legacy_sampler_names_split_and_override_settings_apply() {
    let f = fields(json!({
        "sampler_name": "Euler Karras",
        "override_settings": {"CLIP_stop_at_last_layers": 2, "randn_source": "CPU"}
    }));
    let o = GenOptions::read(&defaults(false), f.override_settings.as_ref()).unwrap();
    let p = prepare(Endpoint::Txt2Img, &f, &o).unwrap();
    assert_eq!(p.request.sampler, SamplerKind::Euler);
    assert_eq!(p.request.scheduler, Scheduler::Karras);
    assert_eq!(p.request.clip_skip, 2);
    assert_eq!(p.request.rng, sumi_sampling::NoiseSource::Cpu);
}

#[test]
fn limits_are_named() {
    let cases = [
        (json!({"width": 5000}), "width: 5000 is outside 64..=4096"),
        (json!({"steps": 501}), "steps: 501 is outside 1..=500"),
        (
            json!({"batch_size": 65}),
            "batch_size: 65 is outside 1..=64",
        ),
        (json!({"n_iter": 1001}), "n_iter: 1001 is outside 1..=1000"),
    ];
    for (body, msg) in cases {
        let e = prepare(Endpoint::Txt2Img, &fields(body.clone()), &opts()).unwrap_err();
        assert_eq!(e.status.as_u16(), 422, "{body}");
        assert!(e.detail.contains(msg), "{body}: {}", e.detail);
    }
    let e = prepare(
        Endpoint::Txt2Img,
        &fields(json!({"sampler_name": "Nope"})),
        &opts(),
    )
    .unwrap_err();
    assert_eq!(e.status.as_u16(), 404);
}

#[test]
fn the_echo_is_the_request_as_sent_over_the_defaults() {
    let sent: Map<String, Value> = serde_json::from_value(json!({
        "seed": -1, "steps": "7", "init_images": ["abc"], "mask": "def", "extra": 1
    }))
    .unwrap();
    let e = echo(Endpoint::Img2Img, &sent);
    assert_eq!(e["seed"], -1);
    assert_eq!(e["steps"], "7");
    assert_eq!(e["init_images"], Value::Null);
    assert_eq!(e["mask"], Value::Null);
    assert_eq!(e["sampler_index"], "Euler");
    assert_eq!(e["inpaint_full_res"], true);
    assert_eq!(e["denoising_strength"], 0.75);
    assert!(e.get("extra").is_none());
    // A1111's `vars(request)` holds it
    assert_eq!(e["include_init_images"], false);
    let t = echo(Endpoint::Txt2Img, &Map::new());
    assert_eq!(t["steps"], 50);
    assert_eq!(t["enable_hr"], false);
    assert!(t.get("init_images").is_none());
}

fn job(id: u64) -> (Job, Arc<AtomicBool>) {
    let (tx, _rx) = tokio::sync::oneshot::channel();
    let cancel = Arc::new(AtomicBool::new(false));
    (
        Job {
            id,
            cancel: cancel.clone(),
            task: Task::Load("x".into()),
            reply: tx,
        },
        cancel,
    )
}

#[test]
fn the_queue_is_bounded_and_drops_departed_jobs() {
    let q = Queue::new(2);
    let (a, cancel_a) = job(1);
    assert_eq!(q.push(a).unwrap(), 0);
    assert_eq!(q.push(job(2).0).unwrap(), 0);
    assert_eq!(q.push(job(3).0).unwrap_err().1, PushError::Full);
    cancel_a.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(q.depth(), 1);
    assert_eq!(q.push(job(4).0).unwrap(), 1, "the departed job made room");
    assert_eq!(q.pop().unwrap().id, 2);
    let left = q.close();
    assert_eq!(left.len(), 1);
    assert_eq!(q.push(job(5).0).unwrap_err().1, PushError::Closed);
    assert!(q.pop().is_none());
}
