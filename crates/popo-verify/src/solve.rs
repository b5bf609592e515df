//! One-variable inequalities -> their solution sets, so that `x < 2`, `-x > -2`, `2 > x` and
//! `(-\infty, 2)` are one answer, and `|x| \ge 2` is `(-\infty, -2] \cup [2, \infty)`.
//!
//! Each link `l op r` of a chain is solved when `l - r` is, in the chain's one variable, a
//! polynomial of degree at most 2 with rational coefficients (read off exactly from its values
//! at a few integers, then checked at more points), or linear with any constant coefficients
//! (checked numerically), or when one side is `|u|` and the other a constant. A chain is the
//! intersection of its links, an answer list of inequalities the union of its items. Anything
//! else is left to the structural comparison in `equiv`.

use crate::complex::C;
use crate::eval::{exact, free_symbols, gcd_cost, numeric, q_root, Q};
use crate::expr::{Const, Expr, Fun, NumLit, RelOp};
use crate::limits::{Budget, Limit};
use num_bigint::BigInt;
use num_traits::{Signed, ToPrimitive, Zero};

type R<T> = Result<Option<T>, Limit>;

/// An endpoint: the expression it is compared by, its value for ordering, and openness.
#[derive(Clone, Debug)]
struct End {
    e: Expr,
    v: f64,
    open: bool,
}

/// A connected piece of a solution set; a point when both ends are the same closed value.
#[derive(Clone, Debug)]
struct Piece {
    lo: End,
    hi: End,
}

/// Pieces in increasing order, disjoint and not touching.
type Set = Vec<Piece>;

/// Where `f` (a function of the variable) is zero, and its sign on the open regions before,
/// between and after those points (`signs.len() == roots.len() + 1`).
struct Zeros {
    roots: Vec<(Expr, f64)>,
    signs: Vec<i8>,
}

/// The union of the solution sets of `rels` (one relation, or an answer list such as
/// `x < -1, x > 2`), as an interval, a union, a set of points or the empty set; `None` when an
/// item is not an inequality in one variable of a kind solved here.
pub(crate) fn solution_set(rels: &[Expr], b: &mut Budget) -> R<Expr> {
    if let [Expr::Rel(es, ops)] = rels {
        // `x \in [1, 3]`: the set as written.
        if let ([Expr::Sym(_), set], [RelOp::In]) = (es.as_slice(), ops.as_slice()) {
            return Ok(Some(set.clone()));
        }
    }
    let mut acc: Set = Vec::new();
    for r in rels {
        let Expr::Rel(es, ops) = r else {
            return Ok(None);
        };
        let Some(s) = chain(es, ops, b)? else {
            return Ok(None);
        };
        acc = union(acc, s);
    }
    Ok(Some(to_expr(acc)))
}

/// A chain whose every non-constant member is one function value or absolute value
/// (`-2 < g(t) \le 5`, `0 \le |x-1| \le 5`, `f(x) \in [0, 4]`), read with that expression as its
/// unknown: the set of values it is bounded to. `None` for any other answer.
pub(crate) fn expression_solution_set(e: &Expr, b: &mut Budget) -> R<Expr> {
    let Expr::Rel(es, ops) = e else {
        return Ok(None);
    };
    if ops.iter().any(|o| matches!(o, RelOp::Eq | RelOp::Approx)) {
        return Ok(None);
    }
    let mut unknown: Option<&Expr> = None;
    for m in es {
        match m {
            Expr::Apply(..) | Expr::Func(Fun::Abs, _) => match unknown {
                None => unknown = Some(m),
                Some(u) if u == m => {}
                Some(_) => return Ok(None),
            },
            _ => {
                let mut syms = Vec::new();
                free_symbols(m, &mut syms);
                if !syms.is_empty() {
                    return Ok(None);
                }
            }
        }
    }
    let Some(u) = unknown else {
        return Ok(None);
    };
    // A name no answer can spell.
    let x = Expr::Sym("\u{1}".into());
    let es = es
        .iter()
        .map(|m| if m == u { x.clone() } else { m.clone() });
    solution_set(&[Expr::Rel(es.collect(), ops.clone())], b)
}

fn chain(es: &[Expr], ops: &[RelOp], b: &mut Budget) -> R<Set> {
    if ops
        .iter()
        .any(|o| matches!(o, RelOp::Eq | RelOp::Approx | RelOp::In))
    {
        return Ok(None);
    }
    let mut syms = Vec::new();
    for e in es {
        free_symbols(e, &mut syms);
    }
    let [x] = syms.as_slice() else {
        return Ok(None);
    };
    let mut acc = whole_line();
    for (k, op) in ops.iter().enumerate() {
        let Some(s) = link(&es[k], *op, &es[k + 1], x, b)? else {
            return Ok(None);
        };
        acc = intersect(&acc, &s);
    }
    Ok(Some(acc))
}

fn link(l: &Expr, op: RelOp, r: &Expr, x: &str, b: &mut Budget) -> R<Set> {
    b.tick(1)?;
    if let Expr::Func(Fun::Abs, u) = l {
        if let Some(c) = constant(r, b)? {
            return abs_link(u, op, r, c, x, b);
        }
    }
    if let Expr::Func(Fun::Abs, u) = r {
        if let Some(c) = constant(l, b)? {
            return abs_link(u, op.flip(), l, c, x, b);
        }
    }
    let f = Expr::Sum(vec![(false, l.clone()), (true, r.clone())]);
    let zeros = match quadratic(&f, x, b)? {
        Some(z) => z,
        None => match linear(&f, x, b)? {
            Some(z) => z,
            None => return Ok(None),
        },
    };
    Ok(Some(from_zeros(&zeros, op)))
}

/// `|u| op c` for a constant `c` (written `ce`).
fn abs_link(u: &Expr, op: RelOp, ce: &Expr, c: f64, x: &str, b: &mut Budget) -> R<Set> {
    let neg_c = Expr::Neg(Box::new(ce.clone()));
    let strict = matches!(op, RelOp::Lt | RelOp::Gt);
    let (below, above) = if strict {
        (RelOp::Lt, RelOp::Gt)
    } else {
        (RelOp::Le, RelOp::Ge)
    };
    let two = |b: &mut Budget, o1: RelOp, e1: &Expr, o2: RelOp, e2: &Expr| -> R<(Set, Set)> {
        match (link(u, o1, e1, x, b)?, link(u, o2, e2, x, b)?) {
            (Some(s1), Some(s2)) => Ok(Some((s1, s2))),
            _ => Ok(None),
        }
    };
    Ok(match op {
        // |u| < c: -c < u < c.
        RelOp::Lt | RelOp::Le => {
            if c < 0.0 || (c == 0.0 && strict) {
                Some(Vec::new())
            } else {
                two(b, above, &neg_c, below, ce)?.map(|(s1, s2)| intersect(&s1, &s2))
            }
        }
        // |u| > c: u < -c or u > c.
        RelOp::Gt | RelOp::Ge => {
            if c < 0.0 || (c == 0.0 && !strict) {
                Some(whole_line())
            } else {
                two(b, below, &neg_c, above, ce)?.map(|(s1, s2)| union(s1, s2))
            }
        }
        RelOp::Ne => {
            if c < 0.0 {
                Some(whole_line())
            } else {
                two(b, RelOp::Ne, &neg_c, RelOp::Ne, ce)?.map(|(s1, s2)| intersect(&s1, &s2))
            }
        }
        RelOp::Eq | RelOp::Approx | RelOp::In => None,
    })
}

/// The value of an expression without free symbols, if it is a real number.
fn constant(e: &Expr, b: &mut Budget) -> R<f64> {
    let mut syms = Vec::new();
    free_symbols(e, &mut syms);
    if !syms.is_empty() {
        return Ok(None);
    }
    Ok(numeric(e, &[], b)?
        .filter(|v| v.is_finite() && v.im.abs() <= 1e-12 * v.re.abs().max(1.0))
        .map(|v| v.re))
}

/// The exact value, or `None` also when it is too large to compute exactly.
fn exact_or_none(e: &Expr, b: &mut Budget) -> R<Q> {
    match exact(e, b) {
        Err(Limit::Size) => Ok(None),
        r => r,
    }
}

fn sign(q: &Q) -> i8 {
    if q.is_zero() {
        0
    } else if q.is_positive() {
        1
    } else {
        -1
    }
}

fn f64_of(q: &Q) -> f64 {
    q.to_f64().unwrap_or(f64::NAN)
}

fn int(t: i64) -> Expr {
    let e = Expr::int(t.unsigned_abs());
    if t < 0 {
        Expr::Neg(Box::new(e))
    } else {
        e
    }
}

fn big(n: &BigInt) -> Expr {
    Expr::Num(Box::new(NumLit {
        digits: n.abs().to_string(),
        frac_digits: 0,
        exp10: 0,
        has_point: false,
    }))
}

/// A rational as an expression: `n`, `n/d`, or its negation.
fn q_expr(q: &Q) -> Expr {
    let n = big(q.numer());
    let e = if q.is_integer() {
        n
    } else {
        Expr::Prod(vec![(false, n), (true, big(q.denom()))])
    };
    if q.is_negative() {
        Expr::Neg(Box::new(e))
    } else {
        e
    }
}

/// `f = a x^2 + b x + c` with rational coefficients, read off from its exact values at 0, 1
/// and -1 and checked at 2, -2, 3 (exactly) and 1/2 (numerically, against floors and the like).
fn quadratic(f: &Expr, x: &str, b: &mut Budget) -> R<Zeros> {
    let mut v = Vec::with_capacity(6);
    for t in [0, 1, -1, 2, -2, 3] {
        match exact_or_none(&f.subst(x, &int(t)), b)? {
            Some(q) => v.push(q),
            None => return Ok(None),
        }
    }
    // About 20 operations of `Ratio` arithmetic on these values follow.
    for q in &v {
        b.tick(gcd_cost(q, q).saturating_mul(20))?;
    }
    let two = Q::from_integer(2.into());
    let c = v[0].clone();
    let a = (&v[1] + &v[2]) / &two - &c;
    let bq = (&v[1] - &v[2]) / &two;
    let at = |t: i64| &a * Q::from_integer((t * t).into()) + &bq * Q::from_integer(t.into()) + &c;
    if at(2) != v[3] || at(-2) != v[4] || at(3) != v[5] {
        return Ok(None);
    }
    let want = f64_of(&a) / 4.0 + f64_of(&bq) / 2.0 + f64_of(&c);
    let got = numeric(f, &[(x, C::real(0.5))], b)?;
    if !got.is_some_and(|g| (g.re - want).abs() <= 1e-9 * want.abs().max(1.0) && g.im == 0.0) {
        return Ok(None);
    }
    let root = |q: Q| (q_expr(&q), f64_of(&q));
    Ok(Some(match (sign(&a), sign(&bq)) {
        (0, 0) => Zeros {
            roots: vec![],
            signs: vec![sign(&c)],
        },
        (0, s) => Zeros {
            roots: vec![root(-&c / &bq)],
            signs: vec![-s, s],
        },
        (s, _) => {
            let four = Q::from_integer(4.into());
            let d = &bq * &bq - four * &a * &c;
            let two_a = &two * &a;
            match sign(&d) {
                -1 => Zeros {
                    roots: vec![],
                    signs: vec![s],
                },
                0 => Zeros {
                    roots: vec![root(-&bq / &two_a)],
                    signs: vec![s, s],
                },
                _ => {
                    let mut roots = match q_root(&d, 2, b)? {
                        Some(r) => vec![root((-&bq - &r) / &two_a), root((-&bq + &r) / &two_a)],
                        None => {
                            let sq = f64_of(&d).sqrt();
                            let (nb, ta) = (f64_of(&-&bq), f64_of(&two_a));
                            [true, false]
                                .map(|minus| {
                                    let e = Expr::Prod(vec![
                                        (
                                            false,
                                            Expr::Sum(vec![
                                                (false, q_expr(&-&bq)),
                                                (
                                                    minus,
                                                    Expr::Root(
                                                        Box::new(q_expr(&d)),
                                                        Box::new(Expr::int(2)),
                                                    ),
                                                ),
                                            ]),
                                        ),
                                        (true, q_expr(&two_a)),
                                    ]);
                                    (e, (nb + if minus { -sq } else { sq }) / ta)
                                })
                                .to_vec()
                        }
                    };
                    roots.sort_by(|p, q| p.1.total_cmp(&q.1));
                    Zeros {
                        roots,
                        signs: vec![s, -s, s],
                    }
                }
            }
        }
    }))
}

/// `f = a x + c` with constant (not necessarily rational) coefficients, checked numerically.
/// The root keeps its exact form, `-f(0) / (f(1) - f(0))`, for the comparison.
fn linear(f: &Expr, x: &str, b: &mut Budget) -> R<Zeros> {
    let at = |t: f64, b: &mut Budget| -> R<f64> {
        Ok(numeric(f, &[(x, C::real(t))], b)?
            .filter(|v| v.is_finite() && v.im.abs() <= 1e-12 * v.re.abs().max(1.0))
            .map(|v| v.re))
    };
    let (Some(f0), Some(f1)) = (at(0.0, b)?, at(1.0, b)?) else {
        return Ok(None);
    };
    let slope = f1 - f0;
    if slope.abs() <= 1e-12 * f0.abs().max(f1.abs()).max(1.0) {
        return Ok(None);
    }
    for t in [2.0, -1.5, 3.7, -4.2] {
        let want = f0 + slope * t;
        match at(t, b)? {
            Some(v) if (v - want).abs() <= 1e-9 * want.abs().max(1.0) => {}
            _ => return Ok(None),
        }
    }
    let (e0, e1) = (f.subst(x, &int(0)), f.subst(x, &int(1)));
    let root = Expr::Prod(vec![
        (false, Expr::Neg(Box::new(e0.clone()))),
        (true, Expr::Sum(vec![(false, e1), (true, e0)])),
    ]);
    let s = if slope > 0.0 { 1 } else { -1 };
    Ok(Some(Zeros {
        roots: vec![(root, -f0 / slope)],
        signs: vec![-s, s],
    }))
}

fn inf(positive: bool) -> End {
    let e = Expr::Const(Const::Inf);
    End {
        e: if positive { e } else { Expr::Neg(Box::new(e)) },
        v: if positive {
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        },
        open: true,
    }
}

fn whole_line() -> Set {
    vec![Piece {
        lo: inf(false),
        hi: inf(true),
    }]
}

fn same(a: f64, b: f64) -> bool {
    a == b
        || (a.is_finite() && b.is_finite() && (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0))
}

/// The set where `f op 0`, from the sign pattern of `f`: walk the regions and roots from left
/// to right and join the runs that satisfy `op`.
fn from_zeros(z: &Zeros, op: RelOp) -> Set {
    let holds = |s: i8| match op {
        RelOp::Lt => s < 0,
        RelOp::Le => s <= 0,
        RelOp::Gt => s > 0,
        RelOp::Ge => s >= 0,
        RelOp::Ne => s != 0,
        RelOp::Eq | RelOp::Approx | RelOp::In => false,
    };
    let at = |k: usize, open: bool| End {
        e: z.roots[k].0.clone(),
        v: z.roots[k].1,
        open,
    };
    // Elements in order: region 0, root 0, region 1, root 1, ..., region n.
    let mut elems: Vec<(bool, End, End)> = Vec::new();
    for k in 0..=z.roots.len() {
        let lo = if k == 0 { inf(false) } else { at(k - 1, true) };
        let hi = if k == z.roots.len() {
            inf(true)
        } else {
            at(k, true)
        };
        elems.push((holds(z.signs[k]), lo, hi));
        if k < z.roots.len() {
            elems.push((holds(0), at(k, false), at(k, false)));
        }
    }
    let mut out: Set = Vec::new();
    let mut run: Option<Piece> = None;
    for (inside, lo, hi) in elems {
        match (&mut run, inside) {
            (Some(p), true) => p.hi = hi,
            (None, true) => run = Some(Piece { lo, hi }),
            (Some(_), false) => out.extend(run.take()),
            (None, false) => {}
        }
    }
    out.extend(run);
    out
}

fn intersect(a: &Set, b: &Set) -> Set {
    let mut out = Vec::new();
    for p in a {
        for q in b {
            let lo = if same(p.lo.v, q.lo.v) {
                End {
                    open: p.lo.open || q.lo.open,
                    ..p.lo.clone()
                }
            } else if p.lo.v > q.lo.v {
                p.lo.clone()
            } else {
                q.lo.clone()
            };
            let hi = if same(p.hi.v, q.hi.v) {
                End {
                    open: p.hi.open || q.hi.open,
                    ..p.hi.clone()
                }
            } else if p.hi.v < q.hi.v {
                p.hi.clone()
            } else {
                q.hi.clone()
            };
            let point = same(lo.v, hi.v);
            if (!point && lo.v < hi.v) || (point && !lo.open && !hi.open) {
                out.push(Piece { lo, hi });
            }
        }
    }
    out
}

fn union(a: Set, b: Set) -> Set {
    let mut all: Vec<Piece> = a.into_iter().chain(b).collect();
    all.sort_by(|p, q| p.lo.v.total_cmp(&q.lo.v).then(p.lo.open.cmp(&q.lo.open)));
    let mut out: Set = Vec::new();
    for p in all {
        if let Some(last) = out.last_mut() {
            let touches = same(p.lo.v, last.hi.v) && !(p.lo.open && last.hi.open);
            if p.lo.v < last.hi.v && !same(p.lo.v, last.hi.v) || touches {
                if same(p.hi.v, last.hi.v) {
                    last.hi.open = last.hi.open && p.hi.open;
                } else if p.hi.v > last.hi.v {
                    last.hi = p.hi;
                }
                continue;
            }
        }
        out.push(p);
    }
    out
}

fn to_expr(set: Set) -> Expr {
    let mut parts: Vec<Expr> = set
        .into_iter()
        .map(|p| {
            if same(p.lo.v, p.hi.v) {
                Expr::Set(vec![p.lo.e])
            } else {
                Expr::Interval {
                    lo: Box::new(p.lo.e),
                    hi: Box::new(p.hi.e),
                    lo_open: p.lo.open,
                    hi_open: p.hi.open,
                }
            }
        })
        .collect();
    match parts.len() {
        0 => Expr::Set(Vec::new()),
        1 => parts.pop().unwrap_or(Expr::Set(Vec::new())),
        _ => Expr::Union(parts),
    }
}
