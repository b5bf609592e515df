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
        let w = positive_only::popo_weights(
            &groups,
            &pos,
            &vec![0.0; lens.len()],
            &lens,
            WeightMode::Uniform,
            1.0,
            false,
        );
        let seqs = coef_seqs(batch, ctx, &w, &pos, self.num_iterations)?;
        let pos_tokens = tokens_where(batch, &pos);
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

    fn loss(&self, out: &PolicyOutput, x: &MicroBatch) -> Result<LossOutput> {
        let (mb, prep) = (x.seqs, x.prep);
        let lp = &out.logprobs;
        let denom = nz(prep.norm.pos_tokens);
        let nll = (weighted_nll_sum(lp, x, self.ratio_clip)? / denom)?;
        let ent = entropy_sum(out, mb)? / denom;
        let v = scalar(&nll)?;
        Ok(LossOutput {
            loss: nll,
            stats: vec![("loss/nll", v), ("loss/total", v), ("train/entropy", ent)],
        })
    }
}
