//! AdamW (decoupled weight decay) with checkpointable moments, gradient accumulation over
//! micro-batches, global-norm clipping, and the linear-warmup + cosine learning-rate schedule.
//!
//! Moments are kept in f32 whatever the parameter dtype. Weight decay applies to matrices only
//! (rank >= 2), not to biases and norm gains, as HF's Trainer does.

use crate::config::OptimConfig;
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

/// Gradients and moments are kept in f32, or f64 for f64 parameters (tests).
fn master_dtype(d: DType) -> DType {
    if d == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Gradients summed over micro-batches, one slot per parameter.
pub struct GradAccum {
    params: Vec<Var>,
    pub grads: Vec<Option<Tensor>>,
}

impl GradAccum {
    pub fn new(params: &[(String, Var)]) -> Self {
        Self {
            params: params.iter().map(|(_, v)| v.clone()).collect(),
            grads: vec![None; params.len()],
        }
    }

    pub fn add(&mut self, store: &GradStore) -> Result<()> {
        for (slot, p) in self.grads.iter_mut().zip(&self.params) {
            if let Some(g) = store.get(p.as_tensor()) {
                let g = g.to_dtype(master_dtype(p.dtype()))?;
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

pub struct AdamW {
    names: Vec<String>,
    params: Vec<Var>,
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
    pub fn new(params: &[(String, Var)], cfg: &OptimConfig) -> Result<Self> {
        let mut m = Vec::with_capacity(params.len());
        for (_, p) in params {
            m.push(Tensor::zeros(
                p.shape(),
                master_dtype(p.dtype()),
                p.device(),
            )?);
        }
        Ok(Self {
            names: params.iter().map(|(n, _)| n.clone()).collect(),
            params: params.iter().map(|(_, p)| p.clone()).collect(),
            v: m.clone(),
            m,
            t: 0,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
        })
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left untouched
    /// (moments and decay included), as in PyTorch.
    pub fn step(&mut self, grads: &GradAccum, lr: f64) -> Result<()> {
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        for i in 0..self.params.len() {
            let Some(g) = &grads.grads[i] else { continue };
            let p = &self.params[i];
            let m = ((&self.m[i] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + self.eps)?)?;
            let mut w = p.as_tensor().detach().to_dtype(master_dtype(p.dtype()))?;
            if self.weight_decay > 0.0 && p.rank() >= 2 {
                w = (w * (1.0 - lr * self.weight_decay))?;
            }
            let w = (w - (update * lr)?)?;
            p.set(&w.to_dtype(p.dtype())?)?;
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
        let params = vec![("w".to_string(), w.clone()), ("b".to_string(), b.clone())];
        let mut opt = AdamW::new(&params, &cfg).unwrap();
        let gw = [[0.1f64, -0.2], [0.3, 0.0]];
        let gb = [1.0f64, -4.0];
        let (mut rw, mut rb) = ([[1.0f64, -2.0], [0.5, 3.0]], [0.25f64, -0.75]);
        let (mut mw, mut vw, mut mb, mut vb) =
            ([[0.0f64; 2]; 2], [[0.0f64; 2]; 2], [0.0f64; 2], [0.0f64; 2]);
        let lr = 0.01;
        for t in 1..=2 {
            let mut acc = GradAccum::new(&params);
            acc.grads[0] = Some(Tensor::new(&[[0.1f32, -0.2], [0.3, 0.0]], &dev).unwrap());
            acc.grads[1] = Some(Tensor::new(&[1.0f32, -4.0], &dev).unwrap());
            opt.step(&acc, lr).unwrap();
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
    fn clipping_scales_to_max_norm() {
        let dev = Device::Cpu;
        let a = Var::zeros(2, DType::F32, &dev).unwrap();
        let params = vec![("a".to_string(), a)];
        let mut acc = GradAccum::new(&params);
        acc.grads[0] = Some(Tensor::new(&[3.0f32, 4.0], &dev).unwrap());
        assert!((acc.clip(1.0).unwrap() - 5.0).abs() < 1e-6);
        assert!((acc.global_norm().unwrap() - 1.0).abs() < 1e-5);
    }
}
