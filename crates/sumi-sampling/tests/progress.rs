//! Every sampler calls `on_step` once per step and stops when asked.

mod common;

use std::ops::ControlFlow;

use candle_core::{Device, Tensor};
use common::{gmm_denoise, TorchNoise};
use sumi_sampling::brownian::BrownianTreeNoiseSampler;
use sumi_sampling::denoiser::DiscreteSchedule;
use sumi_sampling::names::{SamplerKind, ALL_SAMPLERS};
use sumi_sampling::noise::{NoiseSampler, NoiseSource};
use sumi_sampling::samplers::{
    ddim_timesteps, sample, sample_ddim, sample_unipc, SamplerParams, Step,
};
use sumi_sampling::schedules::{self, ScheduleOptions, Scheduler};

const SHAPE: [usize; 4] = [1, 2, 4, 4];

fn noise_for(kind: SamplerKind, sigmas: &[f64]) -> Box<dyn NoiseSampler> {
    if kind.options().brownian_noise {
        let (lo, hi) = BrownianTreeNoiseSampler::sigma_range(sigmas);
        Box::new(
            BrownianTreeNoiseSampler::new(lo, hi, &[7], &SHAPE, NoiseSource::Nv, &Device::Cpu)
                .unwrap(),
        )
    } else {
        Box::new(TorchNoise::new(7, &SHAPE))
    }
}

#[test]
fn on_step_is_called_once_per_step_and_can_cancel() {
    let model = DiscreteSchedule::sd();
    let opts = ScheduleOptions::for_model(&model);
    let sigmas = schedules::sigmas(Scheduler::Karras, 6, &model, &opts).unwrap();
    let x = Tensor::ones(SHAPE.as_slice(), candle_core::DType::F32, &Device::Cpu)
        .unwrap()
        .affine(sigmas[0], 0.0)
        .unwrap();
    let params = SamplerParams {
        s_churn: 0.5,
        ..Default::default()
    };
    for kind in ALL_SAMPLERS
        .into_iter()
        // the timestep samplers and DPM fast / adaptive have their own entry points
        // (tests/extra_samplers.rs covers the last three)
        .filter(|k| {
            !matches!(
                k,
                SamplerKind::Ddim
                    | SamplerKind::DdimCfgPp
                    | SamplerKind::Plms
                    | SamplerKind::UniPc
                    | SamplerKind::DpmFast
                    | SamplerKind::DpmAdaptive
            )
        })
    {
        // full run: one call per step, indices in order
        let mut seen = Vec::new();
        let mut on_step = |s: &Step<'_>| {
            seen.push((s.i, s.steps));
            ControlFlow::Continue(())
        };
        let mut den = gmm_denoise;
        let mut noise = noise_for(kind, &sigmas);
        sample(
            kind,
            &mut den,
            x.clone(),
            &sigmas,
            noise.as_mut(),
            &params,
            &mut on_step,
        )
        .unwrap();
        assert_eq!(
            seen,
            (0..6).map(|i| (i, 6)).collect::<Vec<_>>(),
            "{}",
            kind.label()
        );

        // cancel at step 2: no further model calls, the step's denoised comes back
        let mut calls = 0usize;
        let mut last_denoised: Option<Tensor> = None;
        let mut den = |x: &Tensor, s: f64| {
            calls += 1;
            gmm_denoise(x, s)
        };
        let mut on_step = |s: &Step<'_>| {
            if s.i == 2 {
                last_denoised = Some(s.denoised.clone());
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let mut noise = noise_for(kind, &sigmas);
        let out = sample(
            kind,
            &mut den,
            x.clone(),
            &sigmas,
            noise.as_mut(),
            &params,
            &mut on_step,
        )
        .unwrap();
        let per_step = if kind.options().second_order { 2 } else { 1 };
        assert!(
            calls <= 2 * per_step + 1,
            "{}: {calls} model calls after cancel at step 2",
            kind.label()
        );
        let want = last_denoised.unwrap();
        let diff: f32 = (out - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(diff, 0.0, "{}", kind.label());
    }
}

#[test]
fn ddim_reports_and_cancels() {
    let model = DiscreteSchedule::sd();
    let ts = ddim_timesteps(8, 1000).unwrap();
    let x = Tensor::ones(SHAPE.as_slice(), candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut n = 0;
    let mut on_step = |_: &Step<'_>| {
        n += 1;
        if n == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let mut den = gmm_denoise;
    sample_ddim(
        &mut den,
        x,
        &model,
        &ts,
        &mut TorchNoise::new(1, &SHAPE),
        0.0,
        &mut on_step,
    )
    .unwrap();
    assert_eq!(n, 3);

    let mut n = 0;
    let mut on_step = |s: &Step<'_>| {
        assert_eq!(s.i, n);
        n += 1;
        ControlFlow::Continue(())
    };
    let x = Tensor::ones(SHAPE.as_slice(), candle_core::DType::F32, &Device::Cpu).unwrap();
    sample_unipc(&mut den, x.clone(), &model, 8, None, 3, &mut on_step).unwrap();
    assert_eq!(n, 8, "UniPC reports once per step");
    let mut on_step = |_: &Step<'_>| ControlFlow::Continue(());
    assert!(sample_unipc(&mut den, x, &model, 2, None, 3, &mut on_step).is_err());
}

#[test]
fn bad_inputs_are_errors() {
    let x = Tensor::zeros(SHAPE.as_slice(), candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut den = gmm_denoise;
    let mut on_step = |_: &Step<'_>| ControlFlow::Continue(());
    let p = SamplerParams::default();
    let mut noise = TorchNoise::new(1, &SHAPE);
    for sigmas in [vec![], vec![1.0], vec![1.0, f64::NAN], vec![-1.0, 0.0]] {
        assert!(sample(
            SamplerKind::Euler,
            &mut den,
            x.clone(),
            &sigmas,
            &mut noise,
            &p,
            &mut on_step
        )
        .is_err());
    }
    let err = sample(
        SamplerKind::DpmFast,
        &mut den,
        x.clone(),
        &[1.0, 0.0],
        &mut noise,
        &p,
        &mut on_step,
    )
    .unwrap_err();
    assert!(err.to_string().contains("DPM fast"), "{err}");
    let err = sample(
        SamplerKind::Ddim,
        &mut den,
        x.clone(),
        &[1.0, 0.0],
        &mut noise,
        &p,
        &mut on_step,
    )
    .unwrap_err();
    assert!(err.to_string().contains("timestep sampler"), "{err}");
    assert!("GPU".parse::<NoiseSource>().is_ok() && "nv".parse::<NoiseSource>().is_ok());
    assert!("TPU"
        .parse::<NoiseSource>()
        .unwrap_err()
        .to_string()
        .contains("GPU, CPU, NV"));
    let model = DiscreteSchedule::sd();
    let opts = ScheduleOptions::for_model(&model);
    assert!(schedules::sigmas(Scheduler::Karras, 0, &model, &opts).is_err());
    assert!(ddim_timesteps(0, 1000).is_err());
    assert!(ddim_timesteps(1001, 1000).is_err());
}
