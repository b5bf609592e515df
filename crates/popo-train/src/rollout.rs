//! The actor: samples completions from the policy (no graph) and scores them with the reward:
//! a step's rollouts (with DAPO's refill of uninformative groups), their statistics, greedy
//! held-out accuracy and the end-of-run pass@k.

use crate::config::TrainConfig;
use crate::data::{Prompt, Shuffler};
use crate::engine::Engine;
use crate::lm::{FinishReason, SamplingParams, Tokenizer};
use crate::metrics::{names, SampleRecord, StepMetrics};
use crate::reward::{self, Reward, RewardOut};
use crate::rollouts::{Rollout, RolloutBatch};
use crate::scored::{generate_scored, Draw, ScoredCompletion};
use anyhow::Result;
use popo_model::passk::PassAtK;

/// What the actor needs, borrowed from the trainer for one call.
pub struct Actor<'a> {
    pub cfg: &'a TrainConfig,
    /// popo's own sampler or the vLLM servers, on the policy's current weights.
    pub engine: &'a dyn Engine,
    pub tokenizer: &'a Tokenizer,
    pub reward: &'a dyn Reward,
    pub stop_ids: &'a [u32],
}

/// A step's scored rollouts.
pub struct Sampled {
    /// Grouped by prompt, in group order; completions with no token are left out.
    pub batch: RolloutBatch,
    /// Every completion, for samples.jsonl.
    pub records: Vec<SampleRecord>,
    /// Tokens generated, refills included.
    pub tokens: usize,
    /// Over the first draw, before any DAPO filtering.
    pub stats: RolloutStats,
    /// DAPO dynamic sampling: (extra draws, groups kept).
    pub refill: Option<(usize, usize)>,
}

/// Reward and length statistics of a set of rollouts (docs/algorithms.md, "Diagnostics").
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolloutStats {
    pub reward_mean: f64,
    pub positive_ratio: f64,
    /// Share of groups with no positive / with only positives.
    pub groups_no_positive: f64,
    pub groups_all_positive: f64,
    pub len_mean: f64,
    pub len_max: f64,
    pub truncated_ratio: f64,
}

impl Sampled {
    /// The step's rollout statistics and, with dynamic sampling, DAPO's refill counts.
    pub fn log(&self, m: &mut StepMetrics) {
        self.stats.log(m);
        if let Some((tries, kept)) = self.refill {
            m.set(names::DAPO_SAMPLING_TRIES, tries as f64);
            m.set(names::DAPO_GROUPS_KEPT, kept as f64);
        }
    }
}

impl RolloutStats {
    pub fn of(rs: &[Rollout], threshold: f64) -> Self {
        let n = rs.len().max(1) as f64;
        let groups = RolloutBatch {
            rollouts: rs.to_vec(),
        }
        .groups();
        let ng = groups.len().max(1) as f64;
        let pos = |i: &usize| rs[*i].reward > threshold;
        RolloutStats {
            reward_mean: rs.iter().map(|r| r.reward).sum::<f64>() / n,
            positive_ratio: rs.iter().filter(|r| r.reward > threshold).count() as f64 / n,
            groups_no_positive: groups.iter().filter(|g| !g.iter().any(pos)).count() as f64 / ng,
            groups_all_positive: groups.iter().filter(|g| g.iter().all(pos)).count() as f64 / ng,
            len_mean: rs.iter().map(|r| r.completion.len() as f64).sum::<f64>() / n,
            len_max: rs.iter().map(|r| r.completion.len()).max().unwrap_or(0) as f64,
            truncated_ratio: rs.iter().filter(|r| r.truncated).count() as f64 / n,
        }
    }

    pub fn log(&self, m: &mut StepMetrics) {
        m.set(names::REWARD_MEAN, self.reward_mean);
        m.set(names::POSITIVE_RATIO, self.positive_ratio);
        m.set(names::GROUPS_NO_POSITIVE, self.groups_no_positive);
        m.set(names::GROUPS_ALL_POSITIVE, self.groups_all_positive);
        m.set(names::RESPONSE_LEN_MEAN, self.len_mean);
        m.set(names::RESPONSE_LEN_MAX, self.len_max);
        m.set(names::TRUNCATED_RATIO, self.truncated_ratio);
    }
}

/// Groups whose rewards are not all equal: the only ones GRPO-style advantages learn from.
fn informative_groups(rollouts: Vec<Rollout>) -> Vec<Rollout> {
    let batch = RolloutBatch { rollouts };
    let keep: Vec<usize> = batch
        .groups()
        .iter()
        .filter(|g| {
            g.iter()
                .any(|&i| batch.rollouts[i].reward != batch.rollouts[g[0]].reward)
        })
        .map(|g| batch.rollouts[g[0]].group)
        .collect();
    let mut rollouts = batch.rollouts;
    rollouts.retain(|r| keep.contains(&r.group));
    rollouts
}

fn count_groups(rs: &[Rollout]) -> usize {
    let mut g: Vec<usize> = rs.iter().map(|r| r.group).collect();
    g.dedup();
    g.len()
}

impl Actor<'_> {
    /// The step's rollouts: `batch_prompts` prompts from `shuffler`, `group_size` samples each.
    /// With DAPO's dynamic sampling, groups whose rewards are all equal are dropped and more
    /// prompts are drawn (seeds from `refill_seed(try)`) until the batch is full again or the
    /// tries run out.
    pub fn sample_step(
        &self,
        train: &[Prompt],
        shuffler: &mut Shuffler,
        step: u64,
        seed: u64,
        refill_seed: impl Fn(u64) -> u64,
    ) -> Result<Sampled> {
        let b = self.cfg.rollout.batch_prompts;
        let draw = |shuffler: &mut Shuffler| -> Vec<Prompt> {
            shuffler
                .next_batch(b)
                .iter()
                .map(|&i| train[i].clone())
                .collect()
        };
        let (mut rollouts, mut records, mut tokens) =
            self.sample(&draw(shuffler), seed, 0, step)?;
        let stats = RolloutStats::of(&rollouts, self.cfg.reward.positive_threshold);
        let mut refill = None;
        if self.cfg.rollout.dynamic_sampling {
            rollouts = informative_groups(rollouts);
            let mut tries = 0;
            while count_groups(&rollouts) < b && tries < self.cfg.rollout.max_sampling_tries {
                tries += 1;
                let (more, rec, tok) =
                    self.sample(&draw(shuffler), refill_seed(tries as u64), tries * b, step)?;
                tokens += tok;
                records.extend(rec);
                rollouts.extend(informative_groups(more));
            }
            // Keep exactly B groups when more were drawn.
            let mut kept: Vec<usize> = rollouts.iter().map(|r| r.group).collect();
            kept.dedup();
            kept.truncate(b);
            rollouts.retain(|r| kept.contains(&r.group));
            refill = Some((tries, count_groups(&rollouts)));
        }
        Ok(Sampled {
            batch: RolloutBatch { rollouts },
            records,
            tokens,
            stats,
            refill,
        })
    }

    /// Samples `prompts` x G completions and scores them. Returns rollouts grouped by prompt
    /// (group ids from `group_offset`), their sample records and the tokens generated.
    fn sample(
        &self,
        prompts: &[Prompt],
        seed: u64,
        group_offset: usize,
        step: u64,
    ) -> Result<(Vec<Rollout>, Vec<SampleRecord>, usize)> {
        let r = &self.cfg.rollout;
        let params = SamplingParams {
            n: r.group_size,
            temperature: r.temperature,
            top_p: r.top_p,
            top_k: r.top_k,
            max_new_tokens: r.max_completion_len,
            stop_token_ids: self.stop_ids.to_vec(),
            seed,
            ..Default::default()
        };
        let rows = self.sample_scored(prompts, &params)?;
        let rw = &self.cfg.reward;
        let mut rollouts = Vec::with_capacity(rows.len());
        let mut records = Vec::with_capacity(rows.len());
        let mut tokens = 0;
        for ScoredCompletion {
            completion: c,
            text,
            score: s,
        } in rows
        {
            let truncated = c.finish_reason == FinishReason::Length;
            let mut reward = s.reward as f64;
            if rw.overlong_shaping {
                reward += reward::overlong_penalty(
                    c.tokens.len(),
                    r.max_completion_len,
                    rw.overlong_cache_len,
                    rw.overlong_penalty,
                );
            }
            tokens += c.tokens.len();
            let p = &prompts[c.prompt_index];
            records.push(SampleRecord {
                step,
                prompt_index: group_offset + c.prompt_index,
                sample_index: c.sample_index,
                prompt: p.text.clone(),
                completion: text,
                gold: p.answer.clone(),
                extracted: s.extracted,
                reward,
                correct: s.correct,
                num_tokens: c.tokens.len(),
                truncated,
            });
            // An empty completion (max_new_tokens = 0) carries no token to train on.
            if c.tokens.is_empty() {
                continue;
            }
            rollouts.push(Rollout {
                group: group_offset + c.prompt_index,
                prompt: p.ids.clone(),
                completion: c.tokens,
                sampler_logprobs: c.logprobs,
                reward,
                truncated,
            });
        }
        Ok((rollouts, records, tokens))
    }

    /// Greedy accuracy on held-out prompts (`reward.correct`, so format shaping does not count).
    pub fn evaluate(&self, eval: &[Prompt]) -> Result<f64> {
        let params = SamplingParams {
            n: 1,
            greedy: true,
            temperature: 1.0,
            ..self.eval_params()
        };
        // Batches as large as the sampler takes at once: decode cost is per step, not per row.
        let correct = self.count_correct(eval, &params, 256, |_| 0)?;
        Ok(correct.iter().sum::<usize>() as f64 / eval.len().max(1) as f64)
    }
    /// The end-of-run evaluation at `step`: greedy accuracy (`before` when the policy is the one
    /// already measured) and, with `n` > 0, pass@k and avg@n of `n` samples per problem.
    pub fn final_eval(
        &self,
        eval: &[Prompt],
        step: u64,
        before: Option<f64>,
        n: usize,
        seed: impl Fn(u64) -> u64,
    ) -> Result<crate::checkpoint::FinalEval> {
        let accuracy = match before {
            Some(acc) => Some(acc),
            None if eval.is_empty() => None,
            None => Some(self.evaluate(eval)?),
        };
        let problems = match self.cfg.run.pass_at_k_problems {
            0 => eval.len(),
            p => p.min(eval.len()),
        };
        let pass_at_k = if n > 0 && problems > 0 {
            Some(self.pass_at_k(&eval[..problems], n, seed)?)
        } else {
            None
        };
        Ok(crate::checkpoint::FinalEval {
            step,
            accuracy,
            pass_at_k,
        })
    }

    /// pass@k for k = 1, 2, 4, ..., n and avg@n on held-out prompts: `n` samples each at T = 1
    /// with no top-p / top-k truncation (the spec's evaluation temperature, whatever the rollouts
    /// use), call `i` of the sampler seeded `seed(i)`.
    pub fn pass_at_k(
        &self,
        eval: &[Prompt],
        n: usize,
        seed: impl Fn(u64) -> u64,
    ) -> Result<PassAtK> {
        let params = SamplingParams {
            n,
            temperature: 1.0,
            ..self.eval_params()
        };
        // As many rows per call as a training step samples: a batch the run is known to hold.
        let r = &self.cfg.rollout;
        let chunk = (r.batch_prompts * r.group_size / n.max(1)).max(1);
        let correct = self.count_correct(eval, &params, chunk, seed)?;
        Ok(PassAtK::from_counts(n, &correct))
    }

    /// What every held-out evaluation shares: the completion limit and the stop ids.
    fn eval_params(&self) -> SamplingParams {
        SamplingParams {
            max_new_tokens: self.cfg.rollout.max_completion_len,
            stop_token_ids: self.stop_ids.to_vec(),
            ..Default::default()
        }
    }

    /// Samples `params.n` completions of each prompt, `chunk` prompts per sampler call (call `i`
    /// seeded `seed(i)`), and counts the correct ones per prompt (`reward.correct`).
    fn count_correct(
        &self,
        eval: &[Prompt],
        params: &SamplingParams,
        chunk: usize,
        seed: impl Fn(u64) -> u64,
    ) -> Result<Vec<usize>> {
        let chunk = chunk.max(1);
        let mut correct = vec![0usize; eval.len()];
        for (i, prompts) in eval.chunks(chunk).enumerate() {
            let params = SamplingParams {
                seed: seed(i as u64),
                ..params.clone()
            };
            for row in self.sample_scored(prompts, &params)? {
                correct[i * chunk + row.completion.prompt_index] += row.score.correct as usize;
            }
        }
        Ok(correct)
    }

    /// `params.n` completions of each prompt from the engine, scored by the reward against the
    /// prompt's answer: grouped by prompt, in prompt order.
    fn sample_scored(
        &self,
        prompts: &[Prompt],
        params: &SamplingParams,
    ) -> Result<Vec<ScoredCompletion<RewardOut>>> {
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
        let golds: Vec<&str> = prompts.iter().map(|p| p.answer.as_str()).collect();
        let draw = Draw::Engine {
            engine: self.engine,
            prompts: &ids,
            params,
        };
        let mut rows = Vec::with_capacity(ids.len() * params.n);
        generate_scored(
            draw,
            self.tokenizer,
            &golds,
            &|text, gold| self.reward.score(text, gold),
            &mut |_, group| {
                rows.extend(group);
                Ok(())
            },
        )?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(group: usize, reward: f64) -> Rollout {
        Rollout {
            group,
            prompt: vec![1],
            completion: vec![2, 3],
            sampler_logprobs: vec![-1.0, -1.0],
            reward,
            truncated: group == 2,
        }
    }

    #[test]
    fn stats_count_groups_and_lengths() {
        let rs = vec![mk(0, 1.0), mk(0, 0.0), mk(1, 1.0), mk(1, 1.0), mk(2, 0.0)];
        let s = RolloutStats::of(&rs, 0.0);
        assert_eq!(s.reward_mean, 0.6);
        assert_eq!(s.positive_ratio, 0.6);
        assert!((s.groups_no_positive - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.groups_all_positive - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!((s.len_mean, s.len_max), (2.0, 2.0));
        assert_eq!(s.truncated_ratio, 0.2);
    }

    #[test]
    fn only_groups_with_different_rewards_are_informative() {
        let rs = vec![mk(0, 1.0), mk(0, 0.0), mk(1, 1.0), mk(1, 1.0), mk(2, 0.0)];
        let kept = informative_groups(rs);
        assert_eq!(kept.iter().map(|r| r.group).collect::<Vec<_>>(), [0, 0]);
        assert_eq!(count_groups(&kept), 1);
    }
}
