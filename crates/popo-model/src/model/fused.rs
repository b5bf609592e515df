//! RMSNorm and SwiGLU for training on the CPU as ops with written-out backwards.
//!
//! Built from primitives, a norm records six nodes (square, mean, add, sqrt, divide, multiply)
//! and SwiGLU's `silu(g) * u` three, whose backward passes each allocate and sweep an
//! activation-sized tensor; a model has two norms and one SwiGLU per layer. Here each forward is
//! one sweep and each backward one or two. RMSNorm, with per row r = 1 / sqrt(mean(x^2) + eps),
//! y = x r w:
//!
//!   dx_j = r (g_j w_j) - x_j r^3 (sum_k g_k w_k x_k) / d,    dw_j = sum over rows of g_j x_j r.
//!
//! SwiGLU, y = silu(a) b with s = sigmoid(a): da = g b s (1 + a (1 - s)), db = g a s.
//!
//! Arithmetic is in f64 for f32 and f64 tensors, the exponential at the tensor's own precision
//! (`host::Real`); other dtypes and devices keep the primitives
//! (`RmsNorm::forward`, `Mlp::forward`). Checked against f64 finite differences (tests/model.rs).

use super::host::{forward_on_cpu, on_host, Real};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// `x` [.., d] normalised over its last dim and scaled by `w` [d], with a graph through both.
pub(super) fn rms_norm_train(x: &Tensor, w: &Tensor, eps: f64) -> anyhow::Result<Tensor> {
    Ok(x.contiguous()?
        .apply_op2(&w.contiguous()?, RmsNormOp { eps })?)
}

/// `silu(a) * b` for `a`, `b` of one shape, with a graph through both.
pub(super) fn swiglu_train(a: &Tensor, b: &Tensor) -> anyhow::Result<Tensor> {
    Ok(a.contiguous()?.apply_op2(&b.contiguous()?, SwiGlu)?)
}

/// Whether the ops here (and in `attn_train.rs`) serve `x`: a CPU tensor in f32 or f64.
pub(super) fn serves(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// Two results as the backward helpers' list.
fn pair<T>((a, b): (Vec<T>, Vec<T>)) -> Vec<Vec<T>> {
    vec![a, b]
}

/// The first two entries of a backward's list.
fn two(v: Vec<Tensor>) -> candle_core::Result<(Tensor, Tensor)> {
    let mut it = v.into_iter();
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(candle_core::Error::Msg(
            "fused op: a backward lost a result".into(),
        )),
    }
}

struct RmsNormOp {
    eps: f64,
}

/// The row's 1 / sqrt(mean(x^2) + eps).
fn inv_rms<T: Copy + Into<f64>>(row: &[T], eps: f64) -> f64 {
    let ss: f64 = row.iter().map(|&v| v.into() * v.into()).sum();
    1.0 / (ss / row.len() as f64 + eps).sqrt()
}

fn rms_norm<T: Real>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let mut y = vec![T::default(); x.len()];
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(yr, xr)| {
            let r = inv_rms(xr, eps);
            for ((o, &v), &wj) in yr.iter_mut().zip(xr).zip(w) {
                *o = T::of(v.into() * r * wj.into());
            }
        });
    y
}

/// (dx, dw) for upstream gradient `g`: dx as x, dw [d].
fn rms_norm_backward<T: Real>(x: &[T], w: &[T], g: &[T], eps: f64) -> (Vec<T>, Vec<T>) {
    let d = w.len();
    let mut dx = vec![T::default(); x.len()];
    // Each row's r comes back from the dx pass, so that dw needs no second pass over the norms.
    let rs: Vec<f64> = dx
        .par_chunks_mut(d)
        .zip(x.par_chunks(d).zip(g.par_chunks(d)))
        .map(|(dxr, (xr, gr))| {
            let r = inv_rms(xr, eps);
            let dot: f64 = (0..d)
                .map(|j| gr[j].into() * w[j].into() * xr[j].into())
                .sum();
            let c = r * r * r * dot / d as f64;
            for j in 0..d {
                dxr[j] = T::of(r * gr[j].into() * w[j].into() - xr[j].into() * c);
            }
            r
        })
        .collect();
    let mut dw = vec![0f64; d];
    for ((xr, gr), r) in x.chunks(d).zip(g.chunks(d)).zip(&rs) {
        for j in 0..d {
            dw[j] += gr[j].into() * xr[j].into() * r;
        }
    }
    (dx, dw.into_iter().map(T::of).collect())
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm-train"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let eps = self.eps;
        let y = forward_on_cpu(
            "rms-norm-train",
            &[(x, xl), (w, wl)],
            &[],
            |v| rms_norm(v[0], v[1], eps),
            |v| rms_norm(v[0], v[1], eps),
        )?;
        Ok((y, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let eps = self.eps;
        let (dx, dw) = two(on_host(
            "rms-norm-train backward",
            &[x, w, g],
            &[x.shape(), w.shape()],
            |v| pair(rms_norm_backward(v[0], v[1], v[2], eps)),
            |v| pair(rms_norm_backward(v[0], v[1], v[2], eps)),
        )?)?;
        Ok((Some(dx), w.track_op().then_some(dw)))
    }
}

struct SwiGlu;

/// The logistic function, its exponential at `T`'s precision.
fn sigmoid<T: Real>(v: f64) -> f64 {
    1.0 / (1.0 + T::exp_at(-v))
}

pub(super) fn swiglu<T: Real>(a: &[T], b: &[T]) -> Vec<T> {
    let mut y = vec![T::default(); a.len()];
    y.par_iter_mut()
        .zip(a.par_iter().zip(b.par_iter()))
        .for_each(|(o, (&av, &bv))| {
            let av = av.into();
            *o = T::of(av * sigmoid::<T>(av) * bv.into());
        });
    y
}

/// (da, db) for upstream gradient `g`.
fn swiglu_backward<T: Real>(a: &[T], b: &[T], g: &[T]) -> (Vec<T>, Vec<T>) {
    let mut da = vec![T::default(); a.len()];
    let mut db = vec![T::default(); a.len()];
    da.par_iter_mut()
        .zip(db.par_iter_mut())
        .zip(a.par_iter().zip(b.par_iter().zip(g.par_iter())))
        .for_each(|((da, db), (&av, (&bv, &gv)))| {
            let (av, gv) = (av.into(), gv.into());
            let s = sigmoid::<T>(av);
            *da = T::of(gv * bv.into() * s * (1.0 + av * (1.0 - s)));
            *db = T::of(gv * av * s);
        });
    (da, db)
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu-train"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = forward_on_cpu(
            "swiglu-train",
            &[(a, al), (b, bl)],
            &[],
            |v| swiglu(v[0], v[1]),
            |v| swiglu(v[0], v[1]),
        )?;
        Ok((y, al.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (da, db) = swiglu_grad(a, b, g)?;
        Ok((Some(da), Some(db)))
    }
}

/// SwiGLU's input gradients (da, db) for inputs `a`, `b` and the output gradient `g`.
pub(super) fn swiglu_grad(
    a: &Tensor,
    b: &Tensor,
    g: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    two(on_host(
        "swiglu-train backward",
        &[a, b, g],
        &[a.shape(), b.shape()],
        |v| pair(swiglu_backward(v[0], v[1], v[2])),
        |v| pair(swiglu_backward(v[0], v[1], v[2])),
    )?)
}
