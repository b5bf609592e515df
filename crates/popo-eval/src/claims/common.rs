//! What the claims share: the method groups, finding a variant, the paired accuracy comparisons
//! and the wording. A module of its own so that the claims import it and `claims` (which calls
//! every claim) is imported by none of them.

use crate::stats::{paired, Call, Paired, Unit};
use crate::summary::VariantSummary;

/// The methods that learn from correct completions only.
pub(super) const POSITIVE_ONLY: [&str; 2] = ["popo", "raft"];
/// The methods that also learn from incorrect completions (directly or through a baseline).
pub(super) const WITH_NEGATIVES: [&str; 5] = ["grpo", "dr_grpo", "dapo", "nsr", "w_reinforce"];
/// The GRPO family, POPO's baselines in claim 1.
pub(super) const GRPO_FAMILY: [&str; 3] = ["grpo", "dr_grpo", "dapo"];

pub(super) fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

pub(super) fn not_measured(claim: &str, missing: &str) -> String {
    format!("**{claim}: not measured.** {missing}")
}

/// A variant by name, else the first one of that preset among the algorithms; only with a
/// finished seed.
pub(super) fn find<'a>(v: &'a [VariantSummary], name: &str) -> Option<&'a VariantSummary> {
    v.iter()
        .find(|s| s.name == name)
        .or_else(|| {
            v.iter()
                .find(|s| s.preset == name && s.group == "algorithms")
        })
        .filter(|s| !s.seeds.is_empty())
}

/// `a - b` on the endpoint (the mean of the last three held-out evaluations).
pub(super) fn endpoint_diff(a: &VariantSummary, b: &VariantSummary) -> Paired {
    paired(
        &a.by_seed(|s| s.accuracy_last3),
        &b.by_seed(|s| s.accuracy_last3),
    )
}

/// `a - b` on the final held-out evaluation.
pub(super) fn final_diff(a: &VariantSummary, b: &VariantSummary) -> Paired {
    paired(
        &a.by_seed(|s| s.accuracy_after),
        &b.by_seed(|s| s.accuracy_after),
    )
}

/// The endpoint comparison written out, the final evaluation beside it.
pub(super) fn accuracy_comparison(label: &str, end: &Paired, fin: &Paired) -> String {
    let fin_text = fin.describe("final evaluation", Unit::Points);
    format!("endpoint {}; {fin_text}", end.describe(label, Unit::Points))
}

/// `` `a`, `b` `` for a list of names.
pub(super) fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The names of `calls` that made `call`.
pub(super) fn with_call<'a>(calls: &[(&'a str, Call)], call: Call) -> Vec<&'a str> {
    calls.iter().filter(|c| c.1 == call).map(|c| c.0).collect()
}
