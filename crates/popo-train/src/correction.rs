//! Rollouts sampled by another engine (vLLM) carry that engine's log-probs, which differ from the
//! trainer's own (other kernels, other precision) even on the same weights. This step, between
//! the rollouts and `Algorithm::prepare`, scores the step's completions with popo's policy (no
//! graph): those are `pi_old`, and every later use of the rollout-time log-probs (POPO's `s_i`)
//! takes them. It logs how far the engine was from them, and returns the truncated importance
//! weights `min(pi_old / pi_engine, C)` of every completion token (docs/algorithms.md, "Rollouts
//! from another engine").

use crate::algo::{old_logprobs, PrepareCtx};
use crate::metrics::names;
use crate::rollouts::{Rollout, RolloutBatch};
use anyhow::{bail, Result};

/// What the correction hands the learner and the step's metrics.
pub struct Corrected {
    /// Per row of the batch, per completion token: `min(pi_old / pi_engine, cap)`; None when the
    /// cap is 0 (off).
    pub tis: Option<Vec<Vec<f32>>>,
    pub stats: Vec<(&'static str, f64)>,
}

/// Truncated importance weights of one completion: `min(exp(old - engine), cap)`, per token, in
/// f64 (the ratio of two f32 log-probs).
pub fn tis_weights(old: &[f32], engine: &[f32], cap: f64) -> Vec<f32> {
    old.iter()
        .zip(engine)
        .map(|(&o, &e)| ((o as f64 - e as f64).exp().min(cap)) as f32)
        .collect()
}

/// Scores the rows `read` of `batch` (all when None; `Algorithm::rows_read`) with the policy in
/// `ctx` (its rollout-time weights), logs the engine's log-prob difference (mean and max over
/// their completion tokens) and, with `cap` > 0, the importance weights' mean and the share of
/// tokens the cap truncated; replaces those rollouts' `sampler_logprobs` by popo's own. Rows not
/// read keep the engine's log-probs and weights of 1, which nothing uses. When no row is read
/// (a POPO step with no positive), the first group is scored all the same, so that the engine's
/// drift is logged every step.
pub fn correct(
    batch: &mut RolloutBatch,
    ctx: &PrepareCtx,
    cap: f64,
    read: Option<&[bool]>,
) -> Result<Corrected> {
    let mut rows: Vec<usize> = match read {
        Some(read) => (0..batch.len()).filter(|&i| read[i]).collect(),
        None => (0..batch.len()).collect(),
    };
    if rows.is_empty() {
        rows = batch.groups().into_iter().next().unwrap_or_default();
    }
    let old = old_logprobs(&batch.subset(&rows), ctx)?;
    let (mut sum, mut max, mut n) = (0.0f64, 0.0f64, 0usize);
    let (mut w_sum, mut clipped) = (0.0f64, 0usize);
    let mut tis: Option<Vec<Vec<f32>>> = (cap > 0.0).then(|| {
        let ones = |r: &Rollout| vec![1.0; r.sampler_logprobs.len()];
        batch.rollouts.iter().map(ones).collect()
    });
    for (&i, old) in rows.iter().zip(old) {
        let r = &mut batch.rollouts[i];
        if old.len() != r.sampler_logprobs.len() {
            bail!(
                "engine log-probs: {} for {} completion tokens",
                r.sampler_logprobs.len(),
                old.len()
            );
        }
        for (&o, &e) in old.iter().zip(&r.sampler_logprobs) {
            let d = (o as f64 - e as f64).abs();
            sum += d;
            max = max.max(d);
            n += 1;
            if cap > 0.0 && (o as f64 - e as f64).exp() > cap {
                clipped += 1;
            }
        }
        if let Some(tis) = &mut tis {
            let w = tis_weights(&old, &r.sampler_logprobs, cap);
            w_sum += w.iter().map(|&v| v as f64).sum::<f64>();
            tis[i] = w;
        }
        r.sampler_logprobs = old;
    }
    let n = n.max(1) as f64;
    let mut stats = vec![
        (names::ENGINE_LOGPROB_ABS_DIFF, sum / n),
        (names::ENGINE_LOGPROB_ABS_DIFF_MAX, max),
    ];
    if tis.is_some() {
        stats.push((names::TIS_WEIGHT_MEAN, w_sum / n));
        stats.push((names::TIS_CLIP_RATIO, clipped as f64 / n));
    }
    Ok(Corrected { tis, stats })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_the_capped_ratio() {
        let old = [-1.0f32, -2.0, -0.5, -3.0];
        let eng = [-1.0f32, -1.0, -2.0, -3.5];
        let w = tis_weights(&old, &eng, 2.0);
        let want = [1.0, (-1.0f64).exp(), 2.0, (0.5f64).exp()];
        for (a, b) in w.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{w:?}");
        }
    }
}
