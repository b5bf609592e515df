//! Reads a grid's finished runs (`experiment_run.json`, `metrics.jsonl`, `config.toml`) into
//! per-variant summaries, each seed's values, and the curves the report plots.

use anyhow::Result;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use popo_train::metrics::{names, read_metrics, series, MetricRecord};

use crate::experiment::{RunRecord, RunSpec};
use crate::summary::{PassAtKStat, SeedValues, Stat, VariantSummary};

/// One run's `(step, value)` points of a metric.
pub type Curve = Vec<(u64, f64)>;

/// Per metric, each seed's curve.
pub type Curves = BTreeMap<&'static str, Vec<Curve>>;

/// The pseudo-metric under which a run's pass@k-vs-k curve is kept: `(log2 k, pass@k)` points.
pub const PASS_CURVE: &str = "eval/pass@k";

/// The metrics whose curves the report plots against step.
pub const STEP_CURVES: [(&str, &str); 2] = [
    (names::EVAL_ACCURACY, "held-out accuracy"),
    (names::REWARD_MEAN, "train reward"),
];

/// How many of the last held-out evaluations the endpoint averages.
pub const ENDPOINT_EVALS: usize = 3;

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn mean_of(records: &[MetricRecord], name: &str) -> f64 {
    let s = series(records, name);
    if s.is_empty() {
        f64::NAN
    } else {
        s.iter().map(|p| p.1).sum::<f64>() / s.len() as f64
    }
}

fn sum_of(records: &[MetricRecord], name: &str) -> Option<f64> {
    let s = series(records, name);
    (!s.is_empty()).then(|| s.iter().map(|p| p.1).sum())
}

/// Mean completion tokens through the backward pass per step. Runs logged before the trainer
/// wrote `perf/tokens_backprop` carry the same count as train tokens/s x train time.
pub fn tokens_backprop(records: &[MetricRecord]) -> f64 {
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

/// The mean of the last [`ENDPOINT_EVALS`] held-out evaluations after step 0 (the evaluation at
/// step 0 is the starting model's); `None` when the curve has none after step 0.
pub fn endpoint(eval_curve: &[(u64, f64)]) -> Option<f64> {
    let after: Vec<f64> = eval_curve
        .iter()
        .filter(|p| p.0 > 0 && p.1.is_finite())
        .map(|p| p.1)
        .collect();
    let last = &after[after.len().saturating_sub(ENDPOINT_EVALS)..];
    (!last.is_empty()).then(|| last.iter().sum::<f64>() / last.len() as f64)
}

/// What a run's `config.toml` says about it, for the report.
#[derive(Debug, Default, PartialEq)]
pub struct ConfigFacts {
    pub lr: Option<f64>,
    /// The held-out size of one greedy evaluation: `run.eval_size`, capped by the built-in task's
    /// `task.n_eval` when the run has no data file.
    pub eval_problems: Option<usize>,
    /// `data.path`; None when empty (the built-in task).
    pub data: Option<String>,
}

pub fn config_facts(config: &str) -> ConfigFacts {
    let Ok(v) = toml::from_str::<toml::Value>(config) else {
        return ConfigFacts::default();
    };
    let get = |table: &str, key: &str| v.get(table).and_then(|t| t.get(key)).cloned();
    let lr = get("optim", "lr").and_then(|x| x.as_float().or(x.as_integer().map(|i| i as f64)));
    let size = get("run", "eval_size").and_then(|x| x.as_integer());
    let path = |key: &str| {
        get("data", key)
            .and_then(|p| p.as_str().map(str::to_string))
            .filter(|p| !p.is_empty())
    };
    let data = path("path");
    let builtin = path("eval_path").is_none() && data.is_none();
    let cap = get("task", "n_eval")
        .and_then(|x| x.as_integer())
        .filter(|_| builtin);
    let size = match (size, cap) {
        (Some(s), Some(c)) => Some(s.min(c)),
        (s, _) => s,
    };
    ConfigFacts {
        lr,
        eval_problems: size.and_then(|s| usize::try_from(s).ok()),
        data,
    }
}

/// One finished cell's values and curves; `None` when the cell has not finished.
fn read_cell(seed: u64, dir: &Path) -> Result<Option<(SeedValues, RunRecord, Curves)>> {
    let Some(rec) = RunRecord::read(dir)? else {
        return Ok(None);
    };
    let m = read_metrics(dir)?;
    let mut curves = Curves::new();
    for (metric, _) in STEP_CURVES {
        curves.entry(metric).or_default().push(series(&m, metric));
    }
    let eval = series(&m, names::EVAL_ACCURACY);
    let update = match (
        sum_of(&m, names::TIME_PREPARE),
        sum_of(&m, names::TIME_TRAIN),
    ) {
        (None, None) => None,
        (p, t) => Some(p.unwrap_or(0.0) + t.unwrap_or(0.0)),
    };
    let values = SeedValues {
        seed,
        accuracy_before: rec.eval_before,
        accuracy_after: rec.eval_after,
        accuracy_last3: endpoint(&eval).or(rec.eval_after.filter(|_| rec.steps > 0)),
        delta_neg: finite(mean_of(&m, names::DELTA_NEG)),
        delta_pos: finite(mean_of(&m, names::DELTA_POS)),
        tokens_backprop_per_step: finite(tokens_backprop(&m)),
        rollout_s: sum_of(&m, names::TIME_ROLLOUT),
        train_s: update,
        pass_at_1: rec.pass_at_k.as_ref().map(|p| p.avg_at_n),
        pass_top: rec
            .pass_at_k
            .as_ref()
            .and_then(|p| p.pass_at_k.last().copied()),
    };
    if let Some(p) = &rec.pass_at_k {
        let curve = p
            .pass_at_k
            .iter()
            .map(|&(k, v)| (k.ilog2() as u64, v))
            .collect();
        curves.entry(PASS_CURVE).or_default().push(curve);
    }
    Ok(Some((values, rec, curves)))
}

/// Reads one variant's finished cells (`(seed, run dir)`; unfinished ones are skipped) into its
/// summary and its per-seed curves (the step curves and the pass@k curve).
pub fn summarize(
    run: &RunSpec,
    cells: impl Iterator<Item = (u64, PathBuf)>,
) -> Result<(VariantSummary, Curves)> {
    let mut v = VariantSummary::empty(&run.name, &run.preset, &run.group);
    v.overrides = run.set.clone();
    let (mut wall, mut passes) = (vec![], vec![]);
    let mut curves = Curves::new();
    for (seed, dir) in cells {
        let Some((values, rec, c)) = read_cell(seed, &dir)? else {
            continue;
        };
        if v.seeds.is_empty() {
            if let Ok(cfg) = std::fs::read_to_string(dir.join("config.toml")) {
                let facts = config_facts(&cfg);
                (v.lr, v.eval_problems, v.data) = (facts.lr, facts.eval_problems, facts.data);
            }
        }
        v.seeds.push(seed);
        wall.push(rec.wall_s);
        for (metric, list) in c {
            curves.entry(metric).or_default().extend(list);
        }
        passes.extend(rec.pass_at_k);
        v.per_seed.push(values);
    }
    v.aggregate_seeds();
    v.wall_s = Stat::of(&wall);
    v.pass_at_k = PassAtKStat::of(&passes);
    Ok((v, curves))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The 400-step grid's POPO seed 0: evaluations at 0, ..., 300, 350, 400 end 0.52, 0.525,
    /// 0.54, so the endpoint is 0.5283; step 0 (the start) never counts.
    #[test]
    fn the_endpoint_averages_the_last_three_evaluations_after_step_0() {
        let curve = [
            (0, 0.27),
            (250, 0.51),
            (300, 0.52),
            (350, 0.525),
            (400, 0.54),
        ];
        assert!((endpoint(&curve).unwrap() - 1.585 / 3.0).abs() < 1e-12);
        assert_eq!(endpoint(&[(0, 0.27), (40, 0.5)]), Some(0.5));
        assert_eq!(endpoint(&[(0, 0.3), (5, 0.4), (10, 0.6)]), Some(0.5));
        assert_eq!(endpoint(&[(0, 0.27)]), None);
        assert_eq!(endpoint(&[]), None);
    }

    #[test]
    fn config_facts_read_the_lr_and_the_held_out_size() {
        let builtin = "[run]\neval_size = 200\n[optim]\nlr = 0.0002\n[data]\npath = \"\"\n\
                       eval_path = \"\"\n[task]\nn_eval = 150\n";
        let facts = |lr, eval_problems, data: Option<&str>| ConfigFacts {
            lr,
            eval_problems,
            data: data.map(str::to_string),
        };
        assert_eq!(config_facts(builtin), facts(Some(0.0002), Some(150), None));
        let file = "[run]\neval_size = 100\n[optim]\nlr = 1e-5\n[data]\npath = \"x.jsonl\"\n\
                    eval_path = \"y.jsonl\"\n[task]\nn_eval = 20\n";
        assert_eq!(
            config_facts(file),
            facts(Some(1e-5), Some(100), Some("x.jsonl"))
        );
        assert_eq!(config_facts("not toml ["), facts(None, None, None));
        assert_eq!(
            config_facts("[optim]\nlr = 1\n"),
            facts(Some(1.0), None, None)
        );
    }
}
