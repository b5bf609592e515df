//! LoRA (Hu et al. 2021) on the layers' linear projections: `y = x W^T + s * drop(x) A^T B^T`
//! with A [r, in], B [out, r] and s = alpha / r (alpha / sqrt(r) with rsLoRA), the layout and
//! scaling PEFT uses, so that its adapter files load as they are (`crate::adapter`).
//!
//! A model with adapters keeps its base weights detached (frozen: no gradient is computed for
//! them, which is most of a backward's matmuls) and the adapters as they were given (Vars when
//! they train). The adapters may be f32 over a bf16 base: the side path runs in the adapters'
//! dtype and is rounded once into the base's output, as PEFT does.

use crate::data::SplitMix64;
use anyhow::Result;
use candle_core::Tensor;
use std::collections::HashMap;

/// The projections LoRA can adapt, by their HF module names (PEFT's `target_modules`).
pub const LORA_MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// One adapter pair.
#[derive(Clone)]
pub(super) struct Lora {
    pub(super) a: Tensor, // [r, in]
    pub(super) b: Tensor, // [out, r]
    pub(super) scale: f64,
    /// Dropout on the adapter's input during training forwards (PEFT's `lora_dropout`).
    pub(super) dropout: f64,
    /// Mixed into the dropout seed so that no two projections share a mask.
    pub(super) salt: u64,
}

impl Lora {
    /// `s * drop(x) A^T B^T` for rows `x` [n, in], in the adapters' dtype. `seed` is `Some` in
    /// training forwards only.
    pub(super) fn forward(&self, x: &Tensor, seed: Option<u64>) -> Result<Tensor> {
        Ok(self.down(x, seed)?.matmul(&self.b.t()?)?)
    }

    /// `s * drop(x) A^T` [n, r]: the first half of `forward`.
    pub(super) fn down(&self, x: &Tensor, seed: Option<u64>) -> Result<Tensor> {
        let mut x = x.to_dtype(self.a.dtype())?;
        if let (Some(seed), true) = (seed, self.dropout > 0.0) {
            let mask = dropout_mask(x.dims2()?, self.dropout, seed ^ self.salt, &self.a)?;
            x = (x * mask)?;
        }
        // The scale goes on the [n, r] product, not on the [n, out] output: one activation of
        // the output's size fewer kept for the backward, at every adapted projection.
        Ok((x.matmul(&self.a.t()?)? * self.scale)?)
    }

    /// `s * B A` [out, in] in the adapters' dtype: what merging adds to the base weight.
    pub(super) fn delta(&self) -> Result<Tensor> {
        Ok((self.b.matmul(&self.a)? * self.scale)?)
    }

    pub(super) fn detached(&self) -> Self {
        Self {
            a: self.a.detach(),
            b: self.b.detach(),
            ..*self
        }
    }
}

/// Inverted-dropout mask [n, d] (0 or 1 / (1 - p)) drawn from `seed` alone: the same batch gets
/// the same mask in a checkpointed backward's recomputation, on any thread count and after a
/// resume, none of which a device RNG would give.
fn dropout_mask(shape: (usize, usize), p: f64, seed: u64, like: &Tensor) -> Result<Tensor> {
    let mut rng = SplitMix64(seed);
    let keep = 1.0 / (1.0 - p);
    let threshold = (p * (1u64 << 53) as f64) as u64;
    let vals: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| {
            if rng.next_u64() >> 11 < threshold {
                0.0
            } else {
                keep as f32
            }
        })
        .collect();
    Ok(Tensor::from_vec(vals, shape, like.device())?.to_dtype(like.dtype())?)
}

/// A stable 64-bit hash (FNV-1a, then one SplitMix64 round) of `words`.
pub(super) fn hash_words(words: impl Iterator<Item = u64>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for w in words {
        h = (h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
    }
    SplitMix64(h).next_u64()
}

/// Whether module `path` (`model.layers.3.self_attn.q_proj`) is one of `targets`: a target is a
/// module name (`q_proj`) or a dotted suffix of the path, as PEFT matches a list.
pub fn lora_target_matches(path: &str, targets: &[String]) -> bool {
    targets
        .iter()
        .any(|t| path == t || path.ends_with(&format!(".{t}")))
}

/// Adapter pairs keyed by module path: (A [r, in], B [out, r]).
pub type LoraWeights = HashMap<String, (Tensor, Tensor)>;
