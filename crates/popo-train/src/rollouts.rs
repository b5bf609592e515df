//! What the actor hands the learner: scored completions grouped by prompt. A module of its own
//! so that the actor (rollout.rs, engine/), the algorithms and the probe share the types without
//! importing one another.

use crate::policy::SeqBatch;
use anyhow::Result;
use candle_core::Device;

/// One completion with its reward.
#[derive(Clone, Debug)]
pub struct Rollout {
    /// Index of the prompt group within the step.
    pub group: usize,
    pub prompt: Vec<u32>,
    pub completion: Vec<u32>,
    /// Sampler log-probs at temperature, one per completion token.
    pub sampler_logprobs: Vec<f32>,
    pub reward: f64,
    /// Hit `max_completion_len` without a stop token.
    pub truncated: bool,
}

/// The step's rollouts, ordered by group.
#[derive(Clone, Debug, Default)]
pub struct RolloutBatch {
    pub rollouts: Vec<Rollout>,
}

impl RolloutBatch {
    /// Row indices of each group, in group order.
    pub fn groups(&self) -> Vec<Vec<usize>> {
        let mut map: Vec<(usize, Vec<usize>)> = Vec::new();
        for (i, r) in self.rollouts.iter().enumerate() {
            match map.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, v)) => v.push(i),
                None => map.push((r.group, vec![i])),
            }
        }
        map.into_iter().map(|(_, v)| v).collect()
    }

    pub fn len(&self) -> usize {
        self.rollouts.len()
    }

    /// The rows `rows` as one padded micro-batch: how every training, scoring and probe forward
    /// builds its input.
    pub fn seq_batch(&self, rows: &[usize], pad_id: u32, device: &Device) -> Result<SeqBatch> {
        let prompts: Vec<&[u32]> = rows
            .iter()
            .map(|&i| self.rollouts[i].prompt.as_slice())
            .collect();
        let completions: Vec<&[u32]> = rows
            .iter()
            .map(|&i| self.rollouts[i].completion.as_slice())
            .collect();
        SeqBatch::new(&prompts, &completions, pad_id, device)
    }

    pub fn is_empty(&self) -> bool {
        self.rollouts.is_empty()
    }

    /// The rows `rows`, in that order, as a batch of their own.
    pub fn subset(&self, rows: &[usize]) -> RolloutBatch {
        RolloutBatch {
            rollouts: rows.iter().map(|&i| self.rollouts[i].clone()).collect(),
        }
    }
}
