//! Claims 1 and 4: POPO against its baselines (the GRPO family; RAFT) on held-out accuracy, with
//! pass@1 at T = 1 and the cost beside it, at the shared settings and, when the grid ran a
//! baseline at other learning rates, at that baseline's best one.

use super::common::{
    accuracy_comparison, endpoint_diff, final_diff, find, not_measured, pct, quoted, with_call,
    GRPO_FAMILY,
};
use crate::stats::{paired, Call, Unit};
use crate::summary::{Stat, Tuning, VariantSummary};

/// Claim 1: POPO against every baseline of the GRPO family that ran.
pub(super) fn popo_vs_grpo_family(variants: &[VariantSummary], tuning: Tuning) -> String {
    let claim = "1. POPO matches or beats the GRPO family (GRPO, Dr. GRPO, DAPO)";
    let Some(popo) = find(variants, "popo") else {
        return not_measured(claim, "Needs finished `popo` runs.");
    };
    let others: Vec<&VariantSummary> = GRPO_FAMILY
        .iter()
        .filter_map(|n| find(variants, n))
        .collect();
    if others.is_empty() {
        return not_measured(claim, "Needs finished `grpo`, `dr_grpo` or `dapo` runs.");
    }
    let (mut calls, mut texts, mut best_calls, mut best_texts) = (vec![], vec![], vec![], vec![]);
    for o in &others {
        let (call, text) = versus(popo, o);
        calls.push((o.name.as_str(), call));
        texts.push(text);
        if let Some((b, call, text)) = at_best_lr(variants, popo, o) {
            best_calls.push((b, call));
            best_texts.push(text);
        }
    }
    let mut verdict = family_verdict(&calls);
    if !best_calls.is_empty() {
        verdict.push_str(&format!(
            "; at the baselines' best learning rates: {}",
            call_parts(&best_calls)
        ));
    }
    let mut s = format!(
        "**{claim}: {verdict}.** {}: {}.",
        settings(tuning),
        texts.join("; ")
    );
    let unrun: Vec<&str> = GRPO_FAMILY
        .into_iter()
        .filter(|n| find(variants, n).is_none())
        .collect();
    if !unrun.is_empty() {
        s.push_str(&format!(" Not run: {}.", quoted(&unrun)));
    }
    s.push_str(&cost(popo, &others));
    s.push_str(&best_lr_note(&best_texts, tuning));
    s
}

/// Claim 4: POPO against RAFT, which trains on the same positives with plain NLL.
pub(super) fn popo_vs_raft(variants: &[VariantSummary], tuning: Tuning) -> String {
    let claim = "4. POPO is more than positive-only SFT (POPO vs RAFT)";
    let (Some(popo), Some(raft)) = (find(variants, "popo"), find(variants, "raft")) else {
        return not_measured(claim, "Needs finished `popo` and `raft` runs.");
    };
    let word = |call| match call {
        Call::Above => "holds",
        Call::NotSeparated => "not shown (not separated)",
        Call::Below => "does not hold (RAFT above)",
        Call::TooFewSeeds => "too few seeds",
    };
    let (call, text) = versus(popo, raft);
    let best = at_best_lr(variants, popo, raft);
    let mut verdict = word(call).to_string();
    if let Some((name, call, _)) = &best {
        verdict.push_str(&format!(
            "; at RAFT's best learning rate (`{name}`): {}",
            word(*call)
        ));
    }
    let mut s = format!("**{claim}: {verdict}.** {}: {text}.", settings(tuning));
    s.push_str(&cost(popo, &[raft]));
    s.push_str(&best_lr_note(
        &best.map(|b| b.2).into_iter().collect::<Vec<_>>(),
        tuning,
    ));
    s
}

/// POPO against one baseline: the call on the endpoint and the comparison written out
/// (endpoint, final evaluation, pass@1 at T = 1).
fn versus(popo: &VariantSummary, other: &VariantSummary) -> (Call, String) {
    let end = endpoint_diff(popo, other);
    let fin = final_diff(popo, other);
    // A pattern the interval does not show, beside the endpoint.
    let every = match end.call() {
        Call::NotSeparated if end.every_seed(-1.0) => {
            format!(" (`{}` ends higher on every seed)", other.name)
        }
        Call::NotSeparated if end.every_seed(1.0) => " (POPO ends higher on every seed)".into(),
        _ => String::new(),
    };
    let mut s = format!(
        "vs `{}`{}: endpoint {}{every}; {}",
        other.name,
        overrides_note(other),
        end.describe(&format!("POPO - {}", other.name), Unit::Points),
        fin.describe("final evaluation", Unit::Points)
    );
    let p1 = paired(
        &popo.by_seed(|x| x.pass_at_1),
        &other.by_seed(|x| x.pass_at_1),
    );
    if p1.n > 0 {
        s.push_str(&format!(
            "; {}",
            p1.describe("pass@1 at T = 1", Unit::Points)
        ));
    }
    (end.call(), s)
}

fn overrides_note(v: &VariantSummary) -> String {
    if v.overrides.is_empty() {
        String::new()
    } else {
        format!(" (`{}`)", v.overrides.join("`, `"))
    }
}

/// `above `a`; not separated from `b``: the names grouped by call.
fn call_parts(calls: &[(&str, Call)]) -> String {
    let mut parts = Vec::new();
    for (call, words) in [
        (Call::Above, "above"),
        (Call::NotSeparated, "not separated from"),
        (Call::Below, "below"),
        (Call::TooFewSeeds, "too few seeds against"),
    ] {
        let names = with_call(calls, call);
        if !names.is_empty() {
            parts.push(format!("{words} {}", quoted(&names)));
        }
    }
    parts.join("; ")
}

/// Claim 1's verdict over its baselines: it holds when POPO ends above every one, fails when it
/// ends below any.
fn family_verdict(calls: &[(&str, Call)]) -> String {
    let count = |c| calls.iter().filter(|x| x.1 == c).count();
    let head = if count(Call::Below) > 0 {
        "does not hold"
    } else if count(Call::Above) == calls.len() {
        "holds"
    } else if count(Call::Above) > 0 {
        "partly holds"
    } else if count(Call::TooFewSeeds) == calls.len() {
        "too few seeds"
    } else {
        "not shown"
    };
    format!("{head} ({})", call_parts(calls))
}

/// The variants that differ from `base` only in `optim.lr` (same preset, outside the
/// ablations), `base` first.
fn lr_variants<'a>(
    variants: &'a [VariantSummary],
    base: &'a VariantSummary,
) -> Vec<&'a VariantSummary> {
    let rest = |v: &VariantSummary| -> Vec<String> {
        v.overrides
            .iter()
            .filter(|kv| !kv.trim_start().starts_with("optim.lr="))
            .cloned()
            .collect()
    };
    let mut out = vec![base];
    out.extend(variants.iter().filter(|v| {
        v.name != base.name
            && v.preset == base.preset
            && v.group != "ablations"
            && !v.seeds.is_empty()
            && v.overrides.len() > rest(v).len()
            && rest(v) == rest(base)
    }));
    out
}

fn lr_text(v: &VariantSummary) -> String {
    v.lr.map_or("lr ?".into(), |lr| format!("lr {lr:e}"))
}

/// POPO against `other` at `other`'s best learning rate, when the grid ran it at more than one:
/// the best is the highest mean endpoint over seeds (the rule the verdicts use). Returns the
/// variant picked, the call and the comparison written out.
fn at_best_lr<'a>(
    variants: &'a [VariantSummary],
    popo: &VariantSummary,
    other: &'a VariantSummary,
) -> Option<(&'a str, Call, String)> {
    let candidates: Vec<(&VariantSummary, Stat)> = lr_variants(variants, other)
        .into_iter()
        .filter_map(|v| Some((v, v.accuracy_last3?)))
        .collect();
    if candidates.len() < 2 {
        return None;
    }
    let (best, _) = candidates
        .iter()
        .copied()
        .max_by(|a, b| a.1.mean.total_cmp(&b.1.mean))?;
    let listed: Vec<String> = candidates
        .iter()
        .map(|(v, st)| format!("`{}` {} {}", v.name, lr_text(v), pct(st.mean)))
        .collect();
    let end = endpoint_diff(popo, best);
    let fin = final_diff(popo, best);
    let text = format!(
        "`{}`'s best learning rate by the mean endpoint over seeds, among {}: `{}` ({}){}",
        other.name,
        listed.join(", "),
        best.name,
        lr_text(best),
        if best.name == other.name {
            ", the shared one, so the comparison above stands".to_string()
        } else {
            format!(
                ": {}",
                accuracy_comparison(&format!("POPO - {}", best.name), &end, &fin)
            )
        }
    );
    Some((best.name.as_str(), end.call(), text))
}

/// Where the comparisons were made, as the sentence opening them says it.
fn settings(tuning: Tuning) -> &'static str {
    match tuning {
        Tuning::Popo => "At the shared settings (tuned on POPO)",
        Tuning::PerMethod => "Each at its own learning rate",
    }
}

fn best_lr_note(texts: &[String], tuning: Tuning) -> String {
    match (texts.is_empty(), tuning) {
        (true, Tuning::Popo) => " No baseline was run at another learning rate, so every \
                                 comparison is at the settings tuned on POPO."
            .into(),
        (true, Tuning::PerMethod) => String::new(),
        (false, Tuning::Popo) => format!(
            " {}. (Picking the best of several learning rates favours the baseline, as the shared \
             settings favour POPO.)",
            texts.join("; ")
        ),
        (false, Tuning::PerMethod) => format!(" {}.", texts.join("; ")),
    }
}

/// Per-run cost beside each comparison, mean over seeds.
fn cost(popo: &VariantSummary, others: &[&VariantSummary]) -> String {
    let ratio = |a: Option<Stat>, b: Option<Stat>| match (a, b) {
        (Some(a), Some(b)) if b.mean > 0.0 => format!(" ({:.1}x POPO's)", a.mean / b.mean),
        _ => String::new(),
    };
    let secs = |s: Option<Stat>| s.map_or("-".into(), |s| format!("{:.0} s", s.mean));
    let tokens = |s: Option<Stat>| s.map_or("-".into(), |s| format!("{:.0}", s.mean));
    let mut parts = vec![format!(
        "POPO rollout {}, update {}, {} tokens back-propagated per step",
        secs(popo.rollout_s),
        secs(popo.train_s),
        tokens(popo.tokens_backprop_per_step)
    )];
    for o in others {
        parts.push(format!(
            "`{}` rollout {}{}, update {}{}, {} tokens{}",
            o.name,
            secs(o.rollout_s),
            ratio(o.rollout_s, popo.rollout_s),
            secs(o.train_s),
            ratio(o.train_s, popo.train_s),
            tokens(o.tokens_backprop_per_step),
            ratio(o.tokens_backprop_per_step, popo.tokens_backprop_per_step)
        ));
    }
    format!(
        " Cost per run (mean over seeds; rollout: sampling, update: the forwards, backward and \
         optimizer): {}.",
        parts.join("; ")
    )
}

#[cfg(test)]
#[path = "methods_tests.rs"]
mod tests;
