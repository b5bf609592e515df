//! What the losses need from a language model, as plain data: a padded batch layout in, per-token
//! log-probs / entropies / final hidden states out. The trainer and the losses see only this trait,
//! so they stay free of model internals (`crate::lm` adapts `popo_model::Model`; tests use tiny models).

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use popo_model::TokenBatch;

/// A micro-batch as the losses see it: the model crate's padded layout (`TokenBatch`: rows are
/// `prompt ++ completion`, right-padded) and each row's prompt and completion lengths, which is all
/// the losses index by. Token `t` of row `b` is scored from positions `< t`, so per-token outputs
/// align with `input_ids` and `completion_mask`.
#[derive(Clone, Debug)]
pub struct SeqBatch {
    pub tokens: TokenBatch,
    pub prompt_lens: Vec<usize>,
    pub completion_lens: Vec<usize>,
}

impl SeqBatch {
    pub fn new(
        prompts: &[&[u32]],
        completions: &[&[u32]],
        pad_id: u32,
        device: &Device,
    ) -> Result<Self> {
        if prompts.len() != completions.len() || prompts.is_empty() {
            bail!(
                "SeqBatch: {} prompts vs {} completions (need the same non-zero count)",
                prompts.len(),
                completions.len()
            );
        }
        if prompts
            .iter()
            .zip(completions)
            .all(|(p, c)| p.len() + c.len() == 0)
        {
            bail!("SeqBatch: every row is empty");
        }
        let mut tokens = TokenBatch::new(prompts, completions, pad_id, device)?;
        // Every loss and diagnostic reads completion tokens only.
        tokens.completion_only = true;
        Ok(Self {
            tokens,
            prompt_lens: prompts.iter().map(|p| p.len()).collect(),
            completion_lens: completions.iter().map(|c| c.len()).collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.prompt_lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompt_lens.is_empty()
    }

    /// T, the padded row length.
    pub fn seq_len(&self) -> usize {
        self.tokens.seq_len()
    }

    pub fn device(&self) -> &Device {
        self.tokens.input_ids.device()
    }

    /// `[B, T]` f32: 1 at completion tokens (EOS included), 0 at prompt and padding.
    pub fn completion_mask(&self) -> &Tensor {
        &self.tokens.completion_mask
    }

    /// Per-completion-token values placed at their positions: `[B, T]` in `dtype`, 0 elsewhere.
    /// `values[r]` must have one entry per completion token of row r.
    pub fn completion_values(&self, values: &[&[f32]], dtype: DType) -> Result<Tensor> {
        let (b, t) = (self.len(), self.seq_len());
        if values.len() != b {
            bail!(
                "completion_values: {} rows for a batch of {b}",
                values.len()
            );
        }
        let mut out = vec![0f32; b * t];
        for (r, v) in values.iter().enumerate() {
            let (p, c) = (self.prompt_lens[r], self.completion_lens[r]);
            if v.len() != c {
                bail!(
                    "completion_values: row {r} has {} values for {c} completion tokens",
                    v.len()
                );
            }
            out[r * t + p..r * t + p + c].copy_from_slice(v);
        }
        Ok(Tensor::from_vec(out, (b, t), self.device())?.to_dtype(dtype)?)
    }

    /// 1 at the last completion token of each row: `[B, T]` f32.
    pub fn last_token_mask(&self) -> Result<Tensor> {
        let (b, t) = (self.len(), self.seq_len());
        let mut out = vec![0f32; b * t];
        for r in 0..b {
            let (p, c) = (self.prompt_lens[r], self.completion_lens[r]);
            if c > 0 {
                out[r * t + p + c - 1] = 1.0;
            }
        }
        Ok(Tensor::from_vec(out, (b, t), self.device())?)
    }

    /// Reads a `[B, T]` per-token tensor back into one vector per completion.
    pub fn gather_completion(&self, per_token: &Tensor) -> Result<Vec<Vec<f32>>> {
        let rows = per_token.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        Ok(rows
            .into_iter()
            .enumerate()
            .map(|(r, row)| {
                let p = self.prompt_lens[r];
                row[p..p + self.completion_lens[r]].to_vec()
            })
            .collect())
    }
}

/// Per-token outputs of a forward pass, aligned with the batch (0 at t = 0 and on padding).
pub struct PolicyOutput {
    pub logprobs: Tensor, // [B, T] float: log pi(x_t | x_<t) with logits / temperature
    pub entropy: Tensor,  // [B, T] float: entropy of that predictive distribution
    pub hidden: Tensor,   // [B, T, D]: final hidden state (after the final norm) at t
}

/// A trainable language model as the losses see it.
pub trait Policy: Send + Sync {
    /// Differentiable forward (records the autograd graph through the Vars).
    fn forward(&self, batch: &SeqBatch, temperature: f64) -> Result<PolicyOutput>;
    /// Forward that records no graph (rollout-time / target / reference passes).
    fn forward_detached(&self, batch: &SeqBatch, temperature: f64) -> Result<PolicyOutput>;
    /// The gradients of `loss(forward(batch))`, handed to `sink` as one or more stores whose
    /// entries add up (see `popo_model::Model::backward_checkpointed`), each dropped once the
    /// sink has taken what it needs. With `checkpoint`, a policy that can recomputes activations
    /// layer by layer instead of keeping them all.
    fn backward(
        &self,
        batch: &SeqBatch,
        temperature: f64,
        _checkpoint: bool,
        loss: &mut dyn FnMut(&PolicyOutput) -> Result<Tensor>,
        sink: &mut dyn FnMut(GradStore) -> Result<()>,
    ) -> Result<()> {
        sink(loss(&self.forward(batch, temperature)?)?.backward()?)
    }
    /// Trainable parameters by name, in a stable order.
    fn named_vars(&self) -> Vec<(String, Var)>;
    /// An independent copy (its own Vars) holding the current values: the EMA target or the reference.
    fn fork(&self) -> Result<Box<dyn Policy>>;
    fn hidden_size(&self) -> usize;
}
