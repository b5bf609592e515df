//! The built-in verifiable task behind `popo train` with no arguments (its model is in `tiny`).
//!
//! Problems are integer arithmetic such as `Compute 37+48*2.`, with a short worked answer that a
//! character-level model can learn: ` 48*2=96, 37+96=133. \boxed{133}` (multiplications first,
//! then left to right). Everything is generated from a seed, so no data is downloaded.
//!
//! Three splits come from the same generator: an easier `sft` split for the warm-up, an `rl`
//! split and a held-out `eval` split. A problem's split is fixed by a hash of its text, so the
//! splits are disjoint whatever their difficulty settings or sizes.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::data::{Example, SplitMix64};

/// How hard the problems of a split are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Difficulty {
    /// Number of operands, inclusive range.
    pub min_operands: usize,
    pub max_operands: usize,
    /// Decimal digits of each operand, inclusive range (1 allows 0..=9).
    pub min_digits: u32,
    pub max_digits: u32,
    /// The operators to draw from, any of `+`, `-`, `*`.
    pub ops: String,
    /// Most digits of the right operand of a `*` (keeps products learnable).
    pub max_mul_digits: u32,
}

impl Difficulty {
    /// The warm-up split: two operands.
    pub fn easy() -> Self {
        Difficulty {
            min_operands: 2,
            max_operands: 2,
            min_digits: 1,
            max_digits: 2,
            ops: "+-*".into(),
            max_mul_digits: 1,
        }
    }

    /// The RL and evaluation splits: two or three operands.
    pub fn standard() -> Self {
        Difficulty {
            min_operands: 2,
            max_operands: 3,
            min_digits: 1,
            max_digits: 2,
            ops: "+-*".into(),
            max_mul_digits: 1,
        }
    }

    fn validate(&self, what: &str) -> Result<()> {
        if self.min_operands < 1 || self.min_operands > self.max_operands {
            bail!("task.{what}: need 1 <= min_operands <= max_operands");
        }
        if self.min_digits < 1 || self.min_digits > self.max_digits || self.max_digits > 9 {
            bail!("task.{what}: need 1 <= min_digits <= max_digits <= 9");
        }
        if !(1..=9).contains(&self.max_mul_digits) {
            bail!("task.{what}: need 1 <= max_mul_digits <= 9");
        }
        if self.ops.is_empty() || self.ops.chars().any(|c| !"+-*".contains(c)) {
            bail!(
                "task.{what}.ops must be a non-empty string of `+`, `-`, `*` (got {:?})",
                self.ops
            );
        }
        Ok(())
    }
}

/// The built-in task's settings (the `[task]` table of a training config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskConfig {
    pub seed: u64,
    pub sft: Difficulty,
    pub rl: Difficulty,
    /// The held-out split uses the RL difficulty unless set.
    pub eval: Option<Difficulty>,
    pub n_sft: usize,
    pub n_rl: usize,
    pub n_eval: usize,
    /// Share of the hash space reserved for each split, in percent (the RL split gets the rest).
    pub eval_percent: u64,
    pub sft_percent: u64,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            seed: 0,
            sft: Difficulty::easy(),
            rl: Difficulty::standard(),
            eval: None,
            n_sft: 2000,
            n_rl: 2000,
            n_eval: 200,
            eval_percent: 20,
            sft_percent: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Sft,
    Rl,
    Eval,
}

/// One generated problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `Compute 37+48*2.`
    pub problem: String,
    /// `133`
    pub answer: String,
    /// ` 48*2=96, 37+96=133. \boxed{133}`: the completion the warm-up trains on.
    pub solution: String,
}

impl Problem {
    pub fn example(&self) -> Example {
        Example {
            problem: self.problem.clone(),
            answer: self.answer.clone(),
        }
    }
}

impl TaskConfig {
    pub fn difficulty(&self, split: Split) -> &Difficulty {
        match split {
            Split::Sft => &self.sft,
            Split::Rl => &self.rl,
            Split::Eval => self.eval.as_ref().unwrap_or(&self.rl),
        }
    }

    pub fn size(&self, split: Split) -> usize {
        match split {
            Split::Sft => self.n_sft,
            Split::Rl => self.n_rl,
            Split::Eval => self.n_eval,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.sft.validate("sft")?;
        self.rl.validate("rl")?;
        if let Some(e) = &self.eval {
            e.validate("eval")?;
        }
        if self.eval_percent == 0 || self.eval_percent + self.sft_percent >= 100 {
            bail!("task: need eval_percent > 0 and eval_percent + sft_percent < 100");
        }
        Ok(())
    }

    /// Which split a problem text belongs to.
    pub fn split_of(&self, problem: &str) -> Split {
        let bucket = text_hash(problem) % 100;
        if bucket < self.eval_percent {
            Split::Eval
        } else if bucket < self.eval_percent + self.sft_percent {
            Split::Sft
        } else {
            Split::Rl
        }
    }

    /// The split's problems, the same for the same config. Problems are distinct within a split
    /// when the difficulty allows it; the eval split must be distinct (an error otherwise), the
    /// training splits repeat problems once the distinct ones run out.
    pub fn generate(&self, split: Split) -> Result<Vec<Problem>> {
        self.validate()?;
        let diff = self.difficulty(split);
        let n = self.size(split);
        let salt = match split {
            Split::Sft => 0x005f_7a11_u64,
            Split::Rl => 0x007e_1a22,
            Split::Eval => 0x00e7_a133,
        };
        let mut rng = SplitMix64(self.seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(n);
        let max_tries = 200 * n + 1000;
        let mut tries = 0;
        while out.len() < n {
            tries += 1;
            let p = random_problem(diff, &mut rng);
            if self.split_of(&p.problem) != split {
                continue;
            }
            let fresh = seen.insert(p.problem.clone());
            if fresh || (tries > max_tries && split != Split::Eval) {
                out.push(p);
            } else if tries > max_tries {
                bail!(
                    "task: only {} distinct eval problems at this difficulty, {n} asked; \
                     lower n_eval or raise the eval difficulty",
                    out.len()
                );
            }
        }
        Ok(out)
    }
}

/// FNV-1a over the bytes, then a SplitMix64 finaliser so every bit of the bucket mixes.
fn text_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    SplitMix64(h).next_u64()
}

fn random_operand(rng: &mut SplitMix64, min_digits: u32, max_digits: u32) -> i64 {
    let d = min_digits + rng.below((max_digits - min_digits + 1) as u64) as u32;
    let lo = if d == 1 { 0 } else { 10i64.pow(d - 1) };
    let hi = 10i64.pow(d) - 1;
    lo + rng.below((hi - lo + 1) as u64) as i64
}

fn random_problem(diff: &Difficulty, rng: &mut SplitMix64) -> Problem {
    let k =
        diff.min_operands + rng.below((diff.max_operands - diff.min_operands + 1) as u64) as usize;
    let ops: Vec<char> = diff.ops.chars().collect();
    let mut nums = vec![random_operand(rng, diff.min_digits, diff.max_digits)];
    let mut chosen = Vec::new();
    for _ in 1..k {
        let op = ops[rng.below(ops.len() as u64) as usize];
        let max_d = if op == '*' {
            diff.max_mul_digits.min(diff.max_digits)
        } else {
            diff.max_digits
        };
        let min_d = diff.min_digits.min(max_d);
        chosen.push(op);
        nums.push(random_operand(rng, min_d, max_d));
    }
    solve(&nums, &chosen)
}

/// Builds the problem text and its worked solution: products first (left to right), then sums
/// and differences left to right, one `a op b=c` step each.
fn solve(nums: &[i64], ops: &[char]) -> Problem {
    let mut expr = nums[0].to_string();
    for (op, n) in ops.iter().zip(&nums[1..]) {
        expr.push(*op);
        expr.push_str(&n.to_string());
    }
    let mut steps = Vec::new();
    // Collapse products into terms.
    let mut terms = vec![nums[0]];
    let mut term_ops = Vec::new();
    for (op, &n) in ops.iter().zip(&nums[1..]) {
        if *op == '*' {
            let a = terms.pop().unwrap();
            let c = a * n;
            steps.push(format!("{a}*{n}={c}"));
            terms.push(c);
        } else {
            term_ops.push(*op);
            terms.push(n);
        }
    }
    let mut acc = terms[0];
    for (op, &t) in term_ops.iter().zip(&terms[1..]) {
        let c = if *op == '+' { acc + t } else { acc - t };
        steps.push(format!("{acc}{op}{t}={c}"));
        acc = c;
    }
    let work = if steps.is_empty() {
        format!(" {acc}")
    } else {
        format!(" {}", steps.join(", "))
    };
    Problem {
        problem: format!("Compute {expr}."),
        answer: acc.to_string(),
        solution: format!("{work}. \\boxed{{{acc}}}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An independent evaluator: recursive descent over the problem text.
    fn eval_expr(s: &str) -> i64 {
        fn term(t: &str) -> i64 {
            t.split('*').map(|f| f.parse::<i64>().unwrap()).product()
        }
        let mut total = 0;
        let mut sign = 1;
        let mut cur = String::new();
        for c in s.chars() {
            if c == '+' || c == '-' {
                total += sign * term(&cur);
                cur.clear();
                sign = if c == '+' { 1 } else { -1 };
            } else {
                cur.push(c);
            }
        }
        total + sign * term(&cur)
    }

    #[test]
    fn worked_solutions_are_right_and_verified() {
        let cfg = TaskConfig {
            n_rl: 300,
            ..Default::default()
        };
        for p in cfg.generate(Split::Rl).unwrap() {
            let expr = p
                .problem
                .strip_prefix("Compute ")
                .unwrap()
                .strip_suffix('.')
                .unwrap();
            assert_eq!(p.answer, eval_expr(expr).to_string(), "{p:?}");
            assert!(p.solution.ends_with(&format!("\\boxed{{{}}}", p.answer)));
            let v = popo_verify::verify(&p.answer, &p.solution);
            assert!(v.correct, "{p:?} {v:?}");
        }
        let p = solve(&[37, 48, 2], &['+', '*']);
        assert_eq!(p.problem, "Compute 37+48*2.");
        assert_eq!(p.solution, " 48*2=96, 37+96=133. \\boxed{133}");
        let p = solve(&[5, 9, 3], &['-', '-']);
        assert_eq!(p.solution, " 5-9=-4, -4-3=-7. \\boxed{-7}");
    }

    #[test]
    fn splits_are_deterministic_disjoint_and_follow_the_knobs() {
        let cfg = TaskConfig::default();
        let sft = cfg.generate(Split::Sft).unwrap();
        let rl = cfg.generate(Split::Rl).unwrap();
        let ev = cfg.generate(Split::Eval).unwrap();
        assert_eq!((sft.len(), rl.len(), ev.len()), (2000, 2000, 200));
        assert_eq!(cfg.generate(Split::Eval).unwrap(), ev);
        let other = TaskConfig {
            seed: 1,
            ..Default::default()
        };
        assert_ne!(other.generate(Split::Eval).unwrap(), ev);
        let set = |v: &[Problem]| {
            v.iter()
                .map(|p| p.problem.clone())
                .collect::<std::collections::HashSet<_>>()
        };
        let (s, r, e) = (set(&sft), set(&rl), set(&ev));
        assert!(s.is_disjoint(&r) && s.is_disjoint(&e) && r.is_disjoint(&e));
        assert_eq!(e.len(), 200, "eval problems are distinct");
        // Difficulty: sft has exactly two operands; rl has two or three, and both occur.
        let n_operands = |p: &Problem| p.problem.matches(['+', '-', '*']).count() + 1;
        assert!(sft.iter().all(|p| n_operands(p) == 2));
        let counts: std::collections::HashSet<_> = rl.iter().map(n_operands).collect();
        assert_eq!(counts, [2, 3].into_iter().collect());
        // Operands have at most two digits, products a one-digit right operand.
        for p in &rl {
            let expr = &p.problem[8..p.problem.len() - 1];
            for tok in expr.split(['+', '-']) {
                let f: Vec<&str> = tok.split('*').collect();
                assert!(f.iter().all(|x| x.len() <= 2), "{p:?}");
                assert!(f[1..].iter().all(|x| x.len() == 1), "{p:?}");
            }
        }
    }

    #[test]
    fn impossible_settings_are_clear_errors() {
        let tiny = Difficulty {
            min_operands: 2,
            max_operands: 2,
            min_digits: 1,
            max_digits: 1,
            ops: "+".into(),
            max_mul_digits: 1,
        };
        let cfg = TaskConfig {
            rl: tiny.clone(),
            n_eval: 500,
            ..Default::default()
        };
        let err = format!("{:#}", cfg.generate(Split::Eval).unwrap_err());
        assert!(err.contains("distinct eval problems"), "{err}");
        // Training splits repeat instead.
        let cfg = TaskConfig {
            rl: tiny,
            n_rl: 500,
            ..Default::default()
        };
        assert_eq!(cfg.generate(Split::Rl).unwrap().len(), 500);
        let mut bad = TaskConfig::default();
        bad.sft.ops = "+/".into();
        assert!(format!("{:#}", bad.generate(Split::Sft).unwrap_err()).contains("task.sft.ops"));
        let bad = TaskConfig {
            eval_percent: 80,
            sft_percent: 20,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
