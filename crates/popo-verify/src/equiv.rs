//! Are two parsed answers the same mathematical object? The gold is trusted, the prediction
//! is not: a list never matches a single value, and rounding is forgiven only in the
//! prediction's favour when the prediction is itself a written decimal.

use crate::approx::approximated;
use crate::complex::C;
use crate::eval::{exact, free_symbols, gcd_cost, is_const, lit_value, numeric, q_sub, Q};
use crate::expr::{names_a_quantity, Const, Expr, RelOp};
use crate::limits::{Budget, Limit};
use crate::matrix::{has_matrix, matrix_value};
use crate::solve::{expression_solution_set, solution_set};
use num_bigint::BigInt;
use num_traits::{Signed, Zero};

/// How a match was decided (for `Verdict::reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum How {
    Exact,
    Rounded,
    Numeric,
    Structural,
    Text,
}

pub(crate) struct Cx<'b> {
    pub b: &'b mut Budget,
    pub rel_tol: f64,
    pub how: How,
}

type R = Result<bool, Limit>;

/// A rounded decimal prediction needs this many significant digits: `4.5` is not
/// `2\sqrt{5}` (4.47...), though it is that value rounded.
const MIN_ROUNDED_DIGITS: usize = 3;

/// Sample values for free symbols: a few fixed, irregular points, some negative.
const POINTS: [f64; 7] = [0.7315, -1.2893, 2.1170, 0.3391, -0.5478, 3.7123, 5.2911];

fn sym_value(name: &str, point: usize) -> f64 {
    // Different symbols get different values at the same point.
    let h = name
        .bytes()
        .fold(0u32, |h, c| h.wrapping_mul(31).wrapping_add(c as u32));
    let base = POINTS[point % POINTS.len()];
    base * (1.0 + (h % 97) as f64 / 131.0) + (h % 13) as f64 * 0.0137
}

/// Relative closeness; `floor` is an absolute slack for values that should be exactly zero
/// (`\sin \pi` vs `0`), never used when either side is a known non-zero exact value.
fn close_with(a: C, b: C, tol: f64, floor: f64) -> bool {
    if !a.is_finite() || !b.is_finite() {
        return false;
    }
    let d = a.sub_abs(b);
    d <= tol * a.abs().max(b.abs()) || d <= floor
}

fn close(a: C, b: C, tol: f64) -> bool {
    close_with(a, b, tol, 1e-12)
}

impl C {
    fn sub_abs(self, o: C) -> f64 {
        (self.re - o.re).hypot(self.im - o.im)
    }
}

/// `±\infty`: Some(sign).
fn infinity_sign(e: &Expr) -> Option<bool> {
    match e {
        Expr::Const(Const::Inf) => Some(true),
        Expr::Neg(x) => infinity_sign(x).map(|s| !s),
        Expr::Sum(ts) if ts.len() == 1 => infinity_sign(&ts[0].1).map(|s| s != ts[0].0),
        _ => None,
    }
}

fn contains_pm(e: &Expr) -> bool {
    match e {
        Expr::Pm(..) => true,
        Expr::Num(_) | Expr::Const(_) | Expr::Sym(_) | Expr::Base(..) | Expr::Text(_) => false,
        Expr::Neg(x) | Expr::Func(_, x) | Expr::Fact(x) | Expr::Percent(x) => contains_pm(x),
        Expr::Pow(a, c) | Expr::Root(a, c) | Expr::LogBase(a, c) | Expr::Binom(a, c) => {
            contains_pm(a) || contains_pm(c)
        }
        Expr::Sum(v) | Expr::Prod(v) => v.iter().any(|(_, x)| contains_pm(x)),
        _ => false,
    }
}

/// Replace the first `±` by `+` (`plus`) or `-`.
fn choose_pm(e: &Expr, plus: bool, done: &mut bool) -> Expr {
    if *done {
        return e.clone();
    }
    let mut rec = |x: &Expr| choose_pm(x, plus, done);
    match e {
        Expr::Pm(a, c) => {
            *done = true;
            let a = a.as_ref().map(|a| (**a).clone());
            let c = (**c).clone();
            if matches!(&c, Expr::Num(n) if n.digits.bytes().all(|d| d == b'0')) {
                // `\pm 0` is the single value 0.
                return a.unwrap_or(c);
            }
            match a {
                Some(a) => Expr::Sum(vec![(false, a), (!plus, c)]),
                None if plus => c,
                None => Expr::Neg(Box::new(c)),
            }
        }
        Expr::Neg(x) => Expr::Neg(Box::new(rec(x))),
        Expr::Func(f, x) => Expr::Func(*f, Box::new(rec(x))),
        Expr::Fact(x) => Expr::Fact(Box::new(rec(x))),
        Expr::Percent(x) => Expr::Percent(Box::new(rec(x))),
        Expr::Pow(a, c) => Expr::Pow(Box::new(rec(a)), Box::new(rec(c))),
        Expr::Root(a, c) => Expr::Root(Box::new(rec(a)), Box::new(rec(c))),
        Expr::LogBase(a, c) => Expr::LogBase(Box::new(rec(a)), Box::new(rec(c))),
        Expr::Binom(a, c) => Expr::Binom(Box::new(rec(a)), Box::new(rec(c))),
        Expr::Sum(v) => Expr::Sum(v.iter().map(|(n, x)| (*n, rec(x))).collect()),
        Expr::Prod(v) => Expr::Prod(v.iter().map(|(n, x)| (*n, rec(x))).collect()),
        e => e.clone(),
    }
}

/// `a ± b` -> the answers `a + b`, `a - b` (at most 3 signs expanded).
fn expand_pm(e: &Expr, out: &mut Vec<Expr>, depth: u32) {
    if depth > 3 || !contains_pm(e) {
        out.push(e.clone());
        return;
    }
    for plus in [true, false] {
        let mut done = false;
        let x = choose_pm(e, plus, &mut done);
        let mut alts = Vec::new();
        expand_pm(&x, &mut alts, depth + 1);
        for a in alts {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
}

/// Top-level normal form: answers with `±` become lists.
pub(crate) fn expand_answer(e: Expr) -> Expr {
    match e {
        Expr::List(items) if items.iter().any(contains_pm) => {
            let mut out = Vec::new();
            for it in &items {
                expand_pm(it, &mut out, 0);
            }
            Expr::List(out)
        }
        Expr::Set(items) if items.iter().any(contains_pm) => {
            let mut out = Vec::new();
            for it in &items {
                expand_pm(it, &mut out, 0);
            }
            Expr::Set(out)
        }
        e if contains_pm(&e) => {
            let mut out = Vec::new();
            expand_pm(&e, &mut out, 0);
            if out.len() == 1 {
                return out.pop().unwrap_or(e);
            }
            Expr::List(out)
        }
        e => e,
    }
}

fn is_scalar(e: &Expr) -> bool {
    !matches!(
        e,
        Expr::Tuple(_)
            | Expr::Interval { .. }
            | Expr::Set(_)
            | Expr::List(_)
            | Expr::Union(_)
            | Expr::Matrix(_)
            | Expr::Rel(..)
            | Expr::Text(_)
            | Expr::Pm(..)
            | Expr::Base(..)
    )
}

/// The value an equation states, when it states one: the right-hand side of `x = 3`,
/// `f(2) = 7`, `(a, b) = (4, 1)`, `AB:CD = 2:3`, `|PQ| = 5` (a named quantity on the left),
/// and the final right-hand side of a chain of equalities (`x = 2 + 2 = 4`) or of a
/// computation between constants (`2 + 2 = 4`).
fn assigned_value(e: &Expr) -> Option<&Expr> {
    let Expr::Rel(es, ops) = e else { return None };
    let (last, before) = es.split_last()?;
    let all_eq = ops.iter().all(|o| *o == RelOp::Eq);
    let named = ops.iter().all(|o| matches!(o, RelOp::Eq | RelOp::In))
        && before.iter().all(names_a_quantity);
    let chain = all_eq && es.len() >= 3;
    let computation = all_eq && es.iter().all(is_const);
    // `\mathbf{a} + \mathbf{b} = \begin{pmatrix} 4 \\ 6 \end{pmatrix}`: an explicit matrix
    // is a value, never the unknown of an equation.
    let matrix = all_eq && matches!(last, Expr::Matrix(_)) && !before.iter().any(has_matrix);
    (named || chain || computation || matrix).then_some(last)
}

fn norm_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// A multiple-choice letter: `C`, `(C)`, `\text{(C)}`, `C)`.
fn choice_letter(e: &Expr) -> Option<char> {
    match e {
        Expr::Sym(s) => one_letter(s),
        Expr::Text(t) => {
            let t = t
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .trim();
            one_letter(t)
        }
        _ => None,
    }
}

/// A product that starts with a multiple-choice label: the letter and the rest.
fn leading_choice(e: &Expr) -> Option<(char, Expr)> {
    let Expr::Prod(fs) = e else { return None };
    let (false, first @ Expr::Text(_)) = fs.first()? else {
        return None;
    };
    let letter = choice_letter(first)?;
    let rest: Vec<(bool, Expr)> = fs[1..].to_vec();
    let rest = match rest.len() {
        0 => return None,
        1 if !rest[0].0 => rest.into_iter().next()?.1,
        _ => Expr::Prod(rest),
    };
    Some((letter, rest))
}

fn one_letter(s: &str) -> Option<char> {
    let mut it = s.chars();
    let c = it.next()?;
    (it.next().is_none() && c.is_ascii_uppercase() && c <= 'J').then_some(c)
}

impl Cx<'_> {
    pub fn equiv(&mut self, g: &Expr, p: &Expr) -> R {
        self.b.tick(1)?;
        if g == p {
            self.how = How::Structural;
            return Ok(true);
        }
        // `A + B`, `2A`, `AB` over explicit matrices: multiplied out first.
        let (gm, pm) = (matrix_value(g, self.b)?, matrix_value(p, self.b)?);
        if gm.is_some() || pm.is_some() {
            return self.equiv(gm.as_ref().unwrap_or(g), pm.as_ref().unwrap_or(p));
        }
        // `\textbf{(C)}\ 12`: the letter answers a letter, the value a value.
        if let Some((letter, rest)) = leading_choice(p) {
            if let Some(gl) = choice_letter(g) {
                self.how = How::Text;
                return Ok(gl == letter);
            }
            return self.equiv(g, &rest);
        }
        if let Some(one) = self.repeated_answer(g, p)? {
            return self.equiv(g, one);
        }
        if let Some(same) = self.assignment(g, p)? {
            return Ok(same);
        }
        self.by_shape(g, p)
    }

    /// `15\frac{39}{40} and \frac{639}{40}`: one answer written twice is not a hedge. The
    /// answer, when the prediction lists (at most 8) equivalent items for a single gold.
    fn repeated_answer<'e>(&mut self, g: &Expr, p: &'e Expr) -> Result<Option<&'e Expr>, Limit> {
        let Expr::List(items) = p else {
            return Ok(None);
        };
        if matches!(g, Expr::List(_) | Expr::Set(_)) || items.len() > 8 {
            return Ok(None);
        }
        for it in &items[1..] {
            if !self.equiv(&items[0], it)? {
                return Ok(None);
            }
        }
        Ok(Some(&items[0]))
    }

    /// Relations first: an assignment (`x = 3`) compares by its value when the other side is
    /// no relation. `None` when neither side is such an assignment.
    fn assignment(&mut self, g: &Expr, p: &Expr) -> Result<Option<bool>, Limit> {
        if let (Some(gv), false) = (assigned_value(g), matches!(p, Expr::Rel(..))) {
            return self.equiv(gv, p).map(Some);
        }
        if let (false, Some(pv)) = (matches!(g, Expr::Rel(..)), assigned_value(p)) {
            if self.equiv(g, pv)? {
                return Ok(Some(true));
            }
            return match approximated(p, self.b)? {
                Some(exact) => self.equiv(g, exact).map(Some),
                None => Ok(Some(false)),
            };
        }
        Ok(None)
    }

    /// Two answers by their shapes: percentages, text, numbers in a base and relations first,
    /// then collections ([`Self::collections`]), then single values.
    fn by_shape(&mut self, g: &Expr, p: &Expr) -> R {
        match (g, p) {
            (Expr::Percent(gx), _) => {
                let p_inner = match p {
                    Expr::Percent(px) => px.as_ref(),
                    _ => p,
                };
                if self.equiv(gx, p_inner)? {
                    return Ok(true);
                }
                // 50% and 0.5.
                if !matches!(p, Expr::Percent(_)) {
                    return self.scalar(g, p);
                }
                Ok(false)
            }
            (_, Expr::Percent(px)) => {
                if self.equiv(g, px)? {
                    return Ok(true);
                }
                self.scalar(g, p)
            }
            (Expr::Text(_), _) | (_, Expr::Text(_)) => self.text(g, p),
            (Expr::Base(gd, gb), Expr::Base(pd, pb)) => {
                self.how = How::Exact;
                Ok(gd == pd && gb == pb
                    || BigInt::parse_bytes(gd.as_bytes(), *gb)
                        == BigInt::parse_bytes(pd.as_bytes(), *pb))
            }
            (Expr::Base(..), _) | (_, Expr::Base(..)) => Ok(false),
            (Expr::Rel(ge, gops), Expr::Rel(pe, pops)) => self.relations(ge, gops, pe, pops, g, p),
            (Expr::Rel(..), _) | (_, Expr::Rel(..)) => self.sets(g, p),
            _ => self.collections(g, p),
        }
    }

    /// Lists, sets, tuples, intervals, unions and matrices against each other (solution sets
    /// where a list is one), and single values last.
    fn collections(&mut self, g: &Expr, p: &Expr) -> R {
        match (g, p) {
            (Expr::Union(_) | Expr::Interval { .. }, Expr::List(pi)) => {
                match solution_set(pi, self.b)? {
                    Some(ps) => self.equiv(g, &ps),
                    None => Ok(false),
                }
            }
            (Expr::List(gi), Expr::List(pi) | Expr::Set(pi))
            | (Expr::Set(gi), Expr::Set(pi) | Expr::List(pi)) => {
                if let (Some(gs), Some(ps)) = (solution_set(gi, self.b)?, solution_set(pi, self.b)?)
                {
                    return self.equiv(&gs, &ps);
                }
                self.lists(gi, pi)
            }
            (Expr::List(gi), Expr::Union(_) | Expr::Interval { .. }) => {
                match solution_set(gi, self.b)? {
                    Some(gs) => self.equiv(&gs, p),
                    None => Ok(false),
                }
            }
            (Expr::Tuple(gi), Expr::Tuple(pi) | Expr::List(pi)) => self.ordered(gi, pi),
            (Expr::Tuple(gi), Expr::Matrix(rows)) | (Expr::Matrix(rows), Expr::Tuple(gi)) => {
                match vector_of(rows) {
                    Some(v) => self.ordered(gi, &v),
                    None => Ok(false),
                }
            }
            (Expr::Tuple(gi), Expr::Interval { .. }) if gi.len() == 2 => {
                let gi = open_interval(gi);
                self.equiv(&gi, p)
            }
            (Expr::Interval { .. }, Expr::Tuple(pi)) if pi.len() == 2 => {
                let pi = open_interval(pi);
                self.equiv(g, &pi)
            }
            (
                Expr::Interval {
                    lo: gl,
                    hi: gh,
                    lo_open: glo,
                    hi_open: gho,
                },
                Expr::Interval {
                    lo: pl,
                    hi: ph,
                    lo_open: plo,
                    hi_open: pho,
                },
            ) => {
                self.how = How::Structural;
                Ok(glo == plo && gho == pho && self.equiv(gl, pl)? && self.equiv(gh, ph)?)
            }
            (Expr::Union(gu), Expr::Union(pu)) => self.unordered(gu, pu),
            (Expr::Matrix(gr), Expr::Matrix(pr)) => self.matrices(gr, pr),
            (Expr::Set(gi), Expr::Tuple(_)) if gi.is_empty() => Ok(false),
            _ if is_scalar(g) && is_scalar(p) => self.scalar(g, p),
            _ => Ok(false),
        }
    }

    /// Two matrices: the same shape, element by element.
    fn matrices(&mut self, gr: &[Vec<Expr>], pr: &[Vec<Expr>]) -> R {
        if gr.len() != pr.len() || gr.iter().zip(pr).any(|(a, b)| a.len() != b.len()) {
            return Ok(false);
        }
        for (a, b) in gr.iter().flatten().zip(pr.iter().flatten()) {
            if !self.equiv(a, b)? {
                return Ok(false);
            }
        }
        self.how = How::Structural;
        Ok(true)
    }

    /// An answer read as a set of reals, to compare with an inequality: an inequality (or a
    /// list of them) by its solution set; an interval, union or set as written; a pair
    /// `(a, b)` as the open interval.
    fn as_set(&mut self, e: &Expr) -> Result<Option<Expr>, Limit> {
        Ok(match e {
            Expr::Rel(..) => solution_set(std::slice::from_ref(e), self.b)?,
            Expr::List(items) => solution_set(items, self.b)?,
            Expr::Interval { .. } | Expr::Union(_) | Expr::Set(_) => Some(e.clone()),
            Expr::Tuple(v) if v.len() == 2 => Some(open_interval(v)),
            _ => None,
        })
    }

    /// A relation against a set: both read as sets of reals. A relation is read in its variable
    /// first; if that does not match, with the function value or absolute value it bounds as its
    /// unknown (`-2 < g(t) \le 5` is `(-2, 5]`, and so is `-2 < |x-1| \le 5`).
    fn sets(&mut self, g: &Expr, p: &Expr) -> R {
        let (gs, ps) = (self.as_set(g)?, self.as_set(p)?);
        if let (Some(a), Some(b)) = (&gs, &ps) {
            if self.equiv(a, b)? {
                return Ok(true);
            }
        }
        let (gx, px) = (
            expression_solution_set(g, self.b)?,
            expression_solution_set(p, self.b)?,
        );
        if gx.is_none() && px.is_none() {
            return Ok(false);
        }
        match (gx.or(gs), px.or(ps)) {
            (Some(a), Some(b)) => self.equiv(&a, &b),
            _ => Ok(false),
        }
    }

    fn text(&mut self, g: &Expr, p: &Expr) -> R {
        self.how = How::Text;
        if let (Some(a), Some(b)) = (choice_letter(g), choice_letter(p)) {
            return Ok(a == b);
        }
        match (g, p) {
            (Expr::Text(a), Expr::Text(b)) => Ok(norm_text(a) == norm_text(b)),
            (Expr::Text(a), other) | (other, Expr::Text(a)) => {
                // A text gold like `\text{5 apples}` against `5`: compare the text's math.
                let s = a.to_string();
                if s.chars().any(|c| c.is_ascii_digit()) && s.len() < 64 {
                    if let Ok(e) = crate::parse::parse_answer(&s, self.b) {
                        let e = crate::approx::settle(e, self.b)?;
                        if !matches!(e, Expr::Text(_)) {
                            return if matches!(g, Expr::Text(_)) {
                                self.equiv(&e, other)
                            } else {
                                self.equiv(other, &e)
                            };
                        }
                    }
                }
                Ok(norm_text(a) == norm_text(&other.to_string()) && !norm_text(a).is_empty())
            }
            _ => Ok(false),
        }
    }

    fn relations(
        &mut self,
        ge: &[Expr],
        gops: &[RelOp],
        pe: &[Expr],
        pops: &[RelOp],
        g: &Expr,
        p: &Expr,
    ) -> R {
        let all_eq = |ops: &[RelOp]| ops.iter().all(|o| *o == RelOp::Eq);
        if all_eq(gops) && all_eq(pops) {
            if let (Some(gv), Some(pv)) = (assigned_value(g), assigned_value(p)) {
                if ge.len() == 2 && pe.len() == 2 && self.equiv(&ge[0], &pe[0])? {
                    return self.equiv(gv, pv);
                }
                // `x = 3` vs `y = 3`, `|PQ| = 5` vs `PQ = 5`: the name is not the answer. A
                // function of a variable (`f(x) = 1`) is, though: it defines the function.
                let value_name = |e: &Expr| {
                    names_a_quantity(e)
                        && !matches!(e, Expr::Apply(_, args) if !args.iter().all(is_const))
                };
                if value_name(&ge[0]) && value_name(&pe[0]) {
                    return self.equiv(gv, pv);
                }
            }
            if ge.len() == 2 && pe.len() == 2 {
                // `y = 2x + 1` vs `2x + 1 = y`: the differences agree up to a constant factor.
                if self.equiv(&ge[0], &pe[0])? && self.equiv(&ge[1], &pe[1])? {
                    return Ok(true);
                }
                if self.equiv(&ge[0], &pe[1])? && self.equiv(&ge[1], &pe[0])? {
                    return Ok(true);
                }
                let dg = Expr::Sum(vec![(false, ge[0].clone()), (true, ge[1].clone())]);
                let dp = Expr::Sum(vec![(false, pe[0].clone()), (true, pe[1].clone())]);
                return self.proportional(&dg, &dp);
            }
            return Ok(false);
        }
        // Inequalities in one variable: the same solution set (`x < 2` is `-x > -2`).
        let (gs, ps) = (
            solution_set(std::slice::from_ref(g), self.b)?,
            solution_set(std::slice::from_ref(p), self.b)?,
        );
        if let (Some(gs), Some(ps)) = (gs, ps) {
            return self.equiv(&gs, &ps);
        }
        // Bounds on one function value each (`-2 < g(t) \le 5`, `g(t) \in (-2, 5]`).
        let (gx, px) = (
            expression_solution_set(g, self.b)?,
            expression_solution_set(p, self.b)?,
        );
        if let (Some(gx), Some(px)) = (gx, px) {
            return self.equiv(&gx, &px);
        }
        // Same chain, side by side; or mirrored (`a < b` is `b > a`).
        if gops.len() == pops.len() && gops == pops {
            return self.ordered(ge, pe);
        }
        if gops.len() == pops.len() && gops.iter().rev().zip(pops).all(|(a, b)| a.flip() == *b) {
            let rev: Vec<Expr> = pe.iter().rev().cloned().collect();
            return self.ordered(ge, &rev);
        }
        Ok(false)
    }

    /// `a` and `b` agree up to a non-zero constant factor at every sample point.
    fn proportional(&mut self, a: &Expr, b: &Expr) -> R {
        let mut syms = Vec::new();
        free_symbols(a, &mut syms);
        free_symbols(b, &mut syms);
        if syms.is_empty() || syms.len() > 8 {
            return Ok(false);
        }
        let mut ratio: Option<C> = None;
        let mut good = 0;
        for pt in 0..POINTS.len() {
            let env: Vec<(&str, C)> = syms
                .iter()
                .map(|s| (*s, C::real(sym_value(s, pt))))
                .collect();
            let (Some(x), Some(y)) = (numeric(a, &env, self.b)?, numeric(b, &env, self.b)?) else {
                continue;
            };
            if !x.is_finite() || !y.is_finite() || y.abs() < 1e-9 {
                continue;
            }
            let r = C { re: x.re, im: x.im };
            let q = complex_div(r, y);
            match ratio {
                None => ratio = Some(q),
                Some(r0) => {
                    if !close(r0, q, self.rel_tol) {
                        return Ok(false);
                    }
                }
            }
            good += 1;
        }
        self.how = How::Numeric;
        Ok(good >= 3 && ratio.is_some_and(|r| r.abs() > 1e-12))
    }

    /// Two single values.
    fn scalar(&mut self, g: &Expr, p: &Expr) -> R {
        if let (Some(a), Some(b)) = (infinity_sign(g), infinity_sign(p)) {
            self.how = How::Exact;
            return Ok(a == b);
        }
        if infinity_sign(g).is_some() || infinity_sign(p).is_some() {
            return Ok(false);
        }
        // Multiple-choice letters.
        if let (Some(a), Some(b)) = (choice_letter(g), choice_letter(p)) {
            self.how = How::Text;
            return Ok(a == b);
        }
        let ge = exact(g, self.b)?;
        let pe = exact(p, self.b)?;
        if let (Some(gv), Some(pv)) = (&ge, &pe) {
            if gv == pv {
                self.how = How::Exact;
                return Ok(true);
            }
            return self.rounded_exact(gv, p);
        }
        // Numeric comparison, at several points if there are free symbols.
        let nonzero_exact = |v: &Option<Q>| v.as_ref().is_some_and(|v| !v.is_zero());
        let floor = if nonzero_exact(&ge) || nonzero_exact(&pe) {
            0.0
        } else {
            1e-12
        };
        let mut syms = Vec::new();
        free_symbols(g, &mut syms);
        free_symbols(p, &mut syms);
        if syms.len() > 8 {
            return Ok(false);
        }
        if syms.is_empty() {
            let (Some(gv), Some(pv)) = (numeric(g, &[], self.b)?, numeric(p, &[], self.b)?) else {
                return Ok(false);
            };
            if close_with(gv, pv, self.rel_tol, floor) {
                self.how = How::Numeric;
                return Ok(true);
            }
            // A decimal prediction for an irrational gold, rounded to its own precision.
            if let Some(lit) = p.as_decimal() {
                if lit.sig_digits() >= MIN_ROUNDED_DIGITS
                    && gv.im.abs() < 1e-12
                    && pv.im.abs() < 1e-12
                {
                    let half = 0.5 * 10f64.powi(lit.ulp_exp().clamp(-300, 300) as i32);
                    if (gv.re - pv.re).abs() <= half * (1.0 + 1e-9) {
                        self.how = How::Rounded;
                        return Ok(true);
                    }
                }
            }
            return Ok(false);
        }
        let mut good = 0;
        for pt in 0..POINTS.len() {
            let env: Vec<(&str, C)> = syms
                .iter()
                .map(|s| (*s, C::real(sym_value(s, pt))))
                .collect();
            match (numeric(g, &env, self.b)?, numeric(p, &env, self.b)?) {
                (Some(a), Some(b)) if a.is_finite() && b.is_finite() => {
                    if !close_with(a, b, self.rel_tol, floor) {
                        return Ok(false);
                    }
                    good += 1;
                }
                (None, None) => {}
                (Some(a), Some(b)) if !a.is_finite() && !b.is_finite() => {}
                _ => return Ok(false),
            }
        }
        self.how = How::Numeric;
        Ok(good >= 3)
    }

    /// Exact gold, decimal prediction: equal to the gold rounded to the prediction's precision.
    fn rounded_exact(&mut self, gv: &Q, p: &Expr) -> R {
        let Some(lit) = p.as_decimal() else {
            return Ok(false);
        };
        if lit.sig_digits() < MIN_ROUNDED_DIGITS {
            return Ok(false);
        }
        let pv = match exact(p, self.b)? {
            Some(v) => v,
            None => return Ok(false),
        };
        let mut ulp = lit.clone();
        ulp.digits = "5".into();
        ulp.exp10 -= 1;
        let half = lit_value(&ulp, self.b)?;
        self.b.tick(gcd_cost(gv, &pv))?;
        // A zero gold is never "rounded to" from a non-zero prediction.
        let ok = q_sub(gv, &pv).abs() <= half && (pv.is_zero() || !gv.is_zero());
        if ok {
            self.how = How::Rounded;
        }
        Ok(ok)
    }
}

fn complex_div(a: C, b: C) -> C {
    let d = b.re * b.re + b.im * b.im;
    C {
        re: (a.re * b.re + a.im * b.im) / d,
        im: (a.im * b.re - a.re * b.im) / d,
    }
}

fn open_interval(v: &[Expr]) -> Expr {
    Expr::Interval {
        lo: Box::new(v[0].clone()),
        hi: Box::new(v[1].clone()),
        lo_open: true,
        hi_open: true,
    }
}

fn vector_of(rows: &[Vec<Expr>]) -> Option<Vec<Expr>> {
    if rows.len() == 1 {
        return Some(rows[0].clone());
    }
    if rows.iter().all(|r| r.len() == 1) {
        return Some(rows.iter().map(|r| r[0].clone()).collect());
    }
    None
}
