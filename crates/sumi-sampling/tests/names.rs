//! A1111's sampler and scheduler names (`/sdapi/v1/samplers`, `/sdapi/v1/schedulers`),
//! legacy combined names, and the schedule a sampler runs on.

use sumi_sampling::denoiser::DiscreteSchedule;
use sumi_sampling::names::{
    parse_sampler_and_scheduler, sampler_sigmas, SamplerKind, ALL_SAMPLERS,
};
use sumi_sampling::schedules::{self, ScheduleOptions, Scheduler, ALL_SCHEDULERS};
use sumi_sampling::SamplingError;

/// A1111 1.10's `/sdapi/v1/samplers`: (name, aliases, scheduler option).
const A1111_SAMPLERS: [(&str, &[&str], Option<&str>); 20] = [
    ("DPM++ 2M", &["k_dpmpp_2m"], Some("karras")),
    ("DPM++ SDE", &["k_dpmpp_sde"], Some("karras")),
    ("DPM++ 2M SDE", &["k_dpmpp_2m_sde"], Some("exponential")),
    (
        "DPM++ 2M SDE Heun",
        &["k_dpmpp_2m_sde_heun"],
        Some("exponential"),
    ),
    ("DPM++ 2S a", &["k_dpmpp_2s_a"], Some("karras")),
    ("DPM++ 3M SDE", &["k_dpmpp_3m_sde"], Some("exponential")),
    ("Euler a", &["k_euler_a", "k_euler_ancestral"], None),
    ("Euler", &["k_euler"], None),
    ("LMS", &["k_lms"], None),
    ("Heun", &["k_heun"], None),
    ("DPM2", &["k_dpm_2"], Some("karras")),
    ("DPM2 a", &["k_dpm_2_a"], Some("karras")),
    ("DPM fast", &["k_dpm_fast"], None),
    ("DPM adaptive", &["k_dpm_ad"], None),
    ("Restart", &["restart"], Some("karras")),
    ("DDIM", &["ddim"], None),
    ("DDIM CFG++", &["ddim_cfgpp"], None),
    ("PLMS", &["plms"], None),
    ("UniPC", &["unipc"], None),
    ("LCM", &["k_lcm"], None),
];

/// A1111 1.10's `/sdapi/v1/schedulers`: (name, label, aliases, default_rho).
const A1111_SCHEDULERS: [(&str, &str, &[&str], f64); 12] = [
    ("automatic", "Automatic", &[], -1.0),
    ("uniform", "Uniform", &[], -1.0),
    ("karras", "Karras", &[], 7.0),
    ("exponential", "Exponential", &[], -1.0),
    ("polyexponential", "Polyexponential", &[], 1.0),
    ("sgm_uniform", "SGM Uniform", &["SGMUniform"], -1.0),
    ("kl_optimal", "KL Optimal", &[], -1.0),
    ("align_your_steps", "Align Your Steps", &[], -1.0),
    ("simple", "Simple", &[], -1.0),
    ("normal", "Normal", &[], -1.0),
    ("ddim", "DDIM", &[], -1.0),
    ("beta", "Beta", &[], -1.0),
];

#[test]
fn sampler_table_is_a1111s() {
    for (kind, (label, aliases, sched)) in ALL_SAMPLERS.iter().zip(A1111_SAMPLERS) {
        assert_eq!(kind.label(), label);
        assert_eq!(kind.aliases(), aliases);
        assert_eq!(kind.default_scheduler().map(|s| s.name()), sched, "{label}");
        assert_eq!(label.parse::<SamplerKind>().unwrap(), *kind);
        for a in aliases {
            assert_eq!(a.parse::<SamplerKind>().unwrap(), *kind);
        }
    }
    assert!(SamplerKind::DpmPp3MSde.options().discard_next_to_last_sigma);
    assert!(SamplerKind::Dpm2Ancestral.options().uses_ensd);
    assert!(SamplerKind::DpmPpSde.options().brownian_noise);
    assert!(SamplerKind::DpmPp2MSdeHeun.options().solver_heun);
}

#[test]
fn scheduler_table_is_a1111s() {
    for (s, (name, label, aliases, rho)) in ALL_SCHEDULERS.iter().zip(A1111_SCHEDULERS) {
        assert_eq!(
            (s.name(), s.label(), s.aliases(), s.default_rho()),
            (name, label, aliases, rho)
        );
        assert_eq!(name.parse::<Scheduler>().unwrap(), *s);
        assert_eq!(label.parse::<Scheduler>().unwrap(), *s);
    }
    assert_eq!(
        "SGMUniform".parse::<Scheduler>().unwrap(),
        Scheduler::SgmUniform
    );
}

#[test]
fn legacy_combined_names_split() {
    let cases = [
        (
            "DPM++ SDE Karras",
            None,
            SamplerKind::DpmPpSde,
            Scheduler::Automatic,
        ),
        (
            "DPM++ 2M Karras",
            None,
            SamplerKind::DpmPp2M,
            Scheduler::Automatic,
        ),
        (
            "Euler a Karras",
            None,
            SamplerKind::EulerAncestral,
            Scheduler::Karras,
        ),
        (
            "DPM++ 2M SDE Exponential",
            None,
            SamplerKind::DpmPp2MSde,
            Scheduler::Automatic,
        ),
        (
            "DPM++ 2M SDE Karras",
            None,
            SamplerKind::DpmPp2MSde,
            Scheduler::Karras,
        ),
        (
            "DPM++ 2M",
            Some("Exponential"),
            SamplerKind::DpmPp2M,
            Scheduler::Exponential,
        ),
        (
            "DPM++ 2M",
            Some("Karras"),
            SamplerKind::DpmPp2M,
            Scheduler::Automatic,
        ),
        ("LMS Karras", None, SamplerKind::Lms, Scheduler::Karras),
        (
            "Euler SGMUniform",
            None,
            SamplerKind::Euler,
            Scheduler::SgmUniform,
        ),
        (
            "Euler a",
            Some("Align Your Steps"),
            SamplerKind::EulerAncestral,
            Scheduler::AlignYourSteps,
        ),
        (
            "k_dpmpp_2m",
            Some(""),
            SamplerKind::DpmPp2M,
            Scheduler::Automatic,
        ),
    ];
    for (name, sched, kind, want) in cases {
        assert_eq!(
            parse_sampler_and_scheduler(name, sched).unwrap(),
            (kind, want),
            "{name} / {sched:?}"
        );
    }
}

#[test]
fn unknown_names_are_refused_with_the_valid_list() {
    let err = "Euler b".parse::<SamplerKind>().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SamplingError::UnknownSampler { .. }));
    assert!(
        msg.contains("Euler b") && msg.contains("DPM++ 2M SDE Heun") && msg.contains("LCM"),
        "{msg}"
    );
    let err = parse_sampler_and_scheduler("Foo Karras", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Foo Karras") && err.contains("Euler a"),
        "{err}"
    );
    let err = "karras2".parse::<Scheduler>().unwrap_err().to_string();
    assert!(
        err.contains("karras2") && err.contains("Align Your Steps"),
        "{err}"
    );
    let err = parse_sampler_and_scheduler("Euler", Some("bogus"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn automatic_and_discard_next_to_last_sigma() {
    let model = DiscreteSchedule::sd();
    let opts = ScheduleOptions::for_model(&model);
    // DPM++ 2M + Automatic = Karras
    let a = sampler_sigmas(
        SamplerKind::DpmPp2M,
        Scheduler::Automatic,
        20,
        &model,
        &opts,
        false,
    )
    .unwrap();
    assert_eq!(
        a,
        schedules::sigmas(Scheduler::Karras, 20, &model, &opts).unwrap()
    );
    // Euler + Automatic = the model's uniform sigmas
    let e = sampler_sigmas(
        SamplerKind::Euler,
        Scheduler::Automatic,
        20,
        &model,
        &opts,
        false,
    )
    .unwrap();
    assert_eq!(
        e,
        schedules::sigmas(Scheduler::Uniform, 20, &model, &opts).unwrap()
    );
    // DPM++ 3M SDE: exponential for 21 steps, next-to-last dropped
    let m = sampler_sigmas(
        SamplerKind::DpmPp3MSde,
        Scheduler::Automatic,
        20,
        &model,
        &opts,
        false,
    )
    .unwrap();
    let full = schedules::sigmas(Scheduler::Exponential, 21, &model, &opts).unwrap();
    assert_eq!(m.len(), 21);
    assert_eq!(&m[..20], &full[..20]);
    assert_eq!(m[20], 0.0);
    // the A1111 option forces it for any sampler
    let f = sampler_sigmas(
        SamplerKind::Euler,
        Scheduler::Karras,
        10,
        &model,
        &opts,
        true,
    )
    .unwrap();
    assert_eq!(f.len(), 11);
}
