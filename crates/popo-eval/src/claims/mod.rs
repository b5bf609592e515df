//! Plain verdicts on the paper's claims, read off a grid's summary.
//!
//! Methods are compared paired by seed (`crate::stats::paired`): every variant of a seed starts
//! from the same warm-up, so the seed's start, which differs a lot between seeds, cancels. A
//! difference counts only when its 95% paired-t interval excludes zero; with fewer than three
//! seeds in common there is no verdict ("too few seeds"). Accuracy is judged on the endpoint,
//! the mean of each run's last three held-out evaluations, with the final evaluation beside it.
//! A claim whose runs are missing is "not measured", never guessed.

mod ablations;
mod common;
mod methods;
mod pass_k;
mod probe;
#[cfg(test)]
mod testutil;

use crate::stats::{binomial_se, t_quantile, MIN_PAIRS};
use crate::summary::{Grid, Tuning, VariantSummary};
use common::{find, pct};

/// One sentence per claim of the paper (and of arXiv 2506.01347 on pass@k), in the order of
/// issue 15's report: POPO vs the GRPO family, implicit negatives, the ablations, POPO vs RAFT,
/// pass@k.
pub fn judge(
    grid: Grid,
    variants: &[VariantSummary],
    base: Option<&VariantSummary>,
) -> Vec<String> {
    vec![
        methods::popo_vs_grpo_family(variants, grid.tuning),
        probe::implicit_negatives(variants),
        ablations::ablations(variants),
        methods::popo_vs_raft(variants, grid.tuning),
        pass_k::pass_at_large_k(variants, base),
    ]
}

/// The paragraph above the verdicts: how methods are compared, how noisy one evaluation is, and
/// whose settings the grid runs at.
pub fn method_note(
    grid: Grid,
    variants: &[VariantSummary],
    base: Option<&VariantSummary>,
) -> String {
    let mut s = String::from(match grid.warmup {
        true => {
            "Methods are compared paired by seed: every variant of a seed starts from the same \
                 warm-up"
        }
        false => {
            "Methods are compared paired by seed: every variant of a seed starts from the \
                  starting model with that seed"
        }
    });
    let start = base
        .or_else(|| variants.first())
        .map(|v| v.by_seed(|x| x.accuracy_before))
        .unwrap_or_default();
    if grid.warmup && start.len() > 1 {
        let seeds: Vec<String> = start.iter().map(|x| x.0.to_string()).collect();
        let accs: Vec<String> = start
            .iter()
            .map(|x| format!("{:.1}", 100.0 * x.1))
            .collect();
        s.push_str(&format!(
            " (held-out accuracy at the start {}% on seeds {})",
            accs.join(" / "),
            seeds.join(" / ")
        ));
    }
    s.push_str(match grid.warmup {
        true => {
            ", so a seed's start moves all its runs together and would dominate an unpaired \
             comparison."
        }
        false => ", so its runs differ by their method and by nothing they were given.",
    });
    s.push_str(&format!(
        " Each comparison gives the mean of the per-seed differences, each seed's \
         difference, and a 95% paired-t interval with its t and two-sided p; a difference counts \
         only when the interval excludes zero, and with fewer than {MIN_PAIRS} seeds in common \
         there is no verdict (\"too few seeds\"). With 3 seeds the interval is wide (t = {:.2} at \
         2 degrees of freedom): \"not separated\" means not shown either way, not equal. \
         Accuracy is judged on the endpoint, the mean of each run's last three held-out \
         evaluations, with the final evaluation beside it.",
        t_quantile(0.975, 2.0)
    ));
    let popo = find(variants, "popo");
    if let Some(n) = popo.or(variants.first()).and_then(|v| v.eval_problems) {
        s.push_str(&format!(
            " One greedy evaluation of the {n} held-out problems has a binomial standard error of \
             sqrt(p (1 - p) / {n}): {:.1} points at p = 50% (its largest)",
            100.0 * binomial_se(0.5, n)
        ));
        if let Some(a) = popo.and_then(|p| p.accuracy_after) {
            s.push_str(&format!(
                ", {:.1} at POPO's final {}",
                100.0 * binomial_se(a.mean, n),
                pct(a.mean)
            ));
        }
        s.push_str(
            "; the endpoint's three evaluations score the same problems with nearby \
             checkpoints, so averaging them lowers this by less than sqrt 3.",
        );
    }
    s.push_str(match grid.tuning {
        Tuning::Popo => {
            " The shared settings (learning rate, schedule, warm-up: the `popo train` defaults) \
             were tuned on POPO alone (BENCHMARKS.md) and no baseline was tuned with them, which \
             favours POPO in every comparison with a baseline."
        }
        Tuning::PerMethod => {
            " Each method runs at the learning rate its own sweep chose by one rule (the \
             experiment file says which); the other settings are shared and were tuned for no \
             one method."
        }
    });
    s
}
