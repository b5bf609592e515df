//! The presets and the built-in demo's defaults, as (dotted key, value) layers over the defaults.

use anyhow::{bail, Result};
use toml::Value;

/// The presets (docs/guide.md, "Presets"; the losses they select in docs/algorithms.md).
pub const PRESETS: &[&str] = &[
    "popo",
    "grpo",
    "dr_grpo",
    "dapo",
    "raft",
    "nsr",
    "w_reinforce",
];

/// The (key, value) overrides a preset applies over the defaults.
pub fn preset_overrides(name: &str) -> Result<Vec<(&'static str, Value)>> {
    let s = |v: &str| Value::String(v.to_string());
    Ok(match name {
        "popo" => vec![
            ("algo.name", s("popo")),
            ("algo.weight_mode", s("softmax")),
            ("algo.alpha", Value::Float(0.1)),
            ("algo.beta_ent", Value::Float(0.01)),
            ("algo.tau", Value::Float(0.995)),
            ("algo.predictor", Value::Boolean(true)),
        ],
        "grpo" => vec![
            ("algo.name", s("grpo")),
            ("algo.advantage", s("grpo")),
            ("algo.loss_agg", s("seq-mean-token-mean")),
            ("algo.eps_low", Value::Float(0.2)),
            ("algo.eps_high", Value::Float(0.2)),
            ("algo.beta_kl", Value::Float(0.0)),
        ],
        "dr_grpo" => vec![
            ("algo.name", s("grpo")),
            ("algo.advantage", s("dr_grpo")),
            ("algo.loss_agg", s("seq-mean-token-sum-norm")),
            ("algo.eps_low", Value::Float(0.2)),
            ("algo.eps_high", Value::Float(0.2)),
            ("algo.beta_kl", Value::Float(0.0)),
        ],
        "dapo" => vec![
            ("algo.name", s("grpo")),
            ("algo.advantage", s("grpo")),
            ("algo.loss_agg", s("token-mean")),
            ("algo.eps_low", Value::Float(0.2)),
            ("algo.eps_high", Value::Float(0.28)),
            ("algo.beta_kl", Value::Float(0.0)),
            ("rollout.dynamic_sampling", Value::Boolean(true)),
            ("reward.overlong_shaping", Value::Boolean(true)),
        ],
        "raft" => vec![
            ("algo.name", s("raft")),
            ("algo.weight_mode", s("uniform")),
            ("algo.alpha", Value::Float(0.0)),
            ("algo.beta_ent", Value::Float(0.0)),
            ("algo.predictor", Value::Boolean(false)),
        ],
        // docs/algorithms.md, "Negative-sample controls": one REINFORCE loss, a_i = -1 for negatives
        // and lambda for positives.
        "nsr" => vec![
            ("algo.name", s("reinforce")),
            ("algo.psr_weight", Value::Float(0.0)),
        ],
        "w_reinforce" => vec![
            ("algo.name", s("reinforce")),
            ("algo.psr_weight", Value::Float(0.1)),
        ],
        other => bail!(
            "unknown preset `{other}` (expected one of: {})",
            PRESETS.join(", ")
        ),
    })
}

/// Overrides applied to the defaults for the built-in CPU demo (no model and no dataset given):
/// a tiny model learns fast, so it needs a far larger learning rate and short completions.
pub fn builtin_demo_overrides() -> Vec<(&'static str, Value)> {
    let int = |v: i64| Value::Integer(v);
    vec![
        // Accuracy holds for about the first half and climbs after, so the run needs both
        // halves; 400 steps fit the demo's time budget on 2 cores (BENCHMARKS.md).
        ("run.steps", int(400)),
        ("run.save_every", int(0)),
        ("run.eval_size", int(200)),
        ("run.probe_every", int(5)),
        // 32 prompts a step: more positives per update than 16, which learned less.
        ("rollout.batch_prompts", int(32)),
        ("rollout.group_size", int(8)),
        ("rollout.max_completion_len", int(32)),
        // DAPO's overlong window, scaled with the short completions (4096 of 20480 in DAPO).
        ("reward.overlong_cache_len", int(8)),
        // With lucky answers no longer rewarded (`reward.check_work`), the spec's T = 1 explores
        // without reinforcing wrong work; lr above ~3e-4 still knocks the small model off its
        // warm-up (BENCHMARKS.md, Trainer), and a 20% warmup eases the fresh optimizer in.
        ("optim.lr", Value::Float(2e-4)),
        ("reward.check_work", Value::Boolean(true)),
        // Micro-batches of 16 run two at a time on 2 cores (`run.cpu_parallel`), as fast as 64
        // and in a third of the memory; the SFT batch of 32 splits in two as well.
        ("optim.micro_batch_size", int(16)),
        ("optim.warmup_ratio", Value::Float(0.2)),
        // The cosine ends at half the peak: the gains come late, and decaying to zero or not at
        // all both did worse than half.
        ("optim.min_lr_ratio", Value::Float(0.5)),
        ("algo.predictor_hidden", int(128)),
        // One-digit operands, 2-3 of them: learnable by a 0.8M-parameter char model in minutes.
        ("task.sft.max_digits", int(1)),
        ("task.sft.max_operands", int(3)),
        ("task.rl.max_digits", int(1)),
        // 235 steps start RL inside the 10-40% accuracy band where positive-only learning has
        // both right and wrong groups. The warm-up ends on the steep part of its learning
        // curve, so a few steps more or fewer move the start out of the band.
        ("sft.steps", int(235)),
        ("sft.lr", Value::Float(2e-3)),
        ("sft.batch_size", int(32)),
        ("data.max_prompt_len", int(64)),
        ("data.template", Value::String("plain".into())),
    ]
}
