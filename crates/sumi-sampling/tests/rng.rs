//! RNG bit-exactness against torch's CPU generator and A1111's Philox source,
//! on fixtures from `tools/reference/make_sampling_fixtures.py`.

use serde::Deserialize;
use sumi_sampling::rng_philox::PhiloxGenerator;
use sumi_sampling::rng_torch_cpu::TorchCpuGenerator;
use sumi_testkit::Cases;

/// One generator seeded once, then drawn from once per call.
#[derive(Debug, Deserialize)]
struct DrawCase {
    seed: u64,
    /// The shape of each `randn` call.
    calls: Vec<Vec<usize>>,
    /// What each call returned.
    out: Vec<Drawn>,
}

/// A call's values as f32 bit patterns: the first and last few, and an FNV-1a of all.
#[derive(Debug, Deserialize)]
struct Drawn {
    head: Vec<u32>,
    tail: Vec<u32>,
    fnv1a: String,
}

/// The case list `list` of `rng.json` (refused when absent or empty).
fn cases(list: &str) -> Cases<DrawCase> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rng.json");
    Cases::load(&path, &format!("/{list}")).unwrap()
}

fn fnv1a(bits: &[u32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &w in bits {
        h ^= w as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

fn check(kind: &str, case: &DrawCase, mut draw: impl FnMut(usize) -> Vec<f32>) -> usize {
    let seed = case.seed;
    assert_eq!(case.calls.len(), case.out.len(), "{kind} seed {seed}");
    assert!(!case.calls.is_empty(), "{kind} seed {seed}: no call");
    let mut mismatches = 0;
    for (call, out) in case.calls.iter().zip(&case.out) {
        let n: usize = call.iter().product();
        let got: Vec<u32> = draw(n).iter().map(|v| v.to_bits()).collect();
        let (head, tail) = (&out.head, &out.tail);
        let ok = got[..head.len()] == head[..]
            && got[n - tail.len()..] == tail[..]
            && fnv1a(&got) == out.fnv1a;
        if !ok {
            mismatches += 1;
            let first_bad = got.iter().zip(head).position(|(a, b)| a != b);
            eprintln!("{kind} seed {seed} call {call:?}: mismatch (first differing head index {first_bad:?})");
        }
    }
    mismatches
}

#[test]
fn torch_cpu_randn_is_bit_exact() {
    let mut bad = 0;
    let cases = cases("torch_cpu");
    for case in &cases {
        let mut g = TorchCpuGenerator::new(case.seed);
        bad += check("torch_cpu", case, |n| g.randn(n));
    }
    assert_eq!(bad, 0, "{bad} torch CPU calls differ");
    assert!(cases.len() >= 70);
}

#[test]
fn philox_randn_is_bit_exact() {
    let mut bad = 0;
    let cases = cases("philox");
    for case in &cases {
        let mut g = PhiloxGenerator::new(case.seed);
        bad += check("philox", case, |n| g.randn(n));
    }
    assert_eq!(bad, 0, "{bad} philox calls differ");
    assert_eq!(cases.len(), 73);
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
    let mut bad = 0;
    let cases = cases("torch_cpu_default_kernel");
    for case in &cases {
        let mut g = TorchCpuGenerator::with_kernel(case.seed, TorchCpuKernel::Portable);
        bad += check("torch_cpu_default", case, |n| g.randn(n));
    }
    assert_eq!(bad, 0, "{bad} portable-kernel calls differ");
    assert_eq!(cases.len(), 12);
}
