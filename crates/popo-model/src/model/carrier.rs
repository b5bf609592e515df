//! The training head's gradient carrier for log-sum-exp and entropy (`Model::chunk_logprob_entropy`).
//!
//! With z = h W^T, d lse / dz = p and -dH / dz = r = p (z - E_p[z]). The carrier's value is zero,
//! [n, 2]; its backward, given the upstream gradients g0 (column 0, standing for lse) and g1
//! (column 1, for -H), forms G = g0 p + g1 r [n, vocab] once and returns dh = G W and, when W
//! trains, dW = G^T h: one product per operand. Built from plain ops instead (`h . (p W)` and
//! `h . (r W)`), the same gradients cost two [n, vocab] x [vocab, d] products in the forward and
//! two more for W's gradient in the backward.

use anyhow::Result;
use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

/// Zero [n, 2] for rows `h` [n, d] against `w` [vocab, d], whose gradients are those of
/// `[h . (p W), h . (r W)]` with `p` and `r` [n, vocab] held constant.
pub(super) fn lse_entropy_carrier(h: &Tensor, w: &Tensor, p: Tensor, r: Tensor) -> Result<Tensor> {
    Ok(h.apply_op2(w, Carrier { p, r })?)
}

struct Carrier {
    p: Tensor, // [n, vocab], detached
    r: Tensor, // [n, vocab], detached
}

impl Carrier {
    fn zeros<S>(h: &S, hl: &Layout) -> candle_core::Result<(S, Shape)>
    where
        S: BackendStorage,
        S::Device: BackendDevice<Storage = S>,
    {
        let shape = Shape::from((hl.shape().dims2()?.0, 2));
        Ok((h.device().zeros_impl(&shape, h.dtype())?, shape))
    }
}

impl CustomOp2 for Carrier {
    fn name(&self) -> &'static str {
        "lse-entropy-carrier"
    }

    fn cpu_fwd(
        &self,
        h: &CpuStorage,
        hl: &Layout,
        _w: &CpuStorage,
        _wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Self::zeros(h, hl)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        h: &candle_core::CudaStorage,
        hl: &Layout,
        _w: &candle_core::CudaStorage,
        _wl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        Self::zeros(h, hl)
    }

    fn bwd(
        &self,
        h: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let fdt = self.p.dtype();
        let g = g.to_dtype(fdt)?;
        let coef = |col: usize, x: &Tensor| x.broadcast_mul(&g.narrow(1, col, 1)?);
        // G [n, vocab], in the dtype of the products.
        let big_g = (coef(0, &self.p)? + coef(1, &self.r)?)?.to_dtype(h.dtype())?;
        // Detached operands: a product with a tracked one would record a graph, and candle hands
        // W's gradient to the caller as it is, so that graph (the whole forward) would live on.
        let dh = big_g.matmul(&w.detach())?; // [n, d]
        let dw = match w.track_op() {
            true => Some(big_g.t()?.matmul(&h.detach())?), // [vocab, d]
            false => None,
        };
        Ok((Some(dh), dw))
    }
}
