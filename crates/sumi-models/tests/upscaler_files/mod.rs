//! Reading the upscaler fixture files: `.pth` state dicts (top-level or in `params` /
//! `params_ema`, f32 or f16, integer buffers too) and `.safetensors`, as f32 tensors.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use sumi_testkit::fixture::tensors;
use sumi_weights::ckpt::TorchArchive;
use sumi_weights::pickle::Value;
use sumi_weights::StorageDtype;

/// A `.pth` state dict (top-level or in `params`/`params_ema`) as f32 tensors; the integer
/// buffers (`relative_position_index`) too.
pub fn read_pth(path: &Path) -> HashMap<String, Tensor> {
    let (archive, root) = TorchArchive::open(path).unwrap();
    let Value::Dict(mut d) = root else {
        panic!("{path:?}: root is not a dict")
    };
    if let Some(i) = d.iter().position(|(k, v)| {
        matches!(k, Value::Str(s) if s == "params_ema" || s == "params")
            && matches!(v, Value::Dict(_))
    }) {
        let Value::Dict(inner) = d.swap_remove(i).1 else {
            unreachable!()
        };
        d = inner;
    }
    let mut out = HashMap::new();
    for (k, v) in d {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            continue;
        };
        let ct = archive.tensor(name.clone(), *t).unwrap();
        let dtype = match ct.dtype {
            StorageDtype::F32 => DType::F32,
            StorageDtype::F16 => DType::F16,
            StorageDtype::I64 => DType::I64,
            other => panic!("{name}: {other}"),
        };
        let bytes = archive.bytes(&ct);
        let t = Tensor::from_raw_buffer(&bytes, dtype, &ct.shape, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        out.insert(name, t);
    }
    assert!(!out.is_empty(), "{path:?}: no tensors");
    out
}

pub fn read_model(dir: &Path, file: &str) -> HashMap<String, Tensor> {
    let path = dir.join(file);
    if file.ends_with(".pth") {
        read_pth(&path)
    } else {
        tensors(&path)
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, t.to_dtype(DType::F32).unwrap()))
            .collect()
    }
}
