//! Rollout engines: what turns prompts (token ids) into sampled completions (token ids and the
//! engine's per-token log-probs) for the actor. Two implementations of one trait: popo's own
//! sampler in the trainer's process ([`InProcess`]) and OpenAI-compatible vLLM servers
//! ([`vllm::Vllm`]). The actor (rollout.rs) sees only the trait; the trainer owns the engine and
//! keeps it on the policy's weights (`vllm::Vllm::sync`).

pub mod config;
pub mod http;
pub mod remote;
pub mod vllm;

use crate::lm::{Completion, LmPolicy, SamplingParams, Tokenizer};
use anyhow::Result;

pub trait Engine: Sync {
    /// `params.n` completions of every prompt, grouped by prompt in prompt order (the order
    /// `popo_model::generate` returns), each with its tokens (stop token included), the engine's
    /// log-prob of every token at `params.temperature`, and why it ended.
    fn generate(&self, prompts: &[Vec<u32>], params: &SamplingParams) -> Result<Vec<Completion>>;
}

/// popo's batched KV-cache sampler on the policy's own weights: always in sync, and its
/// log-probs are the trainer's by construction.
pub struct InProcess<'a> {
    pub policy: &'a LmPolicy,
    pub tokenizer: &'a Tokenizer,
    /// Runs of prompts decoded side by side (`parallel::rollout_parts`).
    pub parts: usize,
}

impl Engine for InProcess<'_> {
    fn generate(&self, prompts: &[Vec<u32>], params: &SamplingParams) -> Result<Vec<Completion>> {
        self.policy
            .generate_parts(prompts, params, self.tokenizer, self.parts)
    }
}
