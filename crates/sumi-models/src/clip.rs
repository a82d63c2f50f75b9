//! The CLIP text encoder in transformers' `CLIPTextModel` form: SD1's CLIP ViT-L/14
//! (quick-GELU) and SD2's OpenCLIP ViT-H/14 (GELU; its checkpoints map onto the same names).
//! Any layer's output can be read through the final layer norm (A1111's CLIP skip), and token
//! embeddings can be passed in directly (textual inversion).

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{Embedding, LayerNorm, Module, VarBuilder};

use crate::error::{ModelError, Result, Shapes};
use crate::nn::{attention, layer_norm, linear, merge_heads, split_heads, Linear, Reload};

/// Text encoder hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    /// Vocabulary size (49408 for the real models).
    pub vocab: usize,
    /// Width (768 SD1, 1024 SD2).
    pub hidden: usize,
    /// Transformer layers present (12 SD1; 23 used by SD2).
    pub layers: usize,
    /// Attention heads (width / 64 for both CLIP and OpenCLIP).
    pub heads: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Positions (77).
    pub max_positions: usize,
    /// GELU (OpenCLIP) rather than quick-GELU (CLIP).
    pub gelu: bool,
    /// Layer-norm epsilon.
    pub eps: f64,
}

impl ClipConfig {
    /// SD1.x's text encoder (openai/clip-vit-large-patch14).
    pub fn sd1() -> Self {
        Self {
            vocab: 49408,
            hidden: 768,
            layers: 12,
            heads: 12,
            intermediate: 3072,
            max_positions: 77,
            gelu: false,
            eps: 1e-5,
        }
    }

    /// SD2.x's text encoder (OpenCLIP ViT-H/14, the 23 layers SD2 reads).
    pub fn sd2() -> Self {
        Self {
            vocab: 49408,
            hidden: 1024,
            layers: 23,
            heads: 16,
            intermediate: 4096,
            max_positions: 77,
            gelu: true,
            eps: 1e-5,
        }
    }

    /// Reads the sizes from the weights' shapes; heads follow the 64-wide rule.
    pub fn infer(shapes: Shapes, gelu: bool) -> Result<Self> {
        let get = |n: &str| {
            shapes(n).ok_or_else(|| ModelError::Config {
                component: "text encoder",
                detail: format!("missing tensor `{n}`"),
            })
        };
        let tok = get("embeddings.token_embedding.weight")?;
        let pos = get("embeddings.position_embedding.weight")?;
        let fc1 = get("encoder.layers.0.mlp.fc1.weight")?;
        let layers = (0..)
            .take_while(|i| shapes(&format!("encoder.layers.{i}.layer_norm1.weight")).is_some())
            .count();
        let hidden = tok.get(1).copied().unwrap_or(0);
        if hidden == 0 || hidden % 64 != 0 {
            return Err(ModelError::Config {
                component: "text encoder",
                detail: format!("width {hidden} is not a multiple of 64"),
            });
        }
        Ok(Self {
            vocab: tok[0],
            hidden,
            layers,
            heads: hidden / 64,
            intermediate: fc1[0],
            max_positions: pos[0],
            gelu,
            eps: 1e-5,
        })
    }
}

struct Layer {
    ln1: LayerNorm,
    ln2: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    fc1: Linear,
    fc2: Linear,
}

/// The text encoder.
pub struct ClipTextModel {
    cfg: ClipConfig,
    tokens: Embedding,
    positions: Tensor,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
}

impl ClipTextModel {
    /// Builds the encoder from names relative to the text encoder (`embeddings.…`).
    pub fn new(vb: VarBuilder, cfg: ClipConfig) -> Result<Self> {
        let d = cfg.hidden;
        let e = vb.pp("embeddings");
        // on the bf16 path (a bf16 `VarBuilder`) the embeddings stay f32 like the activations
        let tokens = crate::nn::param(&e, (cfg.vocab, d), "token_embedding.weight")?;
        let tokens = Embedding::new(tokens, d);
        let positions = crate::nn::param(&e, (cfg.max_positions, d), "position_embedding.weight")?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let l = vb.pp(format!("encoder.layers.{i}"));
            let a = l.pp("self_attn");
            layers.push(Layer {
                ln1: layer_norm(l.pp("layer_norm1"), d, cfg.eps)?,
                ln2: layer_norm(l.pp("layer_norm2"), d, cfg.eps)?,
                q: linear(a.pp("q_proj"), d, d, true)?,
                k: linear(a.pp("k_proj"), d, d, true)?,
                v: linear(a.pp("v_proj"), d, d, true)?,
                out: linear(a.pp("out_proj"), d, d, true)?,
                fc1: linear(l.pp("mlp.fc1"), d, cfg.intermediate, true)?,
                fc2: linear(l.pp("mlp.fc2"), cfg.intermediate, d, true)?,
            });
        }
        let final_ln = layer_norm(vb.pp("final_layer_norm"), d, cfg.eps)?;
        Ok(Self {
            cfg,
            tokens,
            positions,
            layers,
            final_ln,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClipConfig {
        &self.cfg
    }

    /// Token embeddings `[batch, n, width]` for ids `[batch, n]` (u32 or i64).
    pub fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor> {
        let ids = ids.to_dtype(DType::U32)?;
        if let Ok(max) = ids.flatten_all()?.max(0)?.to_scalar::<u32>() {
            if max as usize >= self.cfg.vocab {
                return Err(ModelError::Input {
                    component: "text encoder",
                    detail: format!(
                        "token id {max} is outside the vocabulary of {}",
                        self.cfg.vocab
                    ),
                });
            }
        }
        Ok(self.tokens.forward(&ids)?)
    }

    /// Encodes ids `[batch, n]`; `skip` = 1 reads the last layer, 2 the penultimate (A1111's
    /// CLIP skip), always through the final layer norm.
    pub fn forward(&self, ids: &Tensor, skip: usize) -> Result<Tensor> {
        self.forward_embeds(&self.embed_tokens(ids)?, skip)
    }

    /// Encodes token embeddings `[batch, n, width]` (e.g. with textual-inversion vectors
    /// spliced in); see [`Self::forward`] for `skip`.
    pub fn forward_embeds(&self, embeds: &Tensor, skip: usize) -> Result<Tensor> {
        let (_, n, _) = embeds.dims3()?;
        if n > self.cfg.max_positions {
            return Err(ModelError::Input {
                component: "text encoder",
                detail: format!("{n} tokens, at most {} fit", self.cfg.max_positions),
            });
        }
        if skip == 0 || skip > self.cfg.layers {
            return Err(ModelError::Input {
                component: "text encoder",
                detail: format!("CLIP skip {skip} outside 1..={}", self.cfg.layers),
            });
        }
        let mut x = embeds.broadcast_add(&self.positions.i(..n)?.to_dtype(embeds.dtype())?)?;
        let mask = causal_mask(n, embeds.device(), embeds.dtype())?;
        let h = self.cfg.heads;
        for l in &self.layers[..self.cfg.layers + 1 - skip] {
            let r = x.clone();
            let y = l.ln1.forward(&x)?;
            let q = split_heads(&l.q.forward(&y)?, h)?;
            let k = split_heads(&l.k.forward(&y)?, h)?;
            let v = split_heads(&l.v.forward(&y)?, h)?;
            let a = merge_heads(&attention(&q, &k, &v, Some(&mask))?)?;
            x = (r + l.out.forward(&a)?)?;
            let r = x.clone();
            let y = l.fc1.forward(&l.ln2.forward(&x)?)?;
            let y = if self.cfg.gelu {
                y.gelu_erf()?
            } else {
                quick_gelu(&y)?
            };
            x = (r + l.fc2.forward(&y)?)?;
        }
        Ok(self.final_ln.forward(&x)?)
    }
}

fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    Ok((x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?)
}

fn causal_mask(n: usize, dev: &Device, dtype: DType) -> Result<Tensor> {
    let v: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(v, (n, n), dev)?.to_dtype(dtype)?)
}

impl ClipTextModel {
    /// Its layers that can be loaded again by name ([`Reload`]): every linear layer (not the
    /// embeddings or the LayerNorms).
    pub fn layers_mut(&mut self) -> Vec<&mut dyn Reload> {
        let mut out: Vec<&mut dyn Reload> = Vec::new();
        for l in &mut self.layers {
            out.extend([
                &mut l.q as &mut dyn Reload,
                &mut l.k,
                &mut l.v,
                &mut l.out,
                &mut l.fc1,
                &mut l.fc2,
            ]);
        }
        out
    }
}
