//! `popo bench`: how fast a model samples rollouts and trains, for sizing a run and as the
//! instrument behind every speed figure in BENCHMARKS.md.
//!
//! Decode: random prompts of `prompt_len` tokens, `new_tokens` sampled at T = 1 with no stop
//! token, so every row runs to the full length. A batch of `b` rows is `b / group_size` prompts
//! with `group_size` samples each, as an RL step's rollouts are (group size 1: `b` distinct
//! prompts, the shape of HF `generate` on a plain batch); tokens/s counts every generated token over the
//! whole call (prefill included, as HF `generate` is timed), and ms/step is the decode step alone
//! (the call minus a one-token call, over `new_tokens - 1` steps). Train: one POPO update
//! (forward, loss, backward, clip, AdamW; every completion positive, so the NLL, similarity and
//! entropy terms all run) over `train_batch` sequences of `train_len` tokens. Each figure is the
//! median of `repeats` runs after a warm-up run.

use crate::algo::{MicroBatch, PrepareCtx, Rollout, RolloutBatch};
use crate::learner::{Learner, LearnerView, MicroLoss};
use crate::lm::{decode_stats, with_host_sampling, LmPolicy, SamplingParams, Tokenizer};
use crate::params::Params;
use crate::policy::Policy;
use anyhow::{ensure, Result};
use candle_core::Device;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub batches: Vec<usize>,
    /// Samples per prompt in a decode batch (a batch smaller than this is one prompt's samples).
    pub group_size: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
    pub train_batch: usize,
    pub train_len: usize,
    /// Sequences per forward/backward in the training update.
    pub micro_batch: usize,
    /// Per-layer activation recomputation in the update (`optim.gradient_checkpointing`).
    pub checkpoint: bool,
    /// How the CPU's cores are shared in the update (`run.cpu_parallel`; the process must be
    /// set up for it first, `crate::parallel::configure_process`).
    pub cpu_parallel: crate::config::CpuParallel,
    /// Choose decode tokens on the host from copied logits (the path top-k, top-p and min-p
    /// take, and every step's before on-device sampling), to measure what the device path saves.
    pub host_sampling: bool,
    pub repeats: usize,
    pub seed: u64,
}

/// What `popo bench --json` prints (stable keys).
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub device: String,
    pub dtype: String,
    /// Samples per prompt in each decode batch.
    pub group_size: usize,
    /// Batch size -> generated tokens per second (prefill included).
    pub decode_tokens_per_s: BTreeMap<usize, f64>,
    /// Batch size -> milliseconds per decode step (prefill excluded).
    pub decode_ms_per_step: BTreeMap<usize, f64>,
    /// Batch size -> bytes copied to the host per decode step to choose tokens (ids, log-probs
    /// and block sums on the on-device path; whole logits rows on the host path).
    pub decode_host_bytes_per_step: BTreeMap<usize, f64>,
    /// Tokens (prompt + completion) per second through one training update.
    pub train_tokens_per_s: Option<f64>,
    /// Seconds of `Algorithm::prepare` (POPO's no-graph target forward) for the same batch.
    pub prepare_s: Option<f64>,
    /// Peak resident memory of the process (CPU) in MB.
    pub peak_mem_mb: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Reproducible random token ids in `0..vocab`, avoiding the ids in `avoid` (EOS and friends).
fn random_ids(
    n: usize,
    vocab: usize,
    avoid: &[u32],
    rng: &mut crate::data::SplitMix64,
) -> Vec<u32> {
    (0..n)
        .map(|_| loop {
            let t = rng.below(vocab as u64) as u32;
            if !avoid.contains(&t) {
                break t;
            }
        })
        .collect()
}

/// Seconds of one `generate` call of `n` samples of each prompt, `new` tokens each, and the
/// host bytes per token choice it moved.
fn time_generate(
    policy: &LmPolicy,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    n: usize,
    new: usize,
    seed: u64,
    host_sampling: bool,
) -> Result<(f64, f64)> {
    let params = SamplingParams {
        n,
        temperature: 1.0,
        max_new_tokens: new,
        seed,
        ..Default::default()
    };
    let before = decode_stats();
    let t = Instant::now();
    let generate = || policy.generate(prompts, &params, tokenizer);
    let out = if host_sampling {
        with_host_sampling(generate)?
    } else {
        generate()?
    };
    let secs = t.elapsed().as_secs_f64();
    let after = decode_stats();
    ensure!(
        out.iter().all(|c| c.tokens.len() == new),
        "a row stopped early: every row must run to {new} tokens"
    );
    let steps = (after.steps - before.steps).max(1);
    Ok((
        secs,
        (after.host_bytes - before.host_bytes) as f64 / steps as f64,
    ))
}

pub fn run(
    policy: &LmPolicy,
    tokenizer: &Tokenizer,
    device: &Device,
    cfg: &BenchConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport> {
    ensure!(cfg.repeats >= 1, "repeats must be at least 1");
    ensure!(cfg.new_tokens >= 2, "new tokens must be at least 2");
    ensure!(cfg.group_size >= 1, "group size must be at least 1");
    for &b in &cfg.batches {
        ensure!(
            b <= cfg.group_size || b % cfg.group_size == 0,
            "decode batch {b} is not a whole number of groups of {}",
            cfg.group_size
        );
    }
    let vocab = policy.vocab_size();
    let avoid: Vec<u32> = tokenizer.eos_token_id().into_iter().collect();
    let mut rng = crate::data::SplitMix64(cfg.seed);
    let mut report = BenchReport {
        model: String::new(),
        device: format!("{device:?}"),
        dtype: format!("{:?}", policy.dtype()).to_lowercase(),
        group_size: cfg.group_size,
        decode_tokens_per_s: BTreeMap::new(),
        decode_ms_per_step: BTreeMap::new(),
        decode_host_bytes_per_step: BTreeMap::new(),
        train_tokens_per_s: None,
        prepare_s: None,
        peak_mem_mb: 0.0,
    };
    for &b in &cfg.batches {
        progress(&format!("decode, batch {b}"));
        let n = cfg.group_size.min(b);
        let prompts: Vec<Vec<u32>> = (0..b / n)
            .map(|_| random_ids(cfg.prompt_len, vocab, &avoid, &mut rng))
            .collect();
        let host = cfg.host_sampling;
        time_generate(policy, tokenizer, &prompts, n, 2, cfg.seed, host)?; // warm-up
        let mut full = Vec::new();
        let mut one = Vec::new();
        let mut host_bytes = 0.0;
        for r in 0..cfg.repeats {
            let seed = cfg.seed + r as u64;
            let (secs, bytes) =
                time_generate(policy, tokenizer, &prompts, n, cfg.new_tokens, seed, host)?;
            full.push(secs);
            host_bytes = bytes;
            one.push(time_generate(policy, tokenizer, &prompts, n, 1, seed, host)?.0);
        }
        report.decode_host_bytes_per_step.insert(b, host_bytes);
        let (full, one) = (median(full), median(one));
        let tokens = (b * cfg.new_tokens) as f64;
        report.decode_tokens_per_s.insert(b, tokens / full);
        let step_ms = 1e3 * (full - one).max(0.0) / (cfg.new_tokens - 1) as f64;
        report.decode_ms_per_step.insert(b, step_ms);
    }
    if cfg.train_batch > 0 {
        progress("training update");
        let (prepare, update) = time_update(policy, device, cfg, &avoid, &mut rng)?;
        report.prepare_s = Some(prepare);
        report.train_tokens_per_s = Some((cfg.train_batch * cfg.train_len) as f64 / update);
    }
    report.peak_mem_mb = peak_rss_mb();
    Ok(report)
}

/// (prepare seconds, update seconds), medians over the repeats after a warm-up.
fn time_update(
    policy: &LmPolicy,
    device: &Device,
    cfg: &BenchConfig,
    avoid: &[u32],
    rng: &mut crate::data::SplitMix64,
) -> Result<(f64, f64)> {
    ensure!(cfg.train_len >= 2, "train length must be at least 2");
    // The spec's POPO defaults (not the built-in demo's), as a run on this model would use.
    let tcfg = crate::config::TrainConfig::default();
    let prompt_len = (cfg.train_len / 4).max(1);
    let vocab = policy.vocab_size();
    let group = tcfg.rollout.group_size.min(cfg.train_batch).max(1);
    let rollouts: Vec<Rollout> = (0..cfg.train_batch)
        .map(|i| {
            let completion = random_ids(cfg.train_len - prompt_len, vocab, avoid, rng);
            Rollout {
                group: i / group,
                prompt: random_ids(prompt_len, vocab, avoid, rng),
                sampler_logprobs: vec![-1.0; completion.len()],
                completion,
                reward: 1.0,
                truncated: false,
            }
        })
        .collect();
    let batch = RolloutBatch { rollouts };
    let algo = crate::setup::algorithm(&tcfg, policy, device)?;
    let mut params = Params::new(policy.named_vars(), true)?;
    params.extend(algo.extra_vars())?;
    let width = crate::parallel::micro_batch_width(cfg.cpu_parallel, device);
    let mut learner = Learner::new(params, &tcfg.optim, width, policy.dtype())?;
    let ctx = PrepareCtx {
        policy,
        temperature: 1.0,
        chunk: cfg.micro_batch,
        width,
        pad_id: 0,
        device,
        seed: cfg.seed,
        max_completion_len: cfg.train_len,
    };
    let (mut prepare, mut update) = (Vec::new(), Vec::new());
    for r in 0..=cfg.repeats {
        let t = Instant::now();
        let prep = algo.prepare(&batch, &ctx)?;
        let t_prepare = t.elapsed().as_secs_f64();
        let rows = prep.included();
        let chunks: Vec<&[usize]> = rows.chunks(cfg.micro_batch.max(1)).collect();
        let micro = |k: usize, view: &LearnerView| -> Result<MicroLoss> {
            let mb = batch.seq_batch(chunks[k], 0, device)?;
            MicroLoss::backward(view, policy, &mb, 1.0, cfg.checkpoint, |out| {
                algo.loss(out, &MicroBatch::new(&mb, &prep, chunks[k]))
            })
        };
        let t = Instant::now();
        learner.update(chunks.len(), 1e-6, micro)?;
        let t_update = t.elapsed().as_secs_f64();
        if r > 0 {
            prepare.push(t_prepare);
            update.push(t_update);
        }
    }
    Ok((median(prepare), median(update)))
}

/// The process's peak resident set (Linux `VmHWM`), in MB; 0 where it cannot be read.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

impl BenchReport {
    /// The human-readable form of the report.
    pub fn table(&self) -> String {
        let mut s = format!(
            "model {}  device {}  dtype {}  samples per prompt {}\n\n| decode batch | tokens/s | ms/step | host bytes/step |\n|---|---|---|---|\n",
            self.model, self.device, self.dtype, self.group_size
        );
        for (b, tps) in &self.decode_tokens_per_s {
            let ms = self.decode_ms_per_step.get(b).copied().unwrap_or(f64::NAN);
            let bytes = self
                .decode_host_bytes_per_step
                .get(b)
                .copied()
                .unwrap_or(f64::NAN);
            s.push_str(&format!("| {b} | {tps:.1} | {ms:.2} | {bytes:.0} |\n"));
        }
        if let (Some(t), Some(p)) = (self.train_tokens_per_s, self.prepare_s) {
            s.push_str(&format!(
                "\ntraining update: {t:.1} tokens/s (POPO target forward: {p:.2} s)\n"
            ));
        }
        s.push_str(&format!("peak memory: {:.0} MB\n", self.peak_mem_mb));
        s
    }
}
