//! The atoms of the parse: numbers (in a base), names and function values, words and phrases,
//! text, constants, LaTeX commands with their arguments (`\frac12`, `\sqrt[3]{x}`, `\sin^2 x`,
//! `\log_2 8`), bracketed groups (sets, tuples, intervals, `|x|`, floors) and environments
//! (matrices, `cases`). The precedence ladder above them is in `parse.rs`.

use super::build::{collapse_prod, group, is_minus_one, relog, word_is_text};
use super::{parse_answer, PResult, ParseError, Parser};
use crate::expr::{Const, Expr, Fun, NumLit};
use crate::lex::Tok;

impl Parser<'_> {
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

    /// The smallest unit of the ladder: a number, name, word, text, constant, command with its
    /// arguments, bracketed group or environment.
    pub(super) fn atom(&mut self) -> PResult<Expr> {
        self.enter()?;
        let t = self.bump()?;
        let r = match t {
            Tok::Num(n) => self.number(n),
            Tok::Ident(name) => self.ident(name),
            Tok::Word(w) => self.word(w),
            Tok::Text(t) => Ok(Expr::Text(t)),
            Tok::Pi => Ok(Expr::Const(Const::Pi)),
            Tok::Infty => Ok(Expr::Const(Const::Inf)),
            Tok::Emptyset => Ok(Expr::Set(Vec::new())),
            Tok::Func(f) => self.func(f),
            Tok::Log => self.log(),
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
            Tok::Sqrt => self.sqrt(),
            Tok::Begin(env) => self.environment(&env),
            t => self.delimited(t),
        };
        self.leave();
        r
    }

    /// A number, in a base when a subscript follows (`1011_2`).
    fn number(&mut self, n: NumLit) -> PResult<Expr> {
        if let Some(Tok::Sub(sub)) = self.peek() {
            let sub = sub.clone();
            self.pos += 1;
            base_number(n, &sub)
        } else {
            Ok(Expr::Num(Box::new(n)))
        }
    }

    /// `\log x`, base 10, or `\log_b x`.
    fn log(&mut self) -> PResult<Expr> {
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

    /// `\sqrt{x}` or `\sqrt[n]{x}`.
    fn sqrt(&mut self) -> PResult<Expr> {
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

    /// What the opening token `t` (already read) encloses: a braced group, a set, a tuple or
    /// interval, an absolute value, a floor or a ceiling. Any other token starts no atom.
    fn delimited(&mut self, t: Tok) -> PResult<Expr> {
        match t {
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
            _ => Err(ParseError::Syntax),
        }
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

/// Items between `(` or `[` and `)` or `]`: two items make an interval when the brackets
/// differ (`[0, 1)`) or are both square; else one item is itself and more are a tuple.
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
