//! Deterministic synthetic weights, shared bit for bit with the reference generator
//! (`tools/reference/synth_weights.py`): a tensor's values come from its canonical name alone,
//! so test fixtures commit a manifest instead of the weights, and full-size random
//! checkpoints can be written without Python.
//!
//! seed = FNV-1a 64 of the name; `u_i = (splitmix64(seed + i) >> 40) / 2^24`;
//! value = centre + scale·(2u − 1), rounded to f16. 1-D `*.weight`: centre 1, scale 2⁻³;
//! 1-D biases: centre 0, scale 2⁻⁴; others: centre 0, scale 2^−round(log2 √fan_in).

use std::collections::BTreeMap;
use std::path::Path;

use half::f16;
use sha2::{Digest, Sha256};

use crate::dtype::StorageDtype;
use crate::error::{Result, WeightsError};

fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn centre_scale(name: &str, shape: &[usize]) -> (f64, f64) {
    if shape.len() == 1 {
        return if name.ends_with(".weight") {
            (1.0, 0.125)
        } else {
            (0.0, 0.0625)
        };
    }
    let numel: usize = shape.iter().product();
    let fan_in = shape.first().map_or(1, |&d| (numel / d.max(1)).max(1));
    // Python's round() is round-half-even; log2(sqrt(n)) is a half-integer only for n = 2^odd,
    // where both agree after the tie rule below.
    let e = (fan_in as f64).sqrt().log2();
    let r = e.round();
    let r = if (e - e.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - e.signum()
    } else {
        r
    };
    (0.0, 2f64.powi(-(r as i32)))
}

/// The f16 values of canonical tensor `name` with `shape`.
pub fn synth(name: &str, shape: &[usize]) -> Vec<f16> {
    let n: usize = shape.iter().product();
    let seed = fnv1a64(name);
    let (c, s) = centre_scale(name, shape);
    (0..n as u64)
        .map(|i| {
            let u = (splitmix64(seed.wrapping_add(i)) >> 40) as f64 / (1u64 << 24) as f64;
            f16::from_f64(c + s * (2.0 * u - 1.0))
        })
        .collect()
}

fn checksum(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))[..16].to_string()
}

fn bad(path: &Path, detail: impl Into<String>) -> WeightsError {
    WeightsError::BadConfig {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Writes every weight file a fixture manifest describes into `out` (plus the fixture's json
/// configs, kept at the same relative paths), stored as `storage` (F16 or F32), and checks each
/// tensor against the manifest's checksum of the reference's f16 bytes.
pub fn materialize(fixture: &Path, out: &Path, storage: StorageDtype) -> Result<()> {
    let mpath = fixture.join("manifest.json");
    let text = std::fs::read_to_string(&mpath).map_err(|e| WeightsError::io(&mpath, e))?;
    let m: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(&mpath, e.to_string()))?;
    copy_configs(fixture, fixture, out)?;
    let files = m["files"]
        .as_object()
        .ok_or_else(|| bad(&mpath, "no `files`"))?;
    for (fname, spec) in files {
        let mut tensors = Vec::new();
        for t in spec["tensors"]
            .as_array()
            .ok_or_else(|| bad(&mpath, "no `tensors`"))?
        {
            let (Some(key), Some(shape), Some(sources), Some(sum)) = (
                t[0].as_str(),
                t[1].as_array(),
                t[2].as_array(),
                t[3].as_str(),
            ) else {
                return Err(bad(&mpath, format!("bad tensor entry {t}")));
            };
            let shape: Vec<usize> = shape
                .iter()
                .filter_map(|d| d.as_u64())
                .map(|d| d as usize)
                .collect();
            let numel: usize = shape.iter().product();
            let parts = sources.len().max(1);
            let mut part_shape = shape.clone();
            if let Some(d) = part_shape.first_mut() {
                *d /= parts;
            }
            let mut vals: Vec<f16> = Vec::with_capacity(numel);
            for s in sources {
                let s = s
                    .as_str()
                    .ok_or_else(|| bad(&mpath, format!("bad source in {key}")))?;
                // 1x1 kernels and matrices share fan-in, so the stored shape serves
                vals.extend(synth(s, &part_shape));
            }
            let f16_bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            if checksum(&f16_bytes) != sum {
                return Err(bad(
                    &mpath,
                    format!("{fname}: `{key}` does not match its checksum"),
                ));
            }
            let bytes = match storage {
                StorageDtype::F32 => vals.iter().flat_map(|v| v.to_f32().to_le_bytes()).collect(),
                _ => f16_bytes,
            };
            tensors.push((key.to_string(), storage, shape, bytes));
        }
        let metadata: BTreeMap<String, String> = spec["metadata"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let path = out.join(fname);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| WeightsError::io(dir, e))?;
        }
        std::fs::write(&path, crate::safetensors::serialize(&tensors, &metadata))
            .map_err(|e| WeightsError::io(&path, e))?;
    }
    Ok(())
}

fn copy_configs(root: &Path, dir: &Path, out: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| WeightsError::io(dir, e))? {
        let p = e.map_err(|e| WeightsError::io(dir, e))?.path();
        if p.is_dir() {
            copy_configs(root, &p, out)?;
        } else if p.extension().is_some_and(|x| x == "json")
            && p.file_name().is_some_and(|n| n != "manifest.json")
        {
            let rel = p
                .strip_prefix(root)
                .map_err(|_| bad(&p, "outside the fixture"))?;
            let dst = out.join(rel);
            if let Some(d) = dst.parent() {
                std::fs::create_dir_all(d).map_err(|e| WeightsError::io(d, e))?;
            }
            std::fs::copy(&p, &dst).map_err(|e| WeightsError::io(&p, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_python_generator() {
        // synth_weights.synth('unet.conv_in.weight', [2, 3]) and synth('a.bias', [3])
        let v: Vec<f32> = synth("unet.conv_in.weight", &[2, 3])
            .iter()
            .map(|x| x.to_f32())
            .collect();
        let want = [-0.1194f32, -0.3276, -0.2832, -0.2732, 0.4312, -0.1945];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 5e-4, "{a} vs {b}");
        }
        let b: Vec<f32> = synth("a.bias", &[3]).iter().map(|x| x.to_f32()).collect();
        assert!((b[0] - 0.03192).abs() < 1e-5 && (b[2] + 0.01523).abs() < 1e-5);
        assert_eq!(fnv1a64("abc"), 16654208175385433931);
    }
}
