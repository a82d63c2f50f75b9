//! Vectorisable elementwise math: `exp` by range reduction and a degree-6 polynomial
//! (≈ 1 ulp on the softmax range), a row softmax built on it, and `2^x` on AVX2 registers for
//! the attention's fused exponentials (≈ 3 ulp). Each loop body is written
//! branch-free so the compiler vectorises it; on x86-64 a copy compiled for AVX-512 or AVX2+FMA is
//! chosen at run time.

pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting rounds to an integer

/// e^x for x in [-87, 88] (clamped outside).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let k = t - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // t's low mantissa bits hold k (|k| < 2^22): integer arithmetic on them vectorises, where
    // a float-to-int `as` cast (saturating) would not
    let ki = t.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(ki.wrapping_add(127) << 23);
    p * scale
}

/// 2^x on each of `N` vectors of 8 lanes with AVX2 and FMA, x clamped to [-126, 127]: x is
/// split into an integer k (rounded to nearest) and r in [-½, ½], 2^r comes from a degree-5
/// polynomial (relative error under 3.5e-7), and k is added to its exponent bits. Against
/// [`exp`]'s steps on scores already scaled by log₂ e, the range reduction is one subtraction
/// instead of a multiply-add and two, and the scaling an integer add instead of a multiply:
/// 5 operations on the multiply-add ports instead of 10. Each step runs across the `N`
/// vectors, so their dependency chains go through the pipelines side by side.
///
/// # Safety
/// AVX2 and FMA are present.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn exp2_avx2<const N: usize>(
    xs: [std::arch::x86_64::__m256; N],
) -> [std::arch::x86_64::__m256; N] {
    use std::arch::x86_64::*;
    // SAFETY: the caller vouches for AVX2 and FMA.
    unsafe {
        let round = _mm256_set1_ps(ROUND);
        let x = xs.map(|x| {
            _mm256_min_ps(
                _mm256_max_ps(x, _mm256_set1_ps(-126.0)),
                _mm256_set1_ps(127.0),
            )
        });
        let t = x.map(|x| _mm256_add_ps(x, round));
        let r: [__m256; N] =
            std::array::from_fn(|i| _mm256_sub_ps(x[i], _mm256_sub_ps(t[i], round)));
        let mut p = [_mm256_set1_ps(EXP2_POLY[0]); N];
        for &c in &EXP2_POLY[1..] {
            p = std::array::from_fn(|i| _mm256_fmadd_ps(p[i], r[i], _mm256_set1_ps(c)));
        }
        // t's low mantissa bits hold k; shifted 23 up they are k · 2^23 modulo 2^32 (ROUND's
        // own bits leave the word), so the integer add puts k on p's exponent (126 or 127:
        // p lies in [2^-½, 2^½]), which stays within 0..=254 for k in [-126, 127]
        std::array::from_fn(|i| {
            let k = _mm256_slli_epi32::<23>(_mm256_castps_si256(t[i]));
            _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p[i]), k))
        })
    }
}

/// A degree-5 polynomial for 2^r on [-½, ½] (a Chebyshev fit weighted by 2^-r; relative
/// error 3.2e-7 evaluated in f32). Its linear term is the fit's, 3 ulp below ln 2 (ln 2 itself
/// would give 4.4e-7).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::approx_constant)]
const EXP2_POLY: [f32; 6] = [
    1.326_092_2e-3,
    9.670_176e-3,
    5.550_712_3e-2,
    0.240_222_25,
    0.693_147,
    1.0,
];

#[inline(always)]
fn exp_sub_sum_body(row: &mut [f32], max: f32) -> f32 {
    let mut sum = [0f32; 16];
    let mut chunks = row.chunks_exact_mut(16);
    for c in &mut chunks {
        for (v, s) in c.iter_mut().zip(sum.iter_mut()) {
            *v = exp(*v - max);
            *s += *v;
        }
    }
    let mut total: f32 = sum.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        total += *v;
    }
    total
}

#[inline(always)]
fn max_body(row: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for (v, s) in c.iter().zip(m.iter_mut()) {
            *s = s.max(*v);
        }
    }
    let mut r = m.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for v in chunks.remainder() {
        r = r.max(*v);
    }
    r
}

#[inline(always)]
fn softmax_rows_body(data: &mut [f32], cols: usize, sums: &mut [f32]) {
    for (row, s) in data.chunks_exact_mut(cols).zip(sums.iter_mut()) {
        let m = max_body(row);
        *s = exp_sub_sum_body(row, m);
    }
}

simd_dispatch! {
    /// Replaces each row of `data` (`cols` wide) by `exp(x − max(row))` and writes the row's sum
    /// to `sums` (normalisation is left to the caller, who can fold it into a later product).
    pub fn softmax_rows_unnormalised(data: &mut [f32], cols: usize, sums: &mut [f32]) => softmax_rows_body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "max relative error {worst:e}");
    }

    /// 2^x against f64 over the range with 8 lanes 0.011 apart, and the clamps at both ends.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp2_avx2_is_within_three_ulp() {
        if !crate::kernels::avx2_fma() {
            return;
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn lanes(x: [f32; 8]) -> [f32; 8] {
            use std::arch::x86_64::*;
            let mut out = [0f32; 8];
            // SAFETY: AVX2 and FMA are enabled here; both arrays hold 8 floats.
            unsafe {
                let [y] = exp2_avx2([_mm256_loadu_ps(x.as_ptr())]);
                _mm256_storeu_ps(out.as_mut_ptr(), y);
            }
            out
        }
        let mut worst = 0f64;
        let mut x = -126.0f32;
        while x < 127.0 {
            let xs: [f32; 8] = std::array::from_fn(|i| x + i as f32 * 0.011);
            // SAFETY: the features were detected above.
            let got = unsafe { lanes(xs) };
            for (g, &v) in got.iter().zip(&xs) {
                let want = 2f64.powf(v.min(127.0) as f64);
                worst = worst.max(((*g as f64 - want) / want).abs());
            }
            x += 0.088;
        }
        assert!(worst < 3.5e-7, "max relative error {worst:e}");
        // SAFETY: as above.
        let ends = unsafe { lanes([-1e9, -200.0, -126.0, 0.0, 0.5, 127.0, 200.0, 1e9]) };
        let want = [2f32.powi(-126), 2f32.powi(-126), 2f32.powi(-126), 1.0];
        for (g, w) in ends.iter().zip(want) {
            assert!((g / w - 1.0).abs() < 3.5e-7, "{ends:?}");
        }
        assert!(
            (ends[4] / std::f32::consts::SQRT_2 - 1.0).abs() < 3.5e-7,
            "{ends:?}"
        );
        for &g in &ends[5..] {
            assert!((g / 2f32.powi(127) - 1.0).abs() < 3.5e-7, "{ends:?}");
        }
    }

    #[test]
    fn softmax_rows() {
        let mut d: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        let orig = d.clone();
        let mut sums = [0f32; 2];
        softmax_rows_unnormalised(&mut d, 20, &mut sums);
        for r in 0..2 {
            let row = &orig[r * 20..(r + 1) * 20];
            let m = row.iter().cloned().fold(f32::MIN, f32::max);
            let s: f32 = row.iter().map(|v| (v - m).exp()).sum();
            assert!((s - sums[r]).abs() < 1e-5 * s);
            for c in 0..20 {
                let want = (row[c] - m).exp();
                assert!(
                    (d[r * 20 + c] - want).abs() < 1e-6,
                    "{} vs {want}",
                    d[r * 20 + c]
                );
            }
        }
    }
}
