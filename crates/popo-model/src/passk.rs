//! pass@k and avg@n (docs/algorithms.md, "Evaluation"). For one problem with `n` samples of
//! which `c` are correct, `avg@n = c / n` and `pass@k = 1 - C(n-c, k) / C(n, k)`, the unbiased
//! estimator of Chen et al. 2021. It lives here, with the other things training and evaluation
//! share, because both report it: `popo eval`'s benchmarks and the end of every training run
//! (`run.final_pass_at_k_samples`).

use serde::{Deserialize, Serialize};

/// Unbiased pass@k for one problem. Computed as `1 - prod_{i=n-c+1}^{n} (1 - k/i)`, which equals
/// the binomial ratio without forming huge binomials. `k` must be in `1..=n`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    assert!(
        k >= 1 && k <= n && c <= n,
        "pass@k needs 1 <= k <= n and c <= n"
    );
    if n - c < k {
        return 1.0;
    }
    let mut prod = 1.0f64;
    for i in (n - c + 1)..=n {
        prod *= 1.0 - k as f64 / i as f64;
    }
    1.0 - prod
}

/// The powers of two up to `n`: the `k` values reported for pass@k.
pub fn pass_ks(n: usize) -> Vec<usize> {
    std::iter::successors(Some(1usize), |k| k.checked_mul(2))
        .take_while(|&k| k <= n)
        .collect()
}

/// pass@k and avg@n of a set of problems, each sampled `n` times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassAtK {
    /// Samples per problem.
    pub n: usize,
    pub num_problems: usize,
    /// Mean over problems of c / n.
    pub avg_at_n: f64,
    /// `(k, mean over problems of pass@k)` for k = 1, 2, 4, ... up to n.
    pub pass_at_k: Vec<(usize, f64)>,
}

impl PassAtK {
    /// From the number of correct samples of each problem (each at most `n`). `n = 0` or no
    /// problem gives empty means (0 and no k), not a division by zero.
    pub fn from_counts(n: usize, correct: &[usize]) -> Self {
        let m = correct.len().max(1) as f64;
        let ks = if correct.is_empty() {
            Vec::new()
        } else {
            pass_ks(n)
        };
        let pass_at_k = ks
            .into_iter()
            .map(|k| {
                let mean = correct.iter().map(|&c| pass_at_k(n, c, k)).sum::<f64>() / m;
                (k, mean)
            })
            .collect();
        let avg_at_n = if n == 0 {
            0.0
        } else {
            correct.iter().map(|&c| c as f64 / n as f64).sum::<f64>() / m
        };
        PassAtK {
            n,
            num_problems: correct.len(),
            avg_at_n,
            pass_at_k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// C(n, k) in exact integers, for the reference.
    fn binom(n: u64, k: u64) -> u128 {
        if k > n {
            return 0;
        }
        let mut r: u128 = 1;
        for i in 0..k {
            r = r * (n - i) as u128 / (i + 1) as u128;
        }
        r
    }

    #[test]
    fn pass_at_k_matches_hand_values_and_exact_binomials() {
        // n=4, c=1: pass@1 = 1/4; pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 1/2; pass@4 = 1.
        assert!((pass_at_k(4, 1, 1) - 0.25).abs() < 1e-12);
        assert!((pass_at_k(4, 1, 2) - 0.5).abs() < 1e-12);
        assert_eq!(pass_at_k(4, 1, 4), 1.0);
        // n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10.
        assert!((pass_at_k(5, 2, 2) - 0.7).abs() < 1e-12);
        assert_eq!(pass_at_k(8, 0, 8), 0.0);
        assert_eq!(pass_at_k(8, 8, 1), 1.0);
        for n in 1..=30u64 {
            for c in 0..=n {
                for k in 1..=n {
                    let exact = 1.0 - binom(n - c, k) as f64 / binom(n, k) as f64;
                    let got = pass_at_k(n as usize, c as usize, k as usize);
                    assert!((got - exact).abs() < 1e-12, "n={n} c={c} k={k}");
                }
            }
        }
        // Large n stays finite and in [0, 1] where binomials would overflow.
        let p = pass_at_k(1024, 3, 512);
        assert!(p > 0.85 && p < 0.9, "{p}"); // 1 - (1/2)^3 approximately
    }

    #[test]
    fn pass_ks_are_powers_of_two_up_to_n() {
        assert_eq!(pass_ks(16), vec![1, 2, 4, 8, 16]);
        assert_eq!(pass_ks(12), vec![1, 2, 4, 8]);
        assert_eq!(pass_ks(1), vec![1]);
        assert!(pass_ks(0).is_empty());
    }

    #[test]
    fn from_counts_averages_over_problems() {
        // n = 4, c = 1, 4, 0: pass@1 = avg@4 = 5/12; pass@2 = (1/2 + 1 + 0) / 3; pass@4 = 2/3.
        let p = PassAtK::from_counts(4, &[1, 4, 0]);
        assert_eq!((p.n, p.num_problems), (4, 3));
        assert!((p.avg_at_n - 5.0 / 12.0).abs() < 1e-12);
        let ks: Vec<usize> = p.pass_at_k.iter().map(|x| x.0).collect();
        assert_eq!(ks, [1, 2, 4]);
        assert!((p.pass_at_k[0].1 - p.avg_at_n).abs() < 1e-12);
        assert!((p.pass_at_k[1].1 - 0.5).abs() < 1e-12);
        assert!((p.pass_at_k[2].1 - 2.0 / 3.0).abs() < 1e-12);
        let empty = PassAtK::from_counts(4, &[]);
        assert!(empty.pass_at_k.is_empty() && empty.avg_at_n == 0.0);
        assert!(PassAtK::from_counts(0, &[0, 0]).pass_at_k.is_empty());
    }
}
