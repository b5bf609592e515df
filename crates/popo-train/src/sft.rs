//! The built-in task's SFT warm-up: token-mean NLL on (prompt, worked answer) pairs of the task's
//! easy split, through the same learner as RL, so that RL starts from a policy that sometimes
//! gets the answer right.

use crate::algo::LossOutput;
use crate::config::{OptimConfig, TrainConfig};
use crate::data::{self, Shuffler};
use crate::learner::{Learner, LearnerView, MicroLoss};
use crate::lm::{LmPolicy, Tokenizer};
use crate::optim::lr_at;
use crate::params::Params;
use crate::policy::SeqBatch;
use crate::setup::Setup;
use crate::state::Outcome;
use crate::task;
use anyhow::{bail, Result};
use candle_core::{DType, Device};
use std::time::Instant;

/// What the warm-up needs besides the parameters it trains.
pub struct SftCtx<'a> {
    pub cfg: &'a TrainConfig,
    pub policy: &'a LmPolicy,
    pub tokenizer: &'a Tokenizer,
    pub pad_id: u32,
    pub device: &'a Device,
    pub width: usize,
}

impl<'a> SftCtx<'a> {
    /// The warm-up of a run being set up; `width` as `setup::policy_params` gives it.
    pub fn new(cfg: &'a TrainConfig, s: &'a Setup, device: &'a Device, width: usize) -> Self {
        SftCtx {
            cfg,
            policy: &s.policy,
            tokenizer: &s.tokenizer,
            pad_id: s.pad_id,
            device,
            width,
        }
    }
}

/// Runs `sft.steps` updates of `params` (the policy's, so their f32 masters carry over into
/// RL) with a fresh AdamW at `sft.lr`, cosine-decayed to a tenth.
pub fn warm_up(ctx: &SftCtx, params: Params) -> Result<Params> {
    let cfg = ctx.cfg;
    let pairs = pairs(cfg, ctx.tokenizer)?;
    if pairs.is_empty() || cfg.sft.steps == 0 {
        return Ok(params);
    }
    let ocfg = OptimConfig {
        lr: cfg.sft.lr,
        min_lr_ratio: 0.1,
        ..cfg.optim.clone()
    };
    let mut learner = Learner::new(params, &ocfg, ctx.width, ctx.policy.dtype())?;
    let mut order = Shuffler::new(pairs.len(), cfg.run.seed ^ 0x5f7)?;
    let start = Instant::now();
    let steps = cfg.sft.steps;
    for step in 0..steps {
        let idx = order.next_batch(cfg.sft.batch_size.min(pairs.len()));
        // Token-mean NLL over the whole batch: each micro-batch's sum shares the batch's count.
        let n_tokens: usize = idx.iter().map(|&i| pairs[i].1.len()).sum();
        let chunks: Vec<&[usize]> = idx.chunks(cfg.optim.micro_batch_size).collect();
        let micro = |k: usize, view: &LearnerView| -> Result<MicroLoss> {
            let p: Vec<&[u32]> = chunks[k].iter().map(|&i| pairs[i].0.as_slice()).collect();
            let c: Vec<&[u32]> = chunks[k].iter().map(|&i| pairs[i].1.as_slice()).collect();
            let mb = SeqBatch::new(&p, &c, ctx.pad_id, ctx.device)?;
            let ckpt = cfg.optim.gradient_checkpointing;
            MicroLoss::backward(view, ctx.policy, &mb, 1.0, ckpt, |out| {
                let m = mb.completion_mask().to_dtype(out.logprobs.dtype())?;
                let loss = ((&out.logprobs * &m)?.sum_all()?.neg()? / n_tokens.max(1) as f64)?;
                let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                Ok(LossOutput {
                    loss,
                    stats: vec![("sft/loss", l)],
                })
            })
        };
        let u = learner.update(chunks.len(), lr_at(&ocfg, step, steps), micro)?;
        if u.outcome == Outcome::NonFinite {
            bail!("SFT step {step}: non-finite loss or gradients");
        }
        if (step + 1) % 50 == 0 {
            let loss = u.stats.first().map_or(f64::NAN, |s| s.1);
            eprintln!(
                "sft {:>4}/{steps}  loss {loss:.4}  ({:.0}s)",
                step + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(learner.into_params())
}

/// (prompt ids, worked-answer ids + EOS) of the built-in task's easy split.
fn pairs(cfg: &TrainConfig, tokenizer: &Tokenizer) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
    if !cfg.data.path.is_empty() {
        return Ok(Vec::new());
    }
    let template = cfg.data.template;
    let eos = tokenizer.eos_token_id();
    let mut out = Vec::new();
    for p in cfg.task.generate(task::Split::Sft)? {
        let text = template.render(&p.problem, Some(tokenizer as &dyn data::ChatTemplater))?;
        let mut c = tokenizer.encode(&p.solution, false)?;
        c.extend(eos);
        out.push((tokenizer.encode(&text, false)?, c));
    }
    Ok(out)
}
