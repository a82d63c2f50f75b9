//! Layers loaded again in place, by name: how a caller changes some weights of a built network
//! (extra networks merged into them, or the checkpoint's own weights restored) without building
//! the network again. Each layer keeps the builder prefix it was built under and its shape, and
//! is loaded again through its own constructor, so its weights are decoded and packed exactly
//! as a fresh build decodes and packs them. f32 weights are written into the layer's existing
//! tensors (no new allocation stays behind); packed bf16 weights are replaced.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::{conv_cfg, group_norm, linear, Conv2d, GroupNorm, Kernel, Linear, LinearKind};
use crate::error::Result;

/// A layer of a built network whose weights can be loaded again.
pub trait Reload {
    /// Its canonical name: the builder prefix it was built under (`unet.conv_in`).
    fn name(&self) -> &str;

    /// Loads its weights again from `vb`, a root builder over the same names as the one it was
    /// built from (its tensors may pass through a patch). The layer's tensors are written in
    /// place: they must not be shared outside the network.
    fn reload(&mut self, vb: &VarBuilder) -> Result<()>;
}

/// Copies `src` into `dst`'s storage (same shape and dtype, both contiguous).
fn overwrite(dst: &Tensor, src: &Tensor) -> Result<()> {
    Ok(dst.slice_set(src, 0, 0)?)
}

impl Reload for Conv2d {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn reload(&mut self, vb: &VarBuilder) -> Result<()> {
        let (cin, cout, k, bias) = self.spec.shape;
        let vb = vb.pp(&self.spec.name);
        let fresh = conv_cfg(vb, cin, cout, k, self.stride, self.padding, bias)?;
        if let (Kernel::F32 { weight, bias }, Kernel::F32 { weight: w, bias: b }) =
            (&self.kernel, &fresh.kernel)
        {
            overwrite(weight, w)?;
            return overwrite(bias, b);
        }
        self.kernel = fresh.kernel;
        Ok(())
    }
}

impl Reload for Linear {
    fn name(&self) -> &str {
        &self.name
    }

    fn reload(&mut self, vb: &VarBuilder) -> Result<()> {
        let (cin, cout, bias) = self.shape;
        let fresh = linear(vb.pp(&self.name), cin, cout, bias)?;
        if let (LinearKind::F32(old), LinearKind::F32(new)) = (&self.kind, &fresh.kind) {
            overwrite(old.weight(), new.weight())?;
            if let (Some(a), Some(b)) = (old.bias(), new.bias()) {
                overwrite(a, b)?;
            }
            return Ok(());
        }
        self.kind = fresh.kind;
        Ok(())
    }
}

impl Reload for GroupNorm {
    fn name(&self) -> &str {
        &self.name
    }

    fn reload(&mut self, vb: &VarBuilder) -> Result<()> {
        let channels = self.weight.dim(0)?;
        let fresh = group_norm(vb.pp(&self.name), self.groups, channels, self.eps)?;
        // `inner` shares these tensors' storage
        overwrite(&self.weight, &fresh.weight)?;
        overwrite(&self.bias, &fresh.bias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn builder(map: &VarMap, dtype: DType) -> VarBuilder<'static> {
        VarBuilder::from_varmap(map, dtype, &Device::Cpu)
    }

    #[test]
    fn a_layer_reloads_its_own_tensors_in_place() {
        let first = VarMap::new();
        let vb = builder(&first, DType::F32);
        let init = candle_nn::Init::Const(0.25);
        vb.pp("a.lin")
            .get_with_hints((3, 2), "weight", init)
            .unwrap();
        vb.pp("a.lin").get_with_hints(3, "bias", init).unwrap();
        let mut lin = linear(vb.pp("a").pp("lin"), 2, 3, true).unwrap();
        assert_eq!(lin.name(), "a.lin");
        let LinearKind::F32(before) = &lin.kind else {
            panic!("f32 layer expected")
        };
        let storage = before.weight().clone();
        // a second store under the same names, other values
        let second = VarMap::new();
        let vb2 = builder(&second, DType::F32);
        let init = candle_nn::Init::Const(-1.5);
        vb2.pp("a.lin")
            .get_with_hints((3, 2), "weight", init)
            .unwrap();
        vb2.pp("a.lin").get_with_hints(3, "bias", init).unwrap();
        lin.reload(&vb2).unwrap();
        // written into the same storage: the clone taken before sees the new values
        let v = storage.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v, vec![-1.5; 6]);
        let x = Tensor::ones((1, 2), DType::F32, &Device::Cpu).unwrap();
        let y = candle_core::Module::forward(&lin, &x).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![-4.5; 3]]);
    }
}
