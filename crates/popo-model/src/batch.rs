//! Padded training batches and what the training forward returns.

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};

/// A right-padded batch of `prompt ++ completion` rows.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    pub input_ids: Tensor,       // [B, T] u32, right-padded with pad_id
    pub attention_mask: Tensor,  // [B, T] f32, 1 = real token
    pub completion_mask: Tensor, // [B, T] f32, 1 = completion token (EOS included), 0 prompt/pad
    /// `forward_train` computes log-probs and entropies at completion tokens only (0 at prompt
    /// tokens too). Off by default; the trainer, whose losses read no others, turns it on: the
    /// log-softmax over the vocabulary and the LM head then skip the prompt positions.
    pub completion_only: bool,
    /// Flat indices into the [B, T-1] grid of next-token targets (row r, target position i >= 1
    /// at r * (T-1) + i - 1) whose target is a completion token.
    completion_targets: Vec<u32>,
}

impl TokenBatch {
    pub fn new(
        prompts: &[&[u32]],
        completions: &[&[u32]],
        pad_id: u32,
        device: &Device,
    ) -> Result<Self> {
        ensure!(
            prompts.len() == completions.len(),
            "{} prompts but {} completions",
            prompts.len(),
            completions.len()
        );
        ensure!(!prompts.is_empty(), "empty batch");
        let b = prompts.len();
        let t = prompts
            .iter()
            .zip(completions)
            .map(|(p, c)| p.len() + c.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut ids = vec![pad_id; b * t];
        let mut attn = vec![0f32; b * t];
        let mut comp = vec![0f32; b * t];
        let mut completion_targets = Vec::new();
        for (r, (p, c)) in prompts.iter().zip(completions).enumerate() {
            for (i, &tok) in p.iter().chain(c.iter()).enumerate() {
                ids[r * t + i] = tok;
                attn[r * t + i] = 1.0;
                if i >= p.len() {
                    comp[r * t + i] = 1.0;
                    if i >= 1 {
                        completion_targets.push((r * (t - 1) + i - 1) as u32);
                    }
                }
            }
        }
        Ok(Self {
            input_ids: Tensor::from_vec(ids, (b, t), device)?,
            attention_mask: Tensor::from_vec(attn, (b, t), device)?,
            completion_mask: Tensor::from_vec(comp, (b, t), device)?,
            completion_only: false,
            completion_targets,
        })
    }

    /// See `completion_targets`.
    pub(crate) fn completion_targets(&self) -> &[u32] {
        &self.completion_targets
    }

    pub fn batch_size(&self) -> usize {
        self.input_ids.dims()[0]
    }

    pub fn seq_len(&self) -> usize {
        self.input_ids.dims()[1]
    }
}

/// Output of `Model::forward_train`. f32 even when the compute dtype is bf16/f16 (f64 for an f64 model).
#[derive(Debug, Clone)]
pub struct TrainOutput {
    /// [B, T]: log pi(input_ids[b,t] | input_ids[b,<t]) with logits / temperature; 0 at t=0 and on padding.
    pub logprobs: Tensor,
    /// [B, T]: entropy of that same predictive distribution (at temperature); 0 at t=0 / padding.
    pub entropy: Tensor,
    /// [B, T, D]: final hidden state after the final norm, at position t (compute dtype).
    pub hidden: Tensor,
}
