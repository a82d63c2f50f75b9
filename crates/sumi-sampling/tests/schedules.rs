//! Schedules and the discrete-time adapter against k-diffusion / A1111
//! (`tools/reference/sampling_schedule_fixtures.py`), relative 1e-6.

use std::path::PathBuf;

use serde_json::Value;
use sumi_sampling::denoiser::DiscreteSchedule;
use sumi_sampling::schedules::{self, AysModel, ScheduleOptions, Scheduler};
use sumi_testkit::Cases;

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedules.json")
}

fn fixture() -> Value {
    sumi_testkit::fixture::read_json(&path()).unwrap()
}

/// The `(input, output)` pairs at `pointer` (refused when absent or empty).
fn pairs(f: &Value, pointer: &str) -> Cases<(f64, f64)> {
    Cases::from_document(&path(), f, pointer).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn rel_err(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / a.abs().max(b.abs())
    }
}

#[test]
fn discrete_sigmas_match_kdiffusion() {
    let f = fixture();
    let model = DiscreteSchedule::sd();
    for kind in ["eps", "v"] {
        let want = floats(&f[kind]["discrete_sigmas"]);
        assert_eq!(want.len(), 1000);
        let worst = model
            .sigmas()
            .iter()
            .zip(&want)
            .map(|(a, b)| rel_err(*a, *b))
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "{kind}: worst relative error {worst}");
        for (s, t) in pairs(&f, &format!("/{kind}/sigma_to_t"))
            .exactly(8)
            .unwrap()
        {
            let got = model.sigma_to_t(s as f32 as f64);
            assert!((got - t).abs() < 2e-4, "sigma_to_t({s}) = {got}, want {t}");
        }
        for (t, s) in pairs(&f, &format!("/{kind}/t_to_sigma"))
            .exactly(6)
            .unwrap()
        {
            let got = model.t_to_sigma(t);
            assert!(rel_err(got, s) < 1e-6, "t_to_sigma({t}) = {got}, want {s}");
        }
    }
}

#[test]
fn every_schedule_matches_a1111() {
    let f = fixture();
    let model = DiscreteSchedule::sd();
    let mut worst_overall = 0.0f64;
    let mut checked = 0;
    for kind in ["eps", "v"] {
        for (steps, table) in f[kind]["schedules"].as_object().unwrap() {
            let n: usize = steps.parse().unwrap();
            for (name, want) in table.as_object().unwrap() {
                let mut opts = ScheduleOptions::for_model(&model);
                let scheduler: Scheduler = if name == "align_your_steps_sdxl" {
                    opts.ays_model = AysModel::Sdxl;
                    Scheduler::AlignYourSteps
                } else {
                    name.parse().unwrap()
                };
                let want = floats(want);
                let got = schedules::sigmas(scheduler, n, &model, &opts).unwrap();
                assert_eq!(got.len(), want.len(), "{kind} {name} n={n}: length");
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| rel_err(*a, *b))
                    .fold(0.0, f64::max);
                assert!(worst < 1e-6, "{kind} {name} n={n}: worst relative error {worst}\n got {got:?}\nwant {want:?}");
                worst_overall = worst_overall.max(worst);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 168, "schedules checked");
    eprintln!("worst relative error over all schedules: {worst_overall:e}");
}
