//! `[model.lora]`: LoRA adapters on the policy (docs/guide.md, "LoRA"). With `r > 0` the base
//! weights are frozen and only the adapters train: they alone have gradients, AdamW moments and
//! (being f32 already) full-precision values, and checkpoints hold them in PEFT's format, not
//! the base.

use crate::lm::LmPolicy;
use anyhow::{bail, Context, Result};
use popo_model::{LoraSpec, LORA_MODULES};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How fresh adapters are initialised (B is zero either way, so training starts at the base).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraInit {
    /// PEFT's default (`init_lora_weights = True`): A Kaiming-uniform with a = sqrt(5), i.e.
    /// uniform in +-1/sqrt(in_features).
    #[default]
    Kaiming,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSection {
    /// Rank of every adapter; 0 turns LoRA off (full fine-tuning).
    pub r: usize,
    /// The adapters' output is scaled by alpha / r (PEFT's `lora_alpha`).
    pub alpha: f64,
    /// Dropout on each adapter's input in training forwards (PEFT's `lora_dropout`); the mask
    /// is drawn from a hash of the micro-batch's tokens, so resumed and recomputed forwards
    /// draw the same one.
    pub dropout: f64,
    /// Projections that get an adapter, by module name: any of q_proj, k_proj, v_proj, o_proj,
    /// gate_proj, up_proj, down_proj (default: all of them).
    pub target_modules: Vec<String>,
    /// `kaiming`: A Kaiming-uniform, B zero (PEFT's default).
    pub init: LoraInit,
    /// A PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`) to start
    /// from instead of fresh adapters; its r, alpha, dropout and target_modules are used.
    /// `popo train --adapter DIR` sets it.
    pub adapter: String,
}

impl Default for LoraSection {
    fn default() -> Self {
        Self {
            r: 0,
            alpha: 32.0,
            dropout: 0.0,
            target_modules: LORA_MODULES.iter().map(|s| s.to_string()).collect(),
            init: LoraInit::Kaiming,
            adapter: String::new(),
        }
    }
}

impl LoraSection {
    /// Whether the run trains adapters (a rank, or an adapter to continue).
    pub fn enabled(&self) -> bool {
        self.r > 0 || !self.adapter.is_empty()
    }

    /// The adapters' hyper-parameters (for fresh adapters).
    pub fn spec(&self) -> LoraSpec {
        LoraSpec {
            r: self.r,
            alpha: self.alpha,
            dropout: self.dropout,
            target_modules: self.target_modules.clone(),
            use_rslora: false,
        }
    }

    /// Errors name the key and the value.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("model.lora.dropout must be in [0, 1), got {}", self.dropout);
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            bail!("model.lora.alpha must be positive, got {}", self.alpha);
        }
        if self.target_modules.is_empty() {
            bail!("model.lora.target_modules is empty");
        }
        if let Some(bad) = self.target_modules.iter().find(|t| {
            !LORA_MODULES
                .iter()
                .any(|m| t.as_str() == *m || t.ends_with(&format!(".{m}")))
        }) {
            bail!(
                "model.lora.target_modules: `{bad}` is not a projection (choose from {})",
                LORA_MODULES.join(", ")
            );
        }
        Ok(())
    }
}

/// The policy under adapters when `[model.lora]` is on (else as it is): the adapters of
/// `checkpoint` (a resumed LoRA run), of `model.lora.adapter`, or fresh ones drawn from the
/// run's seed.
pub fn apply(
    l: &LoraSection,
    model_path: &str,
    seed: u64,
    policy: LmPolicy,
    checkpoint: Option<&Path>,
) -> Result<LmPolicy> {
    if !l.enabled() {
        return Ok(policy);
    }
    let from = match (checkpoint, l.adapter.as_str()) {
        (Some(dir), _) => Some(dir.to_path_buf()),
        (None, "") => None,
        (None, a) => Some(popo_model::expand_home(a)),
    };
    let (spec, weights) = match from {
        Some(dir) => {
            let ad = policy
                .read_adapter(&dir)
                .with_context(|| format!("model.lora: adapter in {}", dir.display()))?;
            (ad.spec, ad.weights)
        }
        None => {
            let spec = l.spec();
            let w = policy.fresh_adapters(&spec, seed ^ INIT_STREAM)?;
            (spec, w)
        }
    };
    policy.with_lora(spec, &weights, base_name(model_path)?)
}

/// The seed stream of fresh adapters (kept apart from the model's own initialisation).
const INIT_STREAM: u64 = 0x4c6f_5241; // "LoRA"

/// What adapter_config.json names as the base: a local directory as an absolute path (so the
/// adapter resolves from anywhere), a hub id as it is, empty for the built-in tiny model.
fn base_name(path: &str) -> Result<String> {
    if path.is_empty() {
        return Ok(String::new());
    }
    let p = popo_model::expand_home(path);
    Ok(if p.exists() {
        std::fs::canonicalize(&p)
            .with_context(|| format!("model.path {}", p.display()))?
            .to_string_lossy()
            .into_owned()
    } else {
        path.to_string()
    })
}
