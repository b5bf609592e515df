//! Rollout engine: batched sampling with a KV cache.
//!
//! Prompts are left-padded to one length and prefilled (in row chunks that bound attention memory);
//! the `n` samples of a prompt then share that prefill by duplicating its cache rows. Every decode
//! step runs only the rows still active: a finished row leaves the batch and its cache rows are
//! dropped. Each row draws from its own RNG seeded by (seed, prompt, sample), so results do not
//! depend on batch composition.
//!
//! `generate` decodes all its rows as one batch (the trainer's rollouts). `generate_requests` is
//! continuous batching for long lists of prompts (`popo eval`): at most `max_rows` rows decode at
//! once, and waiting prompts join the running batch as rows finish. Each request carries its own
//! seed, so its samples are the same whatever else is in the batch.

use crate::model::{KvCache, Model};
use crate::tokenizer::Tokenizer;
use anyhow::{bail, ensure, Result};
use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Samples per prompt.
    pub n: usize,
    /// Softmax temperature; 0 means greedy.
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1 = off.
    pub top_p: f64,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Drop tokens with probability below min_p * max probability; 0 = off.
    pub min_p: f64,
    pub max_new_tokens: usize,
    /// A sampled id in this list ends the sequence (it is kept in `tokens`). Pass the EOS ids here.
    pub stop_token_ids: Vec<u32>,
    /// Decoded text containing one of these ends the sequence (needs a tokenizer).
    pub stop_strings: Vec<String>,
    /// Argmax decoding (ties go to the lowest id).
    pub greedy: bool,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            n: 1,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            max_new_tokens: 256,
            stop_token_ids: vec![],
            stop_strings: vec![],
            greedy: false,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    Stop,
    Length,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub prompt_index: usize,
    pub sample_index: usize,
    /// Includes the stop token when one was hit.
    pub tokens: Vec<u32>,
    /// Sampler log-probs, one per token: log softmax(logits / temperature) of the chosen token,
    /// before top-k/top-p/min-p truncation (temperature 1 in greedy mode). This is what
    /// `forward_train(.., temperature)` computes for the same tokens.
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
}

/// Attention scores of one prefill chunk are bounded to about this many elements.
const PREFILL_SCORE_ELEMS: usize = 1 << 27;

/// One prompt of a `generate_requests` call and the rows it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub prompt: Vec<u32>,
    /// Rows drawn with the call's `SamplingParams`.
    pub n: usize,
    /// Sample `s` draws from the RNG stream that sample `s` of a one-prompt `generate` call with
    /// this seed uses, so a request's samples depend on its prompt and seed only, not on the
    /// other requests, the batch size or the order of admission (up to float rounding: see
    /// `generate_requests`).
    pub seed: u64,
    /// One more row, decoded greedily whatever the parameters say, with `sample_index` `n`. It
    /// shares the prompt's prefill with the `n` samples.
    pub greedy_row: bool,
}

impl Request {
    fn rows(&self) -> usize {
        self.n + self.greedy_row as usize
    }
}

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

/// Continuous batching over many requests, at most `max_rows` rows decoding at once.
///
/// Requests are admitted longest prompt first, so that prompts prefilled together have similar
/// lengths (little padding) and the longest caches are allocated early. Whenever rows finish they
/// leave the batch, and once an eighth of `max_rows` is free (or every waiting row fits) the next
/// waiting rows join it: their prompts are prefilled together and their caches merged with the
/// running one (`KvCache::merge`). The batch therefore stays full until the queue runs dry,
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

/// Seed offset between consecutive prompts of a `generate` call (see `row_seed`).
const PROMPT_STRIDE: u64 = 0x9E37_79B9_7F4A_7C15;

/// A row in the decode batch.
struct Row {
    out: Completion,
    rng: StdRng,
    greedy: bool,
    prompt_len: usize,
}

/// The engine behind `generate` and `generate_requests`: admits the rows of `requests` in
/// `order`, at most `max_rows` at a time; after each admission the cache has room for `headroom`
/// more slots before it must grow.
#[allow(clippy::too_many_arguments)]
fn run(
    model: &Model,
    requests: &[Request],
    order: &[usize],
    params: &SamplingParams,
    tokenizer: Option<&Tokenizer>,
    max_rows: usize,
    headroom: usize,
    on_finish: &mut dyn FnMut(Completion) -> Result<()>,
) -> Result<()> {
    validate(model, requests, params, tokenizer)?;
    let empty = |q: usize, s: usize| Completion {
        prompt_index: q,
        sample_index: s,
        tokens: vec![],
        logprobs: vec![],
        finish_reason: FinishReason::Length,
    };
    if params.max_new_tokens == 0 {
        for &q in order {
            for s in 0..requests[q].rows() {
                on_finish(empty(q, s))?;
            }
        }
        return Ok(());
    }
    let model = model.detached();
    let max_pos = model.config().max_position_embeddings;
    let greedy_params = SamplingParams {
        greedy: true,
        ..params.clone()
    };
    let stop_window = params
        .stop_strings
        .iter()
        .map(|s| s.len())
        .max()
        .unwrap_or(0)
        + 2;
    // Waiting rows, in admission order: (request, sample).
    let mut queue = order
        .iter()
        .flat_map(|&q| (0..requests[q].rows()).map(move |s| (q, s)));
    let mut waiting: usize = order.iter().map(|&q| requests[q].rows()).sum();
    // Admitting costs a prefill and a copy of the cache, so rows join in groups.
    let refill_at = (max_rows / 8).max(1);

    let mut cache: Option<KvCache> = None;
    let mut rows: Vec<Row> = Vec::new();
    let mut logits: Vec<Vec<f32>> = Vec::new();
    loop {
        let free = max_rows.saturating_sub(rows.len());
        if waiting > 0 && free > 0 && (rows.is_empty() || free >= refill_at || waiting <= free) {
            let take = free.min(waiting);
            waiting -= take;
            // Consecutive rows of one request share a prefill.
            let mut prompts: Vec<usize> = Vec::new();
            let mut repeat: Vec<u32> = Vec::with_capacity(take);
            for (q, s) in queue.by_ref().take(take) {
                if prompts.last() != Some(&q) {
                    prompts.push(q);
                }
                repeat.push((prompts.len() - 1) as u32);
                let r = &requests[q];
                let greedy = s == r.n;
                rows.push(Row {
                    out: empty(q, s),
                    rng: StdRng::seed_from_u64(row_seed(r.seed, 0, s)),
                    greedy,
                    prompt_len: r.prompt.len(),
                });
            }
            let group: Vec<&[u32]> = prompts.iter().map(|&q| &requests[q].prompt[..]).collect();
            let max_len = group.iter().map(|p| p.len()).max().unwrap_or(0);
            let (fresh, first_logits) = prefill(&model, &group, max_len)?;
            let mut fresh = fresh.select_rows(&repeat)?;
            logits.extend(repeat.iter().map(|&p| first_logits[p as usize].clone()));
            cache = Some(match cache.take() {
                None => {
                    fresh.reserve(max_len + headroom)?;
                    fresh
                }
                Some(running) => KvCache::merge(&[running, fresh], headroom)?,
            });
        }
        if rows.is_empty() {
            return Ok(()); // nothing running and nothing waiting
        }

        // Rows are independent (own RNG), so they are drawn in parallel: with a 150k vocabulary
        // the softmax over each row dominates a CPU decode step otherwise.
        let drawn: Vec<(u32, f32, StdRng)> = rows
            .par_iter()
            .zip(logits.par_iter())
            .map(|(row, l)| {
                let mut rng = row.rng.clone();
                let p = if row.greedy { &greedy_params } else { params };
                let (tok, lp) = sample_token(l, p, &mut rng);
                (tok, lp, rng)
            })
            .collect();
        let mut keep = Vec::with_capacity(rows.len());
        let mut next = Vec::with_capacity(rows.len());
        let mut finished = Vec::new();
        for (i, (row, (tok, lp, rng))) in rows.iter_mut().zip(drawn).enumerate() {
            row.rng = rng;
            let c = &mut row.out;
            c.tokens.push(tok);
            c.logprobs.push(lp);
            let stopped = params.stop_token_ids.contains(&tok)
                || hits_stop_string(c, params, tokenizer, stop_window)?;
            if stopped {
                c.finish_reason = FinishReason::Stop;
                finished.push(i);
            } else if c.tokens.len() >= params.max_new_tokens
                || row.prompt_len + c.tokens.len() >= max_pos
            {
                c.finish_reason = FinishReason::Length;
                finished.push(i);
            } else {
                keep.push(i as u32);
                next.push(tok);
            }
        }
        if !finished.is_empty() {
            let mut old: Vec<Option<Row>> =
                std::mem::take(&mut rows).into_iter().map(Some).collect();
            for &i in &finished {
                on_finish(old[i].take().expect("a row finishes once").out)?;
            }
            rows = keep
                .iter()
                .map(|&i| old[i as usize].take().expect("a row is kept once"))
                .collect();
            // Finished rows leave the batch (and their cache rows are dropped).
            cache = match cache.take() {
                Some(kv) if !keep.is_empty() => Some(kv.select_rows(&keep)?),
                _ => None,
            };
        }
        let Some(kv) = cache.as_mut() else {
            logits.clear();
            continue; // the batch is empty: admit the next rows, if any
        };
        let a = rows.len();
        let ids = Tensor::from_vec(next, (a, 1), model.device())?;
        let hidden = model.forward_cached(&ids, &vec![vec![1u8]; a], kv)?; // [a, 1, d]
        logits = logits_to_host(&model, &hidden)?;
    }
}

fn validate(
    model: &Model,
    requests: &[Request],
    params: &SamplingParams,
    tokenizer: Option<&Tokenizer>,
) -> Result<()> {
    ensure!(
        params.temperature >= 0.0 && params.temperature.is_finite(),
        "temperature must be >= 0, got {}",
        params.temperature
    );
    ensure!(
        params.top_p > 0.0 && params.top_p <= 1.0,
        "top_p must be in (0, 1], got {}",
        params.top_p
    );
    ensure!(
        (0.0..1.0).contains(&params.min_p),
        "min_p must be in [0, 1), got {}",
        params.min_p
    );
    if !params.stop_strings.is_empty() && tokenizer.is_none() {
        bail!("stop strings need a tokenizer");
    }
    let cfg = model.config();
    for (i, r) in requests.iter().enumerate() {
        let p = &r.prompt;
        ensure!(
            r.rows() > 0,
            "prompt {i} asks for no rows (n = 0 and no greedy row)"
        );
        ensure!(!p.is_empty(), "prompt {i} is empty");
        if p.len() >= cfg.max_position_embeddings {
            bail!(
                "prompt {i} has {} tokens, more than max_position_embeddings ({}) allows",
                p.len(),
                cfg.max_position_embeddings
            );
        }
        if let Some(&bad) = p.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            bail!(
                "prompt {i}: token id {bad} is out of range for vocab_size {}",
                cfg.vocab_size
            );
        }
    }
    Ok(())
}

fn row_seed(seed: u64, prompt: usize, sample: usize) -> u64 {
    // splitmix64 finaliser over the three numbers
    let mut z = seed
        .wrapping_add((prompt as u64).wrapping_mul(PROMPT_STRIDE))
        .wrapping_add((sample as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Left-pads all prompts to `max_len` and runs them through the model in chunks; returns one
/// cache over all prompts and each prompt's next-token logits.
fn prefill(model: &Model, prompts: &[&[u32]], max_len: usize) -> Result<(KvCache, Vec<Vec<f32>>)> {
    let heads = model.config().num_attention_heads;
    let per_row = heads * max_len * max_len;
    let chunk = (PREFILL_SCORE_ELEMS / per_row.max(1)).max(1);
    let mut caches = Vec::new();
    let mut logits = Vec::with_capacity(prompts.len());
    for group in prompts.chunks(chunk) {
        let b = group.len();
        let mut ids = Vec::with_capacity(b * max_len);
        let mut mask = Vec::with_capacity(b);
        for p in group {
            let pad = max_len - p.len();
            ids.extend(std::iter::repeat_n(0u32, pad));
            ids.extend_from_slice(p);
            let mut m = vec![0u8; pad];
            m.extend(std::iter::repeat_n(1u8, p.len()));
            mask.push(m);
        }
        let ids = Tensor::from_vec(ids, (b, max_len), model.device())?;
        let mut cache = model.new_cache(b, max_len)?;
        let hidden = model.forward_cached(&ids, &mask, &mut cache)?; // [b, max_len, d]
        let last = hidden.narrow(1, max_len - 1, 1)?; // [b, 1, d]
        logits.extend(logits_to_host(model, &last)?);
        caches.push(cache);
    }
    Ok((KvCache::cat(&caches)?, logits))
}

/// Last-position hidden states [a, 1, d] -> host f32 logits, one Vec per row.
fn logits_to_host(model: &Model, hidden: &Tensor) -> Result<Vec<Vec<f32>>> {
    let a = hidden.dim(0)?;
    let logits = model
        .lm_head(&hidden.reshape((a, hidden.dim(2)?))?)?
        .to_dtype(DType::F32)?; // [a, vocab]
    Ok(logits.to_vec2::<f32>()?)
}

fn hits_stop_string(
    c: &Completion,
    params: &SamplingParams,
    tokenizer: Option<&Tokenizer>,
    window: usize,
) -> Result<bool> {
    if params.stop_strings.is_empty() {
        return Ok(false);
    }
    let Some(tok) = tokenizer else {
        return Ok(false);
    };
    // Every token decodes to at least one byte, so the last `window` tokens cover any stop string
    // that ends in the newest token; earlier occurrences would already have stopped the row.
    let start = c.tokens.len().saturating_sub(window);
    let text = tok.decode(&c.tokens[start..], false)?;
    Ok(params
        .stop_strings
        .iter()
        .any(|s| text.contains(s.as_str())))
}

/// Draws one token from `logits` [vocab]; returns it with its log-prob (see `Completion::logprobs`).
pub fn sample_token(logits: &[f32], params: &SamplingParams, rng: &mut impl Rng) -> (u32, f32) {
    let greedy = params.greedy || params.temperature == 0.0;
    if greedy {
        // One pass for the argmax, one for logsumexp; no per-row allocation.
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        let max = logits[best];
        let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
        return (best as u32, -(sum.ln()) as f32);
    }
    let temp = params.temperature;
    let z: Vec<f64> = logits.iter().map(|&x| x as f64 / temp).collect();
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = z.iter().map(|&x| (x - max).exp()).sum();
    let lse = max + sum.ln();
    let probs: Vec<f64> = z.iter().map(|&x| (x - lse).exp()).collect();
    let filtered = params.top_k > 0 || params.top_p < 1.0 || params.min_p > 0.0;
    let tok = if !filtered {
        draw(rng, probs.iter().cloned().enumerate())
    } else {
        let pmax = (max - lse).exp();
        // Tokens below this mass cut can never be inside the nucleus: all of them together hold
        // less than 1 - top_p, so skipping them before sorting is exact.
        let mut cut = params.min_p * pmax;
        if params.top_p < 1.0 {
            cut = cut.max(0.5 * (1.0 - params.top_p) / probs.len() as f64);
        }
        let mut cand: Vec<(usize, f64)> = probs
            .iter()
            .cloned()
            .enumerate()
            .filter(|&(_, p)| p >= cut)
            .collect();
        if params.top_k > 0 && cand.len() > params.top_k {
            cand.select_nth_unstable_by(params.top_k - 1, |a, b| {
                b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
            });
            cand.truncate(params.top_k);
        }
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if params.top_p < 1.0 {
            let total: f64 = cand.iter().map(|c| c.1).sum();
            let mut acc = 0.0;
            let mut keep = cand.len();
            for (i, c) in cand.iter().enumerate() {
                acc += c.1;
                if acc >= params.top_p * total {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep);
        }
        draw(rng, cand.into_iter())
    };
    (tok as u32, (z[tok] - lse) as f32)
}

/// Inverse-CDF draw from unnormalised weights.
fn draw(rng: &mut impl Rng, weights: impl Iterator<Item = (usize, f64)> + Clone) -> usize {
    let total: f64 = weights.clone().map(|w| w.1).sum();
    let mut u = rng.random::<f64>() * total;
    let mut last = 0;
    for (i, w) in weights {
        if w <= 0.0 {
            continue;
        }
        last = i;
        if u < w {
            return i;
        }
        u -= w;
    }
    last
}
