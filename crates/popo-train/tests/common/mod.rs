//! A tiny differentiable causal LM for loss tests (any float dtype, f64 for finite differences):
//! `h_t = tanh(E[x_t] + 0.5 * h_{t-1})`, logits `h_t W`. Real-model tests use popo_model.
#![allow(dead_code)]

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var, D};
use popo_train::policy::{Policy, PolicyOutput, SeqBatch};

pub struct TinyLm {
    pub emb: Var, // [V, D]
    pub out: Var, // [D, V]
    pub detached: bool,
}

impl TinyLm {
    pub fn new(vocab: usize, d: usize, seed: u64, dtype: DType) -> Self {
        let dev = Device::Cpu;
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut rnd = |n: usize| -> Vec<f64> {
            (0..n)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
                })
                .collect()
        };
        let emb = Tensor::from_vec(rnd(vocab * d), (vocab, d), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let out = Tensor::from_vec(rnd(d * vocab), (d, vocab), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        Self {
            emb: Var::from_tensor(&emb).unwrap(),
            out: Var::from_tensor(&out).unwrap(),
            detached: false,
        }
    }

    fn run(&self, batch: &SeqBatch, temperature: f64, detach: bool) -> Result<PolicyOutput> {
        let (emb, out) = if detach || self.detached {
            (self.emb.as_tensor().detach(), self.out.as_tensor().detach())
        } else {
            (self.emb.as_tensor().clone(), self.out.as_tensor().clone())
        };
        let (b, t) = (batch.len(), batch.seq_len());
        let dtype = emb.dtype();
        let x = emb
            .index_select(&batch.tokens.input_ids.flatten_all()?, 0)?
            .reshape((b, t, ()))?; // [B, T, D]
        let mut hs = Vec::with_capacity(t);
        let mut prev: Option<Tensor> = None;
        for j in 0..t {
            let xj = x.narrow(1, j, 1)?.squeeze(1)?; // [B, D]
            let h = match &prev {
                Some(p) => (xj + (p * 0.5)?)?.tanh()?,
                None => xj.tanh()?,
            };
            hs.push(h.clone());
            prev = Some(h);
        }
        let hidden = Tensor::stack(&hs, 1)?; // [B, T, D]
        let logits = (hidden.broadcast_matmul(&out)? / temperature)?; // [B, T, V]
        let logsm = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let probs = logsm.exp()?;
        let ent = (probs * &logsm)?.sum(D::Minus1)?.neg()?; // [B, T]
        let next = batch
            .tokens
            .input_ids
            .narrow(1, 1, t - 1)?
            .contiguous()?
            .unsqueeze(2)?; // [B, T-1, 1]
        let lp = logsm
            .narrow(1, 0, t - 1)?
            .contiguous()?
            .gather(&next, 2)?
            .squeeze(2)?; // [B, T-1]
        let zero = Tensor::zeros((b, 1), dtype, batch.device())?;
        let am = batch.tokens.attention_mask.to_dtype(dtype)?;
        let logprobs = (Tensor::cat(&[&zero, &lp], 1)? * &am)?;
        let entropy = (Tensor::cat(&[&zero, &ent.narrow(1, 0, t - 1)?], 1)? * &am)?;
        Ok(PolicyOutput {
            logprobs,
            entropy,
            hidden,
        })
    }
}

impl Policy for TinyLm {
    fn forward(&self, batch: &SeqBatch, temperature: f64) -> Result<PolicyOutput> {
        self.run(batch, temperature, false)
    }
    fn forward_detached(&self, batch: &SeqBatch, temperature: f64) -> Result<PolicyOutput> {
        self.run(batch, temperature, true)
    }
    fn named_vars(&self) -> Vec<(String, Var)> {
        vec![
            ("emb".into(), self.emb.clone()),
            ("out".into(), self.out.clone()),
        ]
    }
    fn fork(&self) -> Result<Box<dyn Policy>> {
        Ok(Box::new(TinyLm {
            emb: Var::from_tensor(&self.emb.as_tensor().copy()?)?,
            out: Var::from_tensor(&self.out.as_tensor().copy()?)?,
            detached: false,
        }))
    }
    fn hidden_size(&self) -> usize {
        self.emb.dim(1).unwrap()
    }
}

/// Deterministic pseudo-random numbers in [0, 1).
pub fn lcg(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed ^ 0x5851_f42d_4c95_7f2d;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// `sum |t|` in f64, whatever `t`'s dtype: is a gradient there at all.
pub fn abs_sum(t: &Tensor) -> f64 {
    let s = t.abs().unwrap().sum_all().unwrap();
    s.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// `max |t|` in f64, whatever `t`'s dtype.
pub fn abs_max(t: &Tensor) -> f64 {
    let m = t.abs().unwrap().max_all().unwrap();
    m.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// The first trainable tensor's values: to see whether a step touched the weights.
pub fn first_weights(policy: &dyn Policy) -> Vec<f32> {
    let vars = policy.named_vars();
    let t = vars[0].1.as_tensor().to_dtype(DType::F32).unwrap();
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// A training config for a loaded model and dataset (names only: loss tests build no model),
/// from `preset` and `--set` style overrides.
pub fn cfg(preset: &str, sets: &[&str]) -> popo_train::config::TrainConfig {
    let mut b = popo_train::config::ConfigBuilder::new()
        .preset(Some(preset))
        .set("model.path=m")
        .unwrap()
        .set("data.path=d")
        .unwrap();
    for s in sets {
        b = b.set(s).unwrap();
    }
    b.build().unwrap()
}

/// A checkpoint file's bytes as resumed and uninterrupted runs are compared: for
/// trainer_state.json, those of the state without its wall clock (`wall_s`, seconds, which no two
/// runs share; it must have been recorded).
pub fn checkpoint_file_bytes(path: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    if !path.ends_with("trainer_state.json") {
        return bytes;
    }
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(v["wall_s"].as_f64().unwrap() > 0.0, "{}", path.display());
    v.as_object_mut().unwrap().remove("wall_s");
    serde_json::to_vec(&v).unwrap()
}
