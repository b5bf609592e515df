//! `[sft]`: the supervised warm-up before RL.

use serde::{Deserialize, Serialize};

/// Supervised warm-up before RL (used by the built-in demo to start RL at 10-40% accuracy).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    /// Optimizer steps of SFT before RL (0: none).
    pub steps: usize,
    /// Peak learning rate of the warm-up (cosine-decayed to a tenth).
    pub lr: f64,
    /// Sequences per warm-up step.
    pub batch_size: usize,
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            steps: 0,
            lr: 1e-4,
            batch_size: 16,
        }
    }
}
