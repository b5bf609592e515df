//! POPO's full loss as shipped (predictor on, feature noise on, a target that differs from the
//! policy) against an independent f64 reference written from docs/algorithms.md (POPO items 2-9 and
//! 11), value and gradient.
//!
//! The reference is a pure f64 function of the weights: it runs the test model (TinyLm of
//! tests/common) and the predictor h_phi in plain loops, so central finite differences of it give
//! the true gradient, and candle's backward must match them for every policy weight and for
//! predictor weights. A gradient that candle drops (a detached predictor, a fused op) shows up
//! as a mismatch, never as a silent success.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{lcg, TinyLm};
use popo_train::algo::positive_only::Popo;
use popo_train::algo::{Algorithm, MicroBatch, PrepareCtx, Prepared, Rollout, RolloutBatch};
use popo_train::config::{FeaturePool, TrainConfig, WeightMode};
use popo_train::policy::Policy;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::collections::{BTreeMap, HashMap};

const V: usize = 7;
const DM: usize = 5;
const PAD: u32 = 0;
/// Sampling temperature: the policy's logits are divided by it (docs/algorithms.md, "Notation").
const TEMP: f64 = 0.8;
/// `PrepareCtx::seed`: the seed of the feature noise.
const SEED: u64 = 29;
/// predictor.rs's LayerNorm epsilon.
const LN_EPS: f64 = 1e-5;
/// Relative tolerance of the loss value and of each term. The predictor computes in f32 and the
/// target features and old log-probs are stored as f32: the loss agrees to about 3e-8.
const VALUE_TOL: f64 = 2e-7;
/// Gradient tolerance: `|candle - fd| <= GRAD_RTOL * |fd| + GRAD_ATOL * max_k |fd_k|` per tensor.
const GRAD_RTOL: f64 = 1e-5;
const GRAD_ATOL: f64 = 1e-6;

// ---------------------------------------------------------------- the reference

/// Every trainable tensor by name, row-major, in f64: the policy's `emb` [V, D] and `out`
/// [D, V], and the predictor's `predictor.layers.{l}.linear.weight` [out, in], `.linear.bias`,
/// `.norm.weight` (gamma) and `.norm.bias` (beta).
#[derive(Clone)]
struct Weights(Vec<(String, Vec<f64>)>);

impl Weights {
    fn find(&self, name: &str) -> Option<&[f64]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
    fn get(&self, name: &str) -> &[f64] {
        self.find(name)
            .unwrap_or_else(|| panic!("no tensor `{name}`"))
    }
    /// The same weights with entry `k` of tensor `ti` moved by `delta`.
    fn moved(&self, ti: usize, k: usize, delta: f64) -> Weights {
        let mut w = self.clone();
        w.0[ti].1[k] += delta;
        w
    }
}

/// The loss settings the reference reads, from the config.
#[derive(Clone, Debug)]
struct Spec {
    softmax: bool,
    t_w: f64,
    len_norm: bool,
    last: bool,
    noise: f64,
    iters: usize,
    clip: f64,
    alpha: f64,
    beta_ent: f64,
    threshold: f64,
}

impl Spec {
    fn of(c: &TrainConfig) -> Self {
        let a = &c.algo;
        Spec {
            softmax: a.weight_mode == WeightMode::Softmax,
            t_w: a.weight_temperature,
            len_norm: a.length_normalize_weights,
            last: a.feature_pool == FeaturePool::Last,
            noise: a.sim_noise_std,
            iters: a.num_iterations,
            clip: a.ratio_clip,
            alpha: a.alpha,
            beta_ent: a.beta_ent,
            threshold: c.reward.positive_threshold,
        }
    }
}

/// One row of TinyLm (tests/common) in f64: `h_j = tanh(E[x_j] + 0.5 h_{j-1})`, and the
/// distribution of token j is `softmax(h_{j-1} W / T)`. Per completion token: the final hidden
/// state h_j, log pi(x_j | x_<j) and the entropy of that distribution.
struct RowOut {
    hidden: Vec<Vec<f64>>,
    logp: Vec<f64>,
    ent: Vec<f64>,
}

fn lm_row(w: &Weights, prompt: &[u32], completion: &[u32]) -> RowOut {
    let (emb, out) = (w.get("emb"), w.get("out"));
    let seq: Vec<usize> = prompt
        .iter()
        .chain(completion)
        .map(|&x| x as usize)
        .collect();
    let mut hs: Vec<Vec<f64>> = Vec::with_capacity(seq.len());
    for (j, &x) in seq.iter().enumerate() {
        let h: Vec<f64> = (0..DM)
            .map(|d| {
                let prev = if j > 0 { 0.5 * hs[j - 1][d] } else { 0.0 };
                (emb[x * DM + d] + prev).tanh()
            })
            .collect();
        hs.push(h);
    }
    let p = prompt.len();
    let (mut logp, mut ent) = (Vec::new(), Vec::new());
    for j in p..seq.len() {
        let z: Vec<f64> = (0..V)
            .map(|v| (0..DM).map(|d| hs[j - 1][d] * out[d * V + v]).sum::<f64>() / TEMP)
            .collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        logp.push(z[seq[j]] - lse);
        ent.push(-z.iter().map(|v| (v - lse).exp() * (v - lse)).sum::<f64>());
    }
    RowOut {
        hidden: hs[p..].to_vec(),
        logp,
        ent,
    }
}

/// f: the mean of the completion's final hidden states, or the last one (item 5).
fn pool(hidden: &[Vec<f64>], last: bool) -> Vec<f64> {
    if last {
        return hidden[hidden.len() - 1].clone();
    }
    (0..DM)
        .map(|d| hidden.iter().map(|h| h[d]).sum::<f64>() / hidden.len() as f64)
        .collect()
}

/// h_phi (item 5): `[Linear -> LayerNorm -> ReLU] x (L-1) -> Linear`, LayerNorm being
/// `(y - mean) / sqrt(var + eps) * gamma + beta` with the biased variance. No predictor layers
/// in `w` is the `predictor = false` ablation: the identity.
fn predictor_ref(w: &Weights, x: &[f64]) -> Vec<f64> {
    let mut h = x.to_vec();
    for l in 0.. {
        let Some(weight) = w.find(&format!("predictor.layers.{l}.linear.weight")) else {
            break;
        };
        let bias = w.get(&format!("predictor.layers.{l}.linear.bias"));
        let n_in = h.len();
        let mut y: Vec<f64> = (0..bias.len())
            .map(|o| bias[o] + (0..n_in).map(|i| weight[o * n_in + i] * h[i]).sum::<f64>())
            .collect();
        if let Some(gamma) = w.find(&format!("predictor.layers.{l}.norm.weight")) {
            let beta = w.get(&format!("predictor.layers.{l}.norm.bias"));
            let n = y.len() as f64;
            let mean = y.iter().sum::<f64>() / n;
            let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            y = (0..y.len())
                .map(|k| ((y[k] - mean) / (var + LN_EPS).sqrt() * gamma[k] + beta[k]).max(0.0))
                .collect();
        }
        h = y;
    }
    h
}

fn cos(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// What the loss holds fixed (no gradient), from the rollout-time policy and the target.
#[derive(Clone)]
struct Fixed {
    rows: Vec<(Vec<u32>, Vec<u32>)>,
    positive: Vec<bool>,
    /// w_i (item 2).
    w: Vec<f64>,
    /// sg(f_xi + eps) for positives (items 5-6).
    target: Vec<Option<Vec<f64>>>,
    /// logp_old (item 11), when num_iterations > 1.
    old: Option<Vec<Vec<f64>>>,
}

/// Item 2: softmax (or uniform) weights over each group's positives, optionally divided by the
/// length and renormalised. `s[i]` is the length-normalised sequence log-prob.
fn spec_weights(batch: &RolloutBatch, pos: &[bool], s: &[f64], spec: &Spec) -> Vec<f64> {
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, r) in batch.rollouts.iter().enumerate() {
        groups.entry(r.group).or_default().push(i);
    }
    let mut w = vec![0.0; pos.len()];
    for rows in groups.values() {
        let p: Vec<usize> = rows.iter().copied().filter(|&i| pos[i]).collect();
        let z: f64 = p.iter().map(|&i| (s[i] / spec.t_w).exp()).sum();
        for &i in &p {
            w[i] = if spec.softmax {
                (s[i] / spec.t_w).exp() / z
            } else {
                1.0 / p.len() as f64
            };
        }
        if spec.len_norm {
            p.iter()
                .for_each(|&i| w[i] /= batch.rollouts[i].completion.len() as f64);
            let z: f64 = p.iter().map(|&i| w[i]).sum();
            p.iter().for_each(|&i| w[i] /= z);
        }
    }
    w
}

/// The fixed inputs from the spec: `rollout` is the policy at rollout time, `target` is xi. The
/// noise eps ~ N(0, sigma^2) is drawn as popo.rs draws it (StdRng from the step's seed, f32
/// Normal, positive rows in row order), so the reference can reproduce it.
fn fixed_inputs(batch: &RolloutBatch, spec: &Spec, rollout: &Weights, target: &Weights) -> Fixed {
    let rows: Vec<(Vec<u32>, Vec<u32>)> = batch
        .rollouts
        .iter()
        .map(|r| (r.prompt.clone(), r.completion.clone()))
        .collect();
    let positive: Vec<bool> = batch
        .rollouts
        .iter()
        .map(|r| r.reward > spec.threshold)
        .collect();
    let old = (spec.iters > 1).then(|| {
        rows.iter()
            .map(|(p, c)| lm_row(rollout, p, c).logp)
            .collect::<Vec<_>>()
    });
    // One update: the sampler's log-probs are the rollout-time policy's.
    let s: Vec<f64> = (0..rows.len())
        .map(|i| match &old {
            Some(o) => o[i].iter().sum::<f64>() / o[i].len() as f64,
            None => {
                let lp = &batch.rollouts[i].sampler_logprobs;
                lp.iter().map(|&x| x as f64).sum::<f64>() / lp.len() as f64
            }
        })
        .collect();
    let w = spec_weights(batch, &positive, &s, spec);
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let normal = Normal::new(0f32, spec.noise as f32).unwrap();
    let target = (0..rows.len())
        .map(|i| {
            positive[i].then(|| {
                let mut f = pool(&lm_row(target, &rows[i].0, &rows[i].1).hidden, spec.last);
                if spec.noise > 0.0 {
                    f.iter_mut()
                        .for_each(|v| *v += normal.sample(&mut rng) as f64);
                }
                f
            })
        })
        .collect();
    Fixed {
        rows,
        positive,
        w,
        target,
        old,
    }
}

#[derive(Clone, Copy, Debug)]
struct Terms {
    nll: f64,
    sim: f64,
    ent: f64,
    total: f64,
}

/// Items 3 and 6-8 (and 11): the loss at weights `w`. The truncated ratio's log-probs come from
/// `rho_at` (the point where finite differences are taken: it is a stop-gradient factor).
fn reference_loss(w: &Weights, fx: &Fixed, spec: &Spec, rho_at: &Weights) -> Terms {
    let (mut nll_num, mut pos_tokens, mut sim_num, mut w_sum) = (0.0, 0.0, 0.0, 0.0);
    let (mut ent_sum, mut all_tokens) = (0.0, 0.0);
    for (i, (prompt, completion)) in fx.rows.iter().enumerate() {
        let r = lm_row(w, prompt, completion);
        ent_sum += r.ent.iter().sum::<f64>();
        all_tokens += r.ent.len() as f64;
        if !fx.positive[i] {
            continue;
        }
        let at = fx
            .old
            .as_ref()
            .map(|_| lm_row(rho_at, prompt, completion).logp);
        for t in 0..r.logp.len() {
            let rho = match (&fx.old, &at) {
                (Some(old), Some(at)) => (at[t] - old[i][t]).exp().min(spec.clip),
                _ => 1.0,
            };
            nll_num += fx.w[i] * rho * -r.logp[t];
            pos_tokens += 1.0;
        }
        let online = predictor_ref(w, &pool(&r.hidden, spec.last));
        sim_num += fx.w[i] * cos(&online, fx.target[i].as_ref().unwrap());
        w_sum += fx.w[i];
    }
    let nll = if pos_tokens > 0.0 {
        nll_num / pos_tokens
    } else {
        0.0
    };
    let sim = if w_sum > 0.0 { -sim_num / w_sum } else { 0.0 };
    let ent = -ent_sum / all_tokens;
    let total = nll + spec.alpha * sim + spec.beta_ent * ent;
    Terms {
        nll,
        sim,
        ent,
        total,
    }
}

// ---------------------------------------------------------------- the code under test

/// A group with two positives of different lengths and two negatives, a group with no
/// positive, an all-positive group, a group with a single positive; length-1 completions and
/// padding. Tokens and sampler log-probs are pseudo-random.
fn batch() -> RolloutBatch {
    let spec: [(usize, &[(f64, usize)]); 4] = [
        (3, &[(1.0, 4), (0.0, 2), (1.0, 1), (0.0, 5)]),
        (2, &[(0.0, 3), (0.0, 1), (0.0, 2)]),
        (4, &[(1.0, 2), (1.0, 6), (1.0, 3)]),
        (1, &[(0.0, 2), (1.0, 3)]),
    ];
    let token = |u: &f64| 1 + (u * (V - 1) as f64) as u32;
    let mut rollouts = Vec::new();
    for (g, (plen, items)) in spec.iter().enumerate() {
        let prompt: Vec<u32> = lcg(40 + g as u64, *plen).iter().map(token).collect();
        for (k, &(reward, clen)) in items.iter().enumerate() {
            let u = lcg(4000 + 10 * g as u64 + k as u64, 2 * clen);
            rollouts.push(Rollout {
                group: g,
                prompt: prompt.clone(),
                completion: u[..clen].iter().map(token).collect(),
                sampler_logprobs: u[clen..].iter().map(|u| -(0.2 + 2.0 * u) as f32).collect(),
                reward,
                truncated: false,
            });
        }
    }
    RolloutBatch { rollouts }
}

/// `t` plus seeded uniform noise in [-half_width, half_width].
fn perturbed(t: &Tensor, seed: u64, half_width: f64) -> Tensor {
    let noise: Vec<f64> = lcg(seed, t.elem_count())
        .into_iter()
        .map(|u| (2.0 * u - 1.0) * half_width)
        .collect();
    let noise = Tensor::from_vec(noise, t.shape(), t.device()).unwrap();
    (t + noise.to_dtype(t.dtype()).unwrap()).unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    let t = t.to_dtype(DType::F64).unwrap();
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// theta and phi: the policy's weights, and the predictor's as the algorithm's state holds them
/// (`predictor.` + the predictor's own names).
fn online_weights(policy: &TinyLm, algo: &Popo) -> Weights {
    let mut w: Vec<(String, Vec<f64>)> = policy
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, flat(v.as_tensor())))
        .collect();
    for (n, t) in algo.state().unwrap() {
        if let Some(name) = n.strip_prefix("predictor.") {
            w.push((name.to_string(), flat(&t)));
        }
    }
    Weights(w)
}

/// xi, from the algorithm's state (`target.` + the policy's names).
fn target_weights(algo: &Popo) -> Weights {
    let w = algo.state().unwrap().into_iter();
    Weights(
        w.filter_map(|(n, t)| Some((n.strip_prefix("target.")?.to_string(), flat(&t))))
            .collect(),
    )
}

/// One configuration, prepared: the target and the predictor moved off their initial values
/// through `load_state` (xi != theta, so cos < 1; gamma != 1 and biases != 0), and with several
/// updates the policy moved off its rollout-time weights (so rho != 1).
struct Case {
    label: String,
    spec: Spec,
    policy: TinyLm,
    algo: Popo,
    batch: RolloutBatch,
    prep: Prepared,
    fixed: Fixed,
    /// The policy at rollout time, and xi.
    rollout: Weights,
    target: Weights,
}

impl Case {
    fn new(label: &str, sets: &[&str]) -> Self {
        let dev = Device::Cpu;
        let c = common::cfg("popo", sets);
        let spec = Spec::of(&c);
        let policy = TinyLm::new(V, DM, 5, DType::F64);
        let mut algo = Popo::new(&c, &policy, &dev).unwrap();
        let state = algo.state().unwrap().into_iter().enumerate();
        let state: HashMap<String, Tensor> = state
            .map(|(k, (n, t))| (n, perturbed(&t, 900 + k as u64, 0.3)))
            .collect();
        algo.load_state(&state).unwrap();
        let batch = batch();
        let rollout = online_weights(&policy, &algo);
        let ctx = PrepareCtx {
            policy: &policy,
            temperature: TEMP,
            chunk: 3,
            width: 1,
            pad_id: PAD,
            device: &dev,
            seed: SEED,
            max_completion_len: 6,
        };
        let prep = algo.prepare(&batch, &ctx).unwrap();
        if spec.iters > 1 {
            let e = policy.emb.as_tensor();
            policy.emb.set(&perturbed(e, 77, 0.5)).unwrap();
        }
        let target = target_weights(&algo);
        let fixed = fixed_inputs(&batch, &spec, &rollout, &target);
        Case {
            label: label.to_string(),
            spec,
            policy,
            algo,
            batch,
            prep,
            fixed,
            rollout,
            target,
        }
    }

    /// The loss of `rows` in one micro-batch: its logged terms, and the gradient of every
    /// trainable tensor by name (zeros where backward gave none).
    fn run(&self, rows: &[usize]) -> (HashMap<&'static str, f64>, HashMap<String, Vec<f64>>) {
        let mb = self.batch.seq_batch(rows, PAD, &Device::Cpu).unwrap();
        let out = self.policy.forward(&mb, TEMP).unwrap();
        let l = self
            .algo
            .loss(&out, &MicroBatch::new(&mb, &self.prep, rows))
            .unwrap();
        let grads = l.loss.backward().unwrap();
        let mut vars = self.policy.named_vars();
        vars.extend(self.algo.extra_vars());
        let g = vars
            .into_iter()
            .map(|(n, v)| {
                let g = grads.get(v.as_tensor()).map(flat);
                (n, g.unwrap_or_else(|| vec![0.0; v.elem_count()]))
            })
            .collect();
        let mut stats: HashMap<&'static str, f64> = l.stats.into_iter().collect();
        stats.insert(
            "total",
            l.loss.to_dtype(DType::F64).unwrap().to_scalar().unwrap(),
        );
        (stats, g)
    }

    fn theta(&self) -> Weights {
        online_weights(&self.policy, &self.algo)
    }
}

// ---------------------------------------------------------------- the checks

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

/// The weights and target features `prepare` stored, then the loss and each of its terms, on the
/// whole batch in one micro-batch and summed over micro-batches of 3 rows.
fn check_value(case: &Case) -> Terms {
    let (fx, l) = (&case.fixed, &case.label);
    let want = reference_loss(&case.theta(), fx, &case.spec, &case.theta());
    for (i, s) in case.prep.seqs.iter().enumerate() {
        assert!(
            close(s.coef, fx.w[i], 1e-6),
            "{l}: w[{i}] {} vs {}",
            s.coef,
            fx.w[i]
        );
        let got = s
            .target_feature
            .as_ref()
            .map(|f| f.iter().map(|&x| x as f64));
        match (got, &fx.target[i]) {
            (Some(got), Some(want)) => got.zip(want).for_each(|(g, w)| {
                assert!(
                    (g - w).abs() < 1e-6,
                    "{l}: row {i} target feature {g} vs {w}"
                )
            }),
            (None, None) => {}
            (g, w) => panic!("{l}: row {i}: target feature {:?} vs {w:?}", g.is_some()),
        }
    }
    let rows: Vec<usize> = (0..case.batch.len()).collect();
    let (got, _) = case.run(&rows);
    let mut worst = 0.0f64;
    for (key, want) in [
        ("total", want.total),
        ("loss/nll", want.nll),
        ("loss/sim", want.sim),
        ("loss/ent", want.ent),
        ("popo/sim_cos", -want.sim),
    ] {
        worst = worst.max((got[key] - want).abs() / (1.0 + want.abs().max(got[key].abs())));
        assert!(
            close(got[key], want, VALUE_TOL),
            "{l}: {key} {} vs reference {want}",
            got[key]
        );
    }
    eprintln!("{l}: worst relative error of the loss terms {worst:.2e}");
    let summed: f64 = rows.chunks(3).map(|r| case.run(r).0["total"]).sum();
    assert!(
        close(summed, want.total, VALUE_TOL),
        "{l}: micro-batches of 3 sum to {summed} vs reference {}",
        want.total
    );
    want
}

/// Indices of a tensor to differentiate: all of a small one, 40 spread over a large one.
fn probe_indices(n: usize) -> Vec<usize> {
    if n <= 64 {
        (0..n).collect()
    } else {
        (0..40).map(|j| j * n / 40).chain([n - 1]).collect()
    }
}

/// candle's backward against central finite differences of the reference for every policy
/// weight and a spread of every predictor tensor. Also checks that the similarity term moves
/// the gradient of the policy and of the predictor far beyond the tolerance, so a dropped
/// similarity gradient cannot hide inside it.
fn check_gradients(case: &Case) {
    let l = &case.label;
    let rows: Vec<usize> = (0..case.batch.len()).collect();
    let (_, grads) = case.run(&rows);
    let base = case.theta();
    let no_sim = Spec {
        alpha: 0.0,
        ..case.spec.clone()
    };
    let h = 1e-5;
    let fd = |ti: usize, k: usize, spec: &Spec| {
        let f = |d: f64| reference_loss(&base.moved(ti, k, d), &case.fixed, spec, &base).total;
        (f(h) - f(-h)) / (2.0 * h)
    };
    let (mut worst, mut sim_share) = (0.0f64, Vec::new());
    for (ti, (name, values)) in base.0.iter().enumerate() {
        let idx = probe_indices(values.len());
        let want: Vec<f64> = idx.iter().map(|&k| fd(ti, k, &case.spec)).collect();
        let got: Vec<f64> = idx.iter().map(|&k| grads[name][k]).collect();
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{l}: {name}: the reference gradient is zero");
        for ((&k, g), w) in idx.iter().zip(&got).zip(&want) {
            let err = (g - w).abs();
            worst = worst.max(err / (GRAD_RTOL * w.abs() + GRAD_ATOL * scale));
            assert!(
                err <= GRAD_RTOL * w.abs() + GRAD_ATOL * scale,
                "{l}: d/d {name}[{k}]: candle {g} vs finite differences {w} (scale {scale})"
            );
        }
        let sim: f64 = idx
            .iter()
            .zip(&want)
            .map(|(&k, w)| (w - fd(ti, k, &no_sim)).abs())
            .fold(0.0, f64::max);
        sim_share.push((name.clone(), sim / scale));
    }
    eprintln!("{l}: worst gradient error {worst:.3} of the tolerance");
    eprintln!("{l}: share of alpha * L_sim in each gradient {sim_share:?}");
    // `out` (the LM head) comes after the features: L_sim has no gradient there.
    for (name, share) in sim_share.iter().filter(|(n, _)| n != "out") {
        assert!(
            *share > 100.0 * GRAD_ATOL,
            "{l}: {name}: the similarity term moves the gradient by only {share} of its scale"
        );
    }
}

/// The case exercises what it sets: flipping any switch (pool, weight mode, length
/// normalisation, noise, predictor, truncated ratio) moves the reference loss by more than
/// 100 times the value tolerance, so code that ignored the switch would fail `check_value`.
fn check_sensitivity(case: &Case, want: Terms) {
    let (s, l) = (&case.spec, &case.label);
    let with = |change: &dyn Fn(&mut Spec)| {
        let mut v = s.clone();
        change(&mut v);
        v
    };
    let mut variants = vec![
        ("other pool", with(&|v| v.last = !v.last)),
        ("other weight mode", with(&|v| v.softmax = !v.softmax)),
        ("length norm flipped", with(&|v| v.len_norm = !v.len_norm)),
    ];
    if s.noise > 0.0 {
        variants.push(("no noise", with(&|v| v.noise = 0.0)));
    }
    if s.iters > 1 {
        variants.push(("no clip", with(&|v| v.clip = f64::INFINITY)));
    }
    let theta = case.theta();
    let mut moved: Vec<(&str, f64)> = variants
        .iter()
        .map(|(name, v)| {
            let fx = fixed_inputs(&case.batch, v, &case.rollout, &case.target);
            (*name, reference_loss(&theta, &fx, v, &theta).total)
        })
        .collect();
    let mut no_predictor = theta.clone();
    no_predictor.0.retain(|(n, _)| !n.starts_with("predictor."));
    if no_predictor.0.len() < theta.0.len() {
        let r = reference_loss(&no_predictor, &case.fixed, s, &theta).total;
        moved.push(("identity predictor", r));
    }
    if case.fixed.old.is_some() {
        let no_ratio = Fixed {
            old: None,
            ..case.fixed.clone()
        };
        let r = reference_loss(&theta, &no_ratio, s, &theta).total;
        moved.push(("rho = 1", r));
    }
    for (name, v) in moved {
        assert!(
            (v - want.total).abs() > 100.0 * VALUE_TOL * (1.0 + want.total.abs()),
            "{l}: {name} gives {v}, too close to {} for the test to notice",
            want.total
        );
    }
}

fn check_case(label: &str, sets: &[&str]) {
    let case = Case::new(label, sets);
    let want = check_value(&case);
    check_sensitivity(&case, want);
    check_gradients(&case);
}

// ---------------------------------------------------------------- the tests

/// The preset as shipped: softmax weights, mean pool, predictor L = 2 with 1024 hidden units,
/// noise 0.02, alpha 0.1, beta_ent 0.01, one update.
#[test]
fn popo_reference_shipped_defaults() {
    check_case("defaults", &[]);
}

#[test]
fn popo_reference_softmax_last_pool_length_normalised_no_noise() {
    check_case(
        "softmax/last/len-norm/no noise",
        &[
            "algo.feature_pool=last",
            "algo.length_normalize_weights=true",
            "algo.sim_noise_std=0",
            "algo.weight_temperature=0.5",
            "algo.alpha=1",
            "algo.beta_ent=0.1",
            "algo.predictor_hidden=16",
        ],
    );
}

#[test]
fn popo_reference_uniform_mean_pool_length_normalised() {
    check_case(
        "uniform/mean/len-norm/noise 0.05",
        &[
            "algo.weight_mode=uniform",
            "algo.length_normalize_weights=true",
            "algo.sim_noise_std=0.05",
            "algo.alpha=1",
            "algo.predictor_hidden=16",
        ],
    );
}

/// num_iterations = 2 with c = 1.05: some positive tokens' ratios are clipped, others not.
#[test]
fn popo_reference_uniform_last_pool_truncated_ratio() {
    check_case(
        "uniform/last/2 iterations",
        &[
            "algo.weight_mode=uniform",
            "algo.feature_pool=last",
            "algo.num_iterations=2",
            "algo.ratio_clip=1.05",
            "algo.alpha=0.5",
            "algo.beta_ent=0.05",
            "algo.predictor_hidden=16",
        ],
    );
}

/// num_iterations = 3 with the default c = 1.28, a three-layer predictor, softmax weights with
/// length normalisation.
#[test]
fn popo_reference_softmax_three_iterations_deep_predictor() {
    check_case(
        "softmax/mean/len-norm/3 iterations/L=3",
        &[
            "algo.num_iterations=3",
            "algo.length_normalize_weights=true",
            "algo.predictor_layers=3",
            "algo.predictor_hidden=12",
            "algo.alpha=1",
        ],
    );
}

/// `predictor = false` (identity) with the target moved off the policy: the cosine is not 1.
#[test]
fn popo_reference_identity_predictor_moved_target() {
    check_case(
        "identity predictor",
        &[
            "algo.predictor=false",
            "algo.alpha=1",
            "algo.sim_noise_std=0.05",
        ],
    );
}
