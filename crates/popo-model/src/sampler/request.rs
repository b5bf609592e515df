//! What a caller asks the sampler for and gets back, and the seeds a request's rows draw from.

use super::device::Filter;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Samples per prompt.
    pub n: usize,
    /// Softmax temperature; 0 means greedy.
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1 = off.
    pub top_p: f64,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Drop tokens with probability below min_p * max probability; 0 = off.
    pub min_p: f64,
    pub max_new_tokens: usize,
    /// A sampled id in this list ends the sequence (it is kept in `tokens`). Pass the EOS ids here.
    pub stop_token_ids: Vec<u32>,
    /// Decoded text containing one of these ends the sequence (needs a tokenizer).
    pub stop_strings: Vec<String>,
    /// Argmax decoding (ties go to the lowest id).
    pub greedy: bool,
    pub seed: u64,
}

impl SamplingParams {
    /// The top-k / top-p / min-p part, which the host and the device sampler both apply.
    pub fn filter(&self) -> Filter {
        Filter {
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
        }
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            n: 1,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            max_new_tokens: 256,
            stop_token_ids: vec![],
            stop_strings: vec![],
            greedy: false,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    Stop,
    Length,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub prompt_index: usize,
    pub sample_index: usize,
    /// Includes the stop token when one was hit.
    pub tokens: Vec<u32>,
    /// Sampler log-probs, one per token: log softmax(logits / temperature) of the chosen token,
    /// before top-k/top-p/min-p truncation (temperature 1 in greedy mode). This is what
    /// `forward_train(.., temperature)` computes for the same tokens.
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
}

/// One prompt of a `generate_requests` call and the rows it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub prompt: Vec<u32>,
    /// Rows drawn with the call's `SamplingParams`.
    pub n: usize,
    /// Sample `s` draws from the RNG stream that sample `s` of a one-prompt `generate` call with
    /// this seed uses, so a request's samples depend on its prompt and seed only, not on the
    /// other requests, the batch size or the order of admission (up to float rounding: see
    /// `generate_requests`).
    pub seed: u64,
    /// One more row, decoded greedily whatever the parameters say, with `sample_index` `n`. It
    /// shares the prompt's prefill with the `n` samples.
    pub greedy_row: bool,
}

impl Request {
    pub(super) fn rows(&self) -> usize {
        self.n + self.greedy_row as usize
    }
}

/// Seed offset between consecutive prompts of a `generate` call (see `row_seed`).
pub(super) const PROMPT_STRIDE: u64 = 0x9E37_79B9_7F4A_7C15;

/// The RNG seed of sample `sample` of prompt `prompt` of a call seeded `seed`.
pub(super) fn row_seed(seed: u64, prompt: usize, sample: usize) -> u64 {
    // splitmix64 finaliser over the three numbers
    let mut z = seed
        .wrapping_add((prompt as u64).wrapping_mul(PROMPT_STRIDE))
        .wrapping_add((sample as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
