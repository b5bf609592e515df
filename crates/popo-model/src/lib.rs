//! popo-model: Qwen2/Qwen2.5, Qwen3 and Llama 3 in candle, written from primitive (differentiable)
//! ops, with Hugging Face loading/saving, the tokenizer and chat templates, and a batched
//! KV-cache sampler.
//!
//! - `config`: `ModelConfig`, parsed from config.json.
//! - `model`: `Model` (training forward, cached inference forward), `KvCache`.
//! - `batch`: `TokenBatch` / `TrainOutput`.
//! - `sampler`: `generate` (rollouts), `generate_requests` (continuous batching over many prompts).
//! - `tokenizer`: `Tokenizer`, chat templates.
//! - `hub`: `load_pretrained` / `save_pretrained` / `resolve_model_path`.
//! - `data`, `passk`: what training and evaluation share (JSONL problems, prompt templates,
//!   SplitMix64; the unbiased pass@k estimator).
//!
//! Beyond loading, training forwards and generation, the API has: `Model::new_seeded`
//! (reproducible init, returns the VarMap), `Model::forward_cached` + `KvCache` (incremental
//! inference), `Model::forward_hidden`,
//! `Model::forward_logits`, `Model::lm_head`, `save_pretrained_sharded`, `sampler::sample_token`,
//! `sampler::sample_rows` (token choice on the logits' device), `sampler::decode_stats` and
//! `sampler::with_host_sampling` (host traffic counters and the host-sampler reference),
//! `ChatMessage::new`. One precision detail: `TrainOutput` log-probs/entropy are f32 for f32/bf16/f16
//! models and f64 for an f64 model (used by the finite-difference gradient test).
//! `resolve_model_path` resolves local directories and the local Hugging Face cache; downloads go
//! through hf-hub (ureq + rustls, no OpenSSL) only with the optional `hub` feature, and the error
//! says so otherwise.

pub mod adapter;
pub mod batch;
pub mod config;
pub mod data;
pub mod model;
pub mod passk;
pub mod sampler;
pub mod tokenizer;

pub use adapter::{load_with_adapter, LoraSpec};
pub use batch::{TokenBatch, TrainOutput};
pub use config::{Arch, ModelConfig, RopeScaling};
pub use model::{KvCache, LoraWeights, Model, LORA_MODULES};
pub use sampler::{
    generate, generate_parts, generate_requests, generate_with_progress, Completion, FinishReason,
    Request, SamplingParams,
};
pub use tokenizer::{ChatMessage, Tokenizer};
pub mod hub;
pub mod score;
pub mod untie;
pub use hub::{
    device_from_str, dtype_from_str, expand_home, load_pretrained, resolve_model_path,
    save_pretrained, save_pretrained_sharded, save_weights, stop_ids, Pretrained,
};
pub use score::score;
pub use untie::{ties_head, untie_checkpoint, untie_head};
