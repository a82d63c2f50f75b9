//! A checkpoint opened and identified: its weights, the facts detection found, the resolved
//! prediction type, and constructors for its networks.

use std::path::Path;

use candle_core::{DType, Device};
use sumi_models::nn::Reload;
use sumi_models::{ClipConfig, ClipTextModel, UNet, UNetConfig, Vae, VaeConfig};
use sumi_weights::layout::{TEXT_ENCODER, TEXT_ENCODER_2, UNET, VAE};
use sumi_weights::{detect, ModelFacts, Prediction, PredictionSource, TensorPatch, Weights};

use crate::error::{PipelineError, Result};

/// SDXL's latent scale factor (SGM's `scale_factor`).
pub const SDXL_VAE_SCALE: f64 = 0.13025;

/// What remains known of a checkpoint once its networks are built and its file is closed.
#[derive(Debug, Clone)]
pub struct ModelIdentity {
    /// The checkpoint's path (file or folder).
    pub path: std::path::PathBuf,
    /// Its container format.
    pub format: sumi_weights::Format,
    /// What detection found.
    pub facts: ModelFacts,
    /// The prediction type in force.
    pub prediction: Prediction,
    /// The architecture name (`sd1`, `sd2-v`, …).
    pub architecture: &'static str,
}

/// An identified checkpoint.
pub struct Checkpoint {
    /// The weights under canonical names.
    pub weights: Weights,
    /// What detection found.
    pub facts: ModelFacts,
    /// The prediction type in force.
    pub prediction: Prediction,
    /// Where it came from.
    pub prediction_source: PredictionSource,
}

impl Checkpoint {
    /// Opens and identifies `path` for generation; `prediction` overrides every other source.
    /// SD2 checkpoints with nothing saying ε or v get A1111's U-Net test (one small forward in
    /// f32). An SDXL refiner is refused: it is no model of its own (A1111 runs it after a base
    /// model).
    pub fn open(path: &Path, prediction: Option<Prediction>) -> Result<Self> {
        let ck = Self::identify(path, prediction)?;
        ck.refuse_unrun()?;
        Ok(ck)
    }

    /// Opens and identifies `path`, whatever recognised architecture it is (SDXL base,
    /// inpainting and refiner included): for reports such as `sumi model-info`.
    pub fn identify(path: &Path, prediction: Option<Prediction>) -> Result<Self> {
        let mut ck = Self::identify_unresolved(path, prediction)?;
        if ck.needs_unet_test() {
            let unet = ck.unet(DType::F32, &Device::Cpu)?;
            ck.resolve_with(&unet)?;
        }
        Ok(ck)
    }

    /// Opens and identifies `path` for generation without running A1111's U-Net test; see
    /// [`Self::needs_unet_test`] and [`Self::resolve_with`] (for callers that build the U-Net
    /// anyway and should not build it twice). An SDXL refiner is refused as in [`Self::open`].
    pub fn open_unresolved(path: &Path, prediction: Option<Prediction>) -> Result<Self> {
        let ck = Self::identify_unresolved(path, prediction)?;
        ck.refuse_unrun()?;
        Ok(ck)
    }

    /// Opens and identifies `path` as another checkpoint of a job (a refiner, a hires
    /// checkpoint): an SDXL refiner is accepted; detection alone says ε or v (no override).
    pub(crate) fn open_stage_unresolved(path: &Path) -> Result<Self> {
        Self::identify_unresolved(path, None)
    }

    fn identify_unresolved(path: &Path, prediction: Option<Prediction>) -> Result<Self> {
        let weights = Weights::open(path)?;
        let facts = detect(&weights, prediction)?;
        let (prediction, prediction_source) = facts
            .prediction
            .clone()
            .unwrap_or((Prediction::Epsilon, PredictionSource::Rule));
        Ok(Self {
            weights,
            prediction,
            prediction_source,
            facts,
        })
    }

    /// An SDXL refiner has no CLIP-L and other size conditions: it refines a base model's
    /// latents and is refused as the model itself.
    fn refuse_unrun(&self) -> Result<()> {
        if self.facts.family == sumi_weights::Family::SdxlRefiner {
            return Err(PipelineError::Request {
                field: "model",
                detail: format!(
                    "{}: an SDXL refiner ({}): a refiner checkpoint is used with --refiner, not \
                     as the model",
                    self.weights.path().display(),
                    self.architecture()
                ),
            });
        }
        Ok(())
    }

    /// Whether this is an SDXL model (two text encoders, the ADM vector).
    pub fn is_sdxl(&self) -> bool {
        self.facts.family.is_sdxl()
    }

    /// Whether only A1111's U-Net test can tell ε from v (SD2 with nothing saying which).
    pub fn needs_unet_test(&self) -> bool {
        self.facts.prediction.is_none()
    }

    /// Settles the prediction type with A1111's test on this checkpoint's U-Net (a no-op when
    /// something else already said it).
    pub fn resolve_with(&mut self, unet: &UNet) -> Result<()> {
        if !self.needs_unet_test() {
            return Ok(());
        }
        let score = unet.a1111_v_score().map_err(|e| self.model_err(e))?;
        self.prediction = if score < -1.0 {
            Prediction::V
        } else {
            Prediction::Epsilon
        };
        self.prediction_source = PredictionSource::UnetTest;
        Ok(())
    }

    /// The identity to keep after the weights are gone.
    pub fn identity(&self) -> ModelIdentity {
        ModelIdentity {
            path: self.weights.path().to_path_buf(),
            format: self.weights.format(),
            facts: self.facts.clone(),
            prediction: self.prediction,
            architecture: self.architecture(),
        }
    }

    /// The architecture name (`sd1`, `sd1-inpaint`, `sd2`, `sd2-v`, `sd2-inpaint`, `sdxl`,
    /// `sdxl-inpaint`, `sdxl-refiner`).
    pub fn architecture(&self) -> &'static str {
        self.facts.architecture(self.prediction)
    }

    fn model_err(&self, source: sumi_models::ModelError) -> PipelineError {
        PipelineError::Model {
            path: self.weights.path().to_path_buf(),
            source,
        }
    }

    fn shapes<'a>(&'a self, prefix: &'a str) -> impl Fn(&str) -> Option<Vec<usize>> + 'a {
        move |n: &str| {
            self.weights
                .shape(&format!("{prefix}{n}"))
                .map(<[usize]>::to_vec)
        }
    }

    /// The U-Net's configuration.
    pub fn unet_config(&self) -> Result<UNetConfig> {
        let heads = |c: usize, l: usize| self.facts.unet_heads.heads(c, l);
        let mut cfg =
            UNetConfig::infer(&self.shapes(UNET), &heads).map_err(|e| self.model_err(e))?;
        if let Some(c) = self.facts.context_dim {
            cfg.context_dim = c;
        }
        Ok(cfg)
    }

    /// The text encoder's configuration.
    pub fn clip_config(&self) -> Result<ClipConfig> {
        ClipConfig::infer(&self.shapes(TEXT_ENCODER), self.facts.clip_gelu)
            .map_err(|e| self.model_err(e))
    }

    /// The VAE's configuration (SDXL's latent scale 0.13025).
    pub fn vae_config(&self) -> Result<VaeConfig> {
        let mut cfg = VaeConfig::infer(&self.shapes(VAE)).map_err(|e| self.model_err(e))?;
        cfg.scale_factor = self.vae_scale();
        Ok(cfg)
    }

    /// The latent scale factor of this model's VAE: SD1/SD2 0.18215, SDXL 0.13025 (SGM's
    /// `scale_factor`; SDXL has no latent shift).
    pub fn vae_scale(&self) -> f64 {
        if self.is_sdxl() {
            SDXL_VAE_SCALE
        } else {
            0.18215
        }
    }

    /// Builds the U-Net: f32 weights decoded in parallel up front; a bf16 `dtype` builds the
    /// bf16 compute path, which packs each weight as it is decoded (so that no more than one
    /// layer's f32 copy exists at a time).
    pub fn unet(&self, dtype: DType, dev: &Device) -> Result<UNet> {
        self.unet_patched(dtype, dev, None)
    }

    /// [`Self::unet`] with `patch` applied to its weights as they are loaded (extra networks).
    pub fn unet_patched(
        &self,
        dtype: DType,
        dev: &Device,
        patch: Option<&dyn TensorPatch>,
    ) -> Result<UNet> {
        let vb = if dtype == DType::BF16 {
            self.weights.var_builder_patched(dtype, dev, patch)
        } else {
            self.weights
                .var_builder_preloaded(UNET, dtype, dev, patch)?
        };
        UNet::new(vb.pp("unet"), self.unet_config()?).map_err(|e| self.model_err(e))
    }

    /// Loads `layers` of a built U-Net or text encoder again from the checkpoint's tensors
    /// with `patch` applied ([`sumi_models::nn::Reload`]), decoded as [`Self::unet_patched`]
    /// and [`Self::clip_patched`] decode them.
    pub fn reload_layers(
        &self,
        layers: &mut [&mut dyn Reload],
        dtype: DType,
        dev: &Device,
        patch: Option<&dyn TensorPatch>,
    ) -> Result<()> {
        let vb = self.weights.var_builder_patched(dtype, dev, patch);
        for l in layers {
            l.reload(&vb).map_err(|e| self.model_err(e))?;
        }
        Ok(())
    }

    /// Builds SDXL's second text encoder (OpenCLIP bigG, with its projection).
    pub fn clip_g(&self, dtype: DType, dev: &Device) -> Result<ClipTextModel> {
        self.clip_g_patched(dtype, dev, None)
    }

    /// [`Self::clip_g`] with `patch` applied to its weights as they are loaded (extra networks).
    pub fn clip_g_patched(
        &self,
        dtype: DType,
        dev: &Device,
        patch: Option<&dyn TensorPatch>,
    ) -> Result<ClipTextModel> {
        let cfg =
            ClipConfig::infer(&self.shapes(TEXT_ENCODER_2), true).map_err(|e| self.model_err(e))?;
        let vb = self.weights.var_builder_patched(dtype, dev, patch);
        ClipTextModel::new(vb.pp("text_encoder_2"), cfg).map_err(|e| self.model_err(e))
    }

    /// Builds the text encoder.
    pub fn clip(&self, dtype: DType, dev: &Device) -> Result<ClipTextModel> {
        self.clip_patched(dtype, dev, None)
    }

    /// [`Self::clip`] with `patch` applied to its weights as they are loaded (extra networks).
    pub fn clip_patched(
        &self,
        dtype: DType,
        dev: &Device,
        patch: Option<&dyn TensorPatch>,
    ) -> Result<ClipTextModel> {
        let vb = self.weights.var_builder_patched(dtype, dev, patch);
        ClipTextModel::new(vb.pp("text_encoder"), self.clip_config()?)
            .map_err(|e| self.model_err(e))
    }

    /// Builds a VAE from a standalone VAE file (A1111's external VAE), with the latent scale
    /// `scale` of the model it serves ([`Self::vae_scale`]).
    pub fn external_vae(path: &Path, scale: f64, dtype: DType, dev: &Device) -> Result<Vae> {
        let w = Weights::open_vae(path)?;
        let shapes = |n: &str| w.shape(&format!("{VAE}{n}")).map(<[usize]>::to_vec);
        let err = |source| PipelineError::Model {
            path: path.to_path_buf(),
            source,
        };
        let mut cfg = VaeConfig::infer(&shapes).map_err(err)?;
        cfg.scale_factor = scale;
        let vae = Vae::new(w.var_builder(dtype, dev).pp("vae"), cfg).map_err(err)?;
        Ok(vae)
    }

    /// Builds the VAE.
    pub fn vae(&self, dtype: DType, dev: &Device) -> Result<Vae> {
        let vb = self.weights.var_builder(dtype, dev);
        Vae::new(vb.pp("vae"), self.vae_config()?).map_err(|e| self.model_err(e))
    }
}
