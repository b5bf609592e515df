//! Every loss against independently computed values: f64 reference functions written as plain
//! loops over the model's outputs, hand-derived golden numbers, edge cases, a finite-difference
//! gradient check in f64, and micro-batch accumulation equal to one big batch.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{lcg, TinyLm};
use popo_train::algo::grpo::{advantages, Grpo};
use popo_train::algo::positive_only::{mean_ess, popo_weights, Popo};
use popo_train::algo::raft::Raft;
use popo_train::algo::reinforce::{reinforce_coefs, Reinforce};
use popo_train::algo::{
    Algorithm, MicroBatch, Norms, PrepareCtx, Prepared, Rollout, RolloutBatch, SeqPrep,
};
use popo_train::config::{AdvantageMode, AlgoName, LossAgg, TrainConfig, WeightMode};
use popo_train::optim::GradAccum;
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

// ---------------------------------------------------------------- weights and advantages

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

// ---------------------------------------------------------------- POPO

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

// ---------------------------------------------------------------- GRPO family

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

// ---------------------------------------------------------------- gradients

fn total_loss(
    algo: &dyn Algorithm,
    policy: &TinyLm,
    batch: &RolloutBatch,
    prep: &Prepared,
    mb_size: usize,
) -> (f64, GradAccum) {
    let dev = Device::Cpu;
    let mut params = policy.named_vars();
    params.extend(algo.extra_vars());
    let vars: Vec<_> = params.into_iter().map(|(_, v)| v).collect();
    let mut acc = GradAccum::new(&vars);
    let rows = prep.included();
    let mut total = 0.0;
    for chunk in rows.chunks(mb_size) {
        let mb = seq_batch(batch, chunk, &dev);
        let out = policy.forward(&mb, 1.0).unwrap();
        let l = algo.loss(&out, &MicroBatch::new(&mb, prep, chunk)).unwrap();
        total += l
            .loss
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        acc.add(&l.loss.backward().unwrap()).unwrap();
    }
    (total, acc)
}

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

/// Central finite differences in f64 against backward for POPO, GRPO and W-REINFORCE.
#[test]
fn finite_difference_gradients_f64() {
    let dev = Device::Cpu;
    let batch = fd_batch();
    for (preset, sets) in [
        // (POPO's truncated ratio is a stop-gradient factor, which finite differences cannot hold
        // fixed: it is checked against its reference value in `popo_truncated_ratio_matches_reference`.)
        (
            "popo",
            vec![
                "algo.predictor=false",
                "algo.alpha=0.5",
                "algo.beta_ent=0.1",
            ],
        ),
        ("grpo", vec!["algo.num_iterations=2", "algo.beta_kl=0.1"]),
        ("w_reinforce", vec!["algo.psr_weight=0.3"]),
    ] {
        let c = common::cfg(preset, &sets);
        let policy = TinyLm::new(V, DM, 13, DType::F64);
        let algo = popo_train::setup::algorithm(&c, &policy, &dev).unwrap();
        let prep = algo.prepare(&batch, &ctx(&policy, &dev, 16)).unwrap();
        // Step away from the old weights so ratios are not 1 (but stay inside the clip range).
        nudge(&policy, 0.02);
        let (_, acc) = total_loss(algo.as_ref(), &policy, &batch, &prep, 16);
        for (vi, var) in [&policy.emb, &policy.out].into_iter().enumerate() {
            let grad = acc.grads[vi]
                .as_ref()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let n = grad.len();
            for k in [1, n / 3, n / 2, n - 2] {
                let base = var
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap();
                let eval = |delta: f64| {
                    let mut v = base.clone();
                    v[k] += delta;
                    var.set(&Tensor::from_vec(v, var.shape(), &dev).unwrap())
                        .unwrap();
                    loss_of(algo.as_ref(), &policy, &batch, &prep, &prep.included()).0
                };
                let h = 1e-5;
                let fd = (eval(h) - eval(-h)) / (2.0 * h);
                var.set(&Tensor::from_vec(base, var.shape(), &dev).unwrap())
                    .unwrap();
                let rel = (fd - grad[k]).abs() / (1e-8 + fd.abs().max(grad[k].abs()));
                assert!(
                    rel < 1e-5 || (fd - grad[k]).abs() < 1e-9,
                    "{preset} var {vi}[{k}]: fd {fd} vs grad {}",
                    grad[k]
                );
            }
        }
    }
}

/// Micro-batching + accumulation gives the same loss and gradient as one big batch.
#[test]
fn micro_batches_accumulate_to_the_full_batch_gradient() {
    let dev = Device::Cpu;
    let batch = fd_batch();
    for preset in popo_train::config::PRESETS {
        let c = common::cfg(preset, &["algo.predictor_hidden=8"]);
        let policy = TinyLm::new(V, DM, 3, DType::F64);
        let algo = popo_train::setup::algorithm(&c, &policy, &dev).unwrap();
        let prep = algo.prepare(&batch, &ctx(&policy, &dev, 3)).unwrap();
        let (l1, g1) = total_loss(algo.as_ref(), &policy, &batch, &prep, 100);
        let (l2, g2) = total_loss(algo.as_ref(), &policy, &batch, &prep, 2);
        assert!(close(l1, l2, 1e-6), "{preset}: {l1} vs {l2}");
        for (a, b) in g1.grads.iter().zip(&g2.grads) {
            let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            let diff = common::abs_max(&(a - b).unwrap());
            let scale = common::abs_max(a);
            assert!(diff <= 1e-5 * (1.0 + scale), "{preset}: grad diff {diff}");
        }
    }
}

/// Every policy parameter and every predictor parameter gets a non-zero gradient from POPO's loss.
#[test]
fn popo_loss_reaches_every_parameter() {
    let dev = Device::Cpu;
    let batch = fd_batch();
    let c = common::cfg(
        "popo",
        &["algo.predictor_hidden=16", "algo.predictor_layers=3"],
    );
    let policy = TinyLm::new(V, DM, 3, DType::F32);
    let algo = popo_train::setup::algorithm(&c, &policy, &dev).unwrap();
    // No move is needed: the predictor (on by default) makes h_phi(f_theta) differ from f_xi even
    // while the target equals the policy, so L_sim has a gradient through the features. Its values,
    // with the target moved, are checked in tests/popo_reference.rs.
    let prep = algo.prepare(&batch, &ctx(&policy, &dev, 3)).unwrap();
    let (_, acc) = total_loss(algo.as_ref(), &policy, &batch, &prep, 4);
    let mut names: Vec<String> = policy.named_vars().into_iter().map(|(n, _)| n).collect();
    names.extend(algo.extra_vars().into_iter().map(|(n, _)| n));
    assert_eq!(names.len(), 2 + 10);
    for (name, g) in names.iter().zip(&acc.grads) {
        let g = g.as_ref().unwrap_or_else(|| panic!("{name}: no gradient"));
        let n = common::abs_sum(g);
        assert!(n > 0.0 && n.is_finite(), "{name}: gradient norm {n}");
    }
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
