//! The host sampler: one row's token from its logits copied to the host. The reference the
//! device sampler (`device.rs`) matches, and the path for top-k / top-p / min-p on the CPU.

use super::device::inverse_cdf;
use super::request::SamplingParams;
use rand::Rng;

/// Draws one token from `logits` [vocab]; returns it with its log-prob (see `Completion::logprobs`).
pub fn sample_token(logits: &[f32], params: &SamplingParams, rng: &mut impl Rng) -> (u32, f32) {
    let greedy = params.greedy || params.temperature == 0.0;
    if greedy {
        // One pass for the argmax, one for logsumexp; no per-row allocation.
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        let max = logits[best];
        let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
        return (best as u32, -(sum.ln()) as f32);
    }
    let temp = params.temperature;
    let z: Vec<f64> = logits.iter().map(|&x| x as f64 / temp).collect();
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = z.iter().map(|&x| (x - max).exp()).sum();
    let lse = max + sum.ln();
    let probs: Vec<f64> = z.iter().map(|&x| (x - lse).exp()).collect();
    let tok = if params.filter().is_off() {
        draw(rng, probs.iter().cloned().enumerate())
    } else {
        // min-p, then top-k, then top-p over the mass that those keep, as the device's filter
        // (device.rs), and the draw walks the kept ids in id order as it does, so for the same
        // uniform both pick the same token (up to ties and rounding at a cut).
        let floor = params.min_p * (max - lse).exp();
        let above = |cut: f64| -> Vec<(usize, f64)> {
            let ids = probs.iter().cloned().enumerate();
            ids.filter(|&(_, p)| p >= cut).collect()
        };
        let (mut cand, total) = if params.top_k > 0 {
            let mut cand = above(floor);
            if cand.len() > params.top_k {
                cand.select_nth_unstable_by(params.top_k - 1, |a, b| {
                    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
                });
                cand.truncate(params.top_k);
            }
            let total: f64 = cand.iter().map(|c| c.1).sum();
            (cand, total)
        } else {
            let total: f64 = probs.iter().filter(|&&p| p >= floor).sum();
            // Ids below this cut hold less than (1 - top_p) / 2 of `total` together, so the
            // nucleus ends before reaching them: skipping them before the sort is exact.
            let mut cut = floor;
            if params.top_p < 1.0 {
                cut = cut.max(0.5 * (1.0 - params.top_p) * total / probs.len() as f64);
            }
            (above(cut), total)
        };
        if params.top_p < 1.0 {
            cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut acc = 0.0;
            let mut keep = cand.len();
            for (i, c) in cand.iter().enumerate() {
                acc += c.1;
                if acc >= params.top_p * total {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep);
        }
        cand.sort_unstable_by_key(|c| c.0);
        draw(rng, cand.into_iter())
    };
    (tok as u32, (z[tok] - lse) as f32)
}

/// Inverse-CDF draw from unnormalised `(index, weight)` pairs.
fn draw(rng: &mut impl Rng, weights: impl Iterator<Item = (usize, f64)> + Clone) -> usize {
    let total: f64 = weights.clone().map(|w| w.1).filter(|&w| w > 0.0).sum();
    inverse_cdf(weights, rng.random::<f64>() * total).0
}
