//! Algorithms: one module per loss family behind one small trait.
//!
//! `prepare` turns a scored rollout batch into per-sequence data (weights or advantages, old /
//! reference / target log-probs, target features) using no-graph forwards. `loss` maps one
//! micro-batch's policy outputs to a scalar whose sum over micro-batches is the full-batch loss:
//! every normaliser is global and lives in `Prepared::norm`. `after_step` runs after each optimizer
//! update (POPO's EMA target). Losses do no I/O.

pub mod grpo;
pub mod positive_only;
pub mod raft;
pub mod reinforce;

use crate::config::TrainConfig;
use crate::policy::{Policy, PolicyOutput, SeqBatch};
pub use crate::rollouts::{Rollout, RolloutBatch};
use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var, D};
use std::collections::HashMap;

/// Per-sequence training data produced by `prepare`.
#[derive(Clone, Debug, Default)]
pub struct SeqPrep {
    /// POPO / RAFT: the weight w_i (0 for negatives). GRPO: the advantage A_i. REINFORCE: a_i.
    pub coef: f64,
    /// Whether the sequence enters the training forward at all.
    pub include: bool,
    /// False masks the whole sequence out of the policy loss (DAPO overlong filtering).
    pub loss_mask: bool,
    /// No-graph log-probs under the rollout-time weights (only when `num_iterations > 1`).
    pub old_logprobs: Option<Vec<f32>>,
    /// GRPO: reference log-probs (beta_kl > 0). POPO: target log-probs (for the logged KL).
    pub aux_logprobs: Option<Vec<f32>>,
    /// POPO: target features plus noise, sg(f_xi + eps).
    pub target_feature: Option<Vec<f32>>,
}

/// Global normalisers, so micro-batch losses add up to the full-batch loss.
#[derive(Clone, Debug, Default)]
pub struct Norms {
    /// Completion tokens of positives (POPO / RAFT NLL denominator).
    pub pos_tokens: f64,
    /// Completion tokens of all included sequences (entropy / KL means; REINFORCE: of the whole
    /// batch, its loss denominator).
    pub all_tokens: f64,
    /// Completion tokens of loss-masked-in sequences (GRPO token-mean; REINFORCE: of the rows in
    /// the forward, for the logged entropy).
    pub loss_tokens: f64,
    /// Sum of POPO weights (the L_sim denominator).
    pub weight_sum: f64,
    /// Loss-masked-in sequences (GRPO seq-mean).
    pub loss_seqs: f64,
    /// All sequences times max_completion_len (Dr. GRPO's constant normaliser).
    pub sum_norm: f64,
}

#[derive(Clone, Debug, Default)]
pub struct Prepared {
    pub seqs: Vec<SeqPrep>,
    pub norm: Norms,
    /// Step-level diagnostics (e.g. popo/weight_max, popo/ess).
    pub stats: Vec<(&'static str, f64)>,
}

impl Prepared {
    /// Rows that enter the training forward.
    pub fn included(&self) -> Vec<usize> {
        (0..self.seqs.len())
            .filter(|&i| self.seqs[i].include)
            .collect()
    }
}

/// A micro-batch as a loss sees it: its padded sequences, the step's prepared values, and
/// `rows[k]`, the `Prepared::seqs` index of row k of `seqs`; with rollouts from another engine,
/// the step's truncated importance weights (`tis[i]`, one per completion token of row i).
#[derive(Clone, Copy)]
pub struct MicroBatch<'a> {
    pub seqs: &'a SeqBatch,
    pub prep: &'a Prepared,
    pub rows: &'a [usize],
    pub tis: Option<&'a [Vec<f32>]>,
}

impl<'a> MicroBatch<'a> {
    pub fn new(seqs: &'a SeqBatch, prep: &'a Prepared, rows: &'a [usize]) -> Self {
        Self {
            seqs,
            prep,
            rows,
            tis: None,
        }
    }

    /// The step's truncated importance weights (`correction::correct`), indexed like `prep.seqs`.
    pub fn with_tis(mut self, tis: Option<&'a [Vec<f32>]>) -> Self {
        self.tis = tis;
        self
    }

    /// The importance weights of this micro-batch's rows as `[b, T]` (None: no correction).
    pub fn tis_tensor(&self, dtype: DType) -> Result<Option<Tensor>> {
        let Some(w) = self.tis else {
            return Ok(None);
        };
        let vals: Vec<&[f32]> = self.rows.iter().map(|&i| w[i].as_slice()).collect();
        Ok(Some(self.seqs.completion_values(&vals, dtype)?))
    }
}

/// A micro-batch's loss. `stats` are additive over micro-batches (each is already divided by its
/// global normaliser).
pub struct LossOutput {
    pub loss: Tensor,
    pub stats: Vec<(&'static str, f64)>,
}

/// What `prepare` may use besides the batch.
pub struct PrepareCtx<'a> {
    pub policy: &'a dyn Policy,
    pub temperature: f64,
    pub chunk: usize,
    /// Chunks scored at once (`parallel::micro_batch_width`).
    pub width: usize,
    pub pad_id: u32,
    pub device: &'a Device,
    /// Per-step seed for any randomness (POPO's feature noise), so a resumed run is identical.
    pub seed: u64,
    pub max_completion_len: usize,
}

pub trait Algorithm: Send + Sync {
    fn name(&self) -> &'static str;
    /// Parameters trained with the policy by the same optimizer (POPO's predictor).
    fn extra_vars(&self) -> Vec<(String, Var)> {
        Vec::new()
    }
    fn prepare(&self, batch: &RolloutBatch, ctx: &PrepareCtx) -> Result<Prepared>;
    /// The rows whose rollout-time log-probs `prepare` and the loss read, known from the rewards
    /// alone (None: every row). With rollouts from another engine only these are scored again
    /// by popo (`correction::correct`), which is most of such a step's cost when few rows train.
    fn rows_read(&self, _batch: &RolloutBatch) -> Option<Vec<bool>> {
        None
    }
    /// The loss of one micro-batch, from the policy's output on it.
    fn loss(&self, out: &PolicyOutput, x: &MicroBatch) -> Result<LossOutput>;
    /// Called after every optimizer update with the policy's full-precision weights by name (the
    /// f32 masters in mixed precision); returns diagnostics.
    fn after_step(&mut self, _online: &[(String, Tensor)]) -> Result<Vec<(&'static str, f64)>> {
        Ok(Vec::new())
    }
    /// Tensors to checkpoint (target weights, predictor), by name.
    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }
    fn load_state(&mut self, _tensors: &HashMap<String, Tensor>) -> Result<()> {
        Ok(())
    }
}

/// Mean (or masked selection) of hidden states over the mask: `[B, T, D] x [B, T] -> [B, D]`.
pub fn pool_features(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(hidden.dtype())?;
    let summed = hidden.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?; // [B, D]
    let count = mask.sum_keepdim(1)?.clamp(1.0, f64::INFINITY)?; // [B, 1]
    Ok(summed.broadcast_div(&count)?)
}

/// Row-wise cosine similarity: `[N, D] x [N, D] -> [N]`.
pub fn cosine_rows(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dot = (a * b)?.sum(D::Minus1)?;
    let na = (a.sqr()?.sum(D::Minus1)? + 1e-12)?.sqrt()?;
    let nb = (b.sqr()?.sum(D::Minus1)? + 1e-12)?.sqrt()?;
    Ok(dot.div(&(na * nb)?)?)
}

/// Per-token k3 estimator of KL(p || q) from log-probs: exp(q - p) - (q - p) - 1.
pub fn k3(logp: &Tensor, logq: &Tensor) -> Result<Tensor> {
    let d = (logq - logp)?;
    Ok(((d.exp()? - &d)? - 1.0)?)
}

/// `[B]` tensor from per-row values.
pub(crate) fn row_tensor(values: &[f64], dtype: DType, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(values.to_vec(), values.len(), device)?.to_dtype(dtype)?)
}

/// `[B, T]` tensor placing each row's optional per-token values (zeros when absent).
pub(crate) fn token_tensor(
    mb: &SeqBatch,
    prep: &Prepared,
    rows: &[usize],
    pick: impl Fn(&SeqPrep) -> Option<&Vec<f32>>,
    dtype: DType,
) -> Result<Tensor> {
    let zeros: Vec<Vec<f32>> = mb.completion_lens.iter().map(|&c| vec![0f32; c]).collect();
    let vals: Vec<&[f32]> = rows
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            pick(&prep.seqs[i])
                .map(|v| v.as_slice())
                .unwrap_or(&zeros[k])
        })
        .collect();
    mb.completion_values(&vals, dtype)
}

/// Scalar value of a 0-d tensor as f64.
pub(crate) fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// The weighted NLL numerator shared by POPO and RAFT: `sum_b w_b sum_t coef_bt (-logp_bt) m_bt`,
/// with `coef = sg(min(exp(logp - logp_old), c))` when old log-probs exist, else 1, times the
/// token's truncated importance weight when the rollouts came from another engine.
pub(crate) fn weighted_nll_sum(
    logprobs: &Tensor,
    x: &MicroBatch,
    ratio_clip: f64,
) -> Result<Tensor> {
    let (mb, prep, rows) = (x.seqs, x.prep, x.rows);
    let dtype = logprobs.dtype();
    let m = mb.completion_mask().to_dtype(dtype)?; // [b, T]
    let w: Vec<f64> = rows.iter().map(|&i| prep.seqs[i].coef).collect();
    let w = row_tensor(&w, dtype, mb.device())?.unsqueeze(1)?; // [b, 1]
    let mut tok = (logprobs.neg()? * &m)?; // [b, T]
    if rows.iter().any(|&i| prep.seqs[i].old_logprobs.is_some()) {
        let old = token_tensor(mb, prep, rows, |s| s.old_logprobs.as_ref(), dtype)?;
        let rho = (logprobs.detach() - old)?.exp()?.clamp(0.0, ratio_clip)?; // sg(min(rho, c))
        tok = (tok * rho)?;
    }
    if let Some(tis) = x.tis_tensor(dtype)? {
        tok = (tok * tis)?;
    }
    Ok(tok.broadcast_mul(&w)?.sum_all()?)
}

/// The policy's entropy summed over the micro-batch's completion tokens (a logged diagnostic).
pub(crate) fn entropy_sum(out: &PolicyOutput, mb: &SeqBatch) -> Result<f64> {
    let m = mb.completion_mask().to_dtype(out.entropy.dtype())?;
    scalar(&(&out.entropy * &m)?.sum_all()?)
}

/// A normaliser that leaves a zero sum at zero when the batch holds none of what it counts.
pub(crate) fn nz(v: f64) -> f64 {
    if v > 0.0 {
        v
    } else {
        1.0
    }
}

/// Positive set of each group and stats every algorithm logs about it.
pub(crate) fn positives(batch: &RolloutBatch, threshold: f64) -> Vec<bool> {
    batch
        .rollouts
        .iter()
        .map(|r| r.reward > threshold)
        .collect()
}

/// Per-sequence data of the losses that need a coefficient alone (RAFT, REINFORCE): `coef[i]`,
/// in the training forward when `include[i]`, with the rollout-time log-probs when the batch is
/// trained on more than once (`num_iterations > 1`, for the truncated ratio).
pub(crate) fn coef_seqs(
    batch: &RolloutBatch,
    ctx: &PrepareCtx,
    coef: &[f64],
    include: &[bool],
    num_iterations: usize,
) -> Result<Vec<SeqPrep>> {
    let mut old = if num_iterations > 1 {
        Some(old_logprobs(batch, ctx)?)
    } else {
        None
    };
    Ok((0..batch.len())
        .map(|i| SeqPrep {
            coef: coef[i],
            include: include[i],
            loss_mask: include[i],
            old_logprobs: old.as_mut().map(|o| std::mem::take(&mut o[i])),
            aux_logprobs: None,
            target_feature: None,
        })
        .collect())
}

/// Completion tokens of the rows where `keep` holds.
pub(crate) fn tokens_where(batch: &RolloutBatch, keep: &[bool]) -> f64 {
    batch
        .rollouts
        .iter()
        .zip(keep)
        .filter(|(_, &k)| k)
        .map(|(r, _)| r.completion.len() as f64)
        .sum()
}

/// Old log-probs from a no-graph forward with the rollout-time weights.
pub(crate) fn old_logprobs(batch: &RolloutBatch, ctx: &PrepareCtx) -> Result<Vec<Vec<f32>>> {
    Ok(score_rows(ctx.policy, batch, ctx, false)?
        .into_iter()
        .map(|(lp, _)| lp)
        .collect())
}

/// Runs `policy.forward_detached` over the batch in chunks of `ctx.chunk` (`ctx.width` at a time),
/// returning per-row completion log-probs and pooled final hidden states (f32).
pub(crate) fn score_rows(
    policy: &dyn Policy,
    batch: &RolloutBatch,
    ctx: &PrepareCtx,
    pool_last: bool,
) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
    let n = batch.len();
    let chunk = ctx.chunk.max(1);
    let score = |k: usize| -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        let rows: Vec<usize> = (k * chunk..((k + 1) * chunk).min(n)).collect();
        let mb = batch.seq_batch(&rows, ctx.pad_id, ctx.device)?;
        let o = policy.forward_detached(&mb, ctx.temperature)?;
        let lps = mb.gather_completion(&o.logprobs)?;
        let mask = if pool_last {
            mb.last_token_mask()?
        } else {
            mb.completion_mask().clone()
        };
        let feats = pool_features(&o.hidden.to_dtype(DType::F32)?, &mask)?.to_vec2::<f32>()?;
        Ok(lps.into_iter().zip(feats).collect())
    };
    let mut out = Vec::with_capacity(n);
    crate::parallel::in_waves(n.div_ceil(chunk), ctx.width, score, |rows| {
        out.extend(rows);
        Ok(())
    })?;
    Ok(out)
}
