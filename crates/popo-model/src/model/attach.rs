//! Putting adapters on a model (`Model::with_lora`): which projections exist, shape checks
//! naming the tensor, and the frozen, primitive-op copy of the base they train over.

use super::layer::Layer;
use super::linear::Linear;
use super::lora::{hash_words, Lora, LoraWeights};
use super::Model;
use anyhow::{bail, Context, Result};
use candle_core::Tensor;

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
