//! POPO: its weights over positives, golden values, the f64 reference, edge cases, the EMA target.

use crate::common::{self, TinyLm};
use crate::{
    close, cos, ctx, fd_batch, loss_of, make_batch, mean_hidden, nudge, per_tok, seq_batch, DM,
    PAD, V,
};
use candle_core::{DType, Device, Tensor};
use popo_train::algo::positive_only::{mean_ess, popo_weights, Popo};
use popo_train::algo::Algorithm;
use popo_train::algo::{MicroBatch, Norms, Prepared, SeqPrep};
use popo_train::config::WeightMode;
use popo_train::policy::{Policy, PolicyOutput, SeqBatch};

#[test]
fn popo_weights_hand_derived() {
    // One group: positives 0 and 1 with s = -1 and -2, negative 2.
    let groups = vec![vec![0, 1, 2], vec![3, 4], vec![5]];
    let pos = [true, true, false, false, false, true];
    let s = [-1.0, -2.0, -0.1, -0.5, -0.5, -3.0];
    let lens = [2, 4, 3, 1, 1, 5];
    let w = popo_weights(&groups, &pos, &s, &lens, WeightMode::Softmax, 1.0, false);
    let e = std::f64::consts::E;
    assert!(close(w[0], e / (e + 1.0), 1e-12) && close(w[1], 1.0 / (e + 1.0), 1e-12));
    assert_eq!((w[2], w[3], w[4]), (0.0, 0.0, 0.0)); // negatives and the no-positive group
    assert_eq!(w[5], 1.0); // a single positive takes all of its group's mass
                           // T_w = 2: exp(-1/2) vs exp(-1): weights 1/(1+e^-1/2).
    let w2 = popo_weights(&groups, &pos, &s, &lens, WeightMode::Softmax, 2.0, false);
    assert!(close(w2[0], 1.0 / (1.0 + (-0.5f64).exp()), 1e-12));
    let u = popo_weights(&groups, &pos, &s, &lens, WeightMode::Uniform, 1.0, false);
    assert_eq!((u[0], u[1], u[5]), (0.5, 0.5, 1.0));
    // Length normalisation: (w/|y|) renormalised: uniform 0.5/2 and 0.5/4 -> 2/3 and 1/3.
    let ul = popo_weights(&groups, &pos, &s, &lens, WeightMode::Uniform, 1.0, true);
    assert!(close(ul[0], 2.0 / 3.0, 1e-12) && close(ul[1], 1.0 / 3.0, 1e-12));
    let sl = popo_weights(&groups, &pos, &s, &lens, WeightMode::Softmax, 1.0, true);
    let (a, b) = (e / (e + 1.0) / 2.0, 1.0 / (e + 1.0) / 4.0);
    assert!(close(sl[0], a / (a + b), 1e-12));
    // Bounded in [0, 1], summing to 1 per group with positives.
    for w in [&w, &w2, &u, &ul, &sl] {
        assert!(w.iter().all(|&x| (0.0..=1.0).contains(&x)));
        assert!(close(w[0] + w[1], 1.0, 1e-12));
    }
    // ESS = 1/sum w^2, mean over the two groups with positives.
    let ess0 = 1.0 / (w[0] * w[0] + w[1] * w[1]);
    assert!(close(mean_ess(&groups, &w), (ess0 + 1.0) / 2.0, 1e-12));
    // All positive: uniform gives 1/G each.
    let all = popo_weights(
        &[vec![0, 1, 2, 3]],
        &[true; 4],
        &[0.0; 4],
        &[1; 4],
        WeightMode::Uniform,
        1.0,
        false,
    );
    assert_eq!(all, vec![0.25; 4]);
}

/// A hand-built case: two rows, prompt length 1, completions of lengths 2 and 1, D = 2.
/// Row 0 is a positive with w = 1, row 1 a negative.
#[test]
fn popo_loss_golden_values() {
    let dev = Device::Cpu;
    let mb = SeqBatch::new(&[&[1], &[2]], &[&[3, 4], &[5]], PAD, &dev).unwrap();
    // T = 3. logprobs/entropy at completion positions only (row 1 position 2 is padding: garbage
    // there must be ignored).
    let out = PolicyOutput {
        logprobs: Tensor::new(&[[0.0f64, -1.0, -3.0], [0.0, -0.5, -99.0]], &dev).unwrap(),
        entropy: Tensor::new(&[[0.0f64, 2.0, 1.0], [0.0, 3.0, 77.0]], &dev).unwrap(),
        hidden: Tensor::new(
            &[
                [[9.0f64, 9.0], [1.0, 0.0], [1.0, 2.0]],
                [[5.0, 5.0], [0.0, 1.0], [8.0, 8.0]],
            ],
            &dev,
        )
        .unwrap(),
    };
    let prep = Prepared {
        seqs: vec![
            SeqPrep {
                coef: 1.0,
                include: true,
                loss_mask: true,
                target_feature: Some(vec![1.0, 0.0]),
                aux_logprobs: Some(vec![-1.0, -3.0]),
                ..Default::default()
            },
            SeqPrep {
                coef: 0.0,
                include: true,
                loss_mask: true,
                aux_logprobs: Some(vec![-0.5]),
                ..Default::default()
            },
        ],
        norm: Norms {
            pos_tokens: 2.0,
            all_tokens: 3.0,
            weight_sum: 1.0,
            ..Default::default()
        },
        stats: vec![],
    };
    let c = common::cfg(
        "popo",
        &[
            "algo.predictor=false",
            "algo.alpha=0.5",
            "algo.beta_ent=0.1",
        ],
    );
    let policy = TinyLm::new(V, 2, 1, DType::F64);
    let algo = Popo::new(&c, &policy, &dev).unwrap();
    let l = algo
        .loss(&out, &MicroBatch::new(&mb, &prep, &[0, 1]))
        .unwrap();
    // L_nll = (1 + 3) / 2 = 2. Feature of row 0 = mean([1,0],[1,2]) = [1,1]; cos with [1,0] = 1/sqrt2.
    // L_sim = -1/sqrt2. L_ent = -(2 + 1 + 3) / 3 = -2. Total = 2 - 0.5/sqrt2 - 0.2.
    let want = 2.0 - 0.5 / 2f64.sqrt() - 0.2;
    let got = l.loss.to_scalar::<f64>().unwrap();
    assert!(close(got, want, 1e-12), "{got} vs {want}");
    let stat = |k: &str| l.stats.iter().find(|(n, _)| *n == k).unwrap().1;
    assert!(close(stat("loss/nll"), 2.0, 1e-12));
    assert!(close(stat("popo/sim_cos"), 1.0 / 2f64.sqrt(), 1e-12));
    assert!(close(stat("train/entropy"), 2.0, 1e-12));
    assert!(stat("popo/kl_target").abs() < 1e-12); // target log-probs equal the policy's
}

/// POPO's full loss against an f64 loop reference over a batch with every edge case: a group
/// with no positive, an all-positive group, a single positive, length-1 completions, padding.
#[test]
fn popo_loss_matches_f64_reference() {
    let dev = Device::Cpu;
    let batch = make_batch(
        &[
            (3, vec![(1.0, 4), (0.0, 2), (1.0, 1), (0.0, 5)]),
            (2, vec![(0.0, 3), (0.0, 1), (0.0, 2)]),
            (4, vec![(1.0, 2), (1.0, 6), (1.0, 1)]),
            (1, vec![(0.0, 2), (1.0, 3)]),
        ],
        3,
    );
    for (mode, t_w, len_norm, pool) in [
        ("softmax", 1.0, false, "mean"),
        ("softmax", 0.5, true, "last"),
        ("uniform", 1.0, false, "mean"),
        ("uniform", 1.0, true, "mean"),
    ] {
        let c = common::cfg(
            "popo",
            &[
                "algo.predictor=false",
                "algo.sim_noise_std=0",
                &format!("algo.weight_mode={mode}"),
                &format!("algo.weight_temperature={t_w}"),
                &format!("algo.length_normalize_weights={len_norm}"),
                &format!("algo.feature_pool={pool}"),
            ],
        );
        let policy = TinyLm::new(V, DM, 5, DType::F64);
        let algo = Popo::new(&c, &policy, &dev).unwrap();
        let prep = algo.prepare(&batch, &ctx(&policy, &dev, 3)).unwrap();
        let rows: Vec<usize> = (0..batch.len()).collect();
        let (got, mb, out) = loss_of(&algo, &policy, &batch, &prep, &rows);

        // Reference in f64 loops.
        let lp = per_tok(&mb, &out.logprobs);
        let ent = per_tok(&mb, &out.entropy);
        let feats: Vec<Vec<f64>> = if pool == "mean" {
            mean_hidden(&mb, &out.hidden)
        } else {
            let h = out.hidden.to_vec3::<f64>().unwrap();
            (0..mb.len())
                .map(|r| h[r][mb.prompt_lens[r] + mb.completion_lens[r] - 1].clone())
                .collect()
        };
        let groups = batch.groups();
        let pos: Vec<bool> = batch.rollouts.iter().map(|r| r.reward > 0.0).collect();
        let mut w = vec![0.0; batch.len()];
        for g in &groups {
            let p: Vec<usize> = g.iter().copied().filter(|&i| pos[i]).collect();
            let raw: Vec<f64> = p
                .iter()
                .map(|&i| {
                    let s = &batch.rollouts[i].sampler_logprobs;
                    let s = s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64;
                    if mode == "uniform" {
                        1.0
                    } else {
                        (s / t_w).exp()
                    }
                })
                .collect();
            let mut raw: Vec<f64> = raw
                .iter()
                .zip(&p)
                .map(|(x, &i)| if len_norm { x / lp[i].len() as f64 } else { *x })
                .collect();
            let z: f64 = raw.iter().sum();
            raw.iter_mut().for_each(|x| *x /= z);
            p.iter().zip(raw).for_each(|(&i, x)| w[i] = x);
        }
        let (mut num, mut den, mut sim_num, mut wsum, mut ent_sum, mut ntok) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for i in 0..batch.len() {
            for t in 0..lp[i].len() {
                if pos[i] {
                    num += w[i] * -lp[i][t];
                    den += 1.0;
                }
                ent_sum += ent[i][t];
                ntok += 1.0;
            }
            if pos[i] {
                // The target is a fork of the untrained policy: f_xi == f_theta here.
                sim_num += w[i] * cos(&feats[i], &feats[i]);
                wsum += w[i];
            }
        }
        let want = num / den + 0.1 * (-sim_num / wsum) + 0.01 * (-ent_sum / ntok);
        assert!(
            close(got, want, 1e-10),
            "{mode} {t_w} {len_norm} {pool}: {got} vs {want}"
        );
        // Target features were stored for positives only.
        for (i, s) in prep.seqs.iter().enumerate() {
            assert_eq!(s.target_feature.is_some(), pos[i]);
        }
    }
}

#[test]
fn popo_batch_without_positives_trains_entropy_only() {
    let dev = Device::Cpu;
    let batch = make_batch(&[(2, vec![(0.0, 3), (0.0, 2)]), (3, vec![(0.0, 1)])], 9);
    let c = common::cfg("popo", &[]);
    let policy = TinyLm::new(V, DM, 2, DType::F64);
    let algo = Popo::new(&c, &policy, &dev).unwrap();
    let prep = algo.prepare(&batch, &ctx(&policy, &dev, 8)).unwrap();
    assert!(prep.seqs.iter().all(|s| s.coef == 0.0));
    let rows: Vec<usize> = (0..batch.len()).collect();
    let mb = seq_batch(&batch, &rows, &dev);
    let out = policy.forward(&mb, 1.0).unwrap();
    let l = algo
        .loss(&out, &MicroBatch::new(&mb, &prep, &rows))
        .unwrap();
    let ent = per_tok(&mb, &out.entropy);
    let n: usize = ent.iter().map(Vec::len).sum();
    let want = -0.01 * ent.iter().flatten().sum::<f64>() / n as f64;
    assert!(close(l.loss.to_scalar::<f64>().unwrap(), want, 1e-12));
    assert!(l.loss.to_scalar::<f64>().unwrap().is_finite());
}

#[test]
fn popo_noise_has_the_configured_scale() {
    let dev = Device::Cpu;
    let items: Vec<(f64, usize)> = (0..40).map(|i| (1.0, 1 + i % 3)).collect();
    let batch = make_batch(&[(2, items)], 4);
    let c = common::cfg("popo", &["algo.sim_noise_std=0.02", "algo.predictor=false"]);
    let policy = TinyLm::new(V, 16, 2, DType::F64);
    let algo = Popo::new(&c, &policy, &dev).unwrap();
    let prep = algo.prepare(&batch, &ctx(&policy, &dev, 64)).unwrap();
    let rows: Vec<usize> = (0..batch.len()).collect();
    let mb = seq_batch(&batch, &rows, &dev);
    let clean = mean_hidden(&mb, &policy.forward_detached(&mb, 1.0).unwrap().hidden);
    let diffs: Vec<f64> = prep
        .seqs
        .iter()
        .zip(&clean)
        .flat_map(|(s, c)| {
            s.target_feature
                .as_ref()
                .unwrap()
                .iter()
                .zip(c)
                .map(|(a, b)| *a as f64 - b)
                .collect::<Vec<_>>()
        })
        .collect();
    let n = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    let std = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(
        mean.abs() < 0.005 && (std - 0.02).abs() < 0.004,
        "mean {mean} std {std}"
    );
}

/// num_iterations > 1: each positive token's NLL is scaled by sg(min(exp(logp - logp_old), c)).
#[test]
fn popo_truncated_ratio_matches_reference() {
    let dev = Device::Cpu;
    let batch = fd_batch();
    let c = common::cfg(
        "popo",
        &[
            "algo.num_iterations=2",
            "algo.alpha=0",
            "algo.beta_ent=0",
            "algo.ratio_clip=1.05",
        ],
    );
    let policy = TinyLm::new(V, DM, 4, DType::F64);
    let algo = Popo::new(&c, &policy, &dev).unwrap();
    let prep = algo.prepare(&batch, &ctx(&policy, &dev, 4)).unwrap();
    nudge(&policy, 0.2);
    let rows: Vec<usize> = (0..batch.len()).collect();
    let (got, mb, out) = loss_of(&algo, &policy, &batch, &prep, &rows);
    let lp = per_tok(&mb, &out.logprobs);
    let (mut num, mut den, mut clipped) = (0.0, 0.0, 0);
    for (i, s) in prep.seqs.iter().enumerate() {
        if batch.rollouts[i].reward <= 0.0 {
            continue;
        }
        let old = s.old_logprobs.as_ref().unwrap();
        for t in 0..lp[i].len() {
            let rho = (lp[i][t] - old[t] as f64).exp();
            clipped += (rho > 1.05) as usize;
            num += s.coef * rho.min(1.05) * -lp[i][t];
            den += 1.0;
        }
    }
    assert!(
        clipped > 0,
        "the perturbation should push some ratios past c"
    );
    assert!(close(got, num / den, 1e-6), "{got} vs {}", num / den);
}

/// after_step moves the target by the EMA formula; tau = 1 keeps it frozen.
#[test]
fn popo_after_step_updates_the_target_by_ema() {
    let dev = Device::Cpu;
    for tau in [0.995, 1.0, 0.0] {
        let c = common::cfg(
            "popo",
            &[&format!("algo.tau={tau}"), "algo.predictor_hidden=8"],
        );
        let policy = TinyLm::new(V, DM, 3, DType::F64);
        let mut algo = Popo::new(&c, &policy, &dev).unwrap();
        let before = algo.target().named_vars()[0]
            .1
            .as_tensor()
            .to_vec2::<f64>()
            .unwrap();
        let e = policy.emb.as_tensor();
        policy.emb.set(&(e + 1.0).unwrap()).unwrap();
        let theta = policy.emb.as_tensor().to_vec2::<f64>().unwrap();
        let online: Vec<_> = policy
            .named_vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        algo.after_step(&online).unwrap();
        let after = algo.target().named_vars()[0]
            .1
            .as_tensor()
            .to_vec2::<f64>()
            .unwrap();
        for i in 0..V {
            for j in 0..DM {
                let want = tau * before[i][j] + (1.0 - tau) * theta[i][j];
                assert!(close(after[i][j], want, 1e-14));
            }
        }
    }
}

/// The rows whose old log-probs POPO reads (and so the rows a vLLM step scores again) are the
/// rows it trains, under every entropy scope.
#[test]
fn popo_reads_the_log_probs_of_the_rows_it_trains() {
    let dev = Device::Cpu;
    let batch = make_batch(
        &[(2, vec![(1.0, 3), (0.0, 2)]), (3, vec![(0.0, 1), (0.0, 2)])],
        9,
    );
    let policy = TinyLm::new(V, DM, 2, DType::F64);
    for (scope, want) in [
        ("all", vec![0, 1, 2, 3]),
        ("positive_groups", vec![0, 1]),
        ("positives", vec![0]),
    ] {
        let c = common::cfg("popo", &[&format!("algo.entropy_scope=\"{scope}\"")]);
        let algo = Popo::new(&c, &policy, &dev).unwrap();
        let read = algo.rows_read(&batch).unwrap();
        let read: Vec<usize> = (0..read.len()).filter(|&i| read[i]).collect();
        let prep = algo.prepare(&batch, &ctx(&policy, &dev, 8)).unwrap();
        assert_eq!(read, prep.included(), "{scope}");
        assert_eq!(read, want, "{scope}");
    }
}
