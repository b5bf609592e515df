//! What a grid's report is made of: per-variant numbers over seeds, and each seed's own values
//! (for comparisons paired by seed). Shared by the code that reads the runs (`collect`), the
//! verdicts (`claims`) and the report (`report`); it depends on none of them.

use serde::{Deserialize, Serialize};

use popo_model::passk::PassAtK;

use crate::plot::mean_std;

/// The name of the base cells (`<out_dir>/base/s<seed>`) in records and reports.
pub const BASE_NAME: &str = "base";

/// Mean and sample std over seeds of one quantity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl Stat {
    /// Over the finite values; `None` when there is none.
    pub fn of(values: &[f64]) -> Option<Stat> {
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

/// One finished run's values (one seed of a variant).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeedValues {
    pub seed: u64,
    /// Greedy held-out accuracy before and after training.
    pub accuracy_before: Option<f64>,
    pub accuracy_after: Option<f64>,
    /// The endpoint: the mean of the last three held-out evaluations after step 0 (of fewer when
    /// the run made fewer; the final one when the curve has none).
    pub accuracy_last3: Option<f64>,
    /// Mean over the run's probe steps.
    pub delta_neg: Option<f64>,
    pub delta_pos: Option<f64>,
    pub tokens_backprop_per_step: Option<f64>,
    /// Seconds summed over the run's steps: sampling (rollout), and the update with its
    /// preparation (old / reference / target forwards, forward, backward, optimizer).
    pub rollout_s: Option<f64>,
    pub train_s: Option<f64>,
    /// pass@1 at T = 1 (avg@n) after training.
    pub pass_at_1: Option<f64>,
    /// pass@k at the largest k measured, with that k.
    pub pass_top: Option<(usize, f64)>,
}

/// One variant's numbers over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantSummary {
    pub name: String,
    pub preset: String,
    pub group: String,
    /// The variant's own overrides (`set` in the experiment file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<String>,
    pub seeds: Vec<u64>,
    pub accuracy_before: Option<Stat>,
    pub accuracy_after: Option<Stat>,
    /// After minus before, per seed (each seed's variants share one warm-up, so this pairs them).
    pub accuracy_change: Option<Stat>,
    /// The endpoint of the verdicts: the mean of each run's last three held-out evaluations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_last3: Option<Stat>,
    /// Mean over the run's probe steps, then over seeds.
    pub delta_neg: Option<Stat>,
    pub delta_pos: Option<Stat>,
    pub tokens_backprop_per_step: Option<Stat>,
    pub wall_s: Option<Stat>,
    /// Sampling and update seconds per run (summed over its steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_s: Option<Stat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_s: Option<Stat>,
    /// pass@k and avg@n after training, over the seeds that measured it (absent in older runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_at_k: Option<PassAtKStat>,
    /// The learning rate of the variant's runs (`optim.lr` of its first run's config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Held-out problems in one greedy evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_problems: Option<usize>,
    /// The training data of the variant's runs (`data.path` of its first run's config); absent
    /// for the built-in task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Each finished seed's values, in seed order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_seed: Vec<SeedValues>,
}

impl VariantSummary {
    /// An empty summary (no finished seed) of a variant.
    pub fn empty(name: &str, preset: &str, group: &str) -> Self {
        VariantSummary {
            name: name.into(),
            preset: preset.into(),
            group: group.into(),
            overrides: Vec::new(),
            seeds: Vec::new(),
            accuracy_before: None,
            accuracy_after: None,
            accuracy_change: None,
            accuracy_last3: None,
            delta_neg: None,
            delta_pos: None,
            tokens_backprop_per_step: None,
            wall_s: None,
            rollout_s: None,
            train_s: None,
            pass_at_k: None,
            lr: None,
            eval_problems: None,
            data: None,
            per_seed: Vec::new(),
        }
    }

    /// Sets the per-variant statistics of the per-seed quantities from `per_seed` (all but the
    /// wall time and pass@k, which come from the run records).
    pub fn aggregate_seeds(&mut self) {
        let over = |f: &dyn Fn(&SeedValues) -> Option<f64>| {
            let vals: Vec<f64> = self.per_seed.iter().filter_map(f).collect();
            Stat::of(&vals)
        };
        self.accuracy_before = over(&|s| s.accuracy_before);
        self.accuracy_after = over(&|s| s.accuracy_after);
        self.accuracy_change = over(&|s| Some(s.accuracy_after? - s.accuracy_before?));
        self.accuracy_last3 = over(&|s| s.accuracy_last3);
        self.delta_neg = over(&|s| s.delta_neg);
        self.delta_pos = over(&|s| s.delta_pos);
        self.tokens_backprop_per_step = over(&|s| s.tokens_backprop_per_step);
        self.rollout_s = over(&|s| s.rollout_s);
        self.train_s = over(&|s| s.train_s);
    }

    /// `(seed, value)` of one per-seed quantity, over the seeds that have it.
    pub fn by_seed(&self, value: impl Fn(&SeedValues) -> Option<f64>) -> Vec<(u64, f64)> {
        self.per_seed
            .iter()
            .filter_map(|s| Some((s.seed, value(s)?)))
            .collect()
    }
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
    pub fn of(seeds: &[PassAtK]) -> Option<Self> {
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

/// How a grid's settings were chosen (the experiment file's `tuning`), which its report states
/// beside every comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tuning {
    /// The shared settings (the `popo train` defaults) were tuned on POPO alone, and a run
    /// differs from them only where its `set` says: every comparison favours POPO.
    #[default]
    Popo,
    /// Each method runs at the learning rate its own sweep chose by one rule (the experiment
    /// file says which); the other settings are shared and were tuned for no one method.
    PerMethod,
}

/// What the report's sentences need to know of the grid besides its runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grid {
    /// The variants of a seed start from one SFT warm-up (`shared_warmup`); otherwise from the
    /// starting model itself.
    pub warmup: bool,
    pub tuning: Tuning,
}

impl Grid {
    /// What a seed's runs start from, for sentences: "the seed's warm-up" or "the starting model".
    pub fn start(&self) -> &'static str {
        match self.warmup {
            true => "the seed's warm-up",
            false => "the starting model",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub variants: Vec<VariantSummary>,
    /// The starting model (after any warm-up), measured by the base cells; absent when the grid
    /// has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<VariantSummary>,
    /// How the verdicts compare methods (`crate::claims::method_note`).
    #[serde(default)]
    pub verdict_method: String,
    /// A plain verdict on each of the paper's claims (`crate::claims`).
    pub verdicts: Vec<String>,
}
