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
//! Arithmetic is in f64 for f32 and f64 tensors; other dtypes and devices keep the primitives
//! (`RmsNorm::forward`, `Mlp::forward`). Checked against f64 finite differences (tests/model.rs).

use anyhow::{bail, Result};
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// `x` [.., d] normalised over its last dim and scaled by `w` [d], with a graph through both.
pub(super) fn rms_norm_train(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(x.contiguous()?
        .apply_op2(&w.contiguous()?, RmsNormOp { eps })?)
}

/// Whether the ops here serve `x`: a CPU tensor in f32 or f64.
pub(super) fn serves(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}

struct RmsNormOp {
    eps: f64,
}

/// A contiguous layout's elements.
fn elems<'a, T>(s: &'a [T], l: &Layout) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => Err(candle_core::Error::Msg(
            "rms-norm: operand not contiguous".into(),
        )),
    }
}

/// The row's 1 / sqrt(mean(x^2) + eps).
fn inv_rms<T: Copy + Into<f64>>(row: &[T], eps: f64) -> f64 {
    let ss: f64 = row.iter().map(|&v| v.into() * v.into()).sum();
    1.0 / (ss / row.len() as f64 + eps).sqrt()
}

fn forward<T>(x: &[T], w: &[T], eps: f64, from: fn(f64) -> T) -> Vec<T>
where
    T: Copy + Into<f64> + Send + Sync + Default,
{
    let d = w.len();
    let mut y = vec![T::default(); x.len()];
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(yr, xr)| {
            let r = inv_rms(xr, eps);
            for ((o, &v), &wj) in yr.iter_mut().zip(xr).zip(w) {
                *o = from(v.into() * r * wj.into());
            }
        });
    y
}

/// (dx, dw) for upstream gradient `g`, all [rows x d] but `dw` [d].
fn backward<T>(x: &[T], w: &[T], g: &[T], eps: f64, from: fn(f64) -> T) -> (Vec<T>, Vec<T>)
where
    T: Copy + Into<f64> + Send + Sync + Default,
{
    let d = w.len();
    let mut dx = vec![T::default(); x.len()];
    // Per row: r, written beside dx so that dw needs no second pass over x's norms.
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
                dxr[j] = from(r * gr[j].into() * w[j].into() - xr[j].into() * c);
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
    (dx, dw.into_iter().map(from).collect())
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
        let y = match (x, w) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => {
                CpuStorage::F32(forward(elems(x, xl)?, elems(w, wl)?, self.eps, |v| {
                    v as f32
                }))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w)) => {
                CpuStorage::F64(forward(elems(x, xl)?, elems(w, wl)?, self.eps, |v| v))
            }
            _ => return Err(candle_core::Error::Msg("rms-norm: f32 or f64 only".into())),
        };
        Ok((y, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = host_backward(x, w, g, self.eps)
            .map_err(|e| candle_core::Error::Msg(format!("rms-norm backward: {e}")))?;
        Ok((Some(dx), w.track_op().then_some(dw)))
    }
}

fn host_backward(x: &Tensor, w: &Tensor, g: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let dev = x.device();
    let flat = |t: &Tensor| t.flatten_all();
    Ok(match x.dtype() {
        candle_core::DType::F32 => {
            let (xs, ws) = (flat(x)?.to_vec1::<f32>()?, flat(w)?.to_vec1::<f32>()?);
            let gs = flat(g)?.to_vec1::<f32>()?;
            let (dx, dw) = backward(&xs, &ws, &gs, eps, |v| v as f32);
            (
                Tensor::from_vec(dx, x.shape(), dev)?,
                Tensor::from_vec(dw, w.shape(), dev)?,
            )
        }
        candle_core::DType::F64 => {
            let (xs, ws) = (flat(x)?.to_vec1::<f64>()?, flat(w)?.to_vec1::<f64>()?);
            let gs = flat(g)?.to_vec1::<f64>()?;
            let (dx, dw) = backward(&xs, &ws, &gs, eps, |v| v);
            (
                Tensor::from_vec(dx, x.shape(), dev)?,
                Tensor::from_vec(dw, w.shape(), dev)?,
            )
        }
        dt => bail!("rms-norm: f32 or f64 only, got {dt:?}"),
    })
}

/// `silu(a) * b` for `a`, `b` of one shape, with a graph through both.
pub(super) fn swiglu_train(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(a.contiguous()?.apply_op2(&b.contiguous()?, SwiGlu)?)
}

struct SwiGlu;

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

fn swiglu<T>(a: &[T], b: &[T], from: fn(f64) -> T) -> Vec<T>
where
    T: Copy + Into<f64> + Send + Sync + Default,
{
    let mut y = vec![T::default(); a.len()];
    y.par_iter_mut()
        .zip(a.par_iter().zip(b.par_iter()))
        .for_each(|(o, (&av, &bv))| {
            let av = av.into();
            *o = from(av * sigmoid(av) * bv.into());
        });
    y
}

/// (da, db) for upstream gradient `g`.
fn swiglu_backward<T>(a: &[T], b: &[T], g: &[T], from: fn(f64) -> T) -> (Vec<T>, Vec<T>)
where
    T: Copy + Into<f64> + Send + Sync + Default,
{
    let mut da = vec![T::default(); a.len()];
    let mut db = vec![T::default(); a.len()];
    da.par_iter_mut()
        .zip(db.par_iter_mut())
        .zip(a.par_iter().zip(b.par_iter().zip(g.par_iter())))
        .for_each(|((da, db), (&av, (&bv, &gv)))| {
            let (av, gv) = (av.into(), gv.into());
            let s = sigmoid(av);
            *da = from(gv * bv.into() * s * (1.0 + av * (1.0 - s)));
            *db = from(gv * av * s);
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
        let y = match (a, b) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                CpuStorage::F32(swiglu(elems(a, al)?, elems(b, bl)?, |v| v as f32))
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                CpuStorage::F64(swiglu(elems(a, al)?, elems(b, bl)?, |v| v))
            }
            _ => return Err(candle_core::Error::Msg("swiglu: f32 or f64 only".into())),
        };
        Ok((y, al.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (da, db) = swiglu_host_backward(a, b, g)
            .map_err(|e| candle_core::Error::Msg(format!("swiglu backward: {e}")))?;
        Ok((Some(da), Some(db)))
    }
}

fn swiglu_host_backward(a: &Tensor, b: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor)> {
    let (dev, shape) = (a.device(), a.shape());
    let flat = |t: &Tensor| t.flatten_all();
    Ok(match a.dtype() {
        candle_core::DType::F32 => {
            let (av, bv) = (flat(a)?.to_vec1::<f32>()?, flat(b)?.to_vec1::<f32>()?);
            let (da, db) = swiglu_backward(&av, &bv, &flat(g)?.to_vec1::<f32>()?, |v| v as f32);
            (
                Tensor::from_vec(da, shape, dev)?,
                Tensor::from_vec(db, shape, dev)?,
            )
        }
        candle_core::DType::F64 => {
            let (av, bv) = (flat(a)?.to_vec1::<f64>()?, flat(b)?.to_vec1::<f64>()?);
            let (da, db) = swiglu_backward(&av, &bv, &flat(g)?.to_vec1::<f64>()?, |v| v);
            (
                Tensor::from_vec(da, shape, dev)?,
                Tensor::from_vec(db, shape, dev)?,
            )
        }
        dt => bail!("swiglu: f32 or f64 only, got {dt:?}"),
    })
}
