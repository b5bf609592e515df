//! `[run]`: the run directory, seeds, step counts, evaluation cadence, device and dtypes.

use crate::params::MasterWeights;
use anyhow::Result;
use candle_core::DType;
use serde::{Deserialize, Serialize};

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
