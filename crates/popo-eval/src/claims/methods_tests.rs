use super::*;
use crate::claims::testutil::{flat, variant, with_cost, with_lr, with_pass};

const POPO: [f64; 3] = [0.50, 0.45, 0.55];

/// POPO's endpoint 50 / 45 / 55% (final 54.0 / 51.5 / 54.0) against:
/// - grpo 40 / 33 / 42 (final 43.0 / 32.5 / 33.5): differences 10, 12, 13, mean 11.667, sd 1.528,
///   se 0.882, t = 13.23, half-width 4.3027 x 0.882 = 3.795, p = 1 - t / sqrt(2 + t^2) = 0.006;
/// - dr_grpo 30 / 44 / 45: differences 20, 1, 10, mean 10.333, se 5.487, half-width 23.61;
/// - dapo 55 / 57 / 70: differences -5, -12, -15, mean -10.667, se 2.963, half-width 12.75.
fn family() -> Vec<VariantSummary> {
    let popo = with_cost(
        with_pass(
            variant("popo", "algorithms", &POPO, &[0.54, 0.515, 0.54]),
            64,
            &[0.40, 0.42, 0.44],
            &[0.8, 0.8, 0.8],
        ),
        70.0,
        440.0,
        6750.0,
    );
    let grpo = with_pass(
        variant(
            "grpo",
            "algorithms",
            &[0.40, 0.33, 0.42],
            &[0.43, 0.325, 0.335],
        ),
        64,
        &[0.30, 0.35, 0.40],
        &[0.6, 0.6, 0.6],
    );
    let dapo = with_lr(
        with_cost(
            flat("dapo", "algorithms", &[0.55, 0.57, 0.70]),
            420.0,
            330.0,
            5625.0,
        ),
        2e-4,
        &["rollout.max_completion_len=40"],
    );
    vec![
        popo,
        grpo,
        flat("dr_grpo", "algorithms", &[0.30, 0.44, 0.45]),
        dapo,
    ]
}

#[test]
fn claim_1_names_every_baseline_with_its_interval_and_cost() {
    let out = popo_vs_grpo_family(&family(), Tuning::Popo);
    assert!(
        out.starts_with(
            "**1. POPO matches or beats the GRPO family (GRPO, Dr. GRPO, DAPO): partly holds \
             (above `grpo`; not separated from `dr_grpo`, `dapo`).** At the shared settings \
             (tuned on POPO): vs `grpo`: endpoint POPO - grpo: +11.7 points (seeds 0, 1, 2: \
             +10.0, +12.0, +13.0; 95% CI [+7.9, +15.5], paired t = 13.23, p = 0.006, n = 3); \
             final evaluation: +16.8 points (seeds 0, 1, 2: +11.0, +19.0, +20.5; 95% CI [+4.1, \
             +29.5], paired t = 5.71, p = 0.029, n = 3); pass@1 at T = 1: +7.0 points (seeds 0, \
             1, 2: +10.0, +7.0, +4.0;"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "vs `dr_grpo`: endpoint POPO - dr_grpo: +10.3 points (seeds 0, 1, 2: +20.0, +1.0, \
             +10.0; 95% CI [-13.3, +33.9]"
        ) && out.contains("n = 3) (POPO ends higher on every seed); final evaluation: +13.5"),
        "{out}"
    );
    assert!(
        out.contains("vs `dapo` (`rollout.max_completion_len=40`): endpoint POPO - dapo: -10.7")
            && out.contains("95% CI [-23.4, +2.1]")
            && out.contains("n = 3) (`dapo` ends higher on every seed); final evaluation: -7.5"),
        "{out}"
    );
    assert!(
        out.contains(
            "POPO rollout 70 s, update 440 s, 6750 tokens back-propagated per step; `grpo` \
             rollout -, update -, - tokens;"
        ) && out.contains(
            "`dapo` rollout 420 s (6.0x POPO's), update 330 s (0.8x POPO's), 5625 tokens (0.8x \
             POPO's)."
        ),
        "{out}"
    );
    assert!(out.ends_with(
        "No baseline was run at another learning rate, so every comparison is at the settings \
         tuned on POPO."
    ));
    assert!(!out.contains("Not run"));
}

#[test]
fn claim_1_holds_only_above_every_baseline_and_fails_below_any() {
    let v = family();
    let above = popo_vs_grpo_family(&v[..2], Tuning::Popo);
    assert!(above.contains(": holds (above `grpo`).**"), "{above}");
    assert!(above.contains("Not run: `dr_grpo`, `dapo`."), "{above}");
    let below = [
        v[0].clone(),
        flat("dapo", "algorithms", &[0.55, 0.57, 0.65]),
    ];
    // Differences -5, -12, -10: mean -9, se 2.082, half-width 8.96: the interval ends at -0.04.
    let out = popo_vs_grpo_family(&below, Tuning::Popo);
    assert!(out.contains(": does not hold (below `dapo`).**"), "{out}");
    let apart = popo_vs_grpo_family(&[v[0].clone(), v[2].clone(), v[3].clone()], Tuning::Popo);
    assert!(
        apart.contains(": not shown (not separated from `dr_grpo`, `dapo`).**"),
        "{apart}"
    );
    let two = [
        variant("popo", "algorithms", &POPO[..2], &POPO[..2]),
        flat("grpo", "algorithms", &[0.3, 0.3]),
    ];
    let out = popo_vs_grpo_family(&two, Tuning::Popo);
    assert!(
        out.contains(": too few seeds (too few seeds against `grpo`).**"),
        "{out}"
    );
    assert!(
        out.contains("too few seeds for an interval, n = 2"),
        "{out}"
    );
    assert!(popo_vs_grpo_family(&v[..1], Tuning::Popo).contains(": not measured.**"));
    assert!(popo_vs_grpo_family(&v[1..], Tuning::Popo).contains(": not measured.**"));
}

#[test]
fn claim_4_wants_popo_above_raft() {
    let popo = flat("popo", "algorithms", &POPO);
    let raft = |acc: &[f64]| vec![popo.clone(), flat("raft", "algorithms", acc)];
    let holds = popo_vs_raft(&raft(&[0.40, 0.33, 0.42]), Tuning::Popo);
    assert!(
        holds.starts_with("**4. POPO is more than positive-only SFT (POPO vs RAFT): holds.**"),
        "{holds}"
    );
    assert!(holds.contains("vs `raft`: endpoint POPO - raft: +11.7 points"));
    assert!(holds.contains("Cost per run") && holds.contains("`raft` rollout -"));
    assert!(popo_vs_raft(&raft(&[0.30, 0.44, 0.45]), Tuning::Popo)
        .contains(": not shown (not separated).**"));
    assert!(popo_vs_raft(&raft(&[0.55, 0.57, 0.65]), Tuning::Popo)
        .contains(": does not hold (RAFT above).**"));
    let few = popo_vs_raft(&raft(&[0.55]), Tuning::Popo);
    assert!(
        few.contains(": too few seeds.**") && few.contains("(seed 0: -5.0;"),
        "{few}"
    );
    assert!(popo_vs_raft(&raft(&[]), Tuning::Popo).contains(": not measured.**"));
}

/// GRPO at the shared 2e-4 (endpoint 40 / 33 / 42, mean 38.3%), at 1e-4 (46 / 41 / 51, mean
/// 46.0%) and at 4e-4 (20 / 20 / 20): 1e-4 is picked. POPO - grpo-lr1e-4: differences 4, 4, 4: a
/// zero-width interval above zero (up to rounding). A variant with another override besides the lr is no lr
/// variant, whatever its endpoint.
#[test]
fn a_baseline_run_at_other_learning_rates_is_compared_at_its_best() {
    let mut v = family();
    v.truncate(2);
    v[1] = with_lr(v[1].clone(), 2e-4, &[]);
    let lr = |name: &str, lr: f64, acc: &[f64], set: &[&str]| {
        let mut x = with_lr(flat(name, "controls", acc), lr, set);
        x.preset = "grpo".into();
        x
    };
    v.push(lr(
        "grpo-lr1e-4",
        1e-4,
        &[0.46, 0.41, 0.51],
        &["optim.lr=1e-4"],
    ));
    v.push(lr(
        "grpo-lr4e-4",
        4e-4,
        &[0.2, 0.2, 0.2],
        &["optim.lr=4e-4"],
    ));
    v.push(lr(
        "grpo-t07",
        1e-4,
        &[0.9, 0.9, 0.9],
        &["optim.lr=1e-4", "rollout.temperature=0.7"],
    ));
    let out = popo_vs_grpo_family(&v, Tuning::Popo);
    assert!(
        out.contains(
            ": holds (above `grpo`); at the baselines' best learning rates: above \
             `grpo-lr1e-4`.**"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            " `grpo`'s best learning rate by the mean endpoint over seeds, among `grpo` lr 2e-4 \
             38.3%, `grpo-lr1e-4` lr 1e-4 46.0%, `grpo-lr4e-4` lr 4e-4 20.0%: `grpo-lr1e-4` (lr \
             1e-4): endpoint POPO - grpo-lr1e-4: +4.0 points (seeds 0, 1, 2: +4.0, +4.0, +4.0; \
             95% CI [+4.0, +4.0], paired t = "
        ),
        "{out}"
    );
    assert!(out.ends_with("as the shared settings favour POPO.)") && !out.contains("grpo-t07"));
    // The shared lr is the best: said so, and the verdict names it.
    v.remove(2);
    let out = popo_vs_grpo_family(&v, Tuning::Popo);
    assert!(
        out.contains("at the baselines' best learning rates: above `grpo`.**")
            && out.contains("`grpo` (lr 2e-4), the shared one, so the comparison above stands"),
        "{out}"
    );
    // RAFT's lr variants, in claim 4 (the other overrides have to match: none here).
    let raft = vec![
        flat("popo", "algorithms", &POPO),
        flat("raft", "algorithms", &[0.49, 0.44, 0.56]),
        with_lr(
            flat("raft-lr4e-4", "lr", &[0.5, 0.46, 0.56]),
            4e-4,
            &["optim.lr=4e-4"],
        ),
    ];
    let out = popo_vs_raft(&raft, Tuning::Popo);
    assert!(
        out.contains(
            ": not shown (not separated); at RAFT's best learning rate (`raft-lr4e-4`): not \
             shown (not separated).**"
        ),
        "{out}"
    );
}
