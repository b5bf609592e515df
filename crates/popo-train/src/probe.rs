//! The implicit-negative probe (docs/algorithms.md, "Diagnostics"): some of a step's negative
//! completions, and a few positives, are held out of training; their mean per-token log-prob is
//! measured just before and just after the update. POPO's claim holds where
//! `delta_neg < 0 < delta_pos`: training on positives alone pushes the unseen negatives down.

use crate::algo::PrepareCtx;
use crate::data::SplitMix64;
use crate::lm::mean_token_logprob;
use crate::metrics::{names, StepMetrics};
use crate::policy::{Policy, SeqBatch};
use crate::rollouts::{Rollout, RolloutBatch};
use anyhow::Result;

/// Held-out rollouts and their log-probs before the update.
pub struct Probe {
    /// (negatives, positives), each as one batch with its mean log-prob before the update.
    sets: [Option<(SeqBatch, f64)>; 2],
    temperature: f64,
}

impl Probe {
    /// The probe of `step` when it is a probe step (every `run.probe_every` steps): holds
    /// `run.probe_size` negatives and positives out of `batch`.
    pub fn at_step(
        run: &crate::config::RunConfig,
        step: u64,
        batch: &mut RolloutBatch,
        threshold: f64,
        seed: u64,
        ctx: &PrepareCtx,
    ) -> Result<Option<Self>> {
        if run.probe_every == 0 || !step.is_multiple_of(run.probe_every as u64) {
            return Ok(None);
        }
        Self::hold_out(batch, run.probe_size, threshold, seed, ctx).map(Some)
    }

    /// Takes up to `k` negatives and `k` positives out of `batch` (at most one positive per
    /// group, and only from groups that keep another positive to train on) and measures them.
    /// `ctx` gives the policy, temperature and batch layout the log-probs are measured with.
    pub fn hold_out(
        batch: &mut RolloutBatch,
        k: usize,
        threshold: f64,
        seed: u64,
        ctx: &PrepareCtx,
    ) -> Result<Self> {
        let (neg, pos) = select(&mut batch.rollouts, threshold, k, seed);
        let measure = |rs: Vec<Rollout>| -> Result<Option<(SeqBatch, f64)>> {
            if rs.is_empty() {
                return Ok(None);
            }
            let held = RolloutBatch { rollouts: rs };
            let rows: Vec<usize> = (0..held.len()).collect();
            let b = held.seq_batch(&rows, ctx.pad_id, ctx.device)?;
            let before = mean_token_logprob(ctx.policy, &b, ctx.temperature)?;
            Ok(Some((b, before)))
        };
        Ok(Self {
            sets: [measure(neg)?, measure(pos)?],
            temperature: ctx.temperature,
        })
    }

    /// Measures again after the update and logs `probe/delta_neg` and `probe/delta_pos`.
    pub fn finish(self, policy: &dyn Policy, m: &mut StepMetrics) -> Result<()> {
        for (set, name) in self
            .sets
            .into_iter()
            .zip([names::DELTA_NEG, names::DELTA_POS])
        {
            if let Some((b, before)) = set {
                m.set(
                    name,
                    mean_token_logprob(policy, &b, self.temperature)? - before,
                );
            }
        }
        Ok(())
    }
}

/// Removes up to `k` negatives and `k` positives (at most one per group, from groups keeping at
/// least one positive) from the batch and returns them.
fn select(
    rs: &mut Vec<Rollout>,
    threshold: f64,
    k: usize,
    seed: u64,
) -> (Vec<Rollout>, Vec<Rollout>) {
    let mut rng = SplitMix64(seed);
    let mut shuffled: Vec<usize> = (0..rs.len()).collect();
    for i in (1..shuffled.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        shuffled.swap(i, j);
    }
    let mut take = Vec::new();
    let mut neg = 0;
    let mut pos_groups: Vec<usize> = Vec::new();
    for &i in &shuffled {
        let r = &rs[i];
        if r.reward > threshold {
            let positives = rs
                .iter()
                .filter(|x| x.group == r.group && x.reward > threshold)
                .count();
            if pos_groups.len() < k && positives >= 2 && !pos_groups.contains(&r.group) {
                pos_groups.push(r.group);
                take.push(i);
            }
        } else if neg < k {
            neg += 1;
            take.push(i);
        }
    }
    take.sort_unstable();
    let (mut negs, mut poss) = (Vec::new(), Vec::new());
    for &i in take.iter().rev() {
        let r = rs.remove(i);
        if r.reward > threshold {
            poss.push(r);
        } else {
            negs.push(r);
        }
    }
    (negs, poss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_holds_out_without_emptying_groups() {
        let mk = |group, reward| Rollout {
            group,
            prompt: vec![1],
            completion: vec![2],
            sampler_logprobs: vec![-1.0],
            reward,
            truncated: false,
        };
        let mut rs = vec![
            mk(0, 1.0),
            mk(0, 0.0),
            mk(0, 1.0),
            mk(1, 1.0),
            mk(1, 0.0),
            mk(2, 0.0),
        ];
        let (neg, pos) = select(&mut rs, 0.0, 2, 7);
        assert_eq!(neg.len(), 2);
        assert_eq!(pos.len(), 1); // group 1 has a single positive: it is kept for training
        assert_eq!(pos[0].group, 0);
        assert_eq!(rs.len(), 3);
        assert!(rs.iter().any(|r| r.group == 1 && r.reward > 0.0));
    }
}
