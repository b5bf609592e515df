//! Arithmetic over explicit matrices (`A + B`, `2A`, `AB`, `A^2`), multiplied out into one
//! matrix of element expressions that `equiv` compares element by element.

use crate::expr::Expr;
use crate::limits::{Budget, Limit};

/// A value during matrix arithmetic.
enum MatVal {
    Scalar(Expr),
    Matrix(Vec<Vec<Expr>>),
}

/// Largest matrix side and power multiplied out.
const MAX_MATRIX_SIDE: usize = 8;
const MAX_MATRIX_POWER: u32 = 6;

/// `A + B`, `2A`, `AB`, `A^2` over explicit matrices, multiplied out into one matrix of element
/// expressions (compared element by element afterwards). `None` when `e` is no such
/// arithmetic: a plain matrix, no matrix at all, or shapes that do not fit.
pub(crate) fn matrix_value(e: &Expr, b: &mut Budget) -> Result<Option<Expr>, Limit> {
    if !matches!(
        e,
        Expr::Sum(_) | Expr::Prod(_) | Expr::Neg(_) | Expr::Pow(..)
    ) || !has_matrix(e)
    {
        return Ok(None);
    }
    Ok(match mat(e, b)? {
        Some(MatVal::Matrix(m)) => Some(Expr::Matrix(m)),
        _ => None,
    })
}

pub(crate) fn has_matrix(e: &Expr) -> bool {
    match e {
        Expr::Matrix(_) => true,
        Expr::Sum(v) | Expr::Prod(v) => v.iter().any(|(_, x)| has_matrix(x)),
        Expr::Neg(x) => has_matrix(x),
        Expr::Pow(x, _) => has_matrix(x),
        _ => false,
    }
}

/// The value of `e` in matrix arithmetic: a matrix multiplied out, or a scalar (kept as
/// written); `None` when it is no such arithmetic.
fn mat(e: &Expr, b: &mut Budget) -> Result<Option<MatVal>, Limit> {
    b.tick(1)?;
    Ok(Some(match e {
        Expr::Matrix(rows)
            if rows.len() <= MAX_MATRIX_SIDE
                && rows
                    .iter()
                    .all(|r| !r.is_empty() && r.len() <= MAX_MATRIX_SIDE) =>
        {
            MatVal::Matrix(rows.clone())
        }
        Expr::Neg(x) => match mat(x, b)? {
            Some(MatVal::Matrix(m)) => elementwise(m, &|x| Expr::Neg(Box::new(x))),
            Some(MatVal::Scalar(_)) => MatVal::Scalar(e.clone()),
            None => return Ok(None),
        },
        Expr::Sum(ts) => return mat_sum(e, ts, b),
        Expr::Prod(fs) => return mat_prod(e, fs, b),
        Expr::Pow(x, k) => return mat_pow(e, x, k, b),
        Expr::Matrix(_) | Expr::Tuple(_) | Expr::List(_) | Expr::Set(_) | Expr::Rel(..) => {
            return Ok(None)
        }
        _ => MatVal::Scalar(e.clone()),
    }))
}

/// `f` applied to every element of `m`.
fn elementwise(m: Vec<Vec<Expr>>, f: &dyn Fn(Expr) -> Expr) -> MatVal {
    MatVal::Matrix(
        m.into_iter()
            .map(|r| r.into_iter().map(f).collect())
            .collect(),
    )
}

/// The sum `e` with terms `ts`: matrices of one shape add element by element; all scalars
/// leave `e` a scalar.
fn mat_sum(e: &Expr, ts: &[(bool, Expr)], b: &mut Budget) -> Result<Option<MatVal>, Limit> {
    let mut terms = Vec::with_capacity(ts.len());
    for (neg, t) in ts {
        match mat(t, b)? {
            Some(v) => terms.push((*neg, v)),
            None => return Ok(None),
        }
    }
    if terms.iter().all(|(_, v)| matches!(v, MatVal::Scalar(_))) {
        return Ok(Some(MatVal::Scalar(e.clone())));
    }
    let mut ms = Vec::with_capacity(terms.len());
    for (neg, v) in terms {
        match v {
            MatVal::Matrix(m) => ms.push((neg, m)),
            // A scalar plus a matrix is not defined.
            MatVal::Scalar(_) => return Ok(None),
        }
    }
    let (r, c) = (ms[0].1.len(), ms[0].1[0].len());
    if ms
        .iter()
        .any(|(_, m)| m.len() != r || m.iter().any(|row| row.len() != c))
    {
        return Ok(None);
    }
    b.tick((r * c * ms.len()) as u64)?;
    Ok(Some(MatVal::Matrix(
        (0..r)
            .map(|i| {
                (0..c)
                    .map(|j| Expr::Sum(ms.iter().map(|(n, m)| (*n, m[i][j].clone())).collect()))
                    .collect()
            })
            .collect(),
    )))
}

/// The product `e` with factors `fs`, left to right: scalars scale, matrices multiply; all
/// scalars leave `e` a scalar.
fn mat_prod(e: &Expr, fs: &[(bool, Expr)], b: &mut Budget) -> Result<Option<MatVal>, Limit> {
    let mut acc: Option<MatVal> = None;
    for (div, f) in fs {
        let Some(v) = mat(f, b)? else {
            return Ok(None);
        };
        let Some(a) = acc.take() else {
            if *div {
                return Ok(None);
            }
            acc = Some(v);
            continue;
        };
        acc = Some(match (a, v, *div) {
            (MatVal::Scalar(x), MatVal::Scalar(y), d) => {
                MatVal::Scalar(Expr::Prod(vec![(false, x), (d, y)]))
            }
            (MatVal::Scalar(x), MatVal::Matrix(m), false) => {
                elementwise(m, &|y| Expr::Prod(vec![(false, x.clone()), (false, y)]))
            }
            (MatVal::Matrix(m), MatVal::Scalar(y), d) => {
                elementwise(m, &|x| Expr::Prod(vec![(false, x), (d, y.clone())]))
            }
            (MatVal::Matrix(x), MatVal::Matrix(y), false) => match mat_mul(&x, &y, b)? {
                Some(m) => m,
                None => return Ok(None),
            },
            // Dividing by a matrix is not defined.
            (_, MatVal::Matrix(_), true) => return Ok(None),
        });
    }
    Ok(match acc {
        Some(MatVal::Scalar(_)) => Some(MatVal::Scalar(e.clone())),
        Some(m) => Some(m),
        None => None,
    })
}

/// The power `e` = `x^k`: a square matrix to a small whole power, multiplied out.
fn mat_pow(e: &Expr, x: &Expr, k: &Expr, b: &mut Budget) -> Result<Option<MatVal>, Limit> {
    let k = match k {
        Expr::Num(n) if !n.has_point && n.exp10 == 0 => n.digits.parse::<u32>().ok(),
        _ => None,
    };
    Ok(match (mat(x, b)?, k) {
        (Some(MatVal::Matrix(m)), Some(k)) if (1..=MAX_MATRIX_POWER).contains(&k) => {
            let mut acc = MatVal::Matrix(m.clone());
            for _ in 1..k {
                let MatVal::Matrix(a) = acc else {
                    return Ok(None);
                };
                acc = match mat_mul(&a, &m, b)? {
                    Some(p) => p,
                    None => return Ok(None),
                };
            }
            Some(acc)
        }
        (Some(MatVal::Scalar(_)), _) => Some(MatVal::Scalar(e.clone())),
        _ => None,
    })
}

fn mat_mul(x: &[Vec<Expr>], y: &[Vec<Expr>], b: &mut Budget) -> Result<Option<MatVal>, Limit> {
    let (r, k, c) = (x.len(), y.len(), y[0].len());
    if x.iter().any(|row| row.len() != k) {
        return Ok(None);
    }
    b.tick((r * k * c) as u64)?;
    Ok(Some(MatVal::Matrix(
        (0..r)
            .map(|i| {
                (0..c)
                    .map(|j| {
                        Expr::Sum(
                            (0..k)
                                .map(|l| {
                                    (
                                        false,
                                        Expr::Prod(vec![
                                            (false, x[i][l].clone()),
                                            (false, y[l][j].clone()),
                                        ]),
                                    )
                                })
                                .collect(),
                        )
                    })
                    .collect()
            })
            .collect(),
    )))
}
