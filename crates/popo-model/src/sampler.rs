//! Rollout engine: batched sampling with a KV cache.
//!
//! Prompts are left-padded to one length and prefilled (in row chunks that bound attention memory);
//! the `n` samples of a prompt then share that prefill by duplicating its cache rows. Every decode
//! step runs only the rows still active: a finished row leaves the batch and its cache rows are
//! dropped. Each row draws from its own RNG seeded by (seed, prompt, sample), so results do not
//! depend on batch composition.

use crate::model::{KvCache, Model};
use crate::tokenizer::Tokenizer;
use anyhow::{bail, ensure, Result};
use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
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
pub fn generate_with_progress(
    model: &Model,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    tokenizer: Option<&Tokenizer>,
    on_done: &mut dyn FnMut(usize),
) -> Result<Vec<Completion>> {
    validate(model, prompts, params, tokenizer)?;
    let model = model.detached();
    let n = params.n;
    let rows = prompts.len() * n;
    let mut out: Vec<Completion> = (0..rows)
        .map(|r| Completion {
            prompt_index: r / n,
            sample_index: r % n,
            tokens: vec![],
            logprobs: vec![],
            finish_reason: FinishReason::Length,
        })
        .collect();
    if prompts.is_empty() {
        return Ok(out);
    }
    if params.max_new_tokens == 0 {
        on_done(rows);
        return Ok(out);
    }
    let max_pos = model.config().max_position_embeddings;
    let max_len = prompts.iter().map(|p| p.len()).max().unwrap_or(0);

    // Prefill, then give each of the n samples its own copy of the prompt's cache rows.
    let (mut cache, first_logits) = prefill(&model, prompts, max_len)?;
    let repeat: Vec<u32> = (0..rows).map(|r| (r / n) as u32).collect();
    cache = cache.select_rows(&repeat)?;
    cache.reserve(max_len + params.max_new_tokens)?;
    let mut logits: Vec<Vec<f32>> = repeat
        .iter()
        .map(|&p| first_logits[p as usize].clone())
        .collect();

    let mut rngs: Vec<StdRng> = (0..rows)
        .map(|r| StdRng::seed_from_u64(row_seed(params.seed, r / n, r % n)))
        .collect();
    let stop_window = params
        .stop_strings
        .iter()
        .map(|s| s.len())
        .max()
        .unwrap_or(0)
        + 2;
    let mut active: Vec<usize> = (0..rows).collect();
    loop {
        let mut keep = Vec::with_capacity(active.len());
        let mut next = Vec::with_capacity(active.len());
        for (i, &r) in active.iter().enumerate() {
            let (tok, lp) = sample_token(&logits[i], params, &mut rngs[r]);
            let c = &mut out[r];
            c.tokens.push(tok);
            c.logprobs.push(lp);
            let prompt_len = prompts[r / n].len();
            let stopped = params.stop_token_ids.contains(&tok)
                || hits_stop_string(c, params, tokenizer, stop_window)?;
            if stopped {
                c.finish_reason = FinishReason::Stop;
            } else if c.tokens.len() >= params.max_new_tokens
                || prompt_len + c.tokens.len() >= max_pos
            {
                c.finish_reason = FinishReason::Length;
            } else {
                keep.push(i as u32);
                next.push(tok);
            }
        }
        let finished = active.len() - keep.len();
        if finished > 0 {
            on_done(finished);
        }
        if keep.is_empty() {
            break;
        }
        if finished > 0 {
            cache = cache.select_rows(&keep)?;
            active = keep.iter().map(|&i| active[i as usize]).collect();
        }
        let a = active.len();
        let ids = Tensor::from_vec(next, (a, 1), model.device())?;
        let hidden = model.forward_cached(&ids, &vec![vec![1u8]; a], &mut cache)?; // [a, 1, d]
        logits = logits_to_host(&model, &hidden)?;
    }
    Ok(out)
}

fn validate(
    model: &Model,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    tokenizer: Option<&Tokenizer>,
) -> Result<()> {
    ensure!(params.n >= 1, "n must be at least 1");
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
    for (i, p) in prompts.iter().enumerate() {
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
        .wrapping_add((prompt as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add((sample as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Left-pads all prompts to `max_len` and runs them through the model in chunks; returns one
/// cache over all prompts and each prompt's next-token logits.
fn prefill(
    model: &Model,
    prompts: &[Vec<u32>],
    max_len: usize,
) -> Result<(KvCache, Vec<Vec<f32>>)> {
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
    let temp = if greedy { 1.0 } else { params.temperature };
    let z: Vec<f64> = logits.iter().map(|&x| x as f64 / temp).collect();
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = z.iter().map(|&x| (x - max).exp()).sum();
    let lse = max + sum.ln();
    if greedy {
        let mut best = 0;
        for (i, &x) in z.iter().enumerate() {
            if x > z[best] {
                best = i;
            }
        }
        return (best as u32, (z[best] - lse) as f32);
    }
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
