//! Architecture detection by a table of sentinel tensors, and the facts the weights cannot
//! show (prediction type, attention heads), from the architecture's rules unless a config says
//! otherwise.

use std::path::PathBuf;

use crate::config::{read_json, read_ldm_yaml, sibling_yaml, LdmYaml as LdmHeads};
use crate::error::{Result, WeightsError};
use crate::store::{Format, Weights};

/// Model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Stable Diffusion 1.x (CLIP ViT-L/14 text encoder).
    Sd1,
    /// Stable Diffusion 2.x (OpenCLIP ViT-H/14 text encoder).
    Sd2,
    /// Stable Diffusion XL base (CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 text encoders, ADM
    /// input), SDXL inpainting included.
    Sdxl,
    /// The SDXL refiner (OpenCLIP ViT-bigG/14 only, aesthetic-score ADM input).
    SdxlRefiner,
}

impl Family {
    /// Whether this is an SDXL family (base or refiner).
    pub fn is_sdxl(self) -> bool {
        matches!(self, Self::Sdxl | Self::SdxlRefiner)
    }
}

/// What the model's output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// The added noise (ε).
    Epsilon,
    /// The velocity v = α·ε − σ·x₀.
    V,
}

impl std::str::FromStr for Prediction {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "eps" | "epsilon" => Ok(Self::Epsilon),
            "v" | "v_prediction" | "v-prediction" => Ok(Self::V),
            _ => Err(format!(
                "unknown prediction type `{s}` (expected `epsilon` or `v`)"
            )),
        }
    }
}

/// Where the prediction type came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PredictionSource {
    /// Given by the caller.
    Override,
    /// A sibling LDM yaml's `parameterization`.
    Yaml(PathBuf),
    /// The safetensors metadata `modelspec.prediction_type`.
    Metadata,
    /// A diffusers `scheduler/scheduler_config.json`.
    DiffusersConfig,
    /// The architecture's rule (SD1, SD2 inpainting and SDXL are ε).
    Rule,
    /// A1111's test forward of the U-Net (see `sumi-models`).
    UnetTest,
}

/// How the U-Net's attention heads are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heads {
    /// A fixed number of heads in every transformer (SD1: 8), or one count per level.
    Count(Vec<usize>),
    /// A fixed head width in channels (SD2: 64).
    Channels(usize),
}

impl Heads {
    /// The number of heads for a transformer of `channels` at down level `level`.
    pub fn heads(&self, channels: usize, level: usize) -> usize {
        match self {
            Self::Count(v) => v.get(level).or(v.last()).copied().unwrap_or(1).max(1),
            Self::Channels(c) => (channels / (*c).max(1)).max(1),
        }
    }
}

/// Everything known about a checkpoint before its networks run.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFacts {
    /// SD1, SD2, SDXL or the SDXL refiner.
    pub family: Family,
    /// A 9-channel inpainting U-Net.
    pub inpaint: bool,
    /// The prediction type and its source; `None` when only A1111's U-Net test can tell (SD2).
    pub prediction: Option<(Prediction, PredictionSource)>,
    /// U-Net attention heads.
    pub unet_heads: Heads,
    /// U-Net context width override from a yaml (otherwise the weights' shapes tell).
    pub context_dim: Option<usize>,
    /// The `text_encoder.` activation: `true` for GELU (OpenCLIP, SD2), `false` for
    /// quick-GELU (SD1, SDXL's CLIP-L). SDXL's `text_encoder_2.` (bigG) is always GELU.
    pub clip_gelu: bool,
    /// The token the first text encoder pads prompts with (SD1 and SDXL's CLIP-L 49407, SD2
    /// 0; the SDXL refiner, which has only bigG, 0).
    pub clip_pad_token: u32,
}

impl ModelFacts {
    /// The architecture name `model-info` prints: `sd1`, `sd1-inpaint`, `sd2`, `sd2-v`,
    /// `sd2-inpaint`, `sdxl`, `sdxl-inpaint`, `sdxl-refiner`; `prediction` is the resolved
    /// type (reported on its own for SDXL).
    pub fn architecture(&self, prediction: Prediction) -> &'static str {
        match (self.family, self.inpaint, prediction) {
            (Family::Sdxl, false, _) => "sdxl",
            (Family::Sdxl, true, _) => "sdxl-inpaint",
            (Family::SdxlRefiner, _, _) => "sdxl-refiner",
            (Family::Sd1, false, _) => "sd1",
            (Family::Sd1, true, _) => "sd1-inpaint",
            (Family::Sd2, true, _) => "sd2-inpaint",
            (Family::Sd2, false, Prediction::Epsilon) => "sd2",
            (Family::Sd2, false, Prediction::V) => "sd2-v",
        }
    }
}

/// What a sentinel key says.
#[derive(Debug, Clone, Copy)]
enum Sentinel {
    Known(Family),
    Refused(&'static str),
}

/// Sentinel tensors of single-file checkpoints, checked in order.
const SENTINELS: &[(&str, Sentinel)] = &[
    (
        "conditioner.embedders.1.model.ln_final.weight",
        Sentinel::Known(Family::Sdxl),
    ),
    (
        "conditioner.embedders.0.model.ln_final.weight",
        Sentinel::Known(Family::SdxlRefiner),
    ),
    (
        "model.diffusion_model.x_embedder.proj.weight",
        Sentinel::Refused("SD3"),
    ),
    (
        "model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale",
        Sentinel::Refused("Flux"),
    ),
    (
        "double_blocks.0.img_attn.norm.key_norm.scale",
        Sentinel::Refused("Flux"),
    ),
    (
        "embedder.model.ln_final.weight",
        Sentinel::Refused("SD2 unCLIP"),
    ),
    (
        "depth_model.model.pretrained.act_postprocess3.0.project.0.bias",
        Sentinel::Refused("SD2 depth"),
    ),
    (
        "cond_stage_model.roberta.embeddings.word_embeddings.weight",
        Sentinel::Refused("AltDiffusion"),
    ),
    (
        "cond_stage_model.model.ln_final.weight",
        Sentinel::Known(Family::Sd2),
    ),
    (
        "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
        Sentinel::Known(Family::Sd2),
    ),
    (
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        Sentinel::Known(Family::Sd1),
    ),
    (
        "cond_stage_model.transformer.final_layer_norm.weight",
        Sentinel::Known(Family::Sd1),
    ),
];

fn unknown(w: &Weights, detail: impl Into<String>) -> WeightsError {
    WeightsError::UnknownArchitecture {
        path: w.path().to_path_buf(),
        detail: detail.into(),
    }
}

fn family(w: &Weights) -> Result<Family> {
    if w.format() == Format::Diffusers {
        let dir = w.path();
        if dir.join("text_encoder_2").is_dir() {
            // diffusers' SDXL refiner folders have no `text_encoder`
            return Ok(if dir.join("text_encoder").is_dir() {
                Family::Sdxl
            } else {
                Family::SdxlRefiner
            });
        }
        let cfg = read_json(&dir.join("text_encoder/config.json"))?;
        let act = cfg
            .as_ref()
            .and_then(|c| c["hidden_act"].as_str().map(str::to_string));
        return match act.as_deref() {
            Some("gelu") => Ok(Family::Sd2),
            Some("quick_gelu") => Ok(Family::Sd1),
            _ => match w.shape("text_encoder.final_layer_norm.weight").map(|s| s[0]) {
                Some(768) => Ok(Family::Sd1),
                Some(1024) => Ok(Family::Sd2),
                _ => Err(unknown(w, "text_encoder/config.json has no hidden_act and the text encoder width is not 768 or 1024")),
            },
        };
    }
    let keys: std::collections::HashSet<&str> = w.raw_keys().collect();
    for (key, s) in SENTINELS {
        if keys.contains(key) {
            return match s {
                Sentinel::Known(f) => Ok(*f),
                Sentinel::Refused(a) => Err(WeightsError::Unsupported {
                    path: w.path().to_path_buf(),
                    architecture: (*a).into(),
                }),
            };
        }
    }
    Err(unknown(
        w,
        format!(
            "none of the known sentinel tensors is present ({} tensors, e.g. `{}`)",
            keys.len(),
            w.raw_keys().next().unwrap_or("none")
        ),
    ))
}

/// Detects the architecture of `w` and gathers the facts the weights cannot show. An explicit
/// `prediction` wins over every other source.
pub fn detect(w: &Weights, prediction: Option<Prediction>) -> Result<ModelFacts> {
    let family = family(w)?;
    let encoders: &[&str] = match family {
        Family::Sd1 | Family::Sd2 => &["text_encoder.final_layer_norm.weight"],
        Family::Sdxl => &[
            "text_encoder.final_layer_norm.weight",
            "text_encoder_2.final_layer_norm.weight",
            "text_encoder_2.text_projection.weight",
        ],
        Family::SdxlRefiner => &[
            "text_encoder_2.final_layer_norm.weight",
            "text_encoder_2.text_projection.weight",
        ],
    };
    let required = ["unet.conv_in.weight", "vae.decoder.conv_in.weight"];
    for required in required.iter().chain(encoders) {
        if !w.contains(required) {
            return Err(WeightsError::MissingTensor {
                path: w.path().to_path_buf(),
                name: (*required).into(),
            });
        }
    }
    let in_ch = w
        .shape("unet.conv_in.weight")
        .and_then(|s| s.get(1).copied())
        .unwrap_or(0);
    let inpaint = match in_ch {
        4 => false,
        9 => true,
        8 => {
            return Err(WeightsError::Unsupported {
                path: w.path().to_path_buf(),
                architecture: "instruct-pix2pix".into(),
            })
        }
        n => return Err(unknown(w, format!("U-Net with {n} input channels"))),
    };
    let yaml = match w.format() {
        Format::Diffusers => None,
        _ => sibling_yaml(w.path())
            .map(|p| read_ldm_yaml(&p))
            .transpose()?,
    };
    let unet_cfg = match w.format() {
        Format::Diffusers => read_json(&w.path().join("unet/config.json"))?,
        _ => None,
    };
    let parse = |s: &str| s.parse::<Prediction>().ok();
    let resolved = if let Some(p) = prediction {
        Some((p, PredictionSource::Override))
    } else if let Some(p) = yaml
        .as_ref()
        .and_then(|y| y.parameterization.as_deref())
        .and_then(parse)
    {
        Some((
            p,
            PredictionSource::Yaml(yaml.as_ref().map(|y| y.path.clone()).unwrap_or_default()),
        ))
    } else if let Some(p) = w
        .metadata()
        .get("modelspec.prediction_type")
        .and_then(|s| parse(s))
    {
        Some((p, PredictionSource::Metadata))
    } else if let Some(p) = (w.format() == Format::Diffusers)
        .then(|| read_json(&w.path().join("scheduler/scheduler_config.json")))
        .transpose()?
        .flatten()
        .and_then(|c| c["prediction_type"].as_str().and_then(parse))
    {
        Some((p, PredictionSource::DiffusersConfig))
    } else if family != Family::Sd2 || inpaint {
        Some((Prediction::Epsilon, PredictionSource::Rule))
    } else {
        None
    };
    let diffusers_heads = unet_cfg.as_ref().and_then(|c| {
        let v = &c["attention_head_dim"];
        v.as_u64().map(|n| vec![n as usize]).or_else(|| {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64())
                    .map(|n| n as usize)
                    .collect()
            })
        })
    });
    let unet_heads = match (yaml.as_ref(), diffusers_heads) {
        (
            Some(LdmHeads {
                num_heads: Some(n), ..
            }),
            _,
        ) => Heads::Count(vec![*n]),
        (
            Some(LdmHeads {
                num_head_channels: Some(c),
                ..
            }),
            _,
        ) => Heads::Channels(*c),
        (_, Some(v)) if !v.is_empty() => Heads::Count(v),
        _ => match family {
            Family::Sd1 => Heads::Count(vec![8]),
            Family::Sd2 | Family::Sdxl | Family::SdxlRefiner => Heads::Channels(64),
        },
    };
    Ok(ModelFacts {
        family,
        inpaint,
        prediction: resolved,
        unet_heads,
        context_dim: yaml.as_ref().and_then(|y| y.context_dim),
        clip_gelu: family == Family::Sd2,
        clip_pad_token: match family {
            Family::Sd1 | Family::Sdxl => 49407,
            Family::Sd2 | Family::SdxlRefiner => 0,
        },
    })
}
