//! The negative-sample controls (docs/algorithms.md, "Negative-sample controls"): one on-policy
//! REINFORCE loss with a per-completion coefficient and no baseline,
//! `L = -(1 / sum_i |y_i|) sum_i a_i sum_t logp(y_i,t)`, with `a_i = -1` for negatives and
//! `a_i = lambda` (`algo.psr_weight`) for positives. `nsr` is lambda = 0 (lower the log-probs of
//! incorrect completions only), `w_reinforce` lambda = 0.1. The denominator counts every
//! completion token of the batch, so a positive that `nsr` leaves out of the forward still counts.

use super::*;

pub struct Reinforce {
    threshold: f64,
    psr_weight: f64,
    num_iterations: usize,
    ratio_clip: f64,
}

impl Reinforce {
    pub fn new(cfg: &TrainConfig) -> Self {
        Self {
            threshold: cfg.reward.positive_threshold,
            psr_weight: cfg.algo.psr_weight,
            num_iterations: cfg.algo.num_iterations,
            ratio_clip: cfg.algo.ratio_clip,
        }
    }
}

/// The coefficient `a_i` of each completion: lambda for positives, -1 for negatives.
pub fn reinforce_coefs(positive: &[bool], psr_weight: f64) -> Vec<f64> {
    positive
        .iter()
        .map(|&p| if p { psr_weight } else { -1.0 })
        .collect()
}

impl Algorithm for Reinforce {
    fn name(&self) -> &'static str {
        "reinforce"
    }

    fn prepare(&self, batch: &RolloutBatch, ctx: &PrepareCtx) -> Result<Prepared> {
        let pos = positives(batch, self.threshold);
        let a = reinforce_coefs(&pos, self.psr_weight);
        // A completion with a_i = 0 (nsr's positives) adds nothing to the loss or its gradient:
        // it stays out of the forward, as RAFT's negatives do.
        let include: Vec<bool> = a.iter().map(|&x| x != 0.0).collect();
        let seqs = coef_seqs(batch, ctx, &a, &include, self.num_iterations)?;
        let norm = Norms {
            all_tokens: tokens_where(batch, &vec![true; batch.len()]),
            loss_tokens: tokens_where(batch, &include),
            ..Norms::default()
        };
        Ok(Prepared {
            seqs,
            norm,
            stats: Vec::new(),
        })
    }

    fn loss(&self, out: &PolicyOutput, x: &MicroBatch) -> Result<LossOutput> {
        let (mb, prep) = (x.seqs, x.prep);
        // -a_i logp summed over tokens is the weighted NLL with weights a_i; with several updates
        // per batch it carries POPO's truncated ratio sg(min(rho, c)) (item 11).
        let pg = (weighted_nll_sum(&out.logprobs, x, self.ratio_clip)? / nz(prep.norm.all_tokens))?;
        let ent = entropy_sum(out, mb)? / nz(prep.norm.loss_tokens);
        let v = scalar(&pg)?;
        Ok(LossOutput {
            loss: pg,
            stats: vec![
                (crate::metrics::names::LOSS_PG, v),
                (crate::metrics::names::LOSS, v),
                (crate::metrics::names::ENTROPY, ent),
            ],
        })
    }
}
