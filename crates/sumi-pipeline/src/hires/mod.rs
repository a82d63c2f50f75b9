//! The hires fix (A1111's `StableDiffusionProcessingTxt2Img` with `enable_hr`): after the
//! txt2img pass, its latents (or its decoded pictures) are upscaled to a larger size and an
//! img2img pass runs there. This file holds the request's part, its checks, the target size as
//! A1111's `calculate_target_resolution` computes it and the infotext keys; the pass itself is
//! in `pass.rs`, the latent resize in `upscale.rs`.

mod pass;
mod upscale;

use sumi_sampling::plan::InfotextLabels;
use sumi_sampling::{SamplerKind, Scheduler};

use crate::error::Result;
use crate::infotext::Number;
use crate::request::{bad, Request, MAX_PROMPT_BYTES, MAX_SIDE, MAX_STEPS};

pub(crate) use pass::HiresRun;
pub use upscale::{HiresUpscaler, LATENT_UPSCALE_MODES};

/// A1111's hires fix settings (the `hr_*` fields of its txt2img request).
#[derive(Debug, Clone, PartialEq)]
pub struct Hires {
    /// `hr_scale`: the first pass's size times this (used when both resizes are 0).
    pub scale: f64,
    /// `hr_resize_x`: target width (0 = from the height, or `scale` when both are 0).
    pub resize_x: u32,
    /// `hr_resize_y`: target height.
    pub resize_y: u32,
    /// `hr_second_pass_steps`: steps of the second pass (0 = the first pass's steps).
    pub second_pass_steps: u32,
    /// `denoising_strength` of the second pass (A1111's UI default 0.7).
    pub denoising_strength: f64,
    /// `hr_upscaler`: a latent mode (`Latent`, `Latent (bicubic)`, …) or an image upscaler
    /// (`None`, `Lanczos`, `Nearest`, a model file's name); `None` is A1111's default, `Latent`.
    pub upscaler: Option<String>,
    /// `hr_sampler_name` (`None` = the first pass's).
    pub sampler: Option<SamplerKind>,
    /// `hr_scheduler` (`None` = the first pass's).
    pub scheduler: Option<Scheduler>,
    /// `hr_prompt` (empty = the first pass's prompt).
    pub prompt: String,
    /// `hr_negative_prompt` (empty = the first pass's).
    pub negative_prompt: String,
}

impl Default for Hires {
    /// A1111's UI defaults: 2×, same steps, strength 0.7, the `Latent` upscaler.
    fn default() -> Self {
        Self {
            scale: 2.0,
            resize_x: 0,
            resize_y: 0,
            second_pass_steps: 0,
            denoising_strength: 0.7,
            upscaler: None,
            sampler: None,
            scheduler: None,
            prompt: String::new(),
            negative_prompt: String::new(),
        }
    }
}

/// The size the first pass is upscaled to, and the crop that follows (in latent pixels), as
/// A1111's `calculate_target_resolution` computes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HiresTarget {
    /// `hr_upscale_to_x`.
    pub width: u32,
    /// `hr_upscale_to_y`.
    pub height: u32,
    /// `truncate_x`: latent columns cut (half before, half after) when both resizes are set.
    pub truncate_x: u32,
    /// `truncate_y`: latent rows cut.
    pub truncate_y: u32,
}

impl HiresTarget {
    /// The second pass's latent size `(height, width)` after the crop.
    pub fn latent_size(&self) -> (usize, usize) {
        let h = (self.height / 8).saturating_sub(self.truncate_y);
        let w = (self.width / 8).saturating_sub(self.truncate_x);
        (h as usize, w as usize)
    }
}

impl Hires {
    /// The target of a first pass of `width × height` pixels (A1111's arithmetic: `int()` of
    /// the scaled size, floor divisions for the resizes).
    /// A first pass of no pixels has no target (all zeros).
    pub fn target(&self, width: u32, height: u32) -> HiresTarget {
        let (w, h) = (u64::from(width), u64::from(height));
        if w == 0 || h == 0 {
            return HiresTarget {
                width: 0,
                height: 0,
                truncate_x: 0,
                truncate_y: 0,
            };
        }
        let (rx, ry) = (u64::from(self.resize_x), u64::from(self.resize_y));
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let (mut tx, mut ty) = (0, 0);
        let (x, y) = if rx == 0 && ry == 0 {
            let scaled = |v: u64| {
                let s = v as f64 * self.scale;
                if s.is_finite() && s > 0.0 {
                    s.min(u32::MAX as f64) as u64
                } else {
                    0
                }
            };
            (scaled(w), scaled(h))
        } else if ry == 0 {
            (rx, rx * h / w)
        } else if rx == 0 {
            (ry * w / h, ry)
        } else {
            let src_ratio = w as f64 / h as f64;
            let dst_ratio = rx as f64 / ry as f64;
            let (x, y) = if src_ratio < dst_ratio {
                (rx, rx * h / w)
            } else {
                (ry * w / h, ry)
            };
            tx = x.saturating_sub(rx) / 8;
            ty = y.saturating_sub(ry) / 8;
            (x, y)
        };
        HiresTarget {
            width: clamp(x),
            height: clamp(y),
            truncate_x: clamp(tx),
            truncate_y: clamp(ty),
        }
    }

    /// The second pass's steps (`hr_second_pass_steps or steps`).
    pub fn steps(&self, req: &Request) -> u32 {
        if self.second_pass_steps == 0 {
            req.steps
        } else {
            self.second_pass_steps
        }
    }

    /// The second pass's prompt (`hr_prompt or prompt`).
    pub fn prompt<'a>(&'a self, req: &'a Request) -> &'a str {
        if self.prompt.is_empty() {
            &req.prompt
        } else {
            &self.prompt
        }
    }

    /// The second pass's negative prompt.
    pub fn negative_prompt<'a>(&'a self, req: &'a Request) -> &'a str {
        if self.negative_prompt.is_empty() {
            &req.negative_prompt
        } else {
            &self.negative_prompt
        }
    }

    /// The second pass's sampler.
    pub fn sampler(&self, req: &Request) -> SamplerKind {
        self.sampler.unwrap_or(req.sampler)
    }

    /// The second pass's scheduler (A1111: `hr_scheduler` else the first pass's).
    pub fn scheduler(&self, req: &Request) -> Scheduler {
        self.scheduler.unwrap_or(req.scheduler)
    }

    /// Checks the settings against their limits and the first pass; the error names the field.
    pub(crate) fn validate(&self, req: &Request) -> Result<()> {
        if !self.scale.is_finite() || !(0.0..=16.0).contains(&self.scale) {
            return Err(bad("hr-scale", format!("{} is outside 0..=16", self.scale)));
        }
        for (field, v) in [
            ("hr-resize-x", self.resize_x),
            ("hr-resize-y", self.resize_y),
        ] {
            if v > MAX_SIDE {
                return Err(bad(field, format!("{v} is outside 0..={MAX_SIDE} pixels")));
            }
        }
        if self.second_pass_steps > MAX_STEPS {
            return Err(bad(
                "hr-second-pass-steps",
                format!("{} is outside 0..={MAX_STEPS}", self.second_pass_steps),
            ));
        }
        let s = self.denoising_strength;
        if !s.is_finite() || !(0.0..=1.0).contains(&s) {
            return Err(bad("denoising-strength", format!("{s} is outside 0..=1")));
        }
        for (field, p) in [
            ("hr-prompt", &self.prompt),
            ("hr-negative-prompt", &self.negative_prompt),
        ] {
            if p.len() > MAX_PROMPT_BYTES {
                return Err(bad(
                    field,
                    format!(
                        "{} bytes is longer than the limit of {MAX_PROMPT_BYTES} bytes",
                        p.len()
                    ),
                ));
            }
        }
        let t = self.target(req.width, req.height);
        let (lh, lw) = t.latent_size();
        if t.width > MAX_SIDE || t.height > MAX_SIDE {
            return Err(bad(
                "hr-scale",
                format!(
                    "the hires size {}x{} is over the limit of {MAX_SIDE} pixels a side",
                    t.width, t.height
                ),
            ));
        }
        if lh < 8 || lw < 8 {
            return Err(bad(
                "hr-scale",
                format!(
                    "the hires size {}x{} is under the least of 64 pixels a side",
                    lw * 8,
                    lh * 8
                ),
            ));
        }
        Ok(())
    }

    /// The infotext keys A1111 adds for the hires fix, in its order (`Denoising strength` has
    /// its own slot and is written by the caller).
    pub fn infotext_params(&self, req: &Request) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut put = |k: &str, v: String| out.push((k.to_string(), v));
        if let Some(s) = self.sampler {
            if s.label() != req.sampler.label() {
                put("Hires sampler", s.label().to_string());
            }
        }
        if self.prompt(req) != req.prompt {
            put("Hires prompt", self.prompt.clone());
        }
        if self.negative_prompt(req) != req.negative_prompt {
            put("Hires negative prompt", self.negative_prompt.clone());
        }
        // `Hires schedule type`: the second pass's schedule label where its sampler has a
        // schedule and the label is not the first pass's
        let first = InfotextLabels::of(req.sampler, req.scheduler).schedule_type;
        let second = InfotextLabels::of(self.sampler(req), self.scheduler(req)).schedule_type;
        if second != "Automatic" && second != first {
            put("Hires schedule type", second.to_string());
        }
        if self.resize_x == 0 && self.resize_y == 0 {
            let scale = if self.scale.fract() == 0.0 && self.scale.abs() < 1e15 {
                Number::Int(self.scale as i64)
            } else {
                Number::Float(self.scale)
            };
            put("Hires upscale", scale.to_string());
        } else {
            put(
                "Hires resize",
                format!("{}x{}", self.resize_x, self.resize_y),
            );
        }
        if self.second_pass_steps != 0 {
            put("Hires steps", self.second_pass_steps.to_string());
        }
        if let Some(u) = &self.upscaler {
            put("Hires upscaler", u.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hires(scale: f64, rx: u32, ry: u32) -> Hires {
        Hires {
            scale,
            resize_x: rx,
            resize_y: ry,
            ..Default::default()
        }
    }

    #[test]
    fn target_resolution_as_a1111_computes_it() {
        // int(512 * 1.3) = 665 (not a multiple of 8: the latent is 83 wide)
        let t = hires(1.3, 0, 0).target(512, 512);
        assert_eq!(
            (t.width, t.height, t.truncate_x, t.truncate_y),
            (665, 665, 0, 0)
        );
        assert_eq!(t.latent_size(), (83, 83));
        assert_eq!(hires(2.0, 100, 0).target(0, 512).latent_size(), (0, 0));
        // width only: height follows the first pass's ratio, floored
        let t = hires(2.0, 1000, 0).target(512, 768);
        assert_eq!((t.width, t.height), (1000, 1500));
        let t = hires(2.0, 0, 1000).target(512, 768);
        assert_eq!((t.width, t.height), (666, 1000));
        // both: fill the box, then crop the overflow in latent pixels, half before, half after
        let t = hires(2.0, 1024, 512).target(512, 512);
        assert_eq!(
            (t.width, t.height, t.truncate_x, t.truncate_y),
            (1024, 1024, 0, 64)
        );
        assert_eq!(t.latent_size(), (64, 128));
        let t = hires(2.0, 700, 900).target(640, 512);
        // src 1.25 ≥ dst 0.777…: x = 900·640//512 = 1125, crop (1125 − 700)//8 = 53
        assert_eq!(
            (t.width, t.height, t.truncate_x, t.truncate_y),
            (1125, 900, 53, 0)
        );
    }

    #[test]
    fn infotext_keys_in_a1111_order() {
        let req = Request {
            prompt: "a cat".into(),
            sampler: SamplerKind::DpmPp2M,
            ..Default::default()
        };
        let h = Hires {
            scale: 2.0,
            second_pass_steps: 10,
            upscaler: Some("Latent (bicubic)".into()),
            sampler: Some(SamplerKind::EulerAncestral),
            prompt: "a dog".into(),
            ..Default::default()
        };
        let keys: Vec<String> = h
            .infotext_params(&req)
            .into_iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        assert_eq!(
            keys,
            [
                "Hires sampler: Euler a",
                "Hires prompt: a dog",
                "Hires upscale: 2",
                "Hires steps: 10",
                "Hires upscaler: Latent (bicubic)"
            ]
        );
        // a fractional scale as Python writes it
        let h = Hires {
            scale: 1.5,
            ..Default::default()
        };
        assert_eq!(
            h.infotext_params(&req),
            [("Hires upscale".to_string(), "1.5".to_string())]
        );
        let h = Hires {
            resize_x: 1024,
            resize_y: 768,
            scheduler: Some(Scheduler::Exponential),
            ..Default::default()
        };
        let keys: Vec<(String, String)> = h.infotext_params(&req);
        assert_eq!(
            keys,
            [
                ("Hires schedule type".to_string(), "Exponential".to_string()),
                ("Hires resize".to_string(), "1024x768".to_string())
            ]
        );
    }

    #[test]
    fn limits_name_their_field() {
        let req = Request::default();
        let err = |h: Hires| match h.validate(&req) {
            Err(crate::PipelineError::Request { field, .. }) => field,
            other => panic!("expected a request error, got {other:?}"),
        };
        assert_eq!(err(hires(9.0, 0, 0)), "hr-scale");
        assert_eq!(err(hires(0.1, 0, 0)), "hr-scale");
        assert_eq!(err(hires(2.0, 5000, 0)), "hr-resize-x");
        assert!(hires(2.0, 0, 0).validate(&req).is_ok());
    }
}
