//! Hypernetworks as A1111 v1.10.1 applies them (`modules/hypernetworks/hypernetwork.py`):
//! small MLPs that change the context a cross-attention layer's `to_k` and `to_v` see.
//!
//! A `HypernetworkModule` of width `dim` is `torch.nn.Sequential` built from
//! `layer_structure` `[1, …, 1]`: for each step `i` a `Linear(int(dim·s[i]), int(dim·s[i+1]))`,
//! then the activation (none for `linear`/`None`, and none after the last linear layer unless
//! `activate_output`), then a `LayerNorm` when `add_layer_norm`, then a `Dropout` where
//! `dropout_structure[i+1] > 0` (an identity when generating, but it takes a place in the
//! numbering of the state dict's `linear.N.*` names). Its output is `x + linear(x) · multiplier`.
//!
//! A hypernetwork holds a (k, v) pair of modules per context width. Every cross-attention of
//! the U-Net (`attention_CrossAttention_forward` and the optimized forwards alike) runs the
//! loaded hypernetworks in order on its context, each picking the pair for the context's last
//! dimension: the text context (768, 1024; SDXL's 2048) in `attn2`, and in `attn1`, whose
//! context is `x` itself, the block's width (320, 640, 1280). Knows nothing of files.

use std::str::FromStr;
use std::sync::Arc;

use candle_core::{DType, Tensor, D};
use candle_nn::{LayerNorm, Module};

use crate::error::{ModelError, Result};

/// Widest layer accepted (`int(dim · layer_structure[i])`).
pub const MAX_LAYER_WIDTH: usize = 1 << 17;

/// An activation function of A1111's `activation_dict` (its own names and the lowercased
/// `torch.nn` activation classes that take no constructor arguments and act elementwise),
/// with torch's default parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `relu`.
    Relu,
    /// `leakyrelu` (negative slope 0.01).
    LeakyRelu,
    /// `elu` (α = 1).
    Elu,
    /// `swish` and `hardswish`: both are `torch.nn.Hardswish` in A1111.
    Hardswish,
    /// `tanh`.
    Tanh,
    /// `sigmoid`.
    Sigmoid,
    /// `rrelu`: when not training, a leaky ReLU of slope (1/8 + 1/3) / 2.
    RRelu,
    /// `hardtanh` (−1, 1).
    Hardtanh,
    /// `relu6`.
    Relu6,
    /// `hardsigmoid`.
    Hardsigmoid,
    /// `silu`.
    Silu,
    /// `mish`.
    Mish,
    /// `celu` (α = 1).
    Celu,
    /// `selu`.
    Selu,
    /// `gelu` (erf form).
    Gelu,
    /// `hardshrink` (λ = 0.5).
    Hardshrink,
    /// `logsigmoid`.
    LogSigmoid,
    /// `softplus` (β = 1, threshold 20).
    Softplus,
    /// `softshrink` (λ = 0.5).
    Softshrink,
    /// `prelu`: one learned slope, the state dict's `linear.N.weight`.
    PRelu,
    /// `softsign`.
    Softsign,
    /// `tanhshrink`.
    Tanhshrink,
}

impl FromStr for Activation {
    type Err = ModelError;

    /// A1111's `activation_func` names. `linear` is not an activation here (no layer is
    /// added for it); the classes A1111 lists that cannot work in a module (`threshold`,
    /// `multiheadattention` need constructor arguments, `glu` halves the width, the softmax
    /// family normalises across the batch) are refused with their name.
    fn from_str(s: &str) -> Result<Self> {
        use Activation::*;
        Ok(match s {
            "relu" => Relu,
            "leakyrelu" => LeakyRelu,
            "elu" => Elu,
            "swish" | "hardswish" => Hardswish,
            "tanh" => Tanh,
            "sigmoid" => Sigmoid,
            "rrelu" => RRelu,
            "hardtanh" => Hardtanh,
            "relu6" => Relu6,
            "hardsigmoid" => Hardsigmoid,
            "silu" => Silu,
            "mish" => Mish,
            "celu" => Celu,
            "selu" => Selu,
            "gelu" => Gelu,
            "hardshrink" => Hardshrink,
            "logsigmoid" => LogSigmoid,
            "softplus" => Softplus,
            "softshrink" => Softshrink,
            "prelu" => PRelu,
            "softsign" => Softsign,
            "tanhshrink" => Tanhshrink,
            other => {
                return Err(ModelError::Config {
                    component: "hypernetwork",
                    detail: format!("unsupported activation function: {other}"),
                })
            }
        })
    }
}

/// torch's `F.selu` constants.
const SELU_ALPHA: f32 = 1.673_263_2;
const SELU_SCALE: f32 = 1.050_701;

impl Activation {
    /// The function on one value, as torch computes it in f32 (for the ones without
    /// parameters; [`Activation::PRelu`] and [`Activation::Gelu`] are applied elsewhere).
    fn scalar(self, x: f32) -> f32 {
        use Activation::*;
        let softplus = |x: f32| if x > 20.0 { x } else { x.exp().ln_1p() };
        match self {
            Relu => x.max(0.0),
            LeakyRelu => leaky(x, 0.01),
            RRelu => leaky(x, (1.0 / 8.0 + 1.0 / 3.0) / 2.0),
            Elu | Celu => {
                if x > 0.0 {
                    x
                } else {
                    x.exp_m1()
                }
            }
            Selu => SELU_SCALE * if x > 0.0 { x } else { SELU_ALPHA * x.exp_m1() },
            Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Hardsigmoid => {
                if x <= -3.0 {
                    0.0
                } else if x >= 3.0 {
                    1.0
                } else {
                    x / 6.0 + 0.5
                }
            }
            Tanh => x.tanh(),
            Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Silu => x / (1.0 + (-x).exp()),
            Mish => x * softplus(x).tanh(),
            Hardtanh => x.clamp(-1.0, 1.0),
            Relu6 => x.clamp(0.0, 6.0),
            Hardshrink => {
                if x.abs() > 0.5 {
                    x
                } else {
                    0.0
                }
            }
            Softshrink => {
                if x > 0.5 {
                    x - 0.5
                } else if x < -0.5 {
                    x + 0.5
                } else {
                    0.0
                }
            }
            LogSigmoid => x.min(0.0) - (-x.abs()).exp().ln_1p(),
            Softplus => softplus(x),
            Softsign => x / (1.0 + x.abs()),
            Tanhshrink => x - x.tanh(),
            PRelu | Gelu => x,
        }
    }
}

fn leaky(x: f32, slope: f32) -> f32 {
    if x >= 0.0 {
        x
    } else {
        x * slope
    }
}

fn map_f32(x: &Tensor, f: impl Fn(f32) -> f32) -> Result<Tensor> {
    let v: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let v: Vec<f32> = v.into_iter().map(f).collect();
    Ok(Tensor::from_vec(v, x.shape(), x.device())?)
}

/// The settings a hypernetwork's modules share (A1111's `Hypernetwork` fields).
#[derive(Debug, Clone, PartialEq)]
pub struct HypernetworkSpec {
    /// `layer_structure`: widths as multiples of the context width, first and last 1.
    pub layer_structure: Vec<f64>,
    /// The activation; `None` for `linear` or none.
    pub activation: Option<Activation>,
    /// `add_layer_norm`.
    pub add_layer_norm: bool,
    /// `activate_output`.
    pub activate_output: bool,
    /// `dropout_structure` (at least as long as `layer_structure`).
    pub dropout_structure: Vec<f64>,
}

enum Layer {
    Linear { weight: Tensor, bias: Tensor },
    Activation(Activation),
    PRelu(Tensor),
    Norm(LayerNorm),
    Dropout,
}

/// One `HypernetworkModule` (weights in f32).
pub struct HypernetworkModule {
    layers: Vec<Layer>,
}

fn config(detail: String) -> ModelError {
    ModelError::Config {
        component: "hypernetwork",
        detail,
    }
}

impl HypernetworkModule {
    /// Builds the module of width `dim` from its state dict (`linear.N.weight`, …), as
    /// `load_state_dict` (strict) loads it: a missing, mis-shaped or unexpected tensor is an
    /// error naming it.
    pub fn new(dim: usize, spec: &HypernetworkSpec, tensors: &[(String, Tensor)]) -> Result<Self> {
        let s = &spec.layer_structure;
        if s.first() != Some(&1.0) || s.last() != Some(&1.0) {
            return Err(config(format!(
                "layer structure {s:?} does not start and end with 1"
            )));
        }
        if spec.dropout_structure.len() < s.len() {
            return Err(config(format!(
                "dropout structure {:?} is shorter than the layer structure {s:?}",
                spec.dropout_structure
            )));
        }
        let width = |f: f64| {
            let w = (dim as f64 * f).trunc();
            if w >= 1.0 && w <= MAX_LAYER_WIDTH as f64 {
                Ok(w as usize)
            } else {
                Err(config(format!("layer width {dim} × {f} is out of range")))
            }
        };
        let mut used = vec![false; tensors.len()];
        let mut take = |name: String, shape: &[usize]| -> Result<Tensor> {
            let i = tensors
                .iter()
                .position(|(n, _)| *n == name)
                .ok_or_else(|| config(format!("width {dim}: missing tensor `{name}`")))?;
            used[i] = true;
            let t = &tensors[i].1;
            if t.dims() != shape {
                return Err(config(format!(
                    "width {dim}: `{name}` has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            Ok(t.to_dtype(DType::F32)?)
        };
        let mut layers = Vec::new();
        let n = s.len();
        for i in 0..n - 1 {
            let (cin, cout) = (width(s[i])?, width(s[i + 1])?);
            let at = layers.len();
            layers.push(Layer::Linear {
                weight: take(format!("linear.{at}.weight"), &[cout, cin])?,
                bias: take(format!("linear.{at}.bias"), &[cout])?,
            });
            let last = i + 2 >= n;
            match spec.activation {
                Some(a) if !last || spec.activate_output => {
                    let at = layers.len();
                    layers.push(match a {
                        Activation::PRelu => {
                            Layer::PRelu(take(format!("linear.{at}.weight"), &[1])?)
                        }
                        a => Layer::Activation(a),
                    });
                }
                _ => {}
            }
            if spec.add_layer_norm {
                let at = layers.len();
                let w = take(format!("linear.{at}.weight"), &[cout])?;
                let b = take(format!("linear.{at}.bias"), &[cout])?;
                layers.push(Layer::Norm(LayerNorm::new(w, b, 1e-5)));
            }
            let p = spec.dropout_structure[i + 1];
            if p > 0.0 {
                if p >= 1.0 {
                    return Err(config(format!(
                        "dropout probability {p} is not between 0 and 1"
                    )));
                }
                // a Dropout: nothing when generating, but it takes its place in the numbering
                layers.push(Layer::Dropout);
            }
        }
        if let Some(i) = used.iter().position(|u| !u) {
            return Err(config(format!(
                "width {dim}: unexpected tensor `{}`",
                tensors[i].0
            )));
        }
        Ok(Self { layers })
    }

    /// `x + linear(x) · multiplier` for `x` `[…, dim]` in f32.
    pub fn forward(&self, x: &Tensor, multiplier: f64) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = match layer {
                Layer::Linear { weight, bias } => {
                    h.broadcast_matmul(&weight.t()?)?.broadcast_add(bias)?
                }
                Layer::Activation(Activation::Gelu) => h.gelu_erf()?,
                Layer::Activation(a) => {
                    let a = *a;
                    map_f32(&h, move |v| a.scalar(v))?
                }
                Layer::PRelu(w) => {
                    let w: f32 = w.flatten_all()?.to_vec1::<f32>()?[0];
                    map_f32(&h, move |v| if v > 0.0 { v } else { w * v })?
                }
                Layer::Norm(n) => n.forward(&h)?,
                Layer::Dropout => h,
            };
        }
        Ok((x + h.affine(multiplier, 0.0)?)?)
    }
}

/// A hypernetwork: a (k, v) module pair per context width.
pub struct Hypernetwork {
    sizes: Vec<(usize, HypernetworkModule, HypernetworkModule)>,
}

impl Hypernetwork {
    /// Builds every module: `sizes` gives each width with its k and v state dicts.
    pub fn new<'a>(
        spec: &HypernetworkSpec,
        sizes: impl IntoIterator<Item = (usize, &'a [(String, Tensor)], &'a [(String, Tensor)])>,
    ) -> Result<Self> {
        let mut out: Vec<(usize, HypernetworkModule, HypernetworkModule)> = Vec::new();
        for (dim, k, v) in sizes {
            let pair = (
                dim,
                HypernetworkModule::new(dim, spec, k)?,
                HypernetworkModule::new(dim, spec, v)?,
            );
            // a dict key given twice: the later value
            out.retain(|(d, _, _)| *d != dim);
            out.push(pair);
        }
        Ok(Self { sizes: out })
    }

    /// The context widths it changes.
    pub fn widths(&self) -> Vec<usize> {
        self.sizes.iter().map(|(d, _, _)| *d).collect()
    }

    /// The (k, v) modules for contexts of width `dim`, if it has them.
    pub fn modules(&self, dim: usize) -> Option<(&HypernetworkModule, &HypernetworkModule)> {
        self.sizes
            .iter()
            .find(|(d, _, _)| *d == dim)
            .map(|(_, k, v)| (k, v))
    }
}

/// The hypernetworks of a job, in prompt order, each with its multiplier (A1111's
/// `shared.loaded_hypernetworks`). Empty: attention as without them.
#[derive(Clone, Default)]
pub struct Hypernetworks {
    list: Vec<(Arc<Hypernetwork>, f64)>,
}

/// No hypernetwork.
pub static NO_HYPERNETWORKS: Hypernetworks = Hypernetworks { list: Vec::new() };

impl Hypernetworks {
    /// The hypernetworks to apply, in order, with their multipliers.
    pub fn new(list: Vec<(Arc<Hypernetwork>, f64)>) -> Self {
        Self { list }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// A1111's `apply_hypernetworks`: the contexts `to_k` and `to_v` see, each hypernetwork
    /// that has modules for the context's width applied in turn (in f32, then back to the
    /// context's dtype). `None` when none of them has modules for that width.
    pub fn apply(&self, context: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
        let dim = context.dim(D::Minus1)?;
        let mut kv: Option<(Tensor, Tensor)> = None;
        for (h, mult) in &self.list {
            let Some((mk, mv)) = h.modules(dim) else {
                continue;
            };
            let (k, v) = match kv.take() {
                Some(kv) => kv,
                None => {
                    let c = context.to_dtype(DType::F32)?;
                    (c.clone(), c)
                }
            };
            kv = Some((mk.forward(&k, *mult)?, mv.forward(&v, *mult)?));
        }
        let dt = context.dtype();
        kv.map(|(k, v)| Ok((k.to_dtype(dt)?, v.to_dtype(dt)?)))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn spec(activation: Option<Activation>, norm: bool, dropout: [f64; 3]) -> HypernetworkSpec {
        HypernetworkSpec {
            layer_structure: vec![1.0, 1.5, 1.0],
            activation,
            add_layer_norm: norm,
            activate_output: false,
            dropout_structure: dropout.to_vec(),
        }
    }

    fn t(shape: &[usize], v: f32) -> Tensor {
        Tensor::full(v, shape, &Device::Cpu).unwrap()
    }

    /// A1111's numbering: Linear, activation, LayerNorm, Dropout take places in turn
    /// (`[1, 1.5, 1]` at width 2 → 3 wide in the middle).
    fn numbered() -> Vec<(String, Tensor)> {
        [
            ("linear.0.weight", t(&[3, 2], 0.5)),
            ("linear.0.bias", t(&[3], -0.25)),
            ("linear.2.weight", t(&[3], 1.0)),
            ("linear.2.bias", t(&[3], 0.0)),
            ("linear.4.weight", t(&[2, 3], 1.0)),
            ("linear.4.bias", t(&[2], 0.125)),
            ("linear.5.weight", t(&[2], 2.0)),
            ("linear.5.bias", t(&[2], 0.5)),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect()
    }

    #[test]
    fn state_dict_numbering_and_strictness() {
        let s = spec(Some(Activation::Relu), true, [0.0, 0.3, 0.0]);
        let m = HypernetworkModule::new(2, &s, &numbered()).unwrap();
        // linear.0: 0.5·(1 + 3) − 0.25 = 1.75 in all three; relu; layer norm of a constant
        // row: 0; linear.4: 0.125; layer norm: 0 · 2 + 0.5 = 0.5 → x + 0.5 · 2
        let x = Tensor::new(&[[[1f32, 3.0]]], &Device::Cpu).unwrap();
        let y: Vec<f32> = m
            .forward(&x, 2.0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(y, [2.0, 4.0]);
        // without the dropout, the places shift and the names no longer fit
        let e = HypernetworkModule::new(
            2,
            &spec(Some(Activation::Relu), true, [0.0; 3]),
            &numbered(),
        );
        assert!(e
            .err()
            .unwrap()
            .to_string()
            .contains("missing tensor `linear.3.weight`"));
        let mut extra = numbered();
        extra.push(("linear.9.weight".into(), t(&[1], 0.0)));
        let e = HypernetworkModule::new(2, &s, &extra)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unexpected tensor `linear.9.weight`"), "{e}");
        let mut wrong = numbered();
        wrong[0].1 = t(&[2, 2], 0.0);
        let e = HypernetworkModule::new(2, &s, &wrong)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("`linear.0.weight` has shape [2, 2], expected [3, 2]"),
            "{e}"
        );
        let bad = HypernetworkSpec {
            layer_structure: vec![2.0, 1.0],
            ..s.clone()
        };
        assert!(HypernetworkModule::new(2, &bad, &numbered()).is_err());
        assert!(
            HypernetworkModule::new(2, &spec(None, true, [0.0, 1.0, 0.0]), &numbered()).is_err()
        );
    }

    #[test]
    fn activation_names_and_values() {
        assert_eq!(
            "swish".parse::<Activation>().unwrap(),
            Activation::Hardswish
        );
        let e = "softmax".parse::<Activation>().unwrap_err().to_string();
        assert!(
            e.contains("unsupported activation function: softmax"),
            "{e}"
        );
        // torch's values at a few points
        assert_eq!(Activation::Hardswish.scalar(1.0), 1.0 * 4.0 / 6.0);
        assert_eq!(Activation::LeakyRelu.scalar(-2.0), -0.02);
        assert_eq!(Activation::Relu6.scalar(7.0), 6.0);
        assert_eq!(Activation::Softshrink.scalar(-0.75), -0.25);
        assert_eq!(Activation::Hardsigmoid.scalar(0.0), 0.5);
        assert!((Activation::Softplus.scalar(0.0) - std::f32::consts::LN_2).abs() < 1e-7);
    }

    #[test]
    fn chain_skips_other_widths() {
        let none = Hypernetworks::default();
        let x = t(&[1, 2, 4], 1.0);
        assert!(none.apply(&x).unwrap().is_none());
        let s = HypernetworkSpec {
            layer_structure: vec![1.0],
            activation: None,
            add_layer_norm: false,
            activate_output: false,
            dropout_structure: vec![0.0],
        };
        // an empty Sequential: linear(x) = x, so x + x · m
        let h = Arc::new(Hypernetwork::new(&s, [(4, &[][..], &[][..])]).unwrap());
        let two = Hypernetworks::new(vec![(h.clone(), 0.5), (h, -1.0)]);
        let (k, v) = two.apply(&x).unwrap().unwrap();
        let k: Vec<f32> = k.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(k, [0.0; 8]); // 1 · 1.5 · 0
        assert_eq!(v.dims(), [1, 2, 4]);
        assert!(two.apply(&t(&[1, 2, 3], 1.0)).unwrap().is_none());
    }
}
