//! Reading an upscaler file into a state dict: `.safetensors` through sumi-weights' validated
//! reader, `.pth`/`.pt`/`.ckpt` (PyTorch zip) through its restricted pickle reader, unwrapped
//! as spandrel's `canonicalize_state_dict` does (`params_ema`, `params`, `state_dict`, …).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use sumi_weights::ckpt::TorchArchive;
use sumi_weights::pickle::Value;
use sumi_weights::safetensors::SafetensorsFile;
use sumi_weights::StorageDtype;

use super::UpscaleError;
use crate::error::Result;

/// Largest upscaler file read (real ones: 5 MB to 200 MB).
pub const MAX_UPSCALER_FILE_BYTES: u64 = 512 << 20;

/// spandrel's wrapper keys, tried in this order; the first whose value is a dict is the state
/// dict.
const WRAPPERS: &[&str] = &[
    "model_state_dict",
    "state_dict",
    "params_ema",
    "params-ema",
    "params",
    "model",
    "net",
];

/// The tensors of an upscaler file as f32 on the CPU, under their keys in the file (after
/// unwrapping). A file over [`MAX_UPSCALER_FILE_BYTES`] is refused before it is read.
pub fn read_state_dict(path: &Path) -> Result<HashMap<String, Tensor>> {
    let meta = std::fs::metadata(path).map_err(|source| UpscaleError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.len() > MAX_UPSCALER_FILE_BYTES {
        return Err(UpscaleError::FileTooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            max: MAX_UPSCALER_FILE_BYTES,
        }
        .into());
    }
    let is_safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if is_safetensors {
        let f = SafetensorsFile::open(path)?;
        let mut out = HashMap::with_capacity(f.entries().len());
        for e in f.entries() {
            let t = tensor(path, &e.name, e.dtype, &e.shape, f.bytes(e))?;
            out.insert(e.name.clone(), t);
        }
        return Ok(out);
    }
    read_pth(path)
}

fn bad(path: &Path, detail: impl Into<String>) -> UpscaleError {
    UpscaleError::BadFile {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// One stored tensor as f32: floats converted; integer buffers (SwinIR's
/// `relative_position_index`, which the network computes itself) as zeros of their shape, only
/// the shape being read.
fn tensor(
    path: &Path,
    name: &str,
    dtype: StorageDtype,
    shape: &[usize],
    bytes: &[u8],
) -> Result<Tensor> {
    let dtype = match dtype {
        StorageDtype::F32 => DType::F32,
        StorageDtype::F16 => DType::F16,
        StorageDtype::BF16 => DType::BF16,
        StorageDtype::F64 => DType::F64,
        StorageDtype::I64 | StorageDtype::I32 => {
            return Ok(Tensor::zeros(shape, DType::F32, &Device::Cpu)?)
        }
        other => {
            return Err(bad(
                path,
                format!("tensor `{name}` is {other}, not a float or an integer buffer"),
            )
            .into())
        }
    };
    Ok(Tensor::from_raw_buffer(bytes, dtype, shape, &Device::Cpu)?.to_dtype(DType::F32)?)
}

/// A PyTorch zip archive's state dict, unwrapped as spandrel does.
fn read_pth(path: &Path) -> Result<HashMap<String, Tensor>> {
    let (archive, root) = TorchArchive::open(path)?;
    let Value::Dict(mut d) = root else {
        return Err(bad(
            path,
            format!("the pickle's root is {}, not a dict", root.describe()),
        )
        .into());
    };
    let wrapper = WRAPPERS.iter().find_map(|w| {
        d.iter()
            .position(|(k, v)| matches!(k, Value::Str(s) if s == w) && matches!(v, Value::Dict(_)))
    });
    if let Some(i) = wrapper {
        d = match d.swap_remove(i).1 {
            Value::Dict(inner) => inner,
            _ => unreachable!("checked to be a dict"),
        };
    }
    // "unwrap single key"
    if d.len() == 1 && matches!(d[0].1, Value::Dict(_)) {
        if let Some((_, Value::Dict(inner))) = d.pop() {
            d = inner;
        }
    }
    let mut out = HashMap::with_capacity(d.len());
    for (k, v) in d {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            continue;
        };
        let ct = archive.tensor(name.clone(), *t)?;
        let t = tensor(path, &name, ct.dtype, &ct.shape, &archive.bytes(&ct))?;
        if out.insert(name.clone(), t).is_some() {
            return Err(bad(path, format!("tensor `{name}` appears twice")).into());
        }
    }
    Ok(out)
}
