//! Tokens -> [`Expr`]. Recursive descent with one token of lookahead; LaTeX argument rules
//! (`\frac12`, `\sqrt[3]{x}`, `^{...}`) are handled where the command is read.
//!
//! Precedence, loosest first: answer list (`,` `;` `or`) > relation chain > union > sum
//! (`+ - \pm`) > product (`* / \cdot`, implicit) > unary sign > power > postfix (`! % °`) > atom.
//!
//! This file holds the entry point, the token cursor and the precedence ladder down to postfix
//! operators; `atom.rs` reads what the ladder bottoms out in (numbers, names, commands,
//! brackets, environments) and `build.rs` holds the tree-building helpers both share.

mod atom;
mod build;

use crate::expr::{Const, Expr, RelOp};
use crate::lex::{lex, Tok};
use crate::limits::{Budget, Limit};
use build::{
    bounds_to_chain, collapse_prod, collapse_sum, is_int_lit, is_simple_frac, sci_literal,
    word_is_text,
};

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
}
