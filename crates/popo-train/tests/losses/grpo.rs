//! The GRPO family (GRPO, Dr. GRPO, DAPO): advantages, golden values, the f64 reference.

use crate::common::{self, TinyLm};
use crate::{close, ctx, loss_of, make_batch, nudge, per_tok, DM, PAD, V};
use candle_core::{DType, Device, Tensor};
use popo_train::algo::grpo::{advantages, Grpo};
use popo_train::algo::Algorithm;
use popo_train::algo::{MicroBatch, Norms, Prepared, SeqPrep};
use popo_train::config::{AdvantageMode, LossAgg, TrainConfig};
use popo_train::policy::{PolicyOutput, SeqBatch};

#[test]
fn advantages_hand_derived() {
    let groups = vec![vec![0, 1, 2, 3], vec![4, 5]];
    let r = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0];
    let a = advantages(&groups, &r, AdvantageMode::Grpo);
    // mean 0.25, sample std sqrt(0.75 / 3) = 0.5.
    assert!(close(a[0], 0.75 / (0.5 + 1e-6), 1e-12));
    assert!(close(a[1], -0.25 / (0.5 + 1e-6), 1e-12));
    assert_eq!((a[4], a[5]), (0.0, 0.0));
    let d = advantages(&groups, &r, AdvantageMode::DrGrpo);
    assert_eq!((d[0], d[1], d[4]), (0.75, -0.25, 0.0));
    let one = advantages(&[vec![0]], &[1.0], AdvantageMode::Grpo);
    assert_eq!(one, vec![0.0]);
}

/// Hand-built rows: checks the clipped objective and all three aggregations on numbers worked by hand.
#[test]
fn grpo_loss_golden_values() {
    let dev = Device::Cpu;
    let mb = SeqBatch::new(&[&[1], &[1]], &[&[3, 4], &[5]], PAD, &dev).unwrap();
    let ln = |x: f64| x.ln();
    // Row 0: A = 1, ratios 1.5 and 0.9. Row 1: A = -1, ratio 0.5.
    let out = PolicyOutput {
        logprobs: Tensor::new(&[[0.0f64, ln(0.3), ln(0.18)], [0.0, ln(0.1), 0.0]], &dev).unwrap(),
        entropy: Tensor::zeros((2, 3), DType::F64, &dev).unwrap(),
        hidden: Tensor::zeros((2, 3, 2), DType::F64, &dev).unwrap(),
    };
    let seqs = vec![
        SeqPrep {
            coef: 1.0,
            include: true,
            loss_mask: true,
            old_logprobs: Some(vec![0.2f64.ln() as f32, 0.2f64.ln() as f32]),
            ..Default::default()
        },
        SeqPrep {
            coef: -1.0,
            include: true,
            loss_mask: true,
            old_logprobs: Some(vec![0.2f64.ln() as f32]),
            ..Default::default()
        },
    ];
    let norm = Norms {
        all_tokens: 3.0,
        loss_tokens: 3.0,
        loss_seqs: 2.0,
        sum_norm: 2.0 * 4.0,
        ..Default::default()
    };
    let prep = Prepared {
        seqs,
        norm,
        stats: vec![],
    };
    // Tokens: min(1.5, 1.2) = 1.2 -> -1.2; min(0.9, 0.9) -> -0.9; A=-1: min(-0.5, -0.8) = -0.8 -> 0.8.
    // (f32 old log-probs: tolerance 1e-6.)
    let toks = [-1.2, -0.9, 0.8];
    for (agg, want) in [
        ("token-mean", toks.iter().sum::<f64>() / 3.0),
        (
            "seq-mean-token-mean",
            ((toks[0] + toks[1]) / 2.0 + toks[2]) / 2.0,
        ),
        ("seq-mean-token-sum-norm", toks.iter().sum::<f64>() / 8.0),
    ] {
        let c = common::cfg("grpo", &[&format!("algo.loss_agg={agg}")]);
        let policy = TinyLm::new(V, 2, 1, DType::F64);
        let algo = Grpo::new(&c, &policy).unwrap();
        let got = algo
            .loss(&out, &MicroBatch::new(&mb, &prep, &[0, 1]))
            .unwrap()
            .loss
            .to_scalar::<f64>()
            .unwrap();
        assert!(close(got, want, 1e-6), "{agg}: {got} vs {want}");
    }
    // Clip-higher (eps_high 0.28): token 1 becomes min(1.5, 1.28) = 1.28.
    let c = common::cfg("dapo", &[]);
    let policy = TinyLm::new(V, 2, 1, DType::F64);
    let got = Grpo::new(&c, &policy)
        .unwrap()
        .loss(&out, &MicroBatch::new(&mb, &prep, &[0, 1]))
        .unwrap()
        .loss
        .to_scalar::<f64>()
        .unwrap();
    assert!(close(got, (-1.28 - 0.9 + 0.8) / 3.0, 1e-6), "{got}");
}

fn grpo_reference(
    lp: &[Vec<f64>],
    old: &[Vec<f64>],
    refl: Option<&[Vec<f64>]>,
    adv: &[f64],
    keep: &[bool],
    c: &TrainConfig,
) -> f64 {
    let a = &c.algo;
    let (mut sum, mut ntok, mut seq_sum, mut nseq) = (0.0, 0.0, 0.0, 0.0);
    for i in 0..lp.len() {
        let mut s = 0.0;
        for t in 0..lp[i].len() {
            let rho = (lp[i][t] - old[i][t]).exp();
            let cl = rho.clamp(1.0 - a.eps_low, 1.0 + a.eps_high);
            let mut x = -(rho * adv[i]).min(cl * adv[i]);
            if let Some(r) = refl {
                let d = r[i][t] - lp[i][t];
                x += a.beta_kl * (d.exp() - d - 1.0);
            }
            if keep[i] {
                s += x;
                ntok += 1.0;
            }
        }
        if keep[i] {
            sum += s;
            seq_sum += s / lp[i].len() as f64;
            nseq += 1.0;
        }
    }
    match a.loss_agg {
        LossAgg::TokenMean => sum / ntok,
        LossAgg::SeqMeanTokenMean => seq_sum / nseq,
        LossAgg::SeqMeanTokenSumNorm => sum / (lp.len() as f64 * 6.0),
    }
}

/// GRPO / Dr. GRPO / DAPO with several updates (ratios != 1, clipping active), a KL reference and
/// overlong filtering, against the f64 reference.
#[test]
fn grpo_family_matches_f64_reference() {
    let dev = Device::Cpu;
    let mut batch = make_batch(
        &[
            (3, vec![(1.0, 4), (0.0, 2), (1.0, 1), (0.0, 6)]),
            (2, vec![(0.0, 3), (0.0, 1)]),
            (1, vec![(1.0, 2), (0.0, 5)]),
        ],
        21,
    );
    batch.rollouts[3].truncated = true;
    for (preset, extra) in [
        ("grpo", vec!["algo.beta_kl=0.05"]),
        ("dr_grpo", vec![]),
        ("dapo", vec!["reward.overlong_filter=true"]),
        (
            "grpo",
            vec!["algo.loss_agg=token-mean", "algo.num_iterations=2"],
        ),
    ] {
        let mut sets = vec!["algo.num_iterations=2"];
        sets.extend(extra.iter().copied());
        let c = common::cfg(preset, &sets);
        let policy = TinyLm::new(V, DM, 8, DType::F64);
        let algo = Grpo::new(&c, &policy).unwrap();
        assert_eq!(algo.has_reference(), c.algo.beta_kl > 0.0);
        let prep = algo.prepare(&batch, &ctx(&policy, &dev, 4)).unwrap();
        // Move the policy so that ratios differ from 1 (the reference stays frozen).
        nudge(&policy, 0.3);
        let rows: Vec<usize> = (0..batch.len()).collect();
        let (got, mb, out) = loss_of(&algo, &policy, &batch, &prep, &rows);

        let lp = per_tok(&mb, &out.logprobs);
        let old: Vec<Vec<f64>> = prep
            .seqs
            .iter()
            .map(|s| {
                s.old_logprobs
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|&x| x as f64)
                    .collect()
            })
            .collect();
        let refl: Option<Vec<Vec<f64>>> = (c.algo.beta_kl > 0.0).then(|| {
            prep.seqs
                .iter()
                .map(|s| {
                    s.aux_logprobs
                        .as_ref()
                        .unwrap()
                        .iter()
                        .map(|&x| x as f64)
                        .collect()
                })
                .collect()
        });
        let rewards: Vec<f64> = batch.rollouts.iter().map(|r| r.reward).collect();
        let adv = advantages(&batch.groups(), &rewards, c.algo.advantage);
        let keep: Vec<bool> = batch
            .rollouts
            .iter()
            .map(|r| !(c.reward.overlong_filter && r.truncated))
            .collect();
        let want = grpo_reference(&lp, &old, refl.as_deref(), &adv, &keep, &c);
        assert!(
            close(got, want, 1e-6),
            "{preset} {extra:?}: {got} vs {want}"
        );
    }
}
