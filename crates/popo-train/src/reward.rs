//! Rewards. The trainer only sees the [`Reward`] trait, so another verifier (code execution,
//! exact match, a regex) plugs in without touching it.
//!
//! The default is [`MathReward`]: 1 when `popo_verify` finds the completion's final answer (the
//! last `\boxed{}`) equivalent to the gold, else 0, plus an optional format bonus (off by default).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// One completion's score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardOut {
    pub reward: f32,
    /// The answer is right (independent of any format shaping): what accuracy counts.
    pub correct: bool,
    /// The answer the reward read from the completion, if any.
    pub extracted: Option<String>,
}

pub trait Reward: Send + Sync {
    fn score(&self, completion_text: &str, gold: &str) -> RewardOut;

    /// A short name for logs and the resolved config.
    fn name(&self) -> &str {
        "custom"
    }
}

/// Scores `(completion, gold)` pairs in parallel (rayon), in input order.
pub fn score_batch(reward: &dyn Reward, items: &[(&str, &str)]) -> Vec<RewardOut> {
    items
        .par_iter()
        .map(|(completion, gold)| reward.score(completion, gold))
        .collect()
}

/// A format the optional format reward checks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormatRule {
    /// The completion puts a final answer in `\boxed{...}` (balanced braces).
    Boxed,
    /// R1-style `<think> ... </think>` followed by `<answer> ... </answer>`.
    ThinkAnswer,
}

/// Format shaping: `reward = correct + weight * follows_format`.
///
/// With a format reward, a wrong but well-formatted completion has a positive reward. POPO's
/// positive set is `r > tau_r`, so a run using it should set `tau_r` at or above `weight`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FormatReward {
    pub rule: FormatRule,
    pub weight: f32,
}

impl FormatReward {
    pub fn follows(&self, text: &str) -> bool {
        match self.rule {
            FormatRule::Boxed => has_boxed(text),
            FormatRule::ThinkAnswer => think_answer(text),
        }
    }
}

fn has_boxed(text: &str) -> bool {
    let Some(start) = text.rfind("\\boxed{") else {
        return false;
    };
    let mut depth = 0i32;
    for c in text[start + "\\boxed".len()..].chars() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

fn think_answer(text: &str) -> bool {
    let t = text.trim_start();
    // The R1-Zero template ends the prompt with "Assistant:", so the completion may start
    // right inside the think block.
    let Some(close) = t.find("</think>") else {
        return false;
    };
    let after = &t[close + "</think>".len()..];
    match (after.find("<answer>"), after.find("</answer>")) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

/// The default reward: answer correctness by the math verifier.
#[derive(Debug, Clone)]
pub struct MathReward {
    pub format: Option<FormatReward>,
    /// The verifier's settings (`literal_numbers` from `reward.literal_numbers`).
    pub verifier: popo_verify::Config,
}

impl Default for MathReward {
    /// The verifier as `[reward]`'s defaults set it (`reward.literal_numbers`).
    fn default() -> Self {
        MathReward {
            format: None,
            verifier: popo_verify::Config {
                literal_numbers: crate::config::RewardConfig::default().literal_numbers,
                ..popo_verify::Config::default()
            },
        }
    }
}

impl MathReward {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_format(rule: FormatRule, weight: f32) -> Self {
        MathReward {
            format: Some(FormatReward { rule, weight }),
            ..Self::default()
        }
    }
}

impl Reward for MathReward {
    fn score(&self, completion_text: &str, gold: &str) -> RewardOut {
        let v = popo_verify::verify_with(&self.verifier, gold, completion_text);
        let mut reward = if v.correct { 1.0 } else { 0.0 };
        if let Some(f) = &self.format {
            if f.follows(completion_text) {
                reward += f.weight;
            }
        }
        RewardOut {
            reward,
            correct: v.correct,
            extracted: v.pred_answer,
        }
    }

    fn name(&self) -> &str {
        "math"
    }
}

/// Exact string match of the last `\boxed{}` content (or, without one, the trimmed completion)
/// against the trimmed gold: a plug-in example for tasks whose answers are not math.
#[derive(Debug, Clone, Default)]
pub struct ExactMatchReward;

impl Reward for ExactMatchReward {
    fn score(&self, completion_text: &str, gold: &str) -> RewardOut {
        let extracted = popo_verify::last_boxed(completion_text)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| completion_text.trim().to_string());
        let correct = extracted == gold.trim();
        RewardOut {
            reward: if correct { 1.0 } else { 0.0 },
            correct,
            extracted: Some(extracted),
        }
    }

    fn name(&self) -> &str {
        "exact"
    }
}

/// The reward named in a config (`math` or `exact`), with the optional format bonus.
pub fn from_name(name: &str, format: Option<FormatReward>) -> anyhow::Result<Box<dyn Reward>> {
    match name {
        "math" => Ok(Box::new(MathReward {
            format,
            ..MathReward::default()
        })),
        "exact" if format.is_none() => Ok(Box::new(ExactMatchReward)),
        "exact" => anyhow::bail!("the format reward is only available with reward = \"math\""),
        other => anyhow::bail!("unknown reward `{other}` (expected `math` or `exact`)"),
    }
}

/// The spec's answer reward reads the last `\boxed{}`: a completion without one scores 0. (The
/// verifier's fallbacks, such as "the last number", would reward unformatted text, which RL then
/// reinforces.)
pub struct BoxedAnswer(pub MathReward);

impl Reward for BoxedAnswer {
    fn score(&self, completion_text: &str, gold: &str) -> RewardOut {
        if popo_verify::last_boxed(completion_text).is_none() {
            return RewardOut {
                reward: 0.0,
                correct: false,
                extracted: None,
            };
        }
        self.0.score(completion_text, gold)
    }

    fn name(&self) -> &str {
        "math_boxed"
    }
}

/// The reward a config asks for: the math verifier with the optional format bonus, restricted
/// to boxed answers (`reward.require_boxed`), and for the built-in task gated on valid worked
/// steps (`reward.check_work`).
pub fn from_config(cfg: &crate::config::TrainConfig) -> anyhow::Result<Box<dyn Reward>> {
    let r = &cfg.reward;
    let mut math = if r.format_weight > 0.0 {
        MathReward::with_format(FormatRule::Boxed, r.format_weight as f32)
    } else {
        MathReward::new()
    };
    math.verifier.literal_numbers = r.literal_numbers;
    if r.check_work && !cfg.data.path.is_empty() {
        anyhow::bail!(
            "reward.check_work checks the built-in task's worked steps; it needs no --data"
        );
    }
    let mut reward: Box<dyn Reward> = if r.require_boxed {
        Box::new(BoxedAnswer(math))
    } else {
        Box::new(math)
    };
    if r.check_work {
        reward = Box::new(CheckedWork(reward));
    }
    Ok(reward)
}

/// DAPO's soft overlong punishment: 0 up to `max_len - cache`, then linear down to `-penalty` at
/// `max_len`.
pub fn overlong_penalty(len: usize, max_len: usize, cache: usize, penalty: f64) -> f64 {
    let start = max_len.saturating_sub(cache);
    if len <= start || cache == 0 {
        0.0
    } else {
        -penalty * ((len - start) as f64 / cache as f64).min(1.0)
    }
}

/// The built-in task's work check. True when a completion's worked answer is consistent: every `a op b=c` step is true arithmetic
/// and the last step's result (or the lone number, for a one-operand problem) is the boxed answer.
/// It checks the work, not the answer: [`CheckedWork`] pairs it with the verifier.
pub fn work_is_valid(completion: &str) -> bool {
    let text = completion.trim();
    let Some(at) = text.rfind("\\boxed{") else {
        return false;
    };
    let Some(boxed) = text[at + 7..]
        .strip_suffix('}')
        .and_then(|b| b.parse::<i64>().ok())
    else {
        return false;
    };
    let Some(work) = text[..at].trim_end().strip_suffix('.') else {
        return false;
    };
    let mut last = None;
    for step in work.trim().split(", ") {
        last = match step.split_once('=') {
            None => step.parse::<i64>().ok(),
            Some((lhs, rhs)) => check_step(lhs, rhs),
        };
        if last.is_none() {
            return false;
        }
    }
    last == Some(boxed)
}

/// `a op b` and `c` of one step; the step's result when `a op b == c`.
fn check_step(lhs: &str, rhs: &str) -> Option<i64> {
    // The left operand may be negative, so the operator is searched after its first character.
    let first = lhs.chars().next()?.len_utf8();
    let op_at = first + lhs[first..].find(['+', '-', '*'])?;
    let a: i64 = lhs[..op_at].parse().ok()?;
    let b: i64 = lhs[op_at + 1..].parse().ok()?;
    let c: i64 = rhs.parse().ok()?;
    let v = match lhs.as_bytes()[op_at] {
        b'+' => a.checked_add(b)?,
        b'-' => a.checked_sub(b)?,
        _ => a.checked_mul(b)?,
    };
    (v == c).then_some(c)
}

/// The built-in task's reward (`reward.check_work`): the inner reward, counted only when the
/// worked steps are valid. `correct` (what accuracy counts) is the inner answer check alone.
pub struct CheckedWork(pub Box<dyn Reward>);

impl Reward for CheckedWork {
    fn score(&self, completion_text: &str, gold: &str) -> RewardOut {
        let mut out = self.0.score(completion_text, gold);
        if !work_is_valid(completion_text) {
            out.reward = out.reward.min(0.0);
        }
        out
    }

    fn name(&self) -> &str {
        "math_checked_work"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_check_accepts_true_steps_and_rejects_lucky_answers() {
        for p in crate::task::TaskConfig::default()
            .generate(crate::task::Split::Rl)
            .unwrap()
        {
            assert!(work_is_valid(&p.solution), "{p:?}");
        }
        assert!(work_is_valid(" 5-9=-4, -4-3=-7. \\boxed{-7}"));
        assert!(work_is_valid(" 7. \\boxed{7}"));
        for bad in [
            " 1+1=3. \\boxed{1}",            // the right box through a false step
            " 1+1=2. \\boxed{3}",            // steps fine, box disagrees
            " 5-9=-4, -4-3=-6. \\boxed{-6}", // second step false
            " 5-9=-4, --3=. \\boxed{-7}",
            " 2*3=6 \\boxed{6}", // no period
            " 2*3=6. \\boxed{6",
            " 2*3=6. ",
            "",
            " 99999999999*99999999999=1. \\boxed{1}", // overflow is invalid, not a panic
            " é+1=2. \\boxed{2}",
        ] {
            assert!(!work_is_valid(bad), "{bad:?}");
        }
        let r = CheckedWork(Box::new(MathReward::new()));
        let lucky = r.score(" 1+1=3. \\boxed{1}", "1");
        assert_eq!((lucky.reward, lucky.correct), (0.0, true));
        let good = r.score(" 0+1=1. \\boxed{1}", "1");
        assert_eq!((good.reward, good.correct), (1.0, true));
    }

    #[test]
    fn math_reward_uses_the_verifier() {
        let r = MathReward::new();
        let ok = r.score("3+4=7, so \\boxed{7}", "7");
        assert_eq!(
            ok,
            RewardOut {
                reward: 1.0,
                correct: true,
                extracted: Some("7".into())
            }
        );
        // Equivalent forms count: the verifier, not string equality, decides.
        assert!(r.score("\\boxed{\\frac{1}{2}}", "0.5").correct);
        let wrong = r.score("\\boxed{8}", "7");
        assert_eq!((wrong.reward, wrong.correct), (0.0, false));
        assert_eq!(wrong.extracted.as_deref(), Some("8"));
        assert!(!r.score("I don't know", "7").correct);
        assert_eq!(r.name(), "math");
    }

    #[test]
    fn format_reward_is_off_by_default_and_adds_its_weight() {
        let plain = MathReward::new();
        assert_eq!(plain.score("\\boxed{8}", "7").reward, 0.0);
        let shaped = MathReward::with_format(FormatRule::Boxed, 0.1);
        assert_eq!(shaped.score("\\boxed{8}", "7").reward, 0.1);
        assert_eq!(shaped.score("\\boxed{7}", "7").reward, 1.1);
        // An unclosed box earns no format bonus (the verifier may still read the answer).
        assert_eq!(shaped.score("\\boxed{8", "7").reward, 0.0);

        let fr = FormatReward {
            rule: FormatRule::ThinkAnswer,
            weight: 0.5,
        };
        assert!(fr.follows("<think>2+2</think> <answer>4</answer>"));
        assert!(fr.follows("2+2 is 4 </think><answer>\\boxed{4}</answer>"));
        assert!(!fr.follows("<answer>4</answer> <think>x</think>"));
        assert!(!fr.follows("<think>x</think> 4"));
        assert!(has_boxed("\\boxed{\\frac{1}{2}}"));
        assert!(!has_boxed("\\boxed{\\frac{1}{2}"));
    }

    #[test]
    fn batch_scoring_keeps_order_and_matches_single_scores() {
        let r = MathReward::new();
        let completions: Vec<String> = (0..64).map(|i| format!("\\boxed{{{}}}", i % 5)).collect();
        let items: Vec<(&str, &str)> = completions.iter().map(|c| (c.as_str(), "3")).collect();
        let out = score_batch(&r, &items);
        assert_eq!(out.len(), 64);
        for (i, o) in out.iter().enumerate() {
            assert_eq!(o.correct, i % 5 == 3, "item {i}");
            assert_eq!(*o, r.score(items[i].0, items[i].1));
        }
    }

    #[test]
    fn restating_the_question_is_not_an_answer() {
        let cfg = crate::config::TrainConfig::default();
        let r = from_config(&cfg).unwrap();
        assert!(r.score("\\boxed{123}", "123").correct);
        assert!(!r.score("\\boxed{24 + 65 + 34}", "123").correct);
        let mut by_value = cfg.clone();
        by_value.reward.literal_numbers = false;
        let r = from_config(&by_value).unwrap();
        assert!(r.score("\\boxed{24 + 65 + 34}", "123").correct);
    }

    #[test]
    fn answers_must_be_boxed() {
        let r = BoxedAnswer(MathReward::new());
        assert!(r.score(" 3+4=7. \\boxed{7}", "7").correct);
        assert!(!r.score(" 3+4=7. the answer is 7", "7").correct);
        assert_eq!(r.score("garbage 7", "7").reward, 0.0);
        assert!(
            MathReward::new().score("garbage 7", "7").correct,
            "the fallback this guards against"
        );
    }

    #[test]
    fn overlong_penalty_is_linear_in_the_cache() {
        assert_eq!(overlong_penalty(10, 100, 20, 1.0), 0.0);
        assert_eq!(overlong_penalty(80, 100, 20, 1.0), 0.0);
        assert!((overlong_penalty(90, 100, 20, 1.0) + 0.5).abs() < 1e-12);
        assert!((overlong_penalty(100, 100, 20, 1.0) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn exact_match_and_lookup_by_name() {
        let r = from_name("exact", None).unwrap();
        assert!(r.score("so \\boxed{ Paris }", "Paris").correct);
        assert!(!r.score("\\boxed{1/2}", "0.5").correct);
        assert!(r.score("  yes ", "yes").correct);
        assert_eq!(from_name("math", None).unwrap().name(), "math");
        assert!(from_name("regex", None).is_err());
        assert!(from_name(
            "exact",
            Some(FormatReward {
                rule: FormatRule::Boxed,
                weight: 0.1
            })
        )
        .is_err());
    }
}
