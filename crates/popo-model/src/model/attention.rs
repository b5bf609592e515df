//! Grouped-query self-attention with rotary positions, optional q/k norms (Qwen3) and a KV cache.

use super::attn_core::{attention_train, Heads};
use super::attn_train::{rope_train, softmax_train};
use super::kv_cache::LayerCache;
use super::linear::{DecodeLayout, Linear};
use super::norm::RmsNorm;
use super::ops::{apply_rope, softmax_last};
use crate::config::{Arch, ModelConfig};
use anyhow::Result;
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

#[derive(Clone)]
pub(super) struct Attention {
    pub(super) q_proj: Linear,
    pub(super) k_proj: Linear,
    pub(super) v_proj: Linear,
    pub(super) o_proj: Linear,
    pub(super) q_norm: Option<RmsNorm>,
    pub(super) k_norm: Option<RmsNorm>,
    pub(super) n_heads: usize,
    pub(super) n_kv: usize,
    pub(super) head_dim: usize,
    /// No-graph copies only: candle's fused softmax and RoPE kernels.
    pub(super) fused: bool,
    /// Decoding copies only (`Model::for_decoding`): q, k and v in one matmul.
    pub(super) qkv: Option<Linear>,
}

impl Attention {
    pub(super) fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let (d, hd) = (cfg.hidden_size, cfg.head_dim());
        let (h, kv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let qk_norm = cfg.arch == Arch::Qwen3;
        Ok(Self {
            q_proj: Linear::new(vb.pp("q_proj"), d, h * hd, cfg.attention_bias)?,
            k_proj: Linear::new(vb.pp("k_proj"), d, kv * hd, cfg.attention_bias)?,
            v_proj: Linear::new(vb.pp("v_proj"), d, kv * hd, cfg.attention_bias)?,
            o_proj: Linear::new(vb.pp("o_proj"), h * hd, d, cfg.o_proj_bias)?,
            q_norm: if qk_norm {
                Some(RmsNorm::new(vb.pp("q_norm"), hd, cfg.rms_norm_eps)?)
            } else {
                None
            },
            k_norm: if qk_norm {
                Some(RmsNorm::new(vb.pp("k_norm"), hd, cfg.rms_norm_eps)?)
            } else {
                None
            },
            n_heads: h,
            n_kv: kv,
            head_dim: hd,
            fused: false,
            qkv: None,
        })
    }

    pub(super) fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        bias: &Tensor,
        cache: Option<(&mut LayerCache, usize)>,
        seed: Option<u64>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, kv, hd) = (self.n_heads, self.n_kv, self.head_dim);
        let (mut q, mut k, v) = match &self.qkv {
            Some(qkv) => {
                // Views of one [b, t, h + 2 kv, hd]: the head split below copies them anyway.
                let y = qkv.forward(x)?.reshape((b, t, h + 2 * kv, hd))?;
                (
                    y.narrow(2, 0, h)?,
                    y.narrow(2, h, kv)?,
                    y.narrow(2, h + kv, kv)?,
                )
            }
            None => (
                self.q_proj
                    .forward_seeded(x, seed)?
                    .reshape((b, t, h, hd))?,
                self.k_proj
                    .forward_seeded(x, seed)?
                    .reshape((b, t, kv, hd))?,
                self.v_proj
                    .forward_seeded(x, seed)?
                    .reshape((b, t, kv, hd))?,
            ),
        };
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        // With a graph on the CPU the whole core is one op (`attn_core.rs`); with a cache as well
        // (no training forward has one) the rotary embedding and the softmax are (`attn_train.rs`);
        // elsewhere primitives or candle's kernels.
        let custom = !self.fused
            && super::fused::serves(&q)
            && (q.track_op() || k.track_op() || v.track_op());
        if custom && cache.is_none() {
            // The whole core as one op (`attn_core.rs`).
            let heads = Heads {
                n_heads: h,
                n_kv: kv,
                head_dim: hd,
            };
            let y = attention_train(&q, &k, &v, rope, bias, heads)?;
            return self.o_proj.forward_seeded(&y, seed);
        }
        let rotate = |x: &Tensor| -> Result<Tensor> {
            if custom {
                return rope_train(x, &rope.0, &rope.1); // [b, t, n, hd] -> [b, n, t, hd]
            }
            let x = x.transpose(1, 2)?.contiguous()?;
            if self.fused {
                // cos/sin: [b, t, hd/2]
                Ok(candle_nn::rotary_emb::rope(&x, &rope.0, &rope.1)?)
            } else {
                apply_rope(&x, &rope.0, &rope.1) // cos/sin: [b, 1, t, hd]
            }
        };
        let q = rotate(&q)?; // [b, h, t, hd]
        let k = rotate(&k)?; // [b, kv, t, hd]
        let v = v.transpose(1, 2)?.contiguous()?; // [b, kv, t, hd]
        let (k_t, v) = match cache {
            Some((c, past)) => {
                c.append(&k, &v, past)?;
                c.keys_t_values(past + t)? // [b, kv, hd, s], [b, kv, s, hd]
            }
            None => (k.t()?, v),
        };
        // GQA without copying k/v: query head g*rep + r reads kv head g, so fold the `rep`
        // query heads of a group into the row dimension of one matmul per kv head.
        let rep = h / kv;
        let q = q.reshape((b, kv, rep * t, hd))?;
        let probs = self.probs(&q, &k_t, bias, custom)?; // [b, kv, rep*t, s]
        let y = probs.matmul(&v)?; // [b, kv, rep*t, hd]
        let y = y
            .reshape((b, h, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, h * hd))?;
        self.o_proj.forward_seeded(&y, seed)
    }

    /// Attention weights [b, kv, rep*t, s] for queries `q` [b, kv, rep*t, hd] (GQA-folded) and
    /// keys `k_t` [b, kv, hd, s] under `bias` [b, 1, t, s].
    fn probs(&self, q: &Tensor, k_t: &Tensor, bias: &Tensor, custom: bool) -> Result<Tensor> {
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        if custom {
            return softmax_train(&q.matmul(k_t)?, bias, scale);
        }
        let (b, kv, rows, _) = q.dims4()?;
        let (t, s) = (bias.dim(2)?, k_t.dim(3)?);
        let scores = (q.matmul(k_t)? * scale)?.reshape((b, self.n_heads, t, s))?;
        let dt = scores.dtype();
        let scores = match dt {
            DType::F16 | DType::BF16 => scores.to_dtype(DType::F32)?,
            _ => scores,
        };
        let scores = scores.broadcast_add(bias)?;
        let probs = if self.fused {
            candle_nn::ops::softmax_last_dim(&scores)?
        } else {
            softmax_last(&scores)?
        };
        Ok(probs.to_dtype(dt)?.reshape((b, kv, rows, s))?)
    }

    pub(super) fn detached(&self) -> Self {
        Self {
            q_proj: self.q_proj.detached(),
            k_proj: self.k_proj.detached(),
            v_proj: self.v_proj.detached(),
            o_proj: self.o_proj.detached(),
            q_norm: self.q_norm.as_ref().map(|n| n.detached()),
            k_norm: self.k_norm.as_ref().map(|n| n.detached()),
            // f64 models (finite-difference tests) keep every op primitive.
            fused: self.q_proj.weight.dtype() != DType::F64,
            qkv: None,
            ..*self
        }
    }

    pub(super) fn for_decoding(&self, layout: DecodeLayout) -> Result<Self> {
        let qkv = [&self.q_proj, &self.k_proj, &self.v_proj];
        if !layout.stacks(&qkv) {
            return Ok(Self {
                q_proj: self.q_proj.for_decoding(layout)?,
                k_proj: self.k_proj.for_decoding(layout)?,
                v_proj: self.v_proj.for_decoding(layout)?,
                o_proj: self.o_proj.for_decoding(layout)?,
                ..self.detached()
            });
        }
        Ok(Self {
            qkv: Some(Linear::stacked(&qkv, layout)?),
            o_proj: self.o_proj.for_decoding(layout)?,
            ..self.detached()
        })
    }
}
