//! RAFT (online rejection-sampling fine-tuning): plain NLL over positives with uniform weights per
//! group and a positive-token denominator; no target, predictor or entropy term. The
//! "positive-only SFT" control POPO must beat. Negatives never enter the training forward.

use super::*;
use crate::config::WeightMode;

pub struct Raft {
    threshold: f64,
    num_iterations: usize,
    ratio_clip: f64,
}

impl Raft {
    pub fn new(cfg: &TrainConfig) -> Self {
        Self {
            threshold: cfg.reward.positive_threshold,
            num_iterations: cfg.algo.num_iterations,
            ratio_clip: cfg.algo.ratio_clip,
        }
    }
}

impl Algorithm for Raft {
    fn name(&self) -> &'static str {
        "raft"
    }

    fn prepare(&self, batch: &RolloutBatch, ctx: &PrepareCtx) -> Result<Prepared> {
        let groups = batch.groups();
        let pos = positives(batch, self.threshold);
        let lens: Vec<usize> = batch.rollouts.iter().map(|r| r.completion.len()).collect();
        let w = popo::popo_weights(
            &groups,
            &pos,
            &vec![0.0; lens.len()],
            &lens,
            WeightMode::Uniform,
            1.0,
            false,
        );
        let mut old = if self.num_iterations > 1 {
            Some(old_logprobs(batch, ctx)?)
        } else {
            None
        };
        let seqs = (0..batch.len())
            .map(|i| SeqPrep {
                coef: w[i],
                include: pos[i],
                loss_mask: pos[i],
                old_logprobs: old.as_mut().map(|o| std::mem::take(&mut o[i])),
                aux_logprobs: None,
                target_feature: None,
            })
            .collect();
        let pos_tokens: f64 = (0..lens.len())
            .filter(|&i| pos[i])
            .map(|i| lens[i] as f64)
            .sum();
        let norm = Norms {
            pos_tokens,
            all_tokens: pos_tokens,
            ..Norms::default()
        };
        Ok(Prepared {
            seqs,
            norm,
            stats: vec![("popo/weight_max", w.iter().cloned().fold(0.0, f64::max))],
        })
    }

    fn loss(
        &self,
        out: &PolicyOutput,
        mb: &SeqBatch,
        prep: &Prepared,
        rows: &[usize],
    ) -> Result<LossOutput> {
        let lp = &out.logprobs;
        let denom = nz(prep.norm.pos_tokens);
        let nll = (weighted_nll_sum(lp, mb, prep, rows, self.ratio_clip)? / denom)?;
        let ent = entropy_sum(out, mb)? / denom;
        let v = scalar(&nll)?;
        Ok(LossOutput {
            loss: nll,
            stats: vec![("loss/nll", v), ("loss/total", v), ("train/entropy", ent)],
        })
    }
}
