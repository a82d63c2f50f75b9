//! Which networks a prompt asks for: A1111's `extra_networks.parse_prompt` tags read as its
//! `ExtraNetworkParams` and `ExtraNetworkLora.activate` read them (`<lora:name:te:unet:dyn>`,
//! `te=`, `unet=`, `dyn=`; `lyco` is an alias of `lora`) and `ExtraNetworkHypernet.activate`
//! reads `<hypernet:name:multiplier>`.

use sumi_prompt::extra_networks::{extract, ExtraNetwork};

use crate::error::{PipelineError, Result};

/// One `<lora:…>` tag as A1111 activates it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraActivation {
    /// The name as written (a file stem or an alias).
    pub name: String,
    /// The text encoder multiplier (second positional or `te=`; 1 by default).
    pub te: f64,
    /// The U-Net multiplier (third positional or `unet=`; the text encoder's by default).
    pub unet: f64,
    /// The rank limit (fourth positional or `dyn=`).
    pub dyn_dim: Option<usize>,
}

/// One `<hypernet:…>` tag as A1111 activates it.
#[derive(Debug, Clone, PartialEq)]
pub struct HypernetActivation {
    /// The name as written (a file stem).
    pub name: String,
    /// The multiplier (second positional item; 1 by default).
    pub multiplier: f64,
}

/// The networks of a prompt: the LoRAs and hypernetworks to apply, and warnings for tags Sumi
/// does not apply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activations {
    /// The LoRA tags, in prompt order.
    pub loras: Vec<LoraActivation>,
    /// The hypernetwork tags, in prompt order.
    pub hypernets: Vec<HypernetActivation>,
    /// A line for each tag not applied (an unknown network kind).
    pub warnings: Vec<String>,
}

/// Reads the extra-network tags of a positive prompt (the negative prompt is never searched, as
/// in A1111). A multiplier that is not a number is an error naming the tag, as A1111's
/// `float()` fails the job.
pub fn activations(prompt: &str) -> Result<Activations> {
    let (_, tags) = extract(prompt);
    let mut out = Activations::default();
    let mut unknown: Vec<String> = Vec::new();
    for tag in &tags {
        match tag.name.as_str() {
            "lora" | "lyco" => out.loras.push(lora(tag)?),
            "hypernet" => out.hypernets.push(hypernet(tag)?),
            other => {
                if !unknown.iter().any(|u| u == other) {
                    unknown.push(other.to_string());
                }
            }
        }
    }
    // A1111: "Skipping unknown extra network: <name>"
    out.warnings.extend(
        unknown
            .into_iter()
            .map(|n| format!("Skipping unknown extra network: {n}")),
    );
    Ok(out)
}

/// A1111's `ExtraNetworkParams`: an item with exactly one `=` (of at most two looked at) is
/// named, everything else positional.
fn params(tag: &ExtraNetwork) -> (Vec<&str>, Vec<(&str, &str)>) {
    let mut positional = Vec::new();
    let mut named: Vec<(&str, &str)> = Vec::new();
    for item in &tag.args {
        let parts: Vec<&str> = item.splitn(3, '=').collect();
        if parts.len() == 2 {
            // a later `key=` replaces an earlier one (a Python dict)
            named.retain(|(k, _)| *k != parts[0]);
            named.push((parts[0], parts[1]));
        } else {
            positional.push(item.as_str());
        }
    }
    (positional, named)
}

fn tag_error(tag: &ExtraNetwork, detail: impl std::fmt::Display) -> PipelineError {
    PipelineError::Request {
        field: "prompt",
        detail: format!("<{}:{}>{detail}", tag.name, tag.args.join(":")),
    }
}

/// `ExtraNetworkHypernet.activate`: the first positional item is the name, the second (if
/// any) `float()`-ed into the multiplier; named items are ignored, as A1111 ignores them.
fn hypernet(tag: &ExtraNetwork) -> Result<HypernetActivation> {
    let (positional, _) = params(tag);
    let name = positional
        .first()
        .ok_or_else(|| tag_error(tag, " names no network"))?;
    let multiplier = match positional.get(1) {
        Some(s) => py_float(s)
            .ok_or_else(|| tag_error(tag, format!(": could not convert string to float: '{s}'")))?,
        None => 1.0,
    };
    Ok(HypernetActivation {
        name: name.to_string(),
        multiplier,
    })
}

fn lora(tag: &ExtraNetwork) -> Result<LoraActivation> {
    let (positional, named) = params(tag);
    let get = |k: &str| named.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let text = || format!("<{}:{}>", tag.name, tag.args.join(":"));
    let name = positional.first().ok_or_else(|| PipelineError::Request {
        field: "prompt",
        detail: format!("{} names no network", text()),
    })?;
    let float = |s: &str| {
        py_float(s).ok_or_else(|| PipelineError::Request {
            field: "prompt",
            detail: format!("{}: could not convert string to float: '{s}'", text()),
        })
    };
    let int = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| PipelineError::Request {
                field: "prompt",
                detail: format!("{}: invalid literal for int() with base 10: '{s}'", text()),
            })
    };
    let mut te = match positional.get(1) {
        Some(s) => float(s)?,
        None => 1.0,
    };
    if let Some(s) = get("te") {
        te = float(s)?;
    }
    let mut unet = match positional.get(2) {
        Some(s) => float(s)?,
        None => te,
    };
    if let Some(s) = get("unet") {
        unet = float(s)?;
    }
    let mut dyn_dim = positional.get(3).map(|s| int(s)).transpose()?;
    if let Some(s) = get("dyn") {
        dyn_dim = Some(int(s)?);
    }
    Ok(LoraActivation {
        name: name.to_string(),
        te,
        unet,
        dyn_dim,
    })
}

/// Python's `float(str)` for the forms multipliers take: surrounding whitespace, a sign,
/// decimal and exponent notation, `inf`/`nan`, `_` between digits.
fn py_float(s: &str) -> Option<f64> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower.trim_start_matches(['+', '-']);
    if matches!(body, "inf" | "infinity" | "nan") {
        return lower.parse().ok();
    }
    if t.contains("__") || t.starts_with('_') || t.ends_with('_') {
        return None;
    }
    let cleaned: String = t.chars().filter(|c| *c != '_').collect();
    let valid = cleaned
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if !valid || cleaned.is_empty() {
        return None;
    }
    cleaned.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(p: &str) -> LoraActivation {
        let a = activations(p).unwrap();
        assert_eq!(a.loras.len(), 1, "{p}");
        a.loras[0].clone()
    }

    #[test]
    fn multipliers_as_a1111_reads_them() {
        let a = one("a cat <lora:fluffy>");
        assert_eq!(
            (a.name.as_str(), a.te, a.unet, a.dyn_dim),
            ("fluffy", 1.0, 1.0, None)
        );
        let a = one("<lora:fluffy:0.8>");
        assert_eq!((a.te, a.unet), (0.8, 0.8));
        let a = one("<lora:fluffy:0.8:0.3:16>");
        assert_eq!((a.te, a.unet, a.dyn_dim), (0.8, 0.3, Some(16)));
        let a = one("<lora:fluffy:unet=0.5:te=0.25>");
        assert_eq!((a.te, a.unet), (0.25, 0.5));
        let a = one("<lora:fluffy:0.7:dyn=4>");
        assert_eq!((a.te, a.unet, a.dyn_dim), (0.7, 0.7, Some(4)));
        let a = one("<lyco:x: 1e-1 :unet=-2>");
        assert_eq!((a.te, a.unet), (0.1, -2.0));
        // `a=b=c` has three parts: positional (the name here)
        assert_eq!(one("<lora:a=b=c>").name, "a=b=c");
    }

    #[test]
    fn bad_multipliers_fail_naming_the_tag() {
        let e = activations("x <lora:fluffy:lots>").unwrap_err().to_string();
        assert!(
            e.contains("<lora:fluffy:lots>") && e.contains("'lots'"),
            "{e}"
        );
        let e = activations("<lora:te=1>").unwrap_err().to_string();
        assert!(e.contains("names no network"), "{e}");
        assert!(activations("<lora:a:1:1:x>").is_err());
    }

    #[test]
    fn other_kinds_are_named_in_warnings() {
        let a = activations("<hypernet:h:1> <foo:1> <foo:2> <lora:l>").unwrap();
        assert_eq!(a.loras.len(), 1);
        assert_eq!(a.hypernets.len(), 1);
        assert_eq!(a.warnings, ["Skipping unknown extra network: foo"]);
    }

    #[test]
    fn hypernet_tags_as_a1111_reads_them() {
        let a =
            activations("x <hypernet:anime> <hypernet:sub: 0.5 :k=2> <hypernet:a:-1e-1>").unwrap();
        let got: Vec<(&str, f64)> = a
            .hypernets
            .iter()
            .map(|h| (h.name.as_str(), h.multiplier))
            .collect();
        assert_eq!(got, [("anime", 1.0), ("sub", 0.5), ("a", -0.1)]);
        let e = activations("<hypernet:h:much>").unwrap_err().to_string();
        assert!(
            e.contains("<hypernet:h:much>") && e.contains("'much'"),
            "{e}"
        );
        let e = activations("<hypernet:k=1>").unwrap_err().to_string();
        assert!(e.contains("names no network"), "{e}");
    }

    #[test]
    fn python_float_forms() {
        for (s, v) in [
            ("1", 1.0),
            (" 0.5 ", 0.5),
            ("-.5", -0.5),
            ("1_0", 10.0),
            ("2E1", 20.0),
        ] {
            assert_eq!(py_float(s), Some(v), "{s}");
        }
        assert!(py_float("inf").unwrap().is_infinite());
        for s in ["", "_1", "1__0", "0x10", "1,5"] {
            assert_eq!(py_float(s), None, "{s}");
        }
    }
}
