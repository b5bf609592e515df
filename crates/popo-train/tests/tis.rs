//! Rollouts from another engine (docs/algorithms.md, "Rollouts from another engine"): the
//! correction's log-prob differences and truncated importance weights, and every loss family
//! with those weights, against plain f64 loops over the model's own outputs.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{lcg, TinyLm};
use popo_train::algo::grpo::Grpo;
use popo_train::algo::raft::Raft;
use popo_train::algo::reinforce::Reinforce;
use popo_train::algo::{Algorithm, MicroBatch, PrepareCtx, Prepared, Rollout, RolloutBatch};
use popo_train::correction::{correct, tis_weights};
use popo_train::metrics::names;
use popo_train::policy::{Policy, SeqBatch};

const V: usize = 7;
const PAD: u32 = 0;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

fn ctx<'a>(policy: &'a dyn Policy, dev: &'a Device) -> PrepareCtx<'a> {
    PrepareCtx {
        policy,
        temperature: 1.0,
        chunk: 3,
        width: 1,
        pad_id: PAD,
        device: dev,
        seed: 5,
        max_completion_len: 6,
    }
}

/// Two groups; completion tokens pseudo-random; no engine log-probs yet.
fn batch(rewards: &[(usize, f64, usize)]) -> RolloutBatch {
    let rollouts = rewards
        .iter()
        .enumerate()
        .map(|(k, &(group, reward, len))| {
            let ids = |seed, n| -> Vec<u32> {
                lcg(seed, n)
                    .iter()
                    .map(|u| 1 + (u * (V - 1) as f64) as u32)
                    .collect()
            };
            Rollout {
                group,
                prompt: ids(100 + group as u64, 2 + group),
                completion: ids(7 * k as u64 + 1, len),
                sampler_logprobs: Vec::new(),
                reward,
                truncated: false,
            }
        })
        .collect();
    RolloutBatch { rollouts }
}

/// The policy's per-token completion log-probs of every row, in f64, row by row (no padding).
fn reference_logprobs(policy: &TinyLm, b: &RolloutBatch) -> Vec<Vec<f64>> {
    b.rollouts
        .iter()
        .map(|r| {
            let mb = SeqBatch::new(&[&r.prompt], &[&r.completion], PAD, &Device::Cpu).unwrap();
            let lp = policy.forward_detached(&mb, 1.0).unwrap().logprobs;
            let row = lp.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
            let p = r.prompt.len();
            row[0][p..p + r.completion.len()].to_vec()
        })
        .collect()
}

/// Engine log-probs: the policy's own moved by seeded offsets in [-1.5, 1.5], so that some
/// ratios exceed the cap and some fall below 1.
fn engine_logprobs(truth: &[Vec<f64>]) -> Vec<Vec<f32>> {
    truth
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let u = lcg(900 + i as u64, row.len());
            row.iter()
                .zip(u)
                .map(|(lp, u)| (lp + 3.0 * u - 1.5) as f32)
                .collect()
        })
        .collect()
}

struct Case {
    policy: TinyLm,
    batch: RolloutBatch,
    /// pi_old in f64 and the engine's log-probs as sent.
    old: Vec<Vec<f64>>,
    engine: Vec<Vec<f32>>,
}

fn case(rewards: &[(usize, f64, usize)]) -> Case {
    let policy = TinyLm::new(V, 5, 3, DType::F64);
    let mut batch = batch(rewards);
    let old = reference_logprobs(&policy, &batch);
    let engine = engine_logprobs(&old);
    for (r, e) in batch.rollouts.iter_mut().zip(&engine) {
        r.sampler_logprobs = e.clone();
    }
    Case {
        policy,
        batch,
        old,
        engine,
    }
}

const REWARDS: &[(usize, f64, usize)] = &[
    (0, 1.0, 3),
    (0, 0.0, 2),
    (0, 1.0, 4),
    (1, 0.0, 1),
    (1, 1.0, 3),
];

#[test]
fn the_correction_measures_the_difference_and_weights_by_the_capped_ratio() {
    let dev = Device::Cpu;
    let Case {
        policy,
        mut batch,
        old,
        engine,
    } = case(REWARDS);
    let cap = 2.0;
    let c = correct(&mut batch, &ctx(&policy, &dev), cap, None).unwrap();
    let stat = |name| c.stats.iter().find(|(k, _)| *k == name).unwrap().1;
    let diffs: Vec<f64> = old
        .iter()
        .flatten()
        .zip(engine.iter().flatten())
        .map(|(o, &e)| (o - e as f64).abs())
        .collect();
    let n = diffs.len() as f64;
    assert!(close(
        stat(names::ENGINE_LOGPROB_ABS_DIFF),
        diffs.iter().sum::<f64>() / n,
        1e-6
    ));
    let max = diffs.iter().cloned().fold(0.0, f64::max);
    assert!(close(stat(names::ENGINE_LOGPROB_ABS_DIFF_MAX), max, 1e-6));
    let tis = c.tis.as_ref().unwrap();
    let (mut wsum, mut clipped) = (0.0, 0);
    for ((t, o), e) in tis.iter().zip(&old).zip(&engine) {
        for ((&w, &o), &e) in t.iter().zip(o).zip(e) {
            let ratio = (o - e as f64).exp();
            assert!(close(w as f64, ratio.min(cap), 1e-5), "{w} vs {ratio}");
            wsum += ratio.min(cap);
            clipped += (ratio > cap) as usize;
        }
    }
    assert!(
        clipped > 0 && clipped < diffs.len(),
        "the test must clip some tokens, not all"
    );
    assert!(close(stat(names::TIS_WEIGHT_MEAN), wsum / n, 1e-5));
    assert!(close(
        stat(names::TIS_CLIP_RATIO),
        clipped as f64 / n,
        1e-12
    ));
    // The rollouts now carry pi_old, popo's own log-probs.
    for (r, o) in batch.rollouts.iter().zip(&old) {
        for (&a, &b) in r.sampler_logprobs.iter().zip(o) {
            assert!(close(a as f64, b, 1e-6));
        }
    }
    // A cap of 0 turns the weights off; the difference is still logged.
    let Case { mut batch, .. } = case(REWARDS);
    let c = correct(&mut batch, &ctx(&policy, &dev), 0.0, None).unwrap();
    assert!(c.tis.is_none());
    assert_eq!(c.stats.len(), 2);
}

/// Only the rows an algorithm reads are scored again: the others keep the engine's log-probs and
/// weights of 1, and the logged difference is over the scored rows. With none read, the first
/// group is scored for the log.
#[test]
fn the_correction_scores_only_the_rows_read() {
    let dev = Device::Cpu;
    let cap = 2.0;
    for (read, scored) in [
        (vec![false, true, true, false, true], vec![1, 2, 4]),
        (vec![false; 5], vec![0, 1, 2]),
    ] {
        let Case {
            policy,
            mut batch,
            old,
            engine,
        } = case(REWARDS);
        let c = correct(&mut batch, &ctx(&policy, &dev), cap, Some(&read)).unwrap();
        let tis = c.tis.as_ref().unwrap();
        let mut diffs = Vec::new();
        for i in 0..batch.len() {
            let r = &batch.rollouts[i];
            if scored.contains(&i) {
                for (k, (&a, &o)) in r.sampler_logprobs.iter().zip(&old[i]).enumerate() {
                    assert!(close(a as f64, o, 1e-6), "row {i}");
                    let ratio = (o - engine[i][k] as f64).exp().min(cap);
                    assert!(close(tis[i][k] as f64, ratio, 1e-5), "row {i}");
                    diffs.push((o - engine[i][k] as f64).abs());
                }
            } else {
                assert_eq!(r.sampler_logprobs, engine[i], "row {i} keeps the engine's");
                assert!(tis[i].iter().all(|&w| w == 1.0), "row {i}");
            }
        }
        let stat = |name| c.stats.iter().find(|(k, _)| *k == name).unwrap().1;
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        assert!(
            close(stat(names::ENGINE_LOGPROB_ABS_DIFF), mean, 1e-6),
            "{read:?}"
        );
    }
}

#[test]
fn weights_of_equal_log_probs_are_one_and_the_cap_binds() {
    assert_eq!(
        tis_weights(&[-1.0, -2.0], &[-1.0, -2.0], 2.0),
        vec![1.0, 1.0]
    );
    assert_eq!(tis_weights(&[-0.1], &[-5.0], 2.0), vec![2.0]);
    assert!((tis_weights(&[-5.0], &[-0.1], 2.0)[0] as f64 - (-4.9f64).exp()).abs() < 1e-7);
}

/// The loss of one micro-batch of `rows`, with the TIS weights, and the policy's log-probs of it
/// (per row, per completion token, f64).
fn loss_with(
    algo: &dyn Algorithm,
    policy: &TinyLm,
    batch: &RolloutBatch,
    prep: &Prepared,
    rows: &[usize],
    tis: &[Vec<f32>],
) -> (f64, Vec<Vec<f64>>) {
    let mb = batch.seq_batch(rows, PAD, &Device::Cpu).unwrap();
    let out = policy.forward(&mb, 1.0).unwrap();
    let x = MicroBatch::new(&mb, prep, rows).with_tis(Some(tis));
    let loss = algo
        .loss(&out, &x)
        .unwrap()
        .loss
        .to_scalar::<f64>()
        .unwrap();
    let lp = out
        .logprobs
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    let per_row = (0..mb.len())
        .map(|r| {
            let p = mb.prompt_lens[r];
            lp[r][p..p + mb.completion_lens[r]].to_vec()
        })
        .collect();
    (loss, per_row)
}

/// The test case after the correction at `cap`: policy, batch (now carrying pi_old) and weights.
fn corrected(cap: f64) -> (TinyLm, RolloutBatch, Vec<Vec<f32>>) {
    let Case {
        policy, mut batch, ..
    } = case(REWARDS);
    let tis = correct(&mut batch, &ctx(&policy, &Device::Cpu), cap, None)
        .unwrap()
        .tis
        .unwrap();
    (policy, batch, tis)
}

#[test]
fn grpo_weights_each_tokens_policy_gradient_term() {
    let dev = Device::Cpu;
    let (policy, batch, tis) = corrected(2.0);
    for agg in [
        "token-mean",
        "seq-mean-token-mean",
        "seq-mean-token-sum-norm",
    ] {
        let c = common::cfg("grpo", &[&format!("algo.loss_agg={agg}")]);
        let algo = Grpo::new(&c, &policy).unwrap();
        let prep = algo.prepare(&batch, &ctx(&policy, &dev)).unwrap();
        let rows = prep.included();
        let (got, _) = loss_with(&algo, &policy, &batch, &prep, &rows, &tis);
        // One update: rho = 1 in value, so each token's term is -A_i * w_it.
        let (mut sum, mut seq_means, mut tokens) = (0.0, 0.0, 0.0);
        for &i in &rows {
            let a = prep.seqs[i].coef;
            let s: f64 = tis[i].iter().map(|&w| -a * w as f64).sum();
            sum += s;
            seq_means += s / tis[i].len() as f64;
            tokens += tis[i].len() as f64;
        }
        let n = batch.len() as f64;
        let want = match agg {
            "token-mean" => sum / tokens,
            "seq-mean-token-mean" => seq_means / n,
            _ => sum / (n * 6.0),
        };
        assert!(close(got, want, 1e-10), "{agg}: {got} vs {want}");
    }
}

#[test]
fn raft_and_reinforce_weight_each_tokens_nll_term() {
    let dev = Device::Cpu;
    let (policy, batch, tis) = corrected(1.5);
    // RAFT: sum_i w_i sum_t tis_it (-logp_it) / N+, w uniform over a group's positives.
    let c = common::cfg("raft", &[]);
    let algo = Raft::new(&c);
    let prep = algo.prepare(&batch, &ctx(&policy, &dev)).unwrap();
    let rows = prep.included();
    let (got, lp) = loss_with(&algo, &policy, &batch, &prep, &rows, &tis);
    let w = [0.5, 0.0, 0.5, 0.0, 1.0];
    let pos_tokens = (3 + 4 + 3) as f64;
    let want: f64 = rows
        .iter()
        .zip(&lp)
        .map(|(&i, l)| {
            w[i] * l
                .iter()
                .zip(&tis[i])
                .map(|(x, &t)| -x * t as f64)
                .sum::<f64>()
        })
        .sum::<f64>()
        / pos_tokens;
    assert!(close(got, want, 1e-10), "raft: {got} vs {want}");
    // NSR: -(1/N) sum_i a_i sum_t tis_it logp_it with a_i = -1 on negatives.
    let c = common::cfg("nsr", &[]);
    let algo = Reinforce::new(&c);
    let prep = algo.prepare(&batch, &ctx(&policy, &dev)).unwrap();
    let rows = prep.included();
    let (got, lp) = loss_with(&algo, &policy, &batch, &prep, &rows, &tis);
    let all_tokens: f64 = batch
        .rollouts
        .iter()
        .map(|r| r.completion.len() as f64)
        .sum();
    let want: f64 = rows
        .iter()
        .zip(&lp)
        .map(|(&i, l)| {
            let a = prep.seqs[i].coef;
            -a * l
                .iter()
                .zip(&tis[i])
                .map(|(x, &t)| x * t as f64)
                .sum::<f64>()
        })
        .sum::<f64>()
        / all_tokens;
    assert!(close(got, want, 1e-10), "nsr: {got} vs {want}");
    assert!(rows.iter().all(|&i| prep.seqs[i].coef == -1.0));
}

#[test]
fn weights_of_one_leave_every_loss_unchanged() {
    let dev = Device::Cpu;
    let Case { policy, batch, .. } = case(REWARDS);
    let ones: Vec<Vec<f32>> = batch
        .rollouts
        .iter()
        .map(|r| vec![1.0; r.completion.len()])
        .collect();
    for preset in ["popo", "grpo", "raft", "nsr"] {
        let c = common::cfg(preset, &["algo.predictor_hidden=8"]);
        let algo = popo_train::setup::algorithm(&c, &policy, &dev).unwrap();
        let prep = algo.prepare(&batch, &ctx(&policy, &dev)).unwrap();
        let rows = prep.included();
        let mb = batch.seq_batch(&rows, PAD, &dev).unwrap();
        let out = policy.forward(&mb, 1.0).unwrap();
        let plain = algo
            .loss(&out, &MicroBatch::new(&mb, &prep, &rows))
            .unwrap()
            .loss;
        let x = MicroBatch::new(&mb, &prep, &rows).with_tis(Some(&ones));
        let weighted = algo.loss(&out, &x).unwrap().loss;
        let d = (plain - weighted).unwrap().abs().unwrap();
        assert!(d.to_scalar::<f64>().unwrap() < 1e-12, "{preset}");
    }
    let _ = Tensor::zeros(1, DType::F64, &dev);
}
