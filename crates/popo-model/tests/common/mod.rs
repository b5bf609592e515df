//! Shared helpers for the integration tests: tiny configs of each architecture.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use popo_model::{Arch, Model, ModelConfig, RopeScaling};

/// vocab 48, hidden 32, 2 layers, 4 heads, 2 kv heads (GQA), MLP 64.
pub fn qwen2() -> ModelConfig {
    ModelConfig::qwen2_tiny(48, 32, 2, 4, 2, 64)
}

/// Qwen3: q/k norms, explicit head_dim different from hidden/heads, tied embeddings.
pub fn qwen3() -> ModelConfig {
    let mut c = qwen2();
    c.arch = Arch::Qwen3;
    c.head_dim = Some(12);
    c.attention_bias = false;
    c.o_proj_bias = false;
    c.tie_word_embeddings = true;
    c
}

/// Llama 3 with llama3 rope scaling and untied embeddings.
pub fn llama() -> ModelConfig {
    let mut c = qwen2();
    c.arch = Arch::Llama;
    c.attention_bias = false;
    c.rope_theta = 500_000.0;
    c.rope_scaling = Some(RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 64,
    });
    c
}

pub fn all_configs() -> Vec<(&'static str, ModelConfig)> {
    vec![("qwen2", qwen2()), ("qwen3", qwen3()), ("llama", llama())]
}

/// Weights large enough (std 0.3) that logits are far from uniform and argmax ties are rare.
pub fn build(cfg: &ModelConfig, dtype: DType, seed: u64) -> (VarMap, Model) {
    Model::new_seeded(cfg, &Device::Cpu, dtype, seed, 0.3).unwrap()
}

/// Deterministic pseudo-random token ids.
pub fn tokens(seed: u64, len: usize, vocab: usize) -> Vec<u32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % vocab as u64) as u32
        })
        .collect()
}

/// The largest absolute difference between two tensors of the same shape, compared in f32.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    (f(a) - f(b))
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
