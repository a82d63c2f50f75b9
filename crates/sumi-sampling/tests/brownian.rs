//! The Brownian tree against numpy's SeedSequence and torchsde's draws
//! (recorded by `tools/reference/sampling_sampler_fixtures.py`).

mod common;

use candle_core::Device;
use common::load;
use serde::Deserialize;
use sumi_sampling::brownian::{BrownianTree, BrownianTreeNoiseSampler, SeedSequence};
use sumi_sampling::noise::{NoiseSampler, NoiseSource};

/// numpy's `SeedSequence(entropy, spawn_key, pool_size).generate_state(4)`.
#[derive(Debug, Deserialize)]
struct SeedCase {
    entropy: u64,
    spawn_key: Vec<u64>,
    pool_size: usize,
    state: Vec<u32>,
}

#[test]
fn seed_sequence_matches_numpy() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed_sequence.json");
    let cases = sumi_testkit::Cases::<SeedCase>::load(&path, "").unwrap();
    assert_eq!(cases.len(), 50);
    for c in &cases {
        let ss = SeedSequence::new(c.entropy, &c.spawn_key, c.pool_size);
        assert_eq!(ss.generate_state(4), c.state, "{c:?}");
    }
}

/// torchsde's default `_randn` is torch's CPU generator, i.e. A1111's "CPU" source.
/// The tree increments are bit-exact. The normalized draws divide by
/// `sqrt|σ' − σ|`, which torch computes with its CPU `sqrt` kernel (MKL), not
/// correctly rounded: about 1 query in 5 differs from IEEE sqrt by one ulp, so
/// the normalized draws are compared to 4 ulp.
#[test]
fn brownian_tree_matches_torchsde_draws() {
    let f = load("samplers.safetensors");
    let (mut checked, mut exact_norm) = (0, 0);
    let mut worst = 0f64;
    for sched in ["karras", "exponential", "normal"] {
        let full: Vec<f32> = f[&format!("sigmas/{sched}")].to_vec1().unwrap();
        let full: Vec<f64> = full.iter().map(|v| *v as f64).collect();
        let (lo, hi) = BrownianTreeNoiseSampler::sigma_range(&full);
        for name in [
            "dpmpp_sde",
            "dpmpp_2m_sde",
            "dpmpp_2m_sde_heun",
            "dpmpp_3m_sde",
        ] {
            for mode in ["txt2img", "img2img"] {
                let key = format!("{name}/{sched}/{mode}");
                let times: Vec<Vec<f32>> = f[&format!("{key}/draw_times")].to_vec2().unwrap();
                let draws = &f[&format!("{key}/draws")];
                let raws = &f[&format!("{key}/draws_raw")];
                let mut ns = BrownianTreeNoiseSampler::new(
                    lo,
                    hi,
                    &[1234],
                    &[1, 2, 4, 4],
                    NoiseSource::Cpu,
                    &Device::Cpu,
                )
                .unwrap();
                let mut tree = BrownianTree::new(
                    lo as f32 as f64,
                    hi as f32 as f64,
                    32,
                    1234,
                    NoiseSource::Cpu,
                )
                .unwrap();
                for (i, t) in times.iter().enumerate() {
                    let (a, b) = (t[0].min(t[1]) as f64, t[0].max(t[1]) as f64);
                    let sign = if t[0] < t[1] { 1.0f32 } else { -1.0 };
                    let raw: Vec<f32> = tree
                        .increment_between(a, b)
                        .unwrap()
                        .iter()
                        .map(|v| v * sign)
                        .collect();
                    let want_raw: Vec<f32> = raws
                        .get(i)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap();
                    assert!(
                        raw.iter()
                            .zip(&want_raw)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{key} draw {i} at {t:?}: tree increment not bit-exact"
                    );
                    let got: Vec<f32> = ns
                        .sample(t[0] as f64, t[1] as f64)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap();
                    let want: Vec<f32> = draws
                        .get(i)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap();
                    let rel = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| ((a - b).abs() / b.abs().max(1e-6)) as f64)
                        .fold(0.0, f64::max);
                    worst = worst.max(rel);
                    assert!(
                        rel <= 4.0 * f32::EPSILON as f64,
                        "{key} draw {i} at {t:?}: relative difference {rel}"
                    );
                    exact_norm += usize::from(got == want);
                    checked += 1;
                }
            }
        }
    }
    eprintln!("{checked} Brownian tree increments bit-exact; normalized draws: {exact_norm} bit-exact, worst relative {worst:e}");
    assert!(checked > 50);
}
