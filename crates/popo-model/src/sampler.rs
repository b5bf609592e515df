//! Rollout engine: batched sampling with a KV cache.
//!
//! Prompts are left-padded to one length and prefilled (in row chunks that bound attention memory);
//! the `n` samples of a prompt then share that prefill by duplicating its cache rows. Every decode
//! step runs the rows of the batch; a finished row stays in it, masked and ignored, until at
//! least a quarter of the batch has finished, and then all finished rows leave in one compaction
//! (one batched row selection per cache tensor) instead of a copy of the whole cache each time a
//! row ends. Each row draws from its own RNG seeded by (seed, prompt, sample), so results do not
//! depend on batch composition.
//!
//! Tokens are chosen on the logits' device (`device::sample_rows`) for greedy rows and for plain
//! temperature sampling: only the chosen ids, their log-probs and about 2 sqrt(vocab) floats per
//! row reach the host, not the `[rows, vocab]` logits. top-k, top-p and min-p keep the host
//! sampler (`sample_token`), which copies the logits.
//!
//! `generate` decodes all its rows as one batch (the trainer's rollouts). `generate_requests` is
//! continuous batching for long lists of prompts (`popo eval`): at most `max_rows` rows decode at
//! once, and waiting prompts join the running batch as rows finish. Each request carries its own
//! seed, so its samples are the same whatever else is in the batch.

mod decode;
mod device;
mod host;
mod request;
mod stats;

pub use device::{block_size, sample_rows, Filter, Pick};
pub use host::sample_token;
pub use request::{Completion, FinishReason, Request, SamplingParams};
pub use stats::{decode_stats, with_host_sampling, DecodeStats};

use crate::model::Model;
use crate::tokenizer::Tokenizer;
use anyhow::{ensure, Result};
use decode::run;
use request::PROMPT_STRIDE;

/// Results ordered by (prompt_index, sample_index); prompts.len() * n of them. Same seed -> same tokens.
/// Stop strings need the tokenizer (decode); pass None otherwise.
pub fn generate(
    model: &Model,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    tokenizer: Option<&Tokenizer>,
) -> Result<Vec<Completion>> {
    generate_with_progress(model, prompts, params, tokenizer, &mut |_| {})
}

/// `generate`, calling `on_done(k)` whenever k more sequences finish.
///
/// All rows decode as one batch: prompt `p` is the request `(prompts[p], params.n, seed_p)` with
/// `seed_p = params.seed + p * 0x9E37_79B9_7F4A_7C15` (wrapping), whose sample `s` thus draws from
/// the stream seeded `row_seed(params.seed, p, s)`.
pub fn generate_with_progress(
    model: &Model,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    tokenizer: Option<&Tokenizer>,
    on_done: &mut dyn FnMut(usize),
) -> Result<Vec<Completion>> {
    ensure!(params.n >= 1, "n must be at least 1");
    let n = params.n;
    let requests: Vec<Request> = prompts
        .iter()
        .enumerate()
        .map(|(p, prompt)| Request {
            prompt: prompt.clone(),
            n,
            seed: params
                .seed
                .wrapping_add((p as u64).wrapping_mul(PROMPT_STRIDE)),
            greedy_row: false,
        })
        .collect();
    let mut out: Vec<Option<Completion>> = vec![None; prompts.len() * n];
    // Every row at once, in prompt order: exactly the batch this function always decoded, so
    // existing runs (the trainer's rollouts) reproduce bit for bit.
    let order: Vec<usize> = (0..requests.len()).collect();
    run(
        model,
        &requests,
        &order,
        params,
        tokenizer,
        usize::MAX,
        params.max_new_tokens,
        &mut |c| {
            let slot = c.prompt_index * n + c.sample_index;
            out[slot] = Some(c);
            on_done(1);
            Ok(())
        },
    )?;
    Ok(out
        .into_iter()
        .map(|c| c.expect("the engine finishes every row"))
        .collect())
}

/// `generate` with the prompts cut into `parts` contiguous runs, each decoded on its own thread.
/// For a CPU whose ops each run on one core (the trainer's micro-batch mode), where one batch
/// leaves the other cores idle. Every prompt keeps the seeds it has in one `generate` call, but a
/// row's floats can differ in the last bits (its prompt is left-padded to another length), so
/// results depend on `parts`: callers fix it, never derive it from the core count.
pub fn generate_parts(
    model: &Model,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    tokenizer: Option<&Tokenizer>,
    parts: usize,
) -> Result<Vec<Completion>> {
    let parts = parts.clamp(1, prompts.len().max(1));
    if parts == 1 {
        return generate(model, prompts, params, tokenizer);
    }
    let chunk = prompts.len().div_ceil(parts);
    let results: Vec<Result<Vec<Completion>>> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .chunks(chunk)
            .enumerate()
            .map(|(k, part)| {
                let first = k * chunk;
                let params = SamplingParams {
                    seed: params
                        .seed
                        .wrapping_add((first as u64).wrapping_mul(PROMPT_STRIDE)),
                    ..params.clone()
                };
                s.spawn(move || -> Result<Vec<Completion>> {
                    let mut out = generate(model, part, &params, tokenizer)?;
                    for c in &mut out {
                        c.prompt_index += first;
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a generation thread panicked")))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(prompts.len() * params.n);
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

/// Continuous batching over many requests, at most `max_rows` rows decoding at once.
///
/// Requests are admitted longest prompt first, so that prompts prefilled together have similar
/// lengths (little padding) and the longest caches are allocated early. Once an eighth of
/// `max_rows` is free (or every waiting row fits) the finished rows leave the batch and the next
/// waiting rows join it: their prompts are prefilled together and their caches merged with
/// the running one (`KvCache::merge`). The batch therefore stays full until the queue runs dry,
/// instead of draining down to its longest completion as separate batches would. A request's rows
/// may be split across admissions when they do not fit at once (each part prefills the prompt).
///
/// `on_finish` receives each row as it finishes (in no particular order); its `prompt_index`
/// indexes `requests`. `params.n` and `params.seed` are not used: requests carry their own.
///
/// A row's random stream does not depend on the batch, and neither does its arithmetic beyond
/// float rounding (padding and batch shape change how long dot products are split), so tokens
/// equal those of one-request-at-a-time calls unless two candidates tie within rounding, and
/// log-probs agree to rounding (the tests allow 1e-4).
pub fn generate_requests(
    model: &Model,
    requests: &[Request],
    params: &SamplingParams,
    tokenizer: Option<&Tokenizer>,
    max_rows: usize,
    on_finish: &mut dyn FnMut(Completion) -> Result<()>,
) -> Result<()> {
    ensure!(max_rows >= 1, "the batch needs room for at least one row");
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&q| std::cmp::Reverse(requests[q].prompt.len()));
    // Reserving `max_new_tokens` slots for every row, as `generate` does, would multiply memory
    // when completions may be long (4096 tokens by default in `popo eval`) and most are not: a
    // little room, then the cache doubles when it must.
    let headroom = params.max_new_tokens.min(64);
    run(
        model, requests, &order, params, tokenizer, max_rows, headroom, on_finish,
    )
}
