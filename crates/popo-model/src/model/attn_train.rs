//! Attention's elementwise core for training on the CPU as ops with written-out backwards: the
//! rotary embedding (with the head transpose) and the masked, scaled softmax of the scores.
//!
//! Built from primitives, the rotary embedding records eight nodes per q and k (transpose, copy,
//! two narrows, neg, cat, two products and a sum) and the softmax seven on the [b, h, t, s]
//! scores (scale, reshape, bias, shift, exp, divide, reshape), the largest activations of a
//! layer. candle's backward allocates a zeroed gradient for every node and adds into it, so each
//! node costs two sweeps of its size before its own arithmetic (BENCHMARKS.md, "LoRA against
//! PEFT"). Here each is one node.
//!
//! Rotary embedding, rotate_half convention with h = hd / 2, per position tables c and s [hd]:
//!
//!   y_j = x_j c_j - x_{j+h} s_j,   y_{j+h} = x_{j+h} c_{j+h} + x_j s_{j+h}      (j < h)
//!   dx_j = g_j c_j + g_{j+h} s_{j+h},   dx_{j+h} = g_{j+h} c_{j+h} - g_j s_j.
//!
//! Softmax of z = a x + bias (bias 0 or -inf, constant): p = softmax(z), dx = a p (g - <g, p>).
//!
//! f32 tensors keep f32 exponentials (as candle's and PyTorch's kernels do) with sums in f64; f64
//! tensors are exact to f64 for the finite-difference tests (tests/model.rs). Other dtypes and
//! devices keep the primitives (`Attention::forward`).

use super::host::{forward_on_cpu, msg, on_host, Real};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

/// The rotary embedding of `x` [b, t, h, hd] with tables `cos`, `sin` [b, 1, t, hd], returned as
/// [b, h, t, hd] (the layout the score products take), with a graph through `x`.
pub(super) fn rope_train(x: &Tensor, cos: &Tensor, sin: &Tensor) -> anyhow::Result<Tensor> {
    let op = Rope {
        cos: cos.detach().contiguous()?,
        sin: sin.detach().contiguous()?,
    };
    Ok(x.contiguous()?.apply_op1(op)?)
}

/// softmax(scale x + bias) over the last dim of scores `x` [b, kv, rep * t, s] (GQA's folded
/// layout: row r of a kv head is query position r mod t), with `bias` [b, 1, t, s] constant.
pub(super) fn softmax_train(x: &Tensor, bias: &Tensor, scale: f64) -> anyhow::Result<Tensor> {
    let (b, _, _, s) = x.dims4()?;
    let t = bias.dim(2)?;
    anyhow::ensure!(
        bias.dims4()? == (b, 1, t, s),
        "attention bias {:?} does not fit scores {:?}",
        bias.shape(),
        x.shape()
    );
    let op = Softmax {
        bias: bias.detach().to_dtype(x.dtype())?.contiguous()?,
        scale,
    };
    Ok(x.contiguous()?.apply_op1(op)?)
}

/// The rotary embedding's input gradient dx [b, t, h, hd] (`dims`) from the output gradient `g`
/// [b, h, t, hd], with the forward's tables `cos`, `sin` [b, 1, t, hd].
pub(super) fn rope_grad(
    g: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    dims: Dims4,
) -> candle_core::Result<Tensor> {
    let dx = on_host(
        "rope-train backward",
        &[g, cos, sin],
        &[&Shape::from(dims)],
        |v| vec![rope(v[0], v[1], v[2], dims, true)],
        |v| vec![rope(v[0], v[1], v[2], dims, true)],
    )?;
    dx.into_iter()
        .next()
        .ok_or_else(|| candle_core::Error::Msg("rope-train backward: no result".into()))
}

/// The softmax's input gradient (scores [.., s]) from the output gradient `g` and the output
/// `p`, for the scale the forward applied (see the module doc).
pub(super) fn softmax_grad(g: &Tensor, p: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
    let s = p.dim(candle_core::D::Minus1)?;
    let dx = on_host(
        "attention-softmax-train backward",
        &[g, p],
        &[p.shape()],
        |v| vec![softmax_backward(v[0], v[1], scale, s)],
        |v| vec![softmax_backward(v[0], v[1], scale, s)],
    )?;
    dx.into_iter().next().ok_or_else(|| {
        candle_core::Error::Msg("attention-softmax-train backward: no result".into())
    })
}

struct Rope {
    cos: Tensor, // [b, 1, t, hd]
    sin: Tensor,
}

/// y [b, h, t, hd] from x [b, t, h, hd]; with `inverse`, the backward's dx [b, t, h, hd] from
/// g [b, h, t, hd] (see the module doc).
fn rope<T: Real>(x: &[T], cos: &[T], sin: &[T], (_, t, h, hd): Dims4, inverse: bool) -> Vec<T> {
    let half = hd / 2;
    let mut y = vec![T::default(); x.len()];
    y.par_chunks_mut(hd)
        .with_min_len(64)
        .enumerate()
        .for_each(|(row, o)| {
            // The output row's batch row and position, and its input row in the other layout.
            let (bi, ti, src) = if inverse {
                let (bi, ti, hh) = (row / (t * h), (row / h) % t, row % h);
                (bi, ti, ((bi * h + hh) * t + ti) * hd)
            } else {
                let (bi, hh, ti) = (row / (h * t), (row / t) % h, row % t);
                (bi, ti, ((bi * t + ti) * h + hh) * hd)
            };
            let bt = bi * t + ti;
            let (c, s) = (&cos[bt * hd..(bt + 1) * hd], &sin[bt * hd..(bt + 1) * hd]);
            let xr = &x[src..src + hd];
            for j in 0..half {
                let (a, z) = (xr[j].into(), xr[j + half].into());
                let (s_lo, s_hi): (f64, f64) = (s[j].into(), s[j + half].into());
                // y_j = a c_j + z p, y_{j+h} = z c_{j+h} + a q (R, or its transpose).
                let (p, q) = if inverse {
                    (s_hi, -s_lo)
                } else {
                    (-s_lo, s_hi)
                };
                o[j] = T::of(a * c[j].into() + z * p);
                o[j + half] = T::of(z * c[j + half].into() + a * q);
            }
        });
    y
}

pub(super) type Dims4 = (usize, usize, usize, usize);

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rope-train"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = xl.shape().dims4()?; // [b, t, h, hd]
        let (b, t, h, hd) = dims;
        if self.cos.dims4()? != (b, 1, t, hd) || hd % 2 != 0 {
            return Err(msg("rope-train: tables [b, 1, t, hd] with hd even"));
        }
        let y = forward_on_cpu(
            "rope-train",
            &[(x, xl)],
            &[&self.cos, &self.sin],
            |v| rope(v[0], v[1], v[2], dims, false),
            |v| rope(v[0], v[1], v[2], dims, false),
        )?;
        Ok((y, Shape::from((b, h, t, hd))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        rope_grad(g, &self.cos, &self.sin, x.dims4()?).map(Some)
    }
}

struct Softmax {
    bias: Tensor, // [b, 1, t, s], the scores' dtype
    scale: f64,
}

/// The bias row of scores row `k` of [b, kv, rep * t, s] with `per_b` = kv * rep * t rows per
/// batch row.
fn bias_row(k: usize, per_b: usize, t: usize) -> usize {
    (k / per_b) * t + (k % per_b) % t
}

fn softmax<T: Real>(x: &[T], bias: &[T], scale: f64, (b, t, s): (usize, usize, usize)) -> Vec<T> {
    let per_b = x.len() / s / b;
    let mut p = vec![T::default(); x.len()];
    p.par_chunks_mut(s)
        .zip(x.par_chunks(s))
        .enumerate()
        .for_each(|(k, (pr, xr))| {
            let br = &bias[bias_row(k, per_b, t) * s..][..s];
            let z = |j: usize| scale * xr[j].into() + br[j].into();
            let max = (0..s).map(z).fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for (j, o) in pr.iter_mut().enumerate() {
                let e = T::exp_at(z(j) - max);
                sum += e;
                *o = T::of(e);
            }
            for o in pr.iter_mut() {
                *o = T::of((*o).into() / sum);
            }
        });
    p
}

/// dx = scale p (g - <g, p>) per row.
fn softmax_backward<T: Real>(g: &[T], p: &[T], scale: f64, s: usize) -> Vec<T> {
    let mut dx = vec![T::default(); p.len()];
    dx.par_chunks_mut(s)
        .zip(g.par_chunks(s).zip(p.par_chunks(s)))
        .for_each(|(dr, (gr, pr))| {
            let dot: f64 = gr.iter().zip(pr).map(|(&g, &p)| g.into() * p.into()).sum();
            for ((d, &g), &p) in dr.iter_mut().zip(gr).zip(pr) {
                *d = T::of(scale * p.into() * (g.into() - dot));
            }
        });
    dx
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "attention-softmax-train"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, _, _, s) = xl.shape().dims4()?;
        let t = self.bias.dim(2)?;
        let scale = self.scale;
        let p = forward_on_cpu(
            "attention-softmax-train",
            &[(x, xl)],
            &[&self.bias],
            |v| softmax(v[0], v[1], scale, (b, t, s)),
            |v| softmax(v[0], v[1], scale, (b, t, s)),
        )?;
        Ok((p, xl.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, p: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        softmax_grad(g, p, self.scale).map(Some)
    }
}
