//! One decoder-only transformer covering Qwen2/Qwen2.5, Qwen3 and Llama 3, written from primitive
//! candle ops so that autograd reaches every weight (candle-nn's fused softmax/rms_norm/rope detach
//! their outputs, see ARCHITECTURE.md).
//!
//! Positions come from the attention mask (`cumsum - 1`), and attention adds a causal plus
//! key-padding bias, so left-padded prompts (sampling) and right-padded sequences (training) both
//! give each row exactly what it would get alone.
mod attach;
mod attention;
mod attn_core;
mod attn_train;
mod cached;
mod carrier;
mod fused;
mod gemm;
mod host;
mod kv_cache;
mod layer;
mod linear;
mod lora;
mod lora_train;
mod mlp_train;
mod norm;
mod ops;
mod rope;
mod train;

pub use kv_cache::KvCache;
pub use lora::{lora_target_matches, LoraWeights, LORA_MODULES};

use crate::config::ModelConfig;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Init, VarBuilder, VarMap};
use layer::Layer;
use linear::{DecodeLayout, INIT_STD};
use norm::RmsNorm;
use rope::{positions_from_mask, rope_inv_freq};

/// Additive attention bias for disallowed (future or padding) keys. Infinite, because glibc's
/// `expf` of a finite value below -104 takes a slow underflow path that sets errno: with -1e30
/// the masked half of every causal softmax cost more than the rest of the exps (8% of a batched
/// SmolLM2 evaluation). A query with no allowed key (left padding) attends to its own slot
/// instead, so that no softmax row is all -inf (NaN).
const MASKED: f32 = f32::NEG_INFINITY;

/// Upper bound on the elements of one logits chunk in `forward_train` (rows x vocab).
pub const LOGIT_CHUNK_ELEMS: usize = 1 << 24;

/// Qwen2 / Qwen3 / Llama decoder with HF tensor names.
#[derive(Clone)]
pub struct Model {
    cfg: ModelConfig,
    embed_tokens: Tensor, // [vocab, d]
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Tensor, // [vocab, d]; the embedding itself when tied
    inv_freq: Vec<f64>,
    device: Device,
    dtype: DType,
    /// A `detached()` copy: no autograd graph, so the forward uses candle's fused kernels and
    /// skips the log-prob gradient carriers.
    no_grad: bool,
    /// Some adapter has LoRA dropout (`with_lora`): training forwards draw masks.
    dropout: bool,
    /// Decoding copies keep LoRA adapters on the side instead of merging them
    /// (`set_lora_side_decoding`; merging is the default, being the faster: BENCHMARKS.md).
    lora_side_decoding: bool,
}

impl Model {
    /// Builds the model from a VarBuilder using HF tensor names. Over an empty VarMap this creates
    /// freshly initialised trainable Vars (normal(0, 0.02) weights, zero biases, unit norms).
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Model> {
        let d = cfg.hidden_size;
        let vbm = vb.pp("model");
        let embed_tokens = vbm
            .get_with_hints(
                (cfg.vocab_size, d),
                "embed_tokens.weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: INIT_STD,
                },
            )
            .context("model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            layers.push(
                Layer::new(cfg, vbm.pp(format!("layers.{i}")))
                    .with_context(|| format!("in model.layers.{i}"))?,
            );
        }
        let norm = RmsNorm::new(vbm.pp("norm"), d, cfg.rms_norm_eps).context("model.norm")?;
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            vb.get_with_hints(
                (cfg.vocab_size, d),
                "lm_head.weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: INIT_STD,
                },
            )
            .context("lm_head.weight")?
        };
        Ok(Model {
            cfg: cfg.clone(),
            device: embed_tokens.device().clone(),
            dtype: embed_tokens.dtype(),
            no_grad: false,
            dropout: false,
            lora_side_decoding: false,
            embed_tokens,
            layers,
            norm,
            lm_head,
            inv_freq: rope_inv_freq(cfg),
        })
    }

    /// A freshly initialised trainable model with reproducible weights: normal(0, `std`) matrices
    /// and embeddings, zero biases, unit norm weights, drawn in sorted-name order from `seed`.
    pub fn new_seeded(
        cfg: &ModelConfig,
        device: &Device,
        dtype: DType,
        seed: u64,
        std: f64,
    ) -> Result<(VarMap, Model)> {
        use rand::{Rng, SeedableRng};
        let varmap = VarMap::new();
        let model = Model::new(cfg, VarBuilder::from_varmap(&varmap, dtype, device))?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let data = varmap.data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in names {
            let var = &data[name];
            let shape = var.shape().clone();
            let t = if name.ends_with("norm.weight") {
                Tensor::ones(&shape, DType::F64, device)?
            } else if name.ends_with(".bias") {
                Tensor::zeros(&shape, DType::F64, device)?
            } else {
                let vals: Vec<f64> = (0..shape.elem_count())
                    .map(|_| {
                        // Box-Muller
                        let u1: f64 = rng.random::<f64>().max(1e-300);
                        let u2: f64 = rng.random();
                        std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
                    })
                    .collect();
                Tensor::from_vec(vals, &shape, device)?
            };
            var.set(&t.to_dtype(dtype)?)?;
        }
        drop(data);
        Ok((varmap, model))
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Same storage (sees in-place Var updates made by the optimizer), records no autograd graph.
    pub fn detached(&self) -> Model {
        Model {
            cfg: self.cfg.clone(),
            embed_tokens: self.embed_tokens.detach(),
            layers: self.layers.iter().map(|l| l.detached()).collect(),
            norm: self.norm.detached(),
            lm_head: self.lm_head.detach(),
            inv_freq: self.inv_freq.clone(),
            device: self.device.clone(),
            dtype: self.dtype,
            no_grad: true,
            dropout: self.dropout,
            lora_side_decoding: self.lora_side_decoding,
        }
    }

    /// Decode with LoRA adapters applied on the side (`x W^T + s x A^T B^T`) rather than merged
    /// into the decoding copy's weights: for measuring the two against each other.
    pub fn set_lora_side_decoding(&mut self, side: bool) {
        self.lora_side_decoding = side;
    }

    /// A `detached()` model for decoding: its q/k/v and gate/up projections each run as one
    /// matmul (fewer, wider matmuls; 2 kernel launches fewer per layer on a GPU), and on the CPU
    /// every layer matrix is kept transposed (`Linear::weight_t`). The same layout whatever the
    /// batch, so that a row's floats do not depend on the rows beside it. The copies (about 2/3
    /// of the layers' weights; all of them on the CPU) must not outlive an optimizer step: make
    /// one per generation call. f64 models (finite-difference tests) get the plain detached model.
    pub fn for_decoding(&self) -> Result<Model> {
        let mut model = self.detached();
        if self.dtype != DType::F64 {
            let layout = DecodeLayout {
                transpose: self.device.is_cpu(),
                merge_lora: !self.lora_side_decoding,
            };
            model.layers = self
                .layers
                .iter()
                .map(|l| l.for_decoding(layout))
                .collect::<Result<_>>()?;
        }
        Ok(model)
    }

    /// Whether the forward uses candle's fused kernels (a `detached()` model, not f64).
    fn fused(&self) -> bool {
        self.no_grad && self.dtype != DType::F64
    }

    /// dtype of masks, rotary tables and log-prob outputs: f64 for an f64 model, else f32.
    fn float_dtype(&self) -> DType {
        if self.dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        }
    }

    /// cos/sin tables in the compute dtype: [b, 1, t, hd] for the primitive RoPE, [b, t, hd/2]
    /// for candle's fused kernel.
    fn rope_tables(&self, positions: &[Vec<u32>]) -> Result<(Tensor, Tensor)> {
        let b = positions.len();
        let t = positions.first().map_or(0, |r| r.len());
        let fdt = self.float_dtype();
        let pos: Vec<f64> = positions.iter().flatten().map(|&p| p as f64).collect();
        let pos = Tensor::from_vec(pos, (b, t, 1), &self.device)?.to_dtype(fdt)?;
        let half = self.inv_freq.len();
        let inv =
            Tensor::from_vec(self.inv_freq.clone(), (1, 1, half), &self.device)?.to_dtype(fdt)?;
        let freqs = pos.broadcast_mul(&inv)?; // [b, t, hd/2]
        if self.fused() {
            let cos = freqs.cos()?.to_dtype(self.dtype)?.contiguous()?;
            let sin = freqs.sin()?.to_dtype(self.dtype)?.contiguous()?;
            return Ok((cos, sin));
        }
        let emb = Tensor::cat(&[&freqs, &freqs], D::Minus1)?; // [b, t, hd]
        let cos = emb.cos()?.unsqueeze(1)?.to_dtype(self.dtype)?;
        let sin = emb.sin()?.unsqueeze(1)?.to_dtype(self.dtype)?;
        Ok((cos, sin))
    }

    /// Additive bias [b, 1, t, s] for `t` new queries after `past` cached slots.
    fn attention_bias(&self, key_mask: &[Vec<u8>], past: usize, t: usize) -> Result<Tensor> {
        let b = key_mask.len();
        let s = past + t;
        let mut bias = vec![MASKED; b * t * s];
        for (r, keys) in key_mask.iter().enumerate() {
            for i in 0..t {
                // [b, t, s]: query i of row r sees the real slots up to its own.
                let row = &mut bias[(r * t + i) * s..(r * t + i + 1) * s];
                let own = past + i;
                for (j, x) in row[..=own].iter_mut().enumerate() {
                    if keys[j] > 0 {
                        *x = 0.0;
                    }
                }
                if keys[..=own].iter().all(|&m| m == 0) {
                    row[own] = 0.0;
                }
            }
        }
        Ok(Tensor::from_vec(bias, (b, 1, t, s), &self.device)?.to_dtype(self.float_dtype())?)
    }

    fn check_ids(&self, ids: &Tensor, positions: &[Vec<u32>]) -> Result<()> {
        let max_pos = positions.iter().flatten().copied().max().unwrap_or(0) as usize;
        if max_pos >= self.cfg.max_position_embeddings {
            bail!(
                "sequence of {} tokens is longer than max_position_embeddings ({})",
                max_pos + 1,
                self.cfg.max_position_embeddings
            );
        }
        let max_id = ids.flatten_all()?.max(0)?.to_scalar::<u32>()? as usize;
        if max_id >= self.cfg.vocab_size {
            bail!(
                "token id {max_id} is out of range for vocab_size {}",
                self.cfg.vocab_size
            );
        }
        Ok(())
    }

    /// Runs the decoder; returns the final (post-norm) hidden states [b, t, d].
    fn hidden_states(
        &self,
        ids: &Tensor,
        positions: &[Vec<u32>],
        bias: &Tensor,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        self.check_ids(ids, positions)?;
        let seed = self.dropout_seed(ids)?;
        let rope = self.rope_tables(positions)?;
        let mut x = self.embed(ids, b, t)?; // [b, t, d]
        let past = cache.as_ref().map_or(0, |c| c.len);
        for (i, layer) in self.layers.iter().enumerate() {
            let lc = cache.as_deref_mut().map(|c| (&mut c.layers[i], past));
            x = layer.forward(&x, &rope, bias, lc, seed)?;
        }
        self.norm.forward(&x)
    }

    /// Token embeddings [b, t, d] of `ids` [b, t].
    fn embed(&self, ids: &Tensor, b: usize, t: usize) -> Result<Tensor> {
        Ok(self
            .embed_tokens
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.cfg.hidden_size))?)
    }

    /// Logits [.., vocab] in the compute dtype for hidden states [.., d].
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        let dims = hidden.dims().to_vec();
        let d = *dims.last().context("hidden must have a last dim")?;
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let logits = hidden.reshape((rows, d))?.matmul(&self.lm_head.t()?)?; // [rows, vocab]
        let mut out = dims;
        *out.last_mut().unwrap() = self.cfg.vocab_size;
        Ok(logits.reshape(out)?)
    }

    /// Full forward without a cache: final hidden states [b, t, d] for `input_ids` [b, t] u32
    /// and `attention_mask` [b, t] (1 = real token; any padding side).
    pub fn forward_hidden(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let mask = mask_to_host(attention_mask)?;
        let zeros = vec![0u32; mask.len()];
        let pos = positions_from_mask(&mask, &zeros);
        let bias = self.attention_bias(&mask, 0, input_ids.dim(1)?)?;
        self.hidden_states(input_ids, &pos, &bias, None)
    }

    /// Full-sequence logits [b, t, vocab] (materialises all of them: for tests and small vocabularies).
    pub fn forward_logits(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        self.lm_head(&self.forward_hidden(input_ids, attention_mask)?)
    }
}

/// [b, t] mask tensor (any numeric dtype) as host 0/1 rows.
pub(crate) fn mask_to_host(mask: &Tensor) -> Result<Vec<Vec<u8>>> {
    let m = mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(m.into_iter()
        .map(|r| r.into_iter().map(|x| (x > 0.5) as u8).collect())
        .collect())
}
