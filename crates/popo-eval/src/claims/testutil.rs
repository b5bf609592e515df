//! Summaries with chosen per-seed values, for the verdict tests.

use crate::summary::{PassAtKStat, SeedValues, Stat, VariantSummary};

/// A variant over seeds 0, 1, ...: per seed the endpoint `last3[i]` and the final evaluation
/// `after[i]`, started from 30%. The preset is the name up to its first `-`.
pub fn variant(name: &str, group: &str, last3: &[f64], after: &[f64]) -> VariantSummary {
    let preset = name.split('-').next().unwrap();
    let mut v = VariantSummary::empty(name, preset, group);
    for (i, (&l, &a)) in last3.iter().zip(after).enumerate() {
        v.seeds.push(i as u64);
        v.per_seed.push(SeedValues {
            seed: i as u64,
            accuracy_before: Some(0.3),
            accuracy_after: Some(a),
            accuracy_last3: Some(l),
            ..Default::default()
        });
    }
    v.eval_problems = Some(200);
    v.aggregate_seeds();
    v
}

/// The same values as endpoint and final evaluation.
pub fn flat(name: &str, group: &str, acc: &[f64]) -> VariantSummary {
    variant(name, group, acc, acc)
}

/// Per seed pass@1 (avg@n) `p1[i]` and pass@`k` `top[i]`.
pub fn with_pass(mut v: VariantSummary, k: usize, p1: &[f64], top: &[f64]) -> VariantSummary {
    for (s, (&a, &b)) in v.per_seed.iter_mut().zip(p1.iter().zip(top)) {
        s.pass_at_1 = Some(a);
        s.pass_top = Some((k, b));
    }
    v.pass_at_k = Some(PassAtKStat {
        n: k,
        avg_at_n: Stat::of(p1).unwrap(),
        pass_at_k: vec![(1, Stat::of(p1).unwrap()), (k, Stat::of(top).unwrap())],
    });
    v
}

/// Per seed the probe's `delta_neg` and `delta_pos`.
pub fn with_probe(mut v: VariantSummary, neg: &[f64], pos: &[f64]) -> VariantSummary {
    for (s, (&n, &p)) in v.per_seed.iter_mut().zip(neg.iter().zip(pos)) {
        s.delta_neg = Some(n);
        s.delta_pos = Some(p);
    }
    v.aggregate_seeds();
    v
}

/// The same rollout seconds, update seconds and tokens per step on every seed.
pub fn with_cost(mut v: VariantSummary, rollout: f64, train: f64, tokens: f64) -> VariantSummary {
    for s in &mut v.per_seed {
        s.rollout_s = Some(rollout);
        s.train_s = Some(train);
        s.tokens_backprop_per_step = Some(tokens);
    }
    v.aggregate_seeds();
    v
}

/// A learning rate and the variant's own overrides.
pub fn with_lr(mut v: VariantSummary, lr: f64, overrides: &[&str]) -> VariantSummary {
    v.lr = Some(lr);
    v.overrides = overrides.iter().map(|s| s.to_string()).collect();
    v
}
