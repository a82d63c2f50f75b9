//! The one definition of the error measures the suites compare with, computed in f64 over the
//! tensors' values read as f32 (f16/bf16 tensors are widened first).
//!
//! * [`max_abs`]: max |x|;
//! * [`max_abs_diff`]: max |a − b|;
//! * [`rel_err`]: max |a − b| / max |b|, relative to the reference `b`'s largest magnitude;
//! * [`rel_err_floor`]: the same with the denominator at least `floor` (the parity suites use
//!   `floor = 1`, an absolute error where the reference is small).
//!
//! These are test helpers: a tensor that cannot be read, or two of different shapes, is a
//! panic naming the problem.

use candle_core::{DType, Tensor};

/// The values of `x` as f32, flattened.
///
/// # Panics
/// If `x` cannot be converted to f32 or read.
pub fn values(x: &Tensor) -> Vec<f32> {
    x.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .unwrap_or_else(|e| panic!("cannot read a tensor of shape {:?}: {e}", x.dims()))
}

/// max |x| over all elements (0 for an empty tensor).
///
/// # Panics
/// If `x` cannot be read.
pub fn max_abs(x: &Tensor) -> f64 {
    values(x).iter().fold(0f64, |m, &v| m.max((v as f64).abs()))
}

/// max |a − b| over all elements.
///
/// # Panics
/// If the shapes differ or a tensor cannot be read.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "compared tensors differ in shape");
    values(a)
        .iter()
        .zip(&values(b))
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()))
}

/// max |a − b| / max(max |b|, floor): the error of `a` relative to the reference `b`'s largest
/// magnitude, or to `floor` where that is smaller.
///
/// # Panics
/// If the shapes differ, a tensor cannot be read, or the denominator is not positive.
pub fn rel_err_floor(a: &Tensor, b: &Tensor, floor: f64) -> f64 {
    let scale = max_abs(b).max(floor);
    assert!(
        scale > 0.0,
        "the reference is all zeros: a relative error has no scale"
    );
    max_abs_diff(a, b) / scale
}

/// max |a − b| / max |b|: the error of `a` relative to the reference `b`'s largest magnitude.
///
/// # Panics
/// If the shapes differ, a tensor cannot be read, or `b` is all zeros.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    rel_err_floor(a, b, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn measures_on_known_values() {
        let a = t(&[1.0, -2.5, 0.25]);
        let b = t(&[1.0, -2.0, 0.5]);
        assert_eq!(max_abs(&a), 2.5);
        assert_eq!(max_abs_diff(&a, &b), 0.5);
        assert_eq!(rel_err(&a, &b), 0.25);
        assert_eq!(rel_err_floor(&a, &b, 4.0), 0.125);
        assert_eq!(rel_err_floor(&a, &b, 1.0), 0.25);
        let h = a.to_dtype(DType::F16).unwrap();
        assert_eq!(rel_err(&h, &b), 0.25);
    }

    #[test]
    #[should_panic(expected = "all zeros")]
    fn a_zero_reference_has_no_relative_error() {
        rel_err(&t(&[1.0]), &t(&[0.0]));
    }

    #[test]
    #[should_panic(expected = "differ in shape")]
    fn shapes_must_agree() {
        max_abs_diff(&t(&[1.0, 2.0]), &t(&[1.0]));
    }
}
