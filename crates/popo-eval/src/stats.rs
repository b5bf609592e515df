//! Small-sample statistics for comparing methods over a few seeds: the Student t distribution
//! (CDF, two-sided p-value, quantile), the paired comparison by seed and its one-line summary,
//! and the binomial standard error of one evaluation.
//!
//! Variants of one seed share their warm-up, and the warm-up's start differs a lot between seeds,
//! so two methods are compared seed by seed: the differences `a - b` on the seeds both have, their
//! mean, and a 95% paired-t interval. A difference counts when that interval excludes zero; with
//! fewer than [`MIN_PAIRS`] seeds in common there is no interval and no verdict.

/// Fewer seed pairs than this give no interval: "too few seeds".
pub const MIN_PAIRS: usize = 3;

/// `ln Gamma(x)` for `x > 0` (Lanczos, g = 7, nine terms; about 15 significant digits).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).abs().ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The regularized incomplete beta function `I_x(a, b)` for `a, b > 0`, `x` in [0, 1]: the
/// continued fraction, evaluated by the modified Lentz method on whichever of `x`, `1 - x`
/// converges fast (`I_x(a, b) = 1 - I_{1-x}(b, a)`).
pub fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - inc_beta(b, a, 1.0 - x);
    }
    let ln_front = a * x.ln() + b * (1.0 - x).ln() - (ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b));
    let front = ln_front.exp() / a;
    const TINY: f64 = 1e-300;
    let (mut f, mut c, mut d) = (1.0f64, 1.0f64, 0.0f64);
    for i in 0..1000 {
        let m = (i / 2) as f64;
        let num = if i == 0 {
            1.0
        } else if i % 2 == 0 {
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m))
        } else {
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0))
        };
        d = 1.0 + num * d;
        if d.abs() < TINY {
            d = TINY;
        }
        d = 1.0 / d;
        c = 1.0 + num / c;
        if c.abs() < TINY {
            c = TINY;
        }
        let cd = c * d;
        f *= cd;
        if (1.0 - cd).abs() < 1e-15 {
            break;
        }
    }
    front * (f - 1.0)
}

/// `P(T <= t)` for Student's t with `df` degrees of freedom.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    if t.is_infinite() {
        return if t > 0.0 { 1.0 } else { 0.0 };
    }
    let tail = 0.5 * inc_beta(df / 2.0, 0.5, df / (df + t * t));
    if t > 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// `P(|T| >= |t|)`: the two-sided p-value of a t statistic.
pub fn t_two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_infinite() {
        return 0.0;
    }
    inc_beta(df / 2.0, 0.5, df / (df + t * t)).min(1.0)
}

/// The `p` quantile of Student's t with `df` degrees of freedom (`t_quantile(0.975, 2)` = 4.3027),
/// by bisection on [`t_cdf`].
pub fn t_quantile(p: f64, df: f64) -> f64 {
    assert!(p > 0.0 && p < 1.0 && df > 0.0, "t_quantile({p}, {df})");
    if p < 0.5 {
        return -t_quantile(1.0 - p, df);
    }
    if p == 0.5 {
        return 0.0;
    }
    let mut hi = 1.0;
    while t_cdf(hi, df) < p {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-13 * hi {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// The binomial standard error of an accuracy `p` measured once on `n` problems:
/// `sqrt(p (1 - p) / n)`.
pub fn binomial_se(p: f64, n: usize) -> f64 {
    (p * (1.0 - p) / n as f64).sqrt()
}

/// Two methods compared seed by seed: `a - b` on the seeds both have.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    /// Seeds in common (finite values on both sides).
    pub n: usize,
    /// Mean of the per-seed differences (NaN when `n` = 0).
    pub mean_diff: f64,
    /// `(seed, a - b)`, in the order of `a`.
    pub per_seed: Vec<(u64, f64)>,
    /// The t statistic `mean / (sd / sqrt n)`, from [`MIN_PAIRS`] pairs on (infinite when every
    /// seed gives the same non-zero difference).
    pub t: Option<f64>,
    /// The 95% paired-t interval of the mean difference, from [`MIN_PAIRS`] pairs on.
    pub ci95: Option<(f64, f64)>,
    /// The two-sided p-value of `t` (n - 1 degrees of freedom).
    pub p: Option<f64>,
}

/// What a paired comparison says about `a` against `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Fewer than [`MIN_PAIRS`] seeds in common: no verdict.
    TooFewSeeds,
    /// The interval lies above zero: `a` ends higher.
    Above,
    /// The interval includes zero.
    NotSeparated,
    /// The interval lies below zero: `a` ends lower.
    Below,
}

/// `a - b` paired by seed. Seeds missing from either side, and non-finite values, are left out.
pub fn paired(a: &[(u64, f64)], b: &[(u64, f64)]) -> Paired {
    let per_seed: Vec<(u64, f64)> = a
        .iter()
        .filter(|(_, x)| x.is_finite())
        .filter_map(|&(s, x)| {
            let y = b.iter().find(|(t, y)| *t == s && y.is_finite())?.1;
            Some((s, x - y))
        })
        .collect();
    let n = per_seed.len();
    let mean_diff = if n == 0 {
        f64::NAN
    } else {
        per_seed.iter().map(|d| d.1).sum::<f64>() / n as f64
    };
    let (mut t, mut ci95, mut p) = (None, None, None);
    if n >= MIN_PAIRS {
        let df = (n - 1) as f64;
        let var = per_seed
            .iter()
            .map(|d| (d.1 - mean_diff).powi(2))
            .sum::<f64>()
            / df;
        let se = (var / n as f64).sqrt();
        // Every seed the same difference (up to rounding): a zero-width interval.
        let se = if se <= 1e-9 * mean_diff.abs() {
            0.0
        } else {
            se
        };
        let half = t_quantile(0.975, df) * se;
        let stat = if se > 0.0 {
            mean_diff / se
        } else if mean_diff == 0.0 {
            0.0
        } else {
            mean_diff.signum() * f64::INFINITY
        };
        t = Some(stat);
        ci95 = Some((mean_diff - half, mean_diff + half));
        p = Some(if se > 0.0 || mean_diff != 0.0 {
            t_two_sided_p(stat, df)
        } else {
            1.0
        });
    }
    Paired {
        n,
        mean_diff,
        per_seed,
        t,
        ci95,
        p,
    }
}

/// `values` against zero seed by seed: the one-sample t interval of their mean.
pub fn one_sample(values: &[(u64, f64)]) -> Paired {
    let zeros: Vec<(u64, f64)> = values.iter().map(|&(s, _)| (s, 0.0)).collect();
    paired(values, &zeros)
}

/// How [`Paired::describe`] writes a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A quantity in [0, 1] as percentage points, one decimal.
    Points,
    /// As is, with this many decimals.
    Plain(usize),
}

impl Unit {
    fn signed(self, x: f64) -> String {
        match self {
            Unit::Points => format!("{:+.1}", 100.0 * x),
            Unit::Plain(d) => format!("{x:+.d$}"),
        }
    }

    fn word(self) -> &'static str {
        match self {
            Unit::Points => " points",
            Unit::Plain(_) => "",
        }
    }
}

impl Paired {
    pub fn call(&self) -> Call {
        match self.ci95 {
            None => Call::TooFewSeeds,
            Some((lo, _)) if lo > 0.0 => Call::Above,
            Some((_, hi)) if hi < 0.0 => Call::Below,
            Some(_) => Call::NotSeparated,
        }
    }

    /// Whether every seed's difference has the sign of `sign` (at least two seeds).
    pub fn every_seed(&self, sign: f64) -> bool {
        self.n >= 2 && self.per_seed.iter().all(|d| d.1 * sign > 0.0)
    }

    /// `POPO - GRPO: +16.8 points (seeds 0, 1, 2: +11.0, +19.0, +20.5; 95% CI [+4.1, +29.5],
    /// paired t = 5.71, p = 0.029, n = 3)`.
    pub fn describe(&self, label: &str, unit: Unit) -> String {
        if self.n == 0 {
            return format!("{label}: no seeds in common");
        }
        let seeds: Vec<String> = self.per_seed.iter().map(|d| d.0.to_string()).collect();
        let diffs: Vec<String> = self.per_seed.iter().map(|d| unit.signed(d.1)).collect();
        let tail = match (self.ci95, self.t, self.p) {
            (Some((lo, hi)), Some(t), Some(p)) => format!(
                "95% CI [{}, {}], paired t = {}, {}, n = {}",
                unit.signed(lo),
                unit.signed(hi),
                fmt_t(t),
                fmt_p(p),
                self.n
            ),
            _ => format!("too few seeds for an interval, n = {}", self.n),
        };
        format!(
            "{label}: {}{} (seed{} {}: {}; {tail})",
            unit.signed(self.mean_diff),
            unit.word(),
            if self.n == 1 { "" } else { "s" },
            seeds.join(", "),
            diffs.join(", ")
        )
    }
}

fn fmt_t(t: f64) -> String {
    if t.is_infinite() {
        format!("{}inf", if t > 0.0 { "+" } else { "-" })
    } else {
        format!("{t:.2}")
    }
}

fn fmt_p(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".into()
    } else {
        format!("p = {p:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn ln_gamma_matches_factorials_and_half_integers() {
        assert!(close(ln_gamma(1.0), 0.0, 1e-14));
        assert!(close(ln_gamma(5.0), 24f64.ln(), 1e-13));
        assert!(close(ln_gamma(10.0), 362_880f64.ln(), 1e-12));
        let sqrt_pi = std::f64::consts::PI.sqrt();
        assert!(close(ln_gamma(0.5), sqrt_pi.ln(), 1e-13));
        assert!(close(ln_gamma(1.5), (sqrt_pi / 2.0).ln(), 1e-13));
        // Below 0.5 through the reflection: Gamma(0.25) = 3.6256099082...
        assert!(close(ln_gamma(0.25), 3.625_609_908_221_908f64.ln(), 1e-12));
    }

    #[test]
    fn incomplete_beta_matches_closed_forms() {
        for &x in &[0.0, 0.1, 0.37, 0.5, 0.9, 1.0] {
            // I_x(a, 1) = x^a; I_x(1, b) = 1 - (1 - x)^b; I_x(1, 1) = x.
            assert!(close(inc_beta(2.5, 1.0, x), x.powf(2.5), 1e-13), "{x}");
            assert!(close(inc_beta(1.0, 3.0, x), 1.0 - (1.0 - x).powi(3), 1e-13));
            assert!(close(inc_beta(1.0, 1.0, x), x, 1e-13));
        }
        // Symmetric: I_0.5(a, a) = 1/2; I_x(a, b) = 1 - I_{1-x}(b, a).
        assert!(close(inc_beta(7.0, 7.0, 0.5), 0.5, 1e-13));
        let (a, b, x) = (3.2, 0.5, 0.8);
        assert!(close(
            inc_beta(a, b, x),
            1.0 - inc_beta(b, a, 1.0 - x),
            1e-13
        ));
    }

    #[test]
    fn t_cdf_and_p_match_the_closed_forms_for_one_and_two_df() {
        let pi = std::f64::consts::PI;
        for &t in &[-3.0, -0.5, 0.0, 0.7, 1.0, 5.7, 40.0] {
            // df = 1 is Cauchy: F(t) = 1/2 + atan(t) / pi.
            assert!(close(t_cdf(t, 1.0), 0.5 + t.atan() / pi, 1e-13), "{t}");
            // df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2)).
            let f2 = 0.5 + t / (2.0 * (2.0 + t * t).sqrt());
            assert!(close(t_cdf(t, 2.0), f2, 1e-13), "{t}");
            assert!(close(
                t_two_sided_p(t, 2.0),
                2.0 * (1.0 - f2.max(1.0 - f2)),
                1e-13
            ));
        }
        assert!(close(t_two_sided_p(1.0, 1.0), 0.5, 1e-14));
        assert_eq!(t_two_sided_p(0.0, 5.0), 1.0);
        // Tables: P(|T| > 2.228) = 0.05 at df = 10; P(|T| > 2.0) = 0.0734 at df = 10.
        assert!(close(t_two_sided_p(2.228_138_85, 10.0), 0.05, 1e-8));
        assert!(close(t_two_sided_p(2.0, 10.0), 0.073_388, 1e-6));
        assert_eq!(t_two_sided_p(f64::INFINITY, 3.0), 0.0);
        assert_eq!(
            (t_cdf(f64::NEG_INFINITY, 3.0), t_cdf(f64::INFINITY, 3.0)),
            (0.0, 1.0)
        );
    }

    #[test]
    fn t_quantiles_match_the_tables() {
        for (df, want) in [
            (1.0, 12.706_204_736),
            (2.0, 4.302_652_730),
            (4.0, 2.776_445_105),
            (30.0, 2.042_272_456),
            (1000.0, 1.962_339_081),
        ] {
            let got = t_quantile(0.975, df);
            assert!(close(got, want, 1e-8), "df {df}: {got} vs {want}");
        }
        // df = 2 in closed form: t_p = (2p - 1) sqrt(2 / (1 - (2p - 1)^2)).
        let u: f64 = 2.0 * 0.9 - 1.0;
        assert!(close(
            t_quantile(0.9, 2.0),
            u * (2.0 / (1.0 - u * u)).sqrt(),
            1e-10
        ));
        assert!(close(t_quantile(0.025, 4.0), -2.776_445_105, 1e-8));
        assert_eq!(t_quantile(0.5, 3.0), 0.0);
    }

    #[test]
    fn binomial_se_is_sqrt_pq_over_n() {
        assert!(close(
            binomial_se(0.5, 200),
            (0.25f64 / 200.0).sqrt(),
            1e-15
        ));
        assert!(close(binomial_se(0.5, 200), 0.035_355_339, 1e-9));
        assert_eq!(binomial_se(0.0, 200), 0.0);
    }

    /// POPO vs GRPO on the 400-step grid's final evaluation (seeds 0, 1, 2): 54.0 / 51.5 / 54.0
    /// against 43.0 / 32.5 / 33.5. Differences 11.0, 19.0, 20.5: mean 16.8333, sd 5.1072,
    /// se 2.9487, t = 5.7087, half-width 4.3027 x 2.9487 = 12.687, p = 1 - t / sqrt(2 + t^2).
    #[test]
    fn paired_by_seed_gives_the_mean_difference_interval_and_p() {
        let popo = [(0, 0.54), (1, 0.515), (2, 0.54)];
        let grpo = [(0, 0.43), (1, 0.325), (2, 0.335)];
        let p = paired(&popo, &grpo);
        assert_eq!(p.n, 3);
        assert!(close(p.mean_diff, 0.168_333_333, 1e-9));
        let diffs: Vec<f64> = p.per_seed.iter().map(|d| d.1).collect();
        assert!(close(diffs[0], 0.11, 1e-12) && close(diffs[2], 0.205, 1e-12));
        let t = p.t.unwrap();
        assert!(close(t, 5.708_7, 1e-3), "{t}");
        let (lo, hi) = p.ci95.unwrap();
        assert!(
            close(lo, 0.041_46, 1e-4) && close(hi, 0.295_20, 1e-4),
            "{lo} {hi}"
        );
        assert!(close(p.p.unwrap(), 1.0 - t / (2.0 + t * t).sqrt(), 1e-12));
        assert!(close(p.p.unwrap(), 0.029_3, 1e-3));
        assert_eq!(p.call(), Call::Above);
        assert_eq!(
            p.describe("POPO - GRPO", Unit::Points),
            "POPO - GRPO: +16.8 points (seeds 0, 1, 2: +11.0, +19.0, +20.5; 95% CI [+4.1, \
             +29.5], paired t = 5.71, p = 0.029, n = 3)"
        );
        // The reverse order flips every sign and the call.
        let r = paired(&grpo, &popo);
        assert_eq!(r.call(), Call::Below);
        assert!(close(r.t.unwrap(), -t, 1e-12) && close(r.p.unwrap(), p.p.unwrap(), 1e-12));
        assert!(r.every_seed(-1.0) && !r.every_seed(1.0));
    }

    /// POPO vs RAFT, final evaluation: 54.0 / 51.5 / 54.0 against 51.5 / 41.0 / 56.0. Differences
    /// 2.5, 10.5, -2.0: mean 3.667, sd 6.331, se 3.655, t = 1.003, p = 1 - t / sqrt(2 + t^2)
    /// = 0.4213; the interval (3.667 +- 15.73) includes zero.
    #[test]
    fn an_interval_across_zero_is_not_separated() {
        let p = paired(
            &[(0, 0.54), (1, 0.515), (2, 0.54)],
            &[(0, 0.515), (1, 0.41), (2, 0.56)],
        );
        assert!(close(p.mean_diff, 0.036_667, 1e-6));
        assert!(close(p.p.unwrap(), 0.421_3, 1e-3), "{:?}", p.p);
        let (lo, hi) = p.ci95.unwrap();
        assert!(
            close(lo, -0.120_6, 1e-3) && close(hi, 0.193_9, 1e-3),
            "{lo} {hi}"
        );
        assert_eq!(p.call(), Call::NotSeparated);
        assert!(!p.every_seed(1.0) && !p.every_seed(-1.0));
        assert!(p.describe("POPO - RAFT", Unit::Points).contains(
            "+3.7 points (seeds 0, 1, 2: +2.5, +10.5, -2.0; 95% CI [-12.1, +19.4], paired t = \
             1.00, p = 0.421, n = 3)"
        ));
    }

    #[test]
    fn only_common_finite_seeds_pair_and_fewer_than_three_give_no_interval() {
        let a = [(0, 0.5), (1, 0.6), (2, f64::NAN), (3, 0.7)];
        let b = [(1, 0.4), (0, 0.45), (2, 0.3)];
        let p = paired(&a, &b);
        assert_eq!(p.per_seed.len(), 2);
        assert_eq!((p.per_seed[0].0, p.per_seed[1].0), (0, 1));
        assert!(close(p.mean_diff, 0.125, 1e-12));
        assert_eq!((p.t, p.ci95, p.p), (None, None, None));
        assert_eq!(p.call(), Call::TooFewSeeds);
        assert_eq!(
            p.describe("POPO - tau0", Unit::Points),
            "POPO - tau0: +12.5 points (seeds 0, 1: +5.0, +20.0; too few seeds for an interval, \
             n = 2)"
        );
        let one = paired(&a[..1], &b);
        assert!(one
            .describe("x", Unit::Points)
            .contains("(seed 0: +5.0; too few"));
        let none = paired(&a[3..], &b);
        assert_eq!((none.n, none.call()), (0, Call::TooFewSeeds));
        assert!(none.mean_diff.is_nan());
        assert_eq!(none.describe("x", Unit::Points), "x: no seeds in common");
    }

    /// Every seed the same difference (here up to rounding: 0.3 - 0.1 is 0.19999999999999998):
    /// a zero-width interval, decided by its sign alone.
    #[test]
    fn identical_differences_give_a_zero_width_interval() {
        let same = paired(
            &[(0, 0.3), (1, 0.4), (2, 0.5)],
            &[(0, 0.1), (1, 0.2), (2, 0.3)],
        );
        assert_eq!(same.t, Some(f64::INFINITY));
        assert_eq!(same.p, Some(0.0));
        assert_eq!(same.call(), Call::Above);
        assert!(same
            .describe("d", Unit::Points)
            .contains("paired t = +inf, p < 0.001"));
        let zero = paired(
            &[(0, 0.3), (1, 0.4), (2, 0.5)],
            &[(0, 0.3), (1, 0.4), (2, 0.5)],
        );
        assert_eq!(
            (zero.t, zero.p, zero.ci95),
            (Some(0.0), Some(1.0), Some((0.0, 0.0)))
        );
        assert_eq!(zero.call(), Call::NotSeparated);
    }

    /// One sample against zero: -0.002, -0.001, -0.003 have mean -0.002, sd 0.001, se 0.000577,
    /// t = -3.464, half-width 4.3027 x 0.000577 = 0.002484: [-0.004484, +0.000484].
    #[test]
    fn one_sample_tests_a_mean_against_zero() {
        let p = one_sample(&[(0, -0.002), (1, -0.001), (2, -0.003)]);
        assert!(close(p.t.unwrap(), -3.464_1, 1e-4));
        let (lo, hi) = p.ci95.unwrap();
        assert!(close(lo, -0.004_484, 1e-6) && close(hi, 0.000_484, 1e-6));
        assert_eq!(p.call(), Call::NotSeparated);
        assert_eq!(
            p.describe("delta_neg", Unit::Plain(4)),
            "delta_neg: -0.0020 (seeds 0, 1, 2: -0.0020, -0.0010, -0.0030; 95% CI [-0.0045, \
             +0.0005], paired t = -3.46, p = 0.074, n = 3)"
        );
    }
}
