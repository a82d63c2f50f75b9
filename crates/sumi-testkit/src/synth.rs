//! Deterministic synthetic weights, shared bit for bit with the reference generator
//! (`tools/reference/synth_weights.py`): a tensor's values come from its canonical name alone,
//! so test fixtures commit a manifest instead of the weights (see [`crate::tiny`]).
//!
//! seed = FNV-1a 64 of the name; `u_i = (splitmix64(seed + i) >> 40) / 2^24`;
//! value = centre + scale·(2u − 1), rounded to f16. 1-D `*.weight`: centre 1, scale 2⁻³;
//! 1-D biases: centre 0, scale 2⁻⁴; others: centre 0, scale 2^−round(log2 √fan_in).

use half::f16;

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
