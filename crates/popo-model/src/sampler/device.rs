//! Token selection on the logits' device: only the chosen ids and their log-probs reach the host.
//!
//! Greedy rows take the argmax. Sampled rows use a two-level inverse CDF of softmax(logits / T),
//! restricted by the `Filter` (top-k, top-p, min-p) when one is set. With a vocabulary of V
//! split into `nb` blocks of `bs` ~ sqrt(V) ids, the device computes `e = exp(z - max z)` and its block sums `[rows, nb]`;
//! the host picks a block from those with the row's uniform, and only that block's `bs` values
//! cross next. A row thus moves about 2 sqrt(V) floats to the host instead of V (151,936 ->
//! 780 for Qwen2.5), and the host work per row is as small.
//!
//! The uniform is the one the host sampler draws (`rng.random::<f64>()`, once per sampled row and
//! step), and blocks and ids are walked in id order, so for the same seed this picks the token
//! `sample_token` picks, except when the uniform falls within float rounding of a boundary
//! between two tokens' cumulative masses (the device sums in f32, the host in f64).
//!
//! The filter is a per-row threshold on `z - max z` (z = logits / T), found on the device by
//! bisection, so no sort and no `[rows, vocab]` copy is needed: min-p keeps `e >= min_p`; top-k
//! the largest threshold keeping at least k ids; top-p, over what those keep, the largest
//! threshold keeping at least `top_p` of their mass. That is the host sampler's set, except that
//! ids tied at a cut are all kept (the host keeps the lowest ids) and float rounding at a cut.
//! It costs about 80 passes over `[rows, vocab]` per step: a few hundred small kernels on a GPU
//! instead of a 155 MB copy at batch 256, but more arithmetic than the host sort on a CPU, where
//! the logits are already in host memory, so the decode loop uses it off the CPU only.

use super::stats::note_host_bytes;
use anyhow::{ensure, Context, Result};
use candle_core::{DType, Tensor};

/// How one row of a decode step picks its next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pick {
    /// Argmax (ties go to the lowest id on the CPU; the CUDA kernel breaks them its own fixed
    /// way); the log-prob is taken at temperature 1, as `sample_token` does.
    Greedy,
    /// Inverse CDF of softmax(logits / temperature) at `u` in [0, 1).
    Sample { temperature: f64, u: f64 },
    /// A finished row still in the batch: nothing is drawn.
    Skip,
}

/// Which ids sampled rows may draw from, as in `SamplingParams`: top-k (0 = off), then top-p over
/// what top-k keeps (1 = off), with min-p (0 = off) applied first. Greedy rows ignore it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Filter {
    pub top_k: usize,
    pub top_p: f64,
    pub min_p: f64,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
        }
    }
}

impl Filter {
    pub fn is_off(&self) -> bool {
        *self == Filter::default()
    }
}

/// Bisection steps for a threshold on `z - max z` in [FLOOR, 1]: 40 halvings leave 1e-10, finer
/// than the f32 spacing of any gap but a near-tie.
const BISECT_STEPS: usize = 40;
/// `exp(-105)` is 0 in f32: lower logits carry no mass, so no threshold needs to go below.
const FLOOR: f64 = -105.0;

/// `weights` where `d >= s` (a threshold per row) and 0 elsewhere; without weights, 1 where
/// kept. [rows, v]
fn kept(d: &Tensor, s: &Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
    let mask = d.broadcast_ge(s)?.to_dtype(DType::F32)?;
    Ok(match weights {
        Some(w) => (mask * w)?,
        None => mask,
    })
}

/// Per row, the largest threshold `s` in [lo, 1] whose kept weights (`kept`) sum to at least
/// `target`, by bisection on the device: without weights a count, with `e` a mass. If even `lo`
/// misses the target, `lo` is returned (keep all that `lo` keeps).
fn bisect(d: &Tensor, weights: Option<&Tensor>, lo: Tensor, target: &Tensor) -> Result<Tensor> {
    let mut lo = lo; // [rows, 1]
    let mut hi = lo.ones_like()?; // above every d (max 0)
    for _ in 0..BISECT_STEPS {
        let mid = ((&lo + &hi)? * 0.5)?;
        let measure = kept(d, &mid, weights)?.sum_keepdim(1)?; // [rows, 1]
        let ok = measure.ge(target)?;
        lo = ok.where_cond(&mid, &lo)?;
        hi = ok.where_cond(&hi, &mid)?;
    }
    Ok(lo)
}

/// The filter's per-row threshold on `d = z - max z` [rows, v], with `e = exp(d)`: ids with
/// `d >= threshold` stay. [rows, 1]
fn threshold(d: &Tensor, e: &Tensor, f: &Filter) -> Result<Tensor> {
    let (rows, v) = d.dims2()?;
    let dev = d.device();
    // min-p: p >= min_p * p_max is e >= min_p.
    let floor = if f.min_p > 0.0 { f.min_p.ln() } else { FLOOR };
    let mut s = Tensor::full(floor as f32, (rows, 1), dev)?;
    if f.top_k > 0 && f.top_k < v {
        let k = Tensor::full(f.top_k as f32, (rows, 1), dev)?;
        s = bisect(d, None, s, &k)?;
    }
    if f.top_p < 1.0 {
        // top_p of the mass that min-p and top-k keep.
        let target = (kept(d, &s, Some(e))?.sum_keepdim(1)? * f.top_p)?;
        s = bisect(d, Some(e), s, &target)?;
    }
    Ok(s)
}

/// Ids per block of the two-level inverse CDF for a vocabulary of `v`: about sqrt(v), which
/// minimises block sums plus one block.
pub fn block_size(v: usize) -> usize {
    ((v as f64).sqrt().ceil() as usize).max(1)
}

/// One token and its log-prob per row of `logits` [rows, vocab] (any float dtype, on any
/// device), `None` for `Pick::Skip` rows. The log-prob is log softmax(logits / T) of the token
/// (T = 1 for greedy rows), what `sample_token` returns.
pub fn sample_rows(
    logits: &Tensor,
    picks: &[Pick],
    filter: &Filter,
) -> Result<Vec<Option<(u32, f32)>>> {
    let (rows, v) = logits.dims2()?;
    check_picks(picks, rows, v)?;
    let dev = logits.device();
    // Greedy and skipped rows keep temperature 1: argmax does not depend on it, and a greedy
    // row's log-prob is taken at 1.
    let temps: Vec<f32> = picks
        .iter()
        .map(|p| match p {
            Pick::Sample { temperature, .. } => *temperature as f32,
            _ => 1.0,
        })
        .collect();
    let sampled = picks.iter().any(|p| matches!(p, Pick::Sample { .. }));
    let greedy = picks.contains(&Pick::Greedy);
    let z = logits.to_dtype(DType::F32)?; // [rows, v]
    let z = if temps.iter().all(|&t| t == 1.0) {
        z
    } else {
        z.broadcast_div(&Tensor::from_vec(temps, (rows, 1), dev)?)?
    };
    // Without sampled rows the whole row is one block: its sum is all a greedy log-prob needs.
    let bs = if sampled { block_size(v) } else { v };
    let nb = v.div_ceil(bs);
    let d = z.broadcast_sub(&z.max_keepdim(1)?)?; // [rows, v]: 0 at the max
    let e = d.exp()?; // [rows, v]: 1 at the max
                      // With a filter, the draw walks the kept mass and the log-prob divides by the whole mass.
    let (drawn, totals) = if sampled && !filter.is_off() {
        ensure!(
            filter.top_p > 0.0 && filter.top_p <= 1.0 && (0.0..1.0).contains(&filter.min_p),
            "top_p must be in (0, 1] and min_p in [0, 1), got {} and {}",
            filter.top_p,
            filter.min_p
        );
        let s = threshold(&d, &e, filter)?;
        (kept(&d, &s, Some(&e))?, Some(to_host(&e.sum(1)?)?))
    } else {
        (e, None)
    };
    // Zero mass pads the vocabulary to whole blocks.
    let drawn = drawn
        .pad_with_zeros(1, 0, nb * bs - v)?
        .reshape((rows * nb, bs))?; // [rows * nb, bs]
    let sums = to_host(&drawn.sum(1)?)?; // [rows * nb]
    let argmax: Vec<u32> = if greedy {
        let ids = z.argmax(1)?; // [rows]
        note_host_bytes(4 * rows);
        ids.to_vec1()?
    } else {
        vec![]
    };

    // Host: per row, the total mass and (sampled rows) the block holding the uniform.
    let mut out: Vec<Option<(u32, f32)>> = vec![None; rows];
    let mut gather: Vec<u32> = Vec::new(); // flat block index r * nb + k, one per sampled row
    let mut pending: Vec<(usize, usize, f64, f64)> = Vec::new(); // (row, block, residual, ln total)
    for (r, pick) in picks.iter().enumerate() {
        let blocks = &sums[r * nb..(r + 1) * nb];
        let kept: f64 = blocks.iter().map(|&s| s as f64).sum();
        let total = totals.as_ref().map_or(kept, |t| t[r] as f64);
        match *pick {
            Pick::Skip => {}
            Pick::Greedy => {
                let id = *argmax.get(r).context("argmax missing")?;
                // exp(z - max) is exactly 1 at the argmax, so its log-prob is -ln(total).
                out[r] = Some((id, -(total.ln()) as f32));
            }
            Pick::Sample { u, .. } => {
                let (k, residual) =
                    inverse_cdf(blocks.iter().map(|&s| s as f64).enumerate(), u * kept);
                gather.push((r * nb + k) as u32);
                pending.push((r, k, residual, total.ln()));
            }
        }
    }
    if !gather.is_empty() {
        let idx = Tensor::from_vec(gather, pending.len(), dev)?;
        let block = to_host(&drawn.index_select(&idx, 0)?)?; // [sampled rows, bs] flattened
        for (i, (r, k, residual, ln_total)) in pending.into_iter().enumerate() {
            // The padding past the vocabulary is never a candidate.
            let n = bs.min(v - k * bs);
            let values = &block[i * bs..i * bs + n];
            let (j, _) = inverse_cdf(values.iter().map(|&w| w as f64).enumerate(), residual);
            let lp = (values[j] as f64).ln() - ln_total;
            out[r] = Some(((k * bs + j) as u32, lp as f32));
        }
    }
    Ok(out)
}

/// One pick per row, a vocabulary, and a usable temperature and uniform for each sampled row.
fn check_picks(picks: &[Pick], rows: usize, v: usize) -> Result<()> {
    ensure!(
        picks.len() == rows,
        "{} picks for {rows} rows of logits",
        picks.len()
    );
    ensure!(v > 0, "empty vocabulary");
    for p in picks {
        if let Pick::Sample { temperature, u } = *p {
            ensure!(
                temperature > 0.0 && temperature.is_finite() && (0.0..1.0).contains(&u),
                "sampling needs a positive finite temperature and a uniform in [0, 1), got \
                 {temperature} and {u}"
            );
        }
    }
    Ok(())
}

/// A tensor's f32 values on the host, counted as sampler traffic.
fn to_host(t: &Tensor) -> Result<Vec<f32>> {
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    note_host_bytes(4 * v.len());
    Ok(v)
}

/// The index of the `(index, weight)` pair in which the cumulative mass passes `target`, and
/// what is left of `target` inside it. Zero and NaN weights are never chosen; if rounding leaves
/// `target` past the end, the last positive weight is chosen. Shared by the host sampler and the
/// device sampler's two-level draw, so both treat such weights alike.
pub(super) fn inverse_cdf(
    weights: impl Iterator<Item = (usize, f64)>,
    mut target: f64,
) -> (usize, f64) {
    let mut last = (0, 0.0);
    for (i, w) in weights {
        // NaN included: it is not positive.
        if w.is_nan() || w <= 0.0 {
            continue;
        }
        if target < w {
            return (i, target);
        }
        target -= w;
        last = (i, w);
    }
    last
}
