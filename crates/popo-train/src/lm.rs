//! `popo_model` behind the trainer's own types: the one place popo-train loads, builds, runs,
//! samples from and saves a `popo_model::Model`. The losses see it only as a [`Policy`].

use crate::params::Params;
use crate::policy::{Policy, PolicyOutput, SeqBatch};
use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use popo_model::adapter::{self, LoraSpec};
use popo_model::{LoraWeights, ModelConfig};
use std::collections::HashSet;
use std::path::Path;

pub use popo_model::sampler::{decode_stats, with_host_sampling, DecodeStats};
pub use popo_model::{
    generate_requests, Completion, FinishReason, Model, Request, SamplingParams, Tokenizer,
};

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

/// How `LmPolicy::save_pretrained` writes a tied LM head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// As the model has it: checkpoints.
    AsTrained,
    /// As a layer of its own (`popo_model::untie`, which says why): for vLLM servers to reload.
    WrittenOut,
}

pub struct LmPolicy {
    model: Model,
    /// Shares storage with `model` (sees optimizer updates) but records no graph.
    detached: Model,
    /// The trainable Vars: every weight, or with LoRA the adapters alone.
    named: Vec<(String, Var)>,
    lora: Option<LoraBase>,
}

/// What a LoRA policy keeps besides its adapters: the frozen base (shared by `fork`s, such as
/// POPO's EMA target) and what its checkpoints write into adapter_config.json.
#[derive(Clone)]
struct LoraBase {
    base: Model,
    /// The base's own Vars, never updated (`frozen_vars`).
    base_vars: Vec<(String, Var)>,
    spec: LoraSpec,
    /// `base_model_name_or_path`: a hub id or an absolute directory; empty for the built-in
    /// tiny model until its first checkpoint writes it beside the checkpoints.
    base_name: std::sync::Arc<std::sync::Mutex<String>>,
}

/// The suffixes of an adapter's two Var names (PEFT's, less the `base_model.model.` prefix).
const LORA_A: &str = ".lora_A.weight";
const LORA_B: &str = ".lora_B.weight";
/// Where a LoRA run over the built-in tiny model writes that base, once, beside `checkpoints/`.
pub const TINY_BASE_DIR: &str = "base-model";

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
            lora: None,
        }
    }

    /// This policy as a frozen base under trainable adapters `weights` (copied into new Vars).
    /// `base_name` is what checkpoints record as the base (empty: the built-in tiny model).
    pub fn with_lora(
        self,
        spec: LoraSpec,
        weights: &LoraWeights,
        base_name: String,
    ) -> Result<Self> {
        let lora = LoraBase {
            base: self.model,
            base_vars: self.named,
            spec,
            base_name: std::sync::Arc::new(std::sync::Mutex::new(base_name)),
        };
        Self::adapted(lora, weights)
    }

    fn adapted(lora: LoraBase, weights: &LoraWeights) -> Result<Self> {
        let mut named = Vec::new();
        let mut vars = LoraWeights::new();
        for (path, (a, b)) in weights {
            let (va, vb) = (Var::from_tensor(&a.copy()?)?, Var::from_tensor(&b.copy()?)?);
            vars.insert(
                path.clone(),
                (va.as_tensor().clone(), vb.as_tensor().clone()),
            );
            named.push((format!("{path}{LORA_A}"), va));
            named.push((format!("{path}{LORA_B}"), vb));
        }
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let model = lora
            .base
            .with_lora(&vars, lora.spec.scale(), lora.spec.dropout)?;
        Ok(Self {
            detached: model.detached(),
            model,
            named,
            lora: Some(lora),
        })
    }

    /// Fresh adapters for this model (`popo_model::adapter::init_adapters`).
    pub fn fresh_adapters(&self, spec: &LoraSpec, seed: u64) -> Result<LoraWeights> {
        adapter::init_adapters(&self.model, spec, seed)
    }

    /// A PEFT adapter directory read onto this model's device.
    pub fn read_adapter(&self, dir: &Path) -> Result<adapter::Adapter> {
        adapter::read_adapter(dir, self.model.device(), self.model.dtype())
    }

    /// The LoRA hyper-parameters, when the policy trains adapters.
    pub fn lora(&self) -> Option<&LoraSpec> {
        self.lora.as_ref().map(|l| &l.spec)
    }

    /// The frozen base weights of a LoRA policy (empty without LoRA): what a test checks is
    /// bit-identical after training.
    pub fn frozen_vars(&self) -> Vec<(String, Var)> {
        self.lora
            .as_ref()
            .map_or_else(Vec::new, |l| l.base_vars.clone())
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

    /// Decode with the LoRA adapters on the side instead of merged (`Model::set_lora_side_decoding`;
    /// `popo bench --lora-side-decoding` measures the two).
    pub fn set_lora_side_decoding(&mut self, side: bool) {
        self.model.set_lora_side_decoding(side);
        self.detached.set_lora_side_decoding(side);
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
    /// `save_dtype = "f32"` after bf16 training keeps every update. `head` says how a tied LM
    /// head is written; a LoRA policy writes its adapter either way.
    pub fn save_pretrained(
        &self,
        dir: &Path,
        params: &Params,
        save_dtype: DType,
        tokenizer: &Tokenizer,
        generation_config: Option<&serde_json::Value>,
        head: Head,
    ) -> Result<()> {
        let mine: HashSet<&str> = self.named.iter().map(|(n, _)| n.as_str()).collect();
        let mut weights: Vec<(String, Tensor)> = params
            .full_named()?
            .into_iter()
            .filter(|(n, _)| mine.contains(n.as_str()))
            .collect();
        if let Some(lora) = &self.lora {
            return self.save_adapter(lora, dir, weights, tokenizer);
        }
        let config = match head {
            Head::AsTrained => self.model.config().clone(),
            Head::WrittenOut => popo_model::untie_head(self.model.config(), &mut weights)?,
        };
        popo_model::save_weights(
            dir,
            &config,
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
        save_vars_f32(dir, &self.model, &self.named, tokenizer)
    }

    /// A LoRA checkpoint: the adapters in PEFT's format and the tokenizer, not the base. The
    /// built-in tiny model exists nowhere else, so the first checkpoint writes it once beside
    /// `checkpoints/` and names it as the base.
    fn save_adapter(
        &self,
        lora: &LoraBase,
        dir: &Path,
        weights: Vec<(String, Tensor)>,
        tokenizer: &Tokenizer,
    ) -> Result<()> {
        let adapters = lora_pairs(weights)?;
        let mut base_name = lora.base_name.lock().unwrap_or_else(|e| e.into_inner());
        if base_name.is_empty() {
            *base_name = self.write_tiny_base(lora, dir, tokenizer)?;
        }
        adapter::save_adapter(dir, &lora.spec, &base_name, &adapters)?;
        tokenizer.save(dir)
    }

    /// Writes the tiny base into `<run>/base-model` (a checkpoint `dir` is
    /// `<run>/checkpoints/.tmp-step-N`) unless there already; returns its absolute path.
    fn write_tiny_base(
        &self,
        lora: &LoraBase,
        dir: &Path,
        tokenizer: &Tokenizer,
    ) -> Result<String> {
        let run = dir
            .parent()
            .and_then(Path::parent)
            .context("a LoRA checkpoint of the tiny model must be inside <run>/checkpoints")?;
        let base = run.join(TINY_BASE_DIR);
        if !base.join("config.json").is_file() {
            let tmp = run.join(format!(".tmp-{TINY_BASE_DIR}"));
            let _ = std::fs::remove_dir_all(&tmp);
            save_vars_f32(&tmp, &lora.base, &lora.base_vars, tokenizer)?;
            std::fs::rename(&tmp, &base)
                .with_context(|| format!("renaming {} -> {}", tmp.display(), base.display()))?;
        }
        Ok(std::fs::canonicalize(&base)?.to_string_lossy().into_owned())
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
        if let Some(lora) = &self.lora {
            // The copy shares the frozen base and owns copies of the adapters.
            let named = self.named.iter();
            let w = lora_pairs(named.map(|(n, v)| (n.clone(), v.as_tensor().clone())))?;
            return Ok(Box::new(Self::adapted(lora.clone(), &w)?));
        }
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

/// Adapter tensors named `<module>.lora_A.weight` / `.lora_B.weight` as pairs by module.
/// Writes `vars` as an HF checkpoint of `model`'s architecture, in f32, with the tokenizer.
fn save_vars_f32(
    dir: &Path,
    model: &Model,
    vars: &[(String, Var)],
    tokenizer: &Tokenizer,
) -> Result<()> {
    let weights: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    popo_model::save_weights(
        dir,
        model.config(),
        &weights,
        DType::F32,
        Some(tokenizer),
        None,
        popo_model::hub::DEFAULT_SHARD_BYTES,
    )
}

fn lora_pairs(named: impl IntoIterator<Item = (String, Tensor)>) -> Result<LoraWeights> {
    let mut a_of = std::collections::HashMap::new();
    let mut b_of = std::collections::HashMap::new();
    for (name, t) in named {
        if let Some(p) = name.strip_suffix(LORA_A) {
            a_of.insert(p.to_string(), t);
        } else if let Some(p) = name.strip_suffix(LORA_B) {
            b_of.insert(p.to_string(), t);
        }
    }
    a_of.into_iter()
        .map(|(p, a)| match b_of.remove(&p) {
            Some(b) => Ok((p, (a, b))),
            None => anyhow::bail!("adapter {p}: lora_B missing from the parameters"),
        })
        .collect()
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
