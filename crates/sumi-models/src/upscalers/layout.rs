//! Architecture detection and key layouts, restated from spandrel 0.4.2
//! (`__helpers/canonicalize.py`, `architectures/ESRGAN/__init__.py`,
//! `architectures/Compact/__init__.py`). spandrel tries `Compact` before `ESRGAN`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use candle_core::Tensor;

use super::{
    CompactConfig, EsrganConfig, EsrganLayout, Result, UpscalerConfig, UpscalerError, MAX_BLOCKS,
    MAX_FEATURES, MAX_IMAGE_CHANNELS, MAX_SCALE,
};

/// spandrel's `CompactArch` condition: all of these keys.
const COMPACT_KEYS: &[&str] = &["body.0.weight", "body.1.weight"];

/// spandrel's `ESRGANArch` condition: all keys of any one set.
const ESRGAN_KEYS: &[(EsrganLayout, &[&str])] = &[
    (
        EsrganLayout::Old,
        &["model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"],
    ),
    (
        EsrganLayout::New,
        &[
            "conv_first.weight",
            "body.0.rdb1.conv1.weight",
            "conv_body.weight",
            "conv_last.weight",
        ],
    ),
    (
        EsrganLayout::Bsrgan,
        &[
            "conv_first.weight",
            "RRDB_trunk.0.RDB1.conv1.weight",
            "trunk_conv.weight",
            "conv_last.weight",
        ],
    ),
    (
        EsrganLayout::Plus,
        &["model.0.weight", "model.1.sub.0.RDB1.conv1x1.weight"],
    ),
];

/// Architectures spandrel reads, by (part of) spandrel's key condition, in spandrel's order:
/// named in the error instead of "unknown" where Sumi does not build them (all but SwinIR and
/// DAT, whose conditions are completed in [`detect`]).
const NOT_BUILT: &[(&str, &[&str])] = &[
    (
        "HAT",
        &[
            "relative_position_index_SA",
            "conv_first.weight",
            "layers.0.residual_group.blocks.0.norm1.weight",
            "layers.0.residual_group.overlap_attn.qkv.weight",
        ],
    ),
    (
        "Swin2SR",
        &[
            "layers.0.residual_group.blocks.0.norm1.weight",
            "patch_embed.proj.weight",
            "conv_first.weight",
            "layers.0.residual_group.blocks.0.mlp.fc1.bias",
            "layers.0.residual_group.blocks.0.attn.relative_position_index",
        ],
    ),
    (
        "SwinIR",
        &[
            "layers.0.residual_group.blocks.0.norm1.weight",
            "layers.0.residual_group.blocks.0.mlp.fc1.bias",
            "layers.0.residual_group.blocks.0.attn.relative_position_index",
        ],
    ),
    (
        "DAT",
        &[
            "conv_first.weight",
            "before_RG.1.weight",
            "layers.0.blocks.0.attn.attns.0.rpe_biases",
        ],
    ),
];

/// spandrel's `remove_common_prefix(state, ["module.", "netG."])`: each prefix removed when
/// every key has it (in that order).
pub fn canonicalize(mut tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    for prefix in ["module.", "netG."] {
        if !tensors.is_empty() && tensors.keys().all(|k| k.starts_with(prefix)) {
            tensors = tensors
                .into_iter()
                .map(|(k, v)| (k[prefix.len()..].to_string(), v))
                .collect();
        }
    }
    tensors
}

/// Names the architecture of a (canonicalized) state dict from its keys and reads its sizes
/// from the shapes, as spandrel's detection and `load` do.
pub fn detect(shapes: &BTreeMap<String, Vec<usize>>) -> Result<UpscalerConfig> {
    let has_all = |keys: &[&str]| keys.iter().all(|k| shapes.contains_key(*k));
    if has_all(COMPACT_KEYS) {
        return compact_config(shapes).map(UpscalerConfig::Compact);
    }
    if let Some((arch, _)) = NOT_BUILT.iter().find(|(_, keys)| has_all(keys)) {
        // spandrel's SwinIR condition also asks for `conv_first` (or `conv_first.1`)
        let first = ["conv_first.weight", "conv_first.1.weight"];
        if *arch == "SwinIR" && first.iter().any(|k| shapes.contains_key(*k)) {
            return super::swinir_config::swinir_config(shapes).map(UpscalerConfig::SwinIr);
        }
        if *arch == "DAT" {
            return super::dat_config::dat_config(shapes).map(UpscalerConfig::Dat);
        }
        return Err(UpscalerError::NotBuilt { arch });
    }
    if ESRGAN_KEYS.iter().any(|(_, keys)| has_all(keys)) {
        return esrgan_config(shapes).map(UpscalerConfig::Esrgan);
    }
    let looked_for = std::iter::once(format!("Compact: {}", COMPACT_KEYS.join(" + ")))
        .chain(
            ESRGAN_KEYS
                .iter()
                .map(|(_, keys)| format!("ESRGAN: {}", keys.join(" + "))),
        )
        .collect::<Vec<_>>()
        .join("; ");
    Err(UpscalerError::UnknownArchitecture {
        looked_for,
        count: shapes.len(),
        sample: shapes
            .keys()
            .take(4)
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
    })
}

pub(super) fn invalid(arch: &'static str, detail: impl Into<String>) -> UpscalerError {
    UpscalerError::Invalid {
        arch,
        detail: detail.into(),
    }
}

/// The shape of `name`, which must have `dims` dimensions.
pub(super) fn shape<'a>(
    arch: &'static str,
    shapes: &'a BTreeMap<String, Vec<usize>>,
    name: &str,
    dims: usize,
) -> Result<&'a [usize]> {
    match shapes.get(name) {
        Some(s) if s.len() == dims => Ok(s),
        Some(s) => Err(invalid(
            arch,
            format!("`{name}` has shape {s:?}, expected {dims} dimensions"),
        )),
        None => Err(invalid(arch, format!("`{name}` is missing"))),
    }
}

/// spandrel's `get_seq_len(state, prefix)`: one more than the largest `N` of the keys
/// `{prefix}.N.…` (0 when there are none); a non-numeric `N` is an error, as `int()` is there.
pub(super) fn seq_len<'a>(
    arch: &'static str,
    keys: impl Iterator<Item = &'a String>,
    prefix: &str,
) -> Result<usize> {
    let p = format!("{prefix}.");
    let mut len = 0usize;
    for k in keys {
        if let Some(rest) = k.strip_prefix(&p) {
            let idx = rest.split('.').next().unwrap_or("");
            let i: usize = idx
                .parse()
                .map_err(|_| invalid(arch, format!("key `{k}`: `{idx}` is not an index")))?;
            len = len.max(i.saturating_add(1));
        }
    }
    Ok(len)
}

pub(super) fn check(arch: &'static str, what: &str, v: usize, max: usize) -> Result<usize> {
    if v == 0 || v > max {
        return Err(invalid(arch, format!("{what} is {v}, outside 1..={max}")));
    }
    Ok(v)
}

fn compact_config(shapes: &BTreeMap<String, Vec<usize>>) -> Result<CompactConfig> {
    const A: &str = "Compact";
    let highest = seq_len(A, shapes.keys(), "body")? - 1;
    if highest < 2 || !highest.is_multiple_of(2) {
        return Err(invalid(A, format!("the last body layer is body.{highest}")));
    }
    let num_conv = check(A, "num_conv", (highest - 2) / 2, MAX_BLOCKS).or_else(|e| {
        // zero body convolutions is a valid (if odd) network
        if highest == 2 {
            Ok(0)
        } else {
            Err(e)
        }
    })?;
    let first = shape(A, shapes, "body.0.weight", 4)?;
    let in_channels = check(A, "input channels", first[1], MAX_IMAGE_CHANNELS)?;
    let num_feat = check(A, "num_feat", first[0], MAX_FEATURES)?;
    let ps = shape(A, shapes, &format!("body.{highest}.bias"), 1)?[0];
    let (scale, out_channels) = scale_and_output_channels(ps, in_channels).ok_or_else(|| {
        invalid(
            A,
            format!("no (scale, channels) with scale² · channels = {ps}"),
        )
    })?;
    check(A, "scale", scale, MAX_SCALE)?;
    if out_channels != in_channels {
        return Err(invalid(
            A,
            format!("{out_channels} output channels for {in_channels} input channels"),
        ));
    }
    Ok(CompactConfig {
        in_channels,
        out_channels,
        num_feat,
        num_conv,
        scale,
    })
}

/// spandrel's `get_scale_and_output_channels(x, in_nc)`: the first of `in_nc, 3, 4, 1` that
/// divides `x` into a square.
fn scale_and_output_channels(x: usize, in_nc: usize) -> Option<(usize, usize)> {
    [in_nc, 3, 4, 1].into_iter().find_map(|c| {
        if c == 0 || !x.is_multiple_of(c) {
            return None;
        }
        let q = x / c;
        let r = (q as f64).sqrt().round() as usize;
        (r * r == q).then_some((r, c))
    })
}

fn esrgan_config(shapes: &BTreeMap<String, Vec<usize>>) -> Result<EsrganConfig> {
    const A: &str = "ESRGAN";
    let layout = if shapes.contains_key("conv_first.weight") {
        if shapes.contains_key("body.0.rdb1.conv1.weight") {
            EsrganLayout::New
        } else {
            EsrganLayout::Bsrgan
        }
    } else if shapes.keys().any(|k| k.contains(".conv1x1.")) {
        EsrganLayout::Plus
    } else {
        EsrganLayout::Old
    };
    let old = rename_all(shapes.clone(), layout)?;
    let model_len = seq_len(A, old.keys(), "model")?;
    if model_len < 5 || !(model_len - 5).is_multiple_of(3) || model_len > 5 + 3 * 3 {
        return Err(invalid(
            A,
            format!("{model_len} top-level layers do not make an RRDBNet of scale 1 to 8"),
        ));
    }
    let upsamples = (model_len - 5) / 3;
    let first = shape(A, &old, "model.0.weight", 4)?;
    let num_feat = check(A, "num_feat", first[0], MAX_FEATURES)?;
    let in_channels = check(A, "input channels", first[1], 16 * MAX_IMAGE_CHANNELS)?;
    let last = shape(A, &old, &format!("model.{}.weight", model_len - 1), 4)?;
    let out_channels = check(A, "output channels", last[0], MAX_IMAGE_CHANNELS)?;
    let subs = seq_len(A, old.keys(), "model.1.sub")?;
    let num_block = check(A, "num_block", subs.saturating_sub(1), MAX_BLOCKS)?;
    let gc = shape(A, &old, "model.1.sub.0.RDB1.conv1.0.weight", 4)?[0];
    let num_grow_ch = check(A, "num_grow_ch", gc, MAX_FEATURES)?;
    // "Detect if pixelunshuffle was used (Real-ESRGAN)"
    let shuffle_factor = if in_channels == out_channels * 4 {
        Some(2)
    } else if in_channels == out_channels * 16 {
        Some(4)
    } else {
        None
    };
    if shuffle_factor.is_none() {
        check(A, "input channels", in_channels, MAX_IMAGE_CHANNELS)?;
    }
    if let Some(f) = shuffle_factor {
        if (1 << upsamples) < f {
            return Err(invalid(
                A,
                format!("unshuffle by {f} with only {upsamples} upsamples"),
            ));
        }
    }
    Ok(EsrganConfig {
        layout,
        in_channels,
        out_channels,
        num_feat,
        num_block,
        num_grow_ch,
        upsamples,
        shuffle_factor,
        plus: layout == EsrganLayout::Plus,
    })
}

/// Maps an RRDBNet state dict of any layout to the old-arch names (spandrel's `_to_old_arch`;
/// keys the new layouts do not name are dropped, as there).
pub fn to_old_arch<T>(state: HashMap<String, T>, layout: EsrganLayout) -> HashMap<String, T> {
    let map: BTreeMap<String, T> = state.into_iter().collect();
    rename_all(map, layout)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn rename_all<T>(state: BTreeMap<String, T>, layout: EsrganLayout) -> Result<BTreeMap<String, T>> {
    if matches!(layout, EsrganLayout::Old | EsrganLayout::Plus) {
        return Ok(state);
    }
    let mut num_blocks = 0usize;
    let mut max_upconv = 0usize;
    for k in state.keys() {
        if let Some((n, ..)) = rdb_key(k) {
            num_blocks = num_blocks.max(n.saturating_add(1));
        }
        if let Some((d, _)) = upconv_key(k) {
            max_upconv = max_upconv.max(d * 3);
        }
    }
    if num_blocks > MAX_BLOCKS {
        return Err(invalid(
            "ESRGAN",
            format!("num_block is {num_blocks}, more than {MAX_BLOCKS}"),
        ));
    }
    let mut out = BTreeMap::new();
    for (k, v) in state {
        let new = if let Some((n, r, c, kind)) = rdb_key(&k) {
            Some(format!("model.1.sub.{n}.RDB{r}.conv{c}.0.{kind}"))
        } else if let Some((d, kind)) = upconv_key(&k) {
            Some(format!("model.{}.{kind}", d * 3))
        } else {
            let (stem, kind) = k.rsplit_once('.').unwrap_or((&k, ""));
            let idx = match stem {
                "conv_first" => Some("0".to_string()),
                "trunk_conv" | "conv_body" => Some(format!("1.sub.{num_blocks}")),
                "HRconv" | "conv_hr" => Some((max_upconv + 2).to_string()),
                "conv_last" => Some((max_upconv + 4).to_string()),
                _ => None,
            };
            idx.filter(|_| kind == "weight" || kind == "bias")
                .map(|i| format!("model.{i}.{kind}"))
        };
        if let Some(new) = new {
            out.insert(new, v);
        }
    }
    Ok(out)
}

/// `RRDB_trunk.N.RDBr.convC.kind` or `body.N.rdbr.convC.kind` (r a single digit, as
/// spandrel's regular expressions).
fn rdb_key(k: &str) -> Option<(usize, char, usize, &str)> {
    let (rest, rdb) = if let Some(r) = k.strip_prefix("RRDB_trunk.") {
        (r, "RDB")
    } else {
        (k.strip_prefix("body.")?, "rdb")
    };
    let mut parts = rest.split('.');
    let n: usize = parts.next()?.parse().ok()?;
    let r = parts.next()?.strip_prefix(rdb)?;
    let c: usize = parts.next()?.strip_prefix("conv")?.parse().ok()?;
    let kind = parts.next()?;
    let mut rc = r.chars();
    let (Some(r), None) = (rc.next(), rc.next()) else {
        return None;
    };
    (r.is_ascii_digit() && matches!(kind, "weight" | "bias") && parts.next().is_none())
        .then_some((n, r, c, kind))
}

/// `upconvD.kind` or `conv_upD.kind` (D a single digit).
fn upconv_key(k: &str) -> Option<(usize, &str)> {
    let rest = k
        .strip_prefix("upconv")
        .or_else(|| k.strip_prefix("conv_up"))?;
    let (d, kind) = rest.split_once('.')?;
    let mut dc = d.chars();
    let (Some(d), None) = (dc.next(), dc.next()) else {
        return None;
    };
    let d = d.to_digit(10)? as usize;
    matches!(kind, "weight" | "bias").then_some((d, kind))
}

/// Every tensor name the network of `config` has (old-arch names for RRDBNet): spandrel loads
/// the state dict strictly, so a tensor outside this set is an error there, and here.
pub fn expected_keys(config: &UpscalerConfig) -> BTreeSet<String> {
    let mut k = BTreeSet::new();
    let mut conv = |name: String| {
        k.insert(format!("{name}.weight"));
        k.insert(format!("{name}.bias"));
    };
    match config {
        UpscalerConfig::Esrgan(c) => {
            conv("model.0".into());
            for b in 0..c.num_block {
                for r in 1..=3 {
                    for j in 1..=5 {
                        conv(format!("model.1.sub.{b}.RDB{r}.conv{j}.0"));
                    }
                }
            }
            conv(format!("model.1.sub.{}", c.num_block));
            for i in 1..=c.upsamples {
                conv(format!("model.{}", 3 * i));
            }
            conv(format!("model.{}", 3 * c.upsamples + 2));
            conv(format!("model.{}", 3 * c.upsamples + 4));
            if c.plus {
                for b in 0..c.num_block {
                    for r in 1..=3 {
                        k.insert(format!("model.1.sub.{b}.RDB{r}.conv1x1.weight"));
                    }
                }
            }
        }
        UpscalerConfig::SwinIr(c) => return super::swinir_config::swinir_keys(c),
        UpscalerConfig::Dat(c) => return super::dat_config::dat_keys(c),
        UpscalerConfig::Compact(c) => {
            for i in 0..=c.num_conv + 1 {
                conv(format!("body.{}", 2 * i));
            }
            for i in 0..=c.num_conv {
                k.insert(format!("body.{}.weight", 2 * i + 1));
            }
        }
    }
    k
}

/// Refuses tensors the network does not have, naming a few (spandrel's strict load).
pub(super) fn check_unexpected<'a>(
    config: &UpscalerConfig,
    keys: impl Iterator<Item = &'a String>,
) -> Result<()> {
    let expected = expected_keys(config);
    let extra: Vec<&String> = keys.filter(|k| !expected.contains(*k)).collect();
    if extra.is_empty() {
        return Ok(());
    }
    let sample: Vec<&str> = extra.iter().take(4).map(|s| s.as_str()).collect();
    Err(invalid(
        config.architecture(),
        format!(
            "{} tensors the network does not have, e.g. {}",
            extra.len(),
            sample.join(", ")
        ),
    ))
}
