//! `popo experiment FILE.toml`: a grid of training runs (variants x seeds) and its report.
//!
//! ```toml
//! out_dir = "results/builtin"      # relative to the current directory
//! seeds = [0, 1, 2]
//! base = "base.toml"               # optional train config, relative to this file
//! set = ["run.steps=40"]           # overrides shared by every run
//!
//! [[runs]]
//! name = "popo"
//! preset = "popo"
//! group = "algorithms"             # or "ablations"
//!
//! [[runs]]
//! name = "popo-uniform"
//! preset = "popo"
//! group = "ablations"
//! set = ["algo.weight_mode=\"uniform\""]
//! ```
//!
//! Every run gets the same shared settings; only its preset and own overrides differ, and the
//! seed sets `run.seed`. A finished run leaves `experiment_run.json` in its directory and is not
//! run again (so an interrupted experiment continues where it stopped).
//!
//! When the runs end with pass@k (`run.final_pass_at_k_samples` > 0, the default), each seed also
//! gets a base cell, `<out_dir>/base/s<seed>`: a run of 0 steps from the starting model (after the
//! warm-up) with the shared settings, so the report can set every method's pass@k against it.
//!
//! This module runs the grid; `crate::collect` reads the finished runs, `crate::claims` judges
//! them and `crate::report` writes report.md, summary.json and the plots.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use popo_model::passk::PassAtK;

pub const RUN_DONE_FILE: &str = "experiment_run.json";
pub use crate::summary::BASE_NAME;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    pub out_dir: PathBuf,
    pub seeds: Vec<u64>,
    #[serde(default)]
    pub base: Option<PathBuf>,
    #[serde(default)]
    pub set: Vec<String>,
    /// Built-in task only: do the SFT warm-up once per seed and start every variant of that seed
    /// from its checkpoint, instead of repeating the same warm-up in each run. The variants see
    /// the same warmed-up weights either way; this only saves time.
    #[serde(default)]
    pub shared_warmup: bool,
    /// How the runs' settings were chosen, which the report states beside every comparison:
    /// "popo" (the default: the shared settings were tuned on POPO alone) or "per_method" (each
    /// method at the learning rate its own sweep chose by one rule).
    #[serde(default)]
    pub tuning: crate::summary::Tuning,
    pub runs: Vec<RunSpec>,
    /// The build running the grid (`popo --version`'s text), recorded in each cell it finishes;
    /// set by the binary, not read from the file.
    #[serde(skip)]
    pub build: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub name: String,
    pub preset: String,
    #[serde(default = "default_group")]
    pub group: String,
    #[serde(default)]
    pub set: Vec<String>,
}

fn default_group() -> String {
    "algorithms".into()
}

impl ExperimentSpec {
    /// The directories of a seed's cells: its base cell, then each run's.
    pub fn seed_cells(&self, seed: u64) -> impl Iterator<Item = PathBuf> + '_ {
        std::iter::once(self.base_dir(seed))
            .chain(self.runs.iter().map(move |r| self.run_dir(r, seed)))
    }

    /// What the report's sentences need to know of the grid (`crate::summary::Grid`).
    pub fn grid(&self) -> crate::summary::Grid {
        crate::summary::Grid {
            warmup: self.shared_warmup,
            tuning: self.tuning,
        }
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut spec: ExperimentSpec =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Some(b) = &spec.base {
            if b.is_relative() {
                spec.base = Some(path.parent().unwrap_or(Path::new(".")).join(b));
            }
        }
        spec.validate()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<()> {
        if self.seeds.is_empty() || self.runs.is_empty() {
            bail!("an experiment needs at least one seed and one run");
        }
        let mut names = std::collections::HashSet::new();
        for r in &self.runs {
            if !names.insert(&r.name) {
                bail!("run name `{}` appears twice", r.name);
            }
            if r.name.is_empty() || r.name.contains(['/', '\\']) {
                bail!("run name `{}` must be a non-empty file name", r.name);
            }
            if r.name == BASE_NAME {
                bail!("run name `{BASE_NAME}` is taken by the starting model's cells");
            }
            if self.shared_warmup {
                let warmup_keys = ["sft.", "tiny_model.", "task.", "model.", "data."];
                if let Some(kv) = r
                    .set
                    .iter()
                    .find(|kv| warmup_keys.iter().any(|p| kv.trim_start().starts_with(p)))
                {
                    bail!(
                        "run `{}` sets `{kv}`, but with shared_warmup every variant starts from the \
                         same warm-up: move it to the shared `set`",
                        r.name
                    );
                }
            }
        }
        Ok(())
    }

    pub fn run_dir(&self, run: &RunSpec, seed: u64) -> PathBuf {
        self.out_dir
            .join("runs")
            .join(format!("{}-s{seed}", run.name))
    }

    /// The training config of one grid cell.
    pub fn train_config(
        &self,
        run: &RunSpec,
        seed: u64,
    ) -> Result<popo_train::config::TrainConfig> {
        self.build_config(&run.preset, &run.set, seed, &self.run_dir(run, seed), None)
    }

    /// The base cell of `seed`: the starting model measured with 0 steps.
    pub fn base_dir(&self, seed: u64) -> PathBuf {
        self.out_dir.join(BASE_NAME).join(format!("s{seed}"))
    }

    /// Whether the grid has base cells: its runs end with pass@k on a held-out set (the shared
    /// settings decide; a run's own `set` does not change the base).
    pub fn has_base(&self) -> Result<bool> {
        let (Some(run), Some(&seed)) = (self.runs.first(), self.seeds.first()) else {
            return Ok(false);
        };
        let cfg = self.build_config(&run.preset, &[], seed, &self.base_dir(seed), None)?;
        Ok(cfg.run.final_pass_at_k_samples > 0 && cfg.run.eval_size > 0)
    }

    /// A cell's config: from the seed's shared warm-up checkpoint (run first if missing) when
    /// `shared_warmup`, else with its own warm-up.
    fn cell_config(
        &self,
        preset: &str,
        run_set: &[String],
        seed: u64,
        dir: &Path,
        stop: &Arc<AtomicBool>,
        force: bool,
    ) -> Result<(popo_train::config::TrainConfig, Option<String>)> {
        if self.shared_warmup {
            let (ck, fingerprint) = self.warmup(seed, stop.clone(), force)?;
            let cfg = self.build_config(preset, run_set, seed, dir, Some(&ck))?;
            Ok((cfg, Some(fingerprint)))
        } else {
            Ok((self.build_config(preset, run_set, seed, dir, None)?, None))
        }
    }

    fn warmup_dir(&self, seed: u64) -> PathBuf {
        self.out_dir.join("warmup").join(format!("s{seed}"))
    }

    /// `warm_start`: start from this checkpoint with no warm-up of its own. Naming a model turns
    /// off the built-in demo defaults, so they are restated here, below the file and `set` layers.
    fn build_config(
        &self,
        preset: &str,
        run_set: &[String],
        seed: u64,
        out_dir: &Path,
        warm_start: Option<&Path>,
    ) -> Result<popo_train::config::TrainConfig> {
        let mut b = popo_train::config::ConfigBuilder::new().preset(Some(preset));
        if let Some(ckpt) = warm_start {
            let mut user_keys: Vec<String> = self
                .set
                .iter()
                .chain(run_set)
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.trim().to_string()))
                .collect();
            if let Some(base) = &self.base {
                let text = std::fs::read_to_string(base)
                    .with_context(|| format!("reading {}", base.display()))?;
                let v: toml::Value =
                    toml::from_str(&text).with_context(|| format!("parsing {}", base.display()))?;
                flatten_keys(&v, "", &mut user_keys);
            }
            for (k, v) in popo_train::config::builtin_demo_overrides() {
                if !user_keys.iter().any(|u| u == k) {
                    b = b.set_value(k, v);
                }
            }
            b = b
                .set_value(
                    "model.path",
                    toml::Value::String(ckpt.display().to_string()),
                )
                .set_value("sft.steps", toml::Value::Integer(0));
        }
        if let Some(base) = &self.base {
            b = b.file(base)?;
        }
        for kv in self.set.iter().chain(run_set) {
            b = b
                .set(kv)
                .with_context(|| format!("preset `{preset}`, `{kv}`"))?;
        }
        if warm_start.is_some() {
            // The warm-up already happened; a `set` must not repeat it.
            b = b.set_value("sft.steps", toml::Value::Integer(0));
        }
        b = b
            .set_value("run.seed", toml::Value::Integer(seed as i64))
            .set_value(
                "run.out_dir",
                toml::Value::String(out_dir.display().to_string()),
            );
        b.build()
            .with_context(|| format!("preset `{preset}` seed {seed}"))
    }

    /// Runs (or reuses) the shared warm-up of one seed; returns its checkpoint and the
    /// fingerprint of its weights, once they are checked against the seed's finished cells
    /// (unless `force`: then every cell runs again).
    fn warmup(&self, seed: u64, stop: Arc<AtomicBool>, force: bool) -> Result<(PathBuf, String)> {
        let dir = self.warmup_dir(seed);
        if let Some(ck) = popo_train::checkpoint::list(&dir)?.pop() {
            let fingerprint = weights_fingerprint(&ck)?;
            if !force {
                self.check_warmup(seed, &fingerprint, false)?;
            }
            return Ok((ck, fingerprint));
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        eprintln!("warm-up for seed {seed} -> {}", dir.display());
        let mut cfg = self.build_config(&self.runs[0].preset, &[], seed, &dir, None)?;
        if !cfg.model.path.is_empty() || !cfg.data.path.is_empty() {
            bail!(
                "shared_warmup needs the built-in task and model (model.path and data.path empty)"
            );
        }
        cfg.run.steps = 0;
        cfg.run.eval_size = 0;
        let mut t = popo_train::trainer::Trainer::new(cfg, stop)?;
        let ck = t.save_checkpoint()?;
        let fingerprint = weights_fingerprint(&ck)?;
        if !force {
            self.check_warmup(seed, &fingerprint, true)?;
        }
        Ok((ck, fingerprint))
    }

    /// The comparisons pair cells by seed, so every cell of a seed must start from the same
    /// warm-up. The warm-up weights are not committed, and another machine or build rounds
    /// differently (results/experiment-400-b.toml), so one made again may not be the one the
    /// seed's finished cells started from: then no new cell of the seed may run. `fresh`: made
    /// just now, so finished cells that recorded no fingerprint cannot vouch for it either.
    fn check_warmup(&self, seed: u64, fingerprint: &str, fresh: bool) -> Result<()> {
        for dir in self.seed_cells(seed) {
            let Some(rec) = RunRecord::read(&dir)? else {
                continue;
            };
            let recorded = match &rec.warmup {
                Some(f) if f == fingerprint => continue,
                None if !fresh => continue,
                Some(f) => format!("it started from warm-up weights {f}"),
                None => "it recorded no fingerprint of its warm-up".to_string(),
            };
            bail!(
                "seed {seed}'s shared warm-up ({}, weights {fingerprint}) is not the one the \
                 finished cell {} started from: {recorded}. New cells of this seed would not \
                 pair with it. Rerun every cell of the seed (move its finished cells away, or \
                 `--force`), or use new seeds.",
                self.warmup_dir(seed).display(),
                dir.display()
            );
        }
        Ok(())
    }
}

/// A fingerprint of a checkpoint's weights: FNV-1a (64 bits) over `model.safetensors`, enough
/// to tell two warm-ups apart (it guards against accidents, not adversaries).
fn weights_fingerprint(ckpt: &Path) -> Result<String> {
    let path = ckpt.join("model.safetensors");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Ok(format!("fnv1a64:{hash:016x}"))
}

fn flatten_keys(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    if let toml::Value::Table(t) = v {
        for (k, child) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if child.is_table() {
                flatten_keys(child, &key, out);
            } else {
                out.push(key);
            }
        }
    }
}

/// What a finished run recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub name: String,
    pub seed: u64,
    pub eval_before: Option<f64>,
    pub eval_after: Option<f64>,
    pub steps: u64,
    pub wall_s: f64,
    /// pass@k and avg@n after training (absent when off, and in runs recorded before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_at_k: Option<PassAtK>,
    /// With `shared_warmup`: the fingerprint of the warm-up weights the cell started from
    /// (absent in cells recorded before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<String>,
    /// The build that finished the cell (`popo --version`; absent in cells recorded before it
    /// existed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub popo: String,
}

impl RunRecord {
    /// The record of the finished cell in `dir`; `None` while the cell has not finished.
    pub fn read(dir: &Path) -> Result<Option<RunRecord>> {
        let path = dir.join(RUN_DONE_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let rec =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Some(rec))
    }
}

/// The last checkpoint of an unfinished cell whose recorded config is the cell's config now, so
/// that a grid stopped mid-run (a session's end, a kill) continues that run instead of starting
/// it again. `None`: start afresh (no checkpoint, `--force`, or the experiment file changed).
fn resumable(
    dir: &Path,
    cfg: &popo_train::config::TrainConfig,
    force: bool,
) -> Result<Option<PathBuf>> {
    if force || !dir.join("config.toml").is_file() {
        return Ok(None);
    }
    let Some(ck) = popo_train::checkpoint::list(dir)?.pop() else {
        return Ok(None);
    };
    let recorded = popo_train::trainer::Trainer::resumed_config(dir)?;
    Ok((&recorded == cfg).then_some(ck))
}

/// Runs every cell that has not finished yet, in order: the base cells (one per seed, when the
/// runs report pass@k), then each (run, seed). `force`: rerun all.
pub fn run_grid(spec: &ExperimentSpec, force: bool, stop: Arc<AtomicBool>) -> Result<()> {
    let mut cells: Vec<(Option<&RunSpec>, u64)> = Vec::new();
    if spec.has_base()? {
        cells.extend(spec.seeds.iter().map(|&seed| (None, seed)));
    }
    for run in &spec.runs {
        cells.extend(spec.seeds.iter().map(|&seed| (Some(run), seed)));
    }
    let total = cells.len();
    for (k, (run, seed)) in cells.into_iter().enumerate() {
        let (name, dir) = match run {
            Some(r) => (r.name.as_str(), spec.run_dir(r, seed)),
            None => (BASE_NAME, spec.base_dir(seed)),
        };
        let k = k + 1;
        if !force && dir.join(RUN_DONE_FILE).is_file() {
            eprintln!("[{k}/{total}] {name} seed {seed}: done already");
            continue;
        }
        // From here: the shared warm-up (when this cell is its seed's first) counts too.
        let started = std::time::Instant::now();
        let (cfg, warmup) = match run {
            Some(r) => spec.cell_config(&r.preset, &r.set, seed, &dir, &stop, force)?,
            None => {
                let (mut cfg, warmup) =
                    spec.cell_config(&spec.runs[0].preset, &[], seed, &dir, &stop, force)?;
                cfg.run.steps = 0;
                (cfg, warmup)
            }
        };
        let mut trainer = match resumable(&dir, &cfg, force)? {
            Some(ck) => {
                eprintln!(
                    "[{k}/{total}] {name} seed {seed}: resuming {}",
                    ck.display()
                );
                popo_train::trainer::Trainer::resume(&dir, stop.clone())?
            }
            None => {
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)
                        .with_context(|| format!("clearing unfinished run {}", dir.display()))?;
                }
                eprintln!("[{k}/{total}] {name} seed {seed} -> {}", dir.display());
                popo_train::trainer::Trainer::new(cfg, stop.clone())?
            }
        };
        let s = trainer.run()?;
        if s.interrupted {
            bail!("interrupted during {name} seed {seed}; rerun the experiment to continue");
        }
        let rec = RunRecord {
            name: name.to_string(),
            seed,
            eval_before: s.eval_before,
            eval_after: s.eval_after,
            steps: s.steps_done,
            // The whole cell: setup, warm-up (its own or the seed's shared one), RL, evaluations,
            // over every session it took (a resumed run adds the time its checkpoint recorded).
            wall_s: started.elapsed().as_secs_f64() + s.wall_before_s,
            pass_at_k: s.pass_at_k,
            warmup,
            popo: spec.build.clone(),
        };
        std::fs::write(dir.join(RUN_DONE_FILE), serde_json::to_string_pretty(&rec)?)?;
    }
    Ok(())
}

/// A four-variant grid of 3-step runs over seeds 0 and 1 (for tests here and in `report`).
#[cfg(test)]
pub(crate) fn test_spec(out: &Path) -> ExperimentSpec {
    toml::from_str::<ExperimentSpec>(&format!(
        r#"
out_dir = "{}"
seeds = [0, 1]
set = ["run.steps=3"]
[[runs]]
name = "popo"
preset = "popo"
[[runs]]
name = "grpo"
preset = "grpo"
[[runs]]
name = "raft"
preset = "raft"
[[runs]]
name = "popo-alpha0"
preset = "popo"
group = "ablations"
set = ["algo.alpha=0.0"]
"#,
        out.display()
    ))
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_configs_share_settings_and_differ_by_preset_seed_and_overrides() {
        let tmp = tempfile::tempdir().unwrap();
        let s = test_spec(tmp.path());
        let a = s.train_config(&s.runs[0], 1).unwrap();
        let b = s.train_config(&s.runs[3], 1).unwrap();
        assert_eq!(a.run.steps, 3);
        assert_eq!(a.run.seed, 1);
        assert_eq!(a.algo.alpha, 0.1);
        assert_eq!(b.algo.alpha, 0.0);
        assert_eq!(a.optim, b.optim);
        assert!(a.run.out_dir.ends_with("popo-s1"));
        let mut bad = s.clone();
        bad.runs[1].name = "popo".into();
        assert!(bad.validate().is_err());
        let mut bad = s.clone();
        bad.runs[0].set = vec!["algo.nope=1".into()];
        assert!(bad.train_config(&bad.runs[0], 0).is_err());
        let mut bad = s.clone();
        bad.runs[1].name = BASE_NAME.into();
        assert!(bad.validate().is_err());
        // The default runs end with pass@k, so the grid measures the base model; 0 turns both off.
        assert!(s.has_base().unwrap());
        let mut off = s.clone();
        off.set.push("run.final_pass_at_k_samples=0".into());
        assert!(!off.has_base().unwrap());
    }
}
