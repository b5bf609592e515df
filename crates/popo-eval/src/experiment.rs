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

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use popo_model::passk::PassAtK;
use popo_train::metrics::{names, read_metrics, series, MetricRecord};

use crate::plot::{band_series, draw, mean_std, Chart};

pub const RUN_DONE_FILE: &str = "experiment_run.json";
/// The name of the base cells (`<out_dir>/base/s<seed>`) in records and reports.
pub const BASE_NAME: &str = "base";

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
    pub runs: Vec<RunSpec>,
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
    ) -> Result<popo_train::config::TrainConfig> {
        if self.shared_warmup {
            let ck = self.warmup(seed, stop.clone())?;
            self.build_config(preset, run_set, seed, dir, Some(&ck))
        } else {
            self.build_config(preset, run_set, seed, dir, None)
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

    /// Runs (or reuses) the shared warm-up of one seed; returns its checkpoint.
    fn warmup(&self, seed: u64, stop: Arc<AtomicBool>) -> Result<PathBuf> {
        let dir = self.warmup_dir(seed);
        if let Some(ck) = popo_train::checkpoint::list(&dir)?.pop() {
            return Ok(ck);
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
        t.save_checkpoint()
    }
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
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("clearing unfinished run {}", dir.display()))?;
        }
        eprintln!("[{k}/{total}] {name} seed {seed} -> {}", dir.display());
        // From here: the shared warm-up (when this cell is its seed's first) counts too.
        let started = std::time::Instant::now();
        let cfg = match run {
            Some(r) => spec.cell_config(&r.preset, &r.set, seed, &dir, &stop)?,
            None => {
                let mut cfg = spec.cell_config(&spec.runs[0].preset, &[], seed, &dir, &stop)?;
                cfg.run.steps = 0;
                cfg
            }
        };
        let mut trainer = popo_train::trainer::Trainer::new(cfg, stop.clone())?;
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
            // The whole cell: setup, warm-up (its own or the seed's shared one), RL, evaluations.
            wall_s: started.elapsed().as_secs_f64(),
            pass_at_k: s.pass_at_k,
        };
        std::fs::write(dir.join(RUN_DONE_FILE), serde_json::to_string_pretty(&rec)?)?;
    }
    Ok(())
}

/// Mean and sample std over seeds of one quantity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl Stat {
    fn of(values: &[f64]) -> Option<Stat> {
        let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        let (mean, std) = mean_std(&v);
        Some(Stat {
            mean,
            std,
            n: v.len(),
        })
    }
}

/// One variant's numbers over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantSummary {
    pub name: String,
    pub preset: String,
    pub group: String,
    pub seeds: Vec<u64>,
    pub accuracy_before: Option<Stat>,
    pub accuracy_after: Option<Stat>,
    /// After minus before, per seed (each seed's variants share one warm-up, so this pairs them).
    pub accuracy_change: Option<Stat>,
    /// Mean over the run's probe steps, then over seeds.
    pub delta_neg: Option<Stat>,
    pub delta_pos: Option<Stat>,
    pub tokens_backprop_per_step: Option<Stat>,
    pub wall_s: Option<Stat>,
    /// pass@k and avg@n after training, over the seeds that measured it (absent in older runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_at_k: Option<PassAtKStat>,
}

/// pass@k over seeds: per k, the mean and spread of the seeds' pass@k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassAtKStat {
    /// Samples per problem (the largest over the seeds, should they differ).
    pub n: usize,
    pub avg_at_n: Stat,
    /// `(k, pass@k over seeds)`, k ascending.
    pub pass_at_k: Vec<(usize, Stat)>,
}

impl PassAtKStat {
    fn of(seeds: &[PassAtK]) -> Option<Self> {
        let avg: Vec<f64> = seeds.iter().map(|p| p.avg_at_n).collect();
        let mut ks: Vec<usize> = seeds
            .iter()
            .flat_map(|p| p.pass_at_k.iter().map(|x| x.0))
            .collect();
        ks.sort_unstable();
        ks.dedup();
        let pass_at_k = ks
            .into_iter()
            .filter_map(|k| {
                let v: Vec<f64> = seeds
                    .iter()
                    .filter_map(|p| p.pass_at_k.iter().find(|x| x.0 == k).map(|x| x.1))
                    .collect();
                Some((k, Stat::of(&v)?))
            })
            .collect();
        Some(PassAtKStat {
            n: seeds.iter().map(|p| p.n).max()?,
            avg_at_n: Stat::of(&avg)?,
            pass_at_k,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub variants: Vec<VariantSummary>,
    /// The starting model (after any warm-up), measured by the base cells; absent when the grid
    /// has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<VariantSummary>,
    /// A plain verdict on each of the paper's claims (`crate::claims`).
    pub verdicts: Vec<String>,
}

fn mean_of(records: &[MetricRecord], name: &str) -> f64 {
    let s = series(records, name);
    if s.is_empty() {
        f64::NAN
    } else {
        s.iter().map(|p| p.1).sum::<f64>() / s.len() as f64
    }
}

/// Mean completion tokens through the backward pass per step. Runs logged before the trainer
/// wrote `perf/tokens_backprop` carry the same count as train tokens/s x train time.
fn tokens_backprop(records: &[MetricRecord]) -> f64 {
    let direct = mean_of(records, names::TOKENS_BACKPROP);
    if !direct.is_nan() {
        return direct;
    }
    let rate = series(records, names::TRAIN_TOKENS_PER_S);
    let time = series(records, names::TIME_TRAIN);
    let per_step: Vec<f64> = rate
        .iter()
        .filter_map(|(step, r)| {
            let t = time.iter().find(|(s, _)| s == step)?.1;
            Some((r * t).round())
        })
        .collect();
    if per_step.is_empty() {
        f64::NAN
    } else {
        per_step.iter().sum::<f64>() / per_step.len() as f64
    }
}

/// One run's `(step, value)` points of a metric.
type Curve = Vec<(u64, f64)>;

/// The pseudo-metric under which a run's pass@k-vs-k curve is kept: `(log2 k, pass@k)` points.
const PASS_CURVE: &str = "eval/pass@k";

/// The metrics whose curves the report plots against step.
const STEP_CURVES: [(&str, &str); 2] = [
    (names::EVAL_ACCURACY, "held-out accuracy"),
    (names::REWARD_MEAN, "train reward"),
];

/// Reads one variant's finished cells (`(seed, run dir)`; unfinished ones are skipped) into its
/// summary and its per-seed curves (the step curves and the pass@k curve).
fn summarize(
    run: &RunSpec,
    cells: impl Iterator<Item = (u64, PathBuf)>,
) -> Result<(VariantSummary, BTreeMap<&'static str, Vec<Curve>>)> {
    let (mut before, mut after, mut neg, mut pos, mut tok, mut wall) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut seeds, mut passes) = (vec![], vec![]);
    let mut curves: BTreeMap<&'static str, Vec<Curve>> = BTreeMap::new();
    for (seed, dir) in cells {
        let done = dir.join(RUN_DONE_FILE);
        let Ok(text) = std::fs::read_to_string(&done) else {
            continue;
        };
        let rec: RunRecord =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", done.display()))?;
        let m = read_metrics(&dir)?;
        seeds.push(seed);
        before.push(rec.eval_before.unwrap_or(f64::NAN));
        after.push(rec.eval_after.unwrap_or(f64::NAN));
        wall.push(rec.wall_s);
        neg.push(mean_of(&m, names::DELTA_NEG));
        pos.push(mean_of(&m, names::DELTA_POS));
        tok.push(tokens_backprop(&m));
        for (metric, _) in STEP_CURVES {
            curves.entry(metric).or_default().push(series(&m, metric));
        }
        if let Some(p) = rec.pass_at_k {
            let curve = p
                .pass_at_k
                .iter()
                .map(|&(k, v)| (k.ilog2() as u64, v))
                .collect();
            curves.entry(PASS_CURVE).or_default().push(curve);
            passes.push(p);
        }
    }
    let summary = VariantSummary {
        name: run.name.clone(),
        preset: run.preset.clone(),
        group: run.group.clone(),
        seeds,
        accuracy_before: Stat::of(&before),
        accuracy_after: Stat::of(&after),
        accuracy_change: Stat::of(
            &after
                .iter()
                .zip(&before)
                .map(|(a, b)| a - b)
                .collect::<Vec<_>>(),
        ),
        delta_neg: Stat::of(&neg),
        delta_pos: Stat::of(&pos),
        tokens_backprop_per_step: Stat::of(&tok),
        wall_s: Stat::of(&wall),
        pass_at_k: PassAtKStat::of(&passes),
    };
    Ok((summary, curves))
}

/// Reads the finished runs and writes report.md, summary.json and plots into `out_dir`.
pub fn write_report(spec: &ExperimentSpec, command: &str) -> Result<Summary> {
    let mut variants = Vec::new();
    // variant -> metric -> per-seed series, for the plots
    let mut curves: BTreeMap<String, BTreeMap<&str, Vec<Curve>>> = BTreeMap::new();
    for run in &spec.runs {
        let cells = spec.seeds.iter().map(|&s| (s, spec.run_dir(run, s)));
        let (v, c) = summarize(run, cells)?;
        variants.push(v);
        curves.insert(run.name.clone(), c);
    }
    // The base cells, where they exist (older experiments and pass@k-free grids have none).
    let base_run = RunSpec {
        name: BASE_NAME.into(),
        preset: spec
            .runs
            .first()
            .map(|r| r.preset.clone())
            .unwrap_or_default(),
        group: BASE_NAME.into(),
        set: Vec::new(),
    };
    let (base, base_curves) =
        summarize(&base_run, spec.seeds.iter().map(|&s| (s, spec.base_dir(s))))?;
    let base = (!base.seeds.is_empty()).then_some(base);
    let verdicts = crate::claims::judge(&variants, base.as_ref());
    let summary = Summary {
        variants,
        base,
        verdicts,
    };

    std::fs::create_dir_all(&spec.out_dir)?;
    std::fs::write(
        spec.out_dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    let plots_dir = spec.out_dir.join("plots");
    let mut plot_files = Vec::new();
    let groups: Vec<String> = {
        let mut g: Vec<String> = spec.runs.iter().map(|r| r.group.clone()).collect();
        g.dedup();
        g
    };
    for group in &groups {
        for (metric, title) in STEP_CURVES {
            let series_list: Vec<_> = spec
                .runs
                .iter()
                .filter(|r| &r.group == group)
                .filter_map(|r| {
                    let runs = curves.get(&r.name)?.get(metric)?;
                    let s = band_series(&r.name, runs);
                    (!s.points.is_empty()).then_some(s)
                })
                .collect();
            if series_list.is_empty() {
                continue;
            }
            let chart = Chart {
                title: format!("{title} ({group}; mean +- std over seeds)"),
                x_label: "step".into(),
                y_label: metric.into(),
                series: series_list,
            };
            let stem = plots_dir.join(format!("{group}_{}", crate::plot::file_stem(metric)));
            plot_files.extend(draw(&chart, &stem)?);
        }
        // pass@k against k after training, the base model first for reference.
        let series_list: Vec<_> = std::iter::once((BASE_NAME, &base_curves))
            .chain(
                spec.runs
                    .iter()
                    .filter(|r| &r.group == group)
                    .filter_map(|r| Some((r.name.as_str(), curves.get(&r.name)?))),
            )
            .filter_map(|(name, c)| {
                let s = band_series(name, c.get(PASS_CURVE)?);
                (!s.points.is_empty()).then_some(s)
            })
            .collect();
        // The base alone says nothing about the group.
        if series_list.iter().any(|s| s.label != BASE_NAME) {
            let chart = Chart {
                title: format!("held-out pass@k ({group}; mean +- std over seeds)"),
                x_label: "log2 k".into(),
                y_label: "pass@k".into(),
                series: series_list,
            };
            plot_files.extend(draw(&chart, &plots_dir.join(format!("{group}_pass_at_k")))?);
        }
    }
    let md = render_markdown(spec, &summary, command, &plot_files);
    std::fs::write(spec.out_dir.join("report.md"), md)?;
    Ok(summary)
}

fn fmt_pct(s: &Option<Stat>) -> String {
    s.map_or("-".into(), |s| {
        format!("{:.1} +- {:.1}", 100.0 * s.mean, 100.0 * s.std)
    })
}

fn fmt_signed_pct(s: &Option<Stat>) -> String {
    s.map_or("-".into(), |s| {
        format!("{:+.1} +- {:.1}", 100.0 * s.mean, 100.0 * s.std)
    })
}

fn fmt_num(s: &Option<Stat>, digits: usize) -> String {
    s.map_or("-".into(), |s| {
        format!("{:.d$} +- {:.d$}", s.mean, s.std, d = digits)
    })
}

/// The pass@k table: one row per variant that measured it, the base model first; empty when
/// none did (older runs).
fn render_pass_at_k(summary: &Summary) -> String {
    let rows: Vec<(&VariantSummary, &PassAtKStat)> = summary
        .base
        .iter()
        .chain(&summary.variants)
        .filter_map(|v| Some((v, v.pass_at_k.as_ref()?)))
        .collect();
    let Some(n) = rows.iter().map(|(_, p)| p.n).max() else {
        return String::new();
    };
    let mut ks: Vec<usize> = rows
        .iter()
        .flat_map(|(_, p)| p.pass_at_k.iter().map(|x| x.0))
        .collect();
    ks.sort_unstable();
    ks.dedup();
    let mut md = format!(
        "## pass@k\n\nEach held-out problem sampled {n} times at T = 1 after training; the \
         unbiased pass@k and avg@{n} in percent, mean +- std over seeds. `{BASE_NAME}` is the \
         starting model (after the warm-up), measured the same way.\n\n\
         | run | group | seeds | avg@{n} |"
    );
    for k in &ks {
        md.push_str(&format!(" pass@{k} |"));
    }
    md.push_str(&format!("\n|---|---|---|---|{}\n", "---|".repeat(ks.len())));
    for (v, p) in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} |",
            v.name,
            v.group,
            v.seeds.len(),
            fmt_pct(&Some(p.avg_at_n))
        ));
        for k in &ks {
            let stat = p.pass_at_k.iter().find(|x| x.0 == *k).map(|x| x.1);
            md.push_str(&format!(" {} |", fmt_pct(&stat)));
        }
        md.push('\n');
    }
    md.push('\n');
    md
}

fn render_markdown(
    spec: &ExperimentSpec,
    summary: &Summary,
    command: &str,
    plots: &[PathBuf],
) -> String {
    let mut md = String::from("# POPO vs baselines on the built-in task\n\n");
    md.push_str(&format!(
        "Regenerate with:\n\n```\n{command}\n```\n\nSeeds: {:?}. Shared overrides: {}.\n\n",
        spec.seeds,
        if spec.set.is_empty() {
            "none".to_string()
        } else {
            format!("`{}`", spec.set.join("`, `"))
        }
    ));
    let finished: Vec<&Stat> = summary
        .base
        .iter()
        .chain(&summary.variants)
        .filter_map(|v| v.wall_s.as_ref())
        .collect();
    if !finished.is_empty() {
        let runs: usize = finished.iter().map(|s| s.n).sum();
        let total: f64 = finished.iter().map(|s| s.mean * s.n as f64).sum();
        md.push_str(&format!(
            "Wall time: {runs} finished runs, {:.0} s ({:.1} h) in all (setup, evaluations and the \
             seed's shared warm-up in its first run included); per run in the `wall s / run` \
             columns.\n\n",
            total,
            total / 3600.0
        ));
    }
    // Cells of the grid with no finished record: what the report does not cover.
    let missing: Vec<String> = spec
        .runs
        .iter()
        .flat_map(|r| spec.seeds.iter().map(move |&s| (r, s)))
        .filter(|&(r, s)| !spec.run_dir(r, s).join(RUN_DONE_FILE).exists())
        .map(|(r, s)| format!("{} s{s}", r.name))
        .collect();
    if !missing.is_empty() {
        md.push_str(&format!(
            "Not run ({} of {} cells; the same command runs them, finished ones are skipped): \
             {}.\n\n",
            missing.len(),
            spec.runs.len() * spec.seeds.len(),
            missing.join(", ")
        ));
    }
    if !summary.verdicts.is_empty() {
        md.push_str(
            "## Verdicts\n\nEach claim judged on the finished runs. A difference counts only when \
             it is larger than the larger seed standard deviation of the two sides.\n\n",
        );
        for v in &summary.verdicts {
            md.push_str(&format!("- {v}\n"));
        }
        md.push('\n');
    }
    let mut groups: Vec<&str> = summary.variants.iter().map(|v| v.group.as_str()).collect();
    groups.dedup();
    for g in groups {
        md.push_str(&format!(
            "## {g}\n\nAccuracy in percent (mean +- std over seeds); the probe columns are mean per-token \
             log-prob changes of held-out negatives / positives across an optimizer step.\n\n\
             | run | preset | overrides | seeds | accuracy before | accuracy after | change (points) | delta_neg | delta_pos | tokens backprop / step | wall s / run |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n"
        ));
        // The ablations table starts with the full method, for reference.
        let reference = summary
            .variants
            .iter()
            .filter(|v| g == "ablations" && v.name == "popo" && v.group != g);
        for v in reference.chain(summary.variants.iter().filter(|v| v.group == g)) {
            let overrides = spec
                .runs
                .iter()
                .find(|r| r.name == v.name)
                .map(|r| r.set.join(", "))
                .unwrap_or_default();
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                v.name,
                v.preset,
                if overrides.is_empty() {
                    "-".into()
                } else {
                    format!("`{overrides}`")
                },
                v.seeds.len(),
                fmt_pct(&v.accuracy_before),
                fmt_pct(&v.accuracy_after),
                fmt_signed_pct(&v.accuracy_change),
                fmt_num(&v.delta_neg, 4),
                fmt_num(&v.delta_pos, 4),
                fmt_num(&v.tokens_backprop_per_step, 0),
                fmt_num(&v.wall_s, 1),
            ));
        }
        md.push('\n');
    }
    md.push_str(&render_pass_at_k(summary));
    if !plots.is_empty() {
        md.push_str("## Plots\n\n");
        for p in plots
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "svg"))
        {
            let rel = p.strip_prefix(&spec.out_dir).unwrap_or(p);
            md.push_str(&format!("![{}]({})\n\n", rel.display(), rel.display()));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use popo_train::metrics::{RunLogger, StepMetrics};

    fn spec(out: &Path) -> ExperimentSpec {
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

    /// Writes the files a finished run leaves, with chosen accuracies (and no pass@k, as runs
    /// recorded before it existed).
    fn fake_run(spec: &ExperimentSpec, name: &str, seed: u64, after: f64) {
        fake_cell(spec, name, seed, after, None)
    }

    /// A finished cell (`name` "base": a base cell) with an optional pass@k record.
    fn fake_cell(spec: &ExperimentSpec, name: &str, seed: u64, after: f64, pass: Option<PassAtK>) {
        let dir = match spec.runs.iter().find(|r| r.name == name) {
            Some(run) => spec.run_dir(run, seed),
            None => spec.base_dir(seed),
        };
        let mut log = RunLogger::create(&dir, false).unwrap();
        for step in 1..=3u64 {
            let mut m = StepMetrics::new(step);
            m.set(names::REWARD_MEAN, after * step as f64 / 3.0)
                .set(names::DELTA_NEG, -0.01 * step as f64)
                .set(names::DELTA_POS, 0.02)
                .set(names::TOKENS_BACKPROP, 100.0 * step as f64)
                .set(names::EVAL_ACCURACY, after * step as f64 / 3.0);
            log.log(&m).unwrap();
        }
        let rec = RunRecord {
            name: name.into(),
            seed,
            eval_before: Some(0.2),
            eval_after: Some(after),
            steps: 3,
            wall_s: 10.0 + seed as f64,
            pass_at_k: pass,
        };
        std::fs::write(
            dir.join(RUN_DONE_FILE),
            serde_json::to_string(&rec).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn tokens_backprop_falls_back_to_rate_times_time() {
        let rec = |step: u64, kv: &[(&str, f64)]| MetricRecord {
            step,
            values: kv.iter().map(|(k, v)| (k.to_string(), Some(*v))).collect(),
        };
        let old = [
            rec(
                1,
                &[
                    (names::TRAIN_TOKENS_PER_S, 1000.0),
                    (names::TIME_TRAIN, 0.5),
                ],
            ),
            rec(
                2,
                &[(names::TRAIN_TOKENS_PER_S, 400.0), (names::TIME_TRAIN, 1.5)],
            ),
        ];
        assert_eq!(tokens_backprop(&old), 550.0);
        let new = [rec(
            1,
            &[
                (names::TOKENS_BACKPROP, 7.0),
                (names::TRAIN_TOKENS_PER_S, 1.0),
            ],
        )];
        assert_eq!(tokens_backprop(&new), 7.0);
        assert!(tokens_backprop(&[]).is_nan());
    }

    #[test]
    fn report_aggregates_seeds_and_states_the_comparison() {
        let tmp = tempfile::tempdir().unwrap();
        let s = spec(tmp.path());
        s.validate().unwrap();
        for (name, a, b) in [
            ("popo", 0.60, 0.70),
            ("grpo", 0.40, 0.44),
            ("raft", 0.62, 0.66),
            ("popo-alpha0", 0.5, 0.5),
        ] {
            fake_run(&s, name, 0, a);
            fake_run(&s, name, 1, b);
        }
        let sum = write_report(&s, "popo experiment x.toml").unwrap();
        let popo = &sum.variants[0];
        let acc = popo.accuracy_after.unwrap();
        assert!((acc.mean - 0.65).abs() < 1e-12);
        assert!((acc.std - (0.005f64).sqrt()).abs() < 1e-12); // values .6 and .7
        assert_eq!(acc.n, 2);
        let neg = popo.delta_neg.unwrap();
        assert!((neg.mean + 0.02).abs() < 1e-12 && neg.std < 1e-12);
        assert!((popo.tokens_backprop_per_step.unwrap().mean - 200.0).abs() < 1e-9);
        let change = popo.accuracy_change.unwrap(); // after .6 and .7, before .2 both
        assert!((change.mean - 0.45).abs() < 1e-12 && change.n == 2);
        assert!((popo.wall_s.unwrap().mean - 10.5).abs() < 1e-12);

        assert_eq!(sum.verdicts.len(), 5);
        assert!(
            sum.verdicts[0].starts_with("**1. POPO matches or beats GRPO: holds.**")
                && sum.verdicts[0].contains("65.0% vs 42.0% (+23.0 points, seed spread 7.1"),
            "{}",
            sum.verdicts[0]
        );
        assert!(
            sum.verdicts[3].contains("(POPO vs RAFT): not shown (within the spread).**")
                && sum.verdicts[3].contains("65.0% vs 64.0% (+1.0 points"),
            "{}",
            sum.verdicts[3]
        );
        let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
        assert!(
            md.contains("| popo | popo | - | 2 | 20.0 +- 0.0 | 65.0 +- 7.1 |"),
            "{md}"
        );
        assert!(md.contains("## ablations") && md.contains("`algo.alpha=0.0`"));
        let ablations = md.split("## ablations").nth(1).unwrap();
        assert!(ablations.contains("| popo | popo | - |"), "{ablations}");
        assert!(md.contains("popo experiment x.toml"));
        let back: Summary = serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join("summary.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(back.verdicts, sum.verdicts);
        assert_eq!(back.variants.len(), 4);
        let back_acc = back.variants[1].accuracy_after.unwrap();
        assert!((back_acc.mean - 0.42).abs() < 1e-12);
        // Runs recorded before pass@k existed still report, without its table or base.
        assert!(sum.base.is_none() && sum.variants.iter().all(|v| v.pass_at_k.is_none()));
        assert!(!md.contains("## pass@k"));
        assert!(md.contains("Wall time: 8 finished runs, 84 s"), "{md}");
        assert!(!md.contains("Not run"), "{md}");
        std::fs::remove_file(s.run_dir(&s.runs[3], 1).join(RUN_DONE_FILE)).unwrap();
        write_report(&s, "popo experiment x.toml").unwrap();
        let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
        assert!(
            md.contains("Not run (1 of 8 cells; the same command runs them, finished ones are skipped): popo-alpha0 s1."),
            "{md}"
        );
        for f in [
            "algorithms_eval_accuracy.svg",
            "algorithms_eval_accuracy.png",
            "ablations_train_reward_mean.png",
        ] {
            assert!(tmp.path().join("plots").join(f).is_file(), "{f}");
        }
    }

    /// pass@k over seeds per k in a table and a pass@k-vs-k plot per group, the base model first;
    /// a variant whose seeds did not all measure it averages the ones that did.
    #[test]
    fn report_has_a_pass_at_k_table_and_plot_with_the_base() {
        let tmp = tempfile::tempdir().unwrap();
        let s = spec(tmp.path());
        // n = 4 samples of 2 problems; counts chosen per cell.
        let pass = |counts: &[usize]| Some(PassAtK::from_counts(4, counts));
        for seed in [0, 1] {
            fake_cell(&s, BASE_NAME, seed, 0.2, pass(&[1, 0]));
            fake_cell(&s, "popo", seed, 0.6, pass(&[4, 0]));
            fake_cell(&s, "grpo", seed, 0.4, pass(&[[1, 2][seed as usize], 1]));
        }
        fake_cell(&s, "raft", 0, 0.5, pass(&[2, 2]));
        fake_run(&s, "raft", 1, 0.5);
        let sum = write_report(&s, "popo experiment x.toml").unwrap();
        let base = sum.base.as_ref().unwrap();
        assert_eq!((base.name.as_str(), base.seeds.len()), (BASE_NAME, 2));
        let bp = base.pass_at_k.as_ref().unwrap();
        // One of 4 right on one problem: pass@1 = 1/8, pass@2 = 1/4, pass@4 = 1/2.
        let ks: Vec<(usize, f64)> = bp.pass_at_k.iter().map(|(k, st)| (*k, st.mean)).collect();
        assert_eq!(ks, [(1, 0.125), (2, 0.25), (4, 0.5)]);
        let g = sum.variants[1].pass_at_k.as_ref().unwrap(); // grpo: c = 1 or 2, then 1
        let (p1, p2): (f64, f64) = (0.25 + 0.25, 0.5 + 0.25); // pass@1 of each seed, summed over problems
        let want = (
            (p1 / 2.0 + p2 / 2.0) / 2.0,
            (p2 / 2.0 - p1 / 2.0).abs() / 2f64.sqrt(),
        );
        assert!((g.pass_at_k[0].1.mean - want.0).abs() < 1e-12);
        assert!((g.pass_at_k[0].1.std - want.1).abs() < 1e-12);
        assert_eq!(g.n, 4);
        assert_eq!(sum.variants[2].pass_at_k.as_ref().unwrap().avg_at_n.n, 1);
        assert!(sum.variants[3].pass_at_k.is_none()); // the ablation has no record
        let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
        let table = md.split("## pass@k").nth(1).unwrap();
        assert!(
            table.contains("| run | group | seeds | avg@4 | pass@1 | pass@2 | pass@4 |"),
            "{table}"
        );
        assert!(
            table.contains(
                "| base | base | 2 | 12.5 +- 0.0 | 12.5 +- 0.0 | 25.0 +- 0.0 | 50.0 +- 0.0 |"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| popo | algorithms | 2 | 50.0 +- 0.0 | 50.0 +- 0.0 | 50.0 +- 0.0 | 50.0 +- 0.0 |"
            ),
            "{table}"
        );
        assert!(!table.contains("popo-alpha0"));
        for f in ["algorithms_pass_at_k.svg", "algorithms_pass_at_k.png"] {
            assert!(tmp.path().join("plots").join(f).is_file(), "{f}");
        }
        // The ablations measured nothing: the base alone makes no plot.
        assert!(!tmp.path().join("plots/ablations_pass_at_k.svg").exists());
        let svg =
            std::fs::read_to_string(tmp.path().join("plots/algorithms_pass_at_k.svg")).unwrap();
        // base, popo, grpo, raft: a curve of three points (k = 1, 2, 4) in each of the first
        // four colours.
        for color in ["#1F77B4", "#FF7F0E", "#2CA02C", "#D62728"] {
            let curve = svg.lines().any(|l| {
                l.starts_with("<polyline")
                    && l.contains(&format!("stroke=\"{color}\""))
                    && l.split("points=\"")
                        .nth(1)
                        .is_some_and(|p| p.split_whitespace().count() == 3)
            });
            assert!(curve, "no 3-point curve in {color}");
        }
        let back: Summary = serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join("summary.json")).unwrap(),
        )
        .unwrap();
        let ks = |v: &VariantSummary| v.pass_at_k.as_ref().map(|p| p.pass_at_k.len());
        assert_eq!(back.base.as_ref().and_then(ks), Some(3));
        assert_eq!(
            back.variants.iter().map(ks).collect::<Vec<_>>(),
            [Some(3), Some(3), Some(3), None]
        );
    }

    #[test]
    fn grid_configs_share_settings_and_differ_by_preset_seed_and_overrides() {
        let tmp = tempfile::tempdir().unwrap();
        let s = spec(tmp.path());
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
