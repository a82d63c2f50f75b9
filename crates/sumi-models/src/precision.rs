//! [`Precision`]: the compute precision of the networks' convolutions and linear layers.

use candle_core::DType;

/// How the networks compute their convolutions and linear layers. Activations, norms,
/// softmax and residual sums are f32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Weights and dot products in f32.
    #[default]
    F32,
    /// Weights held as bf16 (converted once at load), bf16 dot products with f32
    /// accumulation: AVX-512 BF16 where the CPU has it, else the pairs widened to f32 (AVX2 and
    /// FMA, or a portable kernel).
    Bf16,
}

impl Precision {
    /// The fastest precision on this CPU that stays within the fidelity bound (bf16 outputs
    /// within 2e-2 relative of f32): bf16 where the CPU has AVX-512 BF16 dot products, f32
    /// elsewhere (bf16 widened to f32 is no faster than f32; it only halves the weights).
    pub fn auto() -> Self {
        if crate::kernels::gemm_bf16::has_bf16_dot() {
            Self::Bf16
        } else {
            Self::F32
        }
    }

    /// The dtype a network's `VarBuilder` should produce for this precision: a bf16
    /// `VarBuilder` builds the bf16 compute path.
    pub fn weight_dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
        }
    }

    /// The lower-case name (`f32`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = crate::ModelError;

    /// `f32`, `bf16`, or `auto` ([`Precision::auto`]).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "auto" => Ok(Self::auto()),
            _ => Err(crate::ModelError::UnknownPrecision(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!("f32".parse::<Precision>().unwrap(), Precision::F32);
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("auto".parse::<Precision>().unwrap(), Precision::auto());
        let e = "f16".parse::<Precision>().unwrap_err();
        assert!(matches!(e, crate::ModelError::UnknownPrecision(ref s) if s == "f16"));
        assert_eq!(
            e.to_string(),
            "unknown precision `f16` (expected f32, bf16 or auto)"
        );
        assert_eq!(Precision::Bf16.to_string(), "bf16");
        assert_eq!(Precision::default(), Precision::F32);
    }
}
