//! A1111's infotext: the text A1111 v1.10.1 stores in a PNG's `parameters` chunk, written and
//! parsed exactly as A1111 does.
//!
//! Writing follows `create_infotext` in `modules/processing.py`:
//!
//! ```text
//! {prompt}
//! Negative prompt: {negative prompt}          (only when it is not empty)
//! Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, …
//! ```
//!
//! the whole `.strip()`ped. The parameters come in the order of A1111's `generation_params` dict
//! ([`SLOTS`]): the keys of `p.extra_generation_params` that have no slot of their own follow
//! `Tiling` and precede `Version` and `User`. A key whose value is absent (`None`) is left out; a
//! value is quoted by `infotext_utils.quote`: when its text contains `,`, `:` or a newline it is
//! written as `json.dumps(value, ensure_ascii=False)`. Numbers are written as Python's `str()`
//! writes them ([`Number`]): `7` for the integer the UI's slider gives, `7.0` for the float the
//! API gives, `1e-05`.
//!
//! Parsing follows `parse_generation_parameters` in `modules/infotext_utils.py`
//! ([`parse_generation_parameters`]); [`Infotext::parse`] then reads the typed fields.

use std::fmt;

use crate::error::{PipelineError, Result};

/// A number as A1111 holds it: Python `int` or `float`, so that it is written back the same way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// A Python `int`, written `7`.
    Int(i64),
    /// A Python `float`, written as `repr` does: `7.0`, `0.75`, `1e-05`.
    Float(f64),
}

impl Number {
    /// The value as a float.
    pub fn value(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }

    /// Reads `text` as Python would print it: an integer literal gives [`Number::Int`], anything
    /// else a finite [`Number::Float`].
    pub fn parse(text: &str) -> Option<Number> {
        let t = text.trim();
        if let Ok(i) = t.parse::<i64>() {
            return Some(Number::Int(i));
        }
        t.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Number::Float)
    }
}

impl From<f64> for Number {
    fn from(f: f64) -> Self {
        Number::Float(f)
    }
}

impl From<i64> for Number {
    fn from(i: i64) -> Self {
        Number::Int(i)
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(i) => write!(f, "{i}"),
            Number::Float(x) => f.write_str(&py_float_repr(*x)),
        }
    }
}

/// Python's `repr(float)`: the shortest digits that read back to `x`, in fixed notation when the
/// decimal exponent lies in [−4, 16), else `d.ddde±XX`; integral values keep a `.0`.
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let e = format!("{:e}", x.abs());
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let sign = if x.is_sign_negative() { "-" } else { "" };
    let decpt = exp + 1; // value = 0.DIGITS × 10^decpt
    let n = digits.len() as i32;
    if (-4 < decpt) && (decpt <= 16) {
        let body = if decpt <= 0 {
            format!("0.{}{}", "0".repeat((-decpt) as usize), digits)
        } else if decpt >= n {
            format!("{}{}.0", digits, "0".repeat((decpt - n) as usize))
        } else {
            format!(
                "{}.{}",
                &digits[..decpt as usize],
                &digits[decpt as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let m = if n > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        let es = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{es}{:02}", exp.abs())
    }
}

/// `json.dumps(text, ensure_ascii=False)`: quotes, `\\`, `\"`, `\n`, `\r`, `\t`, `\b`, `\f`,
/// other control characters as `\u00xx`; everything else as is.
pub fn json_dumps(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A1111's `infotext_utils.quote`: JSON-quotes a value containing `,`, `:` or a newline.
pub fn quote(value: &str) -> String {
    if value.contains([',', '\n', ':']) {
        json_dumps(value)
    } else {
        value.to_string()
    }
}

/// Python's `str.isspace` for one character (Rust's `White_Space` plus U+001C–U+001F).
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

/// The keys of A1111 v1.10.1's `generation_params` dict in `create_infotext`, in order. Keys of
/// `extra_generation_params` without a slot here are written between `Tiling` and `Version`.
pub const SLOTS: [&str; 28] = [
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Image CFG scale",
    "Seed",
    "Face restoration",
    "Size",
    "Model hash",
    "Model",
    "FP8 weight",
    "Cache FP16 weight for LoRA",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Seed resize from",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "ENSD",
    "Token merging ratio",
    "Token merging ratio hr",
    "Init image hash",
    "RNG",
    "Tiling",
    "Version",
    "User",
];

/// Where `Version` sits in [`SLOTS`]: extra keys go just before it.
const VERSION_SLOT: usize = 26;

/// A generation's parameters as A1111 v1.10.1 records them.
///
/// Fields Sumi sets are typed; every other key (A1111's own, e.g. `Hires upscale`, or an
/// extension's) is kept in [`Infotext::other`] with its unquoted text and written back in its
/// place, so parse → write reproduces A1111's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Infotext {
    /// The prompt (the first lines).
    pub prompt: String,
    /// The negative prompt; empty for none (then no `Negative prompt:` line).
    pub negative_prompt: String,
    /// `Steps`.
    pub steps: u32,
    /// `Sampler`: A1111's sampler name (`DPM++ 2M`, `Euler a`, …).
    pub sampler: String,
    /// `Schedule type`: the scheduler's label as A1111 records it: the one chosen, or where
    /// "Automatic" was chosen, the sampler's default (`Karras` for `DPM++ 2M`), or `Automatic`
    /// where the sampler has none (`Euler a`).
    pub schedule_type: String,
    /// `CFG scale`.
    pub cfg_scale: Number,
    /// `Seed` (of this image: seed + index within the job).
    pub seed: i64,
    /// `Size`: the width asked for (written as given, not floored to 8).
    pub width: u32,
    /// `Size`: the height asked for.
    pub height: u32,
    /// `Model hash`: A1111's 10-digit short hash.
    pub model_hash: Option<String>,
    /// `Model`: the checkpoint's file name without its extension.
    pub model: Option<String>,
    /// `VAE hash`: short hash of an external VAE file.
    pub vae_hash: Option<String>,
    /// `VAE`: the external VAE's file name.
    pub vae: Option<String>,
    /// `Variation seed` and `Variation seed strength`, written when the strength is not 0.
    pub variation: Option<(i64, Number)>,
    /// `Seed resize from` (`WxH`).
    pub seed_resize_from: Option<(u32, u32)>,
    /// `Denoising strength` (img2img).
    pub denoising_strength: Option<Number>,
    /// `Clip skip`, written when > 1.
    pub clip_skip: u32,
    /// `RNG`: `GPU` (not written), `CPU` or `NV`.
    pub rng: String,
    /// `Version` (A1111 writes its git tag, `v1.10.1`).
    pub version: Option<String>,
    /// Every other key with its (unquoted) value, in the order read or added.
    pub other: Vec<(String, String)>,
}

impl Default for Infotext {
    /// A1111's UI defaults: 20 steps, DPM++ 2M (Automatic → Karras), CFG 7, 512×512, RNG GPU.
    fn default() -> Self {
        Infotext {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 20,
            sampler: "DPM++ 2M".into(),
            schedule_type: "Automatic".into(),
            cfg_scale: Number::Int(7),
            seed: -1,
            width: 512,
            height: 512,
            model_hash: None,
            model: None,
            vae_hash: None,
            vae: None,
            variation: None,
            seed_resize_from: None,
            denoising_strength: None,
            clip_skip: 1,
            rng: "GPU".into(),
            version: None,
            other: Vec::new(),
        }
    }
}

impl Infotext {
    /// The value of a typed slot, `None` when A1111 would leave it out.
    fn typed(&self, key: &str) -> Option<String> {
        match key {
            "Steps" => Some(self.steps.to_string()),
            "Sampler" => Some(self.sampler.clone()),
            "Schedule type" => Some(self.schedule_type.clone()),
            "CFG scale" => Some(self.cfg_scale.to_string()),
            "Seed" => Some(self.seed.to_string()),
            "Size" => Some(format!("{}x{}", self.width, self.height)),
            "Model hash" => self.model_hash.clone(),
            "Model" => self.model.clone(),
            "VAE hash" => self.vae_hash.clone(),
            "VAE" => self.vae.clone(),
            "Variation seed" => self.variation.map(|(s, _)| s.to_string()),
            "Variation seed strength" => self.variation.map(|(_, w)| w.to_string()),
            "Seed resize from" => self.seed_resize_from.map(|(w, h)| format!("{w}x{h}")),
            "Denoising strength" => self.denoising_strength.map(|d| d.to_string()),
            "Clip skip" => (self.clip_skip > 1).then(|| self.clip_skip.to_string()),
            "RNG" => (self.rng != "GPU").then(|| self.rng.clone()),
            "Version" => self.version.clone(),
            _ => None,
        }
    }

    /// Whether `key` is one of the typed fields.
    fn is_typed(key: &str) -> bool {
        matches!(
            key,
            "Steps"
                | "Sampler"
                | "Schedule type"
                | "CFG scale"
                | "Seed"
                | "Size"
                | "Model hash"
                | "Model"
                | "VAE hash"
                | "VAE"
                | "Variation seed"
                | "Variation seed strength"
                | "Seed resize from"
                | "Denoising strength"
                | "Clip skip"
                | "RNG"
                | "Version"
        )
    }

    /// The parameters line's `(key, value)` pairs in A1111's order, values unquoted.
    pub fn params(&self) -> Vec<(String, String)> {
        let other = |k: &str| {
            self.other
                .iter()
                .rev()
                .find(|(ok, _)| ok == k)
                .map(|(_, v)| v.clone())
        };
        let slot = |k: &str| {
            if Self::is_typed(k) {
                self.typed(k)
            } else {
                other(k)
            }
        };
        let mut out: Vec<(String, String)> = Vec::new();
        for k in &SLOTS[..VERSION_SLOT] {
            if let Some(v) = slot(k) {
                out.push((k.to_string(), v));
            }
        }
        for (k, v) in &self.other {
            if SLOTS.contains(&k.as_str()) || Self::is_typed(k) {
                continue;
            }
            match out.iter_mut().find(|(ok, _)| ok == k) {
                Some(e) => e.1 = v.clone(),
                None => out.push((k.clone(), v.clone())),
            }
        }
        for k in &SLOTS[VERSION_SLOT..] {
            if let Some(v) = slot(k) {
                out.push((k.to_string(), v));
            }
        }
        out
    }

    /// Reads an infotext as A1111 does ([`parse_generation_parameters`]) into the typed fields.
    /// Keys absent from the text take A1111's defaults for them (`Clip skip` 1, `RNG` GPU,
    /// `Schedule type` Automatic) or, where A1111 keeps the UI's value, the UI's defaults
    /// ([`Infotext::default`]). Unknown keys go to [`Infotext::other`].
    pub fn parse(text: &str) -> Result<Infotext> {
        let p = parse_generation_parameters(text);
        let mut it = Infotext {
            prompt: p.prompt.clone(),
            negative_prompt: p.negative_prompt.clone(),
            ..Infotext::default()
        };
        let field_err =
            |key: &str, value: &str, expected: &'static str| PipelineError::InfotextField {
                key: key.to_string(),
                value: value.to_string(),
                expected,
            };
        let int = |k: &str, v: &str| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| field_err(k, v, "an integer"))
        };
        let uint = |k: &str, v: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| field_err(k, v, "a non-negative integer"))
        };
        let num = |k: &str, v: &str| Number::parse(v).ok_or_else(|| field_err(k, v, "a number"));
        let mut var_seed = None;
        let mut var_strength = None;
        for (k, v) in p.pairs() {
            match k.as_str() {
                "Steps" => it.steps = uint(&k, &v)?,
                "Sampler" => it.sampler = v,
                "Schedule type" => it.schedule_type = v,
                "CFG scale" => it.cfg_scale = num(&k, &v)?,
                "Seed" => it.seed = int(&k, &v)?,
                "Size" => {
                    let (w, h) = split_size(&v).ok_or_else(|| field_err(&k, &v, "WxH"))?;
                    it.width = w;
                    it.height = h;
                }
                "Model hash" => it.model_hash = Some(v),
                "Model" => it.model = Some(v),
                "VAE hash" => it.vae_hash = Some(v),
                "VAE" => it.vae = Some(v),
                "Variation seed" => var_seed = Some(int(&k, &v)?),
                "Variation seed strength" => var_strength = Some(num(&k, &v)?),
                "Seed resize from" => {
                    it.seed_resize_from =
                        Some(split_size(&v).ok_or_else(|| field_err(&k, &v, "WxH"))?)
                }
                "Denoising strength" => it.denoising_strength = Some(num(&k, &v)?),
                "Clip skip" => it.clip_skip = uint(&k, &v)?,
                "RNG" => it.rng = v,
                "Version" => it.version = Some(v),
                _ => it.other.push((k, v)),
            }
        }
        match (var_seed, var_strength) {
            (Some(s), Some(w)) => it.variation = Some((s, w)),
            (None, None) => {}
            (Some(s), None) => it.other.push(("Variation seed".into(), s.to_string())),
            (None, Some(w)) => it
                .other
                .push(("Variation seed strength".into(), w.to_string())),
        }
        Ok(it)
    }
}

/// `WxH` as A1111's `re_imagesize` reads it.
fn split_size(v: &str) -> Option<(u32, u32)> {
    let (w, h) = v.split_once('x')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(w) || !digits(h) {
        return None;
    }
    Some((w.parse().ok()?, h.parse().ok()?))
}

impl fmt::Display for Infotext {
    /// The infotext exactly as A1111 v1.10.1's `create_infotext` writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: Vec<String> = self
            .params()
            .into_iter()
            .map(|(k, v)| {
                if k == v {
                    k
                } else {
                    format!("{k}: {}", quote(&v))
                }
            })
            .collect();
        let negative = if self.negative_prompt.is_empty() {
            String::new()
        } else {
            format!("\nNegative prompt: {}", self.negative_prompt)
        };
        let text = format!("{}{negative}\n{}", self.prompt, params.join(", "));
        f.write_str(py_strip(&text))
    }
}

/// What A1111's `parse_generation_parameters` reads from an infotext, before it fills in its
/// defaults: the prompt, the negative prompt and the parameters in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parameters {
    /// `res["Prompt"]`.
    pub prompt: String,
    /// `res["Negative prompt"]`.
    pub negative_prompt: String,
    /// The other keys in the order A1111's dict holds them; a `WxH` value is split into
    /// `"{key}-1"` and `"{key}-2"` as A1111 does.
    pub entries: Vec<(String, String)>,
}

impl Parameters {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, key: &str, value: String) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    /// A JSON object (keys in order: `Prompt`, `Negative prompt`, then the entries), strings
    /// written as Python's `json.dumps(..., ensure_ascii=False)` writes them; for `png-info --json`.
    pub fn to_json(&self) -> String {
        let mut fields = vec![
            format!("{}: {}", json_dumps("Prompt"), json_dumps(&self.prompt)),
            format!(
                "{}: {}",
                json_dumps("Negative prompt"),
                json_dumps(&self.negative_prompt)
            ),
        ];
        for (k, v) in &self.entries {
            fields.push(format!("{}: {}", json_dumps(k), json_dumps(v)));
        }
        format!("{{{}}}", fields.join(", "))
    }

    /// The entries with each `-1`/`-2` pair joined back into `WxH` under its key.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (k, v) in &self.entries {
            if let Some(base) = k.strip_suffix("-1") {
                if let Some(h) = self.get(&format!("{base}-2")) {
                    out.push((base.to_string(), format!("{v}x{h}")));
                    continue;
                }
            }
            if let Some(base) = k.strip_suffix("-2") {
                if self.get(&format!("{base}-1")).is_some() {
                    continue;
                }
            }
            out.push((k.clone(), v.clone()));
        }
        out
    }

    /// The map as A1111 hands it to the UI: with the defaults `parse_generation_parameters` adds
    /// for missing keys (`Clip skip` "1", `RNG` "GPU", `Schedule type` "Automatic", the hires and
    /// inpainting defaults, …) and a `Hypernet` appended to the prompt. Not applied: styles and
    /// `infotext_skip_pasting` (A1111's defaults: no styles, nothing skipped), the `Emphasis`
    /// default v1.10 adds when the prompt uses weights, `restore_old_hires_fix_params` and
    /// `infotext_versions.backcompat`.
    pub fn with_a1111_defaults(&self) -> Parameters {
        let mut r = self.clone();
        if r.get("Clip skip").is_none() {
            r.set("Clip skip", "1".into());
        }
        if let Some(h) = r.get("Hypernet").map(str::to_string) {
            let strength = r.get("Hypernet strength").unwrap_or("1.0").to_string();
            r.prompt += &format!("<hypernet:{h}:{strength}>");
        }
        if r.get("Hires resize-1").is_none() {
            r.set("Hires resize-1", "0".into());
            r.set("Hires resize-2", "0".into());
        }
        let defaults: [(&str, &str); 16] = [
            ("Hires sampler", "Use same sampler"),
            ("Hires schedule type", "Use same scheduler"),
            ("Hires checkpoint", "Use same checkpoint"),
            ("Hires prompt", ""),
            ("Hires negative prompt", ""),
            ("Mask mode", "Inpaint masked"),
            ("Masked content", "original"),
            ("Inpaint area", "Whole picture"),
            ("Masked area padding", "32"),
            ("RNG", "GPU"),
            ("Schedule type", "Automatic"),
            ("Schedule max sigma", "0"),
            ("Schedule min sigma", "0"),
            ("Schedule rho", "0"),
            ("VAE Encoder", "Full"),
            ("VAE Decoder", "Full"),
        ];
        for (k, v) in defaults {
            if r.get(k).is_none() {
                r.set(k, v.to_string());
            }
        }
        if r.get("FP8 weight").is_none() {
            r.set("FP8 weight", "Disable".into());
        }
        if r.get("FP8 weight") != Some("Disable") && r.get("Cache FP16 weight for LoRA").is_none() {
            r.set("Cache FP16 weight for LoRA", "False".into());
        }
        if r.get("Refiner switch by sampling steps").is_none() {
            r.set("Refiner switch by sampling steps", "False".into());
        }
        r
    }
}
/// A1111's `re_param`: `\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)`.
fn re_param() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r#"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#)
            .unwrap_or_else(|e| panic!("re_param is a valid pattern: {e}"))
    })
}

/// Python's `json.loads` of a quoted string; `None` when it is not valid JSON.
fn json_loads(v: &str) -> Option<String> {
    serde_json::from_str::<String>(v).ok()
}

/// A1111's `parse_generation_parameters(x)`, up to (not including) the defaults it adds, which
/// [`Parameters::with_a1111_defaults`] adds: the last line is the parameters line when `re_param`
/// finds at least 3 `key: value` pairs in it; the lines before are the prompt, then from the one
/// starting `Negative prompt:` on, the negative prompt (each line stripped). Quoted values are
/// unquoted with `json.loads` (kept as written where that fails); a `WxH` value becomes
/// `key-1`, `key-2`; an empty value is dropped (A1111's `v[0]` raises and it skips the pair).
pub fn parse_generation_parameters(x: &str) -> Parameters {
    let mut res = Parameters::default();
    let mut lines: Vec<&str> = py_strip(x).split('\n').collect();
    let mut lastline = lines.pop().unwrap_or("");
    if re_param().captures_iter(lastline).count() < 3 {
        lines.push(lastline);
        lastline = "";
    }
    let mut done_with_prompt = false;
    for line in lines {
        let mut line = py_strip(line);
        if line.starts_with("Negative prompt:") {
            done_with_prompt = true;
            line = py_strip(&line["Negative prompt:".len()..]);
        }
        let target = if done_with_prompt {
            &mut res.negative_prompt
        } else {
            &mut res.prompt
        };
        if !target.is_empty() {
            target.push('\n');
        }
        target.push_str(line);
    }
    for cap in re_param().captures_iter(lastline) {
        let k = cap.get(1).map_or("", |m| m.as_str());
        let mut v = cap.get(2).map_or("", |m| m.as_str()).to_string();
        if v.is_empty() {
            continue;
        }
        if v.starts_with('"') && v.ends_with('"') {
            if let Some(u) = json_loads(&v) {
                v = u;
            }
        }
        let size = {
            let s = v.strip_suffix('\n').unwrap_or(&v);
            split_size(s).map(|_| {
                s.split_once('x')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
        };
        match size.flatten() {
            Some((w, h)) => {
                res.set(&format!("{k}-1"), w);
                res.set(&format!("{k}-2"), h);
            }
            None => res.set(k, v),
        }
    }
    res
}
