//! The SwiGLU MLP and one pre-norm decoder block.

use super::attention::Attention;
use super::kv_cache::LayerCache;
use super::linear::{DecodeLayout, Linear};
use super::mlp_train::gated_train;
use super::norm::RmsNorm;
use crate::config::ModelConfig;
use anyhow::Result;
use candle_core::Tensor;
use candle_nn::VarBuilder;

#[derive(Clone)]
pub(super) struct Mlp {
    pub(super) gate_proj: Linear,
    pub(super) up_proj: Linear,
    pub(super) down_proj: Linear,
    /// Decoding copies only (`Model::for_decoding`): gate and up in one matmul.
    pub(super) gate_up: Option<Linear>,
}

impl Mlp {
    pub(super) fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: Linear::new(vb.pp("gate_proj"), d, i, false)?,
            up_proj: Linear::new(vb.pp("up_proj"), d, i, false)?,
            down_proj: Linear::new(vb.pp("down_proj"), i, d, false)?,
            gate_up: None,
        })
    }
    pub(super) fn forward(&self, x: &Tensor, seed: Option<u64>) -> Result<Tensor> {
        if self.gate_up.is_none() {
            // Gate and up with the SwiGLU as one training op (`mlp_train.rs`), adapted or not.
            if let Some(a) = gated_train(x, &self.gate_proj, &self.up_proj, seed)? {
                return self.down_proj.forward_seeded(&a, seed);
            }
        }
        let (g, u) = match &self.gate_up {
            Some(gate_up) => {
                let i = self.up_proj.weight.dim(0)?;
                let y = gate_up.forward(x)?; // [b, t, 2i]
                (y.narrow(2, 0, i)?, y.narrow(2, i, i)?)
            }
            None => (
                self.gate_proj.forward_seeded(x, seed)?,
                self.up_proj.forward_seeded(x, seed)?,
            ),
        };
        let h = if (g.track_op() || u.track_op()) && super::fused::serves(&g) {
            super::fused::swiglu_train(&g, &u)? // one op with a written-out backward
        } else {
            (g.silu()? * u)?
        };
        self.down_proj.forward_seeded(&h, seed)
    }
    pub(super) fn detached(&self) -> Self {
        Self {
            gate_proj: self.gate_proj.detached(),
            up_proj: self.up_proj.detached(),
            down_proj: self.down_proj.detached(),
            gate_up: None,
        }
    }
    pub(super) fn for_decoding(&self, layout: DecodeLayout) -> Result<Self> {
        let gate_up = [&self.gate_proj, &self.up_proj];
        if !layout.stacks(&gate_up) {
            return Ok(Self {
                gate_proj: self.gate_proj.for_decoding(layout)?,
                up_proj: self.up_proj.for_decoding(layout)?,
                down_proj: self.down_proj.for_decoding(layout)?,
                gate_up: None,
            });
        }
        Ok(Self {
            gate_up: Some(Linear::stacked(&gate_up, layout)?),
            down_proj: self.down_proj.for_decoding(layout)?,
            ..self.detached()
        })
    }
}

#[derive(Clone)]
pub(super) struct Layer {
    pub(super) attn: Attention,
    pub(super) mlp: Mlp,
    pub(super) input_layernorm: RmsNorm,
    pub(super) post_attention_layernorm: RmsNorm,
}

impl Layer {
    /// x + attn(norm(x)), then + mlp(norm(.)): one pre-norm decoder block.
    pub(super) fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        bias: &Tensor,
        cache: Option<(&mut LayerCache, usize)>,
        seed: Option<u64>,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x)?;
        let x = (x + self.attn.forward(&h, rope, bias, cache, seed)?)?;
        let h = self.post_attention_layernorm.forward(&x)?;
        Ok((&x + self.mlp.forward(&h, seed)?)?)
    }

    pub(super) fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(Self {
            attn: Attention::new(cfg, vb.pp("self_attn"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            input_layernorm: RmsNorm::new(vb.pp("input_layernorm"), d, cfg.rms_norm_eps)?,
            post_attention_layernorm: RmsNorm::new(
                vb.pp("post_attention_layernorm"),
                d,
                cfg.rms_norm_eps,
            )?,
        })
    }
    pub(super) fn detached(&self) -> Self {
        Self {
            attn: self.attn.detached(),
            mlp: self.mlp.detached(),
            input_layernorm: self.input_layernorm.detached(),
            post_attention_layernorm: self.post_attention_layernorm.detached(),
        }
    }
    pub(super) fn for_decoding(&self, layout: DecodeLayout) -> Result<Self> {
        Ok(Self {
            attn: self.attn.for_decoding(layout)?,
            mlp: self.mlp.for_decoding(layout)?,
            ..self.detached()
        })
    }
}
