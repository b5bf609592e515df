//! popo-verify: math answer extraction and equivalence checking, with no ML dependency.
//!
//! ```
//! let v = popo_verify::verify("\\frac{1}{2}", "so the answer is $\\boxed{0.5}$.");
//! assert!(v.correct);
//! assert!(!popo_verify::verify("\\frac{1}{2004!}", "\\boxed{\\frac{1}{2006!}}").correct);
//! ```
//!
//! Pipeline: [`extract`] finds the prediction in the response (an answer marker, else the
//! last candidate by position; the gold is parsed whole, or from its boxes); both are lexed
//! and parsed once into an expression tree; the trees are compared structurally (sets
//! unordered, tuples ordered, intervals with their openness, one-variable inequalities by their
//! solution sets), and single values exactly with big rationals when rational, otherwise
//! numerically at several points with a relative tolerance. Every pair has a deterministic
//! step budget.
//!
//! The gold is trusted, the prediction is not: a prediction listing several answers (or boxing
//! several different ones on its last line) does not match a single gold, and rounding is
//! forgiven only for a decimal prediction with at least 3 significant digits that equals the
//! gold rounded to the prediction's own precision (`0.333` for 1/3, but not `4.5` for 2√5).
//!
//! Conventions worth knowing: units, `\$`, `^\circ` and `\%` are dropped (`50\%` also
//! matches `0.5`); `x = 3`, `x = 1 + 2 = 3` and `(a, b) = (3, 4)` state their right-hand
//! sides; a comma is never a decimal point; `\log` is base 10; a number with a base subscript
//! (`1011_2`) only matches the same number in a base; `f(2)`, `I(0)` (single letters `f g h`
//! or capitals before a parenthesis) are function values, not products.
//!
//! Since issue 31: the exact value before an approximation is the answer (`x = \frac{2}{7}
//! \approx 0.5` is right for 2/7, wrong for 0.5; a correctly rounded decimal also matches a
//! decimal gold); a closing "The final answer is X" after every box wins over them; a set's
//! repeated element counts once when the gold's elements are distinct; assignments of several
//! solutions (`a=1,b=4;a=3,b=2`) are the tuples they assign; a relation may bound a function
//! value or an absolute value (`-2 < g(t) \le 5` is `(-2, 5]`); `y^{2/3}` is real at a negative
//! `y`, as `\sqrt[3]{y}^2` is; `45,\! 600` (a space after TeX's separator) is one number.

mod approx;
pub mod bench;
mod candidates;
mod complex;
mod equiv;
mod eval;
mod expr;
mod extract;
mod lex;
mod limits;
mod lists;
mod matrix;
mod parse;
mod solve;

pub use extract::{gold_answer, last_boxed, last_number, Extractor, Strategy};
pub use limits::Limits;

use equiv::{expand_answer, Cx, How};
use expr::Expr;
use limits::{Budget, Limit};
use parse::{parse_answer, ParseError};
use rayon::prelude::*;

/// The verdict for one (gold, response) pair.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    pub correct: bool,
    /// The gold answer as compared (normalised), if it could be read.
    pub gold_answer: Option<String>,
    /// The extracted prediction (normalised), if one was found.
    pub pred_answer: Option<String>,
    /// Why: `exact`, `rounded`, `numeric`, `structural`, `text`, `different`,
    /// `no answer found`, or the work bound that was hit.
    pub reason: String,
}

/// Everything configurable about verification.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub extractor: Extractor,
    pub limits: Limits,
    /// Relative tolerance for numeric comparison (1e-6: six significant digits).
    pub rel_tol: f64,
    /// Read the gold's final `\boxed{}` when it has one (the default, so a dataset's worked
    /// solution works as a gold); `false` compares the gold string whole.
    #[serde(default = "default_extract_gold")]
    pub extract_gold: bool,
    /// When the gold is a number written out, so must the prediction be (an integer, decimal
    /// or fraction, possibly negative or a percentage): `24 + 65 + 34` is then wrong for 123,
    /// where by value it is right. Off by default, as in math-verify, for grading; the trainer's
    /// reward turns it on (`reward.literal_numbers`), because RL finds such answers: a policy
    /// that restates the question's sum is right every time.
    #[serde(default)]
    pub literal_numbers: bool,
}

fn default_extract_gold() -> bool {
    true
}

impl Default for Config {
    fn default() -> Self {
        Config {
            extractor: Extractor::default(),
            limits: Limits::default(),
            rel_tol: 1e-6,
            extract_gold: true,
            literal_numbers: false,
        }
    }
}

/// The candidate answer of a response with the default extraction order.
pub fn extract(response: &str) -> Option<String> {
    Extractor::default().extract(response)
}

/// Verify a response against a gold answer with the default configuration.
pub fn verify(gold: &str, response: &str) -> Verdict {
    verify_with(&Config::default(), gold, response)
}

/// A parsed answer, or the reason it could not be read.
enum Parsed {
    Expr(Expr),
    /// Not mathematics we understand: compared as normalised text.
    Raw(String),
}

impl Parsed {
    fn display(&self) -> String {
        match self {
            Parsed::Expr(e) => e.to_string(),
            Parsed::Raw(s) => s.clone(),
        }
    }
}

fn parse(s: &str, b: &mut Budget) -> Result<Parsed, Limit> {
    match parse_answer(s, b) {
        Ok(e) => Ok(Parsed::Expr(expand_answer(approx::settle(e, b)?))),
        Err(ParseError::Syntax) => Ok(Parsed::Raw(s.trim().to_string())),
        Err(ParseError::Limit(l)) => Err(l),
    }
}

fn norm_raw(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            // Drop formatting commands, keep the rest.
            let mut name = String::new();
            while let Some(&n) = chars.peek() {
                if n.is_ascii_alphabetic() {
                    name.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            if !matches!(
                name.as_str(),
                "text" | "mathrm" | "textbf" | "mbox" | "left" | "right" | "" | "displaystyle"
            ) {
                out.push_str(&name);
            }
            continue;
        }
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !c.is_whitespace() && !matches!(c, '{' | '}' | '$' | '.' | '~') {
            out.push(c);
        }
    }
    out
}

type Comparison = (bool, Option<String>, Option<String>, String);

/// Compares a gold and a prediction, spending `b`.
fn compare(gold: &str, pred: &str, cfg: &Config, b: &mut Budget) -> Comparison {
    let g = match parse(gold, b) {
        Ok(g) => g,
        Err(l) => {
            return (
                false,
                Some(gold.trim().to_string()),
                Some(pred.trim().to_string()),
                format!("gold: {l}"),
            )
        }
    };
    let p = match parse(pred, b) {
        Ok(p) => p,
        Err(l) => {
            return (
                false,
                Some(g.display()),
                Some(pred.trim().to_string()),
                format!("prediction: {l}"),
            )
        }
    };
    let (ok, reason) = match (&g, &p) {
        (Parsed::Expr(ge), Parsed::Expr(pe))
            if cfg.literal_numbers && ge.is_written_number() && !pe.is_written_number() =>
        {
            (false, "not a number written out".to_string())
        }
        (Parsed::Expr(ge), Parsed::Expr(pe)) => {
            let mut cx = Cx {
                b,
                rel_tol: cfg.rel_tol,
                how: How::Structural,
            };
            match cx.equiv(ge, pe) {
                Ok(true) => (true, how_name(cx.how).to_string()),
                Ok(false) => (false, "different".to_string()),
                Err(l) => (false, l.to_string()),
            }
        }
        _ => {
            let ok = norm_raw(gold) == norm_raw(pred) && !norm_raw(gold).is_empty();
            (
                ok,
                if ok {
                    "text"
                } else {
                    "different (unparsed text)"
                }
                .to_string(),
            )
        }
    };
    (ok, Some(g.display()), Some(p.display()), reason)
}

fn how_name(h: How) -> &'static str {
    match h {
        How::Exact => "exact",
        How::Rounded => "rounded",
        How::Numeric => "numeric",
        How::Structural => "structural",
        How::Text => "text",
    }
}

/// Verify with a given configuration.
pub fn verify_with(cfg: &Config, gold: &str, response: &str) -> Verdict {
    verify_counted(cfg, gold, response).0
}

/// [`verify_with`], also returning the steps of the budget it spent (never more than
/// `cfg.limits.steps`): for tests and fuzzing of the work bound.
pub fn verify_counted(cfg: &Config, gold: &str, response: &str) -> (Verdict, u64) {
    let mut b = Budget::new(cfg.limits);
    let g = if cfg.extract_gold {
        extract::strip_math_delims(&gold_answer(gold)).to_string()
    } else {
        extract::strip_math_delims(gold).to_string()
    };
    let Some(p) = cfg.extractor.extract(response) else {
        let v = Verdict {
            correct: false,
            gold_answer: Some(g),
            pred_answer: None,
            reason: "no answer found".into(),
        };
        return (v, 0);
    };
    let p = extract::strip_math_delims(&p).to_string();
    let (correct, gold_answer, pred_answer, reason) = compare(&g, &p, cfg, &mut b);
    let v = Verdict {
        correct,
        gold_answer,
        pred_answer,
        reason,
    };
    (v, b.spent())
}

/// Verify many `(gold, response)` pairs on `threads` threads (0 = all cores), in input order.
pub fn verify_batch(pairs: &[(String, String)], threads: usize) -> Vec<Verdict> {
    verify_batch_with(&Config::default(), pairs, threads)
}

/// [`verify_batch`] with a configuration.
pub fn verify_batch_with(cfg: &Config, pairs: &[(String, String)], threads: usize) -> Vec<Verdict> {
    if threads == 1 {
        return pairs.iter().map(|(g, r)| verify_with(cfg, g, r)).collect();
    }
    if threads == 0 {
        // rayon's global pool: no per-call pool start-up in a training loop.
        return pairs
            .par_iter()
            .map(|(g, r)| verify_with(cfg, g, r))
            .collect();
    }
    let run = || {
        pairs
            .par_iter()
            .map(|(g, r)| verify_with(cfg, g, r))
            .collect::<Vec<_>>()
    };
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(run),
        Err(_) => run(),
    }
}

/// Whether two already-extracted answers are the same mathematical object (used e.g. to group
/// samples for majority voting). `a` plays the role of the gold.
pub fn answers_equivalent(a: &str, b: &str) -> bool {
    let cfg = Config::default();
    compare(
        extract::strip_math_delims(a),
        extract::strip_math_delims(b),
        &cfg,
        &mut Budget::new(cfg.limits),
    )
    .0
}

/// An extracted answer as the verifier reads it, printed the way [`Verdict::gold_answer`] shows
/// it (`\frac12` gives `1/2`); `None` when it is not mathematics the verifier parses, or a work
/// bound was hit. The printed form is for people, not a serialization: reading it again need
/// not give the same tree (`\te`, an unknown command, prints as `te`, which reads as `t*e`).
pub fn normalize(answer: &str) -> Option<String> {
    let mut b = Budget::new(Limits::default());
    match parse(extract::strip_math_delims(answer), &mut b) {
        Ok(Parsed::Expr(e)) => Some(e.to_string()),
        _ => None,
    }
}
