//! Benchmark metrics (docs/algorithms.md, "Evaluation"). For one problem with `n` samples of
//! which `c` are correct:
//! - `avg@n = c / n`;
//! - `pass@k = 1 - C(n-c, k) / C(n, k)` (the unbiased estimator of Chen et al. 2021, shared with
//!   the trainer's end-of-run evaluation: `popo_model::passk`);
//! - `maj@n`: the most frequent extracted answer, equivalent answers grouped, is correct;
//! - greedy accuracy, from a separate greedy sample.
//!
//! Benchmark values are means over problems.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use popo_model::passk::{pass_at_k, pass_ks, PassAtK};

/// One sample's outcome as majority voting needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Vote<'a> {
    pub answer: Option<&'a str>,
    pub correct: bool,
}

/// Majority vote over extracted answers. Answers are grouped with `equivalent(representative,
/// answer)` (the first answer of a group represents it); samples without an answer don't vote.
/// The largest group wins, ties going to the group seen first, and the vote is correct when that
/// group's representative sample was judged correct. No answer at all: incorrect.
/// Returns `(correct, winning answer, its votes)`.
pub fn majority_vote<'a>(
    votes: &[Vote<'a>],
    equivalent: impl Fn(&str, &str) -> bool,
) -> (bool, Option<&'a str>, usize) {
    // (representative answer, its correctness, count)
    let mut groups: Vec<(&'a str, bool, usize)> = Vec::new();
    for v in votes {
        let Some(a) = v.answer else { continue };
        match groups.iter_mut().find(|g| g.0 == a || equivalent(g.0, a)) {
            Some(g) => g.2 += 1,
            None => groups.push((a, v.correct, 1)),
        }
    }
    let mut best: Option<&(&str, bool, usize)> = None;
    for g in &groups {
        if best.is_none_or(|b| g.2 > b.2) {
            best = Some(g);
        }
    }
    match best {
        Some(&(a, correct, count)) => (correct, Some(a), count),
        None => (false, None, 0),
    }
}

/// One problem's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemScore {
    pub n: usize,
    pub correct: usize,
    pub maj_correct: bool,
    pub maj_answer: Option<String>,
    pub greedy_correct: Option<bool>,
}

/// A benchmark's aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub num_problems: usize,
    pub n: usize,
    /// Mean over problems of c/n.
    pub avg_at_n: f64,
    /// `"pass@1"`, `"pass@2"`, ... for the powers of two up to n.
    pub pass_at_k: BTreeMap<String, f64>,
    pub maj_at_n: f64,
    pub greedy_accuracy: Option<f64>,
}

/// Averages per-problem scores. Every problem must have the same `n` (> 0 unless `n == 0`
/// everywhere, i.e. a greedy-only run).
pub fn aggregate(scores: &[ProblemScore]) -> Aggregate {
    let m = scores.len().max(1) as f64;
    let n = scores.first().map_or(0, |s| s.n);
    assert!(
        scores.iter().all(|s| s.n == n),
        "all problems need the same number of samples"
    );
    let counts: Vec<usize> = scores.iter().map(|s| s.correct).collect();
    let p = PassAtK::from_counts(n, &counts);
    let pass = p
        .pass_at_k
        .iter()
        .map(|(k, v)| (format!("pass@{k}"), *v))
        .collect();
    let greedy: Vec<bool> = scores.iter().filter_map(|s| s.greedy_correct).collect();
    Aggregate {
        num_problems: scores.len(),
        n,
        avg_at_n: p.avg_at_n,
        pass_at_k: pass,
        maj_at_n: scores.iter().filter(|s| s.maj_correct).count() as f64 / m,
        greedy_accuracy: if greedy.is_empty() || greedy.len() != scores.len() {
            None
        } else {
            Some(greedy.iter().filter(|&&g| g).count() as f64 / m)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_vote_groups_equivalent_answers() {
        // Equivalence by numeric value, as the verifier would judge "0.5" and "1/2".
        let num = |s: &str| -> Option<f64> {
            match s.split_once('/') {
                Some((a, b)) => Some(a.parse::<f64>().ok()? / b.parse::<f64>().ok()?),
                None => s.parse().ok(),
            }
        };
        let eq = |a: &str, b: &str| num(a).is_some() && num(a) == num(b);
        let v = |a: Option<&'static str>, c: bool| Vote {
            answer: a,
            correct: c,
        };
        // "3" twice vs "1/2" + "0.5": a tie of 2, first-seen group wins.
        let votes = [
            v(Some("3"), false),
            v(Some("1/2"), true),
            v(None, false),
            v(Some("0.5"), true),
            v(Some("3"), false),
        ];
        assert_eq!(majority_vote(&votes, eq), (false, Some("3"), 2));
        // One more 0.5 breaks the tie.
        let mut more = votes.to_vec();
        more.push(v(Some("0.5"), true));
        assert_eq!(majority_vote(&more, eq), (true, Some("1/2"), 3));
        // Without grouping the strings would split the vote.
        let exact = |a: &str, b: &str| a == b;
        assert_eq!(majority_vote(&more, exact), (false, Some("3"), 2));
        assert_eq!(
            majority_vote(&[v(None, false), v(None, false)], eq),
            (false, None, 0)
        );
    }

    #[test]
    fn aggregate_averages_over_problems() {
        let s = |c: usize, maj: bool, greedy: bool| ProblemScore {
            n: 4,
            correct: c,
            maj_correct: maj,
            maj_answer: None,
            greedy_correct: Some(greedy),
        };
        let a = aggregate(&[s(1, false, true), s(4, true, true), s(0, false, false)]);
        assert_eq!(a.num_problems, 3);
        assert!((a.avg_at_n - (0.25 + 1.0 + 0.0) / 3.0).abs() < 1e-12);
        assert!((a.pass_at_k["pass@1"] - a.avg_at_n).abs() < 1e-12);
        assert!((a.pass_at_k["pass@2"] - (0.5 + 1.0 + 0.0) / 3.0).abs() < 1e-12);
        assert!((a.pass_at_k["pass@4"] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(a.pass_at_k.len(), 3);
        assert!((a.maj_at_n - 1.0 / 3.0).abs() < 1e-12);
        assert!((a.greedy_accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-12);
    }
}
