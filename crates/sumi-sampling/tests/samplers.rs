//! Every sampler against k-diffusion trajectories (fixture from
//! `tools/reference/sampling_sampler_fixtures.py`): exact Gaussian-mixture
//! denoiser, karras / exponential / normal schedules, txt2img and A1111's
//! img2img slicing; 1e-5 relative on every step's x and the output.

mod common;

use std::ops::ControlFlow;

use candle_core::Tensor;
use common::{gmm_denoise, load, rel_diff, Replay, TorchNoise};
use sumi_sampling::denoiser::DiscreteSchedule;
use sumi_sampling::img2img::img2img_sigmas;
use sumi_sampling::names::SamplerKind;
use sumi_sampling::noise::NoiseSampler;
use sumi_sampling::samplers::{sample, SamplerParams};
use sumi_sampling::schedules::{self, ScheduleOptions, Scheduler};

const SHAPE: [usize; 4] = [1, 2, 4, 4];
const STEPS: usize = 8;
const STRENGTH: f64 = 0.6;

fn case(name: &str) -> (SamplerKind, SamplerParams, bool) {
    let d = SamplerParams::default();
    match name {
        "euler" => (SamplerKind::Euler, d, false),
        "euler_churn" => (
            SamplerKind::Euler,
            SamplerParams {
                s_churn: 2.0,
                s_tmin: 0.5,
                s_tmax: 10.0,
                s_noise: 1.003,
                ..d
            },
            false,
        ),
        "euler_ancestral" => (SamplerKind::EulerAncestral, d, false),
        "euler_ancestral_eta" => (
            SamplerKind::EulerAncestral,
            SamplerParams {
                eta: 0.7,
                s_noise: 0.9,
                ..d
            },
            false,
        ),
        "heun" => (SamplerKind::Heun, d, false),
        "heun_churn" => (
            SamplerKind::Heun,
            SamplerParams { s_churn: 1.0, ..d },
            false,
        ),
        "dpm_2" => (SamplerKind::Dpm2, d, false),
        "dpm_2_ancestral" => (SamplerKind::Dpm2Ancestral, d, false),
        "lms" => (SamplerKind::Lms, d, false),
        "dpmpp_2s_ancestral" => (SamplerKind::DpmPp2SAncestral, d, false),
        "dpmpp_2m" => (SamplerKind::DpmPp2M, d, false),
        "dpmpp_sde" => (SamplerKind::DpmPpSde, d, true),
        "dpmpp_2m_sde" => (SamplerKind::DpmPp2MSde, d, true),
        "dpmpp_2m_sde_heun" => (SamplerKind::DpmPp2MSdeHeun, d, true),
        "dpmpp_3m_sde" => (SamplerKind::DpmPp3MSde, d, true),
        "lcm" => (SamplerKind::Lcm, d, false),
        other => panic!("unknown fixture sampler {other}"),
    }
}

fn run(
    kind: SamplerKind,
    params: &SamplerParams,
    x: Tensor,
    sigmas: &[f64],
    noise: &mut dyn NoiseSampler,
) -> (Tensor, Vec<Tensor>) {
    let mut traj = Vec::new();
    let mut on_step = |s: &sumi_sampling::samplers::Step<'_>| {
        traj.push(s.x.clone());
        ControlFlow::Continue(())
    };
    let mut den = gmm_denoise;
    let out = sample(kind, &mut den, x, sigmas, noise, params, &mut on_step).expect("sampling");
    (out, traj)
}

#[test]
fn samplers_match_kdiffusion() {
    let f = load("samplers.safetensors");
    let model = DiscreteSchedule::sd();
    let opts = ScheduleOptions::for_model(&model);
    let x_t = &f["x_T"];
    let init = &f["init"];
    let mut names: Vec<&str> = f
        .keys()
        .filter_map(|k| k.strip_suffix("/karras/txt2img/out"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 16);
    let mut worst = (0.0f64, String::new());
    for sched in ["karras", "exponential", "normal"] {
        let scheduler: Scheduler = sched.parse().unwrap();
        let sigmas = schedules::sigmas(scheduler, STEPS, &model, &opts).unwrap();
        let want: Vec<f32> = f[&format!("sigmas/{sched}")].to_vec1().unwrap();
        for (a, b) in sigmas.iter().zip(&want) {
            assert!(
                (a - *b as f64).abs() <= 1e-6 * a.abs(),
                "{sched} sigma {a} vs {b}"
            );
        }
        let i2i = img2img_sigmas(&sigmas, STEPS, STRENGTH);
        for name in &names {
            let (kind, params, brownian) = case(name);
            for (mode, x, sig) in [
                ("txt2img", x_t.affine(sigmas[0], 0.0).unwrap(), &sigmas[..]),
                (
                    "img2img",
                    (init + x_t.affine(i2i[0], 0.0).unwrap()).unwrap(),
                    i2i,
                ),
            ] {
                let key = format!("{name}/{sched}/{mode}");
                let (out, traj) = if brownian {
                    let draws = f[&format!("{key}/draws")]
                        .chunk(f[&format!("{key}/draws")].dim(0).unwrap(), 0)
                        .unwrap();
                    let mut replay = Replay {
                        draws: draws.into_iter().map(|d| d.squeeze(0).unwrap()).collect(),
                        next: 0,
                    };
                    let r = run(kind, &params, x, sig, &mut replay);
                    assert_eq!(replay.next, replay.draws.len(), "{key}: all draws consumed");
                    r
                } else {
                    run(kind, &params, x, sig, &mut TorchNoise::new(1234, &SHAPE))
                };
                let want_traj = &f[&format!("{key}/traj")];
                assert_eq!(traj.len(), want_traj.dim(0).unwrap(), "{key}: step count");
                for (i, x) in traj.iter().enumerate() {
                    let w = want_traj.narrow(0, i, 1).unwrap().squeeze(0).unwrap();
                    let e = rel_diff(x, &w);
                    assert!(e < 1e-5, "{key}: step {i} relative difference {e}");
                }
                let e = rel_diff(&out, &f[&format!("{key}/out")]);
                assert!(e < 1e-5, "{key}: output relative difference {e}");
                if e > worst.0 {
                    worst = (e, key.clone());
                }
            }
        }
    }
    eprintln!("worst output difference: {:e} ({})", worst.0, worst.1);
}

/// A1111's DDIM (timestep sampler) on the same denoiser, eta 0 and 0.5,
/// txt2img and img2img; PLMS on the same inputs.
#[test]
fn ddim_matches_a1111() {
    use sumi_sampling::samplers::{ddim_img2img, ddim_timesteps, sample_ddim, sample_plms};
    let f = load("samplers.safetensors");
    let model = DiscreteSchedule::sd();
    let timesteps = ddim_timesteps(10, 1000).unwrap();
    let want_ts: Vec<f32> = f["ddim/timesteps"].to_vec1().unwrap();
    assert_eq!(
        timesteps,
        want_ts.iter().map(|t| *t as usize).collect::<Vec<_>>()
    );
    for eta in ["0.0", "0.5"] {
        for mode in ["txt2img", "img2img"] {
            let key = format!("ddim/eta{eta}/{mode}");
            let (x, ts) = if mode == "txt2img" {
                (f["x_T"].clone(), timesteps.clone())
            } else {
                let t_enc = (STRENGTH.min(0.999) * 10.0) as usize;
                let (ts, a, b) = ddim_img2img(&timesteps, t_enc, &model).unwrap();
                (
                    (f["init"].affine(a, 0.0).unwrap() + f["x_T"].affine(b, 0.0).unwrap()).unwrap(),
                    ts,
                )
            };
            let mut traj = Vec::new();
            let mut on_step = |s: &sumi_sampling::samplers::Step<'_>| {
                traj.push(s.x.clone());
                ControlFlow::Continue(())
            };
            let mut den = gmm_denoise;
            let mut noise = TorchNoise::new(1234, &SHAPE);
            let x0 = x.clone();
            let out = sample_ddim(
                &mut den,
                x,
                &model,
                &ts,
                &mut noise,
                eta.parse().unwrap(),
                &mut on_step,
            )
            .unwrap();
            let want_traj = &f[&format!("{key}/traj")];
            assert_eq!(traj.len(), want_traj.dim(0).unwrap(), "{key}: steps");
            for (i, x) in traj.iter().enumerate() {
                let e = rel_diff(x, &want_traj.get(i).unwrap());
                assert!(e < 1e-5, "{key}: step {i} relative difference {e}");
            }
            let e = rel_diff(&out, &f[&format!("{key}/out")]);
            assert!(e < 1e-5, "{key}: output relative difference {e}");
            if eta == "0.0" {
                let key = format!("plms/{mode}");
                let mut traj = Vec::new();
                let mut on_step = |s: &sumi_sampling::samplers::Step<'_>| {
                    traj.push(s.x.clone());
                    ControlFlow::Continue(())
                };
                let out = sample_plms(&mut den, x0.clone(), &model, &ts, &mut on_step).unwrap();
                let want_traj = &f[&format!("{key}/traj")];
                assert_eq!(traj.len(), want_traj.dim(0).unwrap(), "{key}: steps");
                for (i, x) in traj.iter().enumerate() {
                    let e = rel_diff(x, &want_traj.get(i).unwrap());
                    assert!(e < 1e-5, "{key}: step {i} relative difference {e}");
                }
                let e = rel_diff(&out, &f[&format!("{key}/out")]);
                assert!(e < 1e-5, "{key}: output relative difference {e}");
            }
        }
    }
}

/// UniPC (A1111 defaults: bh1, order 3, time-uniform) against the restated
/// reference, 10 and 7 steps (7 gives A1111 8 timesteps), txt2img and img2img.
#[test]
fn unipc_matches_reference() {
    use sumi_sampling::samplers::{
        ddim_img2img, ddim_timesteps, sample_unipc, unipc_img2img_t_start,
    };
    let f = load("samplers.safetensors");
    let model = DiscreteSchedule::sd();
    for steps in [10usize, 7] {
        let timesteps = ddim_timesteps(steps, 1000).unwrap();
        for mode in ["txt2img", "img2img"] {
            let key = format!("unipc/{steps}/{mode}");
            let (x, n, t_start) = if mode == "txt2img" {
                (f["x_T"].clone(), timesteps.len(), None)
            } else {
                let t_enc = (STRENGTH.min(0.999) * steps as f64) as usize;
                let (ts, a, b) = ddim_img2img(&timesteps, t_enc, &model).unwrap();
                let x =
                    (f["init"].affine(a, 0.0).unwrap() + f["x_T"].affine(b, 0.0).unwrap()).unwrap();
                (
                    x,
                    ts.len(),
                    Some(unipc_img2img_t_start(&timesteps, t_enc).unwrap()),
                )
            };
            let mut traj = Vec::new();
            let mut on_step = |s: &sumi_sampling::samplers::Step<'_>| {
                traj.push(s.x.clone());
                ControlFlow::Continue(())
            };
            let mut den = gmm_denoise;
            let out = sample_unipc(&mut den, x, &model, n, t_start, 3, &mut on_step).unwrap();
            let want_traj = &f[&format!("{key}/traj")];
            assert_eq!(traj.len(), want_traj.dim(0).unwrap(), "{key}: steps");
            for (i, x) in traj.iter().enumerate() {
                let e = rel_diff(x, &want_traj.get(i).unwrap());
                assert!(e < 1e-5, "{key}: step {i} relative difference {e}");
            }
            let e = rel_diff(&out, &f[&format!("{key}/out")]);
            assert!(e < 1e-5, "{key}: output relative difference {e}");
        }
    }
}
