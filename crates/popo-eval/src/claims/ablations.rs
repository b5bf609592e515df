//! Claim 3: each POPO component is necessary: full POPO ends above every ablation.

use super::common::{
    accuracy_comparison, endpoint_diff, final_diff, find, not_measured, pct, quoted,
};
use crate::stats::{Call, MIN_PAIRS};
use crate::summary::VariantSummary;

pub(super) fn ablations(variants: &[VariantSummary]) -> String {
    let claim = "3. Each POPO component is necessary";
    let Some(popo) = find(variants, "popo").filter(|p| p.accuracy_last3.is_some()) else {
        return not_measured(claim, "Needs finished `popo` runs.");
    };
    let listed: Vec<&VariantSummary> = variants.iter().filter(|v| v.group == "ablations").collect();
    let unrun: Vec<&str> = listed
        .iter()
        .filter(|v| v.accuracy_last3.is_none())
        .map(|v| v.name.as_str())
        .collect();
    let (mut needed, mut apart, mut few, mut better) = (0, 0, 0, 0);
    let mut parts = Vec::new();
    for v in listed.iter().filter(|v| v.accuracy_last3.is_some()) {
        let end = endpoint_diff(popo, v);
        let call = match end.call() {
            Call::Above => {
                needed += 1;
                "needed"
            }
            Call::NotSeparated => {
                apart += 1;
                "not shown needed"
            }
            Call::Below => {
                better += 1;
                "the ablation did better"
            }
            Call::TooFewSeeds => {
                few += 1;
                "too few seeds"
            }
        };
        parts.push(format!(
            "`{}` {} ({}): {call}",
            v.name,
            pct(v.accuracy_last3.map_or(f64::NAN, |s| s.mean)),
            accuracy_comparison(&format!("POPO - {}", v.name), &end, &final_diff(popo, v))
        ));
    }
    if parts.is_empty() {
        return not_measured(claim, "No ablation run finished.");
    }
    let run = parts.len();
    let verdict = if needed == run && unrun.is_empty() {
        "holds".to_string()
    } else if needed == 0 {
        let mut why = Vec::new();
        if apart > 0 {
            why.push(format!("{apart} not separated"));
        }
        if better > 0 {
            why.push(format!("{better} did better without it"));
        }
        if few > 0 {
            why.push(format!("{few} with fewer than {MIN_PAIRS} seeds"));
        }
        format!(
            "not shown: no component established (of the {run} measured: {})",
            why.join(", ")
        )
    } else {
        format!("partly holds ({needed} of the {run} measured components)")
    };
    let mut s = format!(
        "**{claim}: {verdict}.** Endpoint (mean of the last three held-out evaluations), full \
         POPO {} ({} seeds), against each ablation paired by seed: {}.",
        pct(popo.accuracy_last3.map_or(f64::NAN, |s| s.mean)),
        popo.seeds.len(),
        parts.join("; ")
    );
    if !unrun.is_empty() {
        s.push_str(&format!(" Not run: {}.", quoted(&unrun)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::testutil::{flat, variant};

    const POPO: [f64; 3] = [0.50, 0.45, 0.55];

    #[test]
    fn claim_3_calls_each_ablation_by_its_interval() {
        let mut unrun = flat("popo-tau1", "ablations", &[]);
        unrun.seeds.clear();
        let v = [
            variant("popo", "algorithms", &POPO, &[0.54, 0.515, 0.54]),
            // Differences 10, 12, 13: [+7.9, +15.5], needed.
            variant(
                "popo-alpha0",
                "ablations",
                &[0.40, 0.33, 0.42],
                &[0.43, 0.325, 0.335],
            ),
            // Differences 20, 1, 10: [-13.3, +33.9].
            flat("popo-uniform", "ablations", &[0.30, 0.44, 0.45]),
            // Differences -5, -12, -10: [-18.0, -0.0].
            flat("popo-beta-ent0", "ablations", &[0.55, 0.57, 0.65]),
            // Two seeds.
            flat("popo-tau0", "ablations", &[0.45, 0.40]),
            unrun,
        ];
        let out = ablations(&v);
        assert!(
            out.starts_with(
                "**3. Each POPO component is necessary: partly holds (1 of the 4 measured \
                 components).** Endpoint (mean of the last three held-out evaluations), full POPO \
                 50.0% (3 seeds), against each ablation paired by seed: `popo-alpha0` 38.3% \
                 (endpoint POPO - popo-alpha0: +11.7 points (seeds 0, 1, 2: +10.0, +12.0, +13.0; \
                 95% CI [+7.9, +15.5], paired t = 13.23, p = 0.006, n = 3); final evaluation: \
                 +16.8 points (seeds 0, 1, 2: +11.0, +19.0, +20.5; 95% CI [+4.1, +29.5], paired t \
                 = 5.71, p = 0.029, n = 3)): needed; `popo-uniform` 39.7%"
            ),
            "{out}"
        );
        assert!(out.contains("95% CI [-13.3, +33.9]") && out.contains(": not shown needed;"));
        assert!(out.contains(": the ablation did better;"), "{out}");
        assert!(
            out.contains(
                "`popo-tau0` 42.5% (endpoint POPO - popo-tau0: +5.0 points (seeds 0, 1: +5.0, \
                 +5.0; too few seeds for an interval, n = 2)"
            ) && out.contains("n = 2)): too few seeds."),
            "{out}"
        );
        assert!(out.ends_with(" Not run: `popo-tau1`."), "{out}");
        let none = ablations(&[v[0].clone(), v[2].clone(), v[3].clone(), v[4].clone()]);
        assert!(
            none.contains(
                ": not shown: no component established (of the 3 measured: 1 not separated, 1 \
                 did better without it, 1 with fewer than 3 seeds).**"
            ),
            "{none}"
        );
        assert!(ablations(&v[..2]).contains(": holds.**"));
        assert!(ablations(&v[..1]).contains(": not measured.** No ablation run finished."));
        assert!(ablations(&v[1..]).contains(": not measured.** Needs finished `popo` runs."));
    }
}
