//! One TOML-serde config holding every training setting.
//!
//! Resolution order (later wins): built-in defaults (docs/algorithms.md; the CPU demo defaults when
//! neither a model nor a dataset is given) -> preset named in the file -> config file -> preset
//! given as `--preset` -> `--set key=value` overrides. An explicit `--preset` beats the file, so
//! `--config <run>/config.toml --preset raft` runs RAFT even though a resolved config pins every key.
//! Every key of a user layer is checked against the defaults, so a typo is an error naming the key.
//! The resolved config is written to `config.toml` in the run directory.

mod algo;
mod data;
mod layers;
mod model;
mod optim;
mod presets;
mod reward;
mod rollout;
mod run;
mod sft;

pub use crate::data::PromptTemplate;
pub use crate::params::MasterWeights;
pub use algo::{
    AdvantageMode, AlgoConfig, AlgoName, EntropyScope, FeaturePool, LossAgg, WeightMode,
};
pub use data::DataSection;
pub use model::{ModelSection, SaveDtype};
pub use optim::OptimConfig;
pub use presets::{builtin_demo_overrides, preset_overrides, PRESETS};
pub use reward::RewardConfig;
pub use rollout::RolloutConfig;
pub use run::{ComputeDtype, CpuParallel, DeviceName, RunConfig};
pub use sft::SftConfig;

use anyhow::{bail, Context, Result};
use layers::{
    check_keys, coerce_to_default, complete_task_eval, dotted, key_at, merge, parse_value,
    settable, value_offset,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use toml::Value;

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
