//! Tensor operations the upscaler networks share: PyTorch's `pixel_shuffle` /
//! `pixel_unshuffle`, `F.pad(.., mode="reflect")` on the bottom and right edges, LeakyReLU and
//! per-channel PReLU, all on NCHW tensors.

use candle_core::Tensor;

/// `torch.pixel_unshuffle(x, r)`: `[n, c, h·r, w·r]` → `[n, c·r², h, w]`, channel
/// `c·r² + i·r + j` holding the pixels at row offset `i` and column offset `j`.
pub fn pixel_unshuffle(x: &Tensor, r: usize) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n * c, h / r, r, w / r, r))?
        .permute((0, 2, 4, 1, 3))?
        .reshape((n, c * r * r, h / r, w / r))
}

/// `torch.pixel_shuffle(x, r)`: `[n, c·r², h, w]` → `[n, c, h·r, w·r]` (the inverse of
/// [`pixel_unshuffle`]).
pub fn pixel_shuffle(x: &Tensor, r: usize) -> candle_core::Result<Tensor> {
    let (n, crr, h, w) = x.dims4()?;
    let c = crr / (r * r);
    x.reshape((n * c, r, r, h, w))?
        .permute((0, 3, 1, 4, 2))?
        .reshape((n, c, h * r, w * r))
}

/// spandrel's `pad_to_multiple(x, m, mode="reflect")`: pads the bottom and right edges with
/// their mirror images (the edge row/column itself not repeated) up to multiples of `m`.
pub fn reflect_pad_to_multiple(x: &Tensor, m: usize) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let pad_h = (m - h % m) % m;
    let pad_w = (m - w % m) % m;
    let x = reflect_pad_end(x, 2, pad_h)?;
    reflect_pad_end(&x, 3, pad_w)
}

/// Reflect padding of `pad` elements at the end of dimension `dim` (index `len − 2 − k` for
/// the k-th padded element, as `F.pad` reflect mode; needs `pad < len`).
fn reflect_pad_end(x: &Tensor, dim: usize, pad: usize) -> candle_core::Result<Tensor> {
    if pad == 0 {
        return Ok(x.clone());
    }
    let len = x.dim(dim)?;
    if pad >= len {
        candle_core::bail!("reflect padding of {pad} needs a side longer than {len}");
    }
    let idx: Vec<u32> = (0..len)
        .chain((0..pad).map(|k| len - 2 - k))
        .map(|i| i as u32)
        .collect();
    let idx = Tensor::new(idx, x.device())?;
    x.index_select(&idx, dim)
}

/// LeakyReLU with a slope below 1: `max(x, slope·x)`, exactly `x` or `slope·x`.
pub fn leaky_relu(x: &Tensor, slope: f64) -> candle_core::Result<Tensor> {
    x.maximum(&(x * slope)?)
}

/// `nn.PReLU(num_parameters=c)`: `x` where positive, `weight[c]·x` elsewhere.
pub fn prelu(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    let w = weight.reshape((1, (), 1, 1))?;
    let neg = x.minimum(0f64)?.broadcast_mul(&w)?;
    x.relu()? + neg
}
