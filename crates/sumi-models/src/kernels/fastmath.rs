//! Vectorisable elementwise math: `exp` by range reduction and a degree-6 polynomial
//! (≈ 1 ulp on the softmax range), and a row softmax built on it. Each loop body is written
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

/// [`exp`] on 8 lanes with AVX2 and FMA (the same steps; the caller enables the features).
///
/// # Safety
/// AVX2 and FMA are present.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn exp_avx2(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // SAFETY: the caller vouches for AVX2 and FMA.
    unsafe {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.0)),
            _mm256_set1_ps(88.0),
        );
        let round = _mm256_set1_ps(ROUND);
        let t = _mm256_fmadd_ps(x, _mm256_set1_ps(LOG2E), round);
        let k = _mm256_sub_ps(t, round);
        let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let ki = _mm256_sub_epi32(
            _mm256_castps_si256(t),
            _mm256_set1_epi32(ROUND.to_bits() as i32),
        );
        let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(ki, _mm256_set1_epi32(127)));
        _mm256_mul_ps(p, _mm256_castsi256_ps(scale))
    }
}

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

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp_avx2_matches_exp() {
        if !crate::kernels::avx2_fma() {
            return;
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn lanes(x: [f32; 8]) -> [f32; 8] {
            use std::arch::x86_64::*;
            let mut out = [0f32; 8];
            // SAFETY: AVX2 and FMA are enabled here; both arrays hold 8 floats.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp_avx2(_mm256_loadu_ps(x.as_ptr()))) };
            out
        }
        let mut x = -100.0f32;
        while x < 100.0 {
            let xs: [f32; 8] = std::array::from_fn(|i| x + i as f32 * 0.011);
            // SAFETY: the features were detected above.
            let got = unsafe { lanes(xs) };
            for (g, &v) in got.iter().zip(&xs) {
                let want = (v.clamp(-87.0, 88.0) as f64).exp();
                assert!(
                    ((*g as f64 - want) / want).abs() < 2.5e-7,
                    "exp({v}): {g} vs {want}"
                );
            }
            x += 0.0913;
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
