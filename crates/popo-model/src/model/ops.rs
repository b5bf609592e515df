//! Differentiable helpers shared by the layers: row spreading, rotary embedding, softmax.

use anyhow::Result;
use candle_core::{Tensor, D};

/// A per-column weight `w` [d] laid over every row of `like` [.., d], for an op whose result
/// needs w's gradient. A plain broadcast sends that gradient through candle's sum over the
/// leading dims, which reduces element by element with two integer divisions each (0.69 ms for
/// a [16, 62, 128] sum against 0.011 ms as a matmul; BENCHMARKS.md); an outer product with a
/// ones column has a matmul for a backward. Exact: each entry is the single product 1 * w_j.
pub(super) fn spread_rows(w: &Tensor, like: &Tensor) -> Result<Tensor> {
    let d = w.elem_count();
    let ones = Tensor::ones((like.elem_count() / d, 1), w.dtype(), w.device())?;
    Ok(ones.matmul(&w.reshape((1, d))?)?.reshape(like.shape())?) // [.., d]
}

/// rotate_half convention (first half / second half), as in transformers.
pub(super) fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    // x: [b, h, t, hd]; cos/sin: [b, 1, t, hd]
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

/// Softmax over the last dim; the max shift is detached because softmax is invariant to it.
pub(super) fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}
