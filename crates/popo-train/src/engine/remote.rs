//! The trainer's side of a remote engine: opening it (the weights directory filled, every
//! server reached) and keeping it on the policy's weights. A sync happens before the first
//! rollout and before any rollout that follows an optimizer update, so no rollout ever samples
//! from weights older than the policy's (the barrier of `Vllm::sync`).

use super::config::{EngineKind, SyncMode};
use super::vllm::{seed_weights_dir, SyncReport, Vllm};
use crate::config::TrainConfig;
use crate::lm::LmPolicy;
use crate::policy::{Policy, SeqBatch};
use anyhow::{bail, Result};
use candle_core::Device;
use std::path::Path;

/// Tokens of the sync probe at most: enough positions to see any weight change, short enough
/// to score in milliseconds.
const PROBE_TOKENS: usize = 96;

pub struct Remote {
    pub vllm: Vllm,
    /// The fixed sequence every sync scores on every server.
    probe: Vec<u32>,
    /// Optimizer updates the servers' weights include; None before the first sync.
    synced_at: Option<u64>,
    /// The last sync's report, for the next step's metrics.
    pending: Option<SyncReport>,
}

impl Remote {
    /// None with `rollout.engine = "popo"`. With `"vllm"`: fills an empty `rollout.weights_dir`
    /// with the starting model (so that servers can be started on it; `sync = "reload"`), then
    /// reaches every server.
    /// `probe` is the sync probe's token sequence (a training prompt).
    pub fn open(cfg: &TrainConfig, probe: &[u32]) -> Result<Option<Self>> {
        let e = &cfg.rollout.engine;
        if e.kind == EngineKind::Popo {
            return Ok(None);
        }
        let weights_dir = popo_model::expand_home(&e.weights_dir);
        let model_dir = crate::lm::resolve(&cfg.model.path)?;
        // With `lora` the servers start on the base model itself; the directory only takes the
        // adapter.
        if e.sync == SyncMode::Reload {
            if seed_weights_dir(&weights_dir, &model_dir)? {
                tracing::info!(
                    "rollout.weights_dir {} was empty: copied {} there for the servers to start on",
                    weights_dir.display(),
                    model_dir.display()
                );
            } else if popo_model::ties_head(&weights_dir) {
                tracing::warn!(
                    "rollout.weights_dir {} holds a model with tied embeddings: a vLLM CPU server \
                     started on it keeps its first LM head across reloads. popo writes the head \
                     out from the first sync on; restart the servers on the directory after it",
                    weights_dir.display()
                );
            }
        }
        if probe.len() < 2 {
            bail!("the sync probe needs a training prompt of at least 2 tokens");
        }
        Ok(Some(Self {
            vllm: Vllm::connect(e)?,
            probe: probe[..probe.len().min(PROBE_TOKENS)].to_vec(),
            synced_at: None,
            pending: None,
        }))
    }

    /// Syncs the servers unless they already run the policy after `updates` optimizer updates;
    /// `write` writes the policy as an HF directory into the path it is given.
    pub fn ensure_synced(
        &mut self,
        updates: u64,
        policy: &LmPolicy,
        pad_id: u32,
        device: &Device,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        if self.synced_at == Some(updates) {
            return Ok(());
        }
        let popo = probe_logprobs(policy, &self.probe, pad_id, device)?;
        let report = self.vllm.sync(&self.probe, &popo, write)?;
        tracing::info!(
            "vLLM servers on the policy after {updates} updates: sync {:.2} s, probe |diff| {:.2e}",
            report.seconds,
            report.abs_diff
        );
        self.synced_at = Some(updates);
        self.pending = Some(report);
        Ok(())
    }

    /// The report of the sync since the last call, if any.
    pub fn take_report(&mut self) -> Option<SyncReport> {
        self.pending.take()
    }
}

/// popo's log-prob of every probe token after the first, at temperature 1 (what the servers'
/// prompt log-probs are).
fn probe_logprobs(
    policy: &LmPolicy,
    probe: &[u32],
    pad_id: u32,
    device: &Device,
) -> Result<Vec<f32>> {
    let mb = SeqBatch::new(&[&probe[..1]], &[&probe[1..]], pad_id, device)?;
    let out = policy.forward_detached(&mb, 1.0)?;
    Ok(mb.gather_completion(&out.logprobs)?.remove(0))
}
