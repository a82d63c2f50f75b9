//! The sampler plan: the schedule, img2img start, step counts and refusals A1111 has, for
//! every sampler through one entry.

use candle_core::{Device, Tensor};
use sumi_sampling::denoiser::GuidedPrediction;
use sumi_sampling::img2img::img2img_sigmas;
use sumi_sampling::names::{sampler_sigmas, ALL_SAMPLERS};
use sumi_sampling::schedules::ScheduleOptions;
use sumi_sampling::{
    Denoiser, DiscreteSchedule, NoiseSampler, NoiseSource, Plan, PlanRequest, SamplerKind,
    SamplerNoise, Scheduler, Strength,
};

fn request(sampler: SamplerKind, steps: usize, strength: Option<f64>) -> PlanRequest {
    PlanRequest {
        sampler,
        scheduler: Scheduler::Automatic,
        steps,
        img2img: strength.map(|s| Strength {
            denoising: s,
            exact_steps: false,
        }),
    }
}

fn scalar(x: &Tensor) -> f32 {
    x.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
}

#[test]
fn k_diffusion_img2img_runs_the_last_t_enc_plus_one_steps() {
    let model = DiscreteSchedule::sd();
    let plan = Plan::new(&request(SamplerKind::DpmPp2M, 20, Some(0.75)), &model).unwrap();
    let full = sampler_sigmas(
        SamplerKind::DpmPp2M,
        Scheduler::Automatic,
        20,
        &model,
        &ScheduleOptions::for_model(&model),
        false,
    )
    .unwrap();
    // t_enc = int(0.75 · 20) = 15: 16 steps on the last 17 sigmas
    assert_eq!(plan.sigmas(), img2img_sigmas(&full, 20, 0.75));
    assert_eq!(plan.steps(), 16);
    assert_eq!(plan.scheduler(), Scheduler::Karras);
    assert!(!plan.blends_input());
    // start: init + noise · σ_start
    let one = Tensor::ones((1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    let two = (&one * 2.0).unwrap();
    let x = plan.start(&one, Some(&two)).unwrap();
    assert!((scalar(&x) as f64 - (2.0 + plan.sigmas()[0])).abs() < 1e-5);
    // txt2img: noise · σ_max, every step
    let plan = Plan::new(&request(SamplerKind::Euler, 20, None), &model).unwrap();
    assert_eq!(plan.steps(), 20);
    let x = plan.start(&one, None).unwrap();
    assert!((scalar(&x) - 14.614_642).abs() < 1e-4, "{}", scalar(&x));
}

#[test]
fn timestep_samplers_start_in_the_variance_preserving_scale() {
    let model = DiscreteSchedule::sd();
    let one = Tensor::ones((1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    for kind in [
        SamplerKind::Ddim,
        SamplerKind::DdimCfgPp,
        SamplerKind::Plms,
        SamplerKind::UniPc,
    ] {
        let plan = Plan::new(&request(kind, 20, None), &model).unwrap();
        assert!(plan.blends_input(), "{kind:?}");
        assert!(plan.sigmas().is_empty());
        // txt2img: the noise itself
        assert_eq!(scalar(&plan.start(&one, None).unwrap()), 1.0);
        // img2img at 0.5: t_enc = 10, noised to timesteps[10] = 501: √ᾱ·init + √(1−ᾱ)·noise
        let plan = Plan::new(&request(kind, 20, Some(0.5)), &model).unwrap();
        let a = model.alphas_cumprod()[501];
        let x = scalar(&plan.start(&one, Some(&one)).unwrap()) as f64;
        assert!(
            (x - (a.sqrt() + (1.0 - a).sqrt())).abs() < 1e-6,
            "{kind:?}: {x}"
        );
    }
}

#[test]
fn unipc_refuses_fewer_steps_than_its_order() {
    let model = DiscreteSchedule::sd();
    let err = Plan::new(&request(SamplerKind::UniPc, 2, None), &model).unwrap_err();
    assert!(err.to_string().contains("at least 3"), "{err}");
    // img2img at 0.1 of 20 steps runs t_enc = 2 timesteps
    let err = Plan::new(&request(SamplerKind::UniPc, 20, Some(0.1)), &model).unwrap_err();
    assert!(err.to_string().contains("runs 2"), "{err}");
    assert!(Plan::new(&request(SamplerKind::UniPc, 3, None), &model).is_ok());
}

#[test]
fn dpm_solvers_start_from_the_schedule_and_solve_over_a1111s_range() {
    let model = DiscreteSchedule::sd();
    let one = Tensor::ones((1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    for kind in [SamplerKind::DpmFast, SamplerKind::DpmAdaptive] {
        let plan = Plan::new(&request(kind, 10, None), &model).unwrap();
        // "Automatic" is the model's uniform schedule; the start is noise · its first sigma
        assert_eq!(plan.scheduler(), Scheduler::Uniform);
        assert_eq!(plan.steps(), 10);
        let x = scalar(&plan.start(&one, None).unwrap()) as f64;
        assert!((x - plan.sigmas()[0]).abs() < 1e-5);
        // img2img: n = the length of the schedule's part, minus one
        let plan = Plan::new(&request(kind, 10, Some(0.5)), &model).unwrap();
        assert_eq!(plan.sigmas().len(), 7);
        assert_eq!(plan.steps(), 6);
    }
}

/// A guided denoiser that predicts zero, conditionally and not.
struct ToZero {
    calls: usize,
}

impl Denoiser for ToZero {
    fn denoise(&mut self, x: &Tensor, _sigma: f64) -> sumi_sampling::Result<Tensor> {
        self.calls += 1;
        Ok((x * 0.0)?)
    }

    fn denoise_cfg_pp(
        &mut self,
        x: &Tensor,
        sigma: f64,
        _scale_multiplier: f64,
    ) -> sumi_sampling::Result<GuidedPrediction> {
        let zero = self.denoise(x, sigma)?;
        Ok(GuidedPrediction {
            denoised: zero.clone(),
            uncond: zero,
        })
    }
}

/// Noise of zeros.
struct Zero;
impl NoiseSampler for Zero {
    fn sample(&mut self, _: f64, _: f64) -> sumi_sampling::Result<Tensor> {
        Ok(Tensor::zeros(
            (1, 4, 2, 2),
            candle_core::DType::F32,
            &Device::Cpu,
        )?)
    }
}

#[test]
fn every_a1111_sampler_runs_through_the_plan() {
    let model = DiscreteSchedule::sd();
    let noise = Tensor::ones((1, 4, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    for kind in ALL_SAMPLERS {
        for strength in [None, Some(0.75)] {
            let plan = Plan::new(&request(kind, 8, strength), &model).unwrap();
            let x = plan
                .start(&noise, strength.map(|_| &noise))
                .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            let mut den = ToZero { calls: 0 };
            let mut steps = 0usize;
            let out = plan
                .run(
                    &mut den,
                    x,
                    SamplerNoise {
                        rng: &mut Zero,
                        seeds: &[7],
                        source: NoiseSource::Cpu,
                    },
                    &mut |_| {
                        steps += 1;
                        std::ops::ControlFlow::Continue(())
                    },
                )
                .unwrap_or_else(|e| panic!("{kind:?} {strength:?}: {e}"));
            assert!(den.calls > 0 && steps > 0, "{kind:?} {strength:?}");
            // a denoiser that predicts zero everywhere leaves (nearly) zero latents
            let max = out.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            let max = max.to_scalar::<f32>().unwrap();
            assert!(max < 0.2, "{kind:?} {strength:?}: {max}");
        }
    }
}

#[test]
fn exact_steps_at_a_tiny_strength_is_refused_not_allocated() {
    let model = DiscreteSchedule::sd();
    let mut req = request(SamplerKind::Euler, 20, Some(1e-300));
    if let Some(s) = &mut req.img2img {
        s.exact_steps = true;
    }
    let err = Plan::new(&req, &model).unwrap_err();
    assert!(
        err.to_string().contains("over the limit of 100000"),
        "{err}"
    );
    // at strength 0.01 the schedule is 2,000 steps: allowed, running 20 of them
    if let Some(s) = &mut req.img2img {
        s.denoising = 0.01;
    }
    let plan = Plan::new(&req, &model).unwrap();
    assert_eq!(plan.steps(), 20);
}
