//! DPM fast, DPM adaptive, Restart and DDIM CFG++ against their references (fixture
//! from `tools/reference/sampling_extra_sampler_fixtures.py`: k-diffusion's
//! `sample_dpm_fast` / `sample_dpm_adaptive`, A1111's `restart_sampler` and
//! `ddim_cfgpp` restated) on the exact Gaussian-mixture denoiser, with A1111's
//! arguments for txt2img and img2img; 1e-5 relative on every step's x and the output,
//! and the same number of noise draws.

mod common;

use std::collections::HashMap;
use std::ops::ControlFlow;

use candle_core::Tensor;
use common::{gmm_denoise, load, rel_diff, TorchNoise};
use sumi_sampling::denoiser::{Denoiser, DiscreteSchedule, GuidedPrediction};
use sumi_sampling::img2img::img2img_sigmas;
use sumi_sampling::noise::NoiseSampler;
use sumi_sampling::samplers::{
    ddim_img2img, ddim_timesteps, dpm_fast_orders, restart_steps, sample_ddim_cfgpp,
    sample_dpm_adaptive, sample_dpm_fast, sample_restart, AdaptiveInfo, AdaptiveParams,
    SamplerParams, Step,
};
use sumi_sampling::schedules::{self, ScheduleOptions, Scheduler};
use sumi_sampling::Result;

const SHAPE: [usize; 4] = [1, 2, 4, 4];
const STRENGTH: f64 = 0.6;

/// torch CPU noise (seed 1234) with a count of the draws.
struct Counted {
    inner: TorchNoise,
    n: usize,
}

impl Counted {
    fn new() -> Self {
        Self {
            inner: TorchNoise::new(1234, &SHAPE),
            n: 0,
        }
    }
}

impl NoiseSampler for Counted {
    fn sample(&mut self, s: f64, sn: f64) -> Result<Tensor> {
        self.n += 1;
        self.inner.sample(s, sn)
    }
}

fn scalar(f: &HashMap<String, Tensor>, key: &str) -> Vec<f32> {
    f.get(key)
        .unwrap_or_else(|| panic!("fixture lacks {key}"))
        .to_vec1()
        .unwrap()
}

/// Checks a run against `{key}/traj`, `{key}/out` and `{key}/draws`; returns the output error.
fn check(
    f: &HashMap<String, Tensor>,
    key: &str,
    traj: &[Tensor],
    out: &Tensor,
    draws: usize,
) -> f64 {
    let want_traj = f
        .get(&format!("{key}/traj"))
        .unwrap_or_else(|| panic!("fixture lacks {key}/traj"));
    assert_eq!(traj.len(), want_traj.dim(0).unwrap(), "{key}: step count");
    assert!(!traj.is_empty(), "{key}: no steps");
    for (i, x) in traj.iter().enumerate() {
        let e = rel_diff(x, &want_traj.get(i).unwrap());
        assert!(e < 1e-5, "{key}: step {i} relative difference {e}");
    }
    let e = rel_diff(out, &f[&format!("{key}/out")]);
    assert!(e < 1e-5, "{key}: output relative difference {e}");
    let want_draws = scalar(f, &format!("{key}/draws"))[0] as usize;
    assert_eq!(draws, want_draws, "{key}: noise draws");
    e
}

fn recorder(traj: &mut Vec<Tensor>) -> impl FnMut(&Step<'_>) -> ControlFlow<()> + '_ {
    |s: &Step<'_>| {
        traj.push(s.x.clone());
        ControlFlow::Continue(())
    }
}

#[test]
fn dpm_fast_orders_spend_the_budget() {
    assert_eq!(dpm_fast_orders(1), vec![1]);
    assert_eq!(dpm_fast_orders(3), vec![2, 1]);
    assert_eq!(dpm_fast_orders(8), vec![3, 3, 2]);
    assert_eq!(dpm_fast_orders(9), vec![3, 3, 2, 1]);
    assert_eq!(dpm_fast_orders(10), vec![3, 3, 3, 1]);
    for n in 1..40 {
        assert_eq!(dpm_fast_orders(n).iter().sum::<usize>(), n);
    }
}

/// A1111's arguments: txt2img `x = noise · sigmas[0]` (uniform schedule), the model's
/// sigma range and `n = steps`; img2img on the sliced schedule `(sched[-2], sched[0],
/// len − 1)`; eta 1 (and 0), s_noise 1.
#[test]
fn dpm_fast_and_adaptive_match_kdiffusion() {
    let f = load("samplers_extra.safetensors");
    let model = DiscreteSchedule::sd();
    let (x_t, init) = (&f["x_T"], &f["init"]);
    let mut rejected = 0;
    let mut worst = (0f64, String::new());
    let cases = [
        ("fast", 8, 1.0),
        ("fast", 9, 1.0),
        ("fast", 10, 1.0),
        ("fast", 8, 0.0),
        ("adaptive", 8, 1.0),
        ("adaptive", 8, 0.0),
    ];
    for (kind, steps, eta) in cases {
        let sigmas = model.get_sigmas(steps);
        let sched = img2img_sigmas(&sigmas, steps, STRENGTH);
        for mode in ["txt2img", "img2img"] {
            let (x, lo, hi, n) = if mode == "txt2img" {
                let x = x_t.affine(sigmas[0], 0.0).unwrap();
                (x, model.sigma_min(), model.sigma_max(), steps)
            } else {
                let x = (init + x_t.affine(sched[0], 0.0).unwrap()).unwrap();
                (x, sched[sched.len() - 2], sched[0], sched.len() - 1)
            };
            let key = format!("dpm_{kind}/{steps}/eta{eta:.1}/{mode}");
            let range = scalar(&f, &format!("{key}/range"));
            assert_eq!(
                [lo as f32, hi as f32, n as f32],
                range[..],
                "{key}: arguments"
            );
            let p = SamplerParams {
                eta,
                ..Default::default()
            };
            let mut traj = Vec::new();
            let mut noise = Counted::new();
            let mut den = gmm_denoise;
            let out = if kind == "fast" {
                let mut on_step = recorder(&mut traj);
                sample_dpm_fast(&mut den, x, lo, hi, n, &mut noise, &p, &mut on_step).unwrap()
            } else {
                let mut on_step = recorder(&mut traj);
                let a = AdaptiveParams::default();
                let (out, info) =
                    sample_dpm_adaptive(&mut den, x, lo, hi, &mut noise, &p, &a, &mut on_step)
                        .unwrap();
                let want = scalar(&f, &format!("{key}/info"));
                let want = AdaptiveInfo {
                    steps: want[0] as usize,
                    nfe: want[1] as usize,
                    n_accept: want[2] as usize,
                    n_reject: want[3] as usize,
                };
                assert_eq!(info, want, "{key}: steps taken");
                rejected += info.n_reject;
                out
            };
            let e = check(&f, &key, &traj, &out, noise.n);
            if e > worst.0 {
                worst = (e, key);
            }
        }
    }
    assert!(rejected > 0, "no case exercises a rejected step");
    eprintln!(
        "DPM fast/adaptive worst output difference {:e} ({})",
        worst.0, worst.1
    );
}

/// Restart on A1111's default Karras schedule: 8 steps (Heun), 20 (re-scheduled, one
/// restart), 36 and 40 (two restarts), txt2img and the img2img slice.
#[test]
fn restart_matches_a1111() {
    let f = load("samplers_extra.safetensors");
    let model = DiscreteSchedule::sd();
    let opts = ScheduleOptions::for_model(&model);
    let (x_t, init) = (&f["x_T"], &f["init"]);
    let mut worst = 0f64;
    let mut restarts = 0;
    for steps in [8usize, 20, 36, 40] {
        let sigmas = schedules::sigmas(Scheduler::Karras, steps, &model, &opts).unwrap();
        // Sumi's Karras schedule is within an ulp of torch's float32 pow
        let want: Vec<f32> = scalar(&f, &format!("restart/{steps}/sigmas"));
        assert_eq!(sigmas.len(), want.len());
        for (a, b) in sigmas.iter().zip(&want) {
            assert!(
                (a - *b as f64).abs() <= 1e-6 * a,
                "karras {steps}: {a} vs {b}"
            );
        }
        let sched = img2img_sigmas(&sigmas, steps, STRENGTH);
        for (mode, x, sig) in [
            ("txt2img", x_t.affine(sigmas[0], 0.0).unwrap(), &sigmas[..]),
            (
                "img2img",
                (init + x_t.affine(sched[0], 0.0).unwrap()).unwrap(),
                sched,
            ),
        ] {
            let key = format!("restart/{steps}/{mode}");
            // A1111 runs as many Heun steps as the schedule has
            assert_eq!(restart_steps(sig).len(), sig.len() - 1, "{key}");
            let mut traj = Vec::new();
            let mut noise = Counted::new();
            let mut den = gmm_denoise;
            let out = {
                let mut on_step = recorder(&mut traj);
                let p = SamplerParams::default();
                sample_restart(&mut den, x, sig, &mut noise, &p, &mut on_step).unwrap()
            };
            restarts += noise.n;
            worst = worst.max(check(&f, &key, &traj, &out, noise.n));
        }
    }
    assert_eq!(restarts, 7, "restart segments over all cases");
    eprintln!("Restart worst output difference {worst:e}");
}

/// Classifier-free guidance over the mixture: cond = D, uncond = 0.7 · D, scale 7.
struct TwoPrompts;

impl TwoPrompts {
    const SCALE: f64 = 7.0;
}

impl Denoiser for TwoPrompts {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        Ok(self.denoise_cfg_pp(x, sigma, 1.0)?.denoised)
    }

    fn denoise_cfg_pp(&mut self, x: &Tensor, sigma: f64, m: f64) -> Result<GuidedPrediction> {
        let cond = gmm_denoise(x, sigma)?;
        let uncond = cond.affine(0.7, 0.0)?;
        let denoised = (&uncond + ((&cond - &uncond)? * (Self::SCALE * m))?)?;
        Ok(GuidedPrediction { denoised, uncond })
    }
}

/// A1111's DDIM CFG++, eta 0 and 0.5, txt2img and img2img, 10 steps.
#[test]
fn ddim_cfgpp_matches_a1111() {
    let f = load("samplers_extra.safetensors");
    let model = DiscreteSchedule::sd();
    let timesteps = ddim_timesteps(10, 1000).unwrap();
    let mut worst = 0f64;
    for eta in [0.0, 0.5] {
        for mode in ["txt2img", "img2img"] {
            let (x, ts) = if mode == "txt2img" {
                (f["x_T"].clone(), timesteps.clone())
            } else {
                let t_enc = (STRENGTH.min(0.999) * 10.0) as usize;
                let (ts, a, b) = ddim_img2img(&timesteps, t_enc, &model).unwrap();
                let x =
                    (f["init"].affine(a, 0.0).unwrap() + f["x_T"].affine(b, 0.0).unwrap()).unwrap();
                (x, ts)
            };
            let key = format!("ddim_cfgpp/eta{eta:.1}/{mode}");
            let mut traj = Vec::new();
            let mut noise = Counted::new();
            let out = {
                let mut on_step = recorder(&mut traj);
                sample_ddim_cfgpp(
                    &mut TwoPrompts,
                    x,
                    &model,
                    &ts,
                    &mut noise,
                    eta,
                    &mut on_step,
                )
                .unwrap()
            };
            worst = worst.max(check(&f, &key, &traj, &out, noise.n));
        }
    }
    eprintln!("DDIM CFG++ worst output difference {worst:e}");
}

/// A denoiser without guidance cannot run CFG++: an error, not a silent plain DDIM.
#[test]
fn ddim_cfgpp_refuses_a_denoiser_without_uncond() {
    let model = DiscreteSchedule::sd();
    let timesteps = ddim_timesteps(4, 1000).unwrap();
    let x = Tensor::zeros(
        SHAPE.as_slice(),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut den = gmm_denoise;
    let mut noise = Counted::new();
    let mut on_step = |_: &Step<'_>| ControlFlow::Continue(());
    let err = sample_ddim_cfgpp(
        &mut den,
        x,
        &model,
        &timesteps,
        &mut noise,
        0.0,
        &mut on_step,
    )
    .unwrap_err();
    assert!(err.to_string().contains("CFG++"), "{err}");
}

/// Each of the four stops when `on_step` says so and hands back that step's prediction.
#[test]
fn extra_samplers_stop_on_request() {
    let model = DiscreteSchedule::sd();
    let opts = ScheduleOptions::for_model(&model);
    let sigmas = schedules::sigmas(Scheduler::Karras, 24, &model, &opts).unwrap();
    let x = Tensor::ones(
        SHAPE.as_slice(),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let p = SamplerParams::default();
    for which in 0..4 {
        let mut seen = 0usize;
        let mut kept: Option<Tensor> = None;
        let mut on_step = |s: &Step<'_>| {
            seen += 1;
            if s.i == 2 {
                kept = Some(s.denoised.clone());
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let mut den = gmm_denoise;
        let mut noise = Counted::new();
        let xs = x.affine(sigmas[0], 0.0).unwrap();
        let (lo, hi) = (model.sigma_min(), model.sigma_max());
        let out = match which {
            0 => sample_dpm_fast(&mut den, xs, lo, hi, 12, &mut noise, &p, &mut on_step),
            1 => sample_dpm_adaptive(
                &mut den,
                xs,
                lo,
                hi,
                &mut noise,
                &p,
                &AdaptiveParams::default(),
                &mut on_step,
            )
            .map(|(x, _)| x),
            2 => sample_restart(&mut den, xs, &sigmas, &mut noise, &p, &mut on_step),
            _ => sample_ddim_cfgpp(
                &mut TwoPrompts,
                x.clone(),
                &model,
                &ddim_timesteps(10, 1000).unwrap(),
                &mut noise,
                0.0,
                &mut on_step,
            ),
        }
        .unwrap();
        assert_eq!(seen, 3, "sampler {which}: calls before the stop");
        assert_eq!(rel_diff(&out, &kept.unwrap()), 0.0, "sampler {which}");
    }
}
