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

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use popo_train::metrics::{names, read_metrics, series, MetricRecord};

use crate::plot::{band_series, draw, mean_std, Chart};

pub const RUN_DONE_FILE: &str = "experiment_run.json";

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
}

/// Runs every (run, seed) cell that has not finished yet, in order. `force`: rerun all.
pub fn run_grid(spec: &ExperimentSpec, force: bool, stop: Arc<AtomicBool>) -> Result<()> {
    let total = spec.runs.len() * spec.seeds.len();
    let mut k = 0;
    for run in &spec.runs {
        for &seed in &spec.seeds {
            k += 1;
            let dir = spec.run_dir(run, seed);
            if !force && dir.join(RUN_DONE_FILE).is_file() {
                eprintln!("[{k}/{total}] {} seed {seed}: done already", run.name);
                continue;
            }
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("clearing unfinished run {}", dir.display()))?;
            }
            eprintln!(
                "[{k}/{total}] {} seed {seed} -> {}",
                run.name,
                dir.display()
            );
            let cfg = if spec.shared_warmup {
                let ck = spec.warmup(seed, stop.clone())?;
                spec.build_config(&run.preset, &run.set, seed, &dir, Some(&ck))?
            } else {
                spec.train_config(run, seed)?
            };
            let started = std::time::Instant::now();
            let mut trainer = popo_train::trainer::Trainer::new(cfg, stop.clone())?;
            let s = trainer.run()?;
            if s.interrupted {
                bail!(
                    "interrupted during {} seed {seed}; rerun the experiment to continue",
                    run.name
                );
            }
            let rec = RunRecord {
                name: run.name.clone(),
                seed,
                eval_before: s.eval_before,
                eval_after: s.eval_after,
                steps: s.steps_done,
                // The whole run: setup, warm-up, RL and evaluations.
                wall_s: started.elapsed().as_secs_f64(),
            };
            std::fs::write(dir.join(RUN_DONE_FILE), serde_json::to_string_pretty(&rec)?)?;
        }
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub variants: Vec<VariantSummary>,
    /// Plain-language comparisons of POPO against GRPO and RAFT.
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

/// Reads the finished runs and writes report.md, summary.json and plots into `out_dir`.
pub fn write_report(spec: &ExperimentSpec, command: &str) -> Result<Summary> {
    let mut variants = Vec::new();
    // variant -> metric -> per-seed series, for the plots
    let mut curves: BTreeMap<String, BTreeMap<&str, Vec<Curve>>> = BTreeMap::new();
    for run in &spec.runs {
        let (mut before, mut after, mut neg, mut pos, mut tok, mut wall) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut seeds = vec![];
        for &seed in &spec.seeds {
            let dir = spec.run_dir(run, seed);
            let done = dir.join(RUN_DONE_FILE);
            let Ok(text) = std::fs::read_to_string(&done) else {
                continue;
            };
            let rec: RunRecord = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", done.display()))?;
            let m = read_metrics(&dir)?;
            seeds.push(seed);
            before.push(rec.eval_before.unwrap_or(f64::NAN));
            after.push(rec.eval_after.unwrap_or(f64::NAN));
            wall.push(rec.wall_s);
            neg.push(mean_of(&m, names::DELTA_NEG));
            pos.push(mean_of(&m, names::DELTA_POS));
            tok.push(tokens_backprop(&m));
            let c = curves.entry(run.name.clone()).or_default();
            for metric in [names::EVAL_ACCURACY, names::REWARD_MEAN] {
                c.entry(metric).or_default().push(series(&m, metric));
            }
        }
        variants.push(VariantSummary {
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
        });
    }
    let verdicts = compare(&variants);
    let summary = Summary { variants, verdicts };

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
        for (metric, title) in [
            (names::EVAL_ACCURACY, "held-out accuracy"),
            (names::REWARD_MEAN, "train reward"),
        ] {
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
    }
    let md = render_markdown(spec, &summary, command, &plot_files);
    std::fs::write(spec.out_dir.join("report.md"), md)?;
    Ok(summary)
}

fn find<'a>(v: &'a [VariantSummary], preset: &str) -> Option<&'a VariantSummary> {
    v.iter().find(|s| s.name == preset).or_else(|| {
        v.iter()
            .find(|s| s.preset == preset && s.group == "algorithms")
    })
}

/// POPO against GRPO and RAFT: the difference of mean final accuracy, set against the spread
/// between seeds (the larger of the two standard deviations).
pub fn compare(variants: &[VariantSummary]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(popo) = find(variants, "popo").and_then(|p| Some((p, p.accuracy_after?))) else {
        return out;
    };
    for other in ["grpo", "raft"] {
        let Some((o, oa)) = find(variants, other).and_then(|o| Some((o, o.accuracy_after?))) else {
            continue;
        };
        let (pa, name) = (popo.1, &o.name);
        let diff = 100.0 * (pa.mean - oa.mean);
        let spread = 100.0 * pa.std.max(oa.std);
        let verb = if diff.abs() < 0.05 {
            "tied with"
        } else if diff > 0.0 {
            "beat"
        } else {
            "did not beat"
        };
        let within = if diff.abs() <= spread {
            "within the spread between seeds, so not a clear difference"
        } else {
            "larger than the spread between seeds"
        };
        out.push(format!(
            "POPO {verb} {name}: {:.1}% vs {:.1}% final held-out accuracy ({diff:+.1} points; \
             largest seed std {spread:.1} points: {within}; {} vs {} seeds).",
            100.0 * pa.mean,
            100.0 * oa.mean,
            pa.n,
            oa.n
        ));
    }
    out
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
    if !summary.verdicts.is_empty() {
        md.push_str("## Verdict\n\n");
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

    /// Writes the files a finished run leaves, with chosen accuracies.
    fn fake_run(spec: &ExperimentSpec, name: &str, seed: u64, after: f64) {
        let run = spec.runs.iter().find(|r| r.name == name).unwrap();
        let dir = spec.run_dir(run, seed);
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

        assert_eq!(sum.verdicts.len(), 2);
        assert!(
            sum.verdicts[0].starts_with("POPO beat grpo: 65.0% vs 42.0%")
                && sum.verdicts[0].contains("+23.0 points")
                && sum.verdicts[0].contains("larger than the spread"),
            "{}",
            sum.verdicts[0]
        );
        assert!(
            sum.verdicts[1].starts_with("POPO beat raft: 65.0% vs 64.0%")
                && sum.verdicts[1].contains("within the spread"),
            "{}",
            sum.verdicts[1]
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
        for f in [
            "algorithms_eval_accuracy.svg",
            "algorithms_eval_accuracy.png",
            "ablations_train_reward_mean.png",
        ] {
            assert!(tmp.path().join("plots").join(f).is_file(), "{f}");
        }
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
    }
}
