//! Claim 5 (arXiv 2506.01347): learning from positives only narrows coverage, so POPO and RAFT
//! end below the methods that use negatives at the largest k. Beside it, every method against
//! the starting model, paired by seed.

use super::common::{find, not_measured, pct, POSITIVE_ONLY, WITH_NEGATIVES};
use crate::stats::{paired, Call, Paired, Unit};
use crate::summary::{Stat, VariantSummary, BASE_NAME};

/// Below this pass@k (at the largest k), a run has collapsed: it answers almost nothing.
const COLLAPSED: f64 = 0.01;

/// A variant's pass@k at its largest k, with that k.
fn top(v: &VariantSummary) -> Option<(usize, Stat)> {
    v.pass_at_k.as_ref()?.pass_at_k.last().copied()
}

/// Each seed's pass@`k`.
fn at_k(v: &VariantSummary, k: usize) -> Vec<(u64, f64)> {
    v.by_seed(|s| s.pass_top.filter(|t| t.0 == k).map(|t| t.1))
}

fn collapsed_note(runs: &[(&VariantSummary, usize, Stat)]) -> String {
    let list: Vec<String> = runs
        .iter()
        .map(|(v, k, s)| format!("`{}` (pass@{k} {})", v.name, pct(s.mean)))
        .collect();
    format!(
        " Left out as collapsed (no correct answer left, so they say nothing about coverage): {}.",
        list.join(", ")
    )
}

/// `of 4 pairs: 2 below, 2 above`: the calls counted, zero counts left out.
fn tally(calls: &[Call], what: &str) -> String {
    let mut parts = Vec::new();
    for (call, word) in [
        (Call::Below, "below"),
        (Call::Above, "above"),
        (Call::NotSeparated, "not separated"),
        (Call::TooFewSeeds, "with too few seeds"),
    ] {
        let n = calls.iter().filter(|&&c| c == call).count();
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    format!("of {} {what}: {}", calls.len(), parts.join(", "))
}

fn verdict(calls: &[Call]) -> String {
    let all = |c| calls.iter().all(|&x| x == c);
    let any = |c| calls.contains(&c);
    if calls.is_empty() {
        "not measured (the runs sampled different n)".into()
    } else if all(Call::Below) {
        "holds".into()
    } else if all(Call::Above) {
        "does not hold: the reverse (positive-only ends above every method with negatives)".into()
    } else if all(Call::TooFewSeeds) {
        "too few seeds".into()
    } else if !any(Call::Below) && !any(Call::Above) {
        "not shown (no pair separated)".into()
    } else {
        format!("mixed ({})", tally(calls, "pairs"))
    }
}

pub(super) fn pass_at_large_k(
    variants: &[VariantSummary],
    base: Option<&VariantSummary>,
) -> String {
    let claim = "5. Positive-only methods lower pass@k at large k";
    // Every method outside the ablations that measured pass@k: the main rows and any controls.
    let measured: Vec<(&VariantSummary, usize, Stat)> = variants
        .iter()
        .filter(|v| v.group != "ablations")
        .filter_map(|v| top(v).map(|(k, s)| (v, k, s)))
        .collect();
    // A run that lost every answer (pass@k ~ 0) says nothing about coverage: it is named, and
    // left out of every comparison.
    let (collapsed, live): (Vec<_>, Vec<_>) = measured
        .into_iter()
        .partition(|(_, _, s)| s.mean < COLLAPSED);
    let pos: Vec<_> = POSITIVE_ONLY
        .iter()
        .filter_map(|n| find(variants, n))
        .filter_map(|p| live.iter().find(|x| x.0.name == p.name).copied())
        .collect();
    let neg: Vec<_> = live
        .iter()
        .filter(|x| WITH_NEGATIVES.contains(&x.0.preset.as_str()))
        .copied()
        .collect();
    let note = if collapsed.is_empty() {
        String::new()
    } else {
        collapsed_note(&collapsed)
    };
    if pos.is_empty() || neg.is_empty() {
        let why = format!(
            "Needs pass@k from a positive-only run (`popo`, `raft`) and from one that uses \
             negatives (`{}`) and did not collapse.{note}",
            WITH_NEGATIVES.join("`, `")
        );
        return not_measured(claim, &why);
    }
    let (mut calls, mut pairs) = (Vec::new(), Vec::new());
    for (p, kp, _) in &pos {
        for (n, kn, _) in &neg {
            if kp != kn {
                continue;
            }
            let d = paired(&at_k(p, *kp), &at_k(n, *kn));
            calls.push(d.call());
            pairs.push(d.describe(&format!("{} - {}", p.name, n.name), Unit::Points));
        }
    }
    let k = pos[0].1;
    let mut s = format!(
        "**{claim}: {}.** pass@{k} at T = 1, paired by seed: {}.{note}",
        verdict(&calls),
        pairs.join("; ")
    );
    if let Some(b) = base {
        s.push_str(&against_base(&live, b, k));
    }
    s
}

/// Every method that did not collapse against the starting model at pass@`k`, paired by seed.
fn against_base(
    live: &[(&VariantSummary, usize, Stat)],
    base: &VariantSummary,
    k: usize,
) -> String {
    let Some((_, sb)) = top(base).filter(|&(kb, _)| kb == k) else {
        return String::new();
    };
    let diffs: Vec<Paired> = live
        .iter()
        .filter(|x| x.1 == k)
        .map(|(v, _, _)| paired(&at_k(v, k), &at_k(base, k)))
        .collect();
    let text: Vec<String> = live
        .iter()
        .filter(|x| x.1 == k)
        .zip(&diffs)
        .map(|((v, _, _), d)| d.describe(&format!("{} - {BASE_NAME}", v.name), Unit::Points))
        .collect();
    let calls: Vec<Call> = diffs.iter().map(Paired::call).collect();
    format!(
        " Against the starting model (`{BASE_NAME}`, {} at pass@{k}), every method that did not \
         collapse, paired by seed: {}; {}.",
        pct(sb.mean),
        text.join("; "),
        tally(&calls, "methods")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::testutil::{flat, with_pass};

    fn method(name: &str, group: &str, preset: &str, p64: &[f64]) -> VariantSummary {
        let mut v = with_pass(flat(name, group, &[0.5; 3]), 64, &[0.4; 3], p64);
        v.preset = preset.into();
        v
    }

    fn grid() -> Vec<VariantSummary> {
        vec![
            method("popo", "algorithms", "popo", &[0.80, 0.75, 0.77]),
            method("raft", "algorithms", "raft", &[0.78, 0.72, 0.79]),
            method("grpo", "algorithms", "grpo", &[0.55, 0.50, 0.62]),
            method("nsr", "algorithms", "nsr", &[0.0, 0.0, 0.0]),
            method("nsr-lr2e-5", "controls", "nsr", &[0.88, 0.86, 0.89]),
            method("popo-tau0", "ablations", "popo", &[0.1, 0.1, 0.1]),
        ]
    }

    /// popo - grpo 25, 25, 15: [+7.3, +36.0]; popo - nsr-lr2e-5 -8, -11, -12: [-15.5, -5.2];
    /// raft - grpo 23, 22, 17: [+12.7, +28.7]; raft - nsr-lr2e-5 -10, -14, -10: [-17.1, -5.6].
    /// Against the base 93 / 90 / 91: popo -13, -15, -14 ([-16.5, -11.5]); nsr-lr2e-5 -5, -4, -2
    /// ([-7.5, +0.1]).
    #[test]
    fn claim_5_pairs_positive_only_with_negatives_and_every_method_with_the_base() {
        let base = method(BASE_NAME, BASE_NAME, "popo", &[0.93, 0.90, 0.91]);
        let out = pass_at_large_k(&grid(), Some(&base));
        assert!(
            out.starts_with(
                "**5. Positive-only methods lower pass@k at large k: mixed (of 4 pairs: 2 below, \
                 2 above).** pass@64 at T = 1, paired by seed: popo - grpo: +21.7 points (seeds \
                 0, 1, 2: +25.0, +25.0, +15.0; 95% CI [+7.3, +36.0], paired t = 6.50, p = 0.023, \
                 n = 3); popo - nsr-lr2e-5: -10.3 points"
            ),
            "{out}"
        );
        assert!(out.contains("raft - nsr-lr2e-5: -11.3 points (seeds 0, 1, 2: -10.0, -14.0, -10.0; 95% CI [-17.1, -5.6]"));
        assert!(
            out.contains(
                "Left out as collapsed (no correct answer left, so they say nothing about \
                 coverage): `nsr` (pass@64 0.0%). Against the starting model (`base`, 91.3% at \
                 pass@64), every method that did not collapse, paired by seed: popo - base: \
                 -14.0 points (seeds 0, 1, 2: -13.0, -15.0, -14.0; 95% CI [-16.5, -11.5]"
            ),
            "{out}"
        );
        assert!(
            out.contains("nsr-lr2e-5 - base: -3.7 points (seeds 0, 1, 2: -5.0, -4.0, -2.0; 95% CI [-7.5, +0.1]")
                && out.ends_with("; of 4 methods: 3 below, 1 not separated."),
            "{out}"
        );
        assert!(!out.contains("popo-tau0") && !out.contains("nsr - "));
    }

    #[test]
    fn claim_5_verdicts() {
        let v = grid();
        let pick = |idx: &[usize]| idx.iter().map(|&i| v[i].clone()).collect::<Vec<_>>();
        assert!(pass_at_large_k(&pick(&[0, 4]), None).contains(": holds.**"));
        let out = pass_at_large_k(&pick(&[0, 1, 2]), None);
        assert!(out.contains(": does not hold: the reverse"), "{out}");
        assert!(!out.contains("Against the starting model"));
        // popo - nsr2: 80 - 79, 75 - 78, 77 - 76: +1, -3, +1.
        let near = method("nsr2", "controls", "nsr", &[0.79, 0.78, 0.76]);
        let out = pass_at_large_k(&[v[0].clone(), near], None);
        assert!(out.contains(": not shown (no pair separated).**"), "{out}");
        let two =
            |name: &str, p: &[f64]| with_pass(flat(name, "algorithms", &[0.5, 0.5]), 64, p, p);
        let out = pass_at_large_k(&[two("popo", &[0.8, 0.7]), two("grpo", &[0.5, 0.5])], None);
        assert!(out.contains(": too few seeds.**"), "{out}");
        let mixed = [
            v[0].clone(),
            v[2].clone(),
            method("nsr2", "controls", "nsr", &[0.79, 0.78, 0.76]),
        ];
        assert!(pass_at_large_k(&mixed, None)
            .contains(": mixed (of 2 pairs: 1 above, 1 not separated).**"));
        let dead = pick(&[0, 3]);
        let out = pass_at_large_k(&dead, None);
        assert!(
            out.contains(": not measured.**") && out.ends_with("`nsr` (pass@64 0.0%)."),
            "{out}"
        );
        assert!(pass_at_large_k(&pick(&[0, 1]), None).contains(": not measured.**"));
        // Different n: no pair to compare.
        let mut other_k = v[2].clone();
        other_k.pass_at_k.as_mut().unwrap().pass_at_k[1].0 = 32;
        let out = pass_at_large_k(&[v[0].clone(), other_k], None);
        assert!(
            out.contains(": not measured (the runs sampled different n).**"),
            "{out}"
        );
    }
}
