//! Storage dtypes as they appear in files, and their decoding into candle tensors.

use candle_core::{DType, Device, Tensor};

/// The element type a tensor is stored with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StorageDtype {
    /// IEEE binary64.
    F64,
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// Signed 64-bit integer.
    I64,
    /// Signed 32-bit integer.
    I32,
    /// Signed 16-bit integer.
    I16,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 8-bit integer.
    U8,
    /// Boolean, one byte each.
    Bool,
}

impl StorageDtype {
    /// Parses a safetensors dtype name (`F32`, `BF16`, …).
    pub fn from_safetensors(s: &str) -> Option<Self> {
        Some(match s {
            "F64" => Self::F64,
            "F32" => Self::F32,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "I64" => Self::I64,
            "I32" => Self::I32,
            "I16" => Self::I16,
            "I8" => Self::I8,
            "U8" => Self::U8,
            "BOOL" => Self::Bool,
            _ => return None,
        })
    }

    /// Parses a PyTorch storage class name (`FloatStorage`, `HalfStorage`, …).
    pub fn from_torch_storage(s: &str) -> Option<Self> {
        Some(match s {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// The safetensors name of this dtype.
    pub fn name(self) -> &'static str {
        match self {
            Self::F64 => "F64",
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::I64 => "I64",
            Self::I32 => "I32",
            Self::I16 => "I16",
            Self::I8 => "I8",
            Self::U8 => "U8",
            Self::Bool => "BOOL",
        }
    }

    /// Whether this is a floating-point type (weights are).
    pub fn is_float(self) -> bool {
        matches!(self, Self::F64 | Self::F32 | Self::F16 | Self::BF16)
    }
}

impl std::fmt::Display for StorageDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn le<const N: usize>(c: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(c);
    a
}

/// Decodes little-endian bytes of a floating-point tensor into a candle tensor of `target`
/// dtype (converting on the way, one pass, no intermediate copy of the source).
///
/// The caller guarantees `bytes.len() == numel * dtype.size()`; integer dtypes are refused.
pub(crate) fn decode(
    bytes: &[u8],
    dtype: StorageDtype,
    shape: &[usize],
    target: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    use half::{bf16, f16};
    let shape = shape.to_vec();
    let n = dtype.size();
    let t = match (dtype, target) {
        (StorageDtype::F16, DType::F16) => {
            let v: Vec<f16> = bytes
                .chunks_exact(n)
                .map(|c| f16::from_le_bytes(le(c)))
                .collect();
            Tensor::from_vec(v, shape, device)?
        }
        (StorageDtype::BF16, DType::BF16) => {
            let v: Vec<bf16> = bytes
                .chunks_exact(n)
                .map(|c| bf16::from_le_bytes(le(c)))
                .collect();
            Tensor::from_vec(v, shape, device)?
        }
        (StorageDtype::F64, DType::F64) => {
            let v: Vec<f64> = bytes
                .chunks_exact(n)
                .map(|c| f64::from_le_bytes(le(c)))
                .collect();
            Tensor::from_vec(v, shape, device)?
        }
        (src, tgt) => {
            let v: Vec<f32> = match src {
                StorageDtype::F32 => bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(le(c)))
                    .collect(),
                StorageDtype::F16 => {
                    use half::slice::HalfFloatSliceExt;
                    let h: Vec<f16> = bytes
                        .chunks_exact(2)
                        .map(|c| f16::from_le_bytes(le(c)))
                        .collect();
                    let mut v = vec![0f32; h.len()];
                    h.convert_to_f32_slice(&mut v);
                    v
                }
                StorageDtype::BF16 => {
                    use half::slice::HalfFloatSliceExt;
                    let h: Vec<bf16> = bytes
                        .chunks_exact(2)
                        .map(|c| bf16::from_le_bytes(le(c)))
                        .collect();
                    let mut v = vec![0f32; h.len()];
                    h.convert_to_f32_slice(&mut v);
                    v
                }
                StorageDtype::F64 => bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(le(c)) as f32)
                    .collect(),
                other => {
                    return Err(candle_core::Error::Msg(format!(
                        "integer dtype {other} where a float tensor is needed"
                    )))
                }
            };
            let t = Tensor::from_vec(v, shape, device)?;
            if tgt == DType::F32 {
                t
            } else {
                t.to_dtype(tgt)?
            }
        }
    };
    Ok(t)
}
