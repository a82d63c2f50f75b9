//! Upscaler networks as A1111 v1.10.1 runs them through spandrel 0.4.2: RRDBNet (ESRGAN and
//! its descendants), SRVGGNetCompact, SwinIR and DAT. [`detect`] names the architecture and reads every
//! size from the tensor shapes as spandrel's `ESRGANArch`/`CompactArch` do; [`UpscalerNet::new`]
//! builds the network from a tensor map (no files here). Images are f32 NCHW in [0, 1], in
//! whatever channel order the caller feeds (A1111 feeds BGR).
//!
//! Every size read from the weights is checked against a limit before anything is built, so a
//! crafted state dict gets an [`UpscalerError`], never a panic or a huge allocation.

mod compact;
mod dat;
mod dat_config;
mod layout;
mod ops;
mod rrdb;
mod swinir;
mod swinir_config;
mod window_attention;

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

pub use compact::Compact;
pub use dat::Dat;
pub use dat_config::{DatConfig, DatUpsampler};
pub use layout::{canonicalize, detect, expected_keys, to_old_arch};
pub use ops::{pixel_shuffle, pixel_unshuffle};
pub use rrdb::RrdbNet;
pub use swinir::SwinIr;
pub use swinir_config::{SwinIrConfig, SwinUpsampler};

use crate::error::ModelError;
use crate::precision::Precision;

/// Most feature channels accepted (real files: 64; the activations of a tile scale with it).
pub const MAX_FEATURES: usize = 512;
/// Most RRDB blocks or SRVGG body convolutions accepted (real files: 23 and 32 at most).
pub const MAX_BLOCKS: usize = 256;
/// Most image channels in or out (before a pixel unshuffle).
pub const MAX_IMAGE_CHANNELS: usize = 4;
/// Largest scale accepted.
pub const MAX_SCALE: usize = 8;

/// Why an upscaler state dict cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpscalerError {
    /// No known architecture matches the keys.
    #[error(
        "unknown upscaler architecture: none of the key sets Sumi knows is complete ({looked_for}); \
         the file has {count} tensors, e.g. {sample}"
    )]
    UnknownArchitecture {
        /// The key sets looked for, per architecture.
        looked_for: String,
        /// How many tensors the state dict has.
        count: usize,
        /// A few of its keys.
        sample: String,
    },
    /// An architecture spandrel reads (and A1111 lists) that Sumi does not build yet.
    #[error(
        "{arch} upscalers are not supported yet (Sumi builds ESRGAN/Real-ESRGAN RRDBNet, \
         SRVGGNetCompact, SwinIR and DAT models)"
    )]
    NotBuilt {
        /// spandrel's architecture id.
        arch: &'static str,
    },
    /// The architecture is known but a size or tensor does not fit it.
    #[error("{arch}: {detail}")]
    Invalid {
        /// The architecture.
        arch: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Building or running the network failed (a missing or mis-shaped tensor is named).
    #[error("{arch}: {source}")]
    Model {
        /// The architecture.
        arch: &'static str,
        /// The underlying error.
        #[source]
        source: ModelError,
    },
}

/// Shorthand for results of this module.
pub type Result<T> = std::result::Result<T, UpscalerError>;

/// The key layouts of RRDBNet files spandrel reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsrganLayout {
    /// Old-arch ESRGAN (`model.0`, `model.1.sub.N.RDBk.convj.0`; 4x-UltraSharp and most
    /// community models).
    Old,
    /// Real-ESRGAN / BasicSR (`conv_first`, `body.N.rdbk.convj`, `conv_body`, `conv_up1`, …).
    New,
    /// BSRGAN / RealSR (`conv_first`, `RRDB_trunk.N.RDBk.convj`, `trunk_conv`, `upconv1`, …).
    Bsrgan,
    /// ESRGAN+ (old arch with `conv1x1` in each dense block).
    Plus,
}

/// RRDBNet sizes, as read from the weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsrganConfig {
    /// The layout the file uses.
    pub layout: EsrganLayout,
    /// Channels into the first conv (after a pixel unshuffle: image channels × factor²).
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// Feature channels (`num_feat`, 64 in real files).
    pub num_feat: usize,
    /// RRDB blocks (`num_block`: 23, 6 for Anime6B).
    pub num_block: usize,
    /// Growth channels of the dense blocks (`num_grow_ch`, 32).
    pub num_grow_ch: usize,
    /// 2× upsample steps inside the network.
    pub upsamples: usize,
    /// Pixel-unshuffle factor of Real-ESRGAN x2 (2) and x1 (4) models.
    pub shuffle_factor: Option<usize>,
    /// ESRGAN+ (`conv1x1` in each dense block).
    pub plus: bool,
}

impl EsrganConfig {
    /// The output scale of the whole model (the network's 2^upsamples ÷ unshuffle factor).
    pub fn scale(&self) -> usize {
        (1 << self.upsamples) / self.shuffle_factor.unwrap_or(1)
    }

    /// Image channels in.
    pub fn image_channels(&self) -> usize {
        self.in_channels / self.shuffle_factor.map_or(1, |f| f * f)
    }
}

/// SRVGGNetCompact sizes, as read from the weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactConfig {
    /// Image channels in.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// Feature channels (64).
    pub num_feat: usize,
    /// Body convolutions after the first (`num_conv`: 32 for general-x4v3, 16 for animevideov3).
    pub num_conv: usize,
    /// Upscale factor.
    pub scale: usize,
}

/// An upscaler architecture with its sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpscalerConfig {
    /// RRDBNet (spandrel's `ESRGAN`).
    Esrgan(EsrganConfig),
    /// SRVGGNetCompact (spandrel's `Compact`).
    Compact(CompactConfig),
    /// SwinIR (spandrel's `SwinIR`).
    SwinIr(SwinIrConfig),
    /// DAT (spandrel's `DAT`).
    Dat(DatConfig),
}

impl UpscalerConfig {
    /// spandrel's architecture id (`ESRGAN`, `Compact`).
    pub fn architecture(&self) -> &'static str {
        match self {
            Self::Esrgan(_) => "ESRGAN",
            Self::Compact(_) => "Compact",
            Self::SwinIr(_) => "SwinIR",
            Self::Dat(_) => "DAT",
        }
    }

    /// The output scale.
    pub fn scale(&self) -> usize {
        match self {
            Self::Esrgan(c) => c.scale(),
            Self::Compact(c) => c.scale,
            Self::SwinIr(c) => c.scale,
            Self::Dat(c) => c.scale,
        }
    }

    /// Image channels in and out.
    pub fn channels(&self) -> (usize, usize) {
        match self {
            Self::Esrgan(c) => (c.image_channels(), c.out_channels),
            Self::Compact(c) => (c.in_channels, c.out_channels),
            Self::SwinIr(c) => (c.in_channels, c.in_channels),
            Self::Dat(c) => (c.in_channels, c.in_channels),
        }
    }
}

enum Net {
    Esrgan(Box<RrdbNet>),
    Compact(Compact),
    SwinIr(Box<SwinIr>),
    Dat(Box<Dat>),
}

/// A built upscaler network.
pub struct UpscalerNet {
    config: UpscalerConfig,
    net: Net,
}

impl std::fmt::Debug for UpscalerNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpscalerNet")
            .field("config", &self.config)
            .finish()
    }
}

impl UpscalerNet {
    /// Detects the architecture of a state dict (already unwrapped from `params_ema` and the
    /// like; common `module.`/`netG.` prefixes are removed here) and builds it in `precision`
    /// (bf16: the crate's bf16 convolutions, activations f32; within 2e-2 of f32).
    pub fn new(
        tensors: HashMap<String, Tensor>,
        precision: Precision,
        device: &Device,
    ) -> Result<Self> {
        let dtype = precision.weight_dtype();
        let tensors = canonicalize(tensors);
        let shapes: BTreeMap<String, Vec<usize>> = tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect();
        let config = detect(&shapes)?;
        let arch = config.architecture();
        let model = |source| UpscalerError::Model { arch, source };
        let net = match &config {
            UpscalerConfig::Esrgan(c) => {
                let old = to_old_arch(tensors, c.layout);
                layout::check_unexpected(&config, old.keys())?;
                let vb = VarBuilder::from_tensors(old, dtype, device);
                Net::Esrgan(Box::new(RrdbNet::new(vb, c).map_err(model)?))
            }
            UpscalerConfig::Compact(c) => {
                layout::check_unexpected(&config, tensors.keys())?;
                let vb = VarBuilder::from_tensors(tensors, dtype, device);
                Net::Compact(Compact::new(vb, c).map_err(model)?)
            }
            UpscalerConfig::SwinIr(c) => {
                layout::check_unexpected(&config, tensors.keys())?;
                // f32 whatever the precision: its LayerNorms and attention run in f32
                let vb = VarBuilder::from_tensors(tensors, candle_core::DType::F32, device);
                Net::SwinIr(Box::new(SwinIr::new(vb, c).map_err(model)?))
            }
            UpscalerConfig::Dat(c) => {
                layout::check_unexpected(&config, tensors.keys())?;
                let rpe = &tensors["layers.0.blocks.0.attn.attns.0.rpe_biases"];
                let split = dat_config::split_from_rpe_biases(c, rpe)?;
                // f32 whatever the precision, as SwinIR
                let vb = VarBuilder::from_tensors(tensors, candle_core::DType::F32, device);
                Net::Dat(Box::new(Dat::new(vb, c, split).map_err(model)?))
            }
        };
        Ok(Self { config, net })
    }

    /// The architecture and its sizes.
    pub fn config(&self) -> &UpscalerConfig {
        &self.config
    }

    /// The output scale.
    pub fn scale(&self) -> usize {
        self.config.scale()
    }

    /// Runs the network on f32 `[n, c, h, w]` in [0, 1]; the output is `[n, c', h·s, w·s]`,
    /// not clamped.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let arch = self.config.architecture();
        let (_, c, h, w) = x.dims4().map_err(|e| UpscalerError::Model {
            arch,
            source: e.into(),
        })?;
        let (cin, _) = self.config.channels();
        if c != cin || h == 0 || w == 0 {
            return Err(UpscalerError::Invalid {
                arch,
                detail: format!("input is {c}×{h}×{w}, the network takes {cin} channels"),
            });
        }
        let y = match &self.net {
            Net::Esrgan(n) => n.forward(x),
            Net::Compact(n) => n.forward(x),
            Net::SwinIr(n) => n.forward(x),
            Net::Dat(n) => n.forward(x),
        };
        y.map_err(|source| UpscalerError::Model { arch, source })
    }
}
