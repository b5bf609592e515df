//! Tokens -> [`Expr`]. Recursive descent with one token of lookahead; LaTeX argument rules
//! (`\frac12`, `\sqrt[3]{x}`, `^{...}`) are handled where the command is read.
//!
//! Precedence, loosest first: answer list (`,` `;` `or`) > relation chain > union > sum
//! (`+ - \pm`) > product (`* / \cdot`, implicit) > unary sign > power > postfix (`! % °`) > atom.

use crate::expr::{Const, Expr, Fun, NumLit, RelOp};
use crate::lex::{lex, Tok};
use crate::limits::{Budget, Limit};

pub(crate) enum ParseError {
    Syntax,
    Limit(Limit),
}

impl From<Limit> for ParseError {
    fn from(l: Limit) -> Self {
        ParseError::Limit(l)
    }
}

type PResult<T> = Result<T, ParseError>;

/// Parse an answer string (already extracted, math delimiters allowed).
pub(crate) fn parse_answer(s: &str, budget: &mut Budget) -> PResult<Expr> {
    if s.len() > budget.limits.max_answer_len {
        return Err(ParseError::Limit(Limit::Length));
    }
    budget.tick(s.len() as u64)?;
    let mut toks = Vec::with_capacity(s.len() / 2 + 4);
    lex(s, &mut toks).map_err(|_| ParseError::Syntax)?;
    // A trailing period or comma (`\frac{1}{2}.`) is punctuation.
    while matches!(toks.last(), Some(Tok::Comma | Tok::Or | Tok::And)) {
        toks.pop();
    }
    if toks.is_empty() {
        return Err(ParseError::Syntax);
    }
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
        abs_depth: 0,
        func_depth: 0,
        budget,
    };
    let e = p.list(&[])?;
    if p.pos != p.toks.len() {
        return Err(ParseError::Syntax);
    }
    Ok(e)
}

struct Parser<'b> {
    toks: Vec<Tok>,
    pos: usize,
    depth: u32,
    /// Inside `|...|`, a `|` closes rather than opens.
    abs_depth: u32,
    /// Inside a function argument, `30^\circ` is an angle to convert (`\sin 30^\circ`).
    func_depth: u32,
    budget: &'b mut Budget,
}

fn num_lit(e: &Expr) -> Option<&NumLit> {
    match e {
        Expr::Num(n) => Some(n),
        _ => None,
    }
}

fn is_int_lit(e: &Expr) -> bool {
    num_lit(e).is_some_and(|n| !n.has_point && n.exp10 == 0)
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_is(&self, t: &Tok) -> bool {
        self.peek() == Some(t)
    }

    fn bump(&mut self) -> PResult<Tok> {
        self.budget.tick(1)?;
        let t = self
            .toks
            .get_mut(self.pos)
            .map(|t| std::mem::replace(t, Tok::End))
            .ok_or(ParseError::Syntax)?;
        self.pos += 1;
        Ok(t)
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek_is(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: &Tok) -> PResult<()> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(ParseError::Syntax)
        }
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > self.budget.limits.max_depth {
            return Err(ParseError::Limit(Limit::Depth));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Items separated by `,` `;` `or` `and` up to one of `closers` (not consumed) or the end.
    fn list_items(&mut self, closers: &[Tok]) -> PResult<Vec<Expr>> {
        Ok(self.list_items_and(closers)?.0)
    }

    /// [`Self::list_items`], and whether `and` was the only separator.
    fn list_items_and(&mut self, closers: &[Tok]) -> PResult<(Vec<Expr>, bool)> {
        let mut items = Vec::new();
        let (mut ands, mut others) = (0, 0);
        loop {
            match self.peek() {
                None => break,
                Some(t) if closers.contains(t) => break,
                Some(Tok::Comma | Tok::Or | Tok::And) => {
                    // Empty item (`1,,2`, `or` after a comma): skip.
                    self.pos += 1;
                    others += 1;
                    continue;
                }
                _ => {}
            }
            items.push(self.relation()?);
            match self.peek() {
                Some(Tok::And) => {
                    self.pos += 1;
                    ands += 1;
                }
                Some(Tok::Comma | Tok::Or | Tok::RowSep) => {
                    self.pos += 1;
                    others += 1;
                }
                _ => break,
            }
        }
        Ok((items, ands > 0 && others == 0))
    }

    fn list(&mut self, closers: &[Tok]) -> PResult<Expr> {
        let (mut items, only_and) = self.list_items_and(closers)?;
        if only_and {
            if let Some(chain) = bounds_to_chain(&items) {
                return Ok(chain);
            }
        }
        match items.len() {
            0 => Err(ParseError::Syntax),
            1 => Ok(items.pop().unwrap_or(Expr::Text("".into()))),
            _ => Ok(Expr::List(items)),
        }
    }

    fn relation(&mut self) -> PResult<Expr> {
        self.enter()?;
        let first = self.union()?;
        let mut es = vec![first];
        let mut ops = Vec::new();
        loop {
            let op = match self.peek() {
                Some(Tok::Eq) => RelOp::Eq,
                Some(Tok::Approx) => RelOp::Approx,
                Some(Tok::Ne) => RelOp::Ne,
                Some(Tok::Lt) => RelOp::Lt,
                Some(Tok::Le) => RelOp::Le,
                Some(Tok::Gt) => RelOp::Gt,
                Some(Tok::Ge) => RelOp::Ge,
                Some(Tok::In) => RelOp::In,
                _ => break,
            };
            self.bump()?;
            ops.push(op);
            es.push(self.union()?);
        }
        self.leave();
        if ops.is_empty() {
            Ok(es.pop().unwrap_or(Expr::Text("".into())))
        } else {
            Ok(Expr::Rel(es, ops))
        }
    }

    fn union(&mut self) -> PResult<Expr> {
        let first = self.sum()?;
        if !self.peek_is(&Tok::Cup) {
            return Ok(first);
        }
        let mut parts = vec![first];
        while self.eat(&Tok::Cup) {
            parts.push(self.sum()?);
        }
        Ok(Expr::Union(parts))
    }

    fn sum(&mut self) -> PResult<Expr> {
        self.enter()?;
        let mut terms: Vec<(bool, Expr)> = Vec::new();
        let mut pm: Option<Expr> = None;
        // Leading sign.
        match self.peek() {
            Some(Tok::Pm | Tok::Mp) => {
                self.bump()?;
                let t = self.product()?;
                pm = Some(Expr::Pm(None, Box::new(t)));
            }
            _ => terms.push((false, self.product()?)),
        }
        loop {
            match self.peek() {
                Some(Tok::Plus) => {
                    self.bump()?;
                    terms.push((false, self.product()?));
                }
                Some(Tok::Minus) => {
                    self.bump()?;
                    terms.push((true, self.product()?));
                }
                Some(Tok::Pm | Tok::Mp) => {
                    self.bump()?;
                    let rhs = self.product()?;
                    let lhs = match pm.take() {
                        Some(p) => {
                            terms.insert(0, (false, p));
                            collapse_sum(std::mem::take(&mut terms))
                        }
                        None => collapse_sum(std::mem::take(&mut terms)),
                    };
                    pm = Some(Expr::Pm(Some(Box::new(lhs)), Box::new(rhs)));
                }
                _ => break,
            }
        }
        self.leave();
        if let Some(p) = pm {
            if terms.is_empty() {
                return Ok(p);
            }
            terms.insert(0, (false, p));
        }
        Ok(collapse_sum(terms))
    }

    /// Can the next token start an implicitly multiplied factor?
    fn starts_factor(&self) -> bool {
        match self.peek() {
            Some(
                Tok::Num(_)
                | Tok::Ident(_)
                | Tok::Word(_)
                | Tok::Func(_)
                | Tok::Log
                | Tok::Frac
                | Tok::Sqrt
                | Tok::Binom
                | Tok::Pi
                | Tok::Infty
                | Tok::LParen
                | Tok::LBrack
                | Tok::LBrace
                | Tok::LFloor
                | Tok::LCeil
                | Tok::Begin(_),
            ) => true,
            Some(Tok::Bar) => self.abs_depth == 0,
            _ => false,
        }
    }

    fn product(&mut self) -> PResult<Expr> {
        self.enter()?;
        let mut fs: Vec<(bool, Expr)> = vec![(false, self.unary()?)];
        loop {
            match self.peek() {
                Some(Tok::Star) => {
                    self.bump()?;
                    fs.push((false, self.unary()?));
                }
                Some(Tok::Slash | Tok::Colon) => {
                    self.bump()?;
                    fs.push((true, self.unary()?));
                }
                Some(Tok::Text(_)) => {
                    // A unit after a quantity (`5\text{ cm}^2`): dropped with its power.
                    self.bump()?;
                    self.skip_power()?;
                }
                Some(Tok::Word(w)) if word_is_text(w) => {
                    self.bump()?;
                    self.skip_power()?;
                }
                _ if self.starts_factor() => {
                    let f = self.power_no_sign()?;
                    // Mixed number: `2\frac{1}{2}` is 5/2.
                    if fs.len() == 1 && is_int_lit(&fs[0].1) && is_simple_frac(&f) {
                        let (_, whole) = fs.pop().unwrap_or((false, Expr::int(0)));
                        fs.push((false, Expr::Sum(vec![(false, whole), (false, f)])));
                        continue;
                    }
                    fs.push((false, f));
                }
                _ => break,
            }
        }
        self.leave();
        Ok(collapse_prod(fs))
    }

    fn skip_power(&mut self) -> PResult<()> {
        if self.eat(&Tok::Caret) {
            self.power_operand()?;
        }
        Ok(())
    }

    fn unary(&mut self) -> PResult<Expr> {
        self.enter()?;
        let r = match self.peek() {
            Some(Tok::Minus) => {
                self.bump()?;
                let e = self.unary()?;
                Ok(match e {
                    // `-\frac{1}{2} x` keeps the sign on the whole product.
                    Expr::Neg(inner) => *inner,
                    e => Expr::Neg(Box::new(e)),
                })
            }
            Some(Tok::Plus) => {
                self.bump()?;
                self.unary()
            }
            _ => self.power_no_sign(),
        };
        self.leave();
        r
    }

    /// A power: postfix-atom (`^` operand)*, right-associative.
    fn power_no_sign(&mut self) -> PResult<Expr> {
        self.enter()?;
        let base = self.postfix()?;
        let r = if self.eat(&Tok::Caret) {
            let ex = self.power_operand()?;
            let mut e = Expr::Pow(Box::new(base), Box::new(ex));
            e = self.postfix_ops(e)?;
            Ok(sci_literal(e))
        } else {
            Ok(base)
        };
        self.leave();
        r
    }

    fn power_operand(&mut self) -> PResult<Expr> {
        match self.peek() {
            Some(Tok::LBrace) => {
                self.bump()?;
                let e = self.list(&[Tok::RBrace])?;
                self.expect(&Tok::RBrace)?;
                Ok(e)
            }
            Some(Tok::Minus) => {
                self.bump()?;
                let e = self.power_no_sign()?;
                Ok(Expr::Neg(Box::new(e)))
            }
            Some(Tok::Plus) => {
                self.bump()?;
                self.power_no_sign()
            }
            _ => self.power_no_sign(),
        }
    }

    fn postfix(&mut self) -> PResult<Expr> {
        let a = self.atom()?;
        self.postfix_ops(a)
    }

    fn postfix_ops(&mut self, mut a: Expr) -> PResult<Expr> {
        loop {
            match self.peek() {
                Some(Tok::Bang) => {
                    self.bump()?;
                    a = Expr::Fact(Box::new(a));
                }
                Some(Tok::Percent) => {
                    self.bump()?;
                    a = Expr::Percent(Box::new(a));
                }
                // Degrees are the answer's unit, not a conversion.
                Some(Tok::Degree) => {
                    self.bump()?;
                    if self.func_depth > 0 {
                        a = Expr::Prod(vec![
                            (false, a),
                            (false, Expr::Const(Const::Pi)),
                            (true, Expr::int(180)),
                        ]);
                    }
                }
                _ => return Ok(a),
            }
        }
    }

    /// A `\frac` / `\sqrt` argument: a braced group, or one token (`\frac12` -> 1 and 2).
    fn tex_arg(&mut self) -> PResult<Expr> {
        match self.peek() {
            Some(Tok::LBrace) => {
                self.bump()?;
                let e = self.list(&[Tok::RBrace])?;
                self.expect(&Tok::RBrace)?;
                Ok(e)
            }
            Some(Tok::Num(n)) if !n.has_point && n.exp10 == 0 && n.digits.len() > 1 => {
                let mut n = n.clone();
                let first = n.digits.remove(0);
                let rest = Tok::Num(n);
                self.toks[self.pos] = rest;
                self.budget.tick(1)?;
                Ok(Expr::int(first.to_digit(10).unwrap_or(0) as u64))
            }
            Some(Tok::Word(w)) => {
                // `\frac ab` lexes as the word `ab`.
                let w = w.clone();
                let mut chars = w.chars();
                let first = chars.next().unwrap_or('x');
                let rest: String = chars.collect();
                if rest.len() == 1 {
                    self.toks[self.pos] = Tok::Ident(rest.into());
                } else {
                    self.toks[self.pos] = Tok::Word(rest.into());
                }
                self.budget.tick(1)?;
                Ok(Expr::Sym(first.to_string().into()))
            }
            _ => self.postfix(),
        }
    }

    /// The argument of `\sin`, `\ln`...: parenthesised, braced, or a run of simple factors
    /// (`\sin 2x` is sin(2x); `\sin x \cos x` stops before `\cos`).
    fn func_arg(&mut self) -> PResult<Expr> {
        self.func_depth += 1;
        let r = self.func_arg_inner();
        self.func_depth -= 1;
        r
    }

    fn func_arg_inner(&mut self) -> PResult<Expr> {
        match self.peek() {
            Some(Tok::LParen | Tok::LBrace | Tok::LBrack) => self.power_no_sign(),
            _ => {
                let mut fs = vec![(false, self.unary()?)];
                while matches!(
                    self.peek(),
                    Some(Tok::Num(_) | Tok::Ident(_) | Tok::Pi | Tok::Frac | Tok::Sqrt)
                ) {
                    fs.push((false, self.power_no_sign()?));
                }
                Ok(collapse_prod(fs))
            }
        }
    }

    fn func(&mut self, f: Fun) -> PResult<Expr> {
        // `\sin^2 x` is (sin x)^2; `\sin^{-1} x` is arcsin x.
        let mut pow = None;
        if self.eat(&Tok::Caret) {
            pow = Some(self.power_operand()?);
        }
        let arg = self.func_arg()?;
        let mut f = f;
        if let Some(p) = &pow {
            if is_minus_one(p) {
                if let Some(inv) = f.inverse() {
                    f = inv;
                    pow = None;
                }
            }
        }
        let e = Expr::Func(f, Box::new(arg));
        Ok(match pow {
            Some(p) => Expr::Pow(Box::new(e), Box::new(p)),
            None => e,
        })
    }

    fn atom(&mut self) -> PResult<Expr> {
        self.enter()?;
        let t = self.bump()?;
        let r = match t {
            Tok::Num(n) => {
                if let Some(Tok::Sub(sub)) = self.peek() {
                    let sub = sub.clone();
                    self.pos += 1;
                    base_number(n, &sub)
                } else {
                    Ok(Expr::Num(Box::new(n)))
                }
            }
            Tok::Ident(name) => self.ident(name),
            Tok::Word(w) => self.word(w),
            Tok::Text(t) => Ok(Expr::Text(t)),
            Tok::Pi => Ok(Expr::Const(Const::Pi)),
            Tok::Infty => Ok(Expr::Const(Const::Inf)),
            Tok::Emptyset => Ok(Expr::Set(Vec::new())),
            Tok::Func(f) => self.func(f),
            Tok::Log => {
                let base = match self.peek() {
                    Some(Tok::Sub(s)) => {
                        let s = s.clone();
                        self.pos += 1;
                        Some(parse_answer(&s, self.budget)?)
                    }
                    _ => None,
                };
                let e = self.func(Fun::Log10)?;
                Ok(match base {
                    Some(b) => relog(e, b),
                    None => e,
                })
            }
            Tok::Frac => {
                let n = self.tex_arg()?;
                let d = self.tex_arg()?;
                Ok(collapse_prod(vec![(false, n), (true, d)]))
            }
            Tok::Binom => {
                let n = self.tex_arg()?;
                let k = self.tex_arg()?;
                Ok(Expr::Binom(Box::new(n), Box::new(k)))
            }
            Tok::Sqrt => {
                let idx = if self.eat(&Tok::LBrack) {
                    let i = self.list(&[Tok::RBrack])?;
                    self.expect(&Tok::RBrack)?;
                    Some(i)
                } else {
                    None
                };
                let x = self.tex_arg()?;
                Ok(Expr::Root(
                    Box::new(x),
                    Box::new(idx.unwrap_or_else(|| Expr::int(2))),
                ))
            }
            Tok::LBrace => {
                let items = self.list_items(&[Tok::RBrace])?;
                self.expect(&Tok::RBrace)?;
                Ok(group(items, Expr::Set))
            }
            Tok::LSet => {
                let items = self.list_items(&[Tok::RSet])?;
                self.expect(&Tok::RSet)?;
                Ok(Expr::Set(items))
            }
            Tok::LParen | Tok::LBrack => {
                let open_round = t == Tok::LParen;
                let items = self.list_items(&[Tok::RParen, Tok::RBrack])?;
                let close_round = match self.bump()? {
                    Tok::RParen => true,
                    Tok::RBrack => false,
                    _ => return Err(ParseError::Syntax),
                };
                bracket(items, open_round, close_round)
            }
            Tok::Bar => {
                self.abs_depth += 1;
                let e = self.sum();
                self.abs_depth -= 1;
                let e = e?;
                self.expect(&Tok::Bar)?;
                Ok(Expr::Func(Fun::Abs, Box::new(e)))
            }
            Tok::LFloor => {
                let e = self.sum()?;
                self.expect(&Tok::RFloor)?;
                Ok(Expr::Func(Fun::Floor, Box::new(e)))
            }
            Tok::LCeil => {
                let e = self.sum()?;
                self.expect(&Tok::RCeil)?;
                Ok(Expr::Func(Fun::Ceil, Box::new(e)))
            }
            Tok::Begin(env) => self.environment(&env),
            _ => Err(ParseError::Syntax),
        };
        self.leave();
        r
    }

    fn ident(&mut self, name: Box<str>) -> PResult<Expr> {
        if let Some(Tok::Sub(sub)) = self.peek() {
            let full = format!("{name}_{sub}");
            self.pos += 1;
            return Ok(Expr::Sym(full.into()));
        }
        let functional = name.len() == 1
            && (matches!(&*name, "f" | "g" | "h") || name.bytes().all(|c| c.is_ascii_uppercase()));
        if functional && self.peek_is(&Tok::LParen) {
            // `f(2)`, `I(0)`: function application, not a product.
            self.bump()?;
            let args = self.list_items(&[Tok::RParen])?;
            self.expect(&Tok::RParen)?;
            if !args.is_empty() {
                return Ok(Expr::Apply(name, args));
            }
            return Err(ParseError::Syntax);
        }
        Ok(match &*name {
            "e" => Expr::Const(Const::E),
            "i" => Expr::Const(Const::I),
            "infty" => Expr::Const(Const::Inf),
            _ => Expr::Sym(name),
        })
    }

    fn word(&mut self, w: Box<str>) -> PResult<Expr> {
        if let Some(f) = Fun::from_name(&w) {
            if w.as_ref() == "log" {
                return self.func(Fun::Log10);
            }
            return self.func(f);
        }
        match &*w {
            "pi" => return Ok(Expr::Const(Const::Pi)),
            "inf" | "infty" | "infinity" | "oo" => return Ok(Expr::Const(Const::Inf)),
            "sqrt" => {
                let x = self.tex_arg()?;
                return Ok(Expr::Root(Box::new(x), Box::new(Expr::int(2))));
            }
            _ => {}
        }
        if word_is_text(&w) {
            // Plain words: gather the phrase (`Monday`, `no solution`).
            let mut text = w.to_string();
            while let Some(Tok::Word(next) | Tok::Ident(next)) = self.peek() {
                text.push(' ');
                text.push_str(next);
                self.pos += 1;
            }
            return Ok(Expr::Text(text.into()));
        }
        // `xy`: a product of single-letter variables.
        let fs = w
            .chars()
            .map(|c| {
                let s = c.to_string();
                let e = match s.as_str() {
                    "e" => Expr::Const(Const::E),
                    "i" => Expr::Const(Const::I),
                    _ => Expr::Sym(s.into()),
                };
                (false, e)
            })
            .collect();
        let mut e = collapse_prod(fs);
        if let Some(Tok::Sub(sub)) = self.peek() {
            // `ab_1`: the subscript belongs to the last letter.
            let sub = sub.clone();
            self.pos += 1;
            if let Expr::Prod(fs) = &mut e {
                if let Some((_, last)) = fs.last_mut() {
                    *last = Expr::Sym(format!("{last}_{sub}").into());
                }
            }
        }
        Ok(e)
    }

    fn environment(&mut self, env: &str) -> PResult<Expr> {
        let matrix = env.ends_with("matrix") || env == "array";
        let mut rows: Vec<Vec<Expr>> = vec![Vec::new()];
        loop {
            match self.peek() {
                None => return Err(ParseError::Syntax),
                Some(Tok::End) => {
                    self.pos += 1;
                    break;
                }
                Some(Tok::Amp) => {
                    self.pos += 1;
                    if !matrix {
                        continue;
                    }
                }
                Some(Tok::RowSep) => {
                    self.pos += 1;
                    rows.push(Vec::new());
                }
                Some(Tok::Comma | Tok::Or | Tok::And) => {
                    self.pos += 1;
                    if matrix {
                        return Err(ParseError::Syntax);
                    }
                }
                _ => {
                    let e = self.relation()?;
                    if let Some(r) = rows.last_mut() {
                        r.push(e);
                    }
                }
            }
        }
        rows.retain(|r| !r.is_empty());
        if !matrix {
            let mut items: Vec<Expr> = rows.into_iter().flatten().collect();
            return Ok(match items.len() {
                0 => return Err(ParseError::Syntax),
                1 => items.pop().unwrap_or(Expr::Text("".into())),
                _ => Expr::List(items),
            });
        }
        if rows.is_empty() || rows.iter().any(|r| r.len() != rows[0].len()) {
            return Err(ParseError::Syntax);
        }
        Ok(Expr::Matrix(rows))
    }
}

/// `x > -2 and x < 3` is the chain `-2 < x < 3`: a lower and an upper bound on one variable.
/// Other lists joined by `and` stay lists (`2 and 4` is two answers).
fn bounds_to_chain(items: &[Expr]) -> Option<Expr> {
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
fn word_is_text(w: &str) -> bool {
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

fn is_minus_one(e: &Expr) -> bool {
    matches!(e, Expr::Neg(x) if matches!(&**x, Expr::Num(n) if n.digits == "1" && !n.has_point))
}

/// `2\frac{1}{2}`'s fraction part: a quotient of two integer literals.
fn is_simple_frac(e: &Expr) -> bool {
    matches!(e, Expr::Prod(fs) if fs.len() == 2 && !fs[0].0 && fs[1].0 && is_int_lit(&fs[0].1) && is_int_lit(&fs[1].1))
}

/// `\log_b x` read through `func`: swap Log10 for a base.
fn relog(e: Expr, base: Expr) -> Expr {
    match e {
        Expr::Func(Fun::Log10, x) => Expr::LogBase(x, Box::new(base)),
        Expr::Pow(inner, p) => Expr::Pow(Box::new(relog(*inner, base)), p),
        e => e,
    }
}

fn collapse_sum(mut terms: Vec<(bool, Expr)>) -> Expr {
    if terms.len() == 1 {
        let (neg, e) = terms.pop().unwrap_or((false, Expr::int(0)));
        return if neg { Expr::Neg(Box::new(e)) } else { e };
    }
    Expr::Sum(terms)
}

fn collapse_prod(mut fs: Vec<(bool, Expr)>) -> Expr {
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
fn sci_literal(e: Expr) -> Expr {
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

fn group(mut items: Vec<Expr>, many: fn(Vec<Expr>) -> Expr) -> Expr {
    if items.len() == 1 {
        items.pop().unwrap_or(Expr::Text("".into()))
    } else {
        many(items)
    }
}

fn bracket(mut items: Vec<Expr>, open_round: bool, close_round: bool) -> PResult<Expr> {
    if items.is_empty() {
        return Err(ParseError::Syntax);
    }
    if items.len() == 2 && open_round != close_round {
        let hi = items.pop().unwrap_or(Expr::int(0));
        let lo = items.pop().unwrap_or(Expr::int(0));
        return Ok(Expr::Interval {
            lo: Box::new(lo),
            hi: Box::new(hi),
            lo_open: open_round,
            hi_open: close_round,
        });
    }
    if items.len() == 1 {
        return Ok(items.pop().unwrap_or(Expr::int(0)));
    }
    if items.len() == 2 && !open_round && !close_round {
        let hi = items.pop().unwrap_or(Expr::int(0));
        let lo = items.pop().unwrap_or(Expr::int(0));
        return Ok(Expr::Interval {
            lo: Box::new(lo),
            hi: Box::new(hi),
            lo_open: false,
            hi_open: false,
        });
    }
    Ok(Expr::Tuple(items))
}

/// `1011_2`: digits in a base. A non-numeric subscript (`5_{\text{th}}`) is dropped.
fn base_number(n: NumLit, sub: &str) -> PResult<Expr> {
    let sub = sub.trim_start_matches('{').trim_end_matches('}');
    match sub.parse::<u32>() {
        Ok(10) => Ok(Expr::Num(Box::new(n))),
        Ok(base) if (2..=36).contains(&base) && !n.has_point && n.exp10 == 0 => {
            if n.digits.chars().all(|c| c.is_digit(base)) {
                Ok(Expr::Base(
                    n.digits.trim_start_matches('0').to_string().into(),
                    base,
                ))
            } else {
                Err(ParseError::Syntax)
            }
        }
        _ => Ok(Expr::Num(Box::new(n))),
    }
}
