//! The GRPO family (docs/algorithms.md, "GRPO family"): group-normalised (grpo) or centred (dr_grpo)
//! advantages, the clipped-ratio token loss with eps_low / eps_high, three aggregation modes, and a
//! k3 KL to a frozen reference that exists only when beta_kl > 0. DAPO is this loss with
//! token-mean aggregation, clip-higher and the trainer's dynamic sampling / overlong options.

use super::*;
use crate::config::{AdvantageMode, AlgoConfig, LossAgg};

pub struct Grpo {
    cfg: AlgoConfig,
    overlong_filter: bool,
    /// Frozen copy of the initial policy; None when beta_kl = 0 (no memory spent on it).
    reference: Option<Box<dyn Policy>>,
}

impl Grpo {
    pub fn new(cfg: &TrainConfig, policy: &dyn Policy) -> Result<Self> {
        let reference = if cfg.algo.beta_kl > 0.0 {
            Some(policy.fork()?)
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.algo.clone(),
            overlong_filter: cfg.reward.overlong_filter,
            reference,
        })
    }

    pub fn has_reference(&self) -> bool {
        self.reference.is_some()
    }
}

/// Per-completion advantages, computed per group in f64. `grpo` divides by the sample standard
/// deviation (n - 1, as TRL and verl do; 0 for a group of one) plus 1e-6.
pub fn advantages(groups: &[Vec<usize>], rewards: &[f64], mode: AdvantageMode) -> Vec<f64> {
    let mut a = vec![0.0; rewards.len()];
    for g in groups {
        let n = g.len() as f64;
        let mean = g.iter().map(|&i| rewards[i]).sum::<f64>() / n;
        let std = if g.len() > 1 {
            (g.iter().map(|&i| (rewards[i] - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        for &i in g {
            a[i] = match mode {
                AdvantageMode::Grpo => (rewards[i] - mean) / (std + 1e-6),
                AdvantageMode::DrGrpo => rewards[i] - mean,
            };
        }
    }
    a
}

impl Algorithm for Grpo {
    fn name(&self) -> &'static str {
        "grpo"
    }

    fn prepare(&self, batch: &RolloutBatch, ctx: &PrepareCtx) -> Result<Prepared> {
        let groups = batch.groups();
        let rewards: Vec<f64> = batch.rollouts.iter().map(|r| r.reward).collect();
        let adv = advantages(&groups, &rewards, self.cfg.advantage);
        let mut old = if self.cfg.num_iterations > 1 {
            Some(old_logprobs(batch, ctx)?)
        } else {
            None
        };
        let mut refs = match &self.reference {
            Some(r) => {
                let s = score_rows(r.as_ref(), batch, ctx, false)?;
                Some(s.into_iter().map(|(lp, _)| lp).collect::<Vec<_>>())
            }
            None => None,
        };
        // A completion with a zero advantage (a group whose rewards are all equal) adds nothing
        // to the loss or its gradient unless a KL term is on: it still counts in the normalisers,
        // but stays out of the forward. A step whose advantages are all zero keeps every
        // completion, so that its (zero-gradient) AdamW update still happens, as in TRL and verl.
        let any_signal = adv.iter().any(|&a| a != 0.0);
        let mut norm = Norms::default();
        let mut seqs = Vec::with_capacity(batch.len());
        for (i, r) in batch.rollouts.iter().enumerate() {
            let loss_mask = !(self.overlong_filter && r.truncated);
            let len = r.completion.len() as f64;
            let include = adv[i] != 0.0 || self.reference.is_some() || !any_signal;
            if include {
                norm.all_tokens += len;
            }
            if loss_mask {
                norm.loss_tokens += len;
                norm.loss_seqs += 1.0;
            }
            norm.sum_norm += ctx.max_completion_len as f64;
            seqs.push(SeqPrep {
                coef: adv[i],
                include,
                loss_mask,
                old_logprobs: old.as_mut().map(|o| std::mem::take(&mut o[i])),
                aux_logprobs: refs.as_mut().map(|o| std::mem::take(&mut o[i])),
                target_feature: None,
            });
        }
        let abs_mean = adv.iter().map(|a| a.abs()).sum::<f64>() / adv.len().max(1) as f64;
        Ok(Prepared {
            seqs,
            norm,
            stats: vec![("grpo/adv_abs_mean", abs_mean)],
        })
    }

    fn loss(&self, out: &PolicyOutput, x: &MicroBatch) -> Result<LossOutput> {
        let (mb, prep, rows) = (x.seqs, x.prep, x.rows);
        let lp = &out.logprobs; // [b, T]
        let dtype = lp.dtype();
        let dev = mb.device();
        let c = &self.cfg;
        let m = mb.completion_mask().to_dtype(dtype)?; // [b, T]
        let keep: Vec<f64> = rows
            .iter()
            .map(|&i| if prep.seqs[i].loss_mask { 1.0 } else { 0.0 })
            .collect();
        let lm = m.broadcast_mul(&row_tensor(&keep, dtype, dev)?.unsqueeze(1)?)?; // [b, T] loss mask

        // rho = exp(logp - logp_old); with one update logp_old = sg(logp) (ratio 1, gradient of logp).
        let old = if rows.iter().any(|&i| prep.seqs[i].old_logprobs.is_some()) {
            token_tensor(mb, prep, rows, |s| s.old_logprobs.as_ref(), dtype)?
        } else {
            lp.detach()
        };
        let rho = (lp - &old)?.exp()?; // [b, T]
        let adv: Vec<f64> = rows.iter().map(|&i| prep.seqs[i].coef).collect();
        let adv = row_tensor(&adv, dtype, dev)?.unsqueeze(1)?; // [b, 1]
        let unclipped = rho.broadcast_mul(&adv)?;
        let clipped = rho
            .clamp(1.0 - c.eps_low, 1.0 + c.eps_high)?
            .broadcast_mul(&adv)?;
        let pg = unclipped.minimum(&clipped)?.neg()?; // [b, T]
        let was_clipped = unclipped.ne(&clipped)?.to_dtype(dtype)?;
        // Rollouts from another engine: each token's policy-gradient term carries its truncated
        // importance weight (the KL term does not, as in TRL).
        let pg = match x.tis_tensor(dtype)? {
            Some(tis) => (pg * tis)?,
            None => pg,
        };

        let kl = match &self.reference {
            Some(_) => {
                let rlp = token_tensor(mb, prep, rows, |s| s.aux_logprobs.as_ref(), dtype)?;
                Some(k3(lp, &rlp)?)
            }
            None => None,
        };
        let per_tok = match &kl {
            Some(k) => (&pg + (k * c.beta_kl)?)?,
            None => pg.clone(),
        };
        let agg = |x: &Tensor| -> Result<Tensor> {
            let xm = (x * &lm)?;
            Ok(match c.loss_agg {
                LossAgg::TokenMean => (xm.sum_all()? / nz(prep.norm.loss_tokens))?,
                LossAgg::SeqMeanTokenMean => {
                    let per_seq = xm.sum(1)?.div(&m.sum(1)?.clamp(1.0, f64::INFINITY)?)?; // [b]
                    (per_seq.sum_all()? / nz(prep.norm.loss_seqs))?
                }
                LossAgg::SeqMeanTokenSumNorm => (xm.sum_all()? / nz(prep.norm.sum_norm))?,
            })
        };
        let total = agg(&per_tok)?;
        let ent = (&out.entropy * &m)?.sum_all()?;
        let mut stats = vec![
            ("loss/pg", scalar(&agg(&pg)?)?),
            ("loss/total", scalar(&total)?),
            (
                crate::metrics::names::CLIP_RATIO,
                scalar(&(was_clipped * &lm)?.sum_all()?)? / nz(prep.norm.loss_tokens),
            ),
            ("train/entropy", scalar(&ent)? / nz(prep.norm.all_tokens)),
        ];
        if let Some(k) = &kl {
            stats.push((
                "loss/kl",
                scalar(&(k.detach() * &m)?.sum_all()?)? / nz(prep.norm.all_tokens),
            ));
        }
        Ok(LossOutput { loss: total, stats })
    }
}
