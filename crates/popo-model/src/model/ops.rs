//! Differentiable helpers shared by the layers: row spreading, rotary embedding, softmax, and
//! products with a constant factor.

use anyhow::Result;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor, D};

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

/// `x c` for a tracked `x` [m, k] and a constant `c` [k, n] (a frozen weight, transposed).
///
/// candle's matmul backward computes both operands' gradients whether or not an operand needs
/// one, so a frozen projection (LoRA's base) would pay for a weight gradient nobody reads: one of
/// its three products. This op's backward returns the input's gradient only.
pub(super) fn matmul_const_right(x: &Tensor, c: &Tensor) -> Result<Tensor> {
    if !x.track_op() {
        // c is a frozen [out, in] weight seen transposed.
        if let Some(y) = super::gemm::x_wt(x, &c.t()?)? {
            return Ok(y);
        }
        return Ok(x.matmul(c)?);
    }
    Ok(x.apply_op1(ConstRight { c: c.detach() })?)
}

/// The product of the op's argument with the constant `c` on its right.
struct ConstRight {
    c: Tensor,
}

impl ConstRight {
    fn product<S: BackendStorage>(
        x: &S,
        xl: &Layout,
        c: &S,
        cl: &Layout,
    ) -> candle_core::Result<(S, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (k2, n) = cl.shape().dims2()?;
        if k != k2 {
            return Err(candle_core::Error::Msg(format!(
                "const-matmul: inner dims differ ({:?} x {:?})",
                xl.shape(),
                cl.shape()
            )));
        }
        Ok((x.matmul(c, (1, m, n, k), xl, cl)?, Shape::from((m, n))))
    }
}

impl CustomOp1 for ConstRight {
    fn name(&self) -> &'static str {
        "const-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (c, cl) = self.c.storage_and_layout();
        match &*c {
            Storage::Cpu(c) => Self::product(x, xl, c, cl),
            _ => Err(candle_core::Error::Msg(
                "const-matmul: operands on different devices".into(),
            )),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (c, cl) = self.c.storage_and_layout();
        match &*c {
            Storage::Cuda(c) => Self::product(x, xl, c, cl),
            _ => Err(candle_core::Error::Msg(
                "const-matmul: operands on different devices".into(),
            )),
        }
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(g.matmul(&self.c.t()?)?)) // y = x c: dx = g c^T
    }
}
