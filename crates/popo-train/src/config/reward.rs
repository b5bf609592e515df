//! `[reward]`: what counts as a positive, the built-in task's checked work, DAPO's overlong rules.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RewardConfig {
    /// `tau_r`: a completion is positive when its reward exceeds this.
    pub positive_threshold: f64,
    /// Score only completions with a `\boxed{}` (the spec's default answer: the last one).
    /// False lets the verifier fall back to other extractions (final-answer phrases, last number).
    pub require_boxed: bool,
    /// When the gold is a number, only a number written out is right: `24 + 65 + 34` for 123
    /// scores 0. Without it a policy learns to restate the question, which is right by value
    /// (SmolLM2 on chain_sum did, in 10 steps: docs/results.md). `popo eval` applies the same
    /// rule by default (`--literal-numbers`).
    pub literal_numbers: bool,
    /// Built-in task only: a right answer earns its reward only when every worked step
    /// (`a op b=c`) is true arithmetic and the last step's result is the boxed answer. Without it
    /// the tiny model's lucky guesses (` 1+1=3. \boxed{1}`) count as positives, and RL learns
    /// to guess. Accuracy still counts the answer alone.
    pub check_work: bool,
    /// Optional format reward weight (0 = off).
    pub format_weight: f64,
    /// DAPO overlong shaping: linear penalty inside the last `overlong_cache_len` tokens.
    pub overlong_shaping: bool,
    /// Length of that window, in tokens (below `rollout.max_completion_len`).
    pub overlong_cache_len: usize,
    /// The penalty at the length limit.
    pub overlong_penalty: f64,
    /// DAPO overlong filtering: truncated completions are masked out of the loss.
    pub overlong_filter: bool,
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self {
            positive_threshold: 0.0,
            require_boxed: true,
            literal_numbers: true,
            check_work: false,
            format_weight: 0.0,
            overlong_shaping: false,
            overlong_cache_len: 64,
            overlong_penalty: 1.0,
            overlong_filter: false,
        }
    }
}
