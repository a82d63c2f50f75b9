//! A1111 v1.10.1's `lyco_helpers.py` (the LyCORIS reconstructions) and network_lokr.py's
//! `make_kron`, with every shape relation torch would refuse checked first and every result
//! bounded by the layer's weight (`limit`, see [`guard`]).

use candle_core::Tensor;

use super::common::{err, guard, numel, reshape, size};
use crate::error::Result;

/// Two tensors and the names of the network parts they came from (for errors).
pub(crate) struct Named<'a> {
    /// The tensor.
    pub t: &'a Tensor,
    /// Its network part.
    pub name: &'a str,
}

fn as_2d(module: &'static str, x: &Named) -> Result<Tensor> {
    let rows = size(module, x.name, x.t, 0)?;
    Ok(x.t.contiguous()?.reshape((rows, ()))?)
}

fn rank4(module: &'static str, x: &Named) -> Result<[usize; 4]> {
    match *x.t.dims() {
        [a, b, c, d] => Ok([a, b, c, d]),
        _ => Err(err(
            module,
            x.name,
            format!("has shape {:?}, not 4 dimensions", x.t.dims()),
        )),
    }
}

fn rank2(module: &'static str, x: &Named) -> Result<[usize; 2]> {
    match *x.t.dims() {
        [a, b] => Ok([a, b]),
        _ => Err(err(
            module,
            x.name,
            format!("has shape {:?}, not 2 dimensions", x.t.dims()),
        )),
    }
}

/// `make_weight_cp(t, wa, wb)`: `temp = einsum('i j k l, j r -> i r k l', t, wb)`, then
/// `einsum('i j k l, i r -> r j k l', temp, wa)` — the Tucker core `t` `[I, J, K, L]` with
/// `wa` `[I, R1]` and `wb` `[J, R2]`, giving `[R1, R2, K, L]`.
pub(crate) fn make_weight_cp(
    module: &'static str,
    t: Named,
    wa: Named,
    wb: Named,
    limit: usize,
) -> Result<Tensor> {
    let [i, j, k, l] = rank4(module, &t)?;
    let [wa0, r1] = rank2(module, &wa)?;
    let [wb0, r2] = rank2(module, &wb)?;
    if wb0 != j || wa0 != i {
        return Err(err(
            module,
            t.name,
            format!(
                "shape {:?} does not match {} {:?} and {} {:?}",
                t.t.dims(),
                wa.name,
                wa.t.dims(),
                wb.name,
                wb.t.dims()
            ),
        ));
    }
    guard(module, t.name, &[i, r2, k, l], limit)?;
    guard(module, t.name, &[r1, r2, k, l], limit)?;
    let temp =
        t.t.permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((i * k * l, j))?
            .matmul(&wb.t.contiguous()?)?
            .reshape((i, k, l, r2))?
            .permute((0, 3, 1, 2))?
            .contiguous()?
            .reshape((i, r2 * k * l))?;
    Ok(wa
        .t
        .t()?
        .contiguous()?
        .matmul(&temp)?
        .reshape((r1, r2, k, l))?)
}

/// `rebuild_conventional(up, down, shape, dyn_dim)`: both flattened to 2-d
/// (`reshape(size(0), -1)`), the first `dyn_dim` columns of `up` and rows of `down` kept where
/// `dyn_dim` is given (Python slicing: a `dyn_dim` past the rank keeps all), then
/// `(up @ down).reshape(shape)`.
pub(crate) fn rebuild_conventional(
    module: &'static str,
    up: Named,
    down: Named,
    shape: &[usize],
    dyn_dim: Option<usize>,
    limit: usize,
) -> Result<Tensor> {
    let mut u = as_2d(module, &up)?;
    let mut d = as_2d(module, &down)?;
    if let Some(n) = dyn_dim {
        u = u.narrow(1, 0, n.min(u.dim(1)?))?;
        d = d.narrow(0, 0, n.min(d.dim(0)?))?;
    }
    let (rows, inner) = u.dims2()?;
    let (inner_d, cols) = d.dims2()?;
    if inner != inner_d {
        return Err(err(
            module,
            up.name,
            format!(
                "{} {:?} and {} {:?} do not multiply ({inner} columns, {inner_d} rows{})",
                up.name,
                up.t.dims(),
                down.name,
                down.t.dims(),
                if dyn_dim.is_some() {
                    " after dyn_dim"
                } else {
                    ""
                }
            ),
        ));
    }
    guard(module, up.name, &[rows, cols], limit)?;
    if numel(shape) != Some(rows * cols) {
        return Err(err(
            module,
            up.name,
            format!(
                "{} @ {} gives [{rows}, {cols}], not reshapeable to {shape:?}",
                up.name, down.name
            ),
        ));
    }
    let product = if inner == 0 {
        Tensor::zeros((rows, cols), candle_core::DType::F32, u.device())?
    } else {
        u.contiguous()?.matmul(&d.contiguous()?)?
    };
    Ok(product.reshape(shape)?)
}

/// `rebuild_cp_decomposition(up, down, mid)`: `einsum('n m k l, i n, m j -> i j k l', mid,
/// up, down)` with `up` and `down` flattened to 2-d — `[O, N]`, `[M, J]` and the core `mid`
/// `[N, M, K, L]` give `[O, J, K, L]`.
pub(crate) fn rebuild_cp_decomposition(
    module: &'static str,
    up: Named,
    down: Named,
    mid: Named,
    limit: usize,
) -> Result<Tensor> {
    let u = as_2d(module, &up)?;
    let d = as_2d(module, &down)?;
    let [n, m, k, l] = rank4(module, &mid)?;
    let (o, un) = u.dims2()?;
    let (dm, j) = d.dims2()?;
    if un != n || dm != m {
        return Err(err(
            module,
            mid.name,
            format!(
                "shape {:?} does not match {} {:?} and {} {:?}",
                mid.t.dims(),
                up.name,
                up.t.dims(),
                down.name,
                down.t.dims()
            ),
        ));
    }
    guard(module, mid.name, &[o, m, k, l], limit)?;
    guard(module, mid.name, &[o, j, k, l], limit)?;
    let a = u
        .matmul(&mid.t.contiguous()?.reshape((n, m * k * l))?)?
        .reshape((o, m, k, l))?
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .reshape((o * k * l, m))?;
    Ok(a.matmul(&d)?
        .reshape((o, k, l, j))?
        .permute((0, 3, 1, 2))?
        .contiguous()?)
}

/// `make_kron(orig_shape, w1, w2)` (network_lokr.py): a 4-d `w2` gets `w1.unsqueeze(2).unsqueeze(2)`;
/// then `torch.kron(w1, w2).reshape(orig_shape)` — the shorter shape padded with leading ones,
/// `result[a·|w2| + b] = w1[a] · w2[b]` per dimension.
pub(crate) fn make_kron(
    module: &'static str,
    shape: &[usize],
    w1: &Tensor,
    w2: &Tensor,
    limit: usize,
) -> Result<Tensor> {
    let mut d1 = w1.dims().to_vec();
    if w2.rank() == 4 {
        if d1.len() < 2 {
            return Err(err(
                module,
                "lokr_w1",
                format!("has shape {d1:?}, not 2 dimensions"),
            ));
        }
        d1.insert(2, 1);
        d1.insert(2, 1);
    }
    let n = d1.len().max(w2.rank());
    let pad = |d: &[usize]| {
        let mut v = vec![1; n - d.len()];
        v.extend_from_slice(d);
        v
    };
    let (a, b) = (pad(&d1), pad(w2.dims()));
    let out: Vec<usize> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
    let total = numel(&out);
    if total.is_none() || total != numel(shape) {
        return Err(err(
            module,
            "lokr_w2",
            format!(
                "kron of lokr_w1 {:?} and lokr_w2 {:?} is {out:?}, not reshapeable to {shape:?}",
                w1.dims(),
                w2.dims()
            ),
        ));
    }
    guard(module, "lokr_w2", &out, limit)?;
    let va = w1.flatten_all()?.to_vec1::<f32>()?;
    let vb = w2.flatten_all()?.to_vec1::<f32>()?;
    // Row-major strides of the result; the offset of an element of w1 (scaled by w2's extent)
    // and of w2 add up to the result's offset.
    let mut stride = vec![1usize; n];
    for i in (0..n.saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * out[i + 1];
    }
    let offsets = |dims: &[usize], scale: &[usize]| -> Vec<usize> {
        let count: usize = dims.iter().product();
        (0..count)
            .map(|mut flat| {
                let mut off = 0;
                for i in (0..n).rev() {
                    let idx = flat % dims[i];
                    flat /= dims[i];
                    off += idx * scale[i] * stride[i];
                }
                off
            })
            .collect()
    };
    let off_a = offsets(&a, &b);
    let off_b = offsets(&b, &vec![1; n]);
    let mut data = vec![0f32; total.unwrap_or(0)];
    for (x, oa) in va.iter().zip(&off_a) {
        for (y, ob) in vb.iter().zip(&off_b) {
            data[oa + ob] = x * y;
        }
    }
    let t = Tensor::from_vec(data, out, w1.device())?;
    reshape(module, "lokr_w2", &t, shape)
}

/// `lyco_helpers.factorization(dimension, factor)` (copied there from LyCORIS): splits
/// `dimension` into `(m, n)`, `m <= n`, `m·n = dimension`, with `m` the factor closest to
/// `factor` (`factor <= 0`: as square as possible). A1111 defines it for LoKr but no code path
/// of its merge calls it.
pub fn factorization(dimension: usize, factor: i64) -> (usize, usize) {
    if factor > 0 && dimension.is_multiple_of(factor as usize) {
        let (m, n) = (factor as usize, dimension / factor as usize);
        return if m > n { (n, m) } else { (m, n) };
    }
    let factor = if factor < 0 {
        dimension
    } else {
        factor as usize
    };
    let (mut m, mut n) = (1usize, dimension);
    let length = m + n;
    while m < n {
        let mut new_m = m + 1;
        while !dimension.is_multiple_of(new_m) {
            new_m += 1;
        }
        let new_n = dimension / new_m;
        if new_m + new_n > length || new_m > factor {
            break;
        }
        m = new_m;
        n = new_n;
    }
    if m > n {
        (n, m)
    } else {
        (m, n)
    }
}
