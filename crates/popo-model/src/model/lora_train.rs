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

use super::host::msg;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Storage, Tensor};
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

/// `a` += `b` and the bias on every row, for results of one float dtype.
fn add_into(a: &mut CpuStorage, b: &CpuStorage, bias: Option<&Tensor>) -> candle_core::Result<()> {
    let (out, bias) = match bias {
        Some(v) => (v.elem_count(), Some(v.storage_and_layout())),
        None => (1, None),
    };
    let bias = bias.as_ref().map(|(s, _)| &**s);
    match (a, b, bias) {
        (CpuStorage::F32(a), CpuStorage::F32(b), None) => add(a, b, None, out),
        (CpuStorage::F32(a), CpuStorage::F32(b), Some(Storage::Cpu(CpuStorage::F32(v)))) => {
            add(a, b, Some(v), out)
        }
        (CpuStorage::F64(a), CpuStorage::F64(b), None) => add(a, b, None, out),
        (CpuStorage::F64(a), CpuStorage::F64(b), Some(Storage::Cpu(CpuStorage::F64(v)))) => {
            add(a, b, Some(v), out)
        }
        _ => return Err(msg("lora-train")),
    }
    Ok(())
}

fn add<T: Copy + std::ops::AddAssign + Send + Sync>(
    a: &mut [T],
    b: &[T],
    bias: Option<&[T]>,
    out: usize,
) {
    a.par_chunks_mut(out)
        .zip(b.par_chunks(out))
        .for_each(|(ar, br)| {
            ar.iter_mut().zip(br).for_each(|(a, &b)| *a += b);
            if let Some(v) = bias {
                ar.iter_mut().zip(v).for_each(|(a, &v)| *a += v);
            }
        });
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
        let rows = Layout::contiguous_with_offset((n, d_in), xl.start_offset());
        let w_t = self.w.t()?;
        let (ws, wl) = w_t.storage_and_layout();
        let Storage::Cpu(ws) = &*ws else {
            return Err(msg("lora-train"));
        };
        let mut y = x.matmul(ws, (1, n, out, d_in), &rows, wl)?; // x W^T
        let side = h.matmul(b, (1, n, out, r), hl, &bl.transpose(0, 1)?)?; // h B^T
        add_into(&mut y, &side, self.bias.as_ref())?;
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
        let dx = match x.track_op() {
            true => Some(g.matmul(&self.w)?.reshape(x.shape())?),
            false => None,
        };
        let dh = h.track_op().then(|| g.matmul(&bd)).transpose()?;
        let db = b.track_op().then(|| g.t()?.matmul(&hd)).transpose()?;
        Ok((dx, dh, db))
    }
}
