//! Scalar ports of the Cephes-style `log256_ps` and `sincos256_ps` that torch's
//! CPU `normal_` kernel uses on AVX2 machines (`aten/src/ATen/native/cpu/avx_mathfun.h`,
//! after Julien Pommier's `sse_mathfun`).
//!
//! Bit-exactness with torch needs the same float32 operation sequence, lane by
//! lane, including the fused multiply-adds the compiler forms when it builds
//! torch (GCC contracts a multiply feeding a single add under its default
//! `-ffp-contract=fast`): each `a * b + c` of the header whose product has no
//! other use is one `mul_add` here. Which pairs are fused was established
//! against torch 2.15's output (zero mismatches over 49k draws; without fusing,
//! about 1 draw in 1000 differs by one ulp). The integer tricks (`cvttps`,
//! exponent extraction) are reproduced with bit operations. The functions are only meant for the arguments torch feeds them:
//! `log` of `1 - u` with `u` in `[0, 1)` and `sincos` of `2π·u`.

// The constants are written as in the C header: a double literal converted to
// float (so clippy's precision lints do not apply).
#![allow(clippy::excessive_precision, clippy::approx_constant)]
const SQRTHF: f32 = 0.707106781186547524_f64 as f32;
const LOG_P: [f32; 9] = [
    7.0376836292E-2_f64 as f32,
    -1.1514610310E-1_f64 as f32,
    1.1676998740E-1_f64 as f32,
    -1.2420140846E-1_f64 as f32,
    1.4249322787E-1_f64 as f32,
    -1.6668057665E-1_f64 as f32,
    2.0000714765E-1_f64 as f32,
    -2.4999993993E-1_f64 as f32,
    3.3333331174E-1_f64 as f32,
];
const LOG_Q1: f32 = -2.12194440e-4_f64 as f32;
const LOG_Q2: f32 = 0.693359375_f64 as f32;

const MINUS_DP1: f32 = -0.78515625_f64 as f32;
const MINUS_DP2: f32 = -2.4187564849853515625e-4_f64 as f32;
const MINUS_DP3: f32 = -3.77489497744594108e-8_f64 as f32;
const SINCOF: [f32; 3] = [
    -1.9515295891E-4_f64 as f32,
    8.3321608736E-3_f64 as f32,
    -1.6666654611E-1_f64 as f32,
];
const COSCOF: [f32; 3] = [
    2.443315711809948E-005_f64 as f32,
    -1.388731625493765E-003_f64 as f32,
    4.166664568298827E-002_f64 as f32,
];
const FOPI: f32 = 1.27323954473516_f64 as f32;

/// Natural logarithm as `log256_ps` computes it for one lane (NaN for `x <= 0`).
pub(crate) fn log_ps(x: f32) -> f32 {
    let invalid = x <= 0.0;
    // cut off denormals
    let x = x.max(f32::from_bits(0x0080_0000));
    let bits = x.to_bits();
    let imm0 = (bits >> 23) as i32 - 0x7f;
    // keep only the fractional part, in [0.5, 1)
    let mut x = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    let mut e = imm0 as f32 + 1.0;
    let small = x < SQRTHF;
    let tmp = if small { x } else { 0.0 };
    x -= 1.0;
    e -= if small { 1.0 } else { 0.0 };
    x += tmp;

    let z = x * x;
    let mut y = LOG_P[0];
    for p in &LOG_P[1..] {
        y = y.mul_add(x, *p);
    }
    y *= x;
    y = y.mul_add(z, e * LOG_Q1);
    y = (-z).mul_add(0.5, y);
    x += y;
    x = e.mul_add(LOG_Q2, x);
    if invalid {
        f32::NAN
    } else {
        x
    }
}

/// `(sin x, cos x)` as `sincos256_ps` computes them for one lane.
pub(crate) fn sincos_ps(x: f32) -> (f32, f32) {
    let sign_sin_in = x.to_bits() & 0x8000_0000;
    let mut x = f32::from_bits(x.to_bits() & 0x7fff_ffff);
    let y = x * FOPI;
    // cvttps: truncation toward zero (x is non-negative and small here)
    let mut j = y as i32;
    j = j.wrapping_add(1) & !1;
    let y = j as f32;
    let swap_sign_sin = ((j & 4) as u32) << 29;
    let poly_mask = (j & 2) == 0;

    x = y.mul_add(MINUS_DP1, x);
    x = y.mul_add(MINUS_DP2, x);
    x = y.mul_add(MINUS_DP3, x);

    let j4 = j.wrapping_sub(2);
    let sign_cos = ((!j4 & 4) as u32) << 29;
    let sign_sin = sign_sin_in ^ swap_sign_sin;

    let z = x * x;
    let mut yc = COSCOF[0].mul_add(z, COSCOF[1]);
    yc = yc.mul_add(z, COSCOF[2]);
    yc *= z;
    yc = yc.mul_add(z, -(z * 0.5));
    yc += 1.0;

    let mut ys = SINCOF[0].mul_add(z, SINCOF[1]);
    ys = ys.mul_add(z, SINCOF[2]);
    ys *= z;
    ys = ys.mul_add(x, x);

    // poly_mask selects the sine polynomial for sin and the cosine one for cos
    let (ysin2, ysin1) = if poly_mask {
        (ys, 0.0f32)
    } else {
        (0.0f32, yc)
    };
    let yc_rest = yc - ysin1;
    let ys_rest = ys - ysin2;
    let s = ysin1 + ysin2;
    let c = yc_rest + ys_rest;
    (
        f32::from_bits(s.to_bits() ^ sign_sin),
        f32::from_bits(c.to_bits() ^ sign_cos),
    )
}
