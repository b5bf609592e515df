//! `[optim]`: AdamW, its schedule, clipping, micro-batches, checkpointing, the f16 loss scale.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate of AdamW.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// AdamW first-moment decay.
    pub beta1: f64,
    /// AdamW second-moment decay.
    pub beta2: f64,
    /// AdamW epsilon.
    pub eps: f64,
    /// Share of total updates spent in linear warmup, then cosine decay.
    pub warmup_ratio: f64,
    /// Final learning rate as a share of `lr`.
    pub min_lr_ratio: f64,
    /// Global-norm gradient clip (0: off).
    pub grad_clip: f64,
    /// Sequences per forward/backward; gradients are accumulated over micro-batches.
    pub micro_batch_size: usize,
    /// Recompute each layer's activations during the backward pass instead of keeping them all:
    /// peak activation memory of one layer, for about one more forward of compute. For long
    /// completions and large micro-batches.
    pub gradient_checkpointing: bool,
    /// f16 compute only: the first dynamic loss scale (halved on every overflow, doubled after
    /// 2000 clean updates), as `torch.amp.GradScaler(init_scale=...)`.
    pub init_loss_scale: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-6,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_ratio: 0.1,
            min_lr_ratio: 0.0,
            grad_clip: 1.0,
            micro_batch_size: 8,
            gradient_checkpointing: false,
            init_loss_scale: 65536.0,
        }
    }
}
