//! Scoring: per-token log-probs of given completions (what `popo score` computes).

use crate::batch::TokenBatch;
use crate::model::Model;
use anyhow::{ensure, Result};
use candle_core::DType;

/// Log-probs (at `temperature`) of each completion token given its prompt, one Vec per item.
/// Items are run `batch_size` at a time through the (detached) training forward; `on_done(k)`
/// reports progress.
pub fn score(
    model: &Model,
    items: &[(Vec<u32>, Vec<u32>)],
    temperature: f64,
    batch_size: usize,
    on_done: &mut dyn FnMut(usize),
) -> Result<Vec<Vec<f32>>> {
    ensure!(batch_size >= 1, "batch size must be at least 1");
    let model = model.detached();
    let mut out = Vec::with_capacity(items.len());
    for group in items.chunks(batch_size) {
        for (i, (p, _)) in group.iter().enumerate() {
            ensure!(!p.is_empty(), "item {}: the prompt is empty", out.len() + i);
        }
        let prompts: Vec<&[u32]> = group.iter().map(|(p, _)| p.as_slice()).collect();
        let comps: Vec<&[u32]> = group.iter().map(|(_, c)| c.as_slice()).collect();
        let batch = TokenBatch::new(&prompts, &comps, 0, model.device())?;
        let lp = model
            .forward_train(&batch, temperature)?
            .logprobs
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?; // [b, t]
        for (row, (p, c)) in lp.iter().zip(group) {
            out.push(row[p.len()..p.len() + c.len()].to_vec());
        }
        on_done(group.len());
    }
    Ok(out)
}
