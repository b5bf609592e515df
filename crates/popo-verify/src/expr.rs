//! The expression tree every answer is parsed into, and its canonical printed form.

use std::fmt;

/// A number as written: `digits * 10^(exp10 - frac_digits)`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NumLit {
    /// All written digits, without separators or the decimal point (leading zeros kept).
    pub digits: String,
    /// Digits after the decimal point.
    pub frac_digits: u32,
    /// Scientific exponent (`e5`, `\times 10^{5}`).
    pub exp10: i64,
    /// Written with a decimal point (so a rounded value: `0.33` for `1/3`).
    pub has_point: bool,
}

impl NumLit {
    /// The exponent of the unit in the last written place (`27.39` -> -2).
    pub fn ulp_exp(&self) -> i64 {
        self.exp10 - self.frac_digits as i64
    }

    /// Significant digits written.
    pub fn sig_digits(&self) -> usize {
        self.digits.trim_start_matches('0').len()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Const {
    Pi,
    E,
    I,
    Inf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fun {
    Sin,
    Cos,
    Tan,
    Cot,
    Sec,
    Csc,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Ln,
    Log10,
    Exp,
    Abs,
    Floor,
    Ceil,
}

impl Fun {
    pub fn from_name(name: &str) -> Option<Fun> {
        Some(match name {
            "sin" => Fun::Sin,
            "cos" => Fun::Cos,
            "tan" | "tg" => Fun::Tan,
            "cot" | "ctg" => Fun::Cot,
            "sec" => Fun::Sec,
            "csc" | "cosec" => Fun::Csc,
            "arcsin" | "asin" => Fun::Asin,
            "arccos" | "acos" => Fun::Acos,
            "arctan" | "atan" => Fun::Atan,
            "sinh" => Fun::Sinh,
            "cosh" => Fun::Cosh,
            "tanh" => Fun::Tanh,
            "ln" => Fun::Ln,
            "log" | "lg" => Fun::Log10,
            "exp" => Fun::Exp,
            "abs" => Fun::Abs,
            _ => return None,
        })
    }

    pub fn inverse(self) -> Option<Fun> {
        Some(match self {
            Fun::Sin => Fun::Asin,
            Fun::Cos => Fun::Acos,
            Fun::Tan => Fun::Atan,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Fun::Sin => "sin",
            Fun::Cos => "cos",
            Fun::Tan => "tan",
            Fun::Cot => "cot",
            Fun::Sec => "sec",
            Fun::Csc => "csc",
            Fun::Asin => "arcsin",
            Fun::Acos => "arccos",
            Fun::Atan => "arctan",
            Fun::Sinh => "sinh",
            Fun::Cosh => "cosh",
            Fun::Tanh => "tanh",
            Fun::Ln => "ln",
            Fun::Log10 => "log",
            Fun::Exp => "exp",
            Fun::Abs => "abs",
            Fun::Floor => "floor",
            Fun::Ceil => "ceil",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RelOp {
    Eq,
    /// `\approx`: settled right after parsing (`approx::settle`), never compared.
    Approx,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
}

impl RelOp {
    /// The same relation read from the other side: `a < b` is `b > a`.
    pub fn flip(self) -> RelOp {
        match self {
            RelOp::Lt => RelOp::Gt,
            RelOp::Gt => RelOp::Lt,
            RelOp::Le => RelOp::Ge,
            RelOp::Ge => RelOp::Le,
            o => o,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RelOp::Eq => "=",
            RelOp::Approx => "≈",
            RelOp::Ne => "!=",
            RelOp::Lt => "<",
            RelOp::Le => "<=",
            RelOp::Gt => ">",
            RelOp::Ge => ">=",
            RelOp::In => " in ",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    Num(Box<NumLit>),
    Const(Const),
    Sym(Box<str>),
    /// Terms with their sign: `(negated, term)`; kept flat so long chains do not nest.
    Sum(Vec<(bool, Expr)>),
    /// Factors with `(divide, factor)`.
    Prod(Vec<(bool, Expr)>),
    Neg(Box<Expr>),
    Pow(Box<Expr>, Box<Expr>),
    Func(Fun, Box<Expr>),
    /// `Root(x, n)`: the n-th root of x.
    Root(Box<Expr>, Box<Expr>),
    /// `LogBase(x, b)`.
    LogBase(Box<Expr>, Box<Expr>),
    Fact(Box<Expr>),
    Binom(Box<Expr>, Box<Expr>),
    /// `a \pm b` (a absent for a leading `\pm`): two answers at once.
    Pm(Option<Box<Expr>>, Box<Expr>),
    Percent(Box<Expr>),
    /// A number written in another base: digits and the base (`1011_2`).
    Base(Box<str>, u32),
    /// Parenthesised, ordered: `(1, 2)`, also an open interval.
    Tuple(Vec<Expr>),
    Interval {
        lo: Box<Expr>,
        hi: Box<Expr>,
        lo_open: bool,
        hi_open: bool,
    },
    Set(Vec<Expr>),
    /// A bare comma-separated answer list (unordered).
    List(Vec<Expr>),
    Union(Vec<Expr>),
    Matrix(Vec<Vec<Expr>>),
    /// A chain `e0 op0 e1 op1 e2 ...`.
    Rel(Vec<Expr>, Vec<RelOp>),
    Text(Box<str>),
    /// A named function applied to arguments: `f(2)`, `I(0)`. Opaque, but deterministic.
    Apply(Box<str>, Vec<Expr>),
}

impl Expr {
    /// A number written out: an integer, a decimal or a fraction of two of them, possibly
    /// negative or a percentage; `x = 12` states one. Not an expression still to be worked out
    /// (`24 + 65 + 34`, `2 \cdot 5`, `3^2`, `\sqrt{4}`).
    pub fn is_written_number(&self) -> bool {
        let plain = |e: &Expr| match e {
            Expr::Num(_) => true,
            Expr::Neg(x) => matches!(**x, Expr::Num(_)),
            _ => false,
        };
        match self {
            Expr::Neg(x) | Expr::Percent(x) => x.is_written_number(),
            Expr::Sum(terms) => matches!(terms.as_slice(), [(_, t)] if t.is_written_number()),
            Expr::Prod(f) => {
                matches!(f.as_slice(), [(false, a), (true, b)] if plain(a) && plain(b))
            }
            Expr::Rel(items, ops) if ops.iter().all(|op| *op == RelOp::Eq) => {
                items.last().is_some_and(|e| e.is_written_number())
            }
            e => plain(e),
        }
    }

    pub fn int(n: u64) -> Expr {
        Expr::Num(Box::new(NumLit {
            digits: n.to_string(),
            frac_digits: 0,
            exp10: 0,
            has_point: false,
        }))
    }

    /// Binding strength for printing: higher binds tighter.
    fn prec(&self) -> u8 {
        match self {
            Expr::Rel(..) => 0,
            Expr::List(_) => 0,
            Expr::Union(_) => 1,
            Expr::Sum(_) | Expr::Pm(..) => 2,
            Expr::Prod(_) | Expr::Neg(_) => 3,
            Expr::Pow(..) => 4,
            Expr::Num(n) if n.digits.is_empty() => 9,
            _ => 9,
        }
    }

    /// A copy with every `Sym(name)` replaced by `value`.
    pub fn subst(&self, name: &str, value: &Expr) -> Expr {
        let s = |e: &Expr| e.subst(name, value);
        let b = |e: &Expr| Box::new(e.subst(name, value));
        let all = |v: &[Expr]| v.iter().map(s).collect::<Vec<_>>();
        let signed = |v: &[(bool, Expr)]| v.iter().map(|(k, e)| (*k, s(e))).collect::<Vec<_>>();
        match self {
            Expr::Sym(n) if &**n == name => value.clone(),
            Expr::Num(_) | Expr::Const(_) | Expr::Sym(_) | Expr::Base(..) | Expr::Text(_) => {
                self.clone()
            }
            Expr::Sum(v) => Expr::Sum(signed(v)),
            Expr::Prod(v) => Expr::Prod(signed(v)),
            Expr::Neg(x) => Expr::Neg(b(x)),
            Expr::Pow(x, y) => Expr::Pow(b(x), b(y)),
            Expr::Func(f, x) => Expr::Func(*f, b(x)),
            Expr::Root(x, y) => Expr::Root(b(x), b(y)),
            Expr::LogBase(x, y) => Expr::LogBase(b(x), b(y)),
            Expr::Fact(x) => Expr::Fact(b(x)),
            Expr::Binom(x, y) => Expr::Binom(b(x), b(y)),
            Expr::Pm(x, y) => Expr::Pm(x.as_deref().map(b), b(y)),
            Expr::Percent(x) => Expr::Percent(b(x)),
            Expr::Tuple(v) => Expr::Tuple(all(v)),
            Expr::Set(v) => Expr::Set(all(v)),
            Expr::List(v) => Expr::List(all(v)),
            Expr::Union(v) => Expr::Union(all(v)),
            Expr::Interval {
                lo,
                hi,
                lo_open,
                hi_open,
            } => Expr::Interval {
                lo: b(lo),
                hi: b(hi),
                lo_open: *lo_open,
                hi_open: *hi_open,
            },
            Expr::Matrix(rows) => Expr::Matrix(rows.iter().map(|r| all(r)).collect()),
            Expr::Rel(v, ops) => Expr::Rel(all(v), ops.clone()),
            Expr::Apply(n, v) => Expr::Apply(n.clone(), all(v)),
        }
    }

    /// Whether this is a plain decimal literal (possibly negated), returning it.
    pub fn as_decimal(&self) -> Option<&NumLit> {
        match self {
            Expr::Num(n) if n.has_point => Some(n),
            Expr::Neg(e) => e.as_decimal(),
            _ => None,
        }
    }
}

fn paren(f: &mut fmt::Formatter<'_>, e: &Expr, min: u8) -> fmt::Result {
    if e.prec() < min {
        write!(f, "({e})")
    } else {
        write!(f, "{e}")
    }
}

fn join(f: &mut fmt::Formatter<'_>, items: &[Expr], sep: &str) -> fmt::Result {
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write!(f, "{e}")?;
    }
    Ok(())
}

impl fmt::Display for NumLit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.digits;
        let fd = self.frac_digits as usize;
        if fd > 0 && fd <= d.len() {
            let (a, b) = d.split_at(d.len() - fd);
            write!(f, "{}.{}", if a.is_empty() { "0" } else { a }, b)?;
        } else {
            f.write_str(d)?;
        }
        if self.exp10 != 0 {
            write!(f, "e{}", self.exp10)?;
        }
        Ok(())
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Num(n) => write!(f, "{n}"),
            Expr::Const(c) => f.write_str(match c {
                Const::Pi => "pi",
                Const::E => "e",
                Const::I => "i",
                Const::Inf => "oo",
            }),
            Expr::Sym(s) => f.write_str(s),
            Expr::Sum(ts) => signed_chain(f, ts, "+", "-", 3),
            Expr::Prod(fs) => signed_chain(f, fs, "*", "/", 4),
            Expr::Neg(e) => {
                f.write_str("-")?;
                paren(f, e, 4)
            }
            Expr::Pow(b, e) => {
                paren(f, b, 5)?;
                f.write_str("^")?;
                paren(f, e, 5)
            }
            Expr::Func(fun, a) => write!(f, "{}({a})", fun.name()),
            Expr::Root(x, n) => write!(f, "root({x}, {n})"),
            Expr::LogBase(x, b) => write!(f, "log({x}, {b})"),
            Expr::Fact(e) => {
                paren(f, e, 5)?;
                f.write_str("!")
            }
            Expr::Binom(n, k) => write!(f, "binom({n}, {k})"),
            Expr::Pm(a, b) => {
                if let Some(a) = a {
                    paren(f, a, 2)?;
                }
                f.write_str("±")?;
                paren(f, b, 3)
            }
            Expr::Percent(e) => {
                paren(f, e, 5)?;
                f.write_str("%")
            }
            Expr::Base(d, b) => write!(f, "{d}_{b}"),
            Expr::Tuple(v) => enclosed(f, "(", v, ")"),
            Expr::Interval {
                lo,
                hi,
                lo_open,
                hi_open,
            } => write!(
                f,
                "{}{lo}, {hi}{}",
                if *lo_open { "(" } else { "[" },
                if *hi_open { ")" } else { "]" }
            ),
            Expr::Set(v) => enclosed(f, "{", v, "}"),
            Expr::List(v) => join(f, v, ", "),
            Expr::Union(v) => join(f, v, " U "),
            Expr::Matrix(rows) => matrix(f, rows),
            Expr::Rel(es, ops) => chain(f, es, ops),
            Expr::Text(t) => f.write_str(t),
            Expr::Apply(name, args) => {
                write!(f, "{name}")?;
                enclosed(f, "(", args, ")")
            }
        }
    }
}

/// A sum's terms or a product's factors: `op` between them, `inverse_op` before a subtracted
/// term or a divisor (even the first: `-x+y`); operands looser than `min` in parentheses.
fn signed_chain(
    f: &mut fmt::Formatter<'_>,
    items: &[(bool, Expr)],
    op: &str,
    inverse_op: &str,
    min: u8,
) -> fmt::Result {
    for (i, (inverse, t)) in items.iter().enumerate() {
        if *inverse {
            f.write_str(inverse_op)?;
        } else if i > 0 {
            f.write_str(op)?;
        }
        paren(f, t, min)?;
    }
    Ok(())
}

/// Items between an opening and a closing bracket, comma-separated.
fn enclosed(f: &mut fmt::Formatter<'_>, open: &str, items: &[Expr], close: &str) -> fmt::Result {
    f.write_str(open)?;
    join(f, items, ", ")?;
    f.write_str(close)
}

/// `[a, b; c, d]`: rows separated by semicolons.
fn matrix(f: &mut fmt::Formatter<'_>, rows: &[Vec<Expr>]) -> fmt::Result {
    f.write_str("[")?;
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            f.write_str("; ")?;
        }
        join(f, r, ", ")?;
    }
    f.write_str("]")
}

/// A relation chain, `a<b<=c`: each relation's symbol between its two sides.
fn chain(f: &mut fmt::Formatter<'_>, es: &[Expr], ops: &[RelOp]) -> fmt::Result {
    for (i, e) in es.iter().enumerate() {
        if i > 0 {
            f.write_str(ops[i - 1].as_str())?;
        }
        write!(f, "{e}")?;
    }
    Ok(())
}

/// Left sides that name a quantity rather than constrain one: `x`, `f(2)`, `P(A)`,
/// `\text{Area}`, `AB`, `\angle ABC`, the ratio `AB:CD`, `|PQ|`, the tuple `(a, b)`.
pub(crate) fn names_a_quantity(e: &Expr) -> bool {
    match e {
        Expr::Sym(_) | Expr::Apply(..) | Expr::Text(_) => true,
        // Letters multiplied or divided, led by a letter (`x2` too, but not `2x` or `x/2`).
        Expr::Prod(fs) => {
            fs.len() <= 6
                && !matches!(fs[0], (true, _) | (_, Expr::Num(_)))
                && fs.iter().all(|(div, f)| match f {
                    Expr::Sym(_) => true,
                    Expr::Num(_) => !div,
                    Expr::Prod(_) => names_a_quantity(f),
                    _ => false,
                })
        }
        Expr::Func(Fun::Abs, x) => names_a_quantity(x),
        Expr::Tuple(v) => v.iter().all(|x| matches!(x, Expr::Sym(_))),
        _ => false,
    }
}
