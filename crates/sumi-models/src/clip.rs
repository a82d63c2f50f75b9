//! The CLIP text encoder in transformers' `CLIPTextModel` form: SD1's CLIP ViT-L/14
//! (quick-GELU) and SD2's OpenCLIP ViT-H/14 (GELU; its checkpoints map onto the same names),
//! and SDXL's pair, CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 (`CLIPTextModelWithProjection`, with
//! `text_projection`). Any layer's output can be read through the final layer norm (A1111's
//! CLIP skip) or without it (SDXL's context), token embeddings can be passed in directly
//! (textual inversion), and an encoder with a projection gives the pooled embedding: the last
//! layer through the final layer norm at the end token (the largest id, open_clip's argmax),
//! projected.

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
    /// Width of the pooled projection (`text_projection`; SDXL's bigG 1280), if it has one.
    pub projection: Option<usize>,
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
            projection: None,
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
            projection: None,
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
            projection: match shapes("text_projection.weight") {
                Some(p) if p.len() == 2 && p[1] == hidden => Some(p[0]),
                Some(p) => {
                    return Err(ModelError::Config {
                        component: "text encoder",
                        detail: format!("text_projection {p:?} for width {hidden}"),
                    })
                }
                None => None,
            },
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
    projection: Option<Linear>,
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
        let projection = cfg
            .projection
            .map(|p| linear(vb.pp("text_projection"), d, p, false))
            .transpose()?;
        Ok(Self {
            cfg,
            tokens,
            positions,
            layers,
            final_ln,
            projection,
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
        Ok(self.final_ln.forward(&self.hidden_state(embeds, skip)?)?)
    }

    /// The output of layer `layers + 1 − skip` without the final layer norm (`skip` = 2:
    /// transformers' `hidden_states[-2]`, SDXL's context from either encoder).
    pub fn hidden_state(&self, embeds: &Tensor, skip: usize) -> Result<Tensor> {
        if skip == 0 || skip > self.cfg.layers {
            return Err(ModelError::Input {
                component: "text encoder",
                detail: format!("CLIP skip {skip} outside 1..={}", self.cfg.layers),
            });
        }
        let mut x = self.start(embeds)?;
        let mask = causal_mask(x.dim(1)?, embeds.device(), embeds.dtype())?;
        for l in &self.layers[..self.cfg.layers + 1 - skip] {
            x = l.forward(&x, &mask, &self.cfg)?;
        }
        Ok(x)
    }

    /// SDXL's bigG in one pass: the output of layer `layers + 1 − skip` without the final
    /// layer norm, and the pooled embedding `[batch, projection]` at the rows' end tokens
    /// `eos` (see [`Self::eos_positions`]).
    pub fn hidden_and_pooled(
        &self,
        embeds: &Tensor,
        skip: usize,
        eos: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        let proj = self.projection.as_ref().ok_or_else(|| ModelError::Input {
            component: "text encoder",
            detail: "this text encoder has no text_projection".into(),
        })?;
        let (b, n, _) = embeds.dims3()?;
        if eos.len() != b || eos.iter().any(|&e| e >= n) {
            return Err(ModelError::Input {
                component: "text encoder",
                detail: format!("end tokens {eos:?} for {b} rows of {n} tokens"),
            });
        }
        let hidden = self.hidden_state(embeds, skip)?;
        let mut x = hidden.clone();
        let mask = causal_mask(n, embeds.device(), embeds.dtype())?;
        for l in &self.layers[self.cfg.layers + 1 - skip..] {
            x = l.forward(&x, &mask, &self.cfg)?;
        }
        let x = self.final_ln.forward(&x)?;
        let rows = eos
            .iter()
            .enumerate()
            .map(|(i, &e)| x.i((i, e)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let pooled = proj.forward(&Tensor::stack(&rows, 0)?)?;
        Ok((hidden, pooled))
    }

    /// open_clip's end-token positions: per row of ids `[batch, n]`, the first position of
    /// the largest id (the end token 49407 in any real prompt).
    pub fn eos_positions(ids: &Tensor) -> Result<Vec<usize>> {
        let ids = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        Ok(ids
            .iter()
            .map(|row| {
                let max = row.iter().copied().max().unwrap_or(0);
                row.iter().position(|&v| v == max).unwrap_or(0)
            })
            .collect())
    }

    /// Token plus position embeddings, the length checked.
    fn start(&self, embeds: &Tensor) -> Result<Tensor> {
        let (_, n, _) = embeds.dims3()?;
        if n > self.cfg.max_positions {
            return Err(ModelError::Input {
                component: "text encoder",
                detail: format!("{n} tokens, at most {} fit", self.cfg.max_positions),
            });
        }
        Ok(embeds.broadcast_add(&self.positions.i(..n)?.to_dtype(embeds.dtype())?)?)
    }
}

impl Layer {
    /// One pre-norm transformer layer with causal self-attention.
    fn forward(&self, x: &Tensor, mask: &Tensor, cfg: &ClipConfig) -> Result<Tensor> {
        let h = cfg.heads;
        let y = self.ln1.forward(x)?;
        let q = split_heads(&self.q.forward(&y)?, h)?;
        let k = split_heads(&self.k.forward(&y)?, h)?;
        let v = split_heads(&self.v.forward(&y)?, h)?;
        let a = merge_heads(&attention(&q, &k, &v, Some(mask))?)?;
        let x = (x + self.out.forward(&a)?)?;
        let y = self.fc1.forward(&self.ln2.forward(&x)?)?;
        let y = if cfg.gelu {
            y.gelu_erf()?
        } else {
            quick_gelu(&y)?
        };
        Ok((x + self.fc2.forward(&y)?)?)
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
        out.extend(self.projection.as_mut().map(|p| p as &mut dyn Reload));
        out
    }
}
