//! `popo_model::Model` as a [`Policy`]: the only place the trainer touches the model crate's types.

use crate::policy::{Policy, PolicyOutput, SeqBatch};
use anyhow::Result;
use candle_core::{DType, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use popo_model::{Model, TokenBatch};

pub struct LmPolicy {
    model: Model,
    /// Shares storage with `model` (sees optimizer updates) but records no graph.
    detached: Model,
    varmap: VarMap,
    named: Vec<(String, Var)>,
}

impl LmPolicy {
    pub fn new(model: Model, varmap: VarMap) -> Self {
        let mut named: Vec<(String, Var)> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let detached = model.detached();
        Self {
            model,
            detached,
            varmap,
            named,
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Writes an HF checkpoint of this model with the given weights (by HF name), rounded to
    /// `save_dtype`.
    pub fn save_pretrained(
        &self,
        dir: &std::path::Path,
        weights: &[(String, Tensor)],
        save_dtype: DType,
        tokenizer: &popo_model::Tokenizer,
        generation_config: Option<&serde_json::Value>,
    ) -> Result<()> {
        popo_model::save_weights(
            dir,
            self.model.config(),
            weights,
            save_dtype,
            Some(tokenizer),
            generation_config,
            popo_model::hub::DEFAULT_SHARD_BYTES,
        )
    }

    fn run(&self, model: &Model, batch: &SeqBatch, temperature: f64) -> Result<PolicyOutput> {
        // SeqBatch already holds the same padded layout; share its tensors instead of re-padding.
        let tb = TokenBatch {
            input_ids: batch.input_ids.clone(),
            attention_mask: batch.attention_mask.clone(),
            completion_mask: batch.completion_mask.clone(),
        };
        let out = model.forward_train(&tb, temperature)?;
        Ok(PolicyOutput {
            logprobs: out.logprobs,
            entropy: out.entropy,
            hidden: out.hidden,
        })
    }
}

impl Policy for LmPolicy {
    fn forward(&self, batch: &SeqBatch, temperature: f64) -> Result<PolicyOutput> {
        self.run(&self.model, batch, temperature)
    }

    fn forward_detached(&self, batch: &SeqBatch, temperature: f64) -> Result<PolicyOutput> {
        self.run(&self.detached, batch, temperature)
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        self.named.clone()
    }

    fn fork(&self) -> Result<Box<dyn Policy>> {
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().unwrap();
            for (n, v) in &self.named {
                data.insert(n.clone(), Var::from_tensor(&v.as_tensor().copy()?)?);
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, self.model.dtype(), self.model.device());
        let model = Model::new(self.model.config(), vb)?;
        Ok(Box::new(LmPolicy::new(model, varmap)))
    }

    fn hidden_size(&self) -> usize {
        self.model.config().hidden_size
    }
}

/// Mean per-token log-prob of each row's completion (the probe's statistic), no graph.
pub fn mean_token_logprob(policy: &dyn Policy, batch: &SeqBatch, temperature: f64) -> Result<f64> {
    let out = policy.forward_detached(batch, temperature)?;
    let m = batch.completion_mask.to_dtype(out.logprobs.dtype())?;
    let s = (out.logprobs * &m)?
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?;
    let n = m
        .sum(D::Minus1)?
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?;
    Ok(if n > 0.0 { s / n } else { 0.0 })
}
