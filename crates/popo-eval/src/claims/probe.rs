//! Claim 2: held-out negatives lose log-probability while positives gain it (the implicit
//! negative gradient), more under POPO than under RAFT.

use super::common::{find, not_measured};
use crate::stats::{one_sample, paired, Call, Paired, Unit};
use crate::summary::VariantSummary;

/// Each seed's run mean of `delta_neg` and of `delta_pos`, against zero.
fn signs(v: &VariantSummary) -> (Paired, Paired) {
    (
        one_sample(&v.by_seed(|s| s.delta_neg)),
        one_sample(&v.by_seed(|s| s.delta_pos)),
    )
}

/// `delta_neg < 0 < delta_pos`, each interval on its side of zero; `None` with too few seeds.
fn clearly_signed(neg: &Paired, pos: &Paired) -> Option<bool> {
    if neg.call() == Call::TooFewSeeds || pos.call() == Call::TooFewSeeds {
        return None;
    }
    Some(neg.call() == Call::Below && pos.call() == Call::Above)
}

fn yes_no(s: Option<bool>) -> &'static str {
    match s {
        Some(true) => "yes",
        Some(false) => "no",
        None => "too few seeds",
    }
}

pub(super) fn implicit_negatives(variants: &[VariantSummary]) -> String {
    let claim = "2. Implicit negative gradients appear (delta_neg < 0 < delta_pos), more for POPO \
                 than for RAFT";
    let probe =
        |name| find(variants, name).filter(|v| v.delta_neg.is_some() && v.delta_pos.is_some());
    let (Some(popo), Some(raft)) = (probe("popo"), probe("raft")) else {
        return not_measured(claim, "Needs `popo` and `raft` runs with the probe on.");
    };
    let ((pn, pp), (rn, rp)) = (signs(popo), signs(raft));
    let (p_ok, r_ok) = (clearly_signed(&pn, &pp), clearly_signed(&rn, &rp));
    // "More" is judged on the raw delta_neg, paired by seed; the ratios to each method's
    // delta_pos are reported beside it, since raw sizes scale with each method's step size.
    let more = paired(
        &popo.by_seed(|s| s.delta_neg),
        &raft.by_seed(|s| s.delta_neg),
    );
    let verdict = match (p_ok, more.call()) {
        (None, _) => "too few seeds",
        (Some(false), _) => "does not hold (POPO's are not both clearly signed)",
        (Some(true), Call::Below) => "holds",
        (Some(true), Call::NotSeparated) => {
            "partly holds (they appear, not shown more than under RAFT)"
        }
        (Some(true), Call::Above) => "partly holds (they appear, but more under RAFT)",
        (Some(true), Call::TooFewSeeds) => {
            "partly holds (they appear; too few seeds to compare with RAFT)"
        }
    };
    let ratio = |v: &VariantSummary| match (v.delta_neg, v.delta_pos) {
        (Some(n), Some(p)) if p.mean != 0.0 => format!("{:.2}", -n.mean / p.mean),
        _ => "-".into(),
    };
    let u = Unit::Plain(4);
    format!(
        "**{claim}: {verdict}.** Mean per-token log-prob change of held-out completions per \
         optimizer step (each run's mean over its probes), against zero by seed: {}; {}; {}; {} \
         (clearly signed: POPO {}, RAFT {}). {}. Negatives fall by {} of the positives' rise \
         under POPO and {} under RAFT.",
        pn.describe("POPO delta_neg", u),
        pp.describe("POPO delta_pos", u),
        rn.describe("RAFT delta_neg", u),
        rp.describe("RAFT delta_pos", u),
        yes_no(p_ok),
        yes_no(r_ok),
        more.describe("POPO - RAFT delta_neg", u),
        ratio(popo),
        ratio(raft),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::testutil::{flat, with_probe};

    fn method(name: &str, neg: &[f64], pos: &[f64]) -> VariantSummary {
        with_probe(flat(name, "algorithms", &vec![0.5; neg.len()]), neg, pos)
    }

    /// POPO delta_neg -0.020 / -0.021 / -0.019: mean -0.02, sd 0.001, half-width 4.3027 x
    /// 0.000577 = 0.0025, so [-0.0225, -0.0175]; delta_pos 0.040 / 0.041 / 0.039 likewise above.
    const POPO_NEG: [f64; 3] = [-0.020, -0.021, -0.019];
    const POPO_POS: [f64; 3] = [0.040, 0.041, 0.039];

    #[test]
    fn claim_2_holds_when_popo_is_clearly_signed_and_below_raft() {
        let popo = method("popo", &POPO_NEG, &POPO_POS);
        // RAFT -0.005 / -0.006 / -0.004: POPO - RAFT is -0.015 on every seed.
        let raft = method("raft", &[-0.005, -0.006, -0.004], &[0.05, 0.05, 0.05]);
        let out = implicit_negatives(&[popo.clone(), raft]);
        assert!(out.contains(": holds.**"), "{out}");
        assert!(
            out.contains(
                "POPO delta_neg: -0.0200 (seeds 0, 1, 2: -0.0200, -0.0210, -0.0190; 95% CI \
                 [-0.0225, -0.0175], paired t = -34.64, p < 0.001, n = 3)"
            ),
            "{out}"
        );
        assert!(
            out.contains("(clearly signed: POPO yes, RAFT yes)"),
            "{out}"
        );
        assert!(out.contains("POPO - RAFT delta_neg: -0.0150 (seeds 0, 1, 2: -0.0150"));
        assert!(out.ends_with("rise under POPO and 0.10 under RAFT.") && out.contains("by 0.50"));
    }

    #[test]
    fn claim_2_every_other_branch() {
        let popo = method("popo", &POPO_NEG, &POPO_POS);
        let pos = [0.05; 3];
        // -0.010 / -0.030 / -0.020: differences -0.010, +0.009, +0.001 from POPO, mean 0.
        let same = method("raft", &[-0.010, -0.030, -0.020], &pos);
        let out = implicit_negatives(&[popo.clone(), same]);
        assert!(
            out.contains(": partly holds (they appear, not shown more than under RAFT).**")
                && out.contains("(clearly signed: POPO yes, RAFT no)"),
            "{out}"
        );
        let deeper = method("raft", &[-0.05, -0.051, -0.049], &pos);
        let out = implicit_negatives(&[popo.clone(), deeper.clone()]);
        assert!(out.contains(": partly holds (they appear, but more under RAFT).**"));
        let two = method("raft", &[-0.05, -0.051], &pos[..2]);
        let out = implicit_negatives(&[popo.clone(), two]);
        assert!(
            out.contains(": partly holds (they appear; too few seeds to compare with RAFT).**")
                && out.contains("RAFT too few seeds)"),
            "{out}"
        );
        // -0.002 / -0.001 / -0.003: [-0.0045, +0.0005] crosses zero.
        let weak = method("popo", &[-0.002, -0.001, -0.003], &POPO_POS);
        let out = implicit_negatives(&[weak, deeper.clone()]);
        assert!(out.contains(": does not hold (POPO's are not both clearly signed).**"));
        let few = method("popo", &POPO_NEG[..2], &POPO_POS[..2]);
        assert!(implicit_negatives(&[few, deeper]).contains(": too few seeds.**"));
        assert!(implicit_negatives(&[popo]).contains(": not measured.**"));
    }
}
