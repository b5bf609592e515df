//! RAFT and NSR / W-REINFORCE: golden values, the f64 reference, truncated ratios.

use crate::common::{self, TinyLm};
use crate::{close, ctx, fd_batch, loss_of, make_batch, nudge, per_tok, DM, PAD, V};
use candle_core::{DType, Device, Tensor};
use popo_train::algo::raft::Raft;
use popo_train::algo::reinforce::{reinforce_coefs, Reinforce};
use popo_train::algo::Algorithm;
use popo_train::algo::{MicroBatch, Norms, Prepared, RolloutBatch, SeqPrep};
use popo_train::config::AlgoName;
use popo_train::policy::{PolicyOutput, SeqBatch};

// ---------------------------------------------------------------- RAFT

#[test]
fn raft_is_uniform_positive_nll() {
    let dev = Device::Cpu;
    let batch = make_batch(
        &[
            (2, vec![(1.0, 3), (0.0, 2), (1.0, 1)]),
            (3, vec![(0.0, 2)]),
            (2, vec![(1.0, 4)]),
        ],
        5,
    );
    let c = common::cfg("raft", &[]);
    assert_eq!(c.algo.name, AlgoName::Raft);
    let policy = TinyLm::new(V, DM, 3, DType::F64);
    let algo = Raft::new(&c);
    let prep = algo.prepare(&batch, &ctx(&policy, &dev, 4)).unwrap();
    let rows = prep.included();
    assert_eq!(rows, vec![0, 2, 4]); // negatives never enter the forward
    let (got, mb, out) = loss_of(&algo, &policy, &batch, &prep, &rows);
    let lp = per_tok(&mb, &out.logprobs);
    let w = [0.5, 0.5, 1.0];
    let num: f64 = lp
        .iter()
        .zip(w)
        .map(|(r, w)| w * r.iter().map(|x| -x).sum::<f64>())
        .sum();
    let want = num / (3.0 + 1.0 + 4.0);
    assert!(close(got, want, 1e-12), "{got} vs {want}");
}

// ---------------------------------------------------------------- NSR / W-REINFORCE

/// Hand-built rows: a positive of two tokens, a negative of one, lambda = 0.25.
/// L = -(0.25 * (-1 - 3) + (-1) * (-0.5)) / 3 = (1 - 0.5) / 3.
#[test]
fn reinforce_loss_golden_values() {
    let dev = Device::Cpu;
    let mb = SeqBatch::new(&[&[1], &[2]], &[&[3, 4], &[5]], PAD, &dev).unwrap();
    let out = PolicyOutput {
        logprobs: Tensor::new(&[[0.0f64, -1.0, -3.0], [0.0, -0.5, -99.0]], &dev).unwrap(),
        entropy: Tensor::new(&[[0.0f64, 2.0, 1.0], [0.0, 3.0, 77.0]], &dev).unwrap(),
        hidden: Tensor::zeros((2, 3, 2), DType::F64, &dev).unwrap(),
    };
    let seq = |coef: f64| SeqPrep {
        coef,
        include: true,
        loss_mask: true,
        ..Default::default()
    };
    let prep = Prepared {
        seqs: vec![seq(0.25), seq(-1.0)],
        norm: Norms {
            all_tokens: 3.0,
            loss_tokens: 3.0,
            ..Default::default()
        },
        stats: vec![],
    };
    let c = common::cfg("w_reinforce", &["algo.psr_weight=0.25"]);
    let l = Reinforce::new(&c)
        .loss(&out, &MicroBatch::new(&mb, &prep, &[0, 1]))
        .unwrap();
    let got = l.loss.to_scalar::<f64>().unwrap();
    assert!(close(got, 0.5 / 3.0, 1e-12), "{got}");
    let stat = |k: &str| l.stats.iter().find(|(n, _)| *n == k).unwrap().1;
    assert!(close(stat("loss/pg"), 0.5 / 3.0, 1e-12));
    assert!(close(stat("train/entropy"), 2.0, 1e-12)); // (2 + 1 + 3) / 3
    assert_eq!(reinforce_coefs(&[true, false, true], 0.1), [0.1, -1.0, 0.1]);
    assert_eq!(reinforce_coefs(&[true, false], 0.0), [0.0, -1.0]);
}

/// `L = -(1 / sum_i |y_i|) sum_i a_i sum_t logp` in f64 loops, the denominator over every
/// completion of the batch (nsr's positives too, though they never enter the forward).
fn reinforce_reference(
    batch: &RolloutBatch,
    lp: &[Vec<f64>],
    rows: &[usize],
    psr_weight: f64,
    ratio: Option<(&Prepared, f64)>,
) -> f64 {
    let all_tokens: usize = batch.rollouts.iter().map(|r| r.completion.len()).sum();
    let mut num = 0.0;
    for (k, &i) in rows.iter().enumerate() {
        let a = if batch.rollouts[i].reward > 0.0 {
            psr_weight
        } else {
            -1.0
        };
        for (t, &l) in lp[k].iter().enumerate() {
            let rho = ratio.map_or(1.0, |(prep, c)| {
                let old = prep.seqs[i].old_logprobs.as_ref().unwrap()[t] as f64;
                (l - old).exp().min(c)
            });
            num += -a * rho * l;
        }
    }
    num / all_tokens as f64
}

/// nsr and w_reinforce against the f64 reference over a batch with a group of negatives only, a
/// group of positives only (nothing to learn for nsr), single completions and padding.
#[test]
fn reinforce_loss_matches_f64_reference() {
    let dev = Device::Cpu;
    let batch = make_batch(
        &[
            (3, vec![(1.0, 4), (0.0, 2), (1.0, 1), (0.0, 5)]),
            (2, vec![(0.0, 3), (0.0, 1), (0.0, 2)]),
            (4, vec![(1.0, 2), (1.0, 6), (1.0, 1)]),
            (1, vec![(0.0, 2)]),
        ],
        8,
    );
    for (preset, sets, lambda) in [
        ("nsr", vec![], 0.0),
        ("w_reinforce", vec![], 0.1),
        ("w_reinforce", vec!["algo.psr_weight=0.7"], 0.7),
    ] {
        let c = common::cfg(preset, &sets);
        assert_eq!(
            (c.algo.name, c.algo.psr_weight),
            (AlgoName::Reinforce, lambda)
        );
        let policy = TinyLm::new(V, DM, 6, DType::F64);
        let algo = popo_train::setup::algorithm(&c, &policy, &dev).unwrap();
        let prep = algo.prepare(&batch, &ctx(&policy, &dev, 3)).unwrap();
        let rows = prep.included();
        let positive: Vec<usize> = (0..batch.len())
            .filter(|&i| batch.rollouts[i].reward > 0.0)
            .collect();
        if lambda == 0.0 {
            // nsr: positives add nothing, so they never enter the forward.
            assert!(positive.iter().all(|i| !rows.contains(i)), "{rows:?}");
            assert_eq!(rows.len(), batch.len() - positive.len());
        } else {
            assert_eq!(rows.len(), batch.len());
        }
        let (got, mb, out) = loss_of(algo.as_ref(), &policy, &batch, &prep, &rows);
        let want = reinforce_reference(&batch, &per_tok(&mb, &out.logprobs), &rows, lambda, None);
        assert!(
            close(got, want, 1e-12),
            "{preset} {lambda}: {got} vs {want}"
        );
    }
}

/// A batch of positives only gives nsr nothing to train on: no row in the forward, and the
/// trainer's update loop skips it; the groups still count in the rollout metrics.
#[test]
fn nsr_batch_without_negatives_trains_nothing() {
    let dev = Device::Cpu;
    let batch = make_batch(&[(2, vec![(1.0, 3), (1.0, 2)]), (3, vec![(1.0, 1)])], 2);
    let c = common::cfg("nsr", &[]);
    let policy = TinyLm::new(V, DM, 2, DType::F64);
    let prep = Reinforce::new(&c)
        .prepare(&batch, &ctx(&policy, &dev, 4))
        .unwrap();
    assert!(prep.included().is_empty());
    assert_eq!(prep.norm.all_tokens, 6.0);
}

/// num_iterations > 1: each token's term is scaled by sg(min(exp(logp - logp_old), c)), as in
/// POPO's item 11, for negatives (a = -1) and weighted positives alike.
#[test]
fn reinforce_truncated_ratio_matches_reference() {
    let dev = Device::Cpu;
    let batch = fd_batch();
    for preset in ["nsr", "w_reinforce"] {
        let c = common::cfg(preset, &["algo.num_iterations=2", "algo.ratio_clip=1.05"]);
        let policy = TinyLm::new(V, DM, 4, DType::F64);
        let algo = Reinforce::new(&c);
        let prep = algo.prepare(&batch, &ctx(&policy, &dev, 4)).unwrap();
        assert!(prep
            .included()
            .iter()
            .all(|&i| prep.seqs[i].old_logprobs.is_some()));
        nudge(&policy, 0.2);
        let rows = prep.included();
        let (got, mb, out) = loss_of(&algo, &policy, &batch, &prep, &rows);
        let lp = per_tok(&mb, &out.logprobs);
        let clipped = rows.iter().enumerate().any(|(k, &i)| {
            let old = prep.seqs[i].old_logprobs.as_ref().unwrap();
            (0..lp[k].len()).any(|t| (lp[k][t] - old[t] as f64).exp() > 1.05)
        });
        assert!(clipped, "the perturbation should push some ratios past c");
        let want = reinforce_reference(&batch, &lp, &rows, c.algo.psr_weight, Some((&prep, 1.05)));
        assert!(close(got, want, 1e-6), "{preset}: {got} vs {want}");
    }
}
