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
#[derive(Debug, Clone, Default)]
pub struct MathReward {
    pub format: Option<FormatReward>,
}

impl MathReward {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_format(rule: FormatRule, weight: f32) -> Self {
        MathReward {
            format: Some(FormatReward { rule, weight }),
        }
    }
}

impl Reward for MathReward {
    fn score(&self, completion_text: &str, gold: &str) -> RewardOut {
        let v = popo_verify::verify(gold, completion_text);
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
        "math" => Ok(Box::new(MathReward { format })),
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
    let math = if r.format_weight > 0.0 {
        MathReward::with_format(FormatRule::Boxed, r.format_weight as f32)
    } else {
        MathReward::new()
    };
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
        reward = Box::new(crate::task::CheckedWork(reward));
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

#[cfg(test)]
mod tests {
    use super::*;

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
