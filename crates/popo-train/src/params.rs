//! The trainable parameters and, in mixed precision, their f32 master copies (docs/algorithms.md,
//! "Optimisation").
//!
//! Written straight into a bf16 weight, an AdamW update smaller than half a bf16 ULP rounds away:
//! for a weight of 0.02 that is about 6e-5, while at the spec's lr (1e-6) an update is about 1e-6,
//! so almost nothing would train. As with PyTorch AMP (f32 parameters) or DeepSpeed's bf16
//! optimizer, the optimizer therefore updates an f32 master copy and the compute weights are
//! written from it after every update. Readers of "the weights" that must not lose precision (the
//! EMA target, an f32 save, the checkpoint) read [`Params::full`], never the compute Vars.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor, Var};
use std::collections::HashMap;

/// How a run keeps its weights (`run.master_weights`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MasterWeights {
    /// An f32 master copy whenever the compute dtype is not f32 (bf16, f16).
    #[default]
    Auto,
    /// Always an f32 master copy of low-precision weights (the same as `auto` today: an f32 or
    /// f64 weight is its own master).
    F32,
    /// No master copy: updates are rounded into the compute weights (the pre-mixed-precision
    /// behaviour; most of a bf16 run's updates are lost at small learning rates).
    None,
}

impl MasterWeights {
    pub fn keeps_master(self) -> bool {
        !matches!(self, MasterWeights::None)
    }
}

/// The dtype updates are computed in: f64 for f64 weights (tests), f32 otherwise.
pub fn full_dtype(d: DType) -> DType {
    if d == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

fn is_low_precision(d: DType) -> bool {
    matches!(d, DType::BF16 | DType::F16)
}

/// Named trainable Vars in a stable order, each with an optional full-precision master.
pub struct Params {
    names: Vec<String>,
    vars: Vec<Var>,
    /// The f32 master of each low-precision Var; `None` where the Var is itself full precision
    /// (or `run.master_weights = "none"`).
    master: Vec<Option<Tensor>>,
    keep_master: bool,
}

/// Prefix of master tensors in the optimizer's checkpoint file.
const MASTER_PREFIX: &str = "master.";

impl Params {
    pub fn new(named: Vec<(String, Var)>, keep_master: bool) -> Result<Self> {
        let mut p = Self {
            names: Vec::new(),
            vars: Vec::new(),
            master: Vec::new(),
            keep_master,
        };
        p.extend(named)?;
        Ok(p)
    }

    /// Adds parameters (POPO's predictor joins the policy's after the warm-up).
    pub fn extend(&mut self, named: Vec<(String, Var)>) -> Result<()> {
        for (name, var) in named {
            if self.names.contains(&name) {
                bail!("trainable parameter `{name}` is registered twice");
            }
            let master = if self.keep_master && is_low_precision(var.dtype()) {
                Some(var.as_tensor().detach().to_dtype(DType::F32)?)
            } else {
                None
            };
            self.names.push(name);
            self.vars.push(var);
            self.master.push(master);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Whether any parameter has an f32 master (the run trains in mixed precision).
    pub fn has_master(&self) -> bool {
        self.master.iter().any(Option::is_some)
    }

    /// The full-precision value of parameter `i` (no graph): its master, or the Var itself cast
    /// to [`full_dtype`].
    pub fn full(&self, i: usize) -> Result<Tensor> {
        Ok(match &self.master[i] {
            Some(m) => m.clone(),
            None => {
                let v = &self.vars[i];
                v.as_tensor().detach().to_dtype(full_dtype(v.dtype()))?
            }
        })
    }

    /// Every parameter's full-precision value, by name.
    pub fn full_named(&self) -> Result<Vec<(String, Tensor)>> {
        (0..self.len())
            .map(|i| Ok((self.names[i].clone(), self.full(i)?)))
            .collect()
    }

    /// Stores a new full-precision value of parameter `i`: into its master, and into the compute
    /// Var rounded to the Var's dtype.
    pub fn set_full(&mut self, i: usize, w: Tensor) -> Result<()> {
        let var = &self.vars[i];
        var.set(&w.to_dtype(var.dtype())?)?;
        if let Some(m) = &mut self.master[i] {
            *m = w;
        }
        Ok(())
    }

    /// Master copies by name (`master.<param>`), for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.names
            .iter()
            .zip(&self.master)
            .filter_map(|(n, m)| {
                m.as_ref()
                    .map(|m| (format!("{MASTER_PREFIX}{n}"), m.clone()))
            })
            .collect()
    }

    /// Restores master copies saved by [`Params::state`] and writes the compute Vars from them,
    /// so a resumed mixed-precision run continues from the exact f32 weights. A checkpoint
    /// without masters (written with `master_weights = "none"`) starts them from the Vars.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for i in 0..self.len() {
            let key = format!("{MASTER_PREFIX}{}", self.names[i]);
            let (Some(_), Some(t)) = (&self.master[i], tensors.get(&key)) else {
                continue;
            };
            if t.shape() != self.vars[i].shape() {
                bail!(
                    "optimizer state: `{key}` has shape {:?}, expected {:?}",
                    t.shape(),
                    self.vars[i].shape()
                );
            }
            let t = t.to_dtype(DType::F32)?.to_device(self.vars[i].device())?;
            self.set_full(i, t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn bf16_var(vals: &[f32]) -> Var {
        let t = Tensor::new(vals, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        Var::from_tensor(&t).unwrap()
    }

    /// A step far below half a bf16 ULP survives in the master and reaches the Var once the
    /// sum of steps crosses a rounding boundary.
    #[test]
    fn small_updates_accumulate_in_the_master() {
        let v = bf16_var(&[0.02, 1.0]);
        let mut p = Params::new(vec![("w".into(), v.clone())], true).unwrap();
        assert!(p.has_master());
        let start = p.full(0).unwrap().to_vec1::<f32>().unwrap();
        for _ in 0..100 {
            let w = (p.full(0).unwrap() + 1e-6).unwrap();
            p.set_full(0, w).unwrap();
        }
        let master = p.full(0).unwrap().to_vec1::<f32>().unwrap();
        let want: Vec<f32> = start
            .iter()
            .map(|&s| (0..100).fold(s, |x, _| x + 1e-6f32))
            .collect();
        assert_eq!(master, want, "the master sums the steps in f32");
        // The Var is the master rounded to bf16.
        let got = v
            .as_tensor()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want: Vec<f32> = master
            .iter()
            .map(|&m| half::bf16::from_f32(m).to_f32())
            .collect();
        assert_eq!(got, want);
        assert_ne!(
            got[0], start[0],
            "0.02 + 1e-4 crosses a bf16 step of 1.2e-4 / 2"
        );

        // Without a master the same updates round away.
        let v2 = bf16_var(&[0.02, 1.0]);
        let mut q = Params::new(vec![("w".into(), v2.clone())], false).unwrap();
        assert!(!q.has_master());
        for _ in 0..100 {
            let w = (q.full(0).unwrap() + 1e-6).unwrap();
            q.set_full(0, w).unwrap();
        }
        assert_eq!(q.full(0).unwrap().to_vec1::<f32>().unwrap(), start);
    }

    #[test]
    fn masters_round_trip_through_the_state_and_reach_the_vars() {
        let v = bf16_var(&[0.5, -0.25]);
        let f = Var::from_tensor(&Tensor::new(&[1.0f32], &Device::Cpu).unwrap()).unwrap();
        let mut p = Params::new(vec![("a".into(), v.clone()), ("b".into(), f)], true).unwrap();
        p.set_full(0, Tensor::new(&[0.5001f32, -0.2501], &Device::Cpu).unwrap())
            .unwrap();
        let st: HashMap<String, Tensor> = p.state().into_iter().collect();
        assert_eq!(st.len(), 1, "an f32 Var is its own master: {:?}", st.keys());

        let v2 = bf16_var(&[0.0, 0.0]);
        let f2 = Var::from_tensor(&Tensor::new(&[1.0f32], &Device::Cpu).unwrap()).unwrap();
        let mut q = Params::new(vec![("a".into(), v2.clone()), ("b".into(), f2)], true).unwrap();
        q.load_state(&st).unwrap();
        assert_eq!(
            q.full(0).unwrap().to_vec1::<f32>().unwrap(),
            vec![0.5001, -0.2501]
        );
        assert_eq!(
            v2.as_tensor().to_vec1::<half::bf16>().unwrap(),
            v.as_tensor().to_vec1::<half::bf16>().unwrap()
        );
        let bad: HashMap<String, Tensor> = [(
            "master.a".to_string(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        )]
        .into();
        let e = q.load_state(&bad).unwrap_err().to_string();
        assert!(e.contains("master.a"), "{e}");
        assert!(Params::new(vec![("a".into(), v.clone()), ("a".into(), v)], true).is_err());
    }
}
