//! The decode loop: one batch of rows over one KV cache. Rows are admitted (prefilled, their
//! cache rows merged into the running cache), step (each draws a token), retire (handed to the
//! caller when they stop or fill up) and leave the cache in compactions.

use super::device::{sample_rows, Pick};
use super::host::sample_token;
use super::request::{row_seed, Completion, FinishReason, Request, SamplingParams};
use super::stats::{count, host_only, note_host_bytes};
use crate::model::{KvCache, Model};
use crate::tokenizer::Tokenizer;
use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// Attention scores of one prefill chunk are bounded to about this many elements.
const PREFILL_SCORE_ELEMS: usize = 1 << 27;

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

/// A finished callback: receives each row as it finishes.
type OnFinish<'f> = &'f mut dyn FnMut(Completion) -> Result<()>;

/// The engine behind `generate` and `generate_requests`: admits the rows of `requests` in
/// `order`, at most `max_rows` at a time; after each admission the cache has room for `headroom`
/// more slots before it must grow.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    model: &Model,
    requests: &[Request],
    order: &[usize],
    params: &SamplingParams,
    tokenizer: Option<&Tokenizer>,
    max_rows: usize,
    headroom: usize,
    on_finish: OnFinish,
) -> Result<()> {
    validate(model, requests, params, tokenizer)?;
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
    let queue = order
        .iter()
        .flat_map(|&q| (0..requests[q].rows()).map(move |s| (q, s)))
        .collect();
    let mut d = Decode {
        model: &model,
        requests,
        params,
        tokenizer,
        max_rows,
        headroom,
        queue,
        next: 0,
        // Admitting costs a prefill and a copy of the cache, so rows join in groups.
        refill_at: (max_rows / 8).max(1),
        max_pos: model.config().max_position_embeddings,
        stop_window: params
            .stop_strings
            .iter()
            .map(|s| s.len())
            .max()
            .unwrap_or(0)
            + 2,
        cache: None,
        slots: Vec::new(),
        live: 0,
        logits: None,
    };
    loop {
        if d.wants_rows() {
            d.admit()?;
        }
        if d.live == 0 {
            return Ok(()); // nothing running and nothing waiting
        }
        d.step(on_finish)?;
        if d.live == 0 {
            // The batch is empty: admit the next rows, if any.
            d.clear();
            continue;
        }
        let finished = d.slots.len() - d.live;
        if finished > 0 && finished * COMPACT_EVERY >= d.slots.len() {
            d.compact(false)?;
        }
        d.advance()?;
    }
}

/// A row that has drawn nothing yet.
fn empty(q: usize, s: usize) -> Completion {
    Completion {
        prompt_index: q,
        sample_index: s,
        tokens: vec![],
        logprobs: vec![],
        finish_reason: FinishReason::Length,
    }
}

/// The batch being decoded and the rows waiting to join it.
struct Decode<'a> {
    /// The decoding copy of the model.
    model: &'a Model,
    requests: &'a [Request],
    params: &'a SamplingParams,
    tokenizer: Option<&'a Tokenizer>,
    max_rows: usize,
    headroom: usize,
    /// Every row in admission order, (request, sample); `next` is the first still waiting.
    queue: Vec<(usize, usize)>,
    next: usize,
    /// Rows join once this many places are free (or all waiting rows fit).
    refill_at: usize,
    max_pos: usize,
    /// Tokens decoded to look for a stop string (see `hits_stop_string`).
    stop_window: usize,
    cache: Option<KvCache>,
    /// One slot per cache row, `None` once its row has finished (until compaction).
    slots: Vec<Option<Row>>,
    live: usize,
    /// [slots, vocab]: each slot's next-token logits.
    logits: Option<Tensor>,
}

impl Decode<'_> {
    fn waiting(&self) -> usize {
        self.queue.len() - self.next
    }

    /// Whether waiting rows should join now.
    fn wants_rows(&self) -> bool {
        let (free, waiting) = (self.max_rows.saturating_sub(self.live), self.waiting());
        waiting > 0 && free > 0 && (self.live == 0 || free >= self.refill_at || waiting <= free)
    }

    /// Admits as many waiting rows as fit: consecutive rows of one request share a prefill.
    fn admit(&mut self) -> Result<()> {
        // Finished rows leave before new ones join, so the batch never exceeds `max_rows`.
        if self.live < self.slots.len() {
            self.compact(true)?;
        }
        let take = self.max_rows.saturating_sub(self.live).min(self.waiting());
        let requests = self.requests;
        let mut prompts: Vec<usize> = Vec::new();
        let mut repeat: Vec<u32> = Vec::with_capacity(take);
        for &(q, s) in &self.queue[self.next..self.next + take] {
            if prompts.last() != Some(&q) {
                prompts.push(q);
            }
            repeat.push((prompts.len() - 1) as u32);
            let r = &requests[q];
            self.slots.push(Some(Row {
                out: empty(q, s),
                rng: StdRng::seed_from_u64(row_seed(r.seed, 0, s)),
                greedy: s == r.n || self.params.greedy || self.params.temperature == 0.0,
                prompt_len: r.prompt.len(),
            }));
        }
        self.next += take;
        self.live += take;
        let group: Vec<&[u32]> = prompts.iter().map(|&q| &requests[q].prompt[..]).collect();
        let max_len = group.iter().map(|p| p.len()).max().unwrap_or(0);
        let (fresh, first_logits) = prefill(self.model, &group, max_len)?;
        let mut fresh = fresh.select_rows(&repeat)?;
        let idx = Tensor::new(repeat.as_slice(), self.model.device())?;
        let first = first_logits.index_select(&idx, 0)?;
        self.logits = Some(match self.logits.take() {
            None => first,
            Some(running) => Tensor::cat(&[&running, &first], 0)?,
        });
        self.cache = Some(match self.cache.take() {
            None => {
                fresh.reserve(max_len + self.headroom)?;
                fresh
            }
            Some(running) => KvCache::merge(&[running, fresh], self.headroom)?,
        });
        Ok(())
    }

    /// Every running row draws its next token; a row that stops or reaches its length retires.
    fn step(&mut self, on_finish: OnFinish) -> Result<()> {
        let step_logits = self
            .logits
            .as_ref()
            .context("no logits for a running batch")?;
        let drawn = choose_tokens(step_logits, &mut self.slots, self.params)?;
        let params = self.params;
        for (i, drawn) in drawn.into_iter().enumerate() {
            let Some(row) = self.slots[i].as_mut() else {
                continue;
            };
            let (tok, lp) = drawn.context("a running row drew no token")?;
            let c = &mut row.out;
            c.tokens.push(tok);
            c.logprobs.push(lp);
            let stopped = params.stop_token_ids.contains(&tok)
                || hits_stop_string(c, params, self.tokenizer, self.stop_window)?;
            let full = c.tokens.len() >= params.max_new_tokens
                || row.prompt_len + c.tokens.len() >= self.max_pos;
            if stopped {
                self.retire(i, FinishReason::Stop, on_finish)?;
            } else if full {
                self.retire(i, FinishReason::Length, on_finish)?;
            }
        }
        Ok(())
    }

    /// Hands slot `i`'s row to the caller; its slot stays, empty, until a compaction.
    fn retire(&mut self, i: usize, reason: FinishReason, on_finish: OnFinish) -> Result<()> {
        self.live -= 1;
        if let Some(mut done) = self.slots[i].take() {
            done.out.finish_reason = reason;
            on_finish(done.out)?;
        }
        Ok(())
    }

    /// Drops every slot, the cache and the logits: no row is running.
    fn clear(&mut self) {
        self.slots.clear();
        self.cache = None;
        self.logits = None;
    }

    /// Drops the finished slots from the batch, its cache and (with `logits`) its logits, with
    /// one row selection per tensor. Without, the logits are stale until the next `advance`.
    fn compact(&mut self, logits: bool) -> Result<()> {
        let keep: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| self.slots[i as usize].is_some())
            .collect();
        self.slots.retain(Option::is_some);
        if let Some(kv) = self.cache.take() {
            let kept = kv.select_rows(&keep)?;
            count(|s| {
                s.kv_compactions += 1;
                s.kv_bytes_copied += kept.bytes() as u64;
            });
            self.cache = Some(kept);
        }
        if logits {
            if let Some(l) = self.logits.take() {
                let idx = Tensor::new(keep.as_slice(), l.device())?;
                self.logits = Some(l.index_select(&idx, 0)?);
            }
        }
        Ok(())
    }

    /// One forward of every slot's last token through the cache: the next step's logits.
    fn advance(&mut self) -> Result<()> {
        let kv = self
            .cache
            .as_mut()
            .context("no cache for a running batch")?;
        // Finished rows get a masked dummy token: their cache row only grows by a slot that no
        // attention reads, and their position does not move (it may sit at the model's limit).
        let (next, mask): (Vec<u32>, Vec<Vec<u8>>) = self
            .slots
            .iter()
            .map(|s| match s.as_ref().and_then(|row| row.out.tokens.last()) {
                Some(&tok) => (tok, vec![1u8]),
                None => (0, vec![0u8]),
            })
            .unzip();
        let a = self.slots.len();
        let ids = Tensor::from_vec(next, (a, 1), self.model.device())?;
        let hidden = self.model.forward_cached(&ids, &mask, kv)?; // [a, 1, d]
        self.logits = Some(last_logits(self.model, &hidden)?);
        Ok(())
    }
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
