//! A linear projection (HF [out, in] weight, optional bias) and its decoding layouts.

use super::lora::Lora;
use super::lora_train::adapted_train;
use super::ops::{matmul_const_right, spread_rows};
use anyhow::{bail, Result};
use candle_core::Tensor;
use candle_nn::{Init, VarBuilder};

/// Standard deviation of freshly initialised weights (HF's `initializer_range` default).
pub(super) const INIT_STD: f64 = 0.02;

#[derive(Clone)]
pub(super) struct Linear {
    pub(super) weight: Tensor, // [out, in]
    pub(super) bias: Option<Tensor>,
    /// Decoding copies on the CPU only: the weight transposed, [in, out] contiguous. gemm packs
    /// `x W^T` element by element from the [out, in] layout on every call, which at 2-64 rows
    /// cost more than the product (38% of a SmolLM2 decode step); from [in, out] it packs by rows
    /// (BENCHMARKS.md). Training keeps [out, in]: at thousands of rows the packing is amortised.
    pub(super) weight_t: Option<Tensor>,
    /// A LoRA adapter on the side (`Model::with_lora`); decoding copies merge it instead.
    pub(super) lora: Option<Lora>,
}

impl Linear {
    pub(super) fn new(vb: VarBuilder, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let weight = vb.get_with_hints(
            (d_out, d_in),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: INIT_STD,
            },
        )?;
        let bias = if bias {
            Some(vb.get_with_hints(d_out, "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            weight_t: None,
            lora: None,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_seeded(x, None)
    }

    /// The forward with LoRA dropout drawn from `seed` (training forwards only).
    pub(super) fn forward_seeded(&self, x: &Tensor, seed: Option<u64>) -> Result<Tensor> {
        let (b, t, d_in) = x.dims3()?;
        let d_out = self.weight.dim(0)?;
        if let Some(y) = self.adapted_train(x, seed)? {
            return Ok(y);
        }
        let x = x.reshape((b * t, d_in))?;
        let y = match &self.weight_t {
            Some(wt) => x.matmul(wt)?,
            // A frozen weight (LoRA's base, a target's copy) takes no gradient.
            None if !self.weight.track_op() => matmul_const_right(&x, &self.weight.t()?)?,
            None => x.matmul(&self.weight.t()?)?,
        }; // [b*t, out]
        let y = match &self.lora {
            Some(l) => (&y + l.forward(&x, seed)?.to_dtype(y.dtype())?)?,
            None => y,
        };
        let y = match &self.bias {
            Some(bias) if bias.track_op() => (&y + spread_rows(bias, &y)?)?,
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        };
        Ok(y.reshape((b, t, d_out))?)
    }

    /// A LoRA training forward on the CPU as one op (`lora_train.rs`), where it serves.
    fn adapted_train(&self, x: &Tensor, seed: Option<u64>) -> Result<Option<Tensor>> {
        let (Some(l), Some(h)) = (&self.lora, self.adapter_input(x, seed)?) else {
            return Ok(None);
        };
        let base = (&self.weight, self.bias.as_ref());
        Ok(Some(adapted_train(x, &h, base, &l.b)?))
    }

    /// The adapter's input `s drop(x) A^T` [b * t, r] for `x` [b, t, in], with a graph, where
    /// the CPU training ops serve: an adapter on a frozen base and bias, one float dtype
    /// throughout, and something that takes a gradient. None otherwise.
    pub(super) fn adapter_input(&self, x: &Tensor, seed: Option<u64>) -> Result<Option<Tensor>> {
        let Some(l) = &self.lora else { return Ok(None) };
        let dt = x.dtype();
        let serves = super::fused::serves(x)
            && !self.weight.track_op()
            && self.weight_t.is_none()
            && self
                .bias
                .as_ref()
                .is_none_or(|v| !v.track_op() && v.dtype() == dt)
            && [&self.weight, &l.a, &l.b].iter().all(|w| w.dtype() == dt)
            && (x.track_op() || l.a.track_op() || l.b.track_op());
        if !serves {
            return Ok(None);
        }
        let (b, t, d_in) = x.dims3()?;
        Ok(Some(l.down(&x.reshape((b * t, d_in))?, seed)?)) // [n, r]
    }

    pub(super) fn detached(&self) -> Self {
        Self {
            weight: self.weight.detach(),
            bias: self.bias.as_ref().map(|b| b.detach()),
            weight_t: None,
            lora: self.lora.as_ref().map(Lora::detached),
        }
    }

    /// A detached copy with its adapter merged into a copy of the weight (W + s B A, summed in
    /// the adapter's dtype and rounded once): decoding then costs what it costs without LoRA.
    pub(super) fn merged(&self) -> Result<Self> {
        let mut l = self.detached();
        if let Some(lora) = l.lora.take() {
            let w = &l.weight;
            l.weight = (w.to_dtype(lora.a.dtype())? + lora.delta()?)?.to_dtype(w.dtype())?;
        }
        Ok(l)
    }

    /// A detached copy that keeps its weight transposed when `layout.transpose`, its adapter
    /// merged or (`!layout.merge_lora`) on the side.
    pub(super) fn for_decoding(&self, layout: DecodeLayout) -> Result<Self> {
        let mut l = match layout.merge_lora {
            true => self.merged()?,
            false => self.detached(),
        };
        if layout.transpose {
            l.weight_t = Some(l.weight.t()?.contiguous()?);
        }
        Ok(l)
    }

    /// One projection whose outputs are those of `parts`, side by side (a copy of the weights:
    /// it does not follow later optimizer updates).
    pub(super) fn stacked(parts: &[&Linear], layout: DecodeLayout) -> Result<Self> {
        let weights: Vec<Tensor> = parts
            .iter()
            .map(|l| Ok(l.merged()?.weight))
            .collect::<Result<_>>()?;
        let weight = Tensor::cat(&weights, 0)?; // [sum out, in]
                                                // The projections of one block share `attention_bias`: all have a bias or none has.
        let biases: Vec<Tensor> = parts.iter().filter_map(|l| l.bias.clone()).collect();
        let bias = match biases.len() {
            0 => None,
            n if n == parts.len() => Some(Tensor::cat(&biases, 0)?.detach()),
            _ => bail!("cannot stack projections where only some have a bias"),
        };
        Self {
            weight,
            bias,
            weight_t: None,
            lora: None,
        }
        .for_decoding(layout)
    }
}

/// How `Model::for_decoding` lays out its copies of the weights.
#[derive(Clone, Copy, Debug)]
pub(super) struct DecodeLayout {
    /// Keep every layer matrix as [in, out] (`Linear::weight_t`).
    pub(super) transpose: bool,
    /// Merge LoRA adapters into the copies; otherwise each adapted projection keeps its adapter
    /// on the side and is not stacked with its neighbours.
    pub(super) merge_lora: bool,
}

impl DecodeLayout {
    /// Whether `parts` can run as one stacked projection: merged, or no adapter among them.
    pub(super) fn stacks(&self, parts: &[&Linear]) -> bool {
        self.merge_lora || parts.iter().all(|l| l.lora.is_none())
    }
}
