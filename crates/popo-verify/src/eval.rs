//! Evaluation: exact big rationals where the value is rational, complex floating point
//! otherwise. Both spend the pair's budget; exact arithmetic refuses numbers beyond
//! `Limits::max_bits` instead of grinding on them.

use crate::complex::{gamma, C};
use crate::expr::{Const, Expr, Fun, NumLit};
use crate::limits::{Budget, Limit};
use num_bigint::{BigInt, BigUint, Sign};
use num_integer::Integer;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

pub(crate) type Q = BigRational;

fn pow10(k: u64) -> BigInt {
    num_traits::pow(BigInt::from(10u32), k as usize)
}

pub(crate) fn lit_value(n: &NumLit, b: &mut Budget) -> Result<Q, Limit> {
    let e = n.ulp_exp();
    // 10^k has about 3.33 k bits.
    if e.unsigned_abs() * 10 / 3 > b.limits.max_bits
        || n.digits.len() as u64 * 4 > b.limits.max_bits
    {
        return Err(Limit::Size);
    }
    b.tick(n.digits.len() as u64 / 8 + e.unsigned_abs() / 16 + 1)?;
    let m: BigInt = n.digits.parse().unwrap_or_else(|_| BigInt::zero());
    Ok(if e >= 0 {
        Q::from_integer(m * pow10(e as u64))
    } else {
        decimal_fraction(m, e.unsigned_abs())
    })
}

/// `m / 10^k` in lowest terms without a gcd: only factors 2 and 5 can cancel. (`Q::new`'s
/// binary gcd of a short `m` with a huge `10^k` is quadratic in the size of `10^k`: `3e-60000`
/// took 70 ms for a few thousand steps.) `m` has at most a few thousand digits, so dividing out
/// its fives is cheap.
fn decimal_fraction(m: BigInt, k: u64) -> Q {
    if m.is_zero() {
        return Q::zero();
    }
    let twos = m.trailing_zeros().unwrap_or(0).min(k);
    let mut m = m >> twos;
    let five = BigInt::from(5u32);
    let mut fives = 0;
    while fives < k {
        let (q, r) = m.div_rem(&five);
        if !r.is_zero() {
            break;
        }
        m = q;
        fives += 1;
    }
    let denom = (num_traits::pow(BigInt::from(2u32), (k - twos) as usize))
        * num_traits::pow(five, (k - fives) as usize);
    Q::new_raw(m, denom)
}

fn bits(q: &Q) -> u64 {
    q.numer().bits() + q.denom().bits()
}

fn cost(q: &Q) -> u64 {
    bits(q) / 64 + 1
}

fn check(q: Q, b: &mut Budget) -> Result<Q, Limit> {
    if bits(&q) > b.limits.max_bits {
        return Err(Limit::Size);
    }
    b.tick(cost(&q))?;
    Ok(q)
}

fn as_int(q: &Q) -> Option<&BigInt> {
    if q.is_integer() {
        Some(q.numer())
    } else {
        None
    }
}

/// Exact n-th root of a non-negative integer, if it is one.
fn int_root(x: &BigInt, n: u32) -> Option<BigInt> {
    if x.is_negative() {
        if n % 2 == 1 {
            return int_root(&-x, n).map(|r| -r);
        }
        return None;
    }
    let r = x.nth_root(n);
    if num_traits::pow(r.clone(), n as usize) == *x {
        Some(r)
    } else {
        None
    }
}

/// The exact n-th root of a rational, if it is one. Charged quadratic steps like a gcd:
/// num-bigint's `nth_root` runs Newton steps of full-size divisions (fuzz: `\sqrt83e33353`, a
/// 110,000-bit radicand, took 0.9 s when the root was charged linear steps).
pub(crate) fn q_root(q: &Q, n: u32, b: &mut Budget) -> Result<Option<Q>, Limit> {
    b.tick(gcd_cost(q, q))?;
    Ok(int_root(q.numer(), n)
        .zip(int_root(q.denom(), n))
        .map(|(p, d)| Q::new(p, d)))
}

fn q_pow(base: &Q, e: &BigInt, b: &mut Budget) -> Result<Option<Q>, Limit> {
    if base.is_zero() {
        return Ok(if e.is_negative() {
            None
        } else if e.is_zero() {
            Some(Q::one())
        } else {
            Some(Q::zero())
        });
    }
    let base_bits = bits(base).max(1);
    let Some(k) = e.abs().to_u64() else {
        return if base.abs().is_one() {
            Ok(Some(if e.is_even() {
                base.abs()
            } else {
                base.clone()
            }))
        } else {
            Err(Limit::Size)
        };
    };
    if base.abs().is_one() {
        return Ok(Some(if k % 2 == 0 { base.abs() } else { base.clone() }));
    }
    if base_bits.saturating_mul(k) > b.limits.max_bits {
        return Err(Limit::Size);
    }
    b.tick(base_bits.saturating_mul(k) / 64 * 4 + 1)?;
    // Numerator and denominator apart: powers of coprime numbers stay coprime, and `Ratio`'s own
    // multiplication would take gcds (see `gcd`).
    let p = Q::new_raw(
        num_traits::pow(base.numer().clone(), k as usize),
        num_traits::pow(base.denom().clone(), k as usize),
    );
    Ok(Some(if e.is_negative() { p.recip() } else { p }))
}

fn factorial(n: &BigInt, b: &mut Budget) -> Result<Option<Q>, Limit> {
    let Some(n) = n.to_u64() else {
        return if n.is_negative() {
            Ok(None)
        } else {
            Err(Limit::Size)
        };
    };
    if n > b.limits.max_factorial {
        return Err(Limit::Size);
    }
    let mut acc = BigUint::one();
    for k in 2..=n {
        acc *= k;
        b.tick(acc.bits() / 64 + 1)?;
    }
    Ok(Some(Q::from_integer(BigInt::from_biguint(Sign::Plus, acc))))
}

fn binom(n: &BigInt, k: &BigInt, b: &mut Budget) -> Result<Option<Q>, Limit> {
    let (Some(k), false) = (k.to_u64(), n.is_negative()) else {
        return Ok(None);
    };
    if k > b.limits.max_factorial {
        return Err(Limit::Size);
    }
    if BigInt::from(k) > *n {
        return Ok(Some(Q::zero()));
    }
    let mut acc = BigInt::one();
    for j in 0..k {
        acc = acc * (n - BigInt::from(j)) / BigInt::from(j + 1);
        b.tick(acc.bits() / 64 + 1)?;
        if acc.bits() > b.limits.max_bits {
            return Err(Limit::Size);
        }
    }
    Ok(Some(Q::from_integer(acc)))
}

/// `gcd(x, y)` (non-negative), one Euclid division first. num-integer's binary gcd shifts the
/// larger number bit by bit, quadratic in its size even against 1: `Ratio`'s arithmetic, which
/// takes gcds of denominators and results, spent seconds on `x 9999^{9999} > 68` and on
/// `x < 811111111121111^-1963` (found by fuzzing, fuzz/crashes/verify/ and fuzz/crashes/jsonl/).
/// Dividing first costs the product of the sizes; the binary gcd then runs on the smaller two.
fn gcd(x: &BigInt, y: &BigInt) -> BigInt {
    let (long, short) = if x.bits() >= y.bits() { (x, y) } else { (y, x) };
    if short.is_zero() {
        return long.abs();
    }
    short.gcd(&(long % short))
}

/// `a + c` in lowest terms (Henrici: the gcds are of denominators and of the sum with theirs).
pub(crate) fn q_add(a: &Q, c: &Q) -> Q {
    let (an, ad, cn, cd) = (a.numer(), a.denom(), c.numer(), c.denom());
    let g = gcd(ad, cd);
    let (adg, cdg) = (ad / &g, cd / &g);
    let t = an * &cdg + cn * &adg;
    if t.is_zero() {
        return Q::zero();
    }
    let g2 = gcd(&t, &g);
    Q::new_raw(t / &g2, adg * (cd / &g2))
}

pub(crate) fn q_sub(a: &Q, c: &Q) -> Q {
    q_add(a, &-c)
}

/// `a * c` in lowest terms (the gcds are across: numerator of one, denominator of the other).
pub(crate) fn q_mul(a: &Q, c: &Q) -> Q {
    if a.is_zero() || c.is_zero() {
        return Q::zero();
    }
    let g1 = gcd(a.numer(), c.denom());
    let g2 = gcd(c.numer(), a.denom());
    Q::new_raw(
        (a.numer() / &g1) * (c.numer() / &g2),
        (a.denom() / &g2) * (c.denom() / &g1),
    )
}

/// The steps of rational arithmetic on `a` and `b` (`q_add`, `q_mul`, `Ratio`'s comparisons):
/// a division of one by the other, then a binary gcd on the smaller (about 32 word operations
/// per word and word).
pub(crate) fn gcd_cost(a: &Q, b: &Q) -> u64 {
    cost(a).saturating_mul(cost(b)).saturating_mul(32)
}

/// The exact rational value, or `None` when it is not (known to be) rational.
pub(crate) fn exact(e: &Expr, b: &mut Budget) -> Result<Option<Q>, Limit> {
    b.tick(1)?;
    Ok(match e {
        Expr::Num(n) => Some(lit_value(n, b)?),
        Expr::Base(d, base) => BigInt::parse_bytes(d.as_bytes(), *base)
            .map(Q::from_integer)
            .or(Some(Q::zero())),
        Expr::Neg(x) => exact(x, b)?.map(|v| -v),
        Expr::Sum(ts) => exact_sum(ts, b)?,
        Expr::Prod(fs) => exact_prod(fs, b)?,
        Expr::Pow(base, ex) => exact_pow(base, ex, b)?,
        Expr::Root(x, n) => exact_root(x, n, b)?,
        Expr::Func(Fun::Abs, x) => exact(x, b)?.map(|v| v.abs()),
        Expr::Func(Fun::Floor, x) => exact(x, b)?.map(|v| v.floor()),
        Expr::Func(Fun::Ceil, x) => exact(x, b)?.map(|v| v.ceil()),
        Expr::Fact(x) => match exact(x, b)? {
            Some(v) => match as_int(&v) {
                Some(n) => factorial(n, b)?,
                None => None,
            },
            None => None,
        },
        Expr::Binom(n, k) => match (exact(n, b)?, exact(k, b)?) {
            (Some(n), Some(k)) => match (as_int(&n), as_int(&k)) {
                (Some(n), Some(k)) => binom(n, k, b)?,
                _ => None,
            },
            _ => None,
        },
        // Through `q_mul`, not `Ratio`'s division: its binary gcd of a huge numerator with 100
        // is quadratic (fuzz: `3E33333%%%...` took 0.2 s per `%`).
        Expr::Percent(x) => match exact(x, b)? {
            Some(v) => {
                let hundredth = Q::new_raw(BigInt::from(1), BigInt::from(100));
                b.tick(gcd_cost(&v, &hundredth))?;
                Some(check(q_mul(&v, &hundredth), b)?)
            }
            None => None,
        },
        _ => None,
    })
}

/// A sum term by term, each step charged for its gcds and checked for size.
fn exact_sum(ts: &[(bool, Expr)], b: &mut Budget) -> Result<Option<Q>, Limit> {
    let mut acc = Q::zero();
    for (neg, t) in ts {
        let Some(v) = exact(t, b)? else {
            return Ok(None);
        };
        b.tick(gcd_cost(&acc, &v))?;
        acc = check(
            if *neg {
                q_sub(&acc, &v)
            } else {
                q_add(&acc, &v)
            },
            b,
        )?;
    }
    Ok(Some(acc))
}

/// A product factor by factor; dividing by zero has no value.
fn exact_prod(fs: &[(bool, Expr)], b: &mut Budget) -> Result<Option<Q>, Limit> {
    let mut acc = Q::one();
    for (div, f) in fs {
        let Some(v) = exact(f, b)? else {
            return Ok(None);
        };
        if *div {
            if v.is_zero() {
                return Ok(None);
            }
            b.tick(gcd_cost(&acc, &v))?;
            acc = check(q_mul(&acc, &v.recip()), b)?;
        } else {
            b.tick(gcd_cost(&acc, &v))?;
            acc = check(q_mul(&acc, &v), b)?;
        }
    }
    Ok(Some(acc))
}

/// `base^ex`: an integer power, or a rational one `p/q` when the q-th root is exact.
fn exact_pow(base: &Expr, ex: &Expr, b: &mut Budget) -> Result<Option<Q>, Limit> {
    let Some(x) = exact(ex, b)? else {
        return Ok(None);
    };
    let Some(bv) = exact(base, b)? else {
        return Ok(None);
    };
    if let Some(k) = as_int(&x) {
        return q_pow(&bv, k, b);
    }
    // Rational exponent p/q: exact only when the q-th root is.
    let q = x.denom().to_u32().filter(|&q| q <= 64);
    Ok(match q {
        Some(q) => match q_root(&bv, q, b)? {
            Some(r) => q_pow(&r, x.numer(), b)?,
            None => None,
        },
        None => None,
    })
}

/// The `n`-th root of `x` for a whole `n` up to 64, when it is exact.
fn exact_root(x: &Expr, n: &Expr, b: &mut Budget) -> Result<Option<Q>, Limit> {
    let Some(nv) = exact(n, b)? else {
        return Ok(None);
    };
    let Some(n) = as_int(&nv)
        .and_then(|n| n.to_u32())
        .filter(|&n| (1..=64).contains(&n))
    else {
        return Ok(None);
    };
    let Some(xv) = exact(x, b)? else {
        return Ok(None);
    };
    q_root(&xv, n, b)
}

/// Numeric value under an assignment of the free symbols; `None` when undefined.
pub(crate) fn numeric(e: &Expr, env: &[(&str, C)], b: &mut Budget) -> Result<Option<C>, Limit> {
    b.tick(1)?;
    let r = match e {
        Expr::Num(n) => {
            let v: f64 = n.digits.parse().unwrap_or(0.0);
            Some(C::real(v * 10f64.powi(n.ulp_exp().clamp(-400, 400) as i32)))
        }
        Expr::Base(d, base) => Some(C::real(
            u128::from_str_radix(d, *base)
                .map(|v| v as f64)
                .unwrap_or(f64::INFINITY),
        )),
        Expr::Const(c) => Some(match c {
            Const::Pi => C::real(std::f64::consts::PI),
            Const::E => C::real(std::f64::consts::E),
            Const::I => C { re: 0.0, im: 1.0 },
            Const::Inf => C::real(f64::INFINITY),
        }),
        Expr::Sym(s) => env.iter().find(|(n, _)| *n == &**s).map(|(_, v)| *v),
        Expr::Neg(x) => numeric(x, env, b)?.map(C::neg),
        Expr::Sum(ts) => numeric_sum(ts, env, b)?,
        Expr::Prod(fs) => numeric_prod(fs, env, b)?,
        Expr::Pow(x, p) => match (numeric(x, env, b)?, numeric(p, env, b)?) {
            (Some(xv), Some(pv)) => Some(power(xv, pv, p, b)?),
            _ => None,
        },
        Expr::Root(x, n) => match (numeric(x, env, b)?, numeric(n, env, b)?) {
            (Some(x), Some(n)) if n == C::real(2.0) => Some(x.sqrt()),
            (Some(x), Some(n)) => Some(x.pow(C::real(1.0).div(n))),
            _ => None,
        },
        Expr::LogBase(x, base) => match (numeric(x, env, b)?, numeric(base, env, b)?) {
            (Some(x), Some(base)) => Some(x.ln().div(base.ln())),
            _ => None,
        },
        Expr::Func(f, x) => numeric(x, env, b)?.and_then(|x| function_value(*f, x)),
        Expr::Fact(x) => match numeric(x, env, b)? {
            Some(x) if x.is_real() && !(x.re < 0.0 && x.re.fract() == 0.0) => {
                Some(C::real(gamma(x.re + 1.0)))
            }
            _ => None,
        },
        Expr::Binom(n, k) => match (numeric(n, env, b)?, numeric(k, env, b)?) {
            (Some(n), Some(k)) if n.is_real() && k.is_real() => Some(C::real(
                gamma(n.re + 1.0) / (gamma(k.re + 1.0) * gamma(n.re - k.re + 1.0)),
            )),
            _ => None,
        },
        Expr::Apply(name, args) => numeric_apply(name, args, env, b)?,
        Expr::Percent(x) => numeric(x, env, b)?.map(|x| x.div(C::real(100.0))),
        _ => None,
    };
    Ok(r.filter(|r| !r.re.is_nan() && !r.im.is_nan()))
}

fn numeric_sum(ts: &[(bool, Expr)], env: &[(&str, C)], b: &mut Budget) -> Result<Option<C>, Limit> {
    let mut acc = C::real(0.0);
    for (neg, t) in ts {
        let Some(v) = numeric(t, env, b)? else {
            return Ok(None);
        };
        acc = if *neg { acc.sub(v) } else { acc.add(v) };
    }
    Ok(Some(acc))
}

fn numeric_prod(
    fs: &[(bool, Expr)],
    env: &[(&str, C)],
    b: &mut Budget,
) -> Result<Option<C>, Limit> {
    let mut acc = C::real(1.0);
    for (div, f) in fs {
        let Some(v) = numeric(f, env, b)? else {
            return Ok(None);
        };
        acc = if *div { acc.div(v) } else { acc.mul(v) };
    }
    Ok(Some(acc))
}

/// `f(x)`. The inverse and hyperbolic functions, floor and ceiling are only taken of reals:
/// `None` for a complex argument.
fn function_value(f: Fun, x: C) -> Option<C> {
    Some(match f {
        Fun::Sin => x.sin(),
        Fun::Cos => x.cos(),
        Fun::Tan => x.sin().div(x.cos()),
        Fun::Cot => x.cos().div(x.sin()),
        Fun::Sec => C::real(1.0).div(x.cos()),
        Fun::Csc => C::real(1.0).div(x.sin()),
        Fun::Exp => x.exp(),
        Fun::Ln => x.ln(),
        Fun::Log10 => x.ln().div(C::real(std::f64::consts::LN_10)),
        Fun::Abs => C::real(x.abs()),
        _ if !x.is_real() => return None,
        Fun::Asin => C::real(x.re.asin()),
        Fun::Acos => C::real(x.re.acos()),
        Fun::Atan => C::real(x.re.atan()),
        Fun::Sinh => C::real(x.re.sinh()),
        Fun::Cosh => C::real(x.re.cosh()),
        Fun::Tanh => C::real(x.re.tanh()),
        Fun::Floor => C::real(x.re.floor()),
        Fun::Ceil => C::real(x.re.ceil()),
    })
}

/// An unknown function: a fixed smooth function of its arguments, seeded by the name, so
/// `f(2)` equals `f(2)` but neither `f(3)` nor `g(2)` nor `0`.
fn numeric_apply(
    name: &str,
    args: &[Expr],
    env: &[(&str, C)],
    b: &mut Budget,
) -> Result<Option<C>, Limit> {
    let h = name
        .bytes()
        .fold(7u32, |h, c| h.wrapping_mul(31).wrapping_add(c as u32));
    let mut acc = C::real(1.0 + (h % 89) as f64 / 37.0);
    for (k, a) in args.iter().enumerate() {
        let Some(v) = numeric(a, env, b)? else {
            return Ok(None);
        };
        let w = 0.37 + ((h >> (k % 16)) % 23) as f64 / 19.0;
        acc = acc.add(v.mul(C::real(w)).sin().add(C::real(1.5 + k as f64)));
    }
    Ok(Some(acc))
}

/// `x^p` (`p` is the exponent's tree, `pv` its value).
fn power(x: C, pv: C, p: &Expr, b: &mut Budget) -> Result<C, Limit> {
    Ok(real_odd_root_power(x, p, b)?.unwrap_or_else(|| x.pow(pv)))
}

/// `y^{2/3}` at a negative `y`: the real value, as `\sqrt[3]{y}^2` has it (and as `exact` computes
/// `(-8)^{2/3} = 4`), not the principal complex branch, when the exponent is a rational with an
/// odd denominator. Otherwise `None`: even denominators keep the principal branch, which
/// `\sqrt{y}` shares with `y^{1/2}`, so `\sqrt{y^2}` stays `|y|` and apart from `y`.
fn real_odd_root_power(base: C, ex: &Expr, b: &mut Budget) -> Result<Option<C>, Limit> {
    if !base.is_real() || base.re >= 0.0 {
        return Ok(None);
    }
    let q = match exact(ex, b) {
        Ok(Some(q)) => q,
        Ok(None) | Err(Limit::Size) => return Ok(None),
        Err(l) => return Err(l),
    };
    if q.is_integer() || q.denom().is_even() {
        return Ok(None);
    }
    let (Some(n), Some(d)) = (q.numer().to_f64(), q.denom().to_f64()) else {
        return Ok(None);
    };
    let magnitude = (-base.re).powf(n / d);
    Ok(Some(C::real(if q.numer().is_odd() {
        -magnitude
    } else {
        magnitude
    })))
}

/// No free symbol, and not text: a number, a constant, or arithmetic on them.
pub(crate) fn is_const(e: &Expr) -> bool {
    let mut syms = Vec::new();
    free_symbols(e, &mut syms);
    syms.is_empty() && !matches!(e, Expr::Text(_))
}

/// Free symbols of a tree, deduplicated, in first-seen order.
pub(crate) fn free_symbols<'a>(e: &'a Expr, out: &mut Vec<&'a str>) {
    match e {
        Expr::Sym(s) => {
            if !out.contains(&&**s) {
                out.push(s);
            }
        }
        Expr::Num(_) | Expr::Const(_) | Expr::Base(..) | Expr::Text(_) => {}
        Expr::Neg(x) | Expr::Func(_, x) | Expr::Fact(x) | Expr::Percent(x) => free_symbols(x, out),
        Expr::Pow(a, c) | Expr::Root(a, c) | Expr::LogBase(a, c) | Expr::Binom(a, c) => {
            free_symbols(a, out);
            free_symbols(c, out);
        }
        Expr::Pm(a, c) => {
            if let Some(a) = a {
                free_symbols(a, out);
            }
            free_symbols(c, out);
        }
        Expr::Sum(v) | Expr::Prod(v) => v.iter().for_each(|(_, x)| free_symbols(x, out)),
        Expr::Tuple(v) | Expr::Set(v) | Expr::List(v) | Expr::Union(v) | Expr::Rel(v, _) => {
            v.iter().for_each(|x| free_symbols(x, out))
        }
        Expr::Interval { lo, hi, .. } => {
            free_symbols(lo, out);
            free_symbols(hi, out);
        }
        Expr::Matrix(rows) => rows.iter().flatten().for_each(|x| free_symbols(x, out)),
        Expr::Apply(_, args) => args.iter().for_each(|x| free_symbols(x, out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_fractions_are_in_lowest_terms() {
        for m in [
            0i64,
            1,
            2,
            3,
            5,
            10,
            25,
            40,
            125,
            250,
            1000,
            3125,
            7,
            640,
            123_456_000,
        ] {
            for k in [0u64, 1, 2, 3, 5, 9] {
                let m = BigInt::from(m);
                let q = decimal_fraction(m.clone(), k);
                assert_eq!(q, Q::new(m, pow10(k)));
                assert!(q.numer().gcd(q.denom()).is_one());
            }
        }
    }

    /// `q_add`, `q_sub` and `q_mul` agree with `Ratio`'s arithmetic and stay in lowest terms.
    #[test]
    fn rational_arithmetic_agrees_with_ratio() {
        let vals: Vec<Q> = [
            (0, 1),
            (1, 1),
            (-1, 1),
            (2, 3),
            (-4, 6),
            (5, 12),
            (7, 18),
            (-35, 36),
            (1_000_000_007, 30),
            (6, 35),
        ]
        .iter()
        .map(|&(n, d)| Q::new(n.into(), d.into()))
        .chain([
            Q::new(BigInt::one(), pow10(40) * 3),
            Q::from_integer(pow10(30) * 7),
        ])
        .collect();
        for a in &vals {
            for c in &vals {
                for (got, want) in [
                    (q_add(a, c), a + c),
                    (q_sub(a, c), a - c),
                    (q_mul(a, c), a * c),
                ] {
                    assert_eq!(got, want, "{a} and {c}");
                    assert_eq!((got.numer(), got.denom()), (want.numer(), want.denom()));
                }
            }
        }
    }
}
