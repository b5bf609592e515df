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

mod device;
mod stats;

pub use device::{block_size, sample_rows, Filter, Pick};
pub use stats::{decode_stats, with_host_sampling, DecodeStats};

use device::inverse_cdf;
use stats::{count, host_only, note_host_bytes};

use crate::model::{KvCache, Model};
use crate::tokenizer::Tokenizer;
use anyhow::{bail, ensure, Context, Result};
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

impl SamplingParams {
    /// The top-k / top-p / min-p part, which the host and the device sampler both apply.
    pub fn filter(&self) -> Filter {
        Filter {
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
        }
    }
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

/// Seed offset between consecutive prompts of a `generate` call (see `row_seed`).
const PROMPT_STRIDE: u64 = 0x9E37_79B9_7F4A_7C15;

/// A row in the decode batch.
struct Row {
    out: Completion,
    rng: StdRng,
    greedy: bool,
    prompt_len: usize,
}

/// Finished rows stay in the batch until they are at least this fraction (1 / `COMPACT_EVERY`)
/// of it. Compacting copies the whole cache once; keeping a finished row costs its share of each
/// step (on a GPU, near nothing: a decode step costs about the same for any number of rows up to
/// a few hundred). Compactions happen about log_{4/3}(rows) times per batch instead of once per
/// step in which a row ends, and a finished row never costs more than a third of a step's work.
const COMPACT_EVERY: usize = 4;

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
    // Weights are fixed for the length of a call, so the decoding copies stay current.
    let model = model.for_decoding()?;
    let dev = model.device().clone();
    let max_pos = model.config().max_position_embeddings;
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

    // The batch: one slot per cache row, `None` once its row has finished (until compaction).
    let mut cache: Option<KvCache> = None;
    let mut slots: Vec<Option<Row>> = Vec::new();
    let mut live = 0usize;
    let mut logits: Option<Tensor> = None; // [slots, vocab]: each slot's next-token logits
    loop {
        let free = max_rows.saturating_sub(live);
        if waiting > 0 && free > 0 && (live == 0 || free >= refill_at || waiting <= free) {
            // Finished rows leave before new ones join, so the batch never exceeds `max_rows`.
            if live < slots.len() {
                compact(&mut slots, &mut cache, &mut logits)?;
            }
            let take = free.min(waiting);
            waiting -= take;
            live += take;
            // Consecutive rows of one request share a prefill.
            let mut prompts: Vec<usize> = Vec::new();
            let mut repeat: Vec<u32> = Vec::with_capacity(take);
            for (q, s) in queue.by_ref().take(take) {
                if prompts.last() != Some(&q) {
                    prompts.push(q);
                }
                repeat.push((prompts.len() - 1) as u32);
                let r = &requests[q];
                slots.push(Some(Row {
                    out: empty(q, s),
                    rng: StdRng::seed_from_u64(row_seed(r.seed, 0, s)),
                    greedy: s == r.n || params.greedy || params.temperature == 0.0,
                    prompt_len: r.prompt.len(),
                }));
            }
            let group: Vec<&[u32]> = prompts.iter().map(|&q| &requests[q].prompt[..]).collect();
            let max_len = group.iter().map(|p| p.len()).max().unwrap_or(0);
            let (fresh, first_logits) = prefill(&model, &group, max_len)?;
            let mut fresh = fresh.select_rows(&repeat)?;
            let first = first_logits.index_select(&Tensor::new(repeat.as_slice(), &dev)?, 0)?;
            logits = Some(match logits.take() {
                None => first,
                Some(running) => Tensor::cat(&[&running, &first], 0)?,
            });
            cache = Some(match cache.take() {
                None => {
                    fresh.reserve(max_len + headroom)?;
                    fresh
                }
                Some(running) => KvCache::merge(&[running, fresh], headroom)?,
            });
        }
        if live == 0 {
            return Ok(()); // nothing running and nothing waiting
        }

        let step_logits = logits.as_ref().context("no logits for a running batch")?;
        let drawn = choose_tokens(step_logits, &mut slots, params)?;
        for (slot, drawn) in slots.iter_mut().zip(drawn) {
            let Some(row) = slot.as_mut() else {
                continue;
            };
            let (tok, lp) = drawn.context("a running row drew no token")?;
            let c = &mut row.out;
            c.tokens.push(tok);
            c.logprobs.push(lp);
            let stopped = params.stop_token_ids.contains(&tok)
                || hits_stop_string(c, params, tokenizer, stop_window)?;
            let full = c.tokens.len() >= params.max_new_tokens
                || row.prompt_len + c.tokens.len() >= max_pos;
            if stopped || full {
                c.finish_reason = if stopped {
                    FinishReason::Stop
                } else {
                    FinishReason::Length
                };
                live -= 1;
                if let Some(done) = slot.take() {
                    on_finish(done.out)?;
                }
            }
        }
        if live == 0 {
            // The batch is empty: admit the next rows, if any.
            slots.clear();
            cache = None;
            logits = None;
            continue;
        }
        let finished = slots.len() - live;
        if finished > 0 && finished * COMPACT_EVERY >= slots.len() {
            compact(&mut slots, &mut cache, &mut None)?;
        }
        let kv = cache.as_mut().context("no cache for a running batch")?;
        // Finished rows get a masked dummy token: their cache row only grows by a slot that no
        // attention reads, and their position does not move (it may sit at the model's limit).
        let (next, mask): (Vec<u32>, Vec<Vec<u8>>) = slots
            .iter()
            .map(|s| match s.as_ref().and_then(|row| row.out.tokens.last()) {
                Some(&tok) => (tok, vec![1u8]),
                None => (0, vec![0u8]),
            })
            .unzip();
        let a = slots.len();
        let ids = Tensor::from_vec(next, (a, 1), &dev)?;
        let hidden = model.forward_cached(&ids, &mask, kv)?; // [a, 1, d]
        logits = Some(last_logits(&model, &hidden)?);
    }
}

/// Drops the finished slots from the batch, its cache and (when given) its logits, with one row
/// selection per tensor.
fn compact(
    slots: &mut Vec<Option<Row>>,
    cache: &mut Option<KvCache>,
    logits: &mut Option<Tensor>,
) -> Result<()> {
    let keep: Vec<u32> = (0..slots.len() as u32)
        .filter(|&i| slots[i as usize].is_some())
        .collect();
    slots.retain(Option::is_some);
    if let Some(kv) = cache.take() {
        let kept = kv.select_rows(&keep)?;
        count(|s| {
            s.kv_compactions += 1;
            s.kv_bytes_copied += kept.bytes() as u64;
        });
        *cache = Some(kept);
    }
    if let Some(l) = logits.take() {
        let idx = Tensor::new(keep.as_slice(), l.device())?;
        *logits = Some(l.index_select(&idx, 0)?);
    }
    Ok(())
}

/// Each live slot's next token and log-prob (`None` for finished slots), from `logits`
/// [slots, vocab]. Draws advance each sampled row's RNG by one uniform, on either path.
fn choose_tokens(
    logits: &Tensor,
    slots: &mut [Option<Row>],
    params: &SamplingParams,
) -> Result<Vec<Option<(u32, f32)>>> {
    count(|s| s.steps += 1);
    let filter = params.filter();
    let all_greedy = slots.iter().flatten().all(|r| r.greedy);
    // A filter on the device costs more arithmetic than the host sort (device.rs), which pays
    // off only where the logits would otherwise cross to the host.
    let filter_on_device = filter.is_off() || all_greedy || !logits.device().is_cpu();
    if filter_on_device && !host_only() {
        let picks: Vec<Pick> = slots
            .iter_mut()
            .map(|s| match s {
                None => Pick::Skip,
                Some(r) if r.greedy => Pick::Greedy,
                Some(r) => Pick::Sample {
                    temperature: params.temperature,
                    u: r.rng.random::<f64>(),
                },
            })
            .collect();
        return sample_rows(logits, &picks, &filter);
    }
    // top-k / top-p / min-p on the CPU: the host sampler over the logits. Rows are independent (own
    // RNG), so they are drawn in parallel: with a 150k vocabulary the softmax over each row
    // dominates a CPU decode step otherwise.
    let host = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?; // [slots][vocab]
    note_host_bytes(4 * host.iter().map(Vec::len).sum::<usize>());
    let greedy_params = SamplingParams {
        greedy: true,
        ..params.clone()
    };
    Ok(slots
        .par_iter_mut()
        .zip(host.par_iter())
        .map(|(slot, l)| {
            let row = slot.as_mut()?;
            let p = if row.greedy { &greedy_params } else { params };
            Some(sample_token(l, p, &mut row.rng))
        })
        .collect())
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
/// cache over all prompts and each prompt's next-token logits [prompts, vocab], left on the device.
fn prefill(model: &Model, prompts: &[&[u32]], max_len: usize) -> Result<(KvCache, Tensor)> {
    let heads = model.config().num_attention_heads;
    let per_row = heads * max_len * max_len;
    let chunk = (PREFILL_SCORE_ELEMS / per_row.max(1)).max(1);
    let mut caches = Vec::new();
    let mut logits = Vec::new();
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
                                                                     // The LM head runs on the last position only.
        let last = hidden.narrow(1, max_len - 1, 1)?; // [b, 1, d]
        logits.push(last_logits(model, &last)?);
        caches.push(cache);
    }
    Ok((KvCache::cat(&caches)?, Tensor::cat(&logits, 0)?))
}

/// Last-position hidden states [a, 1, d] -> logits [a, vocab] in the compute dtype, on the device.
fn last_logits(model: &Model, hidden: &Tensor) -> Result<Tensor> {
    let a = hidden.dim(0)?;
    model.lm_head(&hidden.reshape((a, hidden.dim(2)?))?)
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
    let tok = if params.filter().is_off() {
        draw(rng, probs.iter().cloned().enumerate())
    } else {
        // min-p, then top-k, then top-p over the mass that those keep, as the device's filter
        // (device.rs), and the draw walks the kept ids in id order as it does, so for the same
        // uniform both pick the same token (up to ties and rounding at a cut).
        let floor = params.min_p * (max - lse).exp();
        let above = |cut: f64| -> Vec<(usize, f64)> {
            let ids = probs.iter().cloned().enumerate();
            ids.filter(|&(_, p)| p >= cut).collect()
        };
        let (mut cand, total) = if params.top_k > 0 {
            let mut cand = above(floor);
            if cand.len() > params.top_k {
                cand.select_nth_unstable_by(params.top_k - 1, |a, b| {
                    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
                });
                cand.truncate(params.top_k);
            }
            let total: f64 = cand.iter().map(|c| c.1).sum();
            (cand, total)
        } else {
            let total: f64 = probs.iter().filter(|&&p| p >= floor).sum();
            // Ids below this cut hold less than (1 - top_p) / 2 of `total` together, so the
            // nucleus ends before reaching them: skipping them before the sort is exact.
            let mut cut = floor;
            if params.top_p < 1.0 {
                cut = cut.max(0.5 * (1.0 - params.top_p) * total / probs.len() as f64);
            }
            (above(cut), total)
        };
        if params.top_p < 1.0 {
            cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
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
        cand.sort_unstable_by_key(|c| c.0);
        draw(rng, cand.into_iter())
    };
    (tok as u32, (z[tok] - lse) as f32)
}

/// Inverse-CDF draw from unnormalised `(index, weight)` pairs.
fn draw(rng: &mut impl Rng, weights: impl Iterator<Item = (usize, f64)> + Clone) -> usize {
    let total: f64 = weights.clone().map(|w| w.1).filter(|&w| w > 0.0).sum();
    inverse_cdf(weights, rng.random::<f64>() * total).0
}
