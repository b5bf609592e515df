//! What a run carries from step to step besides tensors: the trainer state a checkpoint stores,
//! and the outcome of one optimizer update that the learner reports and the state counts. Its own
//! module so that the learner and the checkpoints both import it and neither imports the other.

use crate::data::DataCursor;
use serde::{Deserialize, Serialize};

/// Whether an update was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// f16 gradients overflowed under the loss scale: skipped, and the scale was halved.
    Overflow,
    /// A NaN / Inf loss or gradient (not the loss scale's doing): skipped.
    NonFinite,
}

/// Everything besides tensors needed to continue a run exactly.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Rollout steps completed.
    pub step: u64,
    /// Optimizer updates taken (AdamW bias correction).
    pub optimizer_updates: u64,
    pub data_cursor: DataCursor,
    /// The run's base seed. Every random stream (sampling, noise, probe selection) is derived from
    /// (seed, step, stream), so the step number is the whole RNG state.
    pub rng_seed: u64,
    pub nonfinite_in_row: u64,
    pub skipped_steps: u64,
    /// Held-out accuracy before RL (after any warm-up), if measured.
    pub eval_before: Option<f64>,
    /// f16 compute: the dynamic loss scale (absent otherwise, and in older checkpoints).
    #[serde(default)]
    pub loss_scale: Option<crate::optim::LossScale>,
    /// The end-of-run evaluation, once done: resuming a finished run reports it again instead of
    /// sampling it again (absent before it ran, and in older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_eval: Option<FinalEval>,
    /// Seconds the run had taken when this state was saved, over all its sessions (a resumed
    /// run's wall time goes on from here; 0 in older checkpoints).
    #[serde(default)]
    pub wall_s: f64,
}

/// What a run measures after its last step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FinalEval {
    /// The step it measured (the run's last).
    pub step: u64,
    /// Greedy held-out accuracy.
    pub accuracy: Option<f64>,
    /// `run.final_pass_at_k_samples` samples per held-out problem at T = 1.
    pub pass_at_k: Option<popo_model::passk::PassAtK>,
}

impl FinalEval {
    /// The record it is logged as: `eval/accuracy`, `eval/pass@k` and `eval/avg@n`.
    pub fn metrics(&self) -> crate::metrics::StepMetrics {
        use crate::metrics::names;
        let mut m = crate::metrics::StepMetrics::new(self.step);
        if let Some(acc) = self.accuracy {
            m.set(names::EVAL_ACCURACY, acc);
        }
        if let Some(p) = &self.pass_at_k {
            for &(k, v) in &p.pass_at_k {
                m.set(&names::pass_at(k), v);
            }
            m.set(&names::avg_at(p.n), p.avg_at_n);
        }
        m
    }
}

impl TrainerState {
    /// The state of a run about to take its first step.
    pub fn fresh(
        data_cursor: DataCursor,
        rng_seed: u64,
        loss_scale: Option<crate::optim::LossScale>,
    ) -> Self {
        TrainerState {
            step: 0,
            optimizer_updates: 0,
            data_cursor,
            rng_seed,
            nonfinite_in_row: 0,
            skipped_steps: 0,
            eval_before: None,
            loss_scale,
            final_eval: None,
            wall_s: 0.0,
        }
    }

    /// Counts an update's outcome at `step`; true when it was applied (and the run of
    /// non-finite updates is over).
    pub fn record(&mut self, outcome: Outcome, step: u64) -> bool {
        match outcome {
            Outcome::Applied => {
                self.nonfinite_in_row = 0;
                self.optimizer_updates += 1;
                true
            }
            Outcome::Overflow => {
                self.skipped_steps += 1;
                false
            }
            Outcome::NonFinite => {
                self.skipped_steps += 1;
                self.nonfinite_in_row += 1;
                tracing::warn!(
                    "step {step}: non-finite loss or gradient; update skipped ({} in a row)",
                    self.nonfinite_in_row
                );
                false
            }
        }
    }
}
