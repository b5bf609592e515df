//! CPU benchmark of popo-model on a ~25M-parameter Qwen2 at batch 16:
//! - greedy decode tokens/s through `popo_model::generate`, side by side (interleaved runs, same
//!   weights, same prompts) with candle-transformers' own `qwen2::ModelForCausalLM`;
//! - training forward+backward tokens/s through `Model::forward_train` (candle-transformers'
//!   qwen2 cannot be trained: its fused ops drop gradients).
//!
//! Usage: cargo run --release [-- REPS NEW_TOKENS]

use anyhow::Result;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::qwen2 as ct;
use popo_model::{Model, ModelConfig, SamplingParams, TokenBatch};
use std::time::Instant;

const BATCH: usize = 16;
const PROMPT: usize = 32;
const TRAIN_SEQ: usize = 128;

fn ids(seed: u64, len: usize, vocab: usize) -> Vec<u32> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % vocab as u64) as u32
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let new_tokens: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let dev = Device::Cpu;
    let cfg = ModelConfig::qwen2_tiny(16384, 384, 8, 6, 2, 1024);
    println!(
        "config: vocab {} hidden {} layers {} heads {}/{} mlp {} -> {:.1}M params; batch {BATCH}, prompt {PROMPT}, {new_tokens} new tokens; {} threads",
        cfg.vocab_size,
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.intermediate_size,
        cfg.num_parameters() as f64 / 1e6,
        candle_core::utils::get_num_threads(),
    );
    let (varmap, model) = Model::new_seeded(&cfg, &dev, DType::F32, 0, 0.02)?;
    let dir = tempfile::tempdir()?;
    popo_model::save_pretrained(dir.path(), &cfg, &varmap, DType::F32, None, None)?;
    let mut ct_model = candle_transformers_twin(&cfg, &dir.path().join("model.safetensors"), &dev)?;
    bench_decode(&model, &mut ct_model, &cfg, reps, new_tokens, &dev)?;
    bench_train(&model, &cfg, reps, &dev)
}

/// candle-transformers' qwen2 with popo's shape, loaded from the weights popo saved, so that both
/// decode the same model.
fn candle_transformers_twin(
    cfg: &ModelConfig,
    weights: &std::path::Path,
    dev: &Device,
) -> Result<ct::ModelForCausalLM> {
    let ct_cfg = ct::Config {
        vocab_size: cfg.vocab_size,
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        num_hidden_layers: cfg.num_hidden_layers,
        num_attention_heads: cfg.num_attention_heads,
        num_key_value_heads: cfg.num_key_value_heads,
        max_position_embeddings: cfg.max_position_embeddings,
        sliding_window: cfg.max_position_embeddings,
        max_window_layers: cfg.num_hidden_layers,
        tie_word_embeddings: false,
        rope_theta: cfg.rope_theta,
        rms_norm_eps: cfg.rms_norm_eps,
        use_sliding_window: false,
        hidden_act: candle_nn::Activation::Silu,
    };
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, dev)? };
    Ok(ct::ModelForCausalLM::new(&ct_cfg, vb)?)
}

/// Greedy decode of the same prompts by both models, interleaved run by run; prints tokens/s
/// (median of `reps`) and how many rows agree.
fn bench_decode(
    model: &Model,
    ct_model: &mut ct::ModelForCausalLM,
    cfg: &ModelConfig,
    reps: usize,
    new_tokens: usize,
    dev: &Device,
) -> Result<()> {
    let prompts: Vec<Vec<u32>> = (0..BATCH)
        .map(|i| ids(i as u64, PROMPT, cfg.vocab_size))
        .collect();
    let params = SamplingParams {
        greedy: true,
        max_new_tokens: new_tokens,
        ..Default::default()
    };
    let run_popo = |n: usize| -> Result<(f64, Vec<Vec<u32>>)> {
        let p = SamplingParams {
            max_new_tokens: n,
            ..params.clone()
        };
        let t = Instant::now();
        let out = popo_model::generate(model, &prompts, &p, None)?;
        Ok((
            t.elapsed().as_secs_f64(),
            out.into_iter().map(|c| c.tokens).collect(),
        ))
    };
    let flat: Vec<u32> = prompts.iter().flatten().copied().collect();
    let prompt_t = Tensor::from_vec(flat, (BATCH, PROMPT), dev)?;
    let mut run_ct = |n: usize| -> Result<(f64, Vec<Vec<u32>>)> {
        let t = Instant::now();
        ct_model.clear_kv_cache();
        let mut toks = vec![Vec::with_capacity(n); BATCH];
        let mut logits = ct_model.forward(&prompt_t, 0)?; // [b, 1, v]
        for step in 0..n {
            let next = logits.squeeze(1)?.argmax(D::Minus1)?; // [b]
            for (row, &tok) in toks.iter_mut().zip(next.to_vec1::<u32>()?.iter()) {
                row.push(tok);
            }
            if step + 1 < n {
                logits = ct_model.forward(&next.unsqueeze(1)?, PROMPT + step)?;
            }
        }
        Ok((t.elapsed().as_secs_f64(), toks))
    };
    // warm-up
    run_popo(4)?;
    run_ct(4)?;
    let (mut tp, mut tc) = (vec![], vec![]);
    let mut agree = (0, 0);
    for _ in 0..reps {
        let (a, ta) = run_popo(new_tokens)?;
        let (b, tb) = run_ct(new_tokens)?;
        tp.push(a);
        tc.push(b);
        agree = (ta.iter().zip(&tb).filter(|(x, y)| x == y).count(), BATCH);
    }
    let toks = (BATCH * new_tokens) as f64;
    let (sp, sc) = (toks / median(tp.clone()), toks / median(tc.clone()));
    println!("| decode (prefill + {new_tokens} greedy steps) | popo-model | {sp:.0} tok/s | runs {tp:.3?} s |");
    println!("| decode (prefill + {new_tokens} greedy steps) | candle-transformers qwen2 | {sc:.0} tok/s | runs {tc:.3?} s |");
    println!(
        "decode ratio popo / candle-transformers: {:.2}x; identical greedy rows: {}/{}",
        sp / sc,
        agree.0,
        agree.1
    );
    Ok(())
}

/// Training forward + backward of popo's model on BATCH sequences of TRAIN_SEQ tokens; prints
/// tokens/s (median of `reps`).
fn bench_train(model: &Model, cfg: &ModelConfig, reps: usize, dev: &Device) -> Result<()> {
    let p: Vec<Vec<u32>> = (0..BATCH)
        .map(|i| ids(100 + i as u64, PROMPT, cfg.vocab_size))
        .collect();
    let c: Vec<Vec<u32>> = (0..BATCH)
        .map(|i| ids(200 + i as u64, TRAIN_SEQ - PROMPT, cfg.vocab_size))
        .collect();
    let pr: Vec<&[u32]> = p.iter().map(|x| x.as_slice()).collect();
    let cr: Vec<&[u32]> = c.iter().map(|x| x.as_slice()).collect();
    let batch = TokenBatch::new(&pr, &cr, 0, dev)?;
    let step = || -> Result<f64> {
        let t = Instant::now();
        let out = model.forward_train(&batch, 1.0)?;
        let loss = (out.logprobs.mul(&batch.completion_mask)?.sum_all()?
            + (out.entropy.mul(&batch.completion_mask)?.sum_all()? * 0.01)?)?;
        let grads = loss.backward()?;
        std::hint::black_box(grads);
        Ok(t.elapsed().as_secs_f64())
    };
    step()?;
    let times: Vec<f64> = (0..reps).map(|_| step()).collect::<Result<_>>()?;
    let ttok = (BATCH * TRAIN_SEQ) as f64 / median(times.clone());
    println!("| train forward+backward ({BATCH} x {TRAIN_SEQ}) | popo-model | {ttok:.0} tok/s | runs {times:.3?} s |");
    Ok(())
}
