//! `\approx` after a value: the exact value is the answer.
//!
//! `x = \frac{2}{7} \approx 0.29` states 2/7 and rewrites it as a decimal. When every
//! approximation is the value before it rounded to its own written precision, the chain reads as
//! `x = 2/7 = 0.29`, so a decimal gold matches it too. When one is not (`x = 2/7 \approx 0.5`, a
//! wrong approximation), the approximations are dropped and the exact value alone is compared: it
//! is right when 2/7 is right, wrong when 2/7 is wrong, whatever the decimal says. An
//! approximation of a name (`x \approx 0.29`) is the answer itself, read as `=`.

use crate::eval::{is_const, numeric};
use crate::expr::{names_a_quantity, Expr, NumLit, RelOp};
use crate::limits::{Budget, Limit};

/// Every `\approx` of an answer (or of the items of an answer list or set) settled as above:
/// the tree that comes out has none left.
pub(crate) fn settle(e: Expr, b: &mut Budget) -> Result<Expr, Limit> {
    let all = |items: Vec<Expr>, b: &mut Budget| -> Result<Vec<Expr>, Limit> {
        items.into_iter().map(|x| settle_one(x, b)).collect()
    };
    Ok(match e {
        Expr::List(items) => Expr::List(all(items, b)?),
        Expr::Set(items) => Expr::Set(all(items, b)?),
        e => settle_one(e, b)?,
    })
}

fn settle_one(e: Expr, b: &mut Budget) -> Result<Expr, Limit> {
    let Expr::Rel(mut es, mut ops) = e else {
        return Ok(e);
    };
    let Some(k) = ops.iter().position(|o| *o == RelOp::Approx) else {
        return Ok(Expr::Rel(es, ops));
    };
    // `es[k]` is the value the members after the first `\approx` approximate.
    let value = &es[k];
    let mut wrong = false;
    if is_const(value) && !names_a_quantity(value) {
        for approx in &es[k + 1..] {
            if rounds_to(value, approx, b)? == Some(false) {
                wrong = true;
                break;
            }
        }
    }
    if wrong {
        es.truncate(k + 1);
        ops.truncate(k);
        if ops.is_empty() {
            return Ok(es.pop().unwrap_or(Expr::Text("".into())));
        }
    } else {
        for o in ops.iter_mut().filter(|o| **o == RelOp::Approx) {
            *o = RelOp::Eq;
        }
    }
    Ok(Expr::Rel(es, ops))
}

/// The place value of the last written digit of a number literal, as a factor (`0.29` ->
/// 0.01, `30` -> 1, `29\%` -> 0.0001).
fn written_ulp(e: &Expr) -> Option<f64> {
    let lit_ulp = |n: &NumLit| 10f64.powi(n.ulp_exp().clamp(-300, 300) as i32);
    match e {
        Expr::Num(n) => Some(lit_ulp(n)),
        Expr::Neg(x) => written_ulp(x),
        Expr::Percent(x) => written_ulp(x).map(|u| u / 100.0),
        _ => None,
    }
}

/// Whether the number `approx` is the constant `value` rounded to the precision it is written
/// with; `None` when that cannot be told (no literal, no real value).
fn rounds_to(value: &Expr, approx: &Expr, b: &mut Budget) -> Result<Option<bool>, Limit> {
    let Some(ulp) = written_ulp(approx) else {
        return Ok(None);
    };
    let (Some(x), Some(d)) = (numeric(value, &[], b)?, numeric(approx, &[], b)?) else {
        return Ok(None);
    };
    if !x.is_finite() || x.im.abs() >= 1e-12 || d.im.abs() >= 1e-12 {
        return Ok(None);
    }
    Ok(Some((x.re - d.re).abs() <= 0.5 * ulp * (1.0 + 1e-9)))
}

/// `x = \frac{7}{3} = 2.3`, and `\approx` chains settled as consistent: the exact member before
/// a final decimal that is it rounded to the decimal's own precision.
pub(crate) fn approximated<'e>(e: &'e Expr, b: &mut Budget) -> Result<Option<&'e Expr>, Limit> {
    let Expr::Rel(es, _) = e else { return Ok(None) };
    let [.., prev, last] = es.as_slice() else {
        return Ok(None);
    };
    if last.as_decimal().is_none() || prev.as_decimal().is_some() || !is_const(prev) {
        return Ok(None);
    }
    Ok((rounds_to(prev, last, b)? == Some(true)).then_some(prev))
}
