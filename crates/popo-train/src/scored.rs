//! Sampling then scoring, written once: a step's rollouts and the trainer's held-out evaluations
//! (`rollout.rs`) and `popo eval` (popo-eval's `bench.rs`) all go through [`generate_scored`].
//!
//! The callers differ in two things, which stay theirs: how completions are drawn ([`Draw`]: one
//! engine call seeded once in training, continuous batching with a seed per problem in `popo
//! eval`, so that each keeps its seeds and samples) and the rule that scores a completion (the
//! configured [`crate::reward::Reward`] in training, the verifier's verdict with its reason in
//! `popo eval`). Decoding, pairing each completion with its prompt's gold answer, scoring in
//! parallel and handing the rows over prompt by prompt are here.

use crate::engine::Engine;
use crate::lm::{generate_requests, Completion, Model, Request, SamplingParams, Tokenizer};
use anyhow::Result;
use rayon::prelude::*;

/// Where the completions come from.
pub enum Draw<'a> {
    /// One `Engine::generate` call: `params.n` samples of every prompt, the call seeded by
    /// `params.seed` (a step's rollouts, a chunk of a held-out evaluation).
    Engine {
        engine: &'a dyn Engine,
        prompts: &'a [Vec<u32>],
        params: &'a SamplingParams,
    },
    /// Continuous batching over requests, each seeded on its own, at most `max_rows` rows
    /// decoding at once, prompts finishing in any order (`popo_model::generate_requests`).
    Requests {
        model: &'a Model,
        requests: &'a [Request],
        params: &'a SamplingParams,
        max_rows: usize,
    },
}

/// One completion with its decoded text and its score.
#[derive(Debug, Clone)]
pub struct ScoredCompletion<S> {
    pub completion: Completion,
    pub text: String,
    pub score: S,
}

/// Draws completions, decodes each (special tokens skipped) and scores it with
/// `score(text, gold)`, `gold` being `golds[prompt_index]`. Each prompt's rows, in sample order,
/// go to `on_prompt(prompt_index, rows)` once the prompt has them all: in prompt order from an
/// engine, as prompts finish from requests. An error from `on_prompt` ends the draw.
pub fn generate_scored<S: Send>(
    draw: Draw<'_>,
    tokenizer: &Tokenizer,
    golds: &[&str],
    score: &(dyn Fn(&str, &str) -> S + Sync),
    on_prompt: &mut dyn FnMut(usize, Vec<ScoredCompletion<S>>) -> Result<()>,
) -> Result<()> {
    match draw {
        Draw::Engine {
            engine,
            prompts,
            params,
        } => {
            let comps = engine.generate(prompts, params)?;
            // An engine returns its rows grouped by prompt, in prompt order.
            let mut rows = score_rows(comps, tokenizer, golds, score)?
                .into_iter()
                .peekable();
            while let Some(first) = rows.next() {
                let p = first.completion.prompt_index;
                let mut group = vec![first];
                while let Some(next) = rows.next_if(|r| r.completion.prompt_index == p) {
                    group.push(next);
                }
                on_prompt(p, group)?;
            }
            Ok(())
        }
        Draw::Requests {
            model,
            requests,
            params,
            max_rows,
        } => {
            let mut waiting: Vec<Vec<Option<Completion>>> = vec![Vec::new(); requests.len()];
            let mut on_finish = |c: Completion| -> Result<()> {
                let p = c.prompt_index;
                let rows = &mut waiting[p];
                if rows.is_empty() {
                    rows.resize(requests[p].n + requests[p].greedy_row as usize, None);
                }
                let s = c.sample_index;
                rows[s] = Some(c);
                if rows.iter().any(Option::is_none) {
                    return Ok(());
                }
                let comps = std::mem::take(rows).into_iter().flatten().collect();
                on_prompt(p, score_rows(comps, tokenizer, golds, score)?)
            };
            generate_requests(
                model,
                requests,
                params,
                Some(tokenizer),
                max_rows,
                &mut on_finish,
            )
        }
    }
}

/// Decodes every completion, then scores them side by side (rayon), in input order.
fn score_rows<S: Send>(
    comps: Vec<Completion>,
    tokenizer: &Tokenizer,
    golds: &[&str],
    score: &(dyn Fn(&str, &str) -> S + Sync),
) -> Result<Vec<ScoredCompletion<S>>> {
    let texts: Vec<String> = comps
        .iter()
        .map(|c| tokenizer.decode(&c.tokens, true))
        .collect::<Result<_>>()?;
    let scores: Vec<S> = comps
        .par_iter()
        .zip(texts.par_iter())
        .map(|(c, text)| score(text, golds[c.prompt_index]))
        .collect();
    Ok(comps
        .into_iter()
        .zip(texts)
        .zip(scores)
        .map(|((completion, text), score)| ScoredCompletion {
            completion,
            text,
            score,
        })
        .collect())
}
