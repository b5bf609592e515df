//! LoRA (Hu et al. 2021) on the layers' linear projections: `y = x W^T + s * drop(x) A^T B^T`
//! with A [r, in], B [out, r] and s = alpha / r (alpha / sqrt(r) with rsLoRA), the layout and
//! scaling PEFT uses, so that its adapter files load as they are (`crate::adapter`).
//!
//! A model with adapters keeps its base weights detached (frozen: no gradient is computed for
//! them, which is most of a backward's matmuls) and the adapters as they were given (Vars when
//! they train). The adapters may be f32 over a bf16 base: the side path runs in the adapters'
//! dtype and is rounded once into the base's output, as PEFT does.

use super::layer::Layer;
use super::linear::Linear;
use super::Model;
use crate::data::SplitMix64;
use anyhow::{bail, Context, Result};
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
        let mut x = x.to_dtype(self.a.dtype())?;
        if let (Some(seed), true) = (seed, self.dropout > 0.0) {
            let mask = dropout_mask(x.dims2()?, self.dropout, seed ^ self.salt, &self.a)?;
            x = (x * mask)?;
        }
        let h = x.matmul(&self.a.t()?)?; // [n, r]
        Ok((h.matmul(&self.b.t()?)? * self.scale)?)
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

impl Model {
    /// Every adaptable projection: (module path, in features, out features), in layer order.
    pub fn lora_modules(&self) -> Result<Vec<(String, usize, usize)>> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, lin) in layer.linears() {
                let (o, n) = lin.weight.dims2()?;
                out.push((format!("model.layers.{i}.{name}"), n, o));
            }
        }
        Ok(out)
    }

    /// This model with adapters on the projections named in `weights` (each scaled by `scale`,
    /// dropout `dropout` in training forwards) and its base frozen. Every adapter must fit its
    /// projection; an adapter for a module the model lacks is an error naming it.
    pub fn with_lora(&self, weights: &LoraWeights, scale: f64, dropout: f64) -> Result<Model> {
        let mut m = self.detached();
        m.no_grad = false;
        // Back to primitive ops everywhere: a fused kernel's output carries no graph.
        m.norm.fused = None;
        let mut used = 0;
        for (i, layer) in m.layers.iter_mut().enumerate() {
            layer.unfuse();
            for (name, lin) in layer.linears_mut() {
                let path = format!("model.layers.{i}.{name}");
                let Some((a, b)) = weights.get(&path) else {
                    continue;
                };
                check_shapes(&path, a, b, &lin.weight)?;
                lin.lora = Some(Lora {
                    a: a.clone(),
                    b: b.clone(),
                    scale,
                    dropout,
                    salt: hash_words(path.bytes().map(u64::from)),
                });
                used += 1;
            }
        }
        if used < weights.len() {
            let known: Vec<String> = self.lora_modules()?.into_iter().map(|m| m.0).collect();
            let mut extra: Vec<&String> = weights.keys().filter(|k| !known.contains(k)).collect();
            extra.sort();
            bail!(
                "adapter for {} which the model does not have (adaptable: model.layers.N.{{self_attn.q_proj, ..., mlp.down_proj}})",
                extra.first().map_or("?", |s| s.as_str())
            );
        }
        m.dropout = dropout > 0.0 && used > 0;
        Ok(m)
    }

    /// The dropout seed of a training forward over `ids`: a hash of the batch's tokens, so that
    /// a recomputed forward (checkpointing) draws the same masks. `None` without dropout.
    pub(super) fn dropout_seed(&self, ids: &Tensor) -> Result<Option<u64>> {
        if self.no_grad || !self.dropout {
            return Ok(None);
        }
        let ids = ids.flatten_all()?.to_vec1::<u32>()?;
        Ok(Some(hash_words(ids.into_iter().map(u64::from))))
    }
}

fn check_shapes(path: &str, a: &Tensor, b: &Tensor, w: &Tensor) -> Result<()> {
    let (out, inp) = w.dims2()?;
    let (ra, ia) = a
        .dims2()
        .with_context(|| format!("{path}.lora_A.weight must be a matrix, got {:?}", a.shape()))?;
    let (ob, rb) = b
        .dims2()
        .with_context(|| format!("{path}.lora_B.weight must be a matrix, got {:?}", b.shape()))?;
    if ia != inp || ra != rb {
        bail!(
            "{path}.lora_A.weight has shape [{ra}, {ia}], expected [r, {inp}] with r = {rb} (the base weight is [{out}, {inp}], lora_B [{ob}, {rb}])"
        );
    }
    if ob != out {
        bail!(
            "{path}.lora_B.weight has shape [{ob}, {rb}], expected [{out}, {ra}] (the base weight is [{out}, {inp}])"
        );
    }
    Ok(())
}

impl Layer {
    /// The layer's projections by their path below the layer.
    pub(super) fn linears(&self) -> [(&'static str, &Linear); 7] {
        let (a, m) = (&self.attn, &self.mlp);
        [
            ("self_attn.q_proj", &a.q_proj),
            ("self_attn.k_proj", &a.k_proj),
            ("self_attn.v_proj", &a.v_proj),
            ("self_attn.o_proj", &a.o_proj),
            ("mlp.gate_proj", &m.gate_proj),
            ("mlp.up_proj", &m.up_proj),
            ("mlp.down_proj", &m.down_proj),
        ]
    }

    fn linears_mut(&mut self) -> [(&'static str, &mut Linear); 7] {
        let (a, m) = (&mut self.attn, &mut self.mlp);
        [
            ("self_attn.q_proj", &mut a.q_proj),
            ("self_attn.k_proj", &mut a.k_proj),
            ("self_attn.v_proj", &mut a.v_proj),
            ("self_attn.o_proj", &mut a.o_proj),
            ("mlp.gate_proj", &mut m.gate_proj),
            ("mlp.up_proj", &mut m.up_proj),
            ("mlp.down_proj", &mut m.down_proj),
        ]
    }

    /// Back to the primitive (differentiable) ops after `detached()` chose fused kernels.
    fn unfuse(&mut self) {
        self.attn.fused = false;
        for n in [
            Some(&mut self.input_layernorm),
            Some(&mut self.post_attention_layernorm),
            self.attn.q_norm.as_mut(),
            self.attn.k_norm.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            n.fused = None;
        }
    }
}
