//! A LoRA-adapted projection with a frozen base as one training op on the CPU:
//! y = x W^T + h B^T, where h = s drop(x) A^T [n, r] comes in from outside (small, with its own
//! graph to A) and W is a constant.
//!
//! Built from ops, the projection records four nodes of the output's size (the base product, the
//! adapter's product, their sum and the reshape back to [b, t, out]) and one of the input's (the
//! reshape to rows); candle's backward allocates a zeroed gradient for each and adds into it
//! (`attn_train.rs` says why that matters). Here it is one node, and its backward computes only
//! what is read:
//!
//!   dx = g W (skipped when x takes no gradient, as the embedding's output in layer 0),
//!   dh = g B,   dB = g^T h.

use super::gemm::{add_product, product, Mat};
use super::host::{forward_on_cpu, on_host, Real};
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

/// `x W^T + h B^T (+ bias)` for `x` [b, t, in], `h` [b * t, r], `b` [out, r] and a frozen
/// `w` [out, in] and `bias` [out], as [b, t, out], all CPU tensors of one float dtype
/// (`fused::serves`).
pub(super) fn adapted_train(
    x: &Tensor,
    h: &Tensor,
    (w, bias): (&Tensor, Option<&Tensor>),
    b: &Tensor,
) -> anyhow::Result<Tensor> {
    let op = Adapted {
        w: w.detach().contiguous()?,
        bias: bias.map(|v| v.detach().contiguous()).transpose()?,
    };
    Ok(x.contiguous()?
        .apply_op3(&h.contiguous()?, &b.contiguous()?, op)?)
}

struct Adapted {
    w: Tensor,            // [out, in], contiguous
    bias: Option<Tensor>, // [out]
}

/// `x W^T + h B^T (+ bias)` [n, out] from x [n, d_in], h [n, r], B [out, r], W [out, d_in] and
/// the bias [out] in `v`, in that order: the second product adds into the first's buffer.
fn adapted<T: Real + 'static>(
    v: &[&[T]],
    (n, d_in, out, r): (usize, usize, usize, usize),
) -> Vec<T> {
    let (x, h, b, w) = (v[0], v[1], v[2], v[3]);
    let mut y = product(Mat::rows(x, n, d_in), Mat::rows(w, out, d_in).t());
    add_product(&mut y, Mat::rows(h, n, r), Mat::rows(b, out, r).t());
    if let Some(bias) = v.get(4) {
        y.par_chunks_mut(out).for_each(|row| {
            row.iter_mut()
                .zip(*bias)
                .for_each(|(a, &c)| *a = T::of((*a).into() + c.into()))
        });
    }
    y
}

/// `g W` [n, d_in] from g [n, out] and W [out, d_in] in `v`.
fn input_grad<T: Real + 'static>(v: &[&[T]], (n, d_in, out): (usize, usize, usize)) -> Vec<Vec<T>> {
    vec![product(Mat::rows(v[0], n, out), Mat::rows(v[1], out, d_in))]
}

impl CustomOp3 for Adapted {
    fn name(&self) -> &'static str {
        "lora-train"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        h: &CpuStorage,
        hl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (bs, t, d_in) = xl.shape().dims3()?;
        let (n, r) = hl.shape().dims2()?;
        let (out, r2) = bl.shape().dims2()?;
        let (out2, d_in2) = self.w.dims2()?;
        if n != bs * t || r != r2 || out != out2 || d_in != d_in2 {
            return Err(candle_core::Error::Msg(format!(
                "lora-train: x {:?}, h {:?}, B {:?} and W {:?} do not fit",
                xl.shape(),
                hl.shape(),
                bl.shape(),
                self.w.shape()
            )));
        }
        let dims = (n, d_in, out, r);
        let mut consts = vec![&self.w];
        consts.extend(self.bias.as_ref());
        let args = [(x, xl), (h, hl), (b, bl)];
        let y = forward_on_cpu(
            "lora-train",
            &args,
            &consts,
            |v| adapted(v, dims),
            |v| adapted(v, dims),
        )?;
        Ok((y, Shape::from((bs, t, out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        h: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Detached operands: a product with a tracked one would record a graph of its own.
        let (hd, bd) = (h.detach(), b.detach());
        let g = g.detach().reshape((hd.dim(0)?, bd.dim(0)?))?; // [n, out]
        let (n, out) = g.dims2()?;
        let d_in = self.w.dim(1)?;
        let dims = (n, d_in, out);
        let dx = match x.track_op() {
            true => on_host(
                "lora-train backward",
                &[&g, &self.w],
                &[x.shape()],
                |v| input_grad(v, dims),
                |v| input_grad(v, dims),
            )?
            .pop(),
            false => None,
        };
        let dh = h.track_op().then(|| g.matmul(&bd)).transpose()?;
        let db = b.track_op().then(|| g.t()?.matmul(&hd)).transpose()?;
        Ok((dx, dh, db))
    }
}
