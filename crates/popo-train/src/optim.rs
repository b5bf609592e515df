//! AdamW (decoupled weight decay) with checkpointable moments, gradient accumulation over
//! micro-batches, global-norm clipping, and the linear-warmup + cosine learning-rate schedule.
//!
//! Gradients and moments are kept in f32 whatever the parameter dtype, and updates are applied to
//! the f32 master weights of `crate::params` in mixed precision. Weight decay applies to matrices
//! only (rank >= 2), not to biases and norm gains, as HF's Trainer does.

use crate::config::OptimConfig;
use crate::params::{full_dtype, Params};
use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use std::collections::HashMap;

/// Learning rate for update `step` (0-based) of `total`: linear warmup over
/// `ceil(warmup_ratio * total)` updates (reaching `lr` at the last warmup update), then cosine decay
/// to `min_lr_ratio * lr`.
pub fn lr_at(cfg: &OptimConfig, step: usize, total: usize) -> f64 {
    let total = total.max(1);
    let warmup = (cfg.warmup_ratio * total as f64).ceil() as usize;
    if step < warmup {
        return cfg.lr * (step + 1) as f64 / warmup as f64;
    }
    let decay = (total - warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / decay).min(1.0);
    let min = cfg.min_lr_ratio * cfg.lr;
    min + (cfg.lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Gradients summed over micro-batches, one slot per parameter.
pub struct GradAccum {
    params: Vec<Var>,
    pub grads: Vec<Option<Tensor>>,
}

impl GradAccum {
    pub fn new(params: &[Var]) -> Self {
        Self {
            params: params.to_vec(),
            grads: vec![None; params.len()],
        }
    }

    pub fn add(&mut self, store: &GradStore) -> Result<()> {
        for (slot, p) in self.grads.iter_mut().zip(&self.params) {
            if let Some(g) = store.get(p.as_tensor()) {
                // Detached: a gradient that carries a graph would keep it alive in the sum.
                let g = g.detach().to_dtype(full_dtype(p.dtype()))?;
                *slot = Some(match slot.take() {
                    Some(acc) => (acc + g)?,
                    None => g,
                });
            }
        }
        Ok(())
    }

    /// Adds another accumulator's sums (a micro-batch's), slot by slot.
    pub fn add_accum(&mut self, other: GradAccum) -> Result<()> {
        for (slot, g) in self.grads.iter_mut().zip(other.grads) {
            if let Some(g) = g {
                *slot = Some(match slot.take() {
                    Some(acc) => (acc + g)?,
                    None => g,
                });
            }
        }
        Ok(())
    }

    pub fn global_norm(&self) -> Result<f64> {
        let mut s = 0.0f64;
        for g in self.grads.iter().flatten() {
            s += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
        Ok(s.sqrt())
    }

    /// Divides every gradient by the loss scale (f16 training); a scale of 1 leaves them as they are.
    pub fn unscale(&mut self, scale: f64) -> Result<()> {
        if scale != 1.0 {
            for g in self.grads.iter_mut().flatten() {
                *g = (&*g * (1.0 / scale))?;
            }
        }
        Ok(())
    }

    /// Scales gradients so their global norm is at most `max_norm` (0: no clipping).
    /// Returns the norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.global_norm()?;
        if max_norm > 0.0 && norm.is_finite() && norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            for g in self.grads.iter_mut().flatten() {
                *g = (&*g * scale)?;
            }
        }
        Ok(norm)
    }
}

/// Dynamic loss scaling for f16 compute, as `torch.amp.GradScaler` does it. f16 flushes
/// gradients below about 6e-8 to zero, so the loss is multiplied by `scale` before backward and
/// the accumulated f32 gradients are divided by it again. An update whose gradients overflow is
/// skipped and halves the scale; every `GROWTH_INTERVAL` clean updates double it. (bf16 has f32's
/// exponent range and needs none of this.)
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossScale {
    pub scale: f64,
    /// Clean updates since the scale last changed.
    pub clean: u64,
}

impl LossScale {
    pub const GROWTH_INTERVAL: u64 = 2000;

    /// A scaler for `dtype` compute starting at `init`: only f16 needs one.
    pub fn for_dtype(dtype: DType, init: f64) -> Option<Self> {
        (dtype == DType::F16).then_some(Self {
            scale: init,
            clean: 0,
        })
    }

    /// Records whether this update's gradients were finite. Returns false when the scale was
    /// already 1 (the overflow is the model's, not the scale's).
    pub fn update(&mut self, finite: bool) -> bool {
        if finite {
            self.clean += 1;
            if self.clean >= Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.clean = 0;
            }
            return true;
        }
        self.clean = 0;
        if self.scale <= 1.0 {
            return false;
        }
        self.scale = (self.scale / 2.0).max(1.0);
        true
    }
}

/// AdamW's moments; the weights it updates live in [`Params`].
pub struct AdamW {
    names: Vec<String>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates taken so far (for bias correction).
    pub t: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    pub fn new(params: &Params, cfg: &OptimConfig) -> Result<Self> {
        let mut m = Vec::with_capacity(params.len());
        for p in params.vars() {
            m.push(Tensor::zeros(p.shape(), full_dtype(p.dtype()), p.device())?);
        }
        Ok(Self {
            names: params.names().to_vec(),
            v: m.clone(),
            m,
            t: 0,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
        })
    }

    /// One update of `params` with learning rate `lr`, computed on their full-precision values.
    /// Parameters without a gradient are left untouched (moments and decay included), as in
    /// PyTorch.
    pub fn step(&mut self, params: &mut Params, grads: &GradAccum, lr: f64) -> Result<()> {
        if params.names() != self.names.as_slice() {
            bail!(
                "AdamW holds moments for {} parameters, but {} were given to update",
                self.names.len(),
                params.len()
            );
        }
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        for i in 0..params.len() {
            let Some(g) = &grads.grads[i] else { continue };
            let m = ((&self.m[i] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + self.eps)?)?;
            let mut w = params.full(i)?;
            if self.weight_decay > 0.0 && w.rank() >= 2 {
                w = (w * (1.0 - lr * self.weight_decay))?;
            }
            params.set_full(i, (w - (update * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Moments by name (`m.<param>`, `v.<param>`), for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.names.len());
        for (i, n) in self.names.iter().enumerate() {
            out.push((format!("m.{n}"), self.m[i].clone()));
            out.push((format!("v.{n}"), self.v[i].clone()));
        }
        out
    }

    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, t: u64) -> Result<()> {
        for (i, n) in self.names.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{prefix}.{n}");
                let Some(x) = tensors.get(&key) else {
                    bail!("optimizer state: missing tensor `{key}`")
                };
                if x.shape() != slot.shape() {
                    bail!(
                        "optimizer state: `{key}` has shape {:?}, expected {:?}",
                        x.shape(),
                        slot.shape()
                    );
                }
                *slot = x.to_dtype(slot.dtype())?.to_device(slot.device())?;
            }
        }
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays() {
        let cfg = OptimConfig {
            lr: 1.0,
            warmup_ratio: 0.1,
            min_lr_ratio: 0.0,
            ..Default::default()
        };
        assert!((lr_at(&cfg, 0, 100) - 0.1).abs() < 1e-12);
        assert!((lr_at(&cfg, 9, 100) - 1.0).abs() < 1e-12);
        assert!((lr_at(&cfg, 10, 100) - 1.0).abs() < 1e-12);
        let mid = 10 + 45;
        assert!((lr_at(&cfg, mid, 100) - 0.5).abs() < 1e-12);
        assert!(lr_at(&cfg, 99, 100) < 0.01);
    }

    /// Two AdamW updates against the formula written out in f64.
    #[test]
    fn adamw_matches_reference() {
        let dev = Device::Cpu;
        let cfg = OptimConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        let w =
            Var::from_tensor(&Tensor::new(&[[1.0f32, -2.0], [0.5, 3.0]], &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[0.25f32, -0.75], &dev).unwrap()).unwrap();
        let mut params = Params::new(
            vec![("w".to_string(), w.clone()), ("b".to_string(), b.clone())],
            true,
        )
        .unwrap();
        let mut opt = AdamW::new(&params, &cfg).unwrap();
        let gw = [[0.1f64, -0.2], [0.3, 0.0]];
        let gb = [1.0f64, -4.0];
        let (mut rw, mut rb) = ([[1.0f64, -2.0], [0.5, 3.0]], [0.25f64, -0.75]);
        let (mut mw, mut vw, mut mb, mut vb) =
            ([[0.0f64; 2]; 2], [[0.0f64; 2]; 2], [0.0f64; 2], [0.0f64; 2]);
        let lr = 0.01;
        for t in 1..=2 {
            let mut acc = GradAccum::new(params.vars());
            acc.grads[0] = Some(Tensor::new(&[[0.1f32, -0.2], [0.3, 0.0]], &dev).unwrap());
            acc.grads[1] = Some(Tensor::new(&[1.0f32, -4.0], &dev).unwrap());
            opt.step(&mut params, &acc, lr).unwrap();
            let (bc1, bc2) = (1.0 - 0.9f64.powi(t), 1.0 - 0.999f64.powi(t));
            for i in 0..2 {
                for j in 0..2 {
                    mw[i][j] = 0.9 * mw[i][j] + 0.1 * gw[i][j];
                    vw[i][j] = 0.999 * vw[i][j] + 0.001 * gw[i][j] * gw[i][j];
                    rw[i][j] = rw[i][j] * (1.0 - lr * 0.1)
                        - lr * (mw[i][j] / bc1) / ((vw[i][j] / bc2).sqrt() + 1e-8);
                }
                mb[i] = 0.9 * mb[i] + 0.1 * gb[i];
                vb[i] = 0.999 * vb[i] + 0.001 * gb[i] * gb[i];
                rb[i] -= lr * (mb[i] / bc1) / ((vb[i] / bc2).sqrt() + 1e-8); // no decay on a bias
            }
        }
        let gotw = w.as_tensor().to_vec2::<f32>().unwrap();
        let gotb = b.as_tensor().to_vec1::<f32>().unwrap();
        for i in 0..2 {
            assert!((gotb[i] as f64 - rb[i]).abs() < 1e-6);
            for j in 0..2 {
                assert!(
                    (gotw[i][j] as f64 - rw[i][j]).abs() < 1e-6,
                    "{gotw:?} vs {rw:?}"
                );
            }
        }
        // Moments round-trip through the state map.
        let st: HashMap<String, Tensor> = opt.state().into_iter().collect();
        let mut fresh = AdamW::new(&params, &cfg).unwrap();
        fresh.load_state(&st, opt.t).unwrap();
        assert_eq!(
            fresh.m[0].to_vec2::<f32>().unwrap(),
            opt.m[0].to_vec2::<f32>().unwrap()
        );
        assert!(fresh
            .load_state(&HashMap::new(), 1)
            .unwrap_err()
            .to_string()
            .contains("m.w"));
    }

    #[test]
    fn loss_scale_backs_off_on_overflow_and_grows_when_clean() {
        assert!(LossScale::for_dtype(DType::BF16, 65536.0).is_none());
        let mut s = LossScale::for_dtype(DType::F16, 65536.0).unwrap();
        assert_eq!(s.scale, 65536.0);
        assert!(s.update(false));
        assert_eq!(s.scale, 32768.0);
        for _ in 0..LossScale::GROWTH_INTERVAL - 1 {
            assert!(s.update(true));
        }
        assert_eq!(s.scale, 32768.0);
        assert!(s.update(true));
        assert_eq!((s.scale, s.clean), (65536.0, 0));
        let mut low = LossScale {
            scale: 1.0,
            clean: 5,
        };
        assert!(
            !low.update(false),
            "an overflow at scale 1 is a real non-finite gradient"
        );
    }

    #[test]
    fn unscale_divides_by_the_scale() {
        let dev = Device::Cpu;
        let a = Var::zeros(2, DType::F32, &dev).unwrap();
        let mut acc = GradAccum::new(&[a]);
        acc.grads[0] = Some(Tensor::new(&[1024.0f32, -3.0], &dev).unwrap());
        acc.unscale(1024.0).unwrap();
        assert_eq!(
            acc.grads[0].as_ref().unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0, -3.0 / 1024.0]
        );
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let dev = Device::Cpu;
        let a = Var::zeros(2, DType::F32, &dev).unwrap();
        let mut acc = GradAccum::new(&[a]);
        acc.grads[0] = Some(Tensor::new(&[3.0f32, 4.0], &dev).unwrap());
        assert!((acc.clip(1.0).unwrap() - 5.0).abs() < 1e-6);
        assert!((acc.global_norm().unwrap() - 1.0).abs() < 1e-5);
    }
}
