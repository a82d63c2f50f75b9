//! The math of AUTOMATIC1111 v1.10.1's extra networks (`extensions-builtin/Lora`): LoRA/LoCon,
//! LoHa, LoKr, IA3, full/diff, norm, GLoRA, OFT/BOFT, DoRA — tensors in, tensors out. Knows no
//! files and no names: the caller hands each layer's network parts (`"lora_up.weight"`,
//! `"alpha"`, `"hada_w1_a"`, `"dora_scale"`, …) and the layer's weight and bias.
//!
//! A1111 merges in place ("lora_functional" off): for every layer a loaded network touches, each
//! network in prompt order computes `updown, ex_bias = module.calc_updown(weight)` on the weight
//! *after* the previous networks were merged, and `weight += updown`, `bias += ex_bias`
//! ([`merge`], [`merge_each`]). The multiplier A1111 takes from the network (te or unet, by the
//! layer's name) and the network's `dyn_dim` are parameters here.
//!
//! All math is f32 on the CPU. Every shape comes from an untrusted file: every relation torch
//! would refuse is a [`ModelError::Network`](crate::ModelError::Network) naming the type and the
//! part, and no intermediate grows past the layer's weight.

mod common;
mod hada;
mod lokr;
mod lora;
mod lyco;
mod merge;
mod oft;
mod simple;

use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::error::Result;
use common::{Common, Parts};

pub use lyco::factorization;
pub use merge::{merge, merge_each, MergeFailure, MergeOutcome};

/// A1111's module types, in the order `networks.module_types` tries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// `NetworkModuleLora` (LoRA, LoCon, Tucker `lora_mid`, PEFT `lora_A`/`lora_B`).
    Lora,
    /// `NetworkModuleHada` (LoHa).
    Hada,
    /// `NetworkModuleIa3` (IA3).
    Ia3,
    /// `NetworkModuleLokr` (LoKr).
    Lokr,
    /// `NetworkModuleFull` (`diff`, `diff_b`).
    Full,
    /// `NetworkModuleNorm` (`w_norm`, `b_norm`).
    Norm,
    /// `NetworkModuleGLora` (GLoRA).
    Glora,
    /// `NetworkModuleOFT` (OFT, BOFT).
    Oft,
}

impl ModuleKind {
    /// The short name errors use (`"LoRA"`, `"LoHa"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Lora => "LoRA",
            Self::Hada => "LoHa",
            Self::Ia3 => "IA3",
            Self::Lokr => "LoKr",
            Self::Full => "full",
            Self::Norm => "norm",
            Self::Glora => "GLoRA",
            Self::Oft => "OFT",
        }
    }

    /// A1111's class name (`"NetworkModuleLora"`, …).
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Lora => "NetworkModuleLora",
            Self::Hada => "NetworkModuleHada",
            Self::Ia3 => "NetworkModuleIa3",
            Self::Lokr => "NetworkModuleLokr",
            Self::Full => "NetworkModuleFull",
            Self::Norm => "NetworkModuleNorm",
            Self::Glora => "NetworkModuleGLora",
            Self::Oft => "NetworkModuleOFT",
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Lora(lora::Lora),
    Hada(hada::Hada),
    Ia3(simple::Ia3),
    Lokr(lokr::Lokr),
    Full(simple::Stored),
    Norm(simple::Stored),
    Glora(simple::Glora),
    Oft(oft::Oft),
}

/// One network's module for one layer: A1111's `NetworkModule` subclass chosen by its parts.
#[derive(Debug, Clone)]
pub struct NetworkModule {
    kind: Kind,
    common: Common,
}

impl NetworkModule {
    /// A1111's `create_module` over `networks.module_types`: the first type whose required
    /// parts are all present — lora (`lora_up.weight` + `lora_down.weight`, or `lora_A.weight` +
    /// `lora_B.weight`), hada (`hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`), ia3
    /// (`weight`), lokr (`lokr_w1` or `lokr_w1_a` + `lokr_w1_b`, and the same for w2), full
    /// (`diff`), norm (`w_norm` + `b_norm`), glora (`a1.weight`, `a2.weight`, `alpha`,
    /// `b1.weight`, `b2.weight`), oft (`oft_blocks` or `oft_diag`). `Ok(None)` when no type
    /// accepts the parts (A1111 then fails the whole network: "Could not find a module type").
    /// Parts a type does not read are ignored, as in A1111.
    ///
    /// Errors: a part without elements, a scalar part (`alpha`, `scale`, `on_input`) with more
    /// than one value, IA3 without `on_input` — all failures of A1111's load.
    pub fn from_tensors(tensors: &BTreeMap<String, Tensor>) -> Result<Option<Self>> {
        type Detect = fn(&Parts) -> Result<Option<(Kind, Common)>>;
        let detectors: [(&str, Detect); 8] = [
            ("LoRA", |p| {
                Ok(lora::Lora::detect(p)?.map(|(x, c)| (Kind::Lora(x), c)))
            }),
            ("LoHa", |p| {
                Ok(hada::Hada::detect(p)?.map(|(x, c)| (Kind::Hada(x), c)))
            }),
            ("IA3", |p| {
                Ok(simple::Ia3::detect(p)?.map(|(x, c)| (Kind::Ia3(x), c)))
            }),
            ("LoKr", |p| {
                Ok(lokr::Lokr::detect(p)?.map(|(x, c)| (Kind::Lokr(x), c)))
            }),
            ("full", |p| {
                Ok(simple::Stored::detect_full(p)?.map(|(x, c)| (Kind::Full(x), c)))
            }),
            ("norm", |p| {
                Ok(simple::Stored::detect_norm(p)?.map(|(x, c)| (Kind::Norm(x), c)))
            }),
            ("GLoRA", |p| {
                Ok(simple::Glora::detect(p)?.map(|(x, c)| (Kind::Glora(x), c)))
            }),
            ("OFT", |p| {
                Ok(oft::Oft::detect(p)?.map(|(x, c)| (Kind::Oft(x), c)))
            }),
        ];
        for (name, detect) in detectors {
            if let Some((kind, common)) = detect(&Parts::new(name, tensors))? {
                return Ok(Some(Self { kind, common }));
            }
        }
        Ok(None)
    }

    /// Whether [`Self::calc_updown`] gives an `ex_bias` (a change to the layer's bias): only
    /// full and norm modules with a bias difference do.
    pub fn changes_bias(&self) -> bool {
        match &self.kind {
            Kind::Full(s) | Kind::Norm(s) => s.has_ex_bias(),
            _ => false,
        }
    }

    /// Which of A1111's module types this is.
    pub fn kind(&self) -> ModuleKind {
        match self.kind {
            Kind::Lora(_) => ModuleKind::Lora,
            Kind::Hada(_) => ModuleKind::Hada,
            Kind::Ia3(_) => ModuleKind::Ia3,
            Kind::Lokr(_) => ModuleKind::Lokr,
            Kind::Full(_) => ModuleKind::Full,
            Kind::Norm(_) => ModuleKind::Norm,
            Kind::Glora(_) => ModuleKind::Glora,
            Kind::Oft(_) => ModuleKind::Oft,
        }
    }

    /// The checks A1111's module constructors make against the layer (whose weight has shape
    /// `weight_shape`; 2-d linear, 4-d conv, 1-d norm): LoRA only on Linear/Conv2d with parts
    /// that reshape to the layer's kernel, OFT only on Linear/Conv2d. A failure here fails the
    /// whole network's load in A1111 (not one layer); [`NetworkModule::calc_updown`] makes the
    /// same checks.
    pub fn check_layer(&self, weight_shape: &[usize]) -> Result<()> {
        match &self.kind {
            Kind::Lora(l) => l.check_layer(weight_shape),
            Kind::Oft(o) => o.check_layer(weight_shape),
            _ => Ok(()),
        }
    }

    /// A1111's `calc_updown(orig_weight)` including `finalize_updown` (reshape, `calc_scale()`
    /// — `scale`, else `alpha / dim`, else 1 —, DoRA, `multiplier`): the update to add to
    /// `weight` and the bias difference (full's `diff_b`, norm's `b_norm`, times the
    /// multiplier). `updown` has `weight`'s shape wherever it has as many elements; otherwise
    /// the shape A1111 leaves (e.g. the 4 input channels of a LoRA for an inpainting conv_in,
    /// which [`merge`] pads). `dyn_dim` (A1111's `<lora:name:te:unet:dyn>`) keeps the first
    /// `dyn_dim` ranks of a plain LoRA and is ignored by every other type.
    pub fn calc_updown(
        &self,
        weight: &Tensor,
        multiplier: f64,
        dyn_dim: Option<usize>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let w = weight.to_dtype(candle_core::DType::F32)?;
        let c = &self.common;
        match &self.kind {
            Kind::Lora(l) => l.calc_updown(c, &w, multiplier, dyn_dim),
            Kind::Hada(h) => h.calc_updown(c, &w, multiplier),
            Kind::Ia3(x) => x.calc_updown(c, &w, multiplier),
            Kind::Lokr(l) => l.calc_updown(c, &w, multiplier),
            Kind::Full(s) | Kind::Norm(s) => s.calc_updown(c, &w, multiplier),
            Kind::Glora(g) => g.calc_updown(c, &w, multiplier),
            Kind::Oft(o) => o.calc_updown(c, &w, multiplier),
        }
    }
}
