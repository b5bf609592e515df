//! The training head (chunked log-probs and entropies with gradient carriers) and the
//! checkpointed backward.

use super::carrier::{lse_entropy_carrier, row_stats};
use super::rope::positions_from_mask;
use super::{mask_to_host, Model, LOGIT_CHUNK_ELEMS};
use crate::batch::{TokenBatch, TrainOutput};
use anyhow::{ensure, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

impl Model {
    /// Log-probs of `targets` and entropies, each [n, 1] in f32 (f64 for f64 models), for hidden
    /// rows `h` [n, d] at `temperature`.
    ///
    /// Values come from a detached f32 log-softmax over the logits. Gradients flow through
    /// surrogates that need no [n, vocab] tensor in the graph except the detached logits: with
    /// z = h W^T / T, d logsumexp(z) / dz = p and dH / dz = -p (z - E_p[z]) =: -r, so
    /// `h/T . (p W)` and `h/T . (r W)` have exactly those gradients with respect to h and W
    /// (computed by `carrier::lse_entropy_carrier` with one product per operand, p and r formed
    /// from z in its backward). Autograd therefore keeps one [n, vocab] tensor per chunk instead
    /// of the half-dozen a plain log-softmax leaves behind, and no elementwise [n, vocab] op is
    /// differentiated.
    fn chunk_logprob_entropy(
        &self,
        h: &Tensor,
        targets: &Tensor,
        temperature: f64,
    ) -> Result<(Tensor, Tensor)> {
        let fdt = self.float_dtype();
        let w = &self.lm_head; // [vocab, d]
        let h_t = (h / temperature)?; // [n, d]
                                      // Detached statistics.
        let (hd, wd) = (h_t.detach(), w.detach());
        let z = match super::gemm::x_wt(&hd, &wd)? {
            Some(z) => z,
            None => hd.matmul(&wd.t()?)?,
        }
        .to_dtype(fdt)?; // [n, vocab]
        let (lse, mean_z) = row_stats(&z)?; // [n, 1] each
        let entropy = (&lse - &mean_z)?; // [n, 1]
        let tgt = targets.unsqueeze(1)?; // [n, 1]
        let z_tgt = z.gather(&tgt, 1)?; // [n, 1]
        if self.no_grad {
            // No graph to carry gradients for: skip the two [n, vocab] x [vocab, d] products.
            return Ok(((z_tgt - lse)?, entropy));
        }
        // Gradient carriers: value zero, gradient as described above.
        let zero_value = |x: Tensor| -> Result<Tensor> {
            let x = x.to_dtype(fdt)?;
            Ok((&x - x.detach())?)
        };
        let dot = |a: &Tensor, b: &Tensor| -> Result<Tensor> { Ok((a * b)?.sum_keepdim(1)?) };
        let w_tgt = w.index_select(targets, 0)?; // [n, d]
        let g_tgt = zero_value(dot(&h_t, &w_tgt)?)?; // d z_tgt
        let stats = (z, lse.clone(), mean_z);
        let carrier = lse_entropy_carrier(&h_t, w, stats)?.to_dtype(fdt)?; // [n, 2]
        let g_lse = carrier.narrow(1, 0, 1)?; // d lse
        let g_ent = carrier.narrow(1, 1, 1)?; // -dH
        let logprob = ((z_tgt - lse)? + (g_tgt - g_lse)?)?;
        let entropy = (entropy - g_ent)?;
        Ok((logprob, entropy))
    }

    /// Differentiable training forward over a padded batch (see `TrainOutput`). The log-softmax is
    /// computed in row chunks of at most `LOGIT_CHUNK_ELEMS` logits, never as one [b, t, vocab].
    pub fn forward_train(&self, batch: &TokenBatch, temperature: f64) -> Result<TrainOutput> {
        ensure!(
            temperature > 0.0,
            "temperature must be positive, got {temperature}"
        );
        let hidden = self.forward_hidden(&batch.input_ids, &batch.attention_mask)?; // [b, t, d]
        self.head(batch, hidden, temperature)
    }

    /// Log-probs and entropies from the final hidden states (the rest of `forward_train`).
    fn head(&self, batch: &TokenBatch, hidden: Tensor, temperature: f64) -> Result<TrainOutput> {
        let ids = &batch.input_ids;
        let (b, t) = ids.dims2()?;
        let fdt = self.float_dtype();
        let mask = batch.attention_mask.to_dtype(fdt)?; // [b, t]
        if t < 2 {
            let zeros = Tensor::zeros((b, t), fdt, &self.device)?;
            return Ok(TrainOutput {
                logprobs: zeros.clone(),
                entropy: zeros,
                hidden,
            });
        }
        let d = self.cfg.hidden_size;
        let rows = b * (t - 1);
        let prev = hidden.narrow(1, 0, t - 1)?.reshape((rows, d))?; // [b*(t-1), d]
        let targets = ids.narrow(1, 1, t - 1)?.reshape((rows, 1))?; // [b*(t-1), 1]
                                                                    // With `completion_only`, the rows whose target is a completion token: [n].
        let picked = if batch.completion_only {
            Some(Tensor::new(batch.completion_targets(), &self.device)?)
        } else {
            None
        };
        let (prev, targets) = match &picked {
            Some(idx) => (prev.index_select(idx, 0)?, targets.index_select(idx, 0)?),
            None => (prev, targets),
        };
        let n = prev.dim(0)?;
        let chunk = (LOGIT_CHUNK_ELEMS / self.cfg.vocab_size).max(1);
        let mut lps = Vec::new();
        let mut ents = Vec::new();
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let (lp, ent) = self.chunk_logprob_entropy(
                &prev.narrow(0, start, len)?,
                &targets.narrow(0, start, len)?.squeeze(1)?,
                temperature,
            )?;
            lps.push(lp);
            ents.push(ent);
            start += len;
        }
        // Back to [b, t-1]: picked rows to their places (through index_select, which has a
        // backward), zero elsewhere.
        let place = match &picked {
            None => None,
            Some(_) => {
                let mut at = vec![n as u32; rows];
                for (k, &r) in batch.completion_targets().iter().enumerate() {
                    at[r as usize] = k as u32;
                }
                Some(Tensor::from_vec(at, rows, &self.device)?)
            }
        };
        let zero = Tensor::zeros((1, 1), fdt, &self.device)?;
        let shift = |mut parts: Vec<Tensor>| -> Result<Tensor> {
            let x = match &place {
                None => Tensor::cat(&parts, 0)?, // [b*(t-1), 1]
                Some(at) => {
                    parts.push(zero.clone());
                    Tensor::cat(&parts, 0)?.index_select(at, 0)?
                }
            };
            let x = x.reshape((b, t - 1))?; // [b, t-1]
            Ok(x.pad_with_zeros(1, 1, 0)?.mul(&mask)?) // [b, t]
        };
        Ok(TrainOutput {
            logprobs: shift(lps)?,
            entropy: shift(ents)?,
            hidden,
        })
    }

    /// The gradients of `loss(forward_train(batch))`, with per-layer activation recomputation
    /// (gradient checkpointing): the forward keeps only each layer's input, and the backward runs
    /// the layers again one at a time, last first, each with its own small graph. Peak memory is
    /// one layer's activations instead of all of them, for about one more forward of compute.
    /// The gradients equal those of `loss(forward_train(batch)).backward()` up to float rounding.
    ///
    /// Hands `sink` one `GradStore` per stage (head, each layer, embedding) as soon as it is
    /// computed, so that the caller keeps the weights' gradients and the rest is freed; a weight's
    /// gradient is the sum of its entries across them (a tied embedding appears twice).
    pub fn backward_checkpointed(
        &self,
        batch: &TokenBatch,
        temperature: f64,
        loss: &mut dyn FnMut(&TrainOutput) -> Result<Tensor>,
        sink: &mut dyn FnMut(GradStore) -> Result<()>,
    ) -> Result<()> {
        ensure!(
            temperature > 0.0,
            "temperature must be positive, got {temperature}"
        );
        let ids = &batch.input_ids;
        let (b, t) = ids.dims2()?;
        let mask = mask_to_host(&batch.attention_mask)?;
        let pos = positions_from_mask(&mask, &vec![0; mask.len()]);
        self.check_ids(ids, &pos)?;
        let seed = self.dropout_seed(ids)?;
        let rope = self.rope_tables(&pos)?;
        let bias = self.attention_bias(&mask, 0, t)?;
        // Forward: each layer's graph is dropped as soon as its output is detached.
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut x = self.embed(ids, b, t)?.detach();
        for layer in &self.layers {
            let next = layer.forward(&x, &rope, &bias, None, seed)?.detach();
            inputs.push(x);
            x = next;
        }
        // Head and loss, back to the last layer's output.
        let top = Var::from_tensor(&x)?;
        let out = self.head(batch, self.norm.forward(top.as_tensor())?, temperature)?;
        let store = loss(&out)?.backward()?;
        drop(out);
        let mut grad = stage_grad(&store, &top)?;
        sink(store)?;
        // Layers, last first: recompute with a graph, push the gradient through.
        for (layer, input) in self.layers.iter().zip(inputs).rev() {
            let input = Var::from_tensor(&input)?;
            let y = layer.forward(input.as_tensor(), &rope, &bias, None, seed)?;
            let store = (y * &grad)?.sum_all()?.backward()?;
            grad = stage_grad(&store, &input)?;
            sink(store)?;
        }
        sink((self.embed(ids, b, t)? * &grad)?.sum_all()?.backward()?)
    }
}

/// The gradient a stage's backward left on its input (zeros when the loss did not reach it).
fn stage_grad(store: &GradStore, input: &Var) -> Result<Tensor> {
    Ok(match store.get(input.as_tensor()) {
        Some(g) => g.clone(),
        None => input.as_tensor().zeros_like()?,
    })
}
