//! Every loss against independently computed values: f64 reference functions written as plain
//! loops over the model's outputs, hand-derived golden numbers, edge cases, a finite-difference
//! gradient check in f64, and micro-batch accumulation equal to one big batch.
//!
//! One test binary, one module per loss family; the shared batch builders and f64 helpers are here.

#[path = "../common/mod.rs"]
mod common;

mod gradients;
mod grpo;
mod popo;
mod reinforce;

use candle_core::{DType, Device, Tensor};
use common::{lcg, TinyLm};
use popo_train::algo::{Algorithm, MicroBatch, PrepareCtx, Prepared, Rollout, RolloutBatch};
use popo_train::policy::{Policy, PolicyOutput, SeqBatch};

const V: usize = 7;
const DM: usize = 5;
const PAD: u32 = 0;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

/// Groups of rollouts with given rewards and completion lengths; tokens pseudo-random.
fn make_batch(spec: &[(usize, Vec<(f64, usize)>)], seed: u64) -> RolloutBatch {
    let mut rollouts = Vec::new();
    let mut k = 0u64;
    for (g, (plen, items)) in spec.iter().enumerate() {
        let prompt: Vec<u32> = lcg(seed + g as u64, *plen)
            .iter()
            .map(|u| 1 + (u * (V - 1) as f64) as u32)
            .collect();
        for (reward, clen) in items {
            k += 1;
            let u = lcg(seed * 1000 + k, 2 * clen);
            let completion: Vec<u32> = u[..*clen]
                .iter()
                .map(|u| 1 + (u * (V - 1) as f64) as u32)
                .collect();
            let sampler_logprobs = u[*clen..].iter().map(|u| -(0.2 + 2.0 * u) as f32).collect();
            rollouts.push(Rollout {
                group: g,
                prompt: prompt.clone(),
                completion,
                sampler_logprobs,
                reward: *reward,
                truncated: false,
            });
        }
    }
    RolloutBatch { rollouts }
}

fn ctx<'a>(policy: &'a dyn Policy, dev: &'a Device, chunk: usize) -> PrepareCtx<'a> {
    PrepareCtx {
        policy,
        temperature: 1.0,
        chunk,
        width: 1,
        pad_id: PAD,
        device: dev,
        seed: 11,
        max_completion_len: 6,
    }
}

fn seq_batch(batch: &RolloutBatch, rows: &[usize], dev: &Device) -> SeqBatch {
    batch.seq_batch(rows, PAD, dev).unwrap()
}
/// Moves the policy's embeddings by seeded noise of standard deviation `std`, so that the
/// ratios to the old policy (and the frozen reference) differ from 1.
fn nudge(policy: &TinyLm, std: f64) {
    let e = policy.emb.as_tensor();
    // Seeded (uniform, with standard deviation `std`): `Tensor::randn` draws from the thread's
    // RNG, and a test whose assertion needs the nudge to move some ratio far enough then passed
    // or failed by chance.
    let half_width = std * 3f64.sqrt();
    let noise: Vec<f64> = lcg(0x6e75_6467, e.elem_count())
        .into_iter()
        .map(|u| (2.0 * u - 1.0) * half_width)
        .collect();
    let noise = Tensor::from_vec(noise, e.shape(), e.device()).unwrap();
    policy.emb.set(&(e + noise).unwrap()).unwrap();
}

/// The loss of `rows` in one micro-batch, with the batch and the policy output a reference needs.
fn loss_of(
    algo: &dyn Algorithm,
    policy: &TinyLm,
    batch: &RolloutBatch,
    prep: &Prepared,
    rows: &[usize],
) -> (f64, SeqBatch, PolicyOutput) {
    let mb = seq_batch(batch, rows, &Device::Cpu);
    let out = policy.forward(&mb, 1.0).unwrap();
    let loss = algo
        .loss(&out, &MicroBatch::new(&mb, prep, rows))
        .unwrap()
        .loss;
    (loss.to_scalar::<f64>().unwrap(), mb, out)
}

/// Per-row completion values of a [B, T] output, as f64.
fn per_tok(mb: &SeqBatch, t: &Tensor) -> Vec<Vec<f64>> {
    let rows = t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    (0..mb.len())
        .map(|r| {
            let p = mb.prompt_lens[r];
            rows[r][p..p + mb.completion_lens[r]].to_vec()
        })
        .collect()
}

fn mean_hidden(mb: &SeqBatch, h: &Tensor) -> Vec<Vec<f64>> {
    let h = h.to_dtype(DType::F64).unwrap().to_vec3::<f64>().unwrap();
    (0..mb.len())
        .map(|r| {
            let p = mb.prompt_lens[r];
            let c = mb.completion_lens[r];
            (0..h[r][0].len())
                .map(|d| (p..p + c).map(|t| h[r][t][d]).sum::<f64>() / c as f64)
                .collect()
        })
        .collect()
}

fn cos(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// A small batch for finite differences and truncated-ratio checks: positives and negatives of
/// lengths 1 to 4 over three groups.
fn fd_batch() -> RolloutBatch {
    make_batch(
        &[
            (2, vec![(1.0, 3), (0.0, 2), (1.0, 2)]),
            (3, vec![(0.0, 2), (0.0, 1)]),
            (1, vec![(1.0, 1), (1.0, 4)]),
        ],
        17,
    )
}
