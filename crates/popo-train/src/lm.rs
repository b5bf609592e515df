//! `popo_model` behind the trainer's own types: the one place popo-train loads, builds, runs,
//! samples from and saves a `popo_model::Model`. The losses see it only as a [`Policy`].

use crate::params::Params;
use crate::policy::{Policy, PolicyOutput, SeqBatch};
use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use popo_model::{Model, ModelConfig};
use std::collections::HashSet;
use std::path::Path;

pub use popo_model::sampler::{decode_stats, with_host_sampling, DecodeStats};
pub use popo_model::{Completion, FinishReason, SamplingParams, Tokenizer};

/// A checkpoint loaded for training.
pub struct Loaded {
    pub policy: LmPolicy,
    pub tokenizer: Tokenizer,
    /// generation_config.json as read, written back with every checkpoint.
    pub generation_config: Option<serde_json::Value>,
}

impl Loaded {
    /// A checkpoint the caller has already loaded with `popo_model`.
    pub fn from(p: popo_model::Pretrained) -> Result<Self> {
        let tokenizer = p
            .tokenizer
            .with_context(|| format!("{}: no tokenizer.json", p.dir.display()))?;
        Ok(Loaded {
            policy: LmPolicy::new(p.model, p.varmap),
            tokenizer,
            generation_config: p.generation_config,
        })
    }
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn device(name: &str) -> Result<Device> {
    popo_model::device_from_str(name)
}

/// A local HF directory, or a hub id already in the local cache.
pub fn resolve(name_or_dir: &str) -> Result<std::path::PathBuf> {
    popo_model::resolve_model_path(name_or_dir)
}

pub struct LmPolicy {
    model: Model,
    /// Shares storage with `model` (sees optimizer updates) but records no graph.
    detached: Model,
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
            named,
        }
    }

    /// Loads an HF directory (config.json, safetensors, tokenizer) with weights in `dtype`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Loaded> {
        Loaded::from(popo_model::load_pretrained(dir, device, dtype)?)
    }

    /// A freshly initialised model: normal(0, `std`) matrices drawn from `seed`.
    pub fn seeded(
        cfg: &ModelConfig,
        device: &Device,
        dtype: DType,
        seed: u64,
        std: f64,
    ) -> Result<Self> {
        let (varmap, model) = Model::new_seeded(cfg, device, dtype, seed, std)?;
        Ok(LmPolicy::new(model, varmap))
    }

    pub fn dtype(&self) -> DType {
        self.model.dtype()
    }

    pub fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    /// Where generation stops: `popo_model::stop_ids` over this model's config.json, the
    /// checkpoint's generation_config.json and the tokenizer.
    pub fn stop_ids(
        &self,
        generation_config: Option<&serde_json::Value>,
        tokenizer: &Tokenizer,
    ) -> Result<Vec<u32>> {
        popo_model::stop_ids(self.model.config(), generation_config, Some(tokenizer))
    }

    /// Samples completions with the batched KV-cache sampler (no graph).
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        tokenizer: &Tokenizer,
    ) -> Result<Vec<Completion>> {
        popo_model::generate(&self.model, prompts, params, Some(tokenizer))
    }

    /// `generate` over `parts` runs of prompts decoded side by side (`popo_model::generate_parts`).
    pub fn generate_parts(
        &self,
        prompts: &[Vec<u32>],
        params: &SamplingParams,
        tokenizer: &Tokenizer,
        parts: usize,
    ) -> Result<Vec<Completion>> {
        popo_model::generate_parts(&self.model, prompts, params, Some(tokenizer), parts)
    }

    /// Writes an HF checkpoint of this model. The weights are the full-precision ones in
    /// `params` (the f32 masters in mixed precision), rounded once to `save_dtype`, so that
    /// `save_dtype = "f32"` after bf16 training keeps every update.
    pub fn save_pretrained(
        &self,
        dir: &Path,
        params: &Params,
        save_dtype: DType,
        tokenizer: &Tokenizer,
        generation_config: Option<&serde_json::Value>,
    ) -> Result<()> {
        let mine: HashSet<&str> = self.named.iter().map(|(n, _)| n.as_str()).collect();
        let weights: Vec<(String, Tensor)> = params
            .full_named()?
            .into_iter()
            .filter(|(n, _)| mine.contains(n.as_str()))
            .collect();
        popo_model::save_weights(
            dir,
            self.model.config(),
            &weights,
            save_dtype,
            Some(tokenizer),
            generation_config,
            popo_model::hub::DEFAULT_SHARD_BYTES,
        )
    }

    /// Writes this model's own weights, in f32, as an HF checkpoint: for a model that has no
    /// optimizer state yet (a random initialisation that `--model` can start from).
    pub fn save_initial(&self, dir: &Path, tokenizer: &Tokenizer) -> Result<()> {
        let weights: Vec<(String, Tensor)> = self
            .named
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        popo_model::save_weights(
            dir,
            self.model.config(),
            &weights,
            DType::F32,
            Some(tokenizer),
            None,
            popo_model::hub::DEFAULT_SHARD_BYTES,
        )
    }

    fn run(&self, model: &Model, batch: &SeqBatch, temperature: f64) -> Result<PolicyOutput> {
        let out = model.forward_train(&batch.tokens, temperature)?;
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

    fn backward(
        &self,
        batch: &SeqBatch,
        temperature: f64,
        checkpoint: bool,
        loss: &mut dyn FnMut(&PolicyOutput) -> Result<Tensor>,
        sink: &mut dyn FnMut(GradStore) -> Result<()>,
    ) -> Result<()> {
        if !checkpoint {
            return sink(loss(&self.forward(batch, temperature)?)?.backward()?);
        }
        let mut loss_of = |out: &popo_model::TrainOutput| {
            loss(&PolicyOutput {
                logprobs: out.logprobs.clone(),
                entropy: out.entropy.clone(),
                hidden: out.hidden.clone(),
            })
        };
        self.model
            .backward_checkpointed(&batch.tokens, temperature, &mut loss_of, sink)
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
    let m = batch.completion_mask().to_dtype(out.logprobs.dtype())?;
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
