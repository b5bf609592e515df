//! POPO (docs/algorithms.md, "POPO"): weighted NLL over positives with bounded softmax weights, a BYOL
//! similarity term against an EMA target, an entropy bonus over all completion tokens, and the
//! k3 KL(theta || xi) logged for monitoring only.

use super::*;
use crate::config::{AlgoConfig, EntropyScope, FeaturePool, WeightMode};
use crate::metrics::names;
use crate::params::Params;
use crate::predictor::Predictor;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

const TARGET_PREFIX: &str = "target.";
const PREDICTOR_PREFIX: &str = "predictor.";

pub struct Popo {
    cfg: AlgoConfig,
    threshold: f64,
    /// xi: the momentum copy of the policy, for its no-graph forwards.
    target: Box<dyn Policy>,
    /// xi's weights as the EMA updates them (with f32 masters when xi computes in bf16 / f16).
    target_params: Params,
    /// h_phi; None is the `predictor = false` ablation (identity).
    predictor: Option<Predictor>,
}

impl Popo {
    pub fn new(cfg: &TrainConfig, policy: &dyn Policy, device: &Device) -> Result<Self> {
        let a = &cfg.algo;
        let predictor = if a.predictor {
            let d = policy.hidden_size();
            Some(Predictor::new(
                d,
                a.predictor_hidden,
                a.predictor_layers,
                cfg.run.seed ^ 0x9e37_79b9,
                device,
            )?)
        } else {
            None
        };
        let target = policy.fork()?;
        let target_params =
            Params::new(target.named_vars(), cfg.run.master_weights.keeps_master())?;
        Ok(Self {
            cfg: a.clone(),
            threshold: cfg.reward.positive_threshold,
            target,
            target_params,
            predictor,
        })
    }

    pub fn target(&self) -> &dyn Policy {
        self.target.as_ref()
    }
}

/// POPO's bounded importance weights for one batch (item 2 of the spec), computed in f64.
/// `seq_logp[i]` is the length-normalised sequence log-prob s_i. Negatives get 0; each group's
/// positives sum to 1.
pub fn popo_weights(
    groups: &[Vec<usize>],
    positive: &[bool],
    seq_logp: &[f64],
    lens: &[usize],
    mode: WeightMode,
    weight_temperature: f64,
    length_normalize: bool,
) -> Vec<f64> {
    let mut w = vec![0.0; positive.len()];
    for g in groups {
        let pos: Vec<usize> = g.iter().copied().filter(|&i| positive[i]).collect();
        if pos.is_empty() {
            continue;
        }
        match mode {
            WeightMode::Uniform => pos.iter().for_each(|&i| w[i] = 1.0 / pos.len() as f64),
            WeightMode::Softmax => {
                let z: Vec<f64> = pos
                    .iter()
                    .map(|&i| seq_logp[i] / weight_temperature)
                    .collect();
                let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
                let s: f64 = e.iter().sum();
                pos.iter().zip(&e).for_each(|(&i, v)| w[i] = v / s);
            }
        }
        if length_normalize {
            pos.iter().for_each(|&i| w[i] /= lens[i].max(1) as f64);
            let s: f64 = pos.iter().map(|&i| w[i]).sum();
            pos.iter().for_each(|&i| w[i] /= s);
        }
    }
    w
}

/// The rows POPO's entropy bonus covers (`algo.entropy_scope`), which are also the rows of the
/// training forward: negatives contribute through the entropy bonus alone.
pub fn entropy_rows(scope: EntropyScope, groups: &[Vec<usize>], positive: &[bool]) -> Vec<bool> {
    match scope {
        EntropyScope::All => vec![true; positive.len()],
        EntropyScope::Positives => positive.to_vec(),
        EntropyScope::PositiveGroups => {
            let mut keep = vec![false; positive.len()];
            for g in groups.iter().filter(|g| g.iter().any(|&i| positive[i])) {
                g.iter().for_each(|&i| keep[i] = true);
            }
            keep
        }
    }
}

/// Mean over groups with positives of the effective sample size 1 / sum w^2.
pub fn mean_ess(groups: &[Vec<usize>], w: &[f64]) -> f64 {
    let ess: Vec<f64> = groups
        .iter()
        .filter_map(|g| {
            let s2: f64 = g.iter().map(|&i| w[i] * w[i]).sum();
            (s2 > 0.0).then(|| 1.0 / s2)
        })
        .collect();
    if ess.is_empty() {
        0.0
    } else {
        ess.iter().sum::<f64>() / ess.len() as f64
    }
}

impl Algorithm for Popo {
    fn name(&self) -> &'static str {
        "popo"
    }

    fn extra_vars(&self) -> Vec<(String, Var)> {
        self.predictor
            .as_ref()
            .map(|p| p.named_vars())
            .unwrap_or_default()
    }

    /// The rows of the training forward: `s_i` of a positive, and the importance weights of
    /// every row the loss sees. The old log-probs of the others are never read.
    fn rows_read(&self, batch: &RolloutBatch) -> Option<Vec<bool>> {
        let pos = positives(batch, self.threshold);
        Some(entropy_rows(self.cfg.entropy_scope, &batch.groups(), &pos))
    }

    fn prepare(&self, batch: &RolloutBatch, ctx: &PrepareCtx) -> Result<Prepared> {
        let n = batch.len();
        let groups = batch.groups();
        let pos = positives(batch, self.threshold);
        let lens: Vec<usize> = batch.rollouts.iter().map(|r| r.completion.len()).collect();
        // With several updates per batch the exact rollout-time log-probs come from a no-graph
        // forward; with one update the sampler's (same weights, same temperature) suffice for s_i.
        let old = if self.cfg.num_iterations > 1 {
            Some(old_logprobs(batch, ctx)?)
        } else {
            None
        };
        let seq_logp: Vec<f64> = (0..n)
            .map(|i| {
                let lp: &[f32] = old
                    .as_ref()
                    .map(|o| o[i].as_slice())
                    .unwrap_or(&batch.rollouts[i].sampler_logprobs);
                lp.iter().map(|&v| v as f64).sum::<f64>() / lp.len().max(1) as f64
            })
            .collect();
        let w = popo_weights(
            &groups,
            &pos,
            &seq_logp,
            &lens,
            self.cfg.weight_mode,
            self.cfg.weight_temperature,
            self.cfg.length_normalize_weights,
        );

        // The rows in the training forward: those the entropy bonus covers (every positive is
        // among them). The target scores only these.
        let include = entropy_rows(self.cfg.entropy_scope, &groups, &pos);
        let rows: Vec<usize> = (0..n).filter(|&i| include[i]).collect();
        let pool_last = self.cfg.feature_pool == FeaturePool::Last;
        let mut target =
            score_rows(self.target.as_ref(), &batch.subset(&rows), ctx, pool_last)?.into_iter();
        let mut rng = rand::rngs::StdRng::seed_from_u64(ctx.seed);
        let noise = Normal::new(0.0f32, self.cfg.sim_noise_std as f32)?;
        let mut old = old.map(|o| o.into_iter().map(Some).collect::<Vec<_>>());
        let mut seqs = Vec::with_capacity(n);
        for i in 0..n {
            let scored = if include[i] { target.next() } else { None };
            let (aux_logprobs, target_feature) = match scored {
                Some((lp, mut feat)) => {
                    let f = pos[i].then(|| {
                        if self.cfg.sim_noise_std > 0.0 {
                            feat.iter_mut().for_each(|v| *v += noise.sample(&mut rng));
                        }
                        feat
                    });
                    (Some(lp), f)
                }
                None => (None, None),
            };
            seqs.push(SeqPrep {
                coef: w[i],
                include: include[i],
                loss_mask: include[i],
                old_logprobs: old.as_mut().and_then(|o| o[i].take()),
                aux_logprobs,
                target_feature,
            });
        }
        let norm = Norms {
            pos_tokens: (0..n).filter(|&i| pos[i]).map(|i| lens[i] as f64).sum(),
            all_tokens: tokens_where(batch, &include),
            loss_tokens: 0.0,
            weight_sum: w.iter().sum(),
            loss_seqs: 0.0,
            sum_norm: 0.0,
        };
        let stats = vec![
            ("popo/weight_max", w.iter().cloned().fold(0.0, f64::max)),
            ("popo/ess", mean_ess(&groups, &w)),
            ("popo/tau", self.cfg.tau),
            // 1 when the step holds no positive: with `entropy_scope = all` its update is the
            // entropy bonus alone, otherwise there is no update (and no EMA step).
            (names::NO_POSITIVE_STEP, f64::from(!pos.iter().any(|&p| p))),
        ];
        Ok(Prepared { seqs, norm, stats })
    }

    fn loss(&self, out: &PolicyOutput, x: &MicroBatch) -> Result<LossOutput> {
        let (mb, prep, rows) = (x.seqs, x.prep, x.rows);
        let lp = &out.logprobs; // [b, T]
        let dtype = lp.dtype();
        let dev = mb.device();
        let m = mb.completion_mask().to_dtype(dtype)?; // [b, T]

        // L_nll: weighted NLL over positives / positive-token count.
        let nll = (weighted_nll_sum(lp, x, self.cfg.ratio_clip)? / nz(prep.norm.pos_tokens))?;

        // L_sim: -sum w cos(h(f_theta), sg(f_xi + eps)) / sum w, over rows with a target feature.
        let w: Vec<f64> = rows.iter().map(|&i| prep.seqs[i].coef).collect();
        let has_pos = rows.iter().any(|&i| prep.seqs[i].target_feature.is_some());
        let (sim, cos_sum) = if has_pos && prep.norm.weight_sum > 0.0 {
            let mask = match self.cfg.feature_pool {
                FeaturePool::Mean => mb.completion_mask().clone(),
                FeaturePool::Last => mb.last_token_mask()?,
            };
            let f = pool_features(&out.hidden.to_dtype(dtype)?, &mask)?; // [b, D]
            let p = match &self.predictor {
                Some(h) => h.forward(&f.to_dtype(DType::F32)?)?.to_dtype(dtype)?,
                None => f,
            };
            let d = p.dim(1)?;
            let tgt: Vec<f32> = rows
                .iter()
                .flat_map(|&i| {
                    prep.seqs[i]
                        .target_feature
                        .clone()
                        .unwrap_or_else(|| vec![0.0; d])
                })
                .collect();
            let tgt = Tensor::from_vec(tgt, (rows.len(), d), dev)?.to_dtype(dtype)?; // [b, D]
            let cos = cosine_rows(&p, &tgt)?; // [b]
            let wsum = (cos * row_tensor(&w, dtype, dev)?)?.sum_all()?;
            let cos_mean = scalar(&wsum)? / prep.norm.weight_sum;
            ((wsum.neg()? / prep.norm.weight_sum)?, cos_mean)
        } else {
            (Tensor::zeros((), dtype, dev)?, 0.0)
        };

        // L_ent: minus the mean entropy over all completion tokens (positives and negatives).
        let ent_sum = (&out.entropy * &m)?.sum_all()?;
        let ent = (ent_sum.neg()? / nz(prep.norm.all_tokens))?;

        let total = ((&nll + (&sim * self.cfg.alpha)?)? + (&ent * self.cfg.beta_ent)?)?;

        // Monitoring only: k3 KL(theta || xi) per token, mean over all completion tokens.
        let tlp = token_tensor(mb, prep, rows, |s| s.aux_logprobs.as_ref(), dtype)?;
        let kl = (k3(&lp.detach(), &tlp)? * &m)?.sum_all()?;
        let stats = vec![
            ("loss/nll", scalar(&nll)?),
            ("loss/sim", scalar(&sim)?),
            ("loss/ent", scalar(&ent)?),
            ("loss/total", scalar(&total)?),
            ("popo/sim_cos", cos_sum),
            ("popo/kl_target", scalar(&kl)? / nz(prep.norm.all_tokens)),
            ("train/entropy", -scalar(&ent)?),
        ];
        Ok(LossOutput { loss: total, stats })
    }

    fn after_step(&mut self, online: &[(String, Tensor)]) -> Result<Vec<(&'static str, f64)>> {
        crate::ema::ema_update(&mut self.target_params, online, self.cfg.tau)?;
        Ok(vec![("popo/tau", self.cfg.tau)])
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = crate::ema::state(&self.target_params, TARGET_PREFIX)?;
        if let Some(p) = &self.predictor {
            out.extend(
                p.named_vars()
                    .into_iter()
                    .map(|(n, v)| (format!("{PREDICTOR_PREFIX}{n}"), v.as_tensor().clone())),
            );
        }
        Ok(out)
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        crate::ema::load_state(&mut self.target_params, tensors, TARGET_PREFIX)?;
        if let Some(p) = &self.predictor {
            for (n, var) in p.named_vars() {
                let name = format!("{PREDICTOR_PREFIX}{n}");
                let t = tensors
                    .get(&name)
                    .ok_or_else(|| anyhow::anyhow!("trainer state: missing tensor `{name}`"))?;
                var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)
                    .map_err(|e| anyhow::anyhow!("trainer state: tensor `{name}`: {e}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_rows_follow_the_scope() {
        // Three groups: one with a positive, one without, one all positive.
        let groups = vec![vec![0, 1, 2], vec![3, 4], vec![5, 6]];
        let pos = [false, true, false, false, false, true, true];
        let rows = |s| entropy_rows(s, &groups, &pos);
        assert_eq!(rows(EntropyScope::All), vec![true; 7]);
        assert_eq!(
            rows(EntropyScope::PositiveGroups),
            vec![true, true, true, false, false, true, true]
        );
        assert_eq!(rows(EntropyScope::Positives), pos.to_vec());
        // A step with no positive trains nothing outside `all`.
        let none = [false; 7];
        assert!(!entropy_rows(EntropyScope::PositiveGroups, &groups, &none)
            .iter()
            .any(|&k| k));
    }
}
