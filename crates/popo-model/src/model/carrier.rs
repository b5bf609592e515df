//! The training head's row statistics and gradient carrier for log-sum-exp and entropy
//! (`Model::chunk_logprob_entropy`).
//!
//! With z = h W^T, d lse / dz = p and -dH / dz = r = p (z - E_p[z]). The carrier's value is zero,
//! [n, 2]; its backward, given the upstream gradients g0 (column 0, standing for lse) and g1
//! (column 1, for -H), forms G = g0 p + g1 r = p (g0 + g1 (z - E_p[z])) [n, vocab] once, from
//! z alone (p = exp(z - lse)), and returns dh = G W and, when W trains, dW = G^T h: one product
//! per operand. Built from plain ops instead (`h . (p W)` and `h . (r W)`), the same gradients
//! cost two [n, vocab] x [vocab, d] products in the forward and two more for W's gradient in the
//! backward, and p and r would both be kept.
//!
//! On the CPU in f32 / f64 the statistics (lse, E_p[z]) take two sweeps over z and G one, with
//! sums in f64; from primitives they take about ten [n, vocab] passes.

use super::host::{on_host, Real};
use anyhow::Result;
use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Per row of logits `z` [n, vocab] (detached): log-sum-exp and E_p[z], each [n, 1].
pub(super) fn row_stats(z: &Tensor) -> Result<(Tensor, Tensor)> {
    if !super::fused::serves(z) {
        let max = z.max_keepdim(1)?; // [n, 1]
        let e = z.broadcast_sub(&max)?.exp()?; // [n, vocab]
        let sum_e = e.sum_keepdim(1)?; // [n, 1]
        let mean = (e * z)?.sum_keepdim(1)?.broadcast_div(&sum_e)?;
        return Ok(((sum_e.log()? + max)?, mean));
    }
    let (n, vocab) = z.dims2()?;
    let col = Shape::from((n, 1));
    let out = on_host(
        "head statistics",
        &[z],
        &[&col, &col],
        |v| stats(v[0], vocab),
        |v| stats(v[0], vocab),
    )?;
    let mut it = out.into_iter();
    match (it.next(), it.next()) {
        (Some(lse), Some(mean)) => Ok((lse, mean)),
        _ => anyhow::bail!("head statistics: a result is missing"),
    }
}

/// [lse..., mean...] of rows of `vocab` logits.
fn stats<T: Real>(z: &[T], vocab: usize) -> Vec<Vec<T>> {
    let rows: Vec<(T, T)> = z
        .par_chunks(vocab)
        .map(|row| {
            let max = row
                .iter()
                .map(|&v| v.into())
                .fold(f64::NEG_INFINITY, f64::max);
            let (mut sum, mut sum_z) = (0.0, 0.0);
            for &v in row {
                let v = v.into();
                let e = T::exp_at(v - max);
                sum += e;
                sum_z += e * v;
            }
            (T::of(sum.ln() + max), T::of(sum_z / sum))
        })
        .collect();
    let (lse, mean) = rows.into_iter().unzip();
    vec![lse, mean]
}

/// Zero [n, 2] for rows `h` [n, d] against `w` [vocab, d], whose gradients are those of
/// `[h . (p W), h . (r W)]` with p and r (from logits `z`, `lse` and `mean`) held constant.
pub(super) fn lse_entropy_carrier(
    h: &Tensor,
    w: &Tensor,
    (z, lse, mean): (Tensor, Tensor, Tensor),
) -> Result<Tensor> {
    Ok(h.apply_op2(w, Carrier { z, lse, mean })?)
}

struct Carrier {
    z: Tensor,    // [n, vocab], detached
    lse: Tensor,  // [n, 1]
    mean: Tensor, // [n, 1]
}

impl Carrier {
    /// G = p (g0 + g1 (z - mean)) [n, vocab] for the upstream gradient `g` [n, 2].
    fn coefficients(&self, g: &Tensor) -> candle_core::Result<Tensor> {
        let (z, lse, mean) = (&self.z, &self.lse, &self.mean);
        if !super::fused::serves(z) {
            let p = z.broadcast_sub(lse)?.exp()?;
            let c = z.broadcast_sub(mean)?.broadcast_mul(&g.narrow(1, 1, 1)?)?;
            return p.mul(&c.broadcast_add(&g.narrow(1, 0, 1)?)?);
        }
        let vocab = z.dim(1)?;
        let out = on_host(
            "head gradient",
            &[z, lse, mean, g],
            &[z.shape()],
            |v| vec![big_g(v, vocab)],
            |v| vec![big_g(v, vocab)],
        )?;
        out.into_iter()
            .next()
            .ok_or_else(|| candle_core::Error::Msg("head gradient: no result".into()))
    }
}

/// G from [z, lse, mean, g] (see `Carrier::coefficients`).
fn big_g<T: Real>(v: &[&[T]], vocab: usize) -> Vec<T> {
    let (z, lse, mean, g) = (v[0], v[1], v[2], v[3]);
    let mut out = vec![T::default(); z.len()];
    out.par_chunks_mut(vocab)
        .zip(z.par_chunks(vocab))
        .enumerate()
        .for_each(|(i, (o, zr))| {
            let (l, m) = (lse[i].into(), mean[i].into());
            let (g0, g1) = (g[2 * i].into(), g[2 * i + 1].into());
            for (o, &zv) in o.iter_mut().zip(zr) {
                let zv = zv.into();
                *o = T::of(T::exp_at(zv - l) * (g0 + g1 * (zv - m)));
            }
        });
    out
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
        let g = g.to_dtype(self.z.dtype())?;
        // G [n, vocab], in the dtype of the products.
        let big_g = self.coefficients(&g)?.to_dtype(h.dtype())?;
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
