//! One TOML-serde config holding every training setting.
//!
//! Resolution order (later wins): built-in defaults (docs/algorithms.md; the CPU demo defaults when
//! neither a model nor a dataset is given) -> preset named in the file -> config file -> preset
//! given as `--preset` -> `--set key=value` overrides. An explicit `--preset` beats the file, so
//! `--config <run>/config.toml --preset raft` runs RAFT even though a resolved config pins every key.
//! Every key of a user layer is checked against the defaults, so a typo is an error naming the key.
//! The resolved config is written to `config.toml` in the run directory.

pub use crate::data::PromptTemplate;
pub use crate::params::MasterWeights;
use anyhow::{bail, Context, Result};
use candle_core::DType;
use serde::{Deserialize, Serialize};
use std::path::Path;
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

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Name of the preset the config was built from (informational; `--preset` selects it).
    pub preset: String,
    pub run: RunConfig,
    pub model: ModelSection,
    pub data: DataSection,
    pub rollout: RolloutConfig,
    pub reward: RewardConfig,
    pub optim: OptimConfig,
    pub algo: AlgoConfig,
    pub sft: SftConfig,
    /// The built-in arithmetic task (used when `data.path` is empty).
    pub task: crate::task::TaskConfig,
    /// The built-in tiny model's shape (used when `model.path` is empty).
    pub tiny_model: crate::tiny::TinyModel,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Run directory. Empty: `runs/<preset>-<unix time>`.
    pub out_dir: String,
    /// Seed of every random stream: sampling, shuffling, noise, the built-in model's weights.
    pub seed: u64,
    /// Number of rollout steps (each does `algo.num_iterations` optimizer updates).
    pub steps: usize,
    /// Checkpoint every N steps (0: only at the end and on interrupt).
    pub save_every: usize,
    /// Keep the last N checkpoints.
    pub keep_last: usize,
    /// Completions written to samples.jsonl per step.
    pub samples_per_step: usize,
    /// Implicit-negative probe every K steps (0: off).
    pub probe_every: usize,
    /// Held-out negatives (and positives) per probe.
    pub probe_size: usize,
    /// Stop after this many consecutive steps with a NaN/Inf loss or gradient.
    pub max_nonfinite_in_row: usize,
    /// Held-out evaluation every N steps (0: only before and after training).
    pub eval_every: usize,
    /// Held-out problems evaluated (greedy); 0 disables evaluation.
    pub eval_size: usize,
    /// At the end of a run, this many samples per held-out problem at T = 1, reported as
    /// `eval/pass@k` (k = 1, 2, 4, ... up to it) and `eval/avg@n`; 0 = off.
    pub final_pass_at_k_samples: usize,
    /// The first N held-out problems get those samples (0: all `run.eval_size` of them): pass@k
    /// at large k costs many samples per problem, greedy accuracy one.
    pub pass_at_k_problems: usize,
    /// `cpu` or `cuda` (`cuda:N`).
    pub device: DeviceName,
    /// Compute dtype of the policy: `auto` (bf16 on CUDA, f32 on CPU), `f32`, `bf16`, `f16`.
    pub dtype: ComputeDtype,
    /// Mixed precision: `auto` (an f32 master copy of the weights, updated by the optimizer,
    /// whenever the compute dtype is bf16 or f16; the EMA target likewise), `f32` (the same),
    /// `none` (updates are rounded into the compute weights: most are lost at small lr).
    pub master_weights: MasterWeights,
    /// Write TensorBoard event files next to metrics.jsonl.
    pub tensorboard: bool,
    /// How CPU cores are used: `ops` (candle splits every op across them), `micro_batches` (one
    /// core per micro-batch, several side by side; for small models), or `auto` (micro-batches for
    /// the built-in tiny model, ops otherwise). The update is the same either way.
    pub cpu_parallel: CpuParallel,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// HF model directory (or hub id). Empty: the built-in tiny model.
    pub path: String,
    /// dtype of saved checkpoints: `same` (the compute dtype), `f32`, `bf16`, `f16`.
    pub save_dtype: SaveDtype,
    /// LoRA adapters (`r = 0`: off, full fine-tuning).
    pub lora: crate::lora::LoraSection,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// JSONL training set. Empty: the built-in synthetic arithmetic task.
    pub path: String,
    /// JSONL held-out set for evaluation. Empty: the built-in task's held-out split, or no
    /// held-out evaluation at all when `path` is set.
    pub eval_path: String,
    /// The JSONL field holding the problem text.
    pub problem_field: String,
    /// The JSONL field holding the gold answer.
    pub answer_field: String,
    /// `qwen_math` | `r1_zero` | `chat` (the tokenizer's template) | `plain`.
    pub template: PromptTemplate,
    /// Prompts longer than this (in tokens) are counted and skipped.
    pub max_prompt_len: usize,
    /// Draw training prompts in a seeded shuffled order (false: file order).
    pub shuffle: bool,
    /// Count and skip lines that do not parse instead of failing.
    pub skip_invalid: bool,
}

// No deny_unknown_fields here: serde cannot combine it with `flatten`; `check_keys` refuses
// unknown keys of every user layer before serde sees them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RolloutConfig {
    /// B: prompts per step.
    pub batch_prompts: usize,
    /// G: completions per prompt.
    pub group_size: usize,
    /// Sampling temperature; the log-probs the losses use are taken at it.
    pub temperature: f64,
    /// Nucleus sampling (1: off).
    pub top_p: f64,
    /// Sample among the k most likely tokens (0: off).
    pub top_k: usize,
    /// Most tokens per completion; longer ones are cut (`train/truncated_ratio`).
    pub max_completion_len: usize,
    /// DAPO: drop groups whose rewards are all equal and draw more prompts.
    pub dynamic_sampling: bool,
    /// DAPO: bound on extra rollout rounds per step.
    pub max_sampling_tries: usize,
    /// The engine keys (`rollout.engine`, `rollout.servers`, ...), in `[rollout]` itself.
    #[serde(flatten)]
    pub engine: crate::engine::config::EngineConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RewardConfig {
    /// `tau_r`: a completion is positive when its reward exceeds this.
    pub positive_threshold: f64,
    /// Score only completions with a `\boxed{}` (the spec's default answer: the last one).
    /// False lets the verifier fall back to other extractions (final-answer phrases, last number).
    pub require_boxed: bool,
    /// Built-in task only: a right answer earns its reward only when every worked step
    /// (`a op b=c`) is true arithmetic and the last step's result is the boxed answer. Without it
    /// the tiny model's lucky guesses (` 1+1=3. \boxed{1}`) count as positives, and RL learns
    /// to guess. Accuracy still counts the answer alone.
    pub check_work: bool,
    /// Optional format reward weight (0 = off).
    pub format_weight: f64,
    /// DAPO overlong shaping: linear penalty inside the last `overlong_cache_len` tokens.
    pub overlong_shaping: bool,
    /// Length of that window, in tokens (below `rollout.max_completion_len`).
    pub overlong_cache_len: usize,
    /// The penalty at the length limit.
    pub overlong_penalty: f64,
    /// DAPO overlong filtering: truncated completions are masked out of the loss.
    pub overlong_filter: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate of AdamW.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// AdamW first-moment decay.
    pub beta1: f64,
    /// AdamW second-moment decay.
    pub beta2: f64,
    /// AdamW epsilon.
    pub eps: f64,
    /// Share of total updates spent in linear warmup, then cosine decay.
    pub warmup_ratio: f64,
    /// Final learning rate as a share of `lr`.
    pub min_lr_ratio: f64,
    /// Global-norm gradient clip (0: off).
    pub grad_clip: f64,
    /// Sequences per forward/backward; gradients are accumulated over micro-batches.
    pub micro_batch_size: usize,
    /// Recompute each layer's activations during the backward pass instead of keeping them all:
    /// peak activation memory of one layer, for about one more forward of compute. For long
    /// completions and large micro-batches.
    pub gradient_checkpointing: bool,
    /// f16 compute only: the first dynamic loss scale (halved on every overflow, doubled after
    /// 2000 clean updates), as `torch.amp.GradScaler(init_scale=...)`.
    pub init_loss_scale: f64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AlgoName {
    Popo,
    Grpo,
    Raft,
    /// REINFORCE with a per-completion coefficient (the `nsr` and `w_reinforce` presets).
    Reinforce,
}

/// `run.dtype`: the policy's compute dtype.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDtype {
    /// bf16 on CUDA, f32 on CPU.
    Auto,
    F32,
    Bf16,
    F16,
}

impl ComputeDtype {
    pub fn resolve(self, device: &candle_core::Device) -> DType {
        match self {
            ComputeDtype::Auto if device.is_cuda() => DType::BF16,
            ComputeDtype::Auto | ComputeDtype::F32 => DType::F32,
            ComputeDtype::Bf16 => DType::BF16,
            ComputeDtype::F16 => DType::F16,
        }
    }
}

/// `model.save_dtype`: the dtype of the HF weights in checkpoints.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SaveDtype {
    /// The compute dtype.
    Same,
    F32,
    Bf16,
    F16,
}

impl SaveDtype {
    pub fn resolve(self, compute: DType) -> DType {
        match self {
            SaveDtype::Same => compute,
            SaveDtype::F32 => DType::F32,
            SaveDtype::Bf16 => DType::BF16,
            SaveDtype::F16 => DType::F16,
        }
    }
}

/// `run.device`: `cpu`, `cuda` (device 0) or `cuda:N`, written as those strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceName {
    Cpu,
    Cuda(usize),
}

impl std::fmt::Display for DeviceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceName::Cpu => f.write_str("cpu"),
            DeviceName::Cuda(0) => f.write_str("cuda"),
            DeviceName::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl std::str::FromStr for DeviceName {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceName::Cpu),
            "cuda" => Ok(DeviceName::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(DeviceName::Cuda)
                .ok_or_else(|| format!("unknown device `{s}` (expected cpu, cuda or cuda:N)")),
        }
    }
}

impl Serialize for DeviceName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl DeviceName {
    pub fn open(self) -> Result<candle_core::Device> {
        crate::lm::device(&self.to_string())
    }
}

/// `run.cpu_parallel` (see `crate::parallel`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CpuParallel {
    /// Micro-batches side by side when candle runs ops on one core, ops split otherwise.
    Auto,
    /// candle splits each op across the cores; micro-batches run one after another.
    Ops,
    /// One core per micro-batch, several at a time.
    MicroBatches,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WeightMode {
    Softmax,
    Uniform,
}

/// `algo.entropy_scope`: which completion tokens POPO's entropy bonus averages over.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EntropyScope {
    /// Every completion token of the step, positives and negatives (the spec's item 7); a step
    /// with no positive trains on the entropy bonus alone.
    All,
    /// The tokens of the groups that hold at least one positive: a group (and a step) with no
    /// positive contributes nothing and is left out of the training forward.
    PositiveGroups,
    /// The positive completions' tokens only.
    Positives,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FeaturePool {
    Mean,
    Last,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageMode {
    Grpo,
    DrGrpo,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum LossAgg {
    #[serde(rename = "token-mean")]
    TokenMean,
    #[serde(rename = "seq-mean-token-mean")]
    SeqMeanTokenMean,
    #[serde(rename = "seq-mean-token-sum-norm")]
    SeqMeanTokenSumNorm,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlgoConfig {
    /// Loss family: `popo`, `grpo` (also dr_grpo / dapo through options), `raft` or `reinforce`
    /// (nsr / w_reinforce through `psr_weight`).
    pub name: AlgoName,
    /// Optimizer updates per rollout batch.
    pub num_iterations: usize,
    // --- POPO ---
    /// Weights over a group's positives: `softmax` (of length-normalised log-probs) or `uniform`.
    pub weight_mode: WeightMode,
    /// T_w of the softmax weights.
    pub weight_temperature: f64,
    /// Divide each weight by its completion's length, then renormalise.
    pub length_normalize_weights: bool,
    /// Weight of the similarity term.
    pub alpha: f64,
    /// Weight of the entropy bonus.
    pub beta_ent: f64,
    /// Tokens the entropy bonus covers: `all` (the spec), `positive_groups` (groups with a
    /// positive; the reference code's rule, which skips a micro-batch without a positive, made
    /// independent of the micro-batch split) or `positives`.
    pub entropy_scope: EntropyScope,
    /// EMA momentum of the target: xi <- tau xi + (1 - tau) theta.
    pub tau: f64,
    /// BYOL predictor on the online branch (false: identity).
    pub predictor: bool,
    /// L: number of Linear layers of the predictor.
    pub predictor_layers: usize,
    /// Hidden width of the predictor.
    pub predictor_hidden: usize,
    /// sigma of the N(0, sigma^2) noise added to target features.
    pub sim_noise_std: f64,
    /// Features pooled over the completion tokens: `mean` or `last`.
    pub feature_pool: FeaturePool,
    /// c of the truncated ratio sg(min(rho, c)) used when num_iterations > 1.
    pub ratio_clip: f64,
    // --- GRPO family ---
    /// `grpo` (group-normalised) or `dr_grpo` (centred) advantages.
    pub advantage: AdvantageMode,
    /// `token-mean`, `seq-mean-token-mean` or `seq-mean-token-sum-norm`.
    pub loss_agg: LossAgg,
    /// Lower clip range of the ratio: clip(rho, 1 - eps_low, 1 + eps_high).
    pub eps_low: f64,
    /// Upper clip range of the ratio (DAPO's clip-higher raises it).
    pub eps_high: f64,
    /// k3 KL to a frozen reference; 0 means no reference model at all.
    pub beta_kl: f64,
    // --- NSR / W-REINFORCE ---
    /// lambda: the REINFORCE coefficient of positives (negatives have -1). 0 is `nsr`
    /// (negatives only), 0.1 is `w_reinforce`.
    pub psr_weight: f64,
}

/// Supervised warm-up before RL (used by the built-in demo to start RL at 10-40% accuracy).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    /// Optimizer steps of SFT before RL (0: none).
    pub steps: usize,
    /// Peak learning rate of the warm-up (cosine-decayed to a tenth).
    pub lr: f64,
    /// Sequences per warm-up step.
    pub batch_size: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            preset: "popo".into(),
            run: RunConfig::default(),
            model: ModelSection::default(),
            data: DataSection::default(),
            rollout: RolloutConfig::default(),
            reward: RewardConfig::default(),
            optim: OptimConfig::default(),
            algo: AlgoConfig::default(),
            sft: SftConfig::default(),
            task: Default::default(),
            tiny_model: Default::default(),
        }
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            out_dir: String::new(),
            seed: 0,
            steps: 200,
            save_every: 50,
            keep_last: 2,
            samples_per_step: 4,
            probe_every: 10,
            probe_size: 4,
            max_nonfinite_in_row: 5,
            eval_every: 0,
            eval_size: 200,
            final_pass_at_k_samples: 64,
            pass_at_k_problems: 0,
            device: DeviceName::Cpu,
            dtype: ComputeDtype::Auto,
            master_weights: MasterWeights::Auto,
            tensorboard: true,
            cpu_parallel: CpuParallel::Auto,
        }
    }
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            path: String::new(),
            save_dtype: SaveDtype::Same,
            lora: Default::default(),
        }
    }
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            path: String::new(),
            eval_path: String::new(),
            problem_field: "problem".into(),
            answer_field: "answer".into(),
            template: PromptTemplate::QwenMath,
            max_prompt_len: 512,
            shuffle: true,
            skip_invalid: false,
        }
    }
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            batch_prompts: 8,
            group_size: 8,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_completion_len: 512,
            dynamic_sampling: false,
            max_sampling_tries: 4,
            engine: Default::default(),
        }
    }
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self {
            positive_threshold: 0.0,
            require_boxed: true,
            check_work: false,
            format_weight: 0.0,
            overlong_shaping: false,
            overlong_cache_len: 64,
            overlong_penalty: 1.0,
            overlong_filter: false,
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-6,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_ratio: 0.1,
            min_lr_ratio: 0.0,
            grad_clip: 1.0,
            micro_batch_size: 8,
            gradient_checkpointing: false,
            init_loss_scale: 65536.0,
        }
    }
}

impl Default for AlgoConfig {
    fn default() -> Self {
        Self {
            name: AlgoName::Popo,
            num_iterations: 1,
            weight_mode: WeightMode::Softmax,
            weight_temperature: 1.0,
            length_normalize_weights: false,
            alpha: 0.1,
            beta_ent: 0.01,
            entropy_scope: EntropyScope::All,
            tau: 0.995,
            predictor: true,
            predictor_layers: 2,
            predictor_hidden: 1024,
            sim_noise_std: 0.02,
            feature_pool: FeaturePool::Mean,
            ratio_clip: 1.28,
            advantage: AdvantageMode::Grpo,
            loss_agg: LossAgg::SeqMeanTokenMean,
            eps_low: 0.2,
            eps_high: 0.2,
            beta_kl: 0.0,
            psr_weight: 0.1,
        }
    }
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            steps: 0,
            lr: 1e-4,
            batch_size: 16,
        }
    }
}

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

/// The dotted key of the `key = value` line holding byte `offset` of a serialized config, so that
/// a value serde rejects (an unknown enum variant, a wrong type) is reported with its key.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let key = text[line_start..].lines().next()?.split_once('=')?.0.trim();
    let section = text[..line_start]
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']'));
    Some(match section {
        Some(sec) => format!("{sec}.{key}"),
        None => key.to_string(),
    })
}

/// Where the value a serde error quotes (`unknown variant `x``) is assigned: errors inside the
/// flattened `[rollout]` engine keys come with the whole table's span, not the key's.
fn value_offset(text: &str, message: &str) -> Option<usize> {
    let value = message.split('`').nth(1)?;
    text.find(&format!("= \"{value}\""))
}

/// Builds a config from layers. Used by `popo train` and tests.
#[derive(Default)]
pub struct ConfigBuilder {
    preset: Option<String>,
    file: Option<(String, Value)>,
    sets: Vec<(String, Value)>,
}

impl ConfigBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn preset(mut self, name: Option<&str>) -> Self {
        self.preset = name.map(str::to_string);
        self
    }

    /// A TOML config file (any subset of the keys).
    pub fn file(mut self, path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let value: Value = toml::from_str(&text)
            .with_context(|| format!("parsing config file {}", path.display()))?;
        self.file = Some((path.display().to_string(), value));
        Ok(self)
    }

    /// A `key=value` override; the value is parsed as TOML (bare words are strings).
    pub fn set(mut self, assignment: &str) -> Result<Self> {
        let (key, raw) = assignment
            .split_once('=')
            .with_context(|| format!("--set `{assignment}`: expected key=value"))?;
        let key = key.trim();
        if key.is_empty() {
            bail!("--set `{assignment}`: empty key");
        }
        let word =
            |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !key.split('.').all(word) {
            bail!("--set `{assignment}`: `{key}` is not a config key (expected e.g. optim.lr)");
        }
        self.sets.push((key.to_string(), parse_value(raw.trim())));
        Ok(self)
    }

    /// Sets a key directly (CLI flags such as `--model` go through here).
    pub fn set_value(mut self, key: &str, value: Value) -> Self {
        self.sets.push((key.to_string(), value));
        self
    }

    /// The built-in task at test scale, writing to `out_dir`: the micro model
    /// (`TinyModel::micro`), 3 prompts x 4 samples of at most 12 tokens, 4 steps with no
    /// warm-up, a probe and a checkpoint every 2 steps. Tests add their own `set`s and preset.
    pub fn tiny_for_tests(out_dir: &Path) -> Self {
        let micro =
            Value::try_from(crate::tiny::TinyModel::micro()).expect("TinyModel serializes to TOML");
        let mut b = Self::new()
            .set_value("tiny_model", micro)
            .set_value("run.out_dir", Value::String(out_dir.display().to_string()));
        for (key, raw) in [
            ("task.n_sft", "64"),
            ("task.n_rl", "64"),
            ("task.n_eval", "16"),
            ("run.eval_size", "8"),
            // Four samples a problem: pass@1, 2, 4 at the end of every test run, in a blink.
            ("run.final_pass_at_k_samples", "4"),
            ("run.steps", "4"),
            ("run.probe_every", "2"),
            ("run.probe_size", "2"),
            ("run.save_every", "2"),
            ("rollout.batch_prompts", "3"),
            ("rollout.group_size", "4"),
            ("rollout.max_completion_len", "12"),
            // DAPO's overlong window must fit inside the completion limit.
            ("reward.overlong_cache_len", "4"),
            ("optim.micro_batch_size", "5"),
            ("algo.predictor_hidden", "16"),
            ("sft.steps", "0"),
        ] {
            b = b.set_value(key, parse_value(raw));
        }
        b
    }

    pub fn build(self) -> Result<TrainConfig> {
        let defaults = Value::try_from(TrainConfig::default()).context("serializing defaults")?;
        let keys = settable(&defaults);
        // The user layers: the file, and the --set overrides (which see an explicit preset).
        let mut file = Value::Table(Default::default());
        if let Some((name, v)) = &self.file {
            check_keys(&keys, v, "", &format!("config file {name}"))?;
            merge(&mut file, v.clone());
        }
        let mut sets = Value::Table(Default::default());
        for (key, v) in &self.sets {
            let v = coerce_to_default(&keys, key, v.clone());
            let layer = dotted(key, v);
            check_keys(&keys, &layer, "", &format!("--set `{key}`"))?;
            merge(&mut sets, layer);
        }
        let mut user = file.clone();
        merge(&mut user, sets.clone());
        let preset = self
            .preset
            .clone()
            .or_else(|| {
                user.get("preset")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "popo".into());
        let builtin = |section: &str| {
            user.get(section)
                .and_then(|s| s.get("path"))
                .and_then(|p| p.as_str())
                .is_none_or(str::is_empty)
        };
        let mut merged = defaults;
        if builtin("model") && builtin("data") {
            for (k, v) in builtin_demo_overrides() {
                merge(&mut merged, dotted(k, v));
            }
        }
        // An explicit --preset sits between the file and --set; otherwise under both.
        let explicit = self.preset.is_some();
        if explicit {
            merge(&mut merged, file);
        }
        for (k, v) in preset_overrides(&preset)? {
            merge(&mut merged, dotted(k, v));
        }
        merge(&mut merged, if explicit { sets } else { user });
        merge(&mut merged, dotted("preset", Value::String(preset)));
        complete_task_eval(&mut merged);
        let text = toml::to_string(&merged).context("serializing merged config")?;
        let cfg: TrainConfig = toml::from_str(&text).map_err(|e| {
            let key = e
                .span()
                .and_then(|span| key_at(&text, span.start))
                .or_else(|| key_at(&text, value_offset(&text, e.message())?));
            match key {
                Some(key) => anyhow::anyhow!("invalid config: `{key}`: {}", e.message()),
                None => anyhow::anyhow!("invalid config: {}", e.message()),
            }
        })?;
        cfg.validate()?;
        cfg.task.validate()?;
        Ok(cfg)
    }
}

impl TrainConfig {
    /// Reads a resolved config (e.g. a run directory's config.toml).
    pub fn from_file(path: &Path) -> Result<Self> {
        ConfigBuilder::new().file(path)?.build()
    }

    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string(self)?)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_toml()?).with_context(|| format!("writing {}", path.display()))
    }

    /// Range checks with messages naming the key.
    pub fn validate(&self) -> Result<()> {
        self.model.lora.validate()?;
        let a = &self.algo;
        let checks: &[(bool, &str)] = &[
            (
                self.rollout.group_size >= 1,
                "rollout.group_size must be >= 1",
            ),
            (
                self.rollout.batch_prompts >= 1,
                "rollout.batch_prompts must be >= 1",
            ),
            (
                self.rollout.temperature > 0.0,
                "rollout.temperature must be > 0",
            ),
            (
                self.rollout.top_p > 0.0 && self.rollout.top_p <= 1.0,
                "rollout.top_p must be in (0, 1]",
            ),
            (
                self.rollout.max_completion_len >= 1,
                "rollout.max_completion_len must be >= 1",
            ),
            (
                self.optim.micro_batch_size >= 1,
                "optim.micro_batch_size must be >= 1",
            ),
            (
                !self.reward.overlong_shaping
                    || self.reward.overlong_cache_len < self.rollout.max_completion_len,
                "reward.overlong_cache_len must be below rollout.max_completion_len when \
                 reward.overlong_shaping is on (else DAPO's length penalty hits every completion)",
            ),
            (self.optim.lr >= 0.0, "optim.lr must be >= 0"),
            (
                (0.0..=1.0).contains(&self.optim.warmup_ratio),
                "optim.warmup_ratio must be in [0, 1]",
            ),
            ((0.0..=1.0).contains(&a.tau), "algo.tau must be in [0, 1]"),
            (
                a.weight_temperature > 0.0,
                "algo.weight_temperature must be > 0",
            ),
            (a.num_iterations >= 1, "algo.num_iterations must be >= 1"),
            (
                a.predictor_layers >= 1,
                "algo.predictor_layers must be >= 1",
            ),
            (a.sim_noise_std >= 0.0, "algo.sim_noise_std must be >= 0"),
            (
                a.eps_low >= 0.0 && a.eps_low < 1.0,
                "algo.eps_low must be in [0, 1)",
            ),
            (a.eps_high >= 0.0, "algo.eps_high must be >= 0"),
            (a.beta_kl >= 0.0, "algo.beta_kl must be >= 0"),
            (a.ratio_clip > 0.0, "algo.ratio_clip must be > 0"),
            (
                a.psr_weight >= 0.0 && a.psr_weight.is_finite(),
                "algo.psr_weight must be >= 0 and finite",
            ),
            (self.run.keep_last >= 1, "run.keep_last must be >= 1"),
            (
                self.optim.init_loss_scale >= 1.0,
                "optim.init_loss_scale must be >= 1",
            ),
        ];
        for (ok, msg) in checks {
            if !ok {
                bail!("invalid config: {msg}");
            }
        }
        self.rollout
            .engine
            .validate(&self.model.path, self.model.lora.enabled())
    }
}

/// `1e-5` -> float, `true` -> bool, `[1, 2]` -> array, `foo.jsonl` -> string.
fn parse_value(raw: &str) -> Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or(Value::String(raw.into())),
        Err(_) => Value::String(raw.trim_matches('"').to_string()),
    }
}

/// `--set model.path=123` means the string "123"; `--set optim.lr=1` means the float 1.0.
fn coerce_to_default(defaults: &Value, key: &str, v: Value) -> Value {
    let mut cur = defaults;
    for part in key.split('.') {
        match cur.get(part) {
            Some(next) => cur = next,
            None => return v,
        }
    }
    match (cur, v) {
        (Value::String(_), Value::Integer(i)) => Value::String(i.to_string()),
        (Value::String(_), Value::Float(f)) => Value::String(f.to_string()),
        (Value::String(_), Value::Boolean(b)) => Value::String(b.to_string()),
        (Value::Float(_), Value::Integer(i)) => Value::Float(i as f64),
        (_, v) => v,
    }
}

/// What a config may set: the defaults' keys, and `task.eval`, which the defaults leave out (the
/// held-out split follows `task.rl` unless told otherwise) but which takes `task.rl`'s keys.
fn settable(defaults: &Value) -> Value {
    let mut keys = defaults.clone();
    if let Some(rl) = defaults.get("task").and_then(|t| t.get("rl")) {
        merge(&mut keys, dotted("task.eval", rl.clone()));
    }
    keys
}

/// A `task.eval` given in part takes its other keys from `task.rl`.
fn complete_task_eval(merged: &mut Value) {
    let Some(task) = merged.get_mut("task").and_then(Value::as_table_mut) else {
        return;
    };
    if let (Some(rl), Some(eval)) = (task.get("rl").cloned(), task.get("eval").cloned()) {
        let mut full = rl;
        merge(&mut full, eval);
        task.insert("eval".to_string(), full);
    }
}

fn dotted(key: &str, v: Value) -> Value {
    key.rsplit('.').fold(v, |acc, part| {
        let mut t = toml::Table::new();
        t.insert(part.to_string(), acc);
        Value::Table(t)
    })
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Table(b), Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn check_keys(defaults: &Value, layer: &Value, prefix: &str, origin: &str) -> Result<()> {
    let (Value::Table(d), Value::Table(l)) = (defaults, layer) else {
        return Ok(());
    };
    for (k, v) in l {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match d.get(k) {
            None => {
                let known: Vec<&str> = d.keys().map(String::as_str).collect();
                bail!(
                    "{origin}: unknown config key `{path}` (known keys here: {})",
                    known.join(", ")
                )
            }
            Some(dv @ Value::Table(_)) => {
                if !v.is_table() {
                    bail!("{origin}: `{path}` is a section, not a value");
                }
                check_keys(dv, v, &path, origin)?;
            }
            Some(_) => {
                if v.is_table() {
                    bail!("{origin}: `{path}` is a value, not a section");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_eval_is_settable_and_takes_its_other_keys_from_task_rl() {
        let cfg = ConfigBuilder::new()
            .set("task.eval.max_digits=3")
            .unwrap()
            .build()
            .unwrap();
        let eval = cfg.task.eval.clone().expect("task.eval was set");
        assert_eq!(eval.max_digits, 3);
        assert_eq!(eval.ops, cfg.task.rl.ops);
        assert_eq!(eval.min_operands, cfg.task.rl.min_operands);
        let err = ConfigBuilder::new()
            .set("task.eval.nope=1")
            .unwrap()
            .build()
            .unwrap_err();
        assert!(format!("{err:#}").contains("task.eval.nope"), "{err:#}");
        assert_eq!(ConfigBuilder::new().build().unwrap().task.eval, None);
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = TrainConfig::default();
        assert_eq!(c.rollout.group_size, 8);
        assert_eq!(c.rollout.temperature, 1.0);
        assert_eq!(c.rollout.max_completion_len, 512);
        assert_eq!(c.optim.lr, 1e-6);
        assert_eq!(c.optim.weight_decay, 0.01);
        assert_eq!(c.optim.warmup_ratio, 0.1);
        assert_eq!(c.optim.grad_clip, 1.0);
        assert_eq!(c.algo.num_iterations, 1);
        assert_eq!(c.algo.alpha, 0.1);
        assert_eq!(c.algo.beta_ent, 0.01);
        assert_eq!(c.algo.tau, 0.995);
        assert_eq!(c.algo.predictor_layers, 2);
        assert_eq!(c.algo.predictor_hidden, 1024);
        assert_eq!(c.algo.sim_noise_std, 0.02);
        assert_eq!(c.algo.weight_temperature, 1.0);
        assert_eq!(c.algo.ratio_clip, 1.28);
        assert_eq!(c.algo.beta_kl, 0.0);
        assert_eq!(c.algo.psr_weight, 0.1);
        assert_eq!(c.run.final_pass_at_k_samples, 64);
    }

    fn real() -> ConfigBuilder {
        ConfigBuilder::new()
            .set("model.path=m")
            .unwrap()
            .set("data.path=d.jsonl")
            .unwrap()
    }

    #[test]
    fn presets_resolve() {
        let c = real().preset(Some("dapo")).build().unwrap();
        assert_eq!(c.algo.name, AlgoName::Grpo);
        assert_eq!(c.algo.loss_agg, LossAgg::TokenMean);
        assert_eq!(c.algo.eps_high, 0.28);
        assert!(c.rollout.dynamic_sampling && c.reward.overlong_shaping);
        let c = real().preset(Some("dr_grpo")).build().unwrap();
        assert_eq!(c.algo.advantage, AdvantageMode::DrGrpo);
        assert_eq!(c.algo.loss_agg, LossAgg::SeqMeanTokenSumNorm);
        let c = real().preset(Some("raft")).build().unwrap();
        assert_eq!(
            (c.algo.name, c.algo.weight_mode),
            (AlgoName::Raft, WeightMode::Uniform)
        );
        assert_eq!(
            (c.algo.alpha, c.algo.beta_ent, c.algo.predictor),
            (0.0, 0.0, false)
        );
        let c = real().preset(Some("nsr")).build().unwrap();
        assert_eq!((c.algo.name, c.algo.psr_weight), (AlgoName::Reinforce, 0.0));
        let c = real().preset(Some("w_reinforce")).build().unwrap();
        assert_eq!((c.algo.name, c.algo.psr_weight), (AlgoName::Reinforce, 0.1));
        let e = real()
            .preset(Some("w_reinforce"))
            .set("algo.psr_weight=-1")
            .unwrap()
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("algo.psr_weight"), "{e}");
        let c = real().preset(Some("grpo")).build().unwrap();
        assert_eq!(c.algo.loss_agg, LossAgg::SeqMeanTokenMean);
        assert_eq!(c.preset, "grpo");
        // Shared settings are identical across presets.
        assert_eq!(c.optim, real().preset(Some("popo")).build().unwrap().optim);
        assert!(real()
            .preset(Some("ppo"))
            .build()
            .unwrap_err()
            .to_string()
            .contains("unknown preset"));
    }

    #[test]
    fn set_overrides_are_typed_and_checked() {
        let c = real()
            .set("optim.lr=3e-5")
            .unwrap()
            .set("algo.weight_mode=uniform")
            .unwrap()
            .set("algo.alpha=0")
            .unwrap()
            .set("algo.predictor=false")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.optim.lr, 3e-5);
        assert_eq!(c.algo.weight_mode, WeightMode::Uniform);
        assert_eq!(c.algo.alpha, 0.0);
        assert!(!c.algo.predictor);
        let e = real()
            .set("algo.alhpa=1")
            .unwrap()
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("algo.alhpa"), "{e}");
        let e = real()
            .set("algo.weight_mode=argmax")
            .unwrap()
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("argmax"), "{e}");
        let e = real()
            .set("algo.tau=2")
            .unwrap()
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("algo.tau"), "{e}");
    }

    #[test]
    fn file_layer_and_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "preset = \"grpo\"\n[model]\npath = \"m\"\n[algo]\nbeta_kl = 0.01\n",
        )
        .unwrap();
        let c = ConfigBuilder::new()
            .file(&p)
            .unwrap()
            .set("algo.eps_high=0.3")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.algo.name, AlgoName::Grpo);
        assert_eq!(c.algo.beta_kl, 0.01);
        assert_eq!(c.algo.eps_high, 0.3);
        // Not the built-in demo: the spec's lr.
        assert_eq!(c.optim.lr, 1e-6);
        let out = dir.path().join("resolved.toml");
        c.save(&out).unwrap();
        assert_eq!(TrainConfig::from_file(&out).unwrap(), c);
        std::fs::write(&p, "[algo]\nfoo = 1\n").unwrap();
        let e = ConfigBuilder::new()
            .file(&p)
            .unwrap()
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("algo.foo") && e.contains("c.toml"), "{e}");
    }

    #[test]
    fn an_explicit_preset_beats_a_resolved_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        let popo = ConfigBuilder::new().build().unwrap();
        std::fs::write(&p, toml::to_string(&popo).unwrap()).unwrap();
        let c = ConfigBuilder::new()
            .preset(Some("raft"))
            .file(&p)
            .unwrap()
            .set("algo.weight_mode=softmax")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.preset, "raft");
        assert_eq!(c.algo.name, AlgoName::Raft);
        assert_eq!(
            (c.algo.alpha, c.algo.beta_ent, c.algo.predictor),
            (0.0, 0.0, false)
        );
        // --set still wins over the preset; other file keys still win over the defaults.
        assert_eq!(c.algo.weight_mode, WeightMode::Softmax);
        assert_eq!(c.optim.lr, popo.optim.lr);
        // Without --preset the file's values stand.
        let c = ConfigBuilder::new().file(&p).unwrap().build().unwrap();
        assert_eq!((c.preset.as_str(), c.algo.alpha), ("popo", 0.1));
    }

    #[test]
    fn a_value_serde_rejects_is_reported_with_its_key() {
        let e = ConfigBuilder::new()
            .set("algo.weight_mode=sharp")
            .unwrap()
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`algo.weight_mode`") && e.contains("sharp"),
            "{e}"
        );
        let e = ConfigBuilder::new()
            .set("task.sft.max_digits=-1")
            .unwrap()
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`task.sft.max_digits`"), "{e}");
        let e = ConfigBuilder::new()
            .set("run.cpu_parallel=threads")
            .unwrap()
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("run.cpu_parallel") && e.contains("threads"),
            "{e}"
        );
        // The typed keys: dtype, device, save dtype and template are enums, errors name the key.
        for (set, key) in [
            ("run.dtype=fp8", "run.dtype"),
            ("run.device=tpu", "run.device"),
            ("run.device=cuda:x", "run.device"),
            ("model.save_dtype=int4", "model.save_dtype"),
            ("data.template=alpaca", "data.template"),
        ] {
            let e = ConfigBuilder::new()
                .set(set)
                .unwrap()
                .build()
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("`{key}`")), "{set}: {e}");
        }
        let c = ConfigBuilder::new()
            .set("run.device=cuda:1")
            .unwrap()
            .set("run.dtype=bf16")
            .unwrap()
            .set("data.template=r1")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            (c.run.device, c.run.dtype, c.data.template),
            (
                DeviceName::Cuda(1),
                ComputeDtype::Bf16,
                PromptTemplate::R1Zero
            )
        );
        let back: TrainConfig = toml::from_str(&c.to_toml().unwrap()).unwrap();
        assert_eq!(back, c, "typed keys round-trip through config.toml");
        let c = ConfigBuilder::new()
            .set("run.cpu_parallel=micro_batches")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.run.cpu_parallel, CpuParallel::MicroBatches);
    }

    #[test]
    fn an_overlong_window_as_long_as_the_completion_is_refused() {
        let c = ConfigBuilder::new().preset(Some("dapo")).build().unwrap();
        assert!(c.reward.overlong_shaping);
        assert!(c.reward.overlong_cache_len < c.rollout.max_completion_len);
        let e = ConfigBuilder::new()
            .preset(Some("dapo"))
            .set("reward.overlong_cache_len=32")
            .unwrap()
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("reward.overlong_cache_len"), "{e}");
    }

    #[test]
    fn builtin_demo_defaults_apply_without_model_and_data() {
        let c = ConfigBuilder::new().build().unwrap();
        assert_eq!(c.optim.lr, 2e-4);
        assert!(c.reward.check_work);
        assert!(c.sft.steps > 0);
        let c = ConfigBuilder::new()
            .set("optim.lr=5e-4")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.optim.lr, 5e-4);
    }
}
