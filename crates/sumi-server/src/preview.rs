//! Live previews of a running job: A1111's "Approx cheap" linear projection of the latents to
//! RGB (latent-sized), or a TAESD decoder when one is given (full-sized).

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use sumi_models::TaesdDecoder;

/// A1111's `sd_vae_approx.cheap_approximation` coefficients for SD 1.x/2.x latents:
/// RGB = latentsᵀ · C, then ×0.5 + 0.5.
const CHEAP: [[f32; 3]; 4] = [
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
];

/// How previews are made.
pub enum Previewer {
    /// The linear projection.
    Cheap,
    /// A TAESD decoder.
    Taesd(TaesdDecoder),
}

impl Previewer {
    /// Loads a TAESD decoder file, or the cheap projection when `path` is `None`.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, String> {
        let Some(p) = path else {
            return Ok(Self::Cheap);
        };
        let w = sumi_weights::Weights::open_raw(p).map_err(|e| e.to_string())?;
        TaesdDecoder::new(w.var_builder(DType::F32, &Device::Cpu), 4)
            .map(Self::Taesd)
            .map_err(|e| e.to_string())
    }

    /// Whether this is a TAESD decoder.
    pub fn is_taesd(&self) -> bool {
        matches!(self, Self::Taesd(_))
    }

    /// The preview of one image's predicted clean latents `[4, h, w]`.
    pub fn render(&self, latent: &Tensor) -> Result<RgbImage, String> {
        let e = |e: candle_core::Error| e.to_string();
        match self {
            Self::Cheap => {
                let (c, h, w) = latent.dims3().map_err(e)?;
                if c != 4 {
                    return Err(format!("{c} latent channels"));
                }
                let v = latent
                    .to_dtype(DType::F32)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(e)?;
                let n = h * w;
                let mut out = Vec::with_capacity(n * 3);
                for i in 0..n {
                    for ch in 0..3 {
                        let x: f32 = CHEAP
                            .iter()
                            .enumerate()
                            .map(|(l, c)| v[l * n + i] * c[ch])
                            .sum();
                        out.push(((x * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0) as u8);
                    }
                }
                RgbImage::from_raw(w as u32, h as u32, out).ok_or_else(|| "bad size".into())
            }
            Self::Taesd(t) => {
                let x = latent
                    .to_dtype(DType::F32)
                    .and_then(|l| l.unsqueeze(0))
                    .map_err(e)?;
                let y = t.forward(&x).map_err(|e| e.to_string())?;
                let y = y
                    .get(0)
                    .and_then(|y| y.clamp(0f32, 1f32))
                    .and_then(|y| y * 255.0)
                    .and_then(|y| y.permute((1, 2, 0)))
                    .map_err(e)?;
                let (h, w, _) = y.dims3().map_err(e)?;
                let bytes: Vec<u8> = y
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(e)?
                    .into_iter()
                    .map(|v| v as u8)
                    .collect();
                RgbImage::from_raw(w as u32, h as u32, bytes).ok_or_else(|| "bad size".into())
            }
        }
    }
}
