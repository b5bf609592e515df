//! `[rollout]`: prompts and completions per step, sampling, DAPO's dynamic sampling, the engine.

use serde::{Deserialize, Serialize};

// No deny_unknown_fields here: serde cannot combine it with `flatten`; `check_keys` refuses
// unknown keys of every user layer before serde sees them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RolloutConfig {
    /// B: prompts per step.
    pub batch_prompts: usize,
    /// G: completions per prompt.
    pub group_size: usize,
    /// Sampling temperature; the log-probs the losses use are taken at it.
    pub temperature: f64,
    /// Nucleus sampling (1: off).
    pub top_p: f64,
    /// Sample among the k most likely tokens (0: off).
    pub top_k: usize,
    /// Most tokens per completion; longer ones are cut (`train/truncated_ratio`).
    pub max_completion_len: usize,
    /// DAPO: drop groups whose rewards are all equal and draw more prompts.
    pub dynamic_sampling: bool,
    /// DAPO: bound on extra rollout rounds per step.
    pub max_sampling_tries: usize,
    /// The engine keys (`rollout.engine`, `rollout.servers`, ...), in `[rollout]` itself.
    #[serde(flatten)]
    pub engine: crate::engine::config::EngineConfig,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            batch_prompts: 8,
            group_size: 8,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_completion_len: 512,
            dynamic_sampling: false,
            max_sampling_tries: 4,
            engine: Default::default(),
        }
    }
}
