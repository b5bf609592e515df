//! RMSNorm, in f32 for low-precision models as transformers does.

use super::ops::spread_rows;
use anyhow::Result;
use candle_core::{DType, Tensor, D};
use candle_nn::{Init, VarBuilder};

#[derive(Clone)]
pub(super) struct RmsNorm {
    pub(super) weight: Tensor, // [d]
    pub(super) eps: f64,
    /// No-graph copies only: the scale of candle's fused kernel (one op instead of eight; it has
    /// no backward). The weight itself for an f32 model; ones in f32 for a bf16 / f16 model, whose
    /// weight is applied after rounding back, as transformers does.
    pub(super) fused: Option<Tensor>,
    /// f32 ones [d] for low-precision models, made once.
    pub(super) ones: Option<Tensor>,
}

impl RmsNorm {
    pub(super) fn new(vb: VarBuilder, d: usize, eps: f64) -> Result<Self> {
        let low = matches!(vb.dtype(), DType::F16 | DType::BF16);
        let ones = if low {
            Some(Tensor::ones(d, DType::F32, vb.device())?)
        } else {
            None
        };
        let weight = vb.get_with_hints(d, "weight", Init::Const(1.0))?;
        Ok(Self {
            weight,
            eps,
            fused: None,
            ones,
        })
    }

    /// Normalises over the last dim in f32 (f64 stays f64), like transformers' RMSNorm.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dt = x.dtype();
        let low = matches!(dt, DType::F16 | DType::BF16);
        let xf = if low {
            x.to_dtype(DType::F32)?
        } else {
            x.clone()
        };
        if let Some(alpha) = &self.fused {
            let y = candle_nn::ops::rms_norm(&xf.contiguous()?, alpha, self.eps as f32)?;
            return Ok(if low {
                y.to_dtype(dt)?.broadcast_mul(&self.weight)?
            } else {
                y
            });
        }
        if !low && super::fused::serves(&xf) {
            return super::fused::rms_norm_train(&xf, &self.weight, self.eps);
        }
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xf.broadcast_div(&(var + self.eps)?.sqrt()?)?.to_dtype(dt)?;
        Ok(if self.weight.track_op() {
            (&y * spread_rows(&self.weight, &y)?)?
        } else {
            y.broadcast_mul(&self.weight)?
        })
    }

    pub(super) fn detached(&self) -> Self {
        let weight = self.weight.detach();
        // f64 models (finite-difference tests) stay on primitives.
        let fused = match weight.dtype() {
            DType::F32 => Some(weight.clone()),
            _ => self.ones.clone(),
        };
        Self {
            weight,
            eps: self.eps,
            fused,
            ones: self.ones.clone(),
        }
    }
}
