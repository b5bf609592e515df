//! Plain verdicts on the paper's claims, read off a grid's summary.
//!
//! Every comparison is set against the spread between seeds: a difference of two means counts
//! only when it is larger than the larger of the two seed standard deviations. Anything smaller
//! is "within the spread" and never read as a win or a loss. A claim whose runs are missing is
//! "not measured", never guessed.

use crate::experiment::{Stat, VariantSummary, BASE_NAME};

/// The methods that learn from correct completions only.
const POSITIVE_ONLY: [&str; 2] = ["popo", "raft"];
/// The methods that also learn from incorrect completions (directly or through a baseline).
const WITH_NEGATIVES: [&str; 3] = ["grpo", "nsr", "w_reinforce"];

/// The difference `a - b` of two per-seed means and the spread it is judged by.
#[derive(Debug, Clone, Copy)]
struct Gap {
    diff: f64,
    spread: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Above,
    Within,
    Below,
}

impl Gap {
    fn of(a: Stat, b: Stat) -> Gap {
        Gap {
            diff: a.mean - b.mean,
            spread: a.std.max(b.std),
        }
    }

    fn side(self) -> Side {
        if self.diff.abs() <= self.spread {
            Side::Within
        } else if self.diff > 0.0 {
            Side::Above
        } else {
            Side::Below
        }
    }

    /// `+3.1 points, seed spread 1.2` for quantities in [0, 1].
    fn points(self) -> String {
        format!(
            "{:+.1} points, seed spread {:.1}",
            100.0 * self.diff,
            100.0 * self.spread
        )
    }
}

fn pct(s: Stat) -> String {
    format!("{:.1}%", 100.0 * s.mean)
}

/// A variant by name, else the first one of that preset among the algorithms.
fn find<'a>(v: &'a [VariantSummary], name: &str) -> Option<&'a VariantSummary> {
    v.iter()
        .find(|s| s.name == name)
        .or_else(|| {
            v.iter()
                .find(|s| s.preset == name && s.group == "algorithms")
        })
        .filter(|s| !s.seeds.is_empty())
}

/// pass@1 at T = 1 (avg@n): the sampled counterpart of greedy accuracy.
fn pass1(v: &VariantSummary) -> Option<Stat> {
    v.pass_at_k.as_ref().map(|p| p.avg_at_n)
}

/// pass@k at the largest k the variant measured, with that k.
fn pass_top(v: &VariantSummary) -> Option<(usize, Stat)> {
    v.pass_at_k.as_ref()?.pass_at_k.last().copied()
}

fn not_measured(claim: &str, missing: &str) -> String {
    format!("**{claim}: not measured.** {missing}")
}

/// One sentence per claim of the paper (and of arXiv 2506.01347 on pass@k), in the order of
/// issue 15's report: POPO vs GRPO, implicit negatives, the ablations, POPO vs RAFT, pass@k.
pub fn judge(variants: &[VariantSummary], base: Option<&VariantSummary>) -> Vec<String> {
    vec![
        popo_vs(variants, "grpo", "1. POPO matches or beats GRPO", false),
        implicit_negatives(variants),
        ablations(variants),
        popo_vs(
            variants,
            "raft",
            "4. POPO is more than positive-only SFT (POPO vs RAFT)",
            true,
        ),
        pass_at_large_k(variants, base),
    ]
}

/// Claims 1 and 4: POPO against one baseline on final greedy accuracy, with pass@1 at T = 1 and
/// the cost beside it. A tie within the spread settles a claim of a match (claim 1), not one
/// that asks for more (`wants_more`, claim 4).
fn popo_vs(variants: &[VariantSummary], other: &str, claim: &str, wants_more: bool) -> String {
    let pair = find(variants, "popo").zip(find(variants, other));
    let Some(((p, pa), (o, oa))) =
        pair.and_then(|(p, o)| Some(((p, p.accuracy_after?), (o, o.accuracy_after?))))
    else {
        return not_measured(claim, &format!("Needs finished `popo` and `{other}` runs."));
    };
    let gap = Gap::of(pa, oa);
    let verdict = match (gap.side(), wants_more) {
        (Side::Above, _) => "holds",
        (Side::Within, false) => "holds (a match, within the spread)",
        (Side::Within, true) => "not shown (within the spread)",
        (Side::Below, _) => "does not hold",
    };
    let mut s = format!(
        "**{claim}: {verdict}.** Final greedy held-out accuracy {} vs {} ({}; {} vs {} seeds)",
        pct(pa),
        pct(oa),
        gap.points(),
        pa.n,
        oa.n
    );
    if let (Some(p1), Some(o1)) = (pass1(p), pass1(o)) {
        s.push_str(&format!(
            "; pass@1 at T = 1 {} vs {} ({})",
            pct(p1),
            pct(o1),
            Gap::of(p1, o1).points()
        ));
    }
    if let (Some(pt), Some(ot)) = (p.tokens_backprop_per_step, o.tokens_backprop_per_step) {
        if ot.mean > 0.0 {
            s.push_str(&format!(
                "; POPO back-propagates {:.1}x the tokens per step",
                pt.mean / ot.mean
            ));
        }
    }
    s.push('.');
    s
}

/// `delta_neg` and `delta_pos` are clearly signed when mean +- std stays on one side of zero.
fn clearly_signed(v: &VariantSummary) -> Option<(Stat, Stat, bool)> {
    let (neg, pos) = (v.delta_neg?, v.delta_pos?);
    let ok = neg.mean + neg.std < 0.0 && pos.mean - pos.std > 0.0;
    Some((neg, pos, ok))
}

/// Claim 2: held-out negatives lose log-probability while positives gain it, more under POPO.
fn implicit_negatives(variants: &[VariantSummary]) -> String {
    let claim = "2. Implicit negative gradients appear (delta_neg < 0 < delta_pos), more for POPO than for RAFT";
    let probe = |name| find(variants, name).and_then(clearly_signed);
    let (Some((pn, pp, p_ok)), Some((rn, rp, r_ok))) = (probe("popo"), probe("raft")) else {
        return not_measured(claim, "Needs `popo` and `raft` runs with the probe on.");
    };
    // "More" is judged on the raw delta_neg against the spread; the ratios to each method's
    // delta_pos are reported beside it, since raw sizes scale with each method's step size.
    let (p_ratio, r_ratio) = (-pn.mean / pp.mean, -rn.mean / rp.mean);
    let more = Gap::of(rn, pn).side();
    let verdict = match (p_ok, more) {
        (true, Side::Above) => "holds",
        (true, Side::Within) => "partly holds (they appear, not more than under RAFT)",
        (true, Side::Below) => "partly holds (they appear, but more under RAFT)",
        (false, _) => "does not hold",
    };
    format!(
        "**{claim}: {verdict}.** Mean per-token log-prob change of held-out completions per \
         optimizer step: POPO delta_neg {:.4} +- {:.4}, delta_pos {:+.4} +- {:.4} (clearly signed: \
         {}); RAFT delta_neg {:.4} +- {:.4}, delta_pos {:+.4} +- {:.4} (clearly signed: {}). \
         Negatives fall by {p_ratio:.2} of the positives' rise under POPO and {r_ratio:.2} under \
         RAFT; {}.",
        pn.mean,
        pn.std,
        pp.mean,
        pp.std,
        if p_ok { "yes" } else { "no" },
        rn.mean,
        rn.std,
        rp.mean,
        rp.std,
        if r_ok { "yes" } else { "no" },
        match more {
            Side::Above => "POPO's delta_neg is below RAFT's beyond the spread",
            Side::Within => "the two delta_neg are within the spread",
            Side::Below => "RAFT's delta_neg is below POPO's beyond the spread (the reverse)",
        }
    )
}

/// Claim 3: each ablation ends below full POPO by more than the spread.
fn ablations(variants: &[VariantSummary]) -> String {
    let claim = "3. Each POPO component is necessary";
    let Some(pa) = find(variants, "popo").and_then(|p| p.accuracy_after) else {
        return not_measured(claim, "Needs finished `popo` runs.");
    };
    let listed: Vec<&VariantSummary> = variants.iter().filter(|v| v.group == "ablations").collect();
    let unrun: Vec<&str> = listed
        .iter()
        .filter(|v| v.accuracy_after.is_none())
        .map(|v| v.name.as_str())
        .collect();
    let mut needed = 0;
    let mut parts = Vec::new();
    for v in &listed {
        let Some(a) = v.accuracy_after else { continue };
        let gap = Gap::of(pa, a);
        let call = match gap.side() {
            Side::Above => {
                needed += 1;
                "needed"
            }
            Side::Within => "not shown needed",
            Side::Below => "the ablation did better",
        };
        parts.push(format!(
            "`{}` {} ({} seeds; POPO {}: {call})",
            v.name,
            pct(a),
            a.n,
            gap.points()
        ));
    }
    if parts.is_empty() {
        return not_measured(claim, "No ablation run finished.");
    }
    let run = parts.len();
    let verdict = if needed == run && unrun.is_empty() {
        "holds".to_string()
    } else if needed == 0 {
        format!("does not hold (no component of the {run} measured)")
    } else {
        format!("partly holds ({needed} of the {run} measured components)")
    };
    let mut s = format!(
        "**{claim}: {verdict}.** Final greedy held-out accuracy, full POPO {} ({} seeds): {}.",
        pct(pa),
        pa.n,
        parts.join("; ")
    );
    if !unrun.is_empty() {
        s.push_str(&format!(" Not run: `{}`.", unrun.join("`, `")));
    }
    s
}

/// Below this pass@k (at the largest k), a run has collapsed: it answers almost nothing.
const COLLAPSED: f64 = 0.01;

fn collapsed_note(runs: &[(&str, (usize, Stat))]) -> String {
    let list: Vec<String> = runs
        .iter()
        .map(|(n, (k, s))| format!("`{n}` (pass@{k} {})", pct(*s)))
        .collect();
    format!(
        " Left out as collapsed (no correct answer left): {}.",
        list.join(", ")
    )
}

/// Claim 5 (arXiv 2506.01347): learning from positives only narrows coverage, so POPO and RAFT
/// end below the methods that use negatives at the largest k.
fn pass_at_large_k<'a>(variants: &'a [VariantSummary], base: Option<&VariantSummary>) -> String {
    let claim = "5. Positive-only methods lower pass@k at large k";
    let top = |v: &'a VariantSummary| Some((v.name.as_str(), pass_top(v)?));
    let pos: Vec<_> = POSITIVE_ONLY
        .iter()
        .filter_map(|n| find(variants, n).and_then(top))
        .collect();
    // Every variant of a method with negatives outside the ablations: the main rows and any
    // controls (e.g. at another learning rate).
    let all_neg: Vec<_> = variants
        .iter()
        .filter(|v| WITH_NEGATIVES.contains(&v.preset.as_str()) && v.group != "ablations")
        .filter_map(top)
        .collect();
    // A run that lost every answer (pass@k ~ 0) says nothing about coverage: it is named, and
    // left out of the comparison.
    let (collapsed, neg): (Vec<_>, Vec<_>) = all_neg
        .into_iter()
        .partition(|(_, (_, s))| s.mean < COLLAPSED);
    if pos.is_empty() || neg.is_empty() {
        let mut why = "Needs pass@k from a positive-only run (`popo`, `raft`) and from one that \
                       uses negatives (`grpo`, `nsr`, `w_reinforce`) and did not collapse."
            .to_string();
        if !collapsed.is_empty() {
            why.push_str(&collapsed_note(&collapsed));
        }
        return not_measured(claim, &why);
    }
    let mut sides = Vec::new();
    let mut pairs = Vec::new();
    for &(p, (kp, sp)) in &pos {
        for &(n, (kn, sn)) in &neg {
            if kp != kn {
                continue;
            }
            let gap = Gap::of(sp, sn);
            sides.push(gap.side());
            pairs.push(format!(
                "{p} vs {n} {} vs {} ({})",
                pct(sp),
                pct(sn),
                gap.points()
            ));
        }
    }
    let k = pos[0].1 .0;
    let below = sides.iter().filter(|&&s| s == Side::Below).count();
    let above = sides.iter().filter(|&&s| s == Side::Above).count();
    let verdict = if sides.is_empty() {
        "not measured (the runs sampled different n)".to_string()
    } else if below == sides.len() {
        "holds".to_string()
    } else if above == sides.len() {
        "does not hold: the reverse (positive-only ends above every method with negatives)"
            .to_string()
    } else if below == 0 && above == 0 {
        "not shown (every pair within the spread)".to_string()
    } else {
        format!(
            "mixed ({below} of {} pairs below, {above} above)",
            sides.len()
        )
    };
    let mut s = format!(
        "**{claim}: {verdict}.** pass@{k} at T = 1: {}.",
        pairs.join("; ")
    );
    if !collapsed.is_empty() {
        s.push_str(&collapsed_note(&collapsed));
    }
    // Coverage lost to training at all, whatever the method: every algorithm against the base.
    if let Some((kb, sb)) = base.and_then(pass_top).filter(|&(kb, _)| kb == k) {
        let all: Vec<Stat> = variants
            .iter()
            .filter(|v| v.group == "algorithms")
            .filter_map(pass_top)
            .filter(|&(kv, _)| kv == k)
            .map(|(_, s)| s)
            .collect();
        let under = all
            .iter()
            .filter(|&&s| Gap::of(s, sb).side() == Side::Below)
            .count();
        s.push_str(&format!(
            " The starting model (`{BASE_NAME}`) reaches {} at pass@{kb}; {under} of the {} \
             trained methods end below it beyond the spread.",
            pct(sb),
            all.len()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::PassAtKStat;

    fn stat(mean: f64, std: f64) -> Option<Stat> {
        Some(Stat { mean, std, n: 3 })
    }

    fn variant(name: &str, group: &str, acc: f64, std: f64) -> VariantSummary {
        VariantSummary {
            name: name.into(),
            preset: name.split('-').next().unwrap().into(),
            group: group.into(),
            seeds: vec![0, 1, 2],
            accuracy_before: stat(0.3, 0.05),
            accuracy_after: stat(acc, std),
            accuracy_change: None,
            delta_neg: None,
            delta_pos: None,
            tokens_backprop_per_step: None,
            wall_s: None,
            pass_at_k: None,
        }
    }

    fn with_pass(mut v: VariantSummary, p1: f64, p64: f64, std: f64) -> VariantSummary {
        v.pass_at_k = Some(PassAtKStat {
            n: 64,
            avg_at_n: stat(p1, std).unwrap(),
            pass_at_k: vec![(1, stat(p1, std).unwrap()), (64, stat(p64, std).unwrap())],
        });
        v
    }

    fn with_probe(mut v: VariantSummary, neg: (f64, f64), pos: (f64, f64)) -> VariantSummary {
        v.delta_neg = stat(neg.0, neg.1);
        v.delta_pos = stat(pos.0, pos.1);
        v
    }

    #[test]
    fn popo_vs_grpo_and_raft_is_set_against_the_spread() {
        let v = [
            variant("popo", "algorithms", 0.53, 0.02),
            variant("grpo", "algorithms", 0.36, 0.06),
            variant("raft", "algorithms", 0.50, 0.08),
        ];
        let out = judge(&v, None);
        assert!(
            out[0].starts_with("**1. POPO matches or beats GRPO: holds.**")
                && out[0].contains("53.0% vs 36.0% (+17.0 points, seed spread 6.0"),
            "{}",
            out[0]
        );
        // +3 points against a spread of 8: no claim either way, and claim 4 wants more than a tie.
        assert!(
            out[3].contains(": not shown (within the spread).**")
                && out[3].contains("+3.0 points, seed spread 8.0"),
            "{}",
            out[3]
        );
        let worse = [
            variant("popo", "algorithms", 0.30, 0.01),
            variant("grpo", "algorithms", 0.36, 0.02),
        ];
        assert!(judge(&worse, None)[0].contains(": does not hold.**"));
        let tie = [
            variant("popo", "algorithms", 0.35, 0.03),
            variant("grpo", "algorithms", 0.36, 0.02),
        ];
        assert!(judge(&tie, None)[0].contains(": holds (a match, within the spread).**"));
    }

    #[test]
    fn implicit_negatives_need_clear_signs_and_a_larger_ratio() {
        let popo = with_probe(
            variant("popo", "algorithms", 0.5, 0.0),
            (-0.02, 0.005),
            (0.04, 0.01),
        );
        let raft = with_probe(
            variant("raft", "algorithms", 0.5, 0.0),
            (-0.005, 0.002),
            (0.05, 0.01),
        );
        let out = implicit_negatives(&[popo.clone(), raft.clone()]);
        assert!(
            out.contains(": holds.**")
                && out.contains("0.50 of the positives' rise under POPO and 0.10 under"),
            "{out}"
        );
        // POPO's delta_neg within RAFT's spread: the signs hold, the "more" does not.
        let raft2 = with_probe(raft.clone(), (-0.018, 0.004), (0.05, 0.01));
        let out2 = implicit_negatives(&[popo.clone(), raft2]);
        assert!(
            out2.contains(": partly holds (they appear, not more")
                && out2.contains("within the spread"),
            "{out2}"
        );
        let raft3 = with_probe(raft.clone(), (-0.05, 0.004), (0.05, 0.01));
        let out3 = implicit_negatives(&[popo.clone(), raft3]);
        assert!(
            out3.contains("but more under RAFT)") && out3.contains("(the reverse)"),
            "{out3}"
        );
        // mean + std crosses zero: not clearly negative.
        let popo2 = with_probe(popo, (-0.002, 0.003), (0.04, 0.01));
        assert!(implicit_negatives(&[popo2, raft]).contains(": does not hold.**"));
        assert!(implicit_negatives(&[]).contains(": not measured.**"));
    }

    #[test]
    fn ablations_count_the_components_shown_needed_and_name_the_unrun() {
        let mut unrun = variant("popo-tau0", "ablations", 0.0, 0.0);
        unrun.seeds.clear();
        unrun.accuracy_after = None;
        let v = [
            variant("popo", "algorithms", 0.53, 0.02),
            variant("popo-alpha0", "ablations", 0.40, 0.03),
            variant("popo-tau1", "ablations", 0.52, 0.04),
            variant("popo-beta-ent0", "ablations", 0.60, 0.01),
            unrun,
        ];
        let out = ablations(&v);
        assert!(
            out.contains(": partly holds (1 of the 3 measured components).**"),
            "{out}"
        );
        assert!(
            out.contains(
                "`popo-alpha0` 40.0% (3 seeds; POPO +13.0 points, seed spread 3.0: needed)"
            ),
            "{out}"
        );
        assert!(out.contains("`popo-tau1` 52.0%") && out.contains("not shown needed"));
        assert!(out.contains("the ablation did better") && out.ends_with("Not run: `popo-tau0`."));
        let all = [
            variant("popo", "algorithms", 0.53, 0.02),
            variant("popo-alpha0", "ablations", 0.40, 0.03),
        ];
        assert!(ablations(&all).contains(": holds.**"));
    }

    #[test]
    fn pass_at_k_compares_every_positive_only_method_with_every_one_using_negatives() {
        let v = [
            with_pass(variant("popo", "algorithms", 0.5, 0.0), 0.42, 0.77, 0.02),
            with_pass(variant("raft", "algorithms", 0.5, 0.0), 0.44, 0.76, 0.02),
            with_pass(variant("grpo", "algorithms", 0.4, 0.0), 0.35, 0.56, 0.05),
            with_pass(variant("nsr", "algorithms", 0.4, 0.0), 0.30, 0.90, 0.01),
        ];
        let base = with_pass(variant("base", "base", 0.3, 0.0), 0.22, 0.91, 0.03);
        let out = pass_at_large_k(&v, Some(&base));
        assert!(
            out.contains(": mixed (2 of 4 pairs below, 2 above).**"),
            "{out}"
        );
        assert!(
            out.contains("popo vs grpo 77.0% vs 56.0% (+21.0 points, seed spread 5.0)"),
            "{out}"
        );
        assert!(
            out.contains("reaches 91.0% at pass@64; 3 of the 4 trained methods end below it"),
            "{out}"
        );
        let mut dead = with_pass(
            variant("w_reinforce", "algorithms", 0.0, 0.0),
            0.0,
            0.0,
            0.0,
        );
        dead.preset = "w_reinforce".into();
        let mut control = with_pass(variant("nsr-lr2e-5", "controls", 0.4, 0.0), 0.3, 0.95, 0.01);
        control.preset = "nsr".into();
        let with_dead = [v[0].clone(), dead.clone(), control];
        let out = pass_at_large_k(&with_dead, None);
        assert!(
            out.contains(": holds.**") && out.contains("popo vs nsr-lr2e-5 77.0% vs 95.0%"),
            "{out}"
        );
        assert!(
            out.ends_with(
                "Left out as collapsed (no correct answer left): `w_reinforce` (pass@64 0.0%)."
            ),
            "{out}"
        );
        let only_dead = pass_at_large_k(&[v[0].clone(), dead], None);
        assert!(
            only_dead.contains(": not measured.**") && only_dead.contains("`w_reinforce`"),
            "{only_dead}"
        );
        let below = [v[0].clone(), v[3].clone()];
        assert!(pass_at_large_k(&below, None).contains(": holds.**"));
        let above = [v[0].clone(), v[2].clone()];
        assert!(pass_at_large_k(&above, None).contains(": does not hold: the reverse"));
        assert!(pass_at_large_k(&v[..2], None).contains(": not measured.**"));
    }
}
