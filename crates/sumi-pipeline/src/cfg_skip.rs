//! A1111's two speed options that skip the negative prompt's U-Net rows on some denoiser calls
//! (`CFGDenoiser.forward` in A1111 v1.10.1's `modules/sd_samplers_cfg_denoiser.py`):
//!
//! - "Ignore negative prompt during early sampling" (`skip_early_cond`, infotext
//!   `Skip Early CFG`): skipped while `step / total_steps <= skip_early_cond`, where `step`
//!   counts denoiser calls from 0 and `total_steps` is the sampler's `total_steps` of the steps
//!   it launched with (txt2img: the steps; img2img and the hires pass: `t_enc + 1`), doubled for
//!   second-order samplers;
//! - otherwise "Negative Guidance minimum sigma" (`s_min_uncond`, infotext `NGMS`; with
//!   `s_min_uncond_all`, `NGMS all steps`): skipped on odd calls (every call with
//!   `s_min_uncond_all`) when `s_min_uncond > 0` and the noise level is under it. The timestep
//!   samplers (DDIM, PLMS, UniPC) hand A1111's CFG denoiser the U-Net timestep where
//!   k-diffusion hands it sigma, so for them the timestep is compared.
//!
//! A skipped call runs the cond rows only and takes each image's first cond prediction as its
//! uncond one. A1111 adds the infotext keys when a skip first happens, for that image and every
//! later one of the job.

use crate::error::Result;
use crate::infotext::py_float_repr;
use crate::request::bad;

/// The settings (all off by default).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UncondSkip {
    /// `s_min_uncond`: skip the uncond rows on odd calls below this noise level (0 = off).
    pub s_min_uncond: f64,
    /// `s_min_uncond_all`: on every call below it, not only odd ones.
    pub s_min_uncond_all: bool,
    /// `skip_early_cond`: the fraction of the first calls without the uncond rows (0 = off).
    pub skip_early_cond: f64,
}

impl UncondSkip {
    /// Both numbers must be finite; the error names the setting.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("s_min_uncond", self.s_min_uncond),
            ("skip_early_cond", self.skip_early_cond),
        ] {
            if !v.is_finite() {
                return Err(bad(field, format!("{v} is not a finite number")));
            }
        }
        Ok(())
    }

    /// The infotext keys A1111 adds once the skips in `fired` have happened, in the order it
    /// adds them (the early skip can only happen first).
    pub(crate) fn infotext(&self, fired: Fired) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if fired.early {
            out.push((
                "Skip Early CFG".to_string(),
                py_float_repr(self.skip_early_cond),
            ));
        }
        if fired.ngms {
            out.push(("NGMS".to_string(), py_float_repr(self.s_min_uncond)));
            if self.s_min_uncond_all {
                out.push(("NGMS all steps".to_string(), "True".to_string()));
            }
        }
        out
    }
}

/// Which skips have happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fired {
    /// The early skip.
    pub early: bool,
    /// NGMS.
    pub ngms: bool,
}

impl Fired {
    /// Both records together.
    pub fn or(self, other: Fired) -> Fired {
        Fired {
            early: self.early || other.early,
            ngms: self.ngms || other.ngms,
        }
    }
}

/// The rule for one sampler run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SkipRule {
    /// The settings.
    pub settings: UncondSkip,
    /// A1111's `total_steps` of the run (second-order samplers' doubled).
    pub total_steps: usize,
    /// Whether the run's denoiser sees timesteps (DDIM, PLMS, UniPC) rather than sigmas.
    pub by_timestep: bool,
    /// What has fired in this run.
    pub fired: Fired,
}

impl SkipRule {
    /// Whether call `step` (from 0) at noise level `level` (sigma, or the timestep where
    /// [`by_timestep`](Self::by_timestep)) skips the uncond rows; records what fired.
    pub fn skips(&mut self, step: u32, level: f64) -> bool {
        let s = self.settings;
        let total = self.total_steps.max(1) as f64;
        if s.skip_early_cond != 0.0 && f64::from(step) / total <= s.skip_early_cond {
            self.fired.early = true;
            return true;
        }
        if (step % 2 == 1 || s.s_min_uncond_all) && s.s_min_uncond > 0.0 && level < s.s_min_uncond {
            self.fired.ngms = true;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: UncondSkip, total: usize) -> SkipRule {
        SkipRule {
            settings: s,
            total_steps: total,
            by_timestep: false,
            fired: Fired::default(),
        }
    }

    #[test]
    fn early_skip_holds_through_the_fraction_including_its_end() {
        let mut r = rule(
            UncondSkip {
                skip_early_cond: 0.3,
                ..Default::default()
            },
            10,
        );
        let skipped: Vec<bool> = (0..10).map(|i| r.skips(i, 5.0)).collect();
        // 0/10 … 3/10 ≤ 0.3
        assert_eq!(
            skipped,
            [true, true, true, true, false, false, false, false, false, false]
        );
        assert_eq!(
            r.fired,
            Fired {
                early: true,
                ngms: false
            }
        );
    }

    #[test]
    fn ngms_skips_odd_calls_under_the_level_unless_all() {
        let s = UncondSkip {
            s_min_uncond: 2.0,
            ..Default::default()
        };
        let levels = [9.0, 5.0, 1.9, 1.5, 1.0, 0.5];
        let mut r = rule(s, 6);
        let odd: Vec<bool> = (0..6).map(|i| r.skips(i, levels[i as usize])).collect();
        assert_eq!(odd, [false, false, false, true, false, true]);
        let mut r = rule(
            UncondSkip {
                s_min_uncond_all: true,
                ..s
            },
            6,
        );
        let all: Vec<bool> = (0..6).map(|i| r.skips(i, levels[i as usize])).collect();
        assert_eq!(all, [false, false, true, true, true, true]);
        // the level must be strictly under it
        assert!(!rule(s, 6).skips(1, 2.0));
    }

    #[test]
    fn infotext_keys_only_for_what_fired() {
        let s = UncondSkip {
            s_min_uncond: 4.0,
            s_min_uncond_all: true,
            skip_early_cond: 0.25,
        };
        assert!(s.infotext(Fired::default()).is_empty());
        let both = Fired {
            early: true,
            ngms: true,
        };
        let keys: Vec<String> = s
            .infotext(both)
            .into_iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        assert_eq!(
            keys,
            ["Skip Early CFG: 0.25", "NGMS: 4.0", "NGMS all steps: True"]
        );
        assert!(UncondSkip {
            s_min_uncond: f64::NAN,
            ..s
        }
        .validate()
        .is_err());
    }
}
