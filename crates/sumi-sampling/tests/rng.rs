//! RNG bit-exactness against torch's CPU generator and A1111's Philox source,
//! on fixtures from `tools/reference/make_sampling_fixtures.py`.

use serde_json::Value;
use sumi_sampling::rng_philox::PhiloxGenerator;
use sumi_sampling::rng_torch_cpu::TorchCpuGenerator;

fn fixture() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rng.json"
    ))
    .expect("rng.json fixture");
    serde_json::from_str(&text).expect("valid json")
}

fn fnv1a(bits: &[u32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &w in bits {
        h ^= w as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

fn check(kind: &str, case: &Value, mut draw: impl FnMut(usize) -> Vec<f32>) -> usize {
    let seed = case["seed"].as_u64().unwrap();
    let mut mismatches = 0;
    for (call, out) in case["calls"]
        .as_array()
        .unwrap()
        .iter()
        .zip(case["out"].as_array().unwrap())
    {
        let n: usize = call
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .product();
        let got: Vec<u32> = draw(n).iter().map(|v| v.to_bits()).collect();
        let head: Vec<u32> = out["head"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let tail: Vec<u32> = out["tail"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ok = got[..head.len()] == head[..]
            && got[n - tail.len()..] == tail[..]
            && fnv1a(&got) == out["fnv1a"].as_str().unwrap();
        if !ok {
            mismatches += 1;
            let first_bad = got.iter().zip(&head).position(|(a, b)| a != b);
            eprintln!("{kind} seed {seed} call {call}: mismatch (first differing head index {first_bad:?})");
        }
    }
    mismatches
}

#[test]
fn torch_cpu_randn_is_bit_exact() {
    let f = fixture();
    let mut bad = 0;
    let cases = f["torch_cpu"].as_array().unwrap();
    for case in cases {
        let mut g = TorchCpuGenerator::new(case["seed"].as_u64().unwrap());
        bad += check("torch_cpu", case, |n| g.randn(n));
    }
    assert_eq!(bad, 0, "{bad} torch CPU calls differ");
    assert!(cases.len() >= 70);
}

#[test]
fn philox_randn_is_bit_exact() {
    let f = fixture();
    let mut bad = 0;
    for case in f["philox"].as_array().unwrap() {
        let mut g = PhiloxGenerator::new(case["seed"].as_u64().unwrap());
        bad += check("philox", case, |n| g.randn(n));
    }
    assert_eq!(bad, 0, "{bad} philox calls differ");
}

/// The reference values quoted in `shared/README.md`.
#[test]
fn philox_reproduces_published_values() {
    let a = PhiloxGenerator::new(0).randn(12);
    assert_eq!(
        &a[..4],
        &[-0.924_662_4, -0.425_343_96, -2.643_845_8, 0.145_183_88]
    );
    let b = PhiloxGenerator::new(42).randn(4);
    assert_eq!(
        &b[..],
        &[0.194_018_87, 2.161_373_9, -0.172_050_95, 0.849_06]
    );
}

/// torch's portable kernel (CPUs without AVX2, `ATEN_CPU_CAPABILITY=default`):
/// float `log`/`cos`/`sin` from the C library. On an AVX2 machine this path
/// gives different numbers for about 40% of the elements.
#[test]
fn torch_cpu_portable_kernel_is_bit_exact() {
    use sumi_sampling::rng_torch_cpu::TorchCpuKernel;
    let f = fixture();
    let mut bad = 0;
    let cases = f["torch_cpu_default_kernel"].as_array().unwrap();
    for case in cases {
        let mut g = TorchCpuGenerator::with_kernel(
            case["seed"].as_u64().unwrap(),
            TorchCpuKernel::Portable,
        );
        bad += check("torch_cpu_default", case, |n| g.randn(n));
    }
    assert_eq!(bad, 0, "{bad} portable-kernel calls differ");
    assert_eq!(cases.len(), 12);
}
