//! A1111's sampler names: labels, aliases, default schedulers and options
//! (`modules/sd_samplers_kdiffusion.py`, `sd_samplers_timesteps.py`,
//! `sd_samplers_lcm.py`, as served by `/sdapi/v1/samplers`), the legacy
//! combined names ("DPM++ SDE Karras" = DPM++ SDE + Karras), and the sigma
//! schedule a sampler/scheduler pair runs on (A1111 `get_sigmas`).

use std::str::FromStr;

use crate::denoiser::DiscreteSchedule;
use crate::error::{Result, SamplingError};
use crate::schedules::{self, ScheduleOptions, Scheduler, ALL_SCHEDULERS};

/// Every sampler A1111 lists, in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    /// "DPM++ 2M" (`sample_dpmpp_2m`).
    DpmPp2M,
    /// "DPM++ SDE" (`sample_dpmpp_sde`).
    DpmPpSde,
    /// "DPM++ 2M SDE" (`sample_dpmpp_2m_sde`, midpoint).
    DpmPp2MSde,
    /// "DPM++ 2M SDE Heun" (`sample_dpmpp_2m_sde`, solver_type heun).
    DpmPp2MSdeHeun,
    /// "DPM++ 2S a" (`sample_dpmpp_2s_ancestral`).
    DpmPp2SAncestral,
    /// "DPM++ 3M SDE" (`sample_dpmpp_3m_sde`).
    DpmPp3MSde,
    /// "Euler a" (`sample_euler_ancestral`).
    EulerAncestral,
    /// "Euler" (`sample_euler`).
    Euler,
    /// "LMS" (`sample_lms`).
    Lms,
    /// "Heun" (`sample_heun`).
    Heun,
    /// "DPM2" (`sample_dpm_2`).
    Dpm2,
    /// "DPM2 a" (`sample_dpm_2_ancestral`).
    Dpm2Ancestral,
    /// "DPM fast" (`sample_dpm_fast`).
    DpmFast,
    /// "DPM adaptive" (`sample_dpm_adaptive`).
    DpmAdaptive,
    /// "Restart" (A1111's `restart_sampler`).
    Restart,
    /// "DDIM" (A1111 timestep sampler).
    Ddim,
    /// "DDIM CFG++" (A1111 timestep sampler `ddim_cfgpp`).
    DdimCfgPp,
    /// "PLMS" (A1111 timestep sampler).
    Plms,
    /// "UniPC" (A1111 timestep sampler).
    UniPc,
    /// "LCM" (`sample_lcm`).
    Lcm,
}

/// A1111's per-sampler options (the dict in its sampler tables).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SamplerOptions {
    /// Scheduler used when the user picks "Automatic".
    pub scheduler: Option<Scheduler>,
    /// Build the schedule for steps + 1 and drop the next-to-last sigma.
    pub discard_next_to_last_sigma: bool,
    /// Two model evaluations per step.
    pub second_order: bool,
    /// Honors the eta noise seed delta (ENSD) setting.
    pub uses_ensd: bool,
    /// Draws its noise from a Brownian tree.
    pub brownian_noise: bool,
    /// `solver_type="heun"` for DPM++ 2M SDE.
    pub solver_heun: bool,
}

/// Every sampler, in A1111's order (`/sdapi/v1/samplers`).
pub const ALL_SAMPLERS: [SamplerKind; 20] = [
    SamplerKind::DpmPp2M,
    SamplerKind::DpmPpSde,
    SamplerKind::DpmPp2MSde,
    SamplerKind::DpmPp2MSdeHeun,
    SamplerKind::DpmPp2SAncestral,
    SamplerKind::DpmPp3MSde,
    SamplerKind::EulerAncestral,
    SamplerKind::Euler,
    SamplerKind::Lms,
    SamplerKind::Heun,
    SamplerKind::Dpm2,
    SamplerKind::Dpm2Ancestral,
    SamplerKind::DpmFast,
    SamplerKind::DpmAdaptive,
    SamplerKind::Restart,
    SamplerKind::Ddim,
    SamplerKind::DdimCfgPp,
    SamplerKind::Plms,
    SamplerKind::UniPc,
    SamplerKind::Lcm,
];

impl SamplerKind {
    /// A1111's label ("DPM++ 2M", "Euler a", …).
    pub fn label(self) -> &'static str {
        match self {
            Self::DpmPp2M => "DPM++ 2M",
            Self::DpmPpSde => "DPM++ SDE",
            Self::DpmPp2MSde => "DPM++ 2M SDE",
            Self::DpmPp2MSdeHeun => "DPM++ 2M SDE Heun",
            Self::DpmPp2SAncestral => "DPM++ 2S a",
            Self::DpmPp3MSde => "DPM++ 3M SDE",
            Self::EulerAncestral => "Euler a",
            Self::Euler => "Euler",
            Self::Lms => "LMS",
            Self::Heun => "Heun",
            Self::Dpm2 => "DPM2",
            Self::Dpm2Ancestral => "DPM2 a",
            Self::DpmFast => "DPM fast",
            Self::DpmAdaptive => "DPM adaptive",
            Self::Restart => "Restart",
            Self::Ddim => "DDIM",
            Self::DdimCfgPp => "DDIM CFG++",
            Self::Plms => "PLMS",
            Self::UniPc => "UniPC",
            Self::Lcm => "LCM",
        }
    }

    /// A1111's aliases (`k_dpmpp_2m`, …).
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::DpmPp2M => &["k_dpmpp_2m"],
            Self::DpmPpSde => &["k_dpmpp_sde"],
            Self::DpmPp2MSde => &["k_dpmpp_2m_sde"],
            Self::DpmPp2MSdeHeun => &["k_dpmpp_2m_sde_heun"],
            Self::DpmPp2SAncestral => &["k_dpmpp_2s_a"],
            Self::DpmPp3MSde => &["k_dpmpp_3m_sde"],
            Self::EulerAncestral => &["k_euler_a", "k_euler_ancestral"],
            Self::Euler => &["k_euler"],
            Self::Lms => &["k_lms"],
            Self::Heun => &["k_heun"],
            Self::Dpm2 => &["k_dpm_2"],
            Self::Dpm2Ancestral => &["k_dpm_2_a"],
            Self::DpmFast => &["k_dpm_fast"],
            Self::DpmAdaptive => &["k_dpm_ad"],
            Self::Restart => &["restart"],
            Self::Ddim => &["ddim"],
            Self::DdimCfgPp => &["ddim_cfgpp"],
            Self::Plms => &["plms"],
            Self::UniPc => &["unipc"],
            Self::Lcm => &["k_lcm"],
        }
    }

    /// A1111's options for this sampler.
    pub fn options(self) -> SamplerOptions {
        let o = SamplerOptions::default();
        match self {
            Self::DpmPp2M => SamplerOptions {
                scheduler: Some(Scheduler::Karras),
                ..o
            },
            Self::DpmPpSde => SamplerOptions {
                scheduler: Some(Scheduler::Karras),
                second_order: true,
                brownian_noise: true,
                ..o
            },
            Self::DpmPp2MSde => SamplerOptions {
                scheduler: Some(Scheduler::Exponential),
                brownian_noise: true,
                ..o
            },
            Self::DpmPp2MSdeHeun => SamplerOptions {
                scheduler: Some(Scheduler::Exponential),
                brownian_noise: true,
                solver_heun: true,
                ..o
            },
            Self::DpmPp2SAncestral => SamplerOptions {
                scheduler: Some(Scheduler::Karras),
                uses_ensd: true,
                second_order: true,
                ..o
            },
            Self::DpmPp3MSde => SamplerOptions {
                scheduler: Some(Scheduler::Exponential),
                discard_next_to_last_sigma: true,
                brownian_noise: true,
                ..o
            },
            Self::EulerAncestral => SamplerOptions {
                uses_ensd: true,
                ..o
            },
            Self::Heun => SamplerOptions {
                second_order: true,
                ..o
            },
            Self::Dpm2 => SamplerOptions {
                scheduler: Some(Scheduler::Karras),
                discard_next_to_last_sigma: true,
                second_order: true,
                ..o
            },
            Self::Dpm2Ancestral => SamplerOptions {
                scheduler: Some(Scheduler::Karras),
                discard_next_to_last_sigma: true,
                uses_ensd: true,
                second_order: true,
                ..o
            },
            Self::DpmFast | Self::DpmAdaptive => SamplerOptions {
                uses_ensd: true,
                ..o
            },
            Self::Restart => SamplerOptions {
                scheduler: Some(Scheduler::Karras),
                second_order: true,
                ..o
            },
            Self::Euler
            | Self::Lms
            | Self::Ddim
            | Self::DdimCfgPp
            | Self::Plms
            | Self::UniPc
            | Self::Lcm => o,
        }
    }

    /// The scheduler "Automatic" means for this sampler (`None`: the model's uniform sigmas).
    pub fn default_scheduler(self) -> Option<Scheduler> {
        self.options().scheduler
    }

    fn valid_list() -> String {
        ALL_SAMPLERS.map(|s| s.label()).join(", ")
    }
}

impl FromStr for SamplerKind {
    type Err = SamplingError;

    /// A label or alias, case-insensitively ("DPM++ 2M", "k_dpmpp_2m", "euler A").
    /// Legacy combined names are handled by [`parse_sampler_and_scheduler`].
    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim();
        ALL_SAMPLERS
            .into_iter()
            .find(|k| {
                k.label().eq_ignore_ascii_case(wanted)
                    || k.aliases().iter().any(|a| a.eq_ignore_ascii_case(wanted))
            })
            .ok_or_else(|| SamplingError::UnknownSampler {
                name: s.to_string(),
                valid: Self::valid_list(),
            })
    }
}

/// A1111's `get_sampler_and_scheduler`: splits a legacy combined name
/// ("DPM++ 2M Karras") into sampler and scheduler, the suffix winning over
/// `scheduler`; a scheduler equal to the sampler's default becomes Automatic
/// (A1111's `convert_automatic`). Unlike A1111, which silently falls back to
/// its first sampler, an unknown sampler name is an error listing the valid ones.
pub fn parse_sampler_and_scheduler(
    sampler: &str,
    scheduler: Option<&str>,
) -> Result<(SamplerKind, Scheduler)> {
    let mut found = match scheduler {
        Some(s) if !s.trim().is_empty() => s.parse::<Scheduler>()?,
        _ => Scheduler::Automatic,
    };
    let mut name = sampler.trim().to_string();
    for sch in ALL_SCHEDULERS {
        let options = std::iter::once(sch.label()).chain(sch.aliases().iter().copied());
        for option in options {
            let suffix = format!(" {option}");
            if name.len() > suffix.len()
                && name
                    .to_ascii_lowercase()
                    .ends_with(&suffix.to_ascii_lowercase())
            {
                found = sch;
                name.truncate(name.len() - suffix.len());
                break;
            }
        }
    }
    let kind: SamplerKind = name.parse().map_err(|_| SamplingError::UnknownSampler {
        name: sampler.to_string(),
        valid: SamplerKind::valid_list(),
    })?;
    if kind.default_scheduler() == Some(found) {
        found = Scheduler::Automatic;
    }
    Ok((kind, found))
}

/// The scheduler that actually runs: Automatic resolves to the sampler's
/// default, or Uniform when it has none.
pub fn effective_scheduler(sampler: SamplerKind, scheduler: Scheduler) -> Scheduler {
    match scheduler {
        Scheduler::Automatic => sampler.default_scheduler().unwrap_or(Scheduler::Uniform),
        other => other,
    }
}

/// A1111 `KDiffusionSampler.get_sigmas`: the schedule for `steps` (one more
/// when the sampler discards the next-to-last sigma, which is then dropped).
/// `always_discard_next_to_last_sigma` is A1111's option of that name.
pub fn sampler_sigmas(
    sampler: SamplerKind,
    scheduler: Scheduler,
    steps: usize,
    model: &DiscreteSchedule,
    opts: &ScheduleOptions,
    always_discard_next_to_last_sigma: bool,
) -> Result<Vec<f64>> {
    let discard = sampler.options().discard_next_to_last_sigma || always_discard_next_to_last_sigma;
    let n = steps + usize::from(discard);
    let mut sigmas = schedules::sigmas(effective_scheduler(sampler, scheduler), n, model, opts)?;
    if discard && sigmas.len() >= 2 {
        let last = sigmas.len() - 1;
        sigmas.remove(last - 1);
    }
    Ok(sigmas)
}
