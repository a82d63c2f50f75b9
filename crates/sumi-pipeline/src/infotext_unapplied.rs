//! Which keys of a pasted A1111 infotext Sumi does not apply, so that the front ends can name
//! each one (a picture made from such an infotext may differ from the original, and the user is
//! told why rather than left to guess).
//!
//! A key is quiet when a front end fills a request from it ([`APPLIED`]), when it only records
//! what was used and changes nothing by itself ([`RECORDS`]), or when its value is A1111's
//! default, the one that changes nothing ([`NEUTRAL`]: the settings A1111 v1.10.1 writes into
//! infotexts, `OptionInfo(..., infotext=...)`, with their defaults). Every other key is named,
//! extensions' keys included.

use crate::infotext::Parameters;

/// Keys both front ends (`--infotext`/`--from-png`, the API's `infotext`) fill a request from
/// (`Hypernet` and its strength become a `<hypernet:…>` tag of the prompt, as A1111 pastes them).
pub const APPLIED: [&str; 33] = [
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Seed",
    "Size-1",
    "Size-2",
    "Variation seed",
    "Variation seed strength",
    "Denoising strength",
    "Clip skip",
    "RNG",
    "Hires upscale",
    "Hires upscaler",
    "Hires steps",
    "Hires resize-1",
    "Hires resize-2",
    "Hires sampler",
    "Hires schedule type",
    "Hires prompt",
    "Hires negative prompt",
    "Hypernet",
    "Hypernet strength",
    "NGMS",
    "NGMS all steps",
    "Skip Early CFG",
    "Token merging ratio",
    "Token merging ratio hr",
    "Refiner",
    "Refiner switch at",
    "Refiner switch by sampling steps",
    "Hires refiner",
    "Hires checkpoint",
];

/// Keys that record what was used (checked elsewhere where Sumi can check them) and change
/// nothing by themselves.
pub const RECORDS: [&str; 11] = [
    "Model",
    "Model hash",
    "VAE",
    "VAE hash",
    "Version",
    "User",
    "Hashes",
    "TI hashes",
    "Lora hashes",
    "Init image hash",
    "Image CFG scale",
];

/// Keys with the values that change nothing (A1111 v1.10.1's defaults), compared as numbers
/// where both parse as numbers.
pub const NEUTRAL: [(&str, &str); 31] = [
    ("Face restoration", ""),
    ("Emphasis", "Original"),
    ("Tiling", "False"),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("Conditional mask weight", "1"),
    ("Noise multiplier", "1"),
    ("Extra noise", "0"),
    ("Pad conds", "False"),
    ("Pad conds v0", "False"),
    ("Old prompt editing timelines", "False"),
    ("Downcast alphas_cumprod", "False"),
    ("Eta DDIM", "0"),
    ("Eta", "1"),
    ("Sigma churn", "0"),
    ("Sigma tmin", "0"),
    ("Sigma tmax", "0"),
    ("Sigma noise", "1"),
    ("Schedule min sigma", "0"),
    ("Schedule max sigma", "0"),
    ("Schedule rho", "0"),
    ("ENSD", "0"),
    ("Discard penultimate sigma", "False"),
    ("SGM noise multiplier", "False"),
    ("UniPC variant", "bh1"),
    ("UniPC skip type", "time_uniform"),
    ("UniPC order", "3"),
    ("UniPC lower order final", "True"),
    ("Noise Schedule", "Default"),
    ("Beta scheduler alpha", "0.6"),
    ("Beta scheduler beta", "0.6"),
];

/// Whether `a` and `b` say the same: equal text, or equal numbers.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    a == b || matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
}

/// The keys of `p` that Sumi does not apply, with their values (joined back `WxH` where A1111
/// split them), in the infotext's order.
pub fn unapplied(p: &Parameters) -> Vec<(String, String)> {
    p.pairs()
        .into_iter()
        .filter(|(k, v)| {
            let split = |s: &str| APPLIED.contains(&s) || RECORDS.contains(&s);
            if split(k) || (split(&format!("{k}-1")) && split(&format!("{k}-2"))) {
                return false;
            }
            !NEUTRAL.iter().any(|(n, d)| n == k && same(v, d))
        })
        .collect()
}

/// One warning per key of `p` that Sumi does not apply.
pub fn unapplied_warnings(p: &Parameters) -> Vec<String> {
    unapplied(p)
        .into_iter()
        .map(|(k, v)| unapplied_warning(&k, &v))
        .collect()
}

/// The warning for key `k` of value `v` that Sumi does not apply (the value cut at 200
/// characters).
pub fn unapplied_warning(k: &str, v: &str) -> String {
    let v: String = v.chars().take(200).collect();
    format!("the infotext's `{k}: {v}` is not applied: the picture may differ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infotext::parse_generation_parameters;

    #[test]
    fn applied_records_and_default_values_are_quiet_the_rest_is_named() {
        let p = parse_generation_parameters(
            "a cat\nNegative prompt: dog\nSteps: 2, Sampler: Euler a, Schedule type: Karras, \
             CFG scale: 7, Seed: 1, Size: 64x64, Model hash: abc, Model: m, Clip skip: 2, \
             ENSD: 31337, Eta: 1.0, Tiling: True, Emphasis: Original, Hires upscale: 2, \
             Hires resize: 0x0, Seed resize from: 32x32, Token merging ratio: 0, \
             Face restoration: CodeFormer, Template: \"a {b|c}\", Lora hashes: \"x: 1\", \
             Version: v1.10.1",
        );
        assert_eq!(
            unapplied(&p),
            [
                ("ENSD", "31337"),
                ("Tiling", "True"),
                ("Seed resize from", "32x32"),
                ("Face restoration", "CodeFormer"),
                ("Template", "a {b|c}"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(
            unapplied_warnings(&p)[0],
            "the infotext's `ENSD: 31337` is not applied: the picture may differ"
        );
        // a plain infotext as Sumi writes it has nothing to name
        let plain = parse_generation_parameters(
            "x\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 5, \
             Size: 512x512, Model hash: 0123456789, Model: tiny, Version: sumi 0.1.0",
        );
        assert_eq!(unapplied(&plain), []);
    }

    #[test]
    fn the_neutral_values_are_a1111s_defaults() {
        assert!(same("1.0", "1"));
        assert!(same(" 0 ", "0.0"));
        assert!(!same("0.5", "1"));
        assert!(!same("True", "False"));
        for (k, _) in NEUTRAL {
            assert!(!APPLIED.contains(&k) && !RECORDS.contains(&k), "{k}");
        }
    }
}
