//! Tree-building helpers of the parser: collapsing one-term sums and products, scientific
//! literals (`3.83 \times 10^{35}`), mixed numbers, bound pairs read as a chain, and which words
//! are text. Pure functions of expressions and words; the parser's state stays in `parse.rs`.

use crate::expr::{Expr, Fun, NumLit, RelOp};

fn num_lit(e: &Expr) -> Option<&NumLit> {
    match e {
        Expr::Num(n) => Some(n),
        _ => None,
    }
}

/// An integer as written: no decimal point, no exponent.
pub(super) fn is_int_lit(e: &Expr) -> bool {
    num_lit(e).is_some_and(|n| !n.has_point && n.exp10 == 0)
}

/// `x > -2 and x < 3` is the chain `-2 < x < 3`: a lower and an upper bound on one variable.
/// Other lists joined by `and` stay lists (`2 and 4` is two answers).
pub(super) fn bounds_to_chain(items: &[Expr]) -> Option<Expr> {
    // `v op c`, the variable on the left.
    let bound = |e: &Expr| -> Option<(Box<str>, RelOp, Expr)> {
        let Expr::Rel(es, ops) = e else { return None };
        match (es.as_slice(), ops.as_slice()) {
            ([Expr::Sym(v), c], [op]) => Some((v.clone(), *op, c.clone())),
            ([c, Expr::Sym(v)], [op]) => Some((v.clone(), op.flip(), c.clone())),
            _ => None,
        }
    };
    let [a, b] = items else { return None };
    let ((v, o1, c1), (w, o2, c2)) = (bound(a)?, bound(b)?);
    let lower = |o: RelOp| matches!(o, RelOp::Gt | RelOp::Ge);
    let upper = |o: RelOp| matches!(o, RelOp::Lt | RelOp::Le);
    let ((lo_op, lo), (hi_op, hi)) = if lower(o1) && upper(o2) {
        ((o1, c1), (o2, c2))
    } else if upper(o1) && lower(o2) {
        ((o2, c2), (o1, c1))
    } else {
        return None;
    };
    (v == w).then(|| Expr::Rel(vec![lo, Expr::Sym(v), hi], vec![lo_op.flip(), hi_op]))
}

/// Words of three or more letters (and common two-letter units) are text, not products.
pub(super) fn word_is_text(w: &str) -> bool {
    if Fun::from_name(w).is_some()
        || matches!(w, "pi" | "inf" | "infty" | "infinity" | "sqrt" | "oo")
    {
        return false;
    }
    w.len() >= 3
        || matches!(
            w,
            "cm" | "mm"
                | "km"
                | "kg"
                | "mg"
                | "ml"
                | "mL"
                | "ft"
                | "yd"
                | "mi"
                | "hr"
                | "am"
                | "pm"
                | "AM"
                | "PM"
                | "lb"
                | "oz"
                | "no"
                | "No"
                | "is"
                | "to"
                | "of"
                | "by"
                | "at"
                | "on"
                | "it"
                | "as"
                | "an"
        )
}

/// `-1` as written: `\sin^{-1} x` names arcsin, not a reciprocal.
pub(super) fn is_minus_one(e: &Expr) -> bool {
    matches!(e, Expr::Neg(x) if matches!(&**x, Expr::Num(n) if n.digits == "1" && !n.has_point))
}

/// `2\frac{1}{2}`'s fraction part: a quotient of two integer literals.
pub(super) fn is_simple_frac(e: &Expr) -> bool {
    matches!(e, Expr::Prod(fs) if fs.len() == 2 && !fs[0].0 && fs[1].0 && is_int_lit(&fs[0].1) && is_int_lit(&fs[1].1))
}

/// `\log_b x` read through `func`: swap Log10 for a base.
pub(super) fn relog(e: Expr, base: Expr) -> Expr {
    match e {
        Expr::Func(Fun::Log10, x) => Expr::LogBase(x, Box::new(base)),
        Expr::Pow(inner, p) => Expr::Pow(Box::new(relog(*inner, base)), p),
        e => e,
    }
}

/// A sum of one term is that term (negated if it was subtracted).
pub(super) fn collapse_sum(mut terms: Vec<(bool, Expr)>) -> Expr {
    if terms.len() == 1 {
        let (neg, e) = terms.pop().unwrap_or((false, Expr::int(0)));
        return if neg { Expr::Neg(Box::new(e)) } else { e };
    }
    Expr::Sum(terms)
}

/// A product of one factor is that factor.
pub(super) fn collapse_prod(mut fs: Vec<(bool, Expr)>) -> Expr {
    if fs.len() == 1 && !fs[0].0 {
        return fs.pop().map(|f| f.1).unwrap_or(Expr::int(1));
    }
    // `3.83 \times 10^{35}`: keep it a literal so its written precision is known.
    if fs.len() == 2 && !fs[0].0 && !fs[1].0 {
        if let (Expr::Num(m), Expr::Num(p)) = (&fs[0].1, &fs[1].1) {
            if p.digits == "1" && p.frac_digits == 0 && !p.has_point && p.exp10 != 0 {
                let mut m = m.clone();
                m.exp10 += p.exp10;
                return Expr::Num(m);
            }
        }
    }
    Expr::Prod(fs)
}

/// `10^{k}` with an integer literal k becomes the literal `1e{k}` (see `collapse_prod`).
pub(super) fn sci_literal(e: Expr) -> Expr {
    if let Expr::Pow(b, x) = &e {
        if let Expr::Num(bn) = &**b {
            if bn.digits == "10" && !bn.has_point && bn.exp10 == 0 {
                let k = match &**x {
                    Expr::Num(n) if !n.has_point && n.exp10 == 0 && n.digits.len() < 7 => {
                        n.digits.parse::<i64>().ok()
                    }
                    Expr::Neg(inner) => match &**inner {
                        Expr::Num(n) if !n.has_point && n.exp10 == 0 && n.digits.len() < 7 => {
                            n.digits.parse::<i64>().ok().map(|v| -v)
                        }
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(k) = k {
                    return Expr::Num(Box::new(NumLit {
                        digits: "1".into(),
                        frac_digits: 0,
                        exp10: k,
                        has_point: false,
                    }));
                }
            }
        }
    }
    e
}

/// A braced group: one item is that item (`{x}` only groups), several are a set.
pub(super) fn group(mut items: Vec<Expr>, many: fn(Vec<Expr>) -> Expr) -> Expr {
    if items.len() == 1 {
        items.pop().unwrap_or(Expr::Text("".into()))
    } else {
        many(items)
    }
}
