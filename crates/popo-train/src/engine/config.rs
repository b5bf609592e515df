//! The `[rollout]` keys that choose and reach the rollout engine. They sit in `[rollout]` (so one
//! `--set rollout.engine="vllm"` switches a recipe) but live here, beside the engines that read
//! them; `config.rs` flattens this struct into `RolloutConfig`.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Where rollouts are generated.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// popo's own batched KV-cache sampler, in the trainer's process.
    #[default]
    Popo,
    /// OpenAI-compatible vLLM servers (`rollout.servers`).
    Vllm,
}

/// How a vLLM server gets the policy's new weights after an optimizer update.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Write the policy into `rollout.weights_dir` and ask every server to reload it.
    #[default]
    Reload,
    /// A LoRA run: write the adapter into `rollout.weights_dir` and ask every server to load it
    /// in place (`/v1/load_lora_adapter`); servers run the base model with `--enable-lora`.
    Lora,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// `popo` (the in-process sampler) or `vllm` (the servers of `rollout.servers`).
    #[serde(rename = "engine")]
    pub kind: EngineKind,
    /// vLLM: base URLs of the servers (`http://host:port`); a step's prompts are spread over
    /// them, one request per prompt.
    pub servers: Vec<String>,
    /// vLLM: the model name the servers serve (their `--served-model-name`). Empty: the name the
    /// first server lists at `/v1/models`.
    pub served_model: String,
    /// vLLM: the limit of every call to a server (generation, reload, probe), in seconds.
    pub request_timeout_s: f64,
    /// vLLM: a failed or timed-out request is sent again, each time to the next server, at most
    /// this many times; then the run checkpoints and stops.
    pub max_retries: usize,
    /// vLLM: how servers get new weights: `reload` (write the model into `rollout.weights_dir`,
    /// ask each server to reload it) or `lora` (a LoRA run: write the adapter there, ask each
    /// server to load it as `popo-policy`).
    pub sync: SyncMode,
    /// vLLM: with `sync = "reload"`, the directory the servers were started on (popo copies the
    /// initial model there when it is empty and rewrites its weights after every update); with
    /// `sync = "lora"`, where popo writes the adapter for the servers to load (a path they can
    /// read: the same machine or a shared filesystem).
    pub weights_dir: String,
    /// vLLM: truncated importance sampling of the policy-gradient terms, each token weighted by
    /// `min(pi_old / pi_engine, tis_cap)`; 0 = off.
    pub tis_cap: f64,
    /// vLLM: the largest mean |log-prob| difference between a server and popo on the sync probe;
    /// above it the server is taken to run other weights and the run stops.
    pub sync_tol: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            kind: EngineKind::Popo,
            servers: Vec::new(),
            served_model: String::new(),
            request_timeout_s: 300.0,
            max_retries: 2,
            sync: SyncMode::Reload,
            weights_dir: String::new(),
            tis_cap: 2.0,
            sync_tol: 0.1,
        }
    }
}

impl EngineConfig {
    /// Checks with messages naming the key. `model_path` is `model.path` (vLLM needs a real HF
    /// model, not the built-in tiny one); `lora_run`, whether `model.lora` trains an adapter.
    pub fn validate(&self, model_path: &str, lora_run: bool) -> Result<()> {
        if !self.tis_cap.is_finite() || self.tis_cap < 0.0 {
            bail!("invalid config: rollout.tis_cap must be >= 0 and finite (0 = off)");
        }
        if self.kind == EngineKind::Popo {
            return Ok(());
        }
        if self.servers.is_empty() {
            bail!("invalid config: rollout.engine = \"vllm\" needs rollout.servers (base URLs such as \"http://127.0.0.1:8000\")");
        }
        for s in &self.servers {
            if !s.starts_with("http://") {
                bail!("invalid config: rollout.servers: `{s}` is not an http:// URL (popo speaks plain HTTP to its servers)");
            }
        }
        if !self.request_timeout_s.is_finite() || self.request_timeout_s <= 0.0 {
            bail!("invalid config: rollout.request_timeout_s must be > 0");
        }
        if self.sync_tol.is_nan() || self.sync_tol <= 0.0 {
            bail!("invalid config: rollout.sync_tol must be > 0");
        }
        if model_path.is_empty() {
            bail!("invalid config: rollout.engine = \"vllm\" needs model.path (an HF model the servers can load; the built-in tiny model is popo's own)");
        }
        match (self.sync, lora_run) {
            (SyncMode::Lora, false) => bail!(
                "invalid config: rollout.sync = \"lora\" loads a LoRA run's adapter into the servers: set model.lora.r (a LoRA run), or use rollout.sync = \"reload\""
            ),
            // The reload path writes whole models; an adapter there would leave the servers on
            // the base weights.
            (SyncMode::Reload, true) => bail!(
                "invalid config: a LoRA run syncs vLLM servers with rollout.sync = \"lora\" (servers started on the base model with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"
            ),
            _ => {}
        }
        match self.sync {
            _ if !self.weights_dir.is_empty() => Ok(()),
            SyncMode::Lora => bail!(
                "invalid config: rollout.sync = \"lora\" needs rollout.weights_dir, where popo writes the adapter for the vLLM servers to load"
            ),
            SyncMode::Reload => bail!(
                "invalid config: rollout.sync = \"reload\" needs rollout.weights_dir, the directory the vLLM servers were started on"
            ),
        }
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.request_timeout_s)
    }
}
